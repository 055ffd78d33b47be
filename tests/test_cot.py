"""Chain-of-thought generation: the Orca-style prompt mix, answer types, program of thought,
self-consistency votes and the keep/drop verdict, against the fake teacher and through the
stage runner (no Prefect)."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import get_args

import pyarrow.parquet as pq
import pytest
import yaml

from dataforge import runner
from dataforge.config import CotConfig, CotSystemPrompt, TeacherConfig, load_config, parse_config, ConfigError
from dataforge.generate.answers import Choice
from dataforge.generate.cot import (FEW_SHOT, POT_PROMPT_NAME, SYSTEM, SYSTEM_PROMPTS, answer_instruction,
                                    choose_system_prompt, cot_messages, generate_cot, pot_messages, system_message,
                                    verdict)
from dataforge.generate.seeds import load_seeds
from dataforge.teacher import TeacherClient
from fake_openai import FakeOpenAI


# --- prompts -------------------------------------------------------------------------------

def test_prompt_names_in_config_and_library_agree():
    assert set(get_args(CotSystemPrompt)) == set(SYSTEM_PROMPTS)


def test_default_request_is_the_few_shot_prompt_unchanged():
    """The default (and the quickstart's) request is byte for byte the one before the mix
    existed, so a re-run is still answered from the teacher cache."""
    msgs = cot_messages("What is 2 + 3?")
    assert msgs == [{"role": "system", "content": SYSTEM}, *FEW_SHOT, {"role": "user", "content": "What is 2 + 3?"}]
    assert SYSTEM == ('Solve the math word problem. Think step by step, show the calculation, and end with '
                      '"The answer is N."')
    assert CotConfig().system_prompts == {"fewshot": 1.0}


def test_zero_shot_prompts_carry_the_answer_format_per_type():
    opts = (Choice("A", "21"), Choice("B", "22"))
    for name in SYSTEM_PROMPTS:
        for atype, options, needle in (("numeric", (), '"The answer is N."'),
                                       ("option", opts, '"The answer is (X)." where X is the letter of the correct option (A, B)'),
                                       ("yesno", (), '"The answer is yes." or "The answer is no."'),
                                       ("text", (), '"The answer is" followed by the short answer')):
            msgs = cot_messages("Q?", name, atype, options)
            assert msgs[-1] == {"role": "user", "content": "Q?"}
            assert needle in msgs[0]["content"] or (name == "fewshot" and atype == "numeric"), (name, atype)
            assert (len(msgs) == 6) == (name == "fewshot")  # few-shot: two worked examples
    assert "Sentence A, Sentence B" in answer_instruction("option", (Choice("Sentence A", "x"), Choice("Sentence B", "y")))
    assert "written exactly as listed" in answer_instruction("option", (Choice(None, "oven"), Choice(None, "sink")))
    few = cot_messages("Q?", "fewshot", "yesno")
    assert few[-2]["content"].endswith("The answer is yes.")
    with pytest.raises(ValueError, match="unknown system prompt 'socratic'"):
        system_message("socratic")


def test_pot_prompt():
    msgs = pot_messages("What is 2 + 3?")
    assert "def solution()" in msgs[2]["content"] and "as a number" in msgs[0]["content"]
    assert len(msgs) == 6
    opt = pot_messages("Q?", "option", (Choice("A", "1"), Choice("B", "2")))
    assert 'such as "B"' in opt[0]["content"] and len(opt) == 2
    assert "True (yes) or False (no)" in pot_messages("Q?", "yesno")[0]["content"]


def test_prompt_choice_is_deterministic_and_follows_the_weights():
    weights = {"fewshot": 1.0, "step_by_step": 2.0, "concise": 1.0, "recall_then_answer": 0.0}
    draws = [choose_system_prompt(weights, 7, f"question {i}", k) for i in range(1000) for k in range(4)]
    assert draws == [choose_system_prompt(dict(reversed(weights.items())), 7, f"question {i}", k)
                     for i in range(1000) for k in range(4)]  # not the order of the mapping
    counts = Counter(draws)
    assert "recall_then_answer" not in counts
    assert abs(counts["step_by_step"] / len(draws) - 0.5) < 0.03
    assert abs(counts["fewshot"] / len(draws) - 0.25) < 0.03
    # another run seed draws differently
    assert draws != [choose_system_prompt(weights, 8, f"question {i}", k) for i in range(1000) for k in range(4)]
    with pytest.raises(ValueError):
        choose_system_prompt({"concise": 0.0}, 1, "q", 0)


@pytest.mark.parametrize("cot, error", [
    ({"system_prompts": {"socratic": 1.0}}, "cot.system_prompts.socratic"),
    ({"system_prompts": {"concise": -1.0}}, "weights must be >= 0"),
    ({"system_prompts": {"concise": 0.0}}, "at least one system prompt"),
    ({"method": "code"}, "cot.method"),
    ({"seed_format": "csv"}, "cot.seed_format"),
    ({"seeds": []}, "name at least one seed file"),
    ({"sandbox": {"timeout_s": 0}}, "cot.sandbox.timeout_s"),
    ({"sandbox": {"memory": 5}}, "cot.sandbox.memory: unknown field"),
])
def test_config_errors_name_the_field(cot, error):
    with pytest.raises(ConfigError, match=re.escape(error)):
        parse_config({"cot": cot}, "p.yaml")


# --- generation against the fake teacher ----------------------------------------------------

def cot_responder(body: dict) -> str:
    """A stand-in teacher. Prose: right for even seeds, wrong for odd ones. Programs: right,
    except for questions that ask for trouble."""
    msgs = body["messages"]
    system = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
    q = msgs[-1]["content"]
    seed = body.get("seed") or 0
    add = re.search(r"What is (\d+) \+ (\d+)\?", q)
    if "Python program" in system:
        if "(loop)" in q:
            return "```python\ndef solution():\n    while True:\n        pass\n```"
        if "(broken)" in q:
            return "Here you go:\n```python\ndef solution(:\n    return 1\n```"
        if "(secret)" in q:
            return "```python\nimport os\ndef solution():\n    return int(os.environ.get('DATAFORGE_TEST_KEY', '0'))\n```"
        if add:
            return (f"```python\ndef solution():\n    first = {add.group(1)}\n    second = {add.group(2)}\n"
                    "    return first + second\n```")
        if "Answer Choices" in q:
            return '```python\ndef solution():\n    return "B"\n```'
        return "```python\ndef solution():\n    return False\n```"
    if add:
        a, b = int(add.group(1)), int(add.group(2))
        result = a + b if seed % 2 == 0 else a + b + 1
        return f"We add {a} and {b}.\n{a} + {b} = {result}\nThe answer is {result}."
    if "Answer Choices" in q:
        return "Twelve is 6 * 2.\nThe answer is (B)." if seed % 2 == 0 else "The answer is (A)."
    return "Penguins cannot fly.\nThe answer is no." if seed % 2 == 0 else "I am not sure."


def write_seed_files(tmp: Path) -> list[str]:
    gsm = tmp / "math.jsonl"
    gsm.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "What is 2 + 3?", "answer": "#### 5"},
        {"question": "What is 4 + 4? (loop)", "answer": "#### 8"},
        {"question": "What is 1 + 6? (broken)", "answer": "#### 7"},
        {"question": "Read a key? (secret)", "answer": "#### 0"},
    ]) + "not json\n")
    aqua = tmp / "aqua_test.jsonl"
    aqua.write_text(json.dumps({"question": "A pen costs $2. What do 6 pens cost?",
                                "options": ["A)10", "B)12", "C)14"], "rationale": "", "correct": "B"}) + "\n")
    sqa = tmp / "strategyqa_task.json"
    sqa.write_text(json.dumps({"examples": [{"input": "Can a penguin fly to a treetop?",
                                             "target_scores": {"Yes": 0, "No": 1}, "target": "No."}]}))
    return [str(gsm), str(aqua), str(sqa)]


def _generate(srv: FakeOpenAI, seeds, cfg: CotConfig):
    async def go():
        tcfg = TeacherConfig(provider="openai", base_url=srv.base_url, model="fake-model", max_attempts=1,
                             timeout_s=10)
        async with TeacherClient(tcfg) as client:
            return await generate_cot(client, seeds, cfg, run_id="r1", seed=1234)
    return asyncio.run(go())


def test_both_methods_all_answer_types(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFORGE_TEST_KEY", "41")  # must not reach the program
    seeds, bad = load_seeds(write_seed_files(tmp_path))
    assert [q.line for q in bad] == [5]
    cfg = CotConfig(method="both", samples_per_question=2, system_prompts={"fewshot": 1.0, "step_by_step": 1.0},
                    sandbox={"timeout_s": 1.5, "cpu_s": 5})
    with FakeOpenAI(responder=cot_responder) as srv:
        rows, failures = _generate(srv, seeds, cfg)
        assert srv.chat_count == len(seeds) * 2 * 2
    assert failures == [] and len(rows) == 24
    by = {(r["question"].split("?")[0], r["method"], r["sample_index"]): r for r in rows}

    # prose: even seeds right, odd wrong; the prompt's name, template and messages recorded
    r = by[("What is 2 + 3", "cot", 0)]
    assert (r["answer"], r["answer_correct"], r["seed_source"], r["program"]) == ("5", True, "gsm8k", None)
    assert r["system_prompt"] in ("fewshot", "step_by_step")
    assert r["template"] == ("cot_fewshot_v1" if r["system_prompt"] == "fewshot" else "cot_step_by_step_v1")
    roles = [m["role"] for m in r["messages"]]
    assert roles == (["user", "assistant"] if r["system_prompt"] == "fewshot" else ["system", "user", "assistant"])
    assert by[("What is 2 + 3", "cot", 1)]["answer_correct"] is False

    # programs: rationale is the program, the answer is what it returned
    p = by[("What is 2 + 3", "pot", 0)]
    assert p["program"] == "def solution():\n    first = 2\n    second = 3\n    return first + second\n"
    assert p["rationale"] == p["program"] and p["answer"] == "5" and p["answer_correct"] is True
    assert (p["system_prompt"], p["template"], p["pot_status"]) == (POT_PROMPT_NAME, "pot_v1", "ok")
    assert p["messages"][-1]["content"].startswith("```python\ndef solution():")
    # self-consistency pools both methods: "5" from cot k=0 and pot k=0, k=1 -> 3 of 4
    assert (p["votes"], p["agreement"]) == (3, 0.75)

    loop = by[("What is 4 + 4", "pot", 0)]
    assert loop["pot_status"] == "timeout" and loop["answer"] is None
    assert verdict(loop, "verified") == "program_failed:timeout"
    broken = by[("What is 1 + 6", "pot", 1)]
    assert broken["pot_status"] == "syntax_error" and broken["program"].startswith("def solution(:")
    assert verdict(broken, "verified") == "program_failed:syntax_error"
    secret = by[("Read a key", "pot", 0)]
    assert secret["pot_status"] == "ok" and secret["answer"] == "0"  # the variable was absent in the sandbox

    # multiple choice and yes/no, both methods
    mc = by[("A pen costs $2. What do 6 pens cost", "cot", 0)]
    assert (mc["answer"], mc["gold_answer"], mc["answer_correct"], mc["seed_source"]) == ("B", "B", True, "aqua")
    assert by[("A pen costs $2. What do 6 pens cost", "cot", 1)]["answer"] == "A"
    assert by[("A pen costs $2. What do 6 pens cost", "pot", 0)]["answer"] == "B"
    yn = by[("Can a penguin fly to a treetop", "cot", 0)]
    assert (yn["answer"], yn["answer_correct"], yn["seed_source"]) == ("no", True, "strategyqa")
    assert by[("Can a penguin fly to a treetop", "cot", 1)]["answer"] is None
    assert verdict(by[("Can a penguin fly to a treetop", "cot", 1)], "verified") == "no_final_answer"
    assert by[("Can a penguin fly to a treetop", "pot", 0)]["answer"] == "no"  # False -> no


def test_pot_only_with_failing_teacher_requests(tmp_path):
    seeds, _ = load_seeds([write_seed_files(tmp_path)[0]])
    cfg = CotConfig(method="pot", samples_per_question=1, sandbox={"timeout_s": 1.0})
    with FakeOpenAI(responder=cot_responder) as srv:
        srv.default_action = "500"
        rows, failures = _generate(srv, seeds[:1], cfg)
    assert rows == []
    assert [(f["method"], f["drop_reason"]) for f in failures] == [("pot", "teacher_error:http_500")]


# --- through the stage runner ---------------------------------------------------------------

def test_run_cot_stage_with_mixed_seeds_and_programs(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFORGE_TEST_KEY", "41")
    files = write_seed_files(tmp_path)
    with FakeOpenAI(responder=cot_responder) as srv:
        cfg_path = tmp_path / "p.yaml"
        cfg_path.write_text(yaml.safe_dump({
            "name": "cot", "data_root": str(tmp_path / "data"),
            "teacher": {"provider": "openai", "base_url": srv.base_url, "model": "fake", "max_attempts": 1},
            "textbooks": {"enabled": False},
            "cot": {"seeds": [Path(f).name for f in files], "samples_per_question": 2, "method": "both",
                    "system_prompts": {"explain_to_student": 1, "concise": 1},
                    "sandbox": {"timeout_s": 1.5}}}))
        cfg = load_config(cfg_path)
        run = runner.open_run(cfg)
        result = runner.run_cot(run, cfg)
        sent = srv.chat_count
        again = runner.run_cot(run, cfg)  # committed: skipped, nothing sent
        assert again.skipped and srv.chat_count == sent
    kept = pq.read_table(run.stage_dir("cot")).to_pylist()
    rejected = pq.read_table(run.rejected_dir("cot")).to_pylist()
    assert result.rows_in == 6 * 2 * 2 == len(kept) + len(rejected)
    assert all(r["answer_correct"] for r in kept)
    assert {r["seed_source"] for r in kept} == {"gsm8k", "aqua", "strategyqa"}
    assert {r["method"] for r in kept} == {"cot", "pot"}
    shard = sorted(run.stage_dir("cot").glob("part-*.parquet"))[0]
    assert "pot_status" not in pq.read_schema(shard).names  # transient keys are not columns
    reasons = Counter(r["drop_reason"] for r in rejected)
    assert reasons["program_failed:timeout"] == 2 and reasons["program_failed:syntax_error"] == 2
    assert reasons["answer_mismatch"] >= 4
    extra = result.extra
    assert extra["seed_sources"] == {"gsm8k": 4, "aqua": 1, "strategyqa": 1}
    assert extra["programs"]["timeout"] == 2 and extra["programs"]["syntax_error"] == 2
    assert extra["quarantined_seeds"] == 1
    quarantine = [json.loads(x) for x in (run.quarantine_dir() / "cot_seeds.jsonl").read_text().splitlines()]
    assert [(q["line"], q["reason"][:14]) for q in quarantine] == [(5, "not valid JSON")]


def test_unknown_seed_format_is_a_clear_error(tmp_path):
    p = tmp_path / "questions.json"
    p.write_text("[]")
    cfg = parse_config({"data_root": str(tmp_path / "d"), "textbooks": {"enabled": False},
                        "cot": {"seeds": str(p)}})
    run = runner.open_run(cfg)
    with pytest.raises(ConfigError, match="cannot tell the seed format.*cot.seed_format"):
        runner.run_cot(run, cfg)


def test_editing_a_seed_file_in_place_regenerates(tmp_path):
    """The stage's config hash covers the contents of its seed files, not only their paths."""
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "#### 5"}) + "\n")
    with FakeOpenAI(responder=cot_responder) as srv:
        cfg_path = tmp_path / "p.yaml"
        cfg_path.write_text(yaml.safe_dump({
            "name": "edit", "data_root": str(tmp_path / "data"),
            "teacher": {"provider": "openai", "base_url": srv.base_url, "model": "fake", "max_attempts": 1},
            "textbooks": {"enabled": False}, "cot": {"seeds": "seeds.jsonl", "samples_per_question": 1}}))
        cfg = load_config(cfg_path)
        run = runner.open_run(cfg)
        runner.run_cot(run, cfg)
        assert runner.run_cot(run, cfg).skipped
        seeds.write_text(json.dumps({"question": "What is 4 + 4?", "answer": "#### 8"}) + "\n")
        again = runner.run_cot(run, cfg)
    assert not again.skipped
    assert [r["question"] for r in pq.read_table(run.stage_dir("cot")).to_pylist()] == ["What is 4 + 4?"]


