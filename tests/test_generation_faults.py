"""Generation against a teacher that fails 30% of requests in mixed ways.

Every planned sample must end either produced (a kept or rejected row with text) or recorded
as a failed request with its reason; no sample is lost and no id appears twice.
"""

from __future__ import annotations

import json
import random

import pytest
import yaml

from dataforge import runner
from dataforge.config import load_config
from fake_openai import FakeOpenAI
from responders import teacher_responder

def distinct_responder(body: dict) -> str:
    """The shared responder, made distinct per sample (identical text would share a content id,
    which is exact duplication, not a lost or doubled sample)."""
    return f"{teacher_responder(body)} (sample seed {body.get('seed')})"


FAULTS = ["429:0", "500", "503", "timeout", "malformed", "empty_choices"]


def test_thirty_percent_mixed_faults(tmp_path):
    rng = random.Random(7)
    # enough scripted actions for every attempt; 30% of them faults of every kind
    script = [rng.choice(FAULTS) if rng.random() < 0.3 else "ok" for _ in range(400)]
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"question": f"What is {i} + 3?", "answer": f"#### {i + 3}"}) + "\n"
                             for i in range(20)))
    with FakeOpenAI(responder=distinct_responder, timeout_sleep=1.0) as srv:
        srv.script(script)
        cfg_path = tmp_path / "c.yaml"
        cfg_path.write_text(yaml.safe_dump({
            "name": "faults", "data_root": str(tmp_path / "data"),
            "teacher": {"provider": "openai", "base_url": srv.base_url, "model": "fake", "max_concurrency": 4,
                        "max_attempts": 3, "timeout_s": 0.5, "backoff_initial_s": 0.01, "backoff_max_s": 0.05},
            "textbooks": {"topics": ["maps", "tides", "levers", "ratios"], "max_samples": 10},
            "cot": {"seeds": str(seeds), "samples_per_question": 3, "keep": "all"}}))
        cfg = load_config(cfg_path)
        run = runner.open_run(cfg)
        tb = runner.run_textbooks(run, cfg)
        cot = runner.run_cot(run, cfg)
        faults_served = sum(1 for a in srv.actions_taken if a != "ok")

    assert faults_served >= 20  # the faults really happened
    assert tb.rows_in == 10 and tb.rows_kept + tb.rows_dropped == 10
    assert cot.rows_in == 60 and cot.rows_kept + cot.rows_dropped == 60
    for stage, planned in (("textbooks", 10), ("cot", 60)):
        kept, rejected = run.read(stage), run.read_rejected(stage)
        assert kept.num_rows + rejected.num_rows == planned
        failed = [r for r in rejected.to_pylist() if r["drop_reason"].startswith("teacher_error:")]
        assert all(r["text"] == "" for r in failed)
        produced_ids = kept.column("id").to_pylist() + [r["id"] for r in rejected.to_pylist()
                                                        if not r["drop_reason"].startswith("teacher_error:")]
        assert len(produced_ids) == len(set(produced_ids)), f"duplicate ids in {stage}"
        # a failed request is identifiable: its cell (or question and sample index) is on the row
        keys = [(r["topic"], r["audience"], r["style"], r["seed_id"], r["sample_index"]) for r in failed]
        assert len(keys) == len(set(keys))


def test_sample_rows_carry_their_cost(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "#### 5"}) + "\n")
    with FakeOpenAI(responder=distinct_responder) as srv:
        cfg_path = tmp_path / "c.yaml"
        cfg_path.write_text(yaml.safe_dump({
            "name": "cost", "data_root": str(tmp_path / "data"),
            "teacher": {"provider": "openai", "base_url": srv.base_url, "model": "priced",
                        "prices": {"priced": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}}},
            "textbooks": {"topics": ["maps"], "max_samples": 1},
            "cot": {"seeds": str(seeds), "samples_per_question": 2, "keep": "all"}}))
        cfg = load_config(cfg_path)
        run = runner.open_run(cfg)
        results = [runner.run_textbooks(run, cfg), runner.run_cot(run, cfg)]
    for stage, result in zip(("textbooks", "cot"), results):
        rows = run.read(stage).to_pylist()
        assert rows
        for r in rows:
            expected = (r["prompt_tokens"] * 1000.0 + r["completion_tokens"] * 2000.0) / 1e6
            assert r["cost_usd"] == pytest.approx(expected) and expected > 0
        assert result.teacher["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))
