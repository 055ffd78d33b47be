"""Question synthesis: new problems from seed problems, answered by k samples, kept only when
the vote agrees strongly. Against the fake teacher and through the CoT stage runner."""

from __future__ import annotations

import json
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest
import yaml

from dataforge import runner
from dataforge.config import ConfigError, SynthesisConfig, load_config, parse_config
from dataforge.generate.cot import verdict
from dataforge.generate.seeds import Seed, seed_id
from dataforge.generate.synthesis import (check_question, clean_question, plan_parents, similarity,
                                          synthesis_messages)
from fake_openai import FakeOpenAI


def _seed(q: str, atype: str = "numeric", source: str = "gsm8k") -> Seed:
    return Seed(seed_id=seed_id(q), question=q, gold_answer="1", source=source, line=1, answer_type=atype)


# --- cleaning and checks -----------------------------------------------------------------------

@pytest.mark.parametrize("reply, expected", [
    ("New problem: Tom has 3 red apples and buys 4 more at the market. How many apples does he have now?",
     "Tom has 3 red apples and buys 4 more at the market. How many apples does he have now?"),
    ("**Problem 2:** Ann reads 5 pages a day for 6 days. How many pages does she read?\n\nSolution: 5 x 6 = 30",
     "Ann reads 5 pages a day for 6 days. How many pages does she read?"),
    ('"A farm has 12 cows and sells 5 of them. How many cows are left?" The answer is 7.',
     "A farm has 12 cows and sells 5 of them. How many cows are left?"),
    ("Sam saves $4 each week.\nHow much money\n does he save in 9 weeks? #### 36",
     "Sam saves $4 each week. How much money does he save in 9 weeks?"),
    ("Example 3: Five cats eat 2 cans of food each day. How many cans do they eat in 4 days?",
     "Five cats eat 2 cans of food each day. How many cans do they eat in 4 days?"),
    ("   ", ""),
])
def test_clean_question(reply, expected):
    assert clean_question(reply) == expected


def test_check_question_reasons():
    cfg = SynthesisConfig()
    parent = _seed("Mia has 5 pencils and gives 2 to her friend Leo at school. How many pencils does Mia have left?")
    ok = "A baker makes 24 rolls in the morning and sells 17 of them by noon. How many rolls are left?"
    assert check_question(ok, parent, None, cfg) is None
    assert check_question("", parent, None, cfg) == "synth_empty"
    assert check_question("How many apples?", parent, None, cfg).startswith("synth_too_short(3<8")
    assert check_question("word " * 200 + "?", parent, None, cfg).startswith("synth_too_long(201>150")
    assert check_question("The baker makes rolls in the morning and sells them by noon today.", parent, None,
                          cfg) == "synth_not_a_question"
    near_copy = parent.question.replace("Leo", "Max")
    assert similarity(near_copy, parent.question) > 0.6
    assert check_question(near_copy, parent, None, cfg).startswith("synth_copy_of_seed(")
    example = _seed(ok)
    assert check_question(ok, parent, example, cfg).startswith("synth_copy_of_seed(1.00")


def test_plan_uses_numeric_parents_with_a_second_example_and_caps():
    seeds = [_seed(f"Question number {i} about apples?") for i in range(5)] + [_seed("Which one? (A) x (B) y", "option")]
    plan = plan_parents(seeds, SynthesisConfig(questions_per_seed=2), run_seed=7)
    assert len(plan) == 10 and all(p.answer_type == "numeric" for p, _, _ in plan)
    assert all(e is not None and e.seed_id != p.seed_id for p, e, _ in plan)
    assert Counter(v for _, _, v in plan) == {0: 5, 1: 5}
    assert plan == plan_parents(seeds, SynthesisConfig(questions_per_seed=2), run_seed=7)  # deterministic
    assert len(plan_parents(seeds, SynthesisConfig(questions_per_seed=2, max_questions=3), run_seed=7)) == 3
    single = plan_parents(seeds[:1], SynthesisConfig(), run_seed=7)
    assert single == [(seeds[0], None, 0)]
    msgs = synthesis_messages(seeds[0], seeds[1])
    assert "Example 1: Question number 0" in msgs[1]["content"] and "Example 2: Question number 1" in msgs[1]["content"]


def test_consensus_verdict_only_for_synthesized_questions():
    synth = {"parent_seed_id": "p", "gold_answer": None, "answer": "7", "agreement": 0.75, "method": "cot"}
    assert verdict(synth, "verified", 0.75) is None
    assert verdict({**synth, "agreement": 0.5}, "verified", 0.75) == "weak_agreement(0.50<0.75)"
    assert verdict({**synth, "agreement": 0.5}, "all", 0.75) == "weak_agreement(0.50<0.75)"  # keep: all does not apply
    assert verdict({**synth, "answer": None, "agreement": 0.0}, "verified", 0.75) == "no_final_answer"
    seed_row = {"parent_seed_id": None, "gold_answer": None, "answer": "7", "agreement": 0.25}
    assert verdict(seed_row, "verified", 0.75) is None  # an ordinary gold-less seed: unchanged


@pytest.mark.parametrize("synthesis, error", [
    ({"min_agreement": 0.5}, "cot.synthesis.min_agreement"),
    ({"min_words": 20, "max_words": 10}, "cot.synthesis"),
    ({"questions_per_seed": 0}, "cot.synthesis.questions_per_seed"),
    ({"bogus": 1}, "cot.synthesis.bogus"),
])
def test_config_errors_name_the_field(synthesis, error):
    with pytest.raises(ConfigError, match=re.escape(error)):
        parse_config({"cot": {"synthesis": synthesis}})


