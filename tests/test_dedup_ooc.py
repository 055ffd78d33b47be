"""Out-of-core dedup (dataforge/curate/dedup_ooc.py): signatures and band keys on disk, bands
grouped by DuckDB, pairs verified in batches, output shard by shard — the same decisions as
the in-memory ``apply_dedup`` on data that fits."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from dataforge.config import DedupConfig
from dataforge.curate import dedup_ooc
from dataforge.curate import minhash as fast
from dataforge.curate.dedup import apply_dedup
from dataforge.curate.dedup_ooc import dedup_tables_out_of_core, window_pairs



WORDS = ("river magnet fraction cloud seed lamp quiet orbit copper maple violet engine harbor "
         "lemon puzzle signal tundra velvet walnut zephyr ember falcon glacier hollow").split()


def corpus(seed: int, n: int = 240) -> pa.Table:
    """Originals, exact copies (punctuation and case changed), near copies (a word or two
    changed), ties in quality_score, nulls in created_at."""
    rng = random.Random(seed)
    texts: list[str] = []
    for i in range(n):
        kind = rng.random()
        if texts and kind < 0.2:
            texts.append(rng.choice(texts).upper() + "!")
        elif texts and kind < 0.45:
            words = rng.choice(texts).split()
            for _ in range(rng.randint(1, 2)):
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))))
    ids = [f"s{i:04d}" for i in range(n)]
    rng.shuffle(ids)
    return pa.table({
        "id": ids,
        "text": texts,
        "quality_score": pa.array([rng.choice([None, 0.5, 0.7, 0.9]) for _ in range(n)], pa.float64()),
        "created_at": pa.array([rng.choice([None, 1, 2, 3]) for _ in range(n)], pa.int64()).cast(
            pa.timestamp("s", tz="UTC")),
    })


def split(table: pa.Table, cuts: list[int]) -> list[pa.Table]:
    bounds = [0, *cuts, table.num_rows]
    return [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]


def _same(a: pa.Table, b: pa.Table) -> None:
    assert a.column_names == b.column_names
    for name in a.column_names:
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name


@pytest.mark.parametrize("seed,cfg,cuts", [
    (1, DedupConfig(), [50, 51, 170]),
    (2, DedupConfig(clustering="components"), [120]),
    (3, DedupConfig(exact=False), [10, 100, 200]),
    (4, DedupConfig(threshold=0.6, num_perm=64), []),
    (5, DedupConfig(bands=4, rows=4, num_perm=16, threshold=0.5), [60, 61, 62]),
])
def test_out_of_core_equals_apply_dedup(seed, cfg, cuts, tmp_path):
    table = corpus(seed, n=400)
    kept, rejected = apply_dedup(table, cfg)
    assert rejected.num_rows > 0  # the corpus has duplicates to find
    ok, orj = dedup_tables_out_of_core(split(table, cuts), cfg, tmp_path / "ws")
    _same(ok, kept)
    _same(orj, rejected)
    assert not (tmp_path / "ws").exists()  # the workspace is removed


def test_small_batches_and_big_runs_equal_the_in_memory_candidates(tmp_path, monkeypatch):
    """Runs of equal band keys longer than the window and longer than a DuckDB batch: the
    carried-over tail gives the pairs ``minhash.candidate_pairs`` gives."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 2**32, size=(1, 16), dtype=np.uint32)
    sig = np.repeat(base, 700, axis=0)
    sig[:, 4:] = rng.integers(0, 2**32, size=(700, 12), dtype=np.uint32)  # band 0 shared, band 1 mostly not
    sig[::7, 4:8] = base[0, 4:8]  # some rows share the next band too (sorted first within the run)
    cfg = DedupConfig(bands=4, rows=4, num_perm=16)
    ws = dedup_ooc.Workspace(tmp_path, cfg)
    # write the shards' files directly from these signatures
    for shard, (lo, hi) in enumerate([(0, 300), (300, 700)]):
        np.save(ws._path("sig", shard), sig[lo:hi])
        keys = {"row": pa.array(np.arange(lo, hi, dtype=np.int64))}
        for b in range(4):
            keys[f"k{b}"] = pa.array(fast.band_keys(sig[lo:hi], b, 4))
        import pyarrow.parquet as pq

        pq.write_table(pa.table(keys), ws._path("keys", shard, ".parquet"))
    np.save(ws._path("reps"), np.arange(700, dtype=np.int64))
    monkeypatch.setattr(dedup_ooc, "BAND_BATCH_ROWS", 50)
    plan = dedup_ooc.Plan(n=700, m=700, bands=4, rows=4)
    for band in range(2):
        got = np.load(ws.band_candidates(plan, band, window=8))
        want = fast.candidate_pairs(sig, band, 4, 4, window=8)
        assert len(want) > 700  # the run is longer than the window
        np.testing.assert_array_equal(got, want)


def test_window_pairs_rule():
    pos = np.array([5, 2, 9, 1, 7], dtype=np.int64)
    key = np.array([1, 1, 1, 3, 3], dtype=np.uint64)
    codes = sorted(window_pairs(pos, key, window=1, m=10).tolist())
    assert codes == sorted([2 * 10 + 5, 2 * 10 + 9, 1 * 10 + 7])
    codes = sorted(window_pairs(pos, key, window=5, m=10).tolist())
    assert codes == sorted([25, 29, 59, 17])
    assert window_pairs(pos, key, window=5, first_new=3, m=10).tolist() == [17]


def test_real_documents_with_planted_copies(tmp_path, pile_docs):
    """The shared data's Pile documents, with near copies planted (two words changed) and
    exact copies, across shards."""
    texts = [d["contents"] for d in pile_docs if len(d["contents"].split()) > 30][:600]
    rng = random.Random(3)
    for t in rng.sample(texts, 80):
        words = t.split()
        for _ in range(2):
            words[rng.randrange(len(words))] = "zebra"
        texts.insert(rng.randrange(len(texts)), " ".join(words))
    for t in rng.sample(texts, 20):
        texts.insert(rng.randrange(len(texts)), t)
    table = pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    cfg = DedupConfig()
    kept, rejected = apply_dedup(table, cfg)
    assert rejected.num_rows >= 60
    ok, orj = dedup_tables_out_of_core(split(table, [100, 333, 500]), cfg, tmp_path / "ws")
    _same(ok, kept)
    _same(orj, rejected)
