"""The standalone commands stream (issue 14, part 2): ``dataforge filter``, ``dataforge dedup``
and the generic command of a per-row stage read the file a table at a time and write kept and
rejected rows as they go. Over a file several tables long, their output must equal the
whole-file computation (``apply_heuristics`` / ``apply_dedup`` on ``read_text_table``)."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataforge import tabular
from dataforge.cli import app
from dataforge.config import DedupConfig, HeuristicsConfig
from dataforge.curate.dedup import apply_dedup
from dataforge.curate.heuristics import apply_heuristics
from dataforge.tabular import KeptRejectedWriter, read_text_table

WORDS = ("the river carries water down to the sea while clouds form above warm hills and rain returns "
         "it to the valleys where farmers plant seeds every spring and harvest them in autumn").split()


def _document(rng: random.Random, vocab: list[str]) -> str:
    sentences = []
    for _ in range(rng.randint(3, 12)):
        w = [rng.choice(vocab) for _ in range(6)]
        sentences.append(f"The {w[0]} of the {w[1]} and {w[2]} went to {w[3]} with {w[4]} {w[5]}.")
    return " ".join(sentences)


def _write_corpus(path, n=700, seed=5) -> None:
    """Documents with near and exact copies, a few bad lines, and a ``meta`` field whose type
    changes between the file's first and later rows (inferred per table when streamed)."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnoprstuvw") for _ in range(rng.randint(3, 9))) for _ in range(400)]
    docs = []
    for i in range(n):
        if docs and rng.random() < 0.25:
            words = rng.choice(docs).split()
            words[rng.randrange(len(words))] = rng.choice(vocab)
            docs.append(" ".join(words))
        elif docs and rng.random() < 0.1:
            docs.append(rng.choice(docs))
        elif rng.random() < 0.15:
            docs.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 80))))  # fails rules
        else:
            docs.append(_document(rng, vocab))
    with path.open("w") as f:
        for i, d in enumerate(docs):
            if i in (13, 400):
                f.write("{not json\n")
            meta = i if i < 300 else f"m{i}"
            f.write(json.dumps({"content": d, "meta": meta, "n": i}) + "\n")


def _table(path) -> list[dict]:
    t = pq.read_table(path)
    return t.drop_columns([c for c in ("meta",) if c in t.column_names]).to_pylist()


@pytest.fixture
def small_tables(monkeypatch):
    monkeypatch.setattr(tabular, "STREAM_BATCH_ROWS", 97)  # the file is 8 tables long


def test_filter_streams_and_equals_the_whole_file(tmp_path, small_tables):
    src = tmp_path / "docs.jsonl"
    _write_corpus(src)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["filter", str(src), "-o", str(out), "--text-column", "content", "--rules", "all"])
    assert r.exit_code == 0, r.output
    table, quarantined = read_text_table(src, "content")
    data = HeuristicsConfig().model_dump()
    for fam in ("gopher_quality", "gopher_repetition", "c4", "fineweb_quality"):
        data[fam]["enabled"] = True
    data.update(enabled=True, apply_to=["document"])
    cfg = HeuristicsConfig.model_validate(data)
    t = table.append_column("kind", pa.array(["document"] * table.num_rows))
    kept, rejected = apply_heuristics(t, cfg)
    got_kept, got_rej = pq.read_table(out / "kept.parquet"), pq.read_table(out / "rejected.parquet")
    assert kept.num_rows > 300 and rejected.num_rows > 50
    assert got_kept.column("source_row").to_pylist() == kept.column("source_row").to_pylist()
    assert got_rej.column("source_row").to_pylist() == rejected.column("source_row").to_pylist()
    assert got_rej.column("drop_reason").to_pylist() == rejected.column("drop_reason").to_pylist()
    assert got_kept.column("content").to_pylist() == kept.column("text").to_pylist()
    # meta: ints in the first tables, text later — one string column (the whole-file read, which
    # infers one type for all rows, keeps only the text of such a file)
    assert got_kept.schema.field("meta").type == pa.string()
    assert got_kept.column("meta").to_pylist() == [str(n - 1 - (n > 14)) if n <= 301 else f"m{n - 1 - (n > 14) - (n > 402)}"
                                                   for n in got_kept.column("source_row").to_pylist()]
    assert got_kept.column("n").to_pylist() == [n - 1 - (n > 14) - (n > 402) for n in got_kept.column("source_row").to_pylist()]
    assert len(quarantined) == 2 and [json.loads(x)["line"] for x in (out / "quarantine.jsonl").read_text().splitlines()] \
        == [14, 402]
    assert f"rows {kept.num_rows + rejected.num_rows}, kept {kept.num_rows}" in r.output
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no part files left


@pytest.mark.parametrize("clustering", ["star", "components"])
def test_dedup_streams_and_equals_the_whole_file(tmp_path, small_tables, clustering):
    src = tmp_path / "docs.jsonl"
    _write_corpus(src)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["dedup", str(src), "-o", str(out), "--text-column", "content",
                                 "--clustering", clustering])
    assert r.exit_code == 0, r.output
    table, _ = read_text_table(src, "content")
    kept, rejected = apply_dedup(table, DedupConfig(clustering=clustering))
    assert rejected.num_rows > 50
    got_kept, got_rej = pq.read_table(out / "kept.parquet"), pq.read_table(out / "rejected.parquet")
    for got, want in ((got_kept, kept), (got_rej, rejected)):
        for col in ("source_row", "id", "dedup_cluster", "dedup_size", "dedup_similarity"):
            assert got.column(col).to_pylist() == want.column(col).to_pylist(), col
    assert got_rej.column("drop_reason").to_pylist() == rejected.column("drop_reason").to_pylist()
    assert f"kept {kept.num_rows}," in r.output
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no workspace left


def test_generic_stage_command_streams(tmp_path, small_tables):
    """A per-row stage without its own command (pii) goes through the streamed path too."""
    src = tmp_path / "docs.jsonl"
    with src.open("w") as f:
        for i in range(300):
            f.write(json.dumps({"text": f"write to person{i}@example.com about the harvest"}) + "\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["pii", str(src), "-o", str(out)])
    assert r.exit_code == 0, r.output
    kept = pq.read_table(out / "kept.parquet")
    assert kept.num_rows + pq.read_table(out / "rejected.parquet").num_rows == 300
    assert "rows 300" in r.output and "pii:" in r.output
    assert not any("@example.com" in t for t in kept.column("text").to_pylist())


def test_writer_unifies_and_leaves_nothing_on_failure(tmp_path):
    w = KeptRejectedWriter(tmp_path, "text")
    w.write(pa.table({"text": ["a"], "x": pa.array([None], pa.null())}), pa.table({"text": pa.array([], pa.string())}))
    w.write(pa.table({"text": ["b"], "x": [3]}), pa.table({"text": pa.array([], pa.string())}))
    w.write(pa.table({"text": ["c"], "x": [{"k": 1}]}), pa.table({"text": pa.array([], pa.string())}))
    w.close()
    kept = pq.read_table(tmp_path / "kept.parquet")
    assert kept.column("text").to_pylist() == ["a", "b", "c"]
    assert kept.column("x").to_pylist() == [None, "3", '{"k": 1}']
    assert pq.read_table(tmp_path / "rejected.parquet").num_rows == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.parquet", "rejected.parquet"]