# --- end to end against the fake teacher -------------------------------------------------------

SEEDS = [
    "Ben has 3 marbles and finds 4 more in the garden. How many marbles does Ben have?",
    "Lucy bakes 6 cakes on Monday and 5 cakes on Tuesday for the fair. How many cakes does she bake?",
    "A shop sells 7 hats in the morning and 9 hats in the evening. How many hats does it sell in all?",
    "Omar walks 2 miles to school and 8 miles on the weekend hike. How many miles does he walk?",
]


def synth_responder(body: dict) -> str:
    """The first seed yields a clean new problem whose samples all agree; the second a new
    problem whose samples split 2-2; the third a restatement of its seed; the fourth a reply
    with no question; second variants repeat the first seed's new problem (a duplicate)."""
    last = body["messages"][-1]["content"]
    if "New problem:" in last:
        first = re.search(r"Example 1: (.+?)\n", last + "\n").group(1)
        variant = body.get("seed", 0) != 1234 + 7919
        if variant:
            return "New problem: A kite club flies 11 kites on Saturday and 12 on Sunday. How many kites fly?"
        if first.startswith("Ben"):
            return "New problem: A kite club flies 11 kites on Saturday and 12 on Sunday. How many kites fly?"
        if first.startswith("Lucy"):
            return "New problem: Nora picks 13 plums and then 14 pears in the orchard. How many fruits are there?"
        if first.startswith("A shop"):
            return first  # a copy of the seed
        return "Sure! Here is something fun to think about today."
    q = last
    seed = body.get("seed", 0) or 0
    nums = [int(n) for n in re.findall(r"\d+", q)]
    right = sum(nums[:2])
    if q.startswith("Nora"):
        result = right if seed % 2 == 0 else right + 1
    else:
        result = right
    return f"We add {nums[0]} and {nums[1]}.\n{nums[0]} + {nums[1]} = {result}\nThe answer is {result}."


def test_cot_stage_with_question_synthesis(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    golds = [7, 11, 16, 10]
    seeds.write_text("".join(json.dumps({"question": q, "answer": f"#### {g}"}) + "\n" for q, g in zip(SEEDS, golds)))
    with FakeOpenAI(responder=synth_responder) as srv:
        cfg_path = tmp_path / "p.yaml"
        cfg_path.write_text(yaml.safe_dump({
            "name": "synth", "data_root": str(tmp_path / "data"),
            "teacher": {"provider": "openai", "base_url": srv.base_url, "model": "fake", "max_attempts": 1},
            "textbooks": {"enabled": False},
            "cot": {"seeds": "seeds.jsonl", "samples_per_question": 4,
                    "synthesis": {"enabled": True, "questions_per_seed": 2}}}))
        cfg = load_config(cfg_path)
        run = runner.open_run(cfg)
        result = runner.run_cot(run, cfg)
        sent = srv.chat_count
        # 8 synthesis requests; 4 seeds + 2 new questions, 4 samples each
        assert sent == 8 + (4 + 2) * 4
        runner.run_cot(runner.open_run(cfg, run.run_id), cfg)
        assert srv.chat_count == sent
    kept = pq.read_table(run.stage_dir("cot")).to_pylist()
    rejected = pq.read_table(run.rejected_dir("cot")).to_pylist()
    # (4 seeds + 2 new questions) x 4 samples + 6 unusable synthesis replies
    assert result.rows_in == len(kept) + len(rejected) == 6 * 4 + 6
    assert len(kept) == 4 * 4 + 4
    synth_kept = [r for r in kept if r["parent_seed_id"]]
    # the kite problem (agreement 4/4) is kept with all four samples; Nora's (2/4) is not
    assert {r["question"][:6] for r in synth_kept} == {"A kite"}
    assert len(synth_kept) == 4 and all(r["agreement"] == 1.0 and r["votes"] == 4 for r in synth_kept)
    assert all(r["seed_source"] == "synthetic:gsm8k" and r["gold_answer"] is None for r in synth_kept)
    ben = next(r for r in kept if r["question"].startswith("Ben"))
    assert synth_kept[0]["parent_seed_id"] == ben["seed_id"]
    reasons = Counter(r["drop_reason"].split("(")[0] for r in rejected)
    assert reasons["weak_agreement"] == 4
    assert reasons["synth_copy_of_seed"] == 1
    assert reasons["synth_not_a_question"] == 1
    assert reasons["synth_duplicate"] == 4  # every second variant repeats the kite problem
    synth_rows = [r for r in rejected if r["template"] == "synth_question_v1"]
    assert len(synth_rows) == 6 and all(r["request_hash"] for r in synth_rows)
    assert result.extra["synthesis"] == {"requests": 8, "questions": 2,
                                         "rejected": {"synth_copy_of_seed": 1, "synth_not_a_question": 1,
                                                      "synth_duplicate": 4},
                                         "kept_samples": 4, "questions_with_kept_samples": 1}
    # each synthesized question is its own seed: its id is the hash of its text
    # (kite, Nora, the copy, the non-question; the duplicates share the kite's)
    assert len({r["seed_id"] for r in kept + rejected if r["parent_seed_id"]}) == 4
