"""DuckDB views over a hand-built run, and the hand-off export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataforge import warehouse
from dataforge.config import PipelineConfig
from dataforge.export import export_table
from dataforge.records import SAMPLE_SCHEMA, make_sample, samples_to_table, with_drop
from dataforge.runner import StageResult, open_run, record_result, rejected_schema
from dataforge.store import MANIFEST, TMP_PREFIX, Run, ShardWriter, read_manifest


def textbook(i: int, topic: str = "photosynthesis") -> dict:
    return make_sample("textbook", f"Section {i} on {topic}: plants turn light, water and carbon dioxide into sugar.",
                       topic=topic, audience="high school students", style="academic textbook", sample_index=i)


def cot(i: int, answer: str, gold: str = "72") -> dict:
    q = f"Question {i}: Tom has 3 boxes with 24 apples each. How many apples?"
    rationale = f"3 * 24 = 72\nThe answer is {answer}."
    return make_sample("cot", f"Question: {q}\nAnswer: {rationale}",
                       [{"role": "user", "content": q}, {"role": "assistant", "content": rationale}],
                       question=q, rationale=rationale, answer=answer, gold_answer=gold,
                       answer_correct=answer == gold, seed_id=f"seed{i}", sample_index=0, votes=1, agreement=0.25)


def with_heur(table: pa.Table) -> pa.Table:
    """A stage-specific column, as the heuristics stage appends."""
    words = [len(t.split()) for t in table.column("text").to_pylist()]
    return table.append_column(pa.field("heur_words", pa.int32()), pa.array(words, pa.int32()))


def commit(run: Run, stage: str, kept: pa.Table, rejected: pa.Table, *, max_rows: int = 2) -> StageResult:
    """Write a stage the way the runners do: begin, shards, rejected then kept manifest."""
    run.begin_stage(stage)
    kw = ShardWriter(run.stage_dir(stage), max_rows=max_rows, schema=kept.schema)
    kw.write(kept)
    rw = ShardWriter(run.rejected_dir(stage), max_rows=max_rows, schema=rejected_schema(kept.schema))
    rw.write(rejected)
    run.commit_stage(stage, kw.close(), rw.close(), kept.schema, rejected_schema(kept.schema),
                     fingerprint="fp", config_hash="ch")
    return StageResult(stage, rows_in=kept.num_rows + rejected.num_rows, rows_kept=kept.num_rows,
                       rows_dropped=rejected.num_rows, seconds=0.5)


@pytest.fixture
def built(tmp_path):
    """A run with textbooks, cot, heuristics and dedup; returns (run, expected)."""
    cfg = PipelineConfig(data_root=str(tmp_path / "data"))
    run = open_run(cfg, "wh-run")

    tb_kept = samples_to_table([textbook(i) for i in range(5)])
    tb_rej = with_drop(samples_to_table([make_sample("textbook", "", topic="fractions")]), "textbooks",
                       ["empty_completion"])
    cot_kept = samples_to_table([cot(1, "72"), cot(2, "72")])
    cot_rej = with_drop(samples_to_table([cot(3, "71"), cot(4, "70"), cot(5, "7", gold="72")]), "cot",
                        ["answer_mismatch", "answer_mismatch", "no_final_answer"])
    gen = pa.concat_tables([tb_kept, cot_kept])  # 7 rows into heuristics
    h_kept = with_heur(gen.slice(1))  # 6 kept
    h_rej = with_drop(with_heur(gen.slice(0, 1)), "heuristics", ["gopher_min_words"])
    d_kept = h_kept.take([0, 1, 4, 5])  # two textbook sections, two cot solutions
    d_rej = with_drop(h_kept.take([2, 3]), "dedup", ["near_duplicate", "exact_duplicate"])

    results = [commit(run, "textbooks", tb_kept, tb_rej), commit(run, "cot", cot_kept, cot_rej),
               commit(run, "heuristics", h_kept, h_rej), commit(run, "dedup", d_kept, d_rej)]
    # record in an order other than the pipeline's; run.json keeps insertion order
    for r in reversed(results):
        record_result(run, r)
    rec = run.load_record()
    rec.stages = dict(reversed(list(rec.stages.items())))
    run.save_record(rec)
    expected = {
        "kept": {"textbooks": 5, "cot": 2, "heuristics": 6, "dedup": 4},
        "drops": {("textbooks", "empty_completion"): 1, ("cot", "answer_mismatch"): 2,
                  ("cot", "no_final_answer"): 1, ("heuristics", "gopher_min_words"): 1,
                  ("dedup", "near_duplicate"): 1, ("dedup", "exact_duplicate"): 1},
        "final_ids": d_kept.column("id").to_pylist(),
        "results": {r.stage: r for r in results},
        "dedup_table": d_kept,
    }
    return run, expected


def rows(con, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def test_samples_per_stage(built):
    run, exp = built
    con = warehouse.connect(run)
    assert dict(rows(con, "select stage, count(*) from samples group by stage")) == exp["kept"]
    # stage-specific columns are unioned by name; earlier stages have NULL there
    got = dict(rows(con, "select stage, count(heur_words) from samples group by stage"))
    assert got == {"textbooks": 0, "cot": 0, "heuristics": 6, "dedup": 4}
    assert rows(con, "select count(*) from samples where stage = 'cot' and messages[1].role = 'user'") == [(2,)]


def test_rejections(built):
    run, exp = built
    con = warehouse.connect(run)
    got = {(s, r): n for s, r, n in rows(con, "select drop_stage, drop_reason, count(*) from rejections group by all")}
    assert got == exp["drops"]
    # the folder a rejected row sits in is the stage that dropped it
    assert rows(con, "select count(*) from rejections where stage <> drop_stage") == [(0,)]
    reasons = rows(con, "select drop_stage, drop_reason, rows from drop_reasons")
    assert reasons[0] == ("cot", "answer_mismatch", 2)
    assert {(s, r): n for s, r, n in reasons} == exp["drops"]


def test_funnel_in_pipeline_order(built):
    run, exp = built
    con = warehouse.connect(run)
    funnel = rows(con, "select position, stage, status, rows_in, rows_kept, rows_dropped, kept_pct from funnel")
    assert [f[1] for f in funnel] == ["textbooks", "cot", "heuristics", "dedup", "export"]
    assert [f[0] for f in funnel] == [0, 1, 2, 3, 4]
    for _, stage, status, rows_in, kept, dropped, pct in funnel[:4]:
        r = exp["results"][stage]
        assert (status, rows_in, kept, dropped) == ("completed", r.rows_in, r.rows_kept, r.rows_dropped)
        assert pct == round(100.0 * r.rows_kept / r.rows_in, 1)
    assert funnel[4][2:] == ("pending", None, None, None, None)


def test_final_is_the_dedup_stage(built):
    run, exp = built
    con = warehouse.connect(run)
    ids = [r[0] for r in rows(con, "select id from final")]
    assert sorted(ids) == sorted(exp["final_ids"])
    assert rows(con, "select distinct stage from final") == [("dedup",)]


def test_final_reads_only_the_final_stage_files(built):
    """``final`` is its own relation over the final stage's files: a query of it does not read
    the other stages' shards (a subquery filter on kept_rows read every stage's text)."""
    run, exp = built
    con = warehouse.connect(run)
    plan = "\n".join(r[1] for r in con.execute("EXPLAIN ANALYZE SELECT count(*), sum(length(text)) FROM final")
                     .fetchall())
    assert plan.count("READ_PARQUET") == 1 or plan.count("Read Parquet") == 1, plan
    assert rows(con, "select count(*) from final") == [(len(exp["final_ids"]),)]


def test_size_only_verify_skips_the_sha256_but_not_the_size(built):
    """``verify="size"`` (the summary a run prints of files it has just written) checks sizes
    only; the default checks sha256 too."""
    from dataforge.store import ChecksumMismatch, manifest_files

    run, _ = built
    shard = manifest_files(run.stage_dir("heuristics"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="does not match its manifest"):
        warehouse.connect(run)
    warehouse.connect(run, verify="size").close()
    shard.write_bytes(bytes(data) + b"x")
    with pytest.raises(ChecksumMismatch, match="recorded"):
        warehouse.connect(run, verify="size")


def test_reports_run(built):
    run, _ = built
    con = warehouse.connect(run)
    reports = warehouse.report_queries()
    assert {"drop_reasons", "funnel", "output"} <= set(reports)
    for name, sql in reports.items():
        t = warehouse.fetch_arrow(con, sql)
        assert t.num_rows > 0, name
    out = warehouse.fetch_arrow(con, reports["output"]).to_pylist()
    assert {r["kind"]: r["rows"] for r in out} == {"textbook": 2, "cot": 2}
    assert warehouse.query(run, "select count(*) as n from samples").to_pylist() == [{"n": 17}]


def test_uncommitted_files_are_invisible(built):
    run, exp = built
    stray = samples_to_table([textbook(100 + i, "stray") for i in range(3)])
    # a stray shard in a committed stage that the manifest does not list
    pq.write_table(stray, run.stage_dir("dedup") / "part-99999.parquet")
    pq.write_table(with_drop(stray, "dedup", ["x"] * 3), run.rejected_dir("dedup") / "part-99999.parquet")
    # a stage that crashed before its commit: shards, no manifests
    crashed = run.dir / "crashed"
    crashed.mkdir()
    pq.write_table(stray, crashed / "part-00000.parquet")
    (run.dir / "rejected" / "crashed").mkdir()
    pq.write_table(with_drop(stray, "crashed", ["y"] * 3), run.dir / "rejected" / "crashed" / "part-00000.parquet")
    con = warehouse.connect(run)
    assert dict(rows(con, "select stage, count(*) from samples group by stage")) == exp["kept"]
    assert rows(con, "select count(*) from samples where topic = 'stray'") == [(0,)]
    got = {(s, r): n for s, r, n in rows(con, "select drop_stage, drop_reason, count(*) from rejections group by all")}
    assert got == exp["drops"]


def test_crash_between_rejected_and_kept_manifest_is_invisible(built):
    """commit_stage writes the rejected manifest first; the kept one is the commit. A crash in
    between leaves a stage that is not done, and its dropped rows must not show either."""
    run, exp = built
    stage = "heuristics2"
    kept = samples_to_table([textbook(200 + i, "half") for i in range(2)])
    rej = with_drop(samples_to_table([textbook(300, "half")]), stage, ["half_committed"])
    run.begin_stage(stage)
    rw = ShardWriter(run.rejected_dir(stage), schema=rej.schema)
    rw.write(rej)
    kw = ShardWriter(run.stage_dir(stage), schema=kept.schema)
    kw.write(kept)
    kw.close()
    from dataforge.store import write_manifest
    write_manifest(run.rejected_dir(stage), rw.close(), rej.schema, stage=stage, kind="rejected")
    assert run.committed(stage) is None and run.committed_rejected(stage) is not None
    con = warehouse.connect(run)
    assert rows(con, "select count(*) from rejections where drop_reason = 'half_committed'") == [(0,)]
    assert rows(con, f"select count(*) from samples where stage = '{stage}'") == [(0,)]


def test_empty_rejected_set_gives_empty_queryable_view(tmp_path):
    cfg = PipelineConfig(data_root=str(tmp_path / "data"))
    run = open_run(cfg, "no-drops")
    empty_rej = rejected_schema(SAMPLE_SCHEMA).empty_table()
    r = commit(run, "textbooks", samples_to_table([textbook(i) for i in range(3)]), empty_rej)
    record_result(run, r)
    con = warehouse.connect(run)
    assert rows(con, "select count(*) from rejections") == [(0,)]
    assert rows(con, "select drop_stage, drop_reason, count(*) from rejections group by all") == []
    assert rows(con, "select * from drop_reasons") == []
    cols = [c[0] for c in con.execute("select * from rejections limit 0").description]
    assert {"stage", "drop_stage", "drop_reason", "id", "text"} <= set(cols)
    assert rows(con, "select count(*) from samples") == [(3,)]
    # no curation stage committed: final is empty but queryable
    assert rows(con, "select count(*) from final") == [(0,)]


def test_run_without_any_committed_stage(tmp_path):
    run = open_run(PipelineConfig(data_root=str(tmp_path / "data")), "fresh")
    con = warehouse.connect(run)
    assert rows(con, "select count(*) from samples") == [(0,)]
    assert rows(con, "select count(*) from rejections") == [(0,)]
    assert [r[0] for r in rows(con, "select stage from funnel")] == ["textbooks", "cot", "heuristics", "dedup",
                                                                     "export"]


# --- export --------------------------------------------------------------------------------

def sha256_of(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_export_table(built):
    run, exp = built
    table = run.read("dedup")
    out = run.export_dir("default")
    manifest = export_table(table, out, ["jsonl", "parquet"], title="test export")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["train.jsonl", "train.parquet", "checksums.sha256", "README.md", MANIFEST])

    lines = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    src = table.to_pylist()
    assert [line["id"] for line in lines] == [r["id"] for r in src] == exp["final_ids"]
    for line, r in zip(lines, src):
        assert set(line) == {"messages", "id", "kind"} and line["kind"] == r["kind"]
        assert isinstance(line["messages"], list)
        assert all(set(m) == {"role", "content"} for m in line["messages"])
        if r["kind"] == "cot":
            assert [m["role"] for m in line["messages"]] == ["user", "assistant"]
            assert line["messages"][0]["content"] == r["question"]
            assert line["messages"][1]["content"] == r["rationale"]
        else:  # a document: its text as one assistant turn
            assert line["messages"] == [{"role": "assistant", "content": r["text"]}]
    assert {line["kind"] for line in lines} == {"textbook", "cot"}

    pt = pq.read_table(out / "train.parquet")
    assert pt.column("id").to_pylist() == exp["final_ids"]
    assert pt.column("messages").to_pylist() == [line["messages"] for line in lines]
    assert "text" not in pt.column_names and "topic" in pt.column_names

    sums = {}
    for line in (out / "checksums.sha256").read_text().splitlines():
        digest, name = line.split("  ")
        sums[name] = digest
    assert sums == {"train.jsonl": sha256_of(out / "train.jsonl"), "train.parquet": sha256_of(out / "train.parquet")}

    card = (out / "README.md").read_text()
    # the Hub's YAML header (licence, configs) comes first, then the title
    assert card.startswith("---\n") and "\n# test export\n" in card and f"Rows: {table.num_rows}" in card
    assert "| cot | 2 |" in card and "| textbook | 2 |" in card
    assert manifest == read_manifest(out)
    assert manifest["rows"] == table.num_rows and manifest["counts"] == {"textbook": 2, "cot": 2}
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == sums
    assert not [p for p in out.parent.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_export_jsonl_only(built):
    run, _ = built
    out = run.export_dir("jsonl-only")
    export_table(run.read("dedup"), out, ["jsonl"])
    assert not (out / "train.parquet").exists()
    assert (out / "checksums.sha256").read_text().count("\n") == 1


@pytest.mark.parametrize("previous", [False, True])
def test_export_crash_leaves_nothing_half_written(built, monkeypatch, previous):
    import dataforge.export as export_mod

    run, _ = built
    table = run.read("dedup")
    out = run.export_dir("default")
    before = None
    if previous:
        export_table(table.slice(0, 1), out, ["jsonl"])
        before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_write_table(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(export_mod.pq, "write_table", broken_write_table)
    with pytest.raises(OSError, match="disk full"):
        export_table(table, out, ["jsonl", "parquet"])
    leftovers = [p.name for p in out.parent.iterdir()]
    assert not [n for n in leftovers if n.startswith(TMP_PREFIX)], leftovers
    if previous:  # the previous export is untouched
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    else:
        assert not out.exists()


def test_run_summary_counts_dedup_reasons_together_and_skips_diversity_of_a_large_output(tmp_path, monkeypatch,
                                                                                          capsys):
    """The end-of-run summary: one line per kind of duplicate (not one per kept row, which made
    25,000 lines on a 1 GB run), and no lexical diversity report above the size limit (a minute
    per 500 MB of text)."""
    import importlib

    cli_main = importlib.import_module("dataforge.cli.main")  # the package exports a function of that name
    run = open_run(PipelineConfig(data_root=str(tmp_path)), "r1")
    gen = samples_to_table([textbook(i) for i in range(6)])
    commit(run, "textbooks", gen, with_drop(gen.slice(0, 0), "textbooks", []))
    reasons = ["near_duplicate_of:aaaa", "near_duplicate_of:bbbb", "exact_duplicate_of:aaaa"]
    commit(run, "dedup", gen.slice(3), with_drop(gen.slice(0, 3), "dedup", reasons))
    rows = warehouse.query(run, warehouse.report_queries()["drop_reasons"]).to_pylist()
    assert rows == [{"drop_stage": "dedup", "drop_reason": "near_duplicate_of:<id>", "rows": 2},
                    {"drop_stage": "dedup", "drop_reason": "exact_duplicate_of:<id>", "rows": 1}]

    cli_main.print_report(run)
    out = capsys.readouterr().out
    assert "lexical diversity: left out" not in out
    # reports of stages this run has not are named on one line, not printed as empty tables
    assert "no rows: " in out and "heuristic rules" in out.split("no rows: ")[1]
    assert "heuristic rules" not in out.split("no rows: ")[0] and "funnel" in out
    monkeypatch.setattr(cli_main, "REPORT_DIVERSITY_MAX_BYTES", 100)  # the 3 output texts hold ~250 bytes
    cli_main.print_report(run)
    out = capsys.readouterr().out
    assert "lexical diversity: left out of this summary" in out and "3 rows" in out
