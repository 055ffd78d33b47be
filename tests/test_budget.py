"""Cost before spend: ``dataforge run --estimate`` and ``teacher.budget_usd``.

Against the fake teacher: the estimate sends nothing and matches a hand count of what the run
then sends; ``--estimate-sample`` extrapolates from real replies the run reuses; a budgeted run
stops cleanly (committed stages stay, ``run.json`` says ``stopped: budget``), and resumed under a
raised budget ends with the rows of an unbudgeted run, sending no request twice; the spend count
is thread-safe; bad config fields are named. Against the embedded teacher: the estimate's tokens
are within 20% of what a run sends.
"""

from __future__ import annotations

import json
import math
import random
import threading
from pathlib import Path

import pytest
import yaml
from fake_openai import FakeOpenAI
from responders import instruction_responder, judging_responder, teacher_responder
from run_helpers import run_pipeline, write_add_seeds
from typer.testing import CliRunner

from dataforge.cli.main import app
from dataforge.config import ConfigError, TeacherConfig, load_config
from dataforge.estimate import estimate_run, plan_requests
from dataforge.store import Run
from dataforge.teacher import RequestCache, TeacherClient
from dataforge.teacher.budget import (
    BudgetExceeded,
    SpendLedger,
    worst_case_prompt_tokens,
)
from teacher_fixtures import require_embedded_teacher

KEY_ENV = "DATAFORGE_TEST_KEY"
# $0.001 a prompt token, $0.002 a reply token: a small config costs a few dollars
PRICES = {"fake-model": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}}
cli = CliRunner()


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-budget")


