"""Dedup in parts (signatures per shard, candidates per band, then verification and clustering;
dataforge/curate/dedup_parts.py, what the flow runs as separate tasks) gives exactly what
``apply_dedup`` gives on the concatenated table."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from dataforge.config import DedupConfig
from dataforge.curate.dedup import apply_dedup
from dataforge.curate.dedup_parts import band_candidates, dedup_in_parts, plan_dedup, sign_shard

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


@pytest.mark.parametrize("seed,cfg", [
    (1, DedupConfig()),
    (2, DedupConfig(clustering="components")),
    (3, DedupConfig(exact=False)),
    (4, DedupConfig(threshold=0.6, num_perm=64)),
])
def test_parts_equal_apply_dedup(seed, cfg):
    table = corpus(seed)
    kept, rejected = apply_dedup(table, cfg)
    assert rejected.num_rows > 20  # the corpus has duplicates of both kinds to find
    # uneven shards, one of them empty
    k2, r2 = dedup_in_parts(split(table, [17, 17, 100, 199]), cfg)
    assert k2.equals(kept) and r2.equals(rejected)
    assert k2.column("dedup_cluster").to_pylist() == kept.column("dedup_cluster").to_pylist()


def test_shard_signatures_concatenate_to_the_table_signatures():
    cfg = DedupConfig()
    table = corpus(5)
    whole = sign_shard(table.column("text"), cfg)
    parts = [sign_shard(t.column("text"), cfg) for t in split(table, [50, 51, 180])]
    for k in range(3):
        assert np.array_equal(np.concatenate([p[k] for p in parts]), whole[k])
    plan = plan_dedup(table.select(["quality_score", "created_at", "id"]), parts, cfg)
    assert plan.sig_reps.dtype == np.uint32 and plan.sig_reps.shape == (len(plan.reps), cfg.num_perm)
    assert sum(len(band_candidates(plan, b)) for b in range(plan.bands)) > 0


def test_a_plan_for_other_rows_is_refused():
    cfg = DedupConfig()
    table = corpus(6, 20)
    with pytest.raises(ValueError, match="signatures for"):
        plan_dedup(table.select(["id"]), [sign_shard(table.column("text").slice(0, 5), cfg)], cfg)


def test_empty_input():
    cfg = DedupConfig()
    table = corpus(7, 10).slice(0, 0)
    kept, rejected = apply_dedup(table, cfg)
    k2, r2 = dedup_in_parts([table], cfg)
    assert k2.equals(kept) and r2.equals(rejected)