# --- step verification in the stage -------------------------------------------------------------

STEP_QUESTION = ("Sam buys 3 boxes of pencils with 12 pencils in each box. He gives away 6 pencils. "
                 "How many pencils does he have left?")


def step_responder(body: dict) -> str:
    """Every sample reaches the gold answer 30. Even seeds reason correctly; odd seeds write a
    wrong product and a number from nowhere, and still end on 30 (the issue's failure mode).
    Programs: sample 0 computes what its comments say, sample 1's comment claims a wrong value."""
    system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
    seed = body.get("seed") or 0
    if "Python program" in system:
        claim = "36" if seed % 2 == 0 else "38"
        return ("```python\ndef solution():\n    boxes = 3\n    per_box = 12\n"
                f"    total = boxes * per_box  # 3 * 12 = {claim} pencils\n"
                "    given = 6\n    return total - given\n```")
    if seed % 2 == 0:
        return "He has 3 * 12 = 36 pencils.\nHe gives away 6, so 36 - 6 = 30.\nThe answer is 30."
    return "He has 3 * 12 = 32 pencils.\nThere are 7 days in a week, so 32 - 2 = 30.\nThe answer is 30."


def _step_stage(tmp_path: Path, srv: FakeOpenAI, **cot) -> tuple:
    seeds = tmp_path / "s.jsonl"
    seeds.write_text(json.dumps({"question": STEP_QUESTION, "answer": "3 * 12 = 36\n36 - 6 = 30\n#### 30"}) + "\n")
    cfg_path = tmp_path / "p.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "steps", "data_root": str(tmp_path / "data"),
        "teacher": {"provider": "openai", "base_url": srv.base_url, "model": "fake", "max_attempts": 1},
        "textbooks": {"enabled": False},
        "cot": {"seeds": "s.jsonl", "samples_per_question": 2, "method": "both", **cot}}))
    cfg = load_config(cfg_path)
    run = runner.open_run(cfg)
    return run, runner.run_cot(run, cfg)


