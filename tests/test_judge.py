"""AlpaGasus judge (dataforge/select/judge.py): the reply parser, the 4.5 cut on replayed
ratings (also Claude's real AlpaGasus labels from the shared data), failures, the pipeline
stage, the CLI and the warehouse histogram."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataforge.runner import curation as runner_curation
from dataforge.stages.registry import get_stage
from dataforge import runner, warehouse
from dataforge.cli import app
from dataforge.config import JudgeConfig, PipelineConfig, load_config
from dataforge.records import make_sample, samples_to_table
from dataforge.select.judge import (JUDGE_COLUMNS, RUBRICS, SYSTEM_PROMPT, STRUCTURED_HINT, Triplet, apply_judge,
                                    apply_judge_stage, cut_judged, judge_messages, parse_judge_reply, render_row)
from fake_openai import FakeOpenAI
from teacher_fixtures import fake_teacher_cfg


def teacher(srv: FakeOpenAI, **kw):
    return fake_teacher_cfg(srv, api_key_env=None, max_attempts=2, **kw)


def instruction_of(body: dict) -> str:
    user = body["messages"][-1]["content"]
    m = re.search(r"###Instruction:\n(.*?)\n\n### Input:", user, re.S)
    assert m, user
    return m.group(1)


def replay(ratings: dict[str, str], structured_json: bool = True):
    """A responder replaying a known rating per instruction: the free-text reply as given, or
    for a structured request the JSON a constrained endpoint would return."""

    def respond(body: dict) -> str:
        reply = ratings[instruction_of(body)]
        if body.get("response_format") and structured_json:
            score = parse_judge_reply(reply).score
            return json.dumps({"score": score, "explanation": "replayed"})
        return reply

    return respond


def alpaca_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{"id": f"r{i}", "text": r["output"], **r} for i, r in enumerate(rows)])


# --------------------------------------------------------------------------- parser


@pytest.mark.parametrize("reply, score", [
    ("4.5\nThe response is accurate.", 4.5),  # AlpaGasus' own format: float(first line)
    ("5", 5.0),
    ("4.5\n\nThe response provides a basic understanding ...", 4.5),  # the example in chatgpt_rating.py
    ("Score: 4.5\nAccurate.", 4.5),
    ("The answer is fine.\nscore: 3.5", 3.5),  # parse_score's 'score:' branch
    ("Mostly right.\nScore: 4", 4.0),  # its 'Score:' branch
    ("**Score:** 4", 4.0),
    ("**4.5**\n\nGood.", 4.5),
    ("4.5/5\nGood.", 4.5),
    ("Rating: 3 out of 5", 3.0),
    ("The response is accurate. 4 out of 5.", 4.0),
    ("It gets 3.5/5. Fine", 3.5),
    ("Assistant 1: 4\nThe assistant answered correctly.", 4.0),
    ("Assistant: 2.5", 2.5),
    ("I would give the assistant a score of 4.5 because it is correct.", 4.5),
    ("Each assistant receives a score on a scale of 0 to 5. The score is 3.5.", 3.5),  # not the scale's 0
    ('{"score": 4.5, "explanation": "ok"}', 4.5),
    ('```json\n{"score": 2, "explanation": "wrong"}\n```', 2.0),
    ("4.5 - accurate and complete", 4.5),
    ("0\nCompletely wrong.", 0.0),
    (".5\nBarely.", 0.5),
])
def test_parser_reads_the_formats_judges_write(reply, score):
    p = parse_judge_reply(reply)
    assert p.ok, p
    assert p.score == score


@pytest.mark.parametrize("reply, why", [
    ("", "empty"),
    ("The response is helpful and accurate.", "no score"),
    ("1. The answer is wrong\n2. It is rude", "no score"),  # list markers are not scores
    ("7\nGreat", "outside"),
    ("Score: 9/10", "outside"),
])
def test_parser_reports_why_there_is_no_score(reply, why):
    p = parse_judge_reply(reply)
    assert p.score is None
    assert why in p.how


def test_first_line_explanation_is_the_rest():
    p = parse_judge_reply("4.0\nClear, but misses the second part.")
    assert (p.score, p.explanation, p.how) == (4.0, "Clear, but misses the second part.", "first_line")


# --------------------------------------------------------------------------- prompt


def test_prompt_is_alpagasus_verbatim():
    msgs = judge_messages(Triplet("Add 2 and 3.", "", "5"), "accuracy")
    assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert msgs[1]["content"].startswith("###Instruction:\nAdd 2 and 3.\n\n### Input:\n\n\n### Response:\n5\n\n")
    assert msgs[1]["content"].endswith(RUBRICS["accuracy"])
    assert "higher level of the accuracy" in RUBRICS["accuracy"] and "helpfulness" in RUBRICS["helpfulness"]
    structured = judge_messages(Triplet("a", "", "b"), "helpfulness", structured=True)[1]["content"]
    assert structured.endswith(STRUCTURED_HINT) and RUBRICS["helpfulness"] in structured


def test_render_row_sources():
    assert render_row({"instruction": "Sum", "input": "2 3", "output": "5"}) == Triplet("Sum", "2 3", "5")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello."}]
    assert render_row({"messages": chat, "text": "x"}) == Triplet("Hi?", "Be brief.", "Hello.")
    assert render_row({"question": "2+2?", "rationale": "2+2=4. The answer is 4.", "text": "x"}) == \
        Triplet("2+2?", "", "2+2=4. The answer is 4.")
    t = render_row({"text": "Photosynthesis turns light into sugar."})
    assert t.output == "Photosynthesis turns light into sugar." and "none" in t.instruction


# --------------------------------------------------------------------------- the cut, replayed


@pytest.mark.parametrize("output", ["text", "structured", "auto"])
def test_threshold_is_inclusive_at_exactly_4_5(tmp_path, output):
    ratings = {"low": "4.49\nAlmost.", "edge": "4.5\nGood.", "high": "Score: 4.51\nVery good."}
    rows = [{"instruction": k, "input": "", "output": f"answer {k}"} for k in ratings]
    with FakeOpenAI(responder=replay(ratings)) as srv:
        kept, rejected = apply_judge(alpaca_table(rows), JudgeConfig(output=output), teacher(srv),
                                     tmp_path / "c.sqlite")
        if output != "text":
            assert all(r["json"].get("response_format") for r in srv.requests if r["path"].endswith("completions"))
    assert sorted(kept.column("instruction").to_pylist()) == ["edge", "high"]
    assert dict(zip(kept.column("instruction").to_pylist(), kept.column("judge_score").to_pylist())) == \
        {"edge": 4.5, "high": 4.51}
    assert rejected.column("drop_reason").to_pylist() == ["judge:score_4.49<4.5"]
    assert rejected.column("drop_stage").to_pylist() == ["judge"]
    assert set(kept.column("judge_rubric").to_pylist()) == {"accuracy"}


def test_recut_needs_no_new_judgements(tmp_path):
    ratings = {f"q{i}": f"{s}\nok" for i, s in enumerate([3.0, 4.0, 4.5, 5.0])}
    rows = [{"instruction": k, "input": "", "output": "a"} for k in ratings]
    with FakeOpenAI(responder=replay(ratings)) as srv:
        kept, rejected = apply_judge(alpaca_table(rows), JudgeConfig(output="text"), teacher(srv),
                                     tmp_path / "c.sqlite")
        both = pa.concat_tables([kept, rejected.drop_columns(["drop_stage", "drop_reason"])])
        k4, r4 = cut_judged(both, 4.0)
        assert srv.chat_count == 4
        # the cache answers a second run without any request
        apply_judge(alpaca_table(rows), JudgeConfig(output="text"), teacher(srv), tmp_path / "c.sqlite")
        assert srv.chat_count == 4
    assert kept.num_rows == 2 and k4.num_rows == 3
    assert r4.column("drop_reason").to_pylist() == ["judge:score_3.0<4.0"]


def test_claude_ratings_replayed_keep_exactly_the_t45_rows(shared_data, tmp_path):
    """Rows of random_9k that Claude rated >= 4.5 (they are in claude_t45.json) replay as
    4.5 or 5 in the formats AlpaGasus' parser read; the others as 4.0 or lower. The judge keeps
    exactly the t45 rows, in free-text and structured mode."""
    pool = json.loads((shared_data / "alpaca" / "random_9k.json").read_text())
    t45 = {(r["instruction"], r["input"], r["output"])
           for r in json.loads((shared_data / "alpaca" / "claude_t45.json").read_text())}
    good = [r for r in pool if (r["instruction"], r["input"], r["output"]) in t45]
    bad = [r for r in pool if (r["instruction"], r["input"], r["output"]) not in t45]
    rows = {r["instruction"]: r for r in good[:15] + bad[:15]}  # instructions unique in the sample
    high = ["4.5\nAccurate.", "5\nFully accurate.", "Score: 4.5\nAccurate.", "4.5/5\nAccurate."]
    low = ["4.0\nMinor slips.", "3.5\nPartly wrong.", "Score: 4\nok", "Assistant 1: 2\nWrong."]
    ratings = {ins: (high if (r["instruction"], r["input"], r["output"]) in t45 else low)[i % 4]
               for i, (ins, r) in enumerate(rows.items())}
    expected = sorted(ins for ins, r in rows.items() if (r["instruction"], r["input"], r["output"]) in t45)
    assert len(expected) == 15
    for output in ("text", "structured"):
        with FakeOpenAI(responder=replay(ratings)) as srv:
            kept, rejected = apply_judge(alpaca_table(list(rows.values())), JudgeConfig(output=output),
                                         teacher(srv, max_concurrency=4), tmp_path / f"{output}.sqlite")
        assert sorted(kept.column("instruction").to_pylist()) == expected, output
        assert rejected.num_rows == 15
        assert all(r.startswith("judge:score_") and r.endswith("<4.5") for r in rejected.column("drop_reason").to_pylist())


# --------------------------------------------------------------------------- failures


def test_unparseable_reply_is_recorded_and_dropped_or_kept(tmp_path):
    ratings = {"good": "5\nPerfect.", "chatty": "I think this response is quite good overall."}
    rows = [{"instruction": k, "input": "", "output": "a"} for k in ratings]
    with FakeOpenAI(responder=replay(ratings)) as srv:
        kept, rejected = apply_judge(alpaca_table(rows), JudgeConfig(output="text"), teacher(srv),
                                     tmp_path / "c.sqlite")
        kept2, rejected2 = apply_judge(alpaca_table(rows), JudgeConfig(output="text", on_failure="keep"),
                                       teacher(srv), tmp_path / "c.sqlite")
    assert kept.column("instruction").to_pylist() == ["good"]
    r = rejected.to_pylist()[0]
    assert r["drop_reason"] == "judge:unparseable" and r["judge_error"] == "unparseable"
    assert r["judge_score"] is None and "no score in reply" in r["judge_reason"] and "quite good" in r["judge_reason"]
    assert sorted(kept2.column("instruction").to_pylist()) == ["chatty", "good"] and rejected2.num_rows == 0


def test_teacher_failure_is_a_failed_judgement(tmp_path):
    rows = [{"instruction": "x", "input": "", "output": "a"}]
    with FakeOpenAI(responder=replay({"x": "5"}), default_action="500") as srv:
        kept, rejected = apply_judge(alpaca_table(rows), JudgeConfig(output="text"), teacher(srv),
                                     tmp_path / "c.sqlite")
    assert kept.num_rows == 0
    assert rejected.column("drop_reason").to_pylist() == ["judge:teacher_error:http_500"]


def test_auto_falls_back_to_free_text_when_the_schema_is_not_met(tmp_path):
    # an endpoint that ignores response_format and answers AlpaGasus-style text
    ratings = {"x": "4.5\nGood.", "y": "3\nMeh."}
    rows = [{"instruction": k, "input": "", "output": "a"} for k in ratings]
    with FakeOpenAI(responder=replay(ratings, structured_json=False)) as srv:
        kept, rejected = apply_judge(alpaca_table(rows), JudgeConfig(output="auto"), teacher(srv),
                                     tmp_path / "c.sqlite")
        sent = [r["json"] for r in srv.requests if r["path"].endswith("completions")]
    assert kept.column("instruction").to_pylist() == ["x"]
    assert rejected.column("drop_reason").to_pylist() == ["judge:score_3.0<4.5"]
    assert any(s.get("response_format") for s in sent) and any(not s.get("response_format") for s in sent)
    with FakeOpenAI(responder=replay(ratings, structured_json=False)) as srv:
        _, rej = apply_judge(alpaca_table(rows), JudgeConfig(output="structured"), teacher(srv), tmp_path / "d.sqlite")
    assert set(rej.column("drop_reason").to_pylist()) == {"judge:teacher_error:schema_invalid"}


def test_apply_to_passes_other_kinds_through(tmp_path):
    cot = make_sample("cot", "Question: 2+2?\nAnswer: 4", [{"role": "user", "content": "2+2?"},
                                                            {"role": "assistant", "content": "4"}],
                      question="2+2?", rationale="4")
    book = make_sample("textbook", "Plants turn light into sugar.", topic="plants")
    with FakeOpenAI(responder=replay({"2+2?": "2\nwrong"})) as srv:
        kept, rejected = apply_judge(samples_to_table([cot, book]), JudgeConfig(output="text", apply_to=["cot"]),
                                     teacher(srv), tmp_path / "c.sqlite")
        assert srv.chat_count == 1
    assert kept.column("kind").to_pylist() == ["textbook"] and kept.column("judge_score").to_pylist() == [None]
    assert rejected.column("drop_reason").to_pylist() == ["judge:score_2.0<4.5"]


# --------------------------------------------------------------------------- config, stage, flow


def test_config_names_the_field(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("judge:\n  enabled: true\n  threshold: 6\n")
    with pytest.raises(Exception, match=r"judge\.threshold"):
        load_config(p)
    p.write_text("judge:\n  rubrc: accuracy\n")
    with pytest.raises(Exception, match=r"judge\.rubrc: unknown field"):
        load_config(p)


def test_pipeline_stage_uses_the_pipeline_teacher_and_cache(tmp_path):
    rows = [make_sample("instruction", "x", [{"role": "user", "content": f"task {i}"},
                                              {"role": "assistant", "content": "done"}]) for i in range(3)]
    ratings = {"task 0": "5\nok", "task 1": "4\nok", "task 2": "4.5\nok"}
    assert get_stage("judge").scope == "whole" and get_stage("judge").teacher
    with FakeOpenAI(responder=replay(ratings)) as srv:
        cfg = PipelineConfig(data_root=str(tmp_path), teacher=teacher(srv), judge=JudgeConfig(enabled=True))
        kept, rejected, info = get_stage("judge").apply(samples_to_table(rows), cfg)
    assert (tmp_path / "cache" / "teacher.sqlite").exists()
    assert info["teacher"]["requests_sent"] == srv.chat_count == 3 and info["teacher"]["failures"] == 0
    assert kept.num_rows == 2 and rejected.column("drop_reason").to_pylist() == ["judge:score_4.0<4.5"]
    empty_kept, empty_rej = apply_judge_stage(samples_to_table([]), cfg)
    assert set(JUDGE_COLUMNS) <= set(empty_kept.column_names) and empty_rej.num_rows == 0


def test_flow_starts_the_local_teacher_for_a_pending_judge(tmp_path, monkeypatch):
    import contextlib

    from flows import pipeline

    started = []

    @contextlib.contextmanager
    def fake_local(cfg, state_dir):
        started.append(state_dir)
        yield "http://127.0.0.1:1/v1"

    monkeypatch.setattr(pipeline, "local_teacher", fake_local)
    cfg = PipelineConfig(data_root=str(tmp_path), judge=JudgeConfig(enabled=True))
    run = runner.open_run(cfg, "judge-run")
    monkeypatch.setattr(runner_curation, "curation_io", lambda r, c, s: type("IO", (), {"done": lambda self: False})())
    with pipeline.teacher_context(cfg, run, "judge"):
        pass
    with pipeline.teacher_context(cfg, run, "dedup"):
        pass
    assert len(started) == 1
    monkeypatch.setattr(runner_curation, "curation_io", lambda r, c, s: type("IO", (), {"done": lambda self: True})())
    with pipeline.teacher_context(cfg, run, "judge"):
        pass
    assert len(started) == 1


# --------------------------------------------------------------------------- CLI


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    return path


def test_cli_judge(tmp_path):
    ratings = {"a": "5\nok", "b": "Score: 3\nno", "c": "no idea"}
    src = write_jsonl(tmp_path / "in.jsonl", [{"instruction": k, "input": "", "output": "x", "text": "x"}
                                              for k in ratings])
    with FakeOpenAI(responder=replay(ratings)) as srv:
        res = CliRunner().invoke(app, ["judge", str(src), "--out", str(tmp_path / "out"), "--base-url", srv.base_url,
                                       "--model", "fake-model", "--output", "text"])
    assert res.exit_code == 0, res.output
    assert "rows 3, judged 3, kept 1" in res.output and "failed 1" in res.output and "quarantined 1" in res.output
    assert pq.read_table(tmp_path / "out" / "kept.parquet").column("instruction").to_pylist() == ["a"]
    reasons = pq.read_table(tmp_path / "out" / "rejected.parquet").column("drop_reason").to_pylist()
    assert sorted(reasons) == ["judge:score_3.0<4.5", "judge:unparseable"]
    assert (tmp_path / "out" / "quarantine.jsonl").exists()


def test_cli_judge_config_and_bad_flag(tmp_path):
    ratings = {"a": "4\nok", "b": "3\nno"}
    src = write_jsonl(tmp_path / "in.jsonl", [{"instruction": k, "input": "", "output": "x", "text": "x"}
                                              for k in ratings])
    with FakeOpenAI(responder=replay(ratings)) as srv:
        cfg = tmp_path / "p.yaml"
        cfg.write_text(f"teacher:\n  provider: openai\n  base_url: {srv.base_url}\n  model: fake-model\n"
                       f"judge:\n  threshold: 4.0\n  output: text\n")
        res = CliRunner().invoke(app, ["judge", str(src), "--out", str(tmp_path / "o"), "--config", str(cfg)])
        assert res.exit_code == 0, res.output
        assert "kept 1 (score >= 4)" in res.output
        bad = CliRunner().invoke(app, ["judge", str(src), "--out", str(tmp_path / "o"), "--config", str(cfg),
                                       "--rubric", "kindness"])
    assert bad.exit_code == 2 and "judge.rubric" in bad.output
    assert "AlpaGasus" in CliRunner().invoke(app, ["judge", "--help"]).output


# --------------------------------------------------------------------------- warehouse


def test_judge_scores_report(tmp_path):
    from test_warehouse import commit

    cfg = PipelineConfig(data_root=str(tmp_path / "data"))
    run = runner.open_run(cfg, "wh-judge")
    samples = samples_to_table([make_sample("instruction", f"row {i}", [{"role": "user", "content": f"q{i}"},
                                                                        {"role": "assistant", "content": "a"}])
                                for i in range(6)])
    scores = [5.0, 4.5, 4.74, 4.49, 2.0, None]
    errors = [None] * 5 + ["unparseable"]
    table = samples
    for name, values, typ in (("judge_score", scores, pa.float64()), ("judge_reason", ["r"] * 6, pa.string()),
                              ("judge_rubric", ["accuracy"] * 6, pa.string()), ("judge_error", errors, pa.string())):
        table = table.append_column(pa.field(name, typ), pa.array(values, typ))
    kept, rejected = cut_judged(table, 4.5)
    runner.record_result(run, commit(run, "judge", kept, rejected))
    con = warehouse.connect(run)
    sql = warehouse.report_queries()["judge_scores"]
    got = {r["score_bin"]: (r["kept"], r["dropped"]) for r in warehouse.fetch_arrow(con, sql).to_pylist()}
    assert got["5.0"] == (1, 0) and got["4.5"] == (2, 0) and got["4.0"] == (0, 1) and got["2.0"] == (0, 1)
    assert got["failed"] == (0, 1) and got["3.0"] == (0, 0) and len(got) == 12


def test_judge_scores_report_without_a_judge_stage(tmp_path):
    cfg = PipelineConfig(data_root=str(tmp_path / "data"))
    run = runner.open_run(cfg, "wh-none")
    out = warehouse.fetch_arrow(warehouse.connect(run), warehouse.report_queries()["judge_scores"]).to_pylist()
    assert len(out) == 12 and all(r["rows"] == 0 for r in out)


def test_judge_then_diversity_through_the_stage_runners(tmp_path):
    """The judge and diversity stages as the pipeline runs them: committed shards, rejected
    rows with drop_stage, and skipped on resume (the judge asks nothing the second time)."""
    from dataforge.config import DiversityConfig
    from dataforge.store import manifest_files
    from test_warehouse import commit

    tasks = {f"Explain topic number {i} in plain words for a curious reader.": s
             for i, s in enumerate(["5", "4.5", "4.5", "3", "Score: 5", "nothing"])}
    samples = [make_sample("instruction", f"{q}\n{q}", [{"role": "user", "content": q},
                                                         {"role": "assistant", "content": q}]) for q in tasks]
    with FakeOpenAI(responder=replay({q: f"{s}\nreason" for q, s in tasks.items()})) as srv:
        cfg = PipelineConfig(data_root=str(tmp_path), teacher=teacher(srv), judge=JudgeConfig(enabled=True),
                             diversity=DiversityConfig(enabled=True, embedding="ngram", budget=2),
                             heuristics={"enabled": False}, dedup={"enabled": False}, textbooks={"enabled": False})
        run = runner.open_run(cfg, "sel-run")
        commit(run, "cot", samples_to_table(samples), samples_to_table([]).append_column(
            "drop_stage", pa.array([], pa.string())).append_column("drop_reason", pa.array([], pa.string())))
        assert runner.enabled_curation(cfg) == ["judge", "diversity"]
        assert runner.teacher_stage_pending(run, cfg, "judge")
        slots = []

        async def acquire():  # what flows/ passes: a slot of the teacher's rate limit shared by runs
            slots.append(1)

        j = runner.run_whole(run, cfg, "judge", acquire=acquire)
        assert len(slots) == srv.chat_count >= 6  # one slot per HTTP request sent (6 rows)
        d = runner.run_curation_stage(run, cfg, "diversity")
        asked = srv.chat_count
        again = runner.run_curation_stage(run, cfg, "judge")
        assert srv.chat_count == asked and again.skipped and not runner.teacher_stage_pending(run, cfg, "judge")
    assert (j.rows_in, j.rows_kept, j.rows_dropped) == (6, 4, 2)
    # the judge's teacher use is the stage's (and so the run's) teacher record
    assert j.teacher["requests_sent"] == asked and j.teacher["prompt_tokens"] > 0
    assert (d.rows_in, d.rows_kept, d.rows_dropped) == (4, 2, 2)
    final = pa.concat_tables([pq.read_table(p) for p in manifest_files(run.stage_dir("diversity"))])
    assert final.column("judge_score").to_pylist() == [5.0, 5.0]  # the two best, in selection order
    assert final.column("diversity_selected_rank").to_pylist() == [1, 2]
    dropped = pa.concat_tables([pq.read_table(p) for p in manifest_files(run.rejected_dir("judge"))])
    assert sorted(dropped.column("drop_reason").to_pylist()) == ["judge:score_3.0<4.5", "judge:unparseable"]