def write_cfg(tmp_path: Path, base_url: str, root: str = "data", teacher: dict | None = None, **sections) -> Path:
    """4 textbook sections and 6 questions x 2 samples against the fake teacher, priced."""
    write_add_seeds(tmp_path / "seeds.jsonl", 6)
    cfg = {
        "name": "budget",
        "data_root": str(tmp_path / root),
        "teacher": {"provider": "openai", "base_url": base_url, "model": "fake-model", "api_key_env": KEY_ENV,
                    "backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_attempts": 3, "timeout_s": 10,
                    "prices": PRICES, **(teacher or {})},
        "textbooks": {"topics": ["fractions", "magnets", "rivers"], "audiences": ["children"],
                      "styles": ["textbook", "story"], "max_samples": 4, "max_tokens": 60},
        "cot": {"seeds": "seeds.jsonl", "samples_per_question": 2, "max_tokens": 40},
        "estimate": {"chars_per_token": 4},
        "shard_rows": 5,
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    p = tmp_path / f"{root}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def chat_bodies(srv: FakeOpenAI) -> list[dict]:
    return [r["json"] for r in srv.requests if r["path"].endswith("/chat/completions")]


def hand_prompt_tokens(messages: list[dict], chars_per_token: float = 4) -> int:
    """The documented characters rule: ceil(chars / 4) + 3 a message + 3 for the reply."""
    return math.ceil(sum(len(m["content"]) for m in messages) / chars_per_token) + 3 * len(messages) + 3


# --------------------------------------------------------------------------- the estimate


def test_estimate_sends_nothing_and_matches_a_hand_count_of_what_the_run_sends(tmp_path):
    with FakeOpenAI(responder=teacher_responder) as srv:
        config = write_cfg(tmp_path, srv.base_url)
        cfg = load_config(config)
        r = cli.invoke(app, ["run", str(config), "--estimate", "--json"])
        assert r.exit_code == 0, r.output
        est = json.loads(r.output)
        assert srv.chat_count == 0  # nothing sent
        assert not (tmp_path / "data").exists()  # no run, no cache, no teacher state

        run_pipeline(config, "ref")  # the stages' own runners: what a run really sends
        sent = chat_bodies(srv)
        assert len(sent) == 4 + 6 * 2

    by = {s["stage"]: s for s in est["stages"]}
    assert by["textbooks"]["requests"] == 4 and by["cot"]["requests"] == 12
    assert est["total"]["requests"] == len(sent) and est["total"]["cached"] == 0
    # prompts: the rule applied to the messages the run sent, so the estimate rebuilt them exactly
    assert est["total"]["prompt_tokens"] == sum(hand_prompt_tokens(b["messages"]) for b in sent)
    # replies: max_tokens each (stated, an upper bound): 4 x 60 + 12 x 40
    assert by["textbooks"]["completion_tokens"] == 4 * 60 and by["cot"]["completion_tokens"] == 12 * 40
    prompt = est["total"]["prompt_tokens"]
    assert est["total"]["cost_usd"] == pytest.approx((prompt * 1000 + 720 * 2000) / 1e6)
    assert "characters a token" in est["prompt_counter"] and "max_tokens" in by["cot"]["replies"]

    # run again: every request is in the cache and costs nothing
    again = estimate_run(cfg)
    assert again.cached == again.requests == 16 and again.tokens == 0 and again.cost_usd == 0
    r = cli.invoke(app, ["run", str(config), "--estimate"])
    assert r.exit_code == 0 and "no request sent" in r.output
    total = next(ln for ln in r.output.splitlines() if ln.startswith("total"))
    assert total.split()[1:4] == ["16", "16", "0"]


def test_estimate_with_stated_reply_lengths_and_judge_rows(tmp_path):
    with FakeOpenAI(responder=teacher_responder) as srv:
        config = write_cfg(tmp_path, srv.base_url, judge={"enabled": True, "max_tokens": 50},
                           estimate={"completion_tokens": {"textbooks": 30, "cot": 10, "judge": 5}, "judge_rows": 0.5})
        est = estimate_run(load_config(config))
        assert srv.chat_count == 0
    by = {s.stage: s for s in est.stages}
    assert by["textbooks"].completion_tokens == 4 * 30 and by["cot"].completion_tokens == 12 * 10
    assert "estimate.completion_tokens.cot" in by["cot"].replies
    assert by["judge"].requests == 8  # half of the 16 generated rows
    assert by["judge"].completion_tokens == 8 * 5
    assert any("judge rows estimated" in n for n in by["judge"].notes)


def test_estimate_sample_sends_a_few_requests_that_the_run_reuses(tmp_path):
    with FakeOpenAI(responder=teacher_responder) as srv:
        # max_tokens above the fake's reply lengths (a reply never outgrows max_tokens on a real server)
        config = write_cfg(tmp_path, srv.base_url, textbooks={"max_tokens": 200}, cot={"max_tokens": 100})
        est = estimate_run(load_config(config), sample=2)
        sampled = chat_bodies(srv)
        assert len(sampled) == 4  # two per generation stage
        assert est.sampled["sent"] == 4 and est.cached == 4
        by = {s.stage: s for s in est.stages}
        for stage, mark in (("textbooks", "Write a section"), ("cot", "What is")):
            lengths = [len(teacher_responder(b).split()) for b in sampled
                       if b["messages"][-1]["content"].startswith(mark)]
            assert len(lengths) == 2
            assert by[stage].replies.startswith("sampled: mean")
            assert by[stage].completion_tokens == round(sum(lengths) / 2) * (by[stage].requests - 2)
        run_pipeline(config, "after-sample")
        bodies = [json.dumps(b, sort_keys=True) for b in chat_bodies(srv)]
        assert len(bodies) == 16 and len(set(bodies)) == 16  # the run sent only the 12 not sampled


def test_estimate_flags_are_checked(tmp_path):
    with FakeOpenAI() as srv:
        config = write_cfg(tmp_path, srv.base_url)
        r = cli.invoke(app, ["run", str(config), "--estimate-sample", "2"])
        assert r.exit_code == 2 and "--estimate-sample needs --estimate" in r.output
        assert srv.chat_count == 0


# --------------------------------------------------------------------------- the instructions stage's estimate


def write_instructions_cfg(tmp_path: Path, base_url: str, **sections) -> Path:
    """Only the instructions stage: 3 Self-Instruct tasks, 3 evolution chains, 5 Magpie queries."""
    inst = {"enabled": True, "self_instruct": {"count": 3}, "evol_instruct": {"count": 3}, "magpie": {"count": 5},
            **sections.pop("instructions", {})}
    return write_cfg(tmp_path, base_url, textbooks={"enabled": False}, cot={"enabled": False}, instructions=inst,
                     **sections)


def _purpose(body: dict) -> str:
    """What an instructions-stage request the fake teacher received was for."""
    if "prompt" in body:
        return "magpie"
    last = body["messages"][-1]["content"]
    if last.startswith("Come up with"):
        return "self_instruct"
    if "#Given Prompt#" in last:
        return "evol_instruct"
    return "equality" if last.startswith("Here are two Instructions") else "answer"


def _stage_bodies(srv: FakeOpenAI) -> list[dict]:
    return [r["json"] for r in srv.requests if r["path"].rstrip("/").endswith(("/chat/completions", "/v1/completions"))]


def test_estimate_of_instructions_bounds_what_the_run_sends_and_sends_nothing(tmp_path):
    from dataforge.generate.instructions import magpie_prefix, request_plan

    with FakeOpenAI(responder=instruction_responder) as srv:
        config = write_instructions_cfg(tmp_path, srv.base_url)
        cfg = load_config(config)
        r = cli.invoke(app, ["run", str(config), "--estimate", "--json"])
        assert r.exit_code == 0, r.output
        est = json.loads(r.output)
        assert srv.count == 0  # nothing sent, on either endpoint
        assert not (tmp_path / "data").exists()

        run_pipeline(config, "ref")
        sent = _stage_bodies(srv)

    plan = request_plan(cfg.instructions)
    by = {s["stage"]: s for s in est["stages"]}
    assert by["instructions"]["requests"] == sum(v["requests"] for v in plan.values()) == 29
    # upper bounds, purpose by purpose: the run sends at most what the estimate counts
    got = {p: sum(1 for b in sent if _purpose(b) == p) for p in ("self_instruct", "evol_instruct", "magpie", "answer")}
    assert got["magpie"] == plan["magpie"]["requests"] == 5
    assert 0 < got["self_instruct"] <= plan["self_instruct"]["requests"]
    assert got["evol_instruct"] == plan["evol_instruct"]["requests"]  # every chain evolves every round
    assert 0 < got["answer"] <= sum(v["requests"] for k, v in plan.items() if k.endswith("_answers"))
    assert len(sent) <= by["instructions"]["requests"]
    # the Magpie prefix is counted as it is sent: no chat template (the characters rule, no messages)
    prefix = magpie_prefix(cfg.instructions.magpie)
    assert {b["prompt"] for b in sent if "prompt" in b} == {prefix}
    notes = " ".join(est["notes"])
    assert "upper bounds" in notes and "approximated" in notes and "seed tasks' mean" in notes
    assert "magpie: stated: max_tokens 128" in by["instructions"]["replies"]
    # replies: max_tokens by purpose (no statement): the plan's counts times its max_tokens
    assert by["instructions"]["completion_tokens"] == sum(v["requests"] * v["max_tokens"] for v in plan.values())

    # the requests known before any reply were rebuilt exactly: the run's cache now holds every
    # one of them (the first Self-Instruct round of 4, the first evolution of 3 chains, 5 queries)
    again = estimate_run(cfg)
    (inst,) = again.stages
    assert inst.cached == 4 + 3 + 5 and inst.requests == 29
    exact = [b for b in sent if _purpose(b) == "magpie" or (_purpose(b) == "self_instruct" and b["seed"] - cfg.seed < 4)]
    assert len(exact) == 9
    plans, _notes = plan_requests(cfg)
    known = [r for r in plans["instructions"] if r.known and r.purpose == "self_instruct"]
    assert [r.messages for r in known] == [b["messages"] for b in sorted(
        (b for b in sent if _purpose(b) == "self_instruct" and b["seed"] - cfg.seed < 4), key=lambda b: b["seed"])]


def test_estimate_of_instructions_takes_stated_lengths_by_purpose_and_sizes_the_judge(tmp_path):
    from dataforge.generate.instructions import request_plan

    with FakeOpenAI(responder=instruction_responder) as srv:
        config = write_instructions_cfg(
            tmp_path, srv.base_url, judge={"enabled": True, "apply_to": ["instruction"], "max_tokens": 50},
            estimate={"completion_tokens": {"instructions": 100, "instructions.magpie": 10, "judge": 5}})
        cfg = load_config(config)
        est = estimate_run(cfg)
        assert srv.count == 0
    plan = request_plan(cfg.instructions)
    by = {s.stage: s for s in est.stages}
    # magpie its own 10; every other purpose the stage's 100, capped at its max_tokens
    want = sum(v["requests"] * (10 if k == "magpie" else min(100, v["max_tokens"])) for k, v in plan.items())
    assert by["instructions"].completion_tokens == want
    assert "estimate.completion_tokens.instructions.magpie" in by["instructions"].replies
    assert "estimate.completion_tokens.instructions)" in by["instructions"].replies
    # the judge rates instruction rows: one per answer request (an upper bound)
    answers = sum(v["requests"] for k, v in plan.items() if k.endswith("_answers"))
    assert by["judge"].requests == answers == 14 and by["judge"].completion_tokens == 14 * 5


def test_estimate_sample_of_instructions_is_reused_by_the_run(tmp_path):
    with FakeOpenAI(responder=instruction_responder) as srv:
        config = write_instructions_cfg(tmp_path, srv.base_url)
        est = estimate_run(load_config(config), sample=1)
        sampled = _stage_bodies(srv)
        # one known request per method, then one answer to an instruction each returned
        assert sorted(_purpose(b) for b in sampled) == ["answer"] * 3 + ["evol_instruct", "magpie", "self_instruct"]
        assert est.sampled["sent"] == 6
        (inst,) = est.stages
        assert inst.cached == 3  # the three known ones; answers are never looked up
        for purpose in ("self_instruct", "self_instruct_answers", "evol_instruct", "evol_instruct_answers", "magpie",
                        "magpie_answers"):
            assert f"{purpose}: sampled: mean" in inst.replies
        run_pipeline(config, "after-sample")
        bodies = [json.dumps(b, sort_keys=True) for b in _stage_bodies(srv)]
        assert len(bodies) == len(set(bodies))  # nothing sampled was sent again by the run
        assert len(bodies) <= inst.requests + 3  # the run sent at most the estimate's (sampled answers extra)


def test_estimate_refuses_magpie_without_a_completions_endpoint(tmp_path):
    with FakeOpenAI(responder=instruction_responder) as srv:
        config = write_instructions_cfg(tmp_path, srv.base_url, instructions={"magpie": {"count": 5, "completions_endpoint": False}})
        r = cli.invoke(app, ["run", str(config), "--estimate"])
        assert r.exit_code != 0 and "instructions.magpie" in r.output and "completions endpoint" in r.output
        assert srv.count == 0


# --------------------------------------------------------------------------- the budget


def _stage_cost(run: Run, stage: str) -> float:
    return run.load_record().stages[stage].teacher["cost_usd"]


def _final_rows(run: Run) -> list[dict]:
    rows = [json.loads(ln) for ln in (run.export_dir("default") / "train.jsonl").read_text().splitlines()]
    return sorted(rows, key=json.dumps)


def _worst_usd(cfg) -> float:
    """The largest worst-case hold of a generation request (what one request in flight may hold)."""
    plans, _ = plan_requests(cfg)
    return max(cfg.teacher.cost_usd(worst_case_prompt_tokens(r.messages) + 8, r.max_tokens)
               for reqs in plans.values() for r in reqs)


@pytest.mark.prefect
def test_budget_stops_in_the_judge_keeps_what_is_committed_and_resumes_to_the_same_rows(tmp_path):
    from flows.pipeline import pipeline

    judge = {"enabled": True, "max_tokens": 16, "output": "text", "threshold": 4.0}
    with FakeOpenAI(responder=judging_responder) as ref_srv:
        ref_cfg = write_cfg(tmp_path, ref_srv.base_url, root="ref", judge=judge)
        ref = Run(load_config(ref_cfg).data_root, pipeline(str(ref_cfg)))
        ref_bodies = sorted(json.dumps(b, sort_keys=True) for b in chat_bodies(ref_srv))
    generation = _stage_cost(ref, "textbooks") + _stage_cost(ref, "cot")
    judge_cost = _stage_cost(ref, "judge")

    with FakeOpenAI(responder=judging_responder) as srv:
        cfg_path = write_cfg(tmp_path, srv.base_url, root="b", judge=judge)
        cfg = load_config(cfg_path)
        # generation always fits (two requests in flight hold at most 2 worst cases), the judge cannot
        budget = generation + 2 * _worst_usd(cfg) + 0.01
        assert judge_cost > budget - generation
        cfg_path = write_cfg(tmp_path, srv.base_url, root="b", judge=judge, teacher={"budget_usd": budget})
        run = Run(cfg.data_root, pipeline(str(cfg_path)))
        rec = run.load_record()
        assert rec.status == "stopped" and rec.error.startswith("stopped: budget")
        assert rec.teacher["stopped"] == "budget" and rec.teacher["budget_usd"] == budget
        assert 0 < rec.teacher["spent_usd"] <= budget
        assert rec.stages["judge"].status == "stopped" and rec.stages["export"].status == "pending"
        for stage in ("textbooks", "cot", "heuristics", "dedup"):
            assert rec.stages[stage].status == "completed" and run.committed(stage)
        assert not run.committed("judge") and not run.export_dir("default").exists()
        first = len(chat_bodies(srv))
        assert first < len(ref_bodies)

        # resume under a raised budget: the judge continues from the cache, the rest is skipped
        write_cfg(tmp_path, srv.base_url, root="b", judge=judge, teacher={"budget_usd": 1000.0})
        assert pipeline(str(cfg_path), run_id=run.run_id) == run.run_id
        rec = run.load_record()
        assert rec.status == "completed" and "stopped" not in rec.teacher
        bodies = sorted(json.dumps(b, sort_keys=True) for b in chat_bodies(srv))
    assert bodies == ref_bodies  # every request once, none twice
    assert _final_rows(run) == _final_rows(ref)
    # the spend counts both attempts: what the unbudgeted run cost
    assert rec.teacher["spent_usd"] == pytest.approx(generation + judge_cost)


@pytest.mark.prefect
def test_budget_stop_in_generation_ends_the_cli_in_one_line_and_resume_completes(tmp_path):
    with FakeOpenAI(responder=teacher_responder) as ref_srv:
        ref_cfg = write_cfg(tmp_path, ref_srv.base_url, root="ref")
        r = cli.invoke(app, ["run", str(ref_cfg)])
        assert r.exit_code == 0, r.output
        ref_bodies = sorted(json.dumps(b, sort_keys=True) for b in chat_bodies(ref_srv))
    with FakeOpenAI(responder=teacher_responder, delay_s=0.02) as srv:
        config = write_cfg(tmp_path, srv.base_url, teacher={"budget_usd": 1.5})
        r = cli.invoke(app, ["run", str(config)])
        assert r.exit_code == 3, r.output
        line = r.output.strip().splitlines()[-1]
        assert "stopped: budget (spent $" in line and "of $1.500000" in line and "--resume" in line
        assert "Traceback" not in r.output
        run = Run(load_config(config).data_root, line.split()[1])
        rec = run.load_record()
        assert rec.status == "stopped" and rec.teacher["spent_usd"] <= 1.5
        stopped = [s for s, st in rec.stages.items() if st.status == "stopped"]
        assert stopped and all(not run.committed(s) for s in stopped)
        sent_before = len(chat_bodies(srv))
        assert 0 < sent_before < len(ref_bodies)

        write_cfg(tmp_path, srv.base_url, teacher={"budget_usd": 1000})
        r = cli.invoke(app, ["run", str(config), "--resume", run.run_id])
        assert r.exit_code == 0, r.output
        assert run.load_record().status == "completed"
        bodies = sorted(json.dumps(b, sort_keys=True) for b in chat_bodies(srv))
    assert bodies == ref_bodies
    ref_run = Run(load_config(ref_cfg).data_root, Path(next(Path(tmp_path / "ref" / "runs").iterdir())).name)
    assert _final_rows(run) == _final_rows(ref_run)


def test_budget_refuses_before_sending_and_counts_cache_hits_as_free(tmp_path):
    with FakeOpenAI(responder=teacher_responder) as srv:
        ledger = SpendLedger(budget_usd=0.5)
        cfg = TeacherConfig(provider="openai", base_url=srv.base_url, model="fake-model", api_key_env=KEY_ENV,
                            prices=PRICES, max_concurrency=1, max_attempts=2, backoff_initial_s=0.01)
        cache = RequestCache(tmp_path / "c.sqlite")
        msgs = [{"role": "user", "content": "What is 2 + 2?"}]

        async def ask(seed: int):
            client = TeacherClient(cfg, cache, budget=ledger)
            try:
                return await client.complete(msgs, temperature=0, max_tokens=20, seed=seed)
            finally:
                await client.aclose()

        import asyncio

        worst = cfg.cost_usd(worst_case_prompt_tokens(msgs), 20)
        asyncio.run(ask(0))
        assert srv.chat_count == 1 and 0 < ledger.spent_usd < worst
        n = 1
        with pytest.raises(BudgetExceeded) as info:
            for seed in range(1, 100):
                asyncio.run(ask(seed))
                n += 1
        assert srv.chat_count == n  # the refused request was never sent
        assert ledger.spent_usd + worst > 0.5 >= ledger.spent_usd
        assert "budget" in str(info.value) and ledger.record()["stopped"] == "budget"
        asyncio.run(ask(0))  # a cache hit still answers after the stop, and costs nothing
        assert srv.chat_count == n
        cache.close()


def test_an_unpriced_teacher_is_never_stopped(tmp_path):
    import asyncio

    with FakeOpenAI() as srv:
        cfg = TeacherConfig(provider="openai", base_url=srv.base_url, model="local-model", prices={},
                            budget_usd=0.0)
        ledger = SpendLedger(cfg.budget_usd)

        async def go():
            client = TeacherClient(cfg, None, budget=ledger)
            try:
                return await asyncio.gather(*(client.complete([{"role": "user", "content": f"q{i}"}],
                                                              temperature=0, max_tokens=8) for i in range(5)))
            finally:
                await client.aclose()

        assert len(asyncio.run(go())) == 5 and srv.chat_count == 5
        assert ledger.spent_usd == 0 and ledger.stopped is None


def test_the_spend_count_is_thread_safe():
    ledger = SpendLedger(budget_usd=50.0)
    held_max = []
    lock = threading.Lock()
    granted: list[float] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(2000):
            worst = rng.uniform(0.001, 0.05)
            try:
                h = ledger.hold(worst)
            except BudgetExceeded:
                return
            with lock:
                held_max.append(ledger.prior_usd + ledger.spent_usd + ledger.held_usd)
            billed = worst * rng.uniform(0.2, 1.0)
            ledger.settle(h, billed)
            with lock:
                granted.append(billed)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.spent_usd == pytest.approx(sum(granted))  # no lost update
    assert ledger.held_usd == pytest.approx(0.0, abs=1e-9)
    assert max(held_max) <= 50.0 + 1e-9 and ledger.spent_usd <= 50.0
    assert ledger.stopped is not None and ledger.spent_usd > 45.0


def test_clients_in_several_threads_share_one_budget(tmp_path):
    """Two clients on two threads (as textbooks and cot run side by side) never pass the budget
    together, and the ledger's spend is what their answers were billed."""
    import asyncio

    with FakeOpenAI(responder=teacher_responder, delay_s=0.01) as srv:
        cfg = TeacherConfig(provider="openai", base_url=srv.base_url, model="fake-model", api_key_env=KEY_ENV,
                            prices=PRICES, max_concurrency=4)
        ledger = SpendLedger(budget_usd=2.0)
        stats = []

        def worker(t: int) -> None:
            async def go():
                client = TeacherClient(cfg, None, budget=ledger)
                try:
                    await asyncio.gather(*(client.complete([{"role": "user", "content": f"What is {t} + {i}?"}],
                                                           temperature=0, max_tokens=30, seed=i)
                                           for i in range(40)))
                except BudgetExceeded:
                    pass
                finally:
                    stats.append(client.stats)
                    await client.aclose()
            asyncio.run(go())

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    billed = sum(s.cost_usd for s in stats)
    assert ledger.stopped is not None and 0 < billed <= 2.0
    assert ledger.spent_usd == pytest.approx(billed)
    assert sum(s.requests_sent for s in stats) == srv.chat_count


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("text, field, says", [
    ("teacher:\n  provider: openai\n  budget_usd: -1\n", "teacher.budget_usd", "greater than or equal to 0"),
    ("teacher:\n  provider: openai\n  budget_usd: lots\n", "teacher.budget_usd", "valid number"),
    ("teacher:\n  provider: openai\n  mode: batch\n  budget_usd: 5\n", "teacher", "teacher.budget_usd: not supported"),
    ("estimate:\n  chars_per_token: 0\n", "estimate.chars_per_token", "greater than 0"),
    ("estimate:\n  completion_tokens: {cot: -5}\n", "estimate.completion_tokens", "must be >= 0"),
    ("estimate:\n  judge_rows: 2\n", "estimate.judge_rows", "less than or equal to 1"),
    ("estimate:\n  guess: 3\n", "estimate.guess", "unknown field"),
])
def test_config_errors_name_the_field(tmp_path, text, field, says):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    line = next((ln for ln in str(info.value).splitlines() if f"{p}: {field}: " in ln), None)
    assert line is not None, str(info.value)
    assert says in line


def test_raising_the_budget_keeps_committed_stages():
    """The budget decides when a run stops, not what it makes: it is not in any stage's hash."""
    from dataforge.config import parse_config

    a = parse_config({"teacher": {"provider": "openai", "budget_usd": 1}})
    b = parse_config({"teacher": {"provider": "openai", "budget_usd": 9}})
    assert a.stage_hash("judge", "teacher") == b.stage_hash("judge", "teacher")


# --------------------------------------------------------------------------- the embedded teacher


@pytest.mark.local_model
def test_estimate_tokens_within_20_percent_of_what_the_embedded_teacher_is_sent(tmp_path):
    require_embedded_teacher()
    repo = Path(__file__).resolve().parents[1]
    cfg = {"name": "est", "data_root": str(tmp_path / "data"), "seed": 1234,
           "teacher": {"provider": "local", "local": {"port": 8793}},
           "textbooks": {"topics": ["fractions and decimals", "the water cycle"], "audiences": ["young children"],
                         "styles": ["narrative", "blog post"], "formats": ["worked example"], "max_samples": 4,
                         "max_tokens": 96},
           "cot": {"seeds": str(repo / "seeds" / "arithmetic_sample.jsonl"), "max_questions": 6,
                   "samples_per_question": 2, "max_tokens": 96}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = cli.invoke(app, ["run", str(path), "--estimate", "--estimate-sample", "2", "--json"])
    assert r.exit_code == 0, r.output
    est = json.loads(r.output.strip().splitlines()[-1])
    assert "teacher's tokenizer" in est["prompt_counter"]
    assert est["sampled"]["sent"] == 4
    r = cli.invoke(app, ["run", str(path)])
    assert r.exit_code == 0, r.output
    run = max((tmp_path / "data" / "runs").iterdir())
    rec = json.loads((run / "run.json").read_text())
    sent_prompt = sum(st["teacher"]["prompt_tokens"] for st in rec["stages"].values() if st.get("teacher"))
    sent_reply = sum(st["teacher"]["completion_tokens"] for st in rec["stages"].values() if st.get("teacher"))
    assert sum(st["teacher"]["cache_hits"] for st in rec["stages"].values() if st.get("teacher")) == 4
    total = est["total"]
    # prompts are counted with the teacher's own tokenizer and template: exact but for retries
    assert abs(total["prompt_tokens"] - sent_prompt) <= 0.05 * sent_prompt
    assert abs(total["prompt_tokens"] + total["completion_tokens"] - sent_prompt - sent_reply) \
        <= 0.20 * (sent_prompt + sent_reply)