def test_cot_stage_drops_right_answers_reached_through_wrong_steps(tmp_path):
    with FakeOpenAI(responder=step_responder) as srv:
        run, result = _step_stage(tmp_path, srv)
    kept = pq.read_table(run.stage_dir("cot")).to_pylist()
    rejected = pq.read_table(run.rejected_dir("cot")).to_pylist()
    assert all(r["answer_correct"] for r in kept + rejected)  # every sample has the gold answer
    assert [(r["method"], r["sample_index"]) for r in kept] == [("cot", 0), ("pot", 0)]
    assert all(r["step_errors"] == 0 and r["steps_checked"] >= 1 for r in kept)
    by = {r["method"]: r for r in rejected}
    assert by["cot"]["drop_reason"].startswith("wrong_step:") and "3 * 12 = 32" in by["cot"]["drop_reason"]
    assert by["cot"]["step_errors"] >= 1 and "3 * 12 = 32" in by["cot"]["first_step_error"]
    assert by["pot"]["drop_reason"].startswith("wrong_step:") and "38" in by["pot"]["first_step_error"]
    assert result.extra["verified"] == 4 and result.extra["wrong_step"] == 2


def test_check_steps_off_keeps_answer_verified_samples(tmp_path):
    with FakeOpenAI(responder=step_responder) as srv:
        run, result = _step_stage(tmp_path, srv, check_steps=False)
    kept = pq.read_table(run.stage_dir("cot")).to_pylist()
    assert len(kept) == 4 and all(r["steps_checked"] is None for r in kept)
