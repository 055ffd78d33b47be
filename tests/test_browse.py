"""`dataforge browse` without a browser: the samples table, filters, facets, pages, a sample's
story, labels (and the warehouse's `labels` view), the HTTP API, two runs side by side,
`dataforge classifier train --labels RUN`, and that the shards are only ever read.

Two runs: a pipeline run against the fake teacher (textbooks, CoT, heuristics, dedup, the
AlpaGasus judge: real request-cache entries, real drops), and a run written with the store's
writer that has what the fake teacher does not make (a decontamination match, a near-duplicate
pair with its survivor, an embedding column, several CoT samples of one question).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from fake_openai import FakeOpenAI
from fastapi.testclient import TestClient
from responders import judging_responder
from run_helpers import run_pipeline, write_add_seeds, write_config
from typer.testing import CliRunner

from dataforge.browse.labels import LABEL_SCHEMA, label_files, read_labels, write_labels
from dataforge.browse.queries import (
    BrowseError,
    Filters,
    SampleIndex,
    SampleNotFound,
    leaf_stages,
    match_segments,
    parse_range,
    word_diff,
)
from dataforge.browse.server import create_app
from dataforge.cli import app
from dataforge.records import DROP_FIELDS, make_sample, samples_to_table
from dataforge.store import Run, RunRecord, StageStatus
from dataforge.teacher.cache import RequestCache
from dataforge.warehouse import query

runner = CliRunner()


# --- the runs ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """A pipeline run: textbooks, cot (two samples a question, odd seeds wrong), heuristics, dedup
    (the fake teacher's sections differ by one word: near duplicates), judge (a score column)."""
    tmp = tmp_path_factory.mktemp("browse")
    with FakeOpenAI(responder=judging_responder) as srv:
        cfg = write_config(tmp / "c.yaml", srv.base_url, tmp / "data", name="br",
                           textbooks={"taxonomies": ["mathematics"], "max_samples": 12},
                           cot={"seeds": str(write_add_seeds(tmp / "seeds.jsonl", 10)), "samples_per_question": 2},
                           judge={"enabled": True, "output": "text", "threshold": 4.0})
        return run_pipeline(cfg, "br-run")


def _write_stage(run: Run, stage: str, kept: pa.Table, rejected: pa.Table) -> None:
    run.begin_stage(stage)
    entries = []
    for directory, table in ((run.stage_dir(stage), kept), (run.rejected_dir(stage), rejected)):
        with run.shard_writer(directory, prefix="part-00000", max_rows=3, schema=table.schema) as w:
            w.write(table)
        entries.append(w.entries)
    run.commit_stage(stage, entries[0], entries[1], kept.schema, rejected.schema, fingerprint=stage, config_hash="t")


def _dropped(table: pa.Table, stage: str, reasons: list[str]) -> pa.Table:
    table = table.append_column(DROP_FIELDS[0], pa.array([stage] * table.num_rows, pa.string()))
    return table.append_column(DROP_FIELDS[1], pa.array(reasons, pa.string()))


QUESTION = "Tom has 3 apples and buys 4 more. How many apples does Tom have now?"
SECTION = ("Fractions name parts of a whole. When we cut a pizza into eight equal slices, each slice is one eighth "
           "of the pizza, and two slices are two eighths, which is the same amount as one quarter.")


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """cot (4 samples of one question, one wrong) and textbooks, then dedup (a near duplicate of
    a section) and decontam (a CoT sample matching a benchmark item) as the final stage."""
    root = tmp_path_factory.mktemp("crafted")
    run = Run(root, "crafted-run")
    t0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    cot_rows = []
    for k, answer in enumerate(["7", "7", "7", "8"]):
        rationale = f"Tom starts with 3 apples. 3 + 4 = {answer}. The answer is {answer}." + " (again)" * k
        msgs = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": rationale}]
        cot_rows.append(make_sample("cot", f"Question: {QUESTION}\nAnswer: {rationale}", msgs, question=QUESTION,
                                    rationale=rationale, answer=answer, gold_answer="7", answer_correct=answer == "7",
                                    votes=3 if answer == "7" else 1, agreement=0.75 if answer == "7" else 0.25,
                                    sample_index=k, seed_id="seed-1", seed_source="gsm8k", created_at=t0,
                                    request_hash=hashlib.sha256(f"cot{k}".encode()).hexdigest()))
    tb_rows = [make_sample("textbook", SECTION, topic="Fractions", audience="young children", style="narrative",
                           subject="Mathematics", created_at=t0 + timedelta(seconds=1)),
               make_sample("textbook", SECTION.replace("quarter", "fourth"), topic="Fractions", audience="young children",
                           style="narrative", subject="Mathematics", created_at=t0 + timedelta(seconds=2)),
               make_sample("textbook", "Welcome to a world of wonders! " + SECTION, topic="Fractions",
                           audience="professionals", style="blog post", created_at=t0 + timedelta(seconds=3))]
    cot = samples_to_table(cot_rows)
    tb = samples_to_table(tb_rows)
    with run.lock():
        run.save_record(RunRecord(run_id=run.run_id, name="crafted", created_at=t0.isoformat(), status="completed",
                                  stages={s: StageStatus(status="completed") for s in ("textbooks", "cot", "dedup",
                                                                                       "decontam")}))
        _write_stage(run, "textbooks", tb.slice(0, 2), _dropped(tb.slice(2), "textbooks",
                                                                 ["noncompliant:banned_opening:Welcome to a world"]))
        _write_stage(run, "cot", cot.slice(0, 3), _dropped(cot.slice(3), "cot", ["answer_mismatch"]))
        pool = pa.concat_tables([tb.slice(0, 2), cot.slice(0, 3)])
        survivor = tb_rows[0]["id"]
        pool = pool.append_column("dedup_cluster", pa.array([survivor, survivor, *[r["id"] for r in cot_rows[:3]]]))
        pool = pool.append_column("dedup_similarity", pa.array([1.0, 0.91, 1.0, 1.0, 1.0], pa.float32()))
        pool = pool.append_column("diversity_embedding", pa.array([[0.1, 0.2]] * 5, pa.list_(pa.float32())))
        keep = pa.array([True, False, True, True, True])
        _write_stage(run, "dedup", pool.filter(keep),
                     _dropped(pool.filter(pa.compute.invert(keep)), "dedup", [f"near_duplicate_of:{survivor}"]))
        after = pool.filter(keep)
        after = after.append_column("contam_max_fraction", pa.array([0.0, 0.9, 0.1, 0.1], pa.float32()))
        after = after.append_column("contam_benchmark", pa.array([None, "gsm8k_test", None, None], pa.string()))
        after = after.append_column("contam_item", pa.array([None, 17, None, None], pa.int64()))
        after = after.append_column("contam_excerpt", pa.array([None, QUESTION[:60], None, None], pa.string()))
        after = after.append_column("contam_fraction", pa.array([None, 0.9, None, None], pa.float32()))
        hit = pa.array([False, True, False, False])
        _write_stage(run, "decontam", after.filter(pa.compute.invert(hit)),
                     _dropped(after.filter(hit), "decontam", ["contaminated:gsm8k_test:17"]))
    with RequestCache(root / "cache" / "teacher.sqlite") as cache:
        row = cot_rows[0]
        cache.put(row["request_hash"], {"model": "teacher-x", "messages": [{"role": "user", "content": QUESTION}],
                                        "params": {"temperature": 0.7}, "sample_index": 0},
                  {"choices": [{"message": {"role": "assistant", "content": row["rationale"]}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 20, "completion_tokens": 12}})
    return run


def _snapshot(run: Run) -> dict[str, str]:
    """sha256 of every file of the run but the labels, and of the data root's request cache."""
    files = [p for p in Path(run.dir).rglob("*") if p.is_file() and "labels" not in p.relative_to(run.dir).parts]
    files += sorted((Path(run.data_root) / "cache").glob("teacher.sqlite*"))
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def piped_index(piped):
    ix = SampleIndex(piped, user="tester")
    yield ix
    ix.close()


@pytest.fixture
def crafted_index(crafted):
    ix = SampleIndex(crafted, user="tester")
    yield ix
    ix.close()


# --- the samples table ------------------------------------------------------------------------------

def test_every_sample_once_final_rows_and_every_drop(piped, piped_index):
    final = query(piped, "SELECT count(*) AS n FROM final").column("n")[0].as_py()
    dropped = query(piped, "SELECT drop_stage, count(*) AS n FROM rejections GROUP BY ALL").to_pylist()
    ix = piped_index
    assert ix.meta["rows"] == final + sum(d["n"] for d in dropped) > 0
    assert ix.meta["kept"] == final and ix.meta["leaves"] == ["judge"]
    stages = {v["value"]: v["count"] for v in ix.facets(Filters())["facets"]["stage"]}
    assert stages == {**{d["drop_stage"]: d["n"] for d in dropped}, "(none)": final}
    assert "judge_score" in ix.scores and ix.scores["judge_score"]["lo"] >= 3.0
    assert leaf_stages(["cot", "textbooks"]) == ["textbooks", "cot"] and leaf_stages(["cot", "dedup", "heuristics"]) == ["dedup"]


def test_facet_counts_match_sql_and_leave_out_their_own_filter(piped, piped_index):
    ix = piped_index
    reasons = query(piped, "SELECT drop_reason AS r, count(*) AS n FROM rejections WHERE drop_stage = 'cot' "
                           "GROUP BY ALL").to_pylist()
    f = Filters.from_params({"reason": ["answer_mismatch"]}, list(ix.scores))
    page = ix.page(f)
    n = sum(r["n"] for r in reasons if r["r"] == "answer_mismatch")
    assert page["total"] == n > 0 and {r["reason"] for r in page["rows"]} == {"answer_mismatch"}
    facets = ix.facets(f)["facets"]
    # the reason facet ignores the reason filter (shows the alternatives); the others honour it
    assert sum(v["count"] for v in facets["reason"]) == ix.meta["rows"]
    assert facets["kind"] == [{"value": "cot", "count": n}]
    # two values of one facet: either; two facets: both
    both = Filters.from_params({"kind": ["cot", "textbook"]})
    assert ix.count(both) == ix.meta["rows"]
    assert ix.count(Filters.from_params({"kind": ["textbook"], "reason": ["answer_mismatch"]})) == 0
    # a missing value is "(none)"
    assert ix.count(Filters.from_params({"topic": ["(none)"]})) == ix.count(Filters.from_params({"kind": ["cot"]}))
    # score ranges and their histogram
    lo = Filters.from_params({"judge_score": [":3.9"]}, list(ix.scores))
    judged = query(piped, "SELECT count(*) AS n FROM (SELECT judge_score FROM final UNION ALL "
                          "SELECT judge_score FROM rejections) WHERE judge_score <= 3.9").column("n")[0].as_py()
    assert ix.count(lo) == judged
    hist = ix.facets(Filters())["scores"]["judge_score"]
    assert sum(hist["bins"]) == ix.scores["judge_score"]["rows"] and len(hist["bins"]) == 20


def test_paging_walks_the_whole_list_in_order(piped_index):
    ix = piped_index
    f = Filters.from_params({"status": ["dropped"]})
    total = ix.count(f)
    seen = []
    for off in range(0, total + 7, 7):
        p = ix.page(f, off, 7)
        assert p["total"] == total and [r["pos"] for r in p["rows"]] == list(range(off + 1, off + 1 + len(p["rows"])))
        seen += [r["n"] for r in p["rows"]]
    assert len(seen) == total and seen == sorted(seen) and len(set(seen)) == total
    assert ix.page(f, total + 100)["rows"] == []


def test_search_words_phrases_regex_and_ids(piped, piped_index):
    ix = piped_index
    texts = query(piped, "SELECT id, text FROM final UNION ALL SELECT id, text FROM rejections").to_pylist()
    want = sum(1 for t in texts if "understood step" in t["text"].lower())
    assert want and ix.count(Filters(q='"Understood STEP"')) == want
    assert ix.count(Filters(q="understood student")) == sum(
        1 for t in texts if "understood" in t["text"].lower() and "student" in t["text"].lower())
    assert ix.count(Filters(q="/what is [0-9] \\+ 2/")) == sum(1 for t in texts if t["text"].startswith("Question: What is"))
    sid = texts[0]["id"]
    assert sid in {r["id"] for r in ix.page(Filters(q=sid[:10]))["rows"]}
    assert ix.count(Filters(q="zzqx-nothing-matches")) == 0
    with pytest.raises(BrowseError, match="invalid regular expression"):
        ix.page(Filters(q="/(unclosed/"))


def test_bad_filters_are_clear_errors(piped_index):
    with pytest.raises(BrowseError, match="lo:hi"):
        parse_range("judge_score", "4")
    with pytest.raises(BrowseError, match="numbers"):
        parse_range("judge_score", "a:b")
    with pytest.raises(BrowseError, match="no score column 'color_score'"):
        piped_index.page(Filters(ranges={"color_score": (0.1, None)}))
    # an unknown facet value matches nothing (it is not an error: a shared link may outlive a value)
    assert piped_index.count(Filters.from_params({"reason": ["no_such_reason"]})) == 0


# --- a sample's story -------------------------------------------------------------------------------

def test_a_dropped_cot_sample_with_its_teacher_exchange_and_siblings(piped, piped_index):
    ix = piped_index
    row = ix.page(Filters.from_params({"reason": ["answer_mismatch"]}))["rows"][0]
    d = ix.sample(row["id"])
    assert d["status"] == "dropped" and d["drop_stage"] == "cot" and d["drop_reason"] == "answer_mismatch"
    assert [(p["stage"], p["status"]) for p in d["path"]] == [("cot", "dropped"), ("heuristics", "not reached"),
                                                              ("dedup", "not reached"), ("judge", "not reached")]
    # the exact request and response, as the cache holds them
    full = query(piped, f"SELECT request_hash FROM rejections WHERE id = '{row['id']}'").column(0)[0].as_py()
    with RequestCache(Path(piped.data_root) / "cache" / "teacher.sqlite") as cache:
        entry = cache.get_entry(full)
    assert d["teacher"]["status"] == "ok" and d["teacher"]["request"] == entry.request
    assert d["teacher"]["reply"] == entry.response["choices"][0]["message"]["content"]
    assert d["cot"]["question"] in d["text"] and len(d["cot"]["samples"]) == 2
    assert {s["id"] for s in d["cot"]["samples"]} >= {row["id"]}
    groups = {g["group"]: g["columns"] for g in d["groups"]}
    assert groups["record"]["request_hash"] == full and "answer" in groups["cot"]


def test_a_kept_sample_passed_every_stage_with_their_columns(piped_index):
    ix = piped_index
    row = ix.page(Filters.from_params({"status": ["kept"], "kind": ["textbook"]}))["rows"][0]
    d = ix.sample(row["id"])
    assert d["status"] == "kept" and d["drop_reason"] is None
    assert [(p["stage"], p["status"]) for p in d["path"]] == [("textbooks", "written"), ("heuristics", "passed"),
                                                              ("dedup", "passed"), ("judge", "passed")]
    groups = {g["group"]: g["columns"] for g in d["groups"]}
    assert {"heuristics", "dedup", "judge", "textbooks"} <= set(groups)
    assert "judge_score" in groups["judge"] and any(c.startswith("heur_") for c in groups["heuristics"])
    assert d["seed"]["topic"] == row["topic"]
    with pytest.raises(SampleNotFound):
        ix.sample("0" * 32)


def test_dedup_diff_decontam_match_and_cot_votes(crafted, crafted_index):
    ix = crafted_index
    assert ix.meta["rows"] == 7 and ix.meta["left_out"] == ["diversity_embedding"]
    dup = ix.page(Filters.from_params({"reason": ["near_duplicate_of"]}))["rows"]
    assert len(dup) == 1
    d = ix.sample(dup[0]["id"])
    x = d["dedup"]
    assert not x["is_survivor"] and x["survivor"]["status"] == "kept" and x["similarity"] == pytest.approx(0.91)
    # the diff rebuilds both texts, and the only change is the word
    assert "".join(s["a"] for s in x["diff"]) == d["text"]
    assert "".join(s["b"] for s in x["diff"]) == x["survivor"]["text"] == SECTION
    assert [(s["a"], s["b"]) for s in x["diff"] if s["op"] != "equal"] == [("fourth.", "quarter.")]
    survivor = ix.sample(x["cluster"])
    assert survivor["dedup"]["is_survivor"] and [m["id"] for m in survivor["dedup"]["members"]] == [d["id"]]
    assert "diversity_embedding" not in json.dumps(survivor["groups"])
    hit = ix.sample(ix.page(Filters.from_params({"stage": ["decontam"]}))["rows"][0]["id"])
    c = hit["decontam"]
    assert c["matched"] and c["benchmark"] == "gsm8k_test" and c["item"] == 17
    # the excerpt is the item's first 60 characters: every word matches but the cut last one
    assert c["match"]["matched_words"] == len(QUESTION[:60].split()) - 1
    assert [s["match"] for s in c["match"]["excerpt"]] == [True, False]
    assert hit["cot"]["answers"][0] == ("7", 3) and [s["sample_index"] for s in hit["cot"]["samples"]] == [0, 1, 2, 3]
    assert hit["teacher"]["status"] == "ok" and hit["teacher"]["request"]["model"] == "teacher-x"
    other = ix.sample(ix.page(Filters.from_params({"kind": ["cot"], "status": ["kept"]}))["rows"][0]["id"])
    assert other["teacher"]["status"] == "missing" and "not in" in other["teacher"]["message"]
    textbook_gate = ix.sample(ix.page(Filters.from_params({"stage": ["textbooks"]}))["rows"][0]["id"])
    assert textbook_gate["reason"] == "noncompliant:banned_opening" and textbook_gate["teacher"]["status"] == "none"


def test_word_diff_and_match_segments():
    segs = word_diff("a b c d", "a x c d e")
    assert "".join(s["a"] for s in segs) == "a b c d" and "".join(s["b"] for s in segs) == "a x c d e"
    assert [s["op"] for s in segs if s["op"] != "equal"] == ["replace", "insert"]
    m = match_segments("How many apples does Tom have", "Intro. " * 60 + "So how many apples does Tom have now? End.",
                       context_words=5)
    assert m["cut_before"] and m["matched_words"] == 6
    assert [s["text"] for s in m["sample"] if s["match"]] == ["how many apples does Tom have"]


# --- labels -----------------------------------------------------------------------------------------

def test_labels_are_appended_files_seen_by_sql_and_the_index(crafted, tmp_path):
    run = Run(crafted.data_root, crafted.run_id)
    before = _snapshot(run)
    ix = SampleIndex(run, user="ana")
    try:
        ids = [r["id"] for r in ix.page(Filters())["rows"]]
        r1 = ix.label(ids[0], "good")
        ix.label(ids[1], "bad")
        ix.label(ids[1], "clear")
        ix.label(ids[2], "bad")
        assert r1["label"] == "good" and r1["user"] == "ana"
        assert ix.count(Filters.from_params({"label": ["good"]})) == 1
        assert ix.count(Filters.from_params({"label": ["bad"]})) == 1
        assert ix.count(Filters.from_params({"label": ["(none)"]})) == ix.meta["rows"] - 2
        labels = {v["value"]: v["count"] for v in ix.facets(Filters())["facets"]["label"]}
        assert labels == {"good": 1, "bad": 1, "(none)": ix.meta["rows"] - 2}
        assert [r["label"] for r in ix.page(Filters())["rows"][:3]] == ["good", None, "bad"]
        assert [e["label"] for e in ix.sample(ids[1])["label_history"]] == ["bad", "clear"]
        with pytest.raises(BrowseError, match="label must be one of"):
            ix.label(ids[0], "great")
        with pytest.raises(SampleNotFound):
            ix.label("f" * 32, "good")
    finally:
        ix.close()
    files = label_files(run)
    assert len(files) == 4 and all(p.parent == run.dir / "labels" for p in files)
    events = read_labels(run)
    assert events.schema == LABEL_SCHEMA and events.column("label").to_pylist() == ["good", "bad", "clear", "bad"]
    # `dataforge sql` sees them
    r = runner.invoke(app, ["sql", "--data-root", str(run.data_root), "--run", run.run_id, "--format", "json",
                            "select id, label, \"user\" from labels order by labelled_at"])
    assert r.exit_code == 0, r.output
    assert [json.loads(x) for x in r.output.splitlines()][0] == {"id": ids[0], "label": "good", "user": "ana"}
    # a new index reads them back; the shards and the request cache were never written
    ix2 = SampleIndex(run)
    try:
        assert ix2.current.keys() == {ids[0], ids[2]}
    finally:
        ix2.close()
    assert _snapshot(run) == before
    for p in files:
        p.unlink()


def test_label_files_without_labels_and_bad_labels(tmp_path, crafted):
    from dataforge.browse.labels import LabelError

    assert query(crafted, "SELECT count(*) AS n FROM labels").column("n")[0].as_py() == 0
    with pytest.raises(LabelError, match="one of good, bad, clear"):
        write_labels(crafted, [("abc", "meh")])
    with pytest.raises(LabelError, match="no labels"):
        write_labels(crafted, [])


def test_classifier_trains_from_a_runs_labels(piped, tmp_path):
    root = ["--data-root", str(piped.data_root)]
    out = tmp_path / "model"
    args = ["classifier", "train", "--labels", piped.run_id, *root, "--out", str(out), "--dim", "8", "--bucket", "1000",
            "--epochs", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "no labels" in r.output and f"dataforge browse {piped.run_id}" in r.output
    ix = SampleIndex(piped, user="ana")
    try:
        good = ix.page(Filters.from_params({"status": ["kept"], "kind": ["cot"]}))["rows"]
        bad = ix.page(Filters.from_params({"reason": ["answer_mismatch"]}))["rows"]
        for row in good[:3]:
            ix.label(row["id"], "good")
        for row in bad[:5]:
            ix.label(row["id"], "bad")
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "3 good and 5 bad" in r.output and "at least 5 of each" in r.output
        for row in good[3:6]:
            ix.label(row["id"], "good")
        ix.label(bad[0]["id"], "clear")  # the latest label counts
        ix.label(bad[5]["id"], "bad")
    finally:
        ix.close()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    card = json.loads((out / "card.json").read_text())
    assert card["name"] == "human_labels" and card["data"]["label_counts"]["all"] == {"0": 5, "1": 6}
    assert card["sources"][0]["run"] == piped.run_id
    for p in label_files(piped):
        p.unlink()


# --- the HTTP API, two runs, the command ------------------------------------------------------------

def test_http_api(crafted_index):
    client = TestClient(create_app(crafted_index), base_url="http://127.0.0.1:8765")
    r = client.get("/")
    assert r.status_code == 200 and "<script src=\"/static/app.js\">" in r.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/app.css").status_code == 200
    info = client.get("/api/info").json()
    assert info["run_id"] == "crafted-run" and info["rows"] == 7 and "contam_max_fraction" not in info["scores"]
    page = client.get("/api/samples?kind=cot&limit=2&offset=1").json()
    assert page["total"] == 4 and [r["pos"] for r in page["rows"]] == [2, 3]
    facets = client.get("/api/facets?kind=cot").json()
    assert {v["value"] for v in facets["facets"]["kind"]} == {"cot", "textbook"}
    sid = page["rows"][0]["id"]
    assert client.get(f"/api/sample/{sid}").json()["id"] == sid
    bad = client.get("/api/samples?q=/(x/")
    assert bad.status_code == 400 and "invalid regular expression" in bad.json()["error"]
    assert client.get("/api/samples?dedup_similarity=1:2").status_code == 200  # not a score: ignored
    assert client.get("/api/sample/nope").status_code == 404
    assert client.post("/api/label", content="id=x&label=good",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
    assert client.post("/api/label", json={"id": sid}).status_code == 400
    assert client.get("/api/info", headers={"Host": "evil.example:8765"}).status_code == 403
    r = client.post("/api/label", json={"id": sid, "label": "good"})
    assert r.status_code == 200 and r.json()["label"] == "good"
    assert client.get("/api/samples?label=good").json()["total"] == 1
    assert client.get("/api/compare?other=nope").status_code == 400
    for p in label_files(crafted_index.run):
        p.unlink()


def test_compare_two_runs(piped, crafted):
    # a second run under the pipeline run's data root: the crafted one, copied
    import shutil

    other = Path(piped.data_root) / "runs" / "crafted-copy"
    shutil.copytree(crafted.dir, other)
    record = json.loads((other / "run.json").read_text())
    record["run_id"] = "crafted-copy"
    (other / "run.json").write_text(json.dumps(record))
    try:
        ix = SampleIndex(piped, verify=False)
        try:
            assert "crafted-copy" in ix.runs()
            c = ix.compare("crafted-copy")
        finally:
            ix.close()
        assert c["runs"] == [piped.run_id, "crafted-copy"]
        a = c["sides"][0]
        assert [f["stage"] for f in a["funnel"]] == ["textbooks", "cot", "heuristics", "dedup", "judge"]
        assert "decontam" in c["stages"] and "judge" in c["stages"]
        reasons = {(r["stage"], r["reason"]): (r["a"], r["b"]) for r in c["reasons"]}
        assert reasons[("decontam", "contaminated")] == (0, 1) and reasons[("cot", "answer_mismatch")][1] == 1
        assert reasons[("cot", "answer_mismatch")][0] == sum(
            f["rows_dropped"] for f in a["funnel"] if f["stage"] == "cot")
    finally:
        shutil.rmtree(other)


def test_a_run_with_nothing_committed(tmp_path):
    run = Run(tmp_path, "empty-run")
    with run.lock():
        run.save_record(RunRecord(run_id=run.run_id, name="e", created_at="2026-12-06T00:00:00+00:00",
                                  stages={"textbooks": StageStatus()}))
    ix = SampleIndex(run)
    try:
        assert ix.meta["rows"] == 0 and ix.page(Filters())["rows"] == []
        assert ix.facets(Filters())["facets"]["label"] == [{"value": "(none)", "count": 0}]
        assert ix.page(Filters(q="anything"))["total"] == 0
    finally:
        ix.close()


def test_cli_browse_help_and_errors(tmp_path, crafted):
    import socket

    r = runner.invoke(app, ["browse", "--help"])
    assert r.exit_code == 0 and "--port" in r.output and "127.0.0.1" in r.output
    r = runner.invoke(app, ["browse", "--data-root", str(tmp_path)])
    assert r.exit_code == 2 and "no runs under" in r.output
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        r = runner.invoke(app, ["browse", crafted.run_id, "--data-root", str(crafted.data_root),
                                "--port", str(taken.getsockname()[1])])
    finally:
        taken.close()
    assert r.exit_code == 2 and "cannot listen on 127.0.0.1" in r.output
