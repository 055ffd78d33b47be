"""The ``instructions`` generation stage: Self-Instruct, Evol-Instruct and Magpie against the fake
teacher (tests/responders.py: instruction_responder), through curation to export, resume, the
completions endpoint of the teacher client, and one run on the real embedded teacher."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from dataforge.config import ConfigError, InstructionsConfig, load_config
from dataforge.generate.instructions import (
    EvolInstructConfig,
    MagpieUnavailable,
    evol_failure,
    generate_evol,
    generate_magpie,
    generate_self_instruct,
    load_instruction_seeds,
    max_rouge_l,
    parse_new_instructions,
    rouge_l,
    rouge_tokens,
)
from dataforge.teacher import RequestCache, TeacherClient
from dataforge.teacher.client import TeacherError
from fake_openai import FakeOpenAI
from responders import JUDGE_MARK, MAGPIE_QUERIES, instruction_responder, multi_answer_responder
from run_helpers import run_pipeline, write_config
from teacher_fixtures import fake_teacher_cfg, require_embedded_teacher


def _client(srv: FakeOpenAI, tmp_path: Path, **overrides) -> TeacherClient:
    return TeacherClient(fake_teacher_cfg(srv, api_key_env=None, **overrides), RequestCache(tmp_path / "cache.sqlite"))


def _seeds():
    return load_instruction_seeds()[0]


def _run(coro_fn, srv, tmp_path, **overrides):
    async def go():
        client = _client(srv, tmp_path, **overrides)
        try:
            return await coro_fn(client), client.stats
        finally:
            await client.aclose()
    return asyncio.run(go())


def _config(tmp_path: Path, srv: FakeOpenAI, **instructions) -> Path:
    section = {"enabled": True, **instructions}
    return write_config(tmp_path / "pipe.yaml", srv.base_url, tmp_path / "data",
                        textbooks={"enabled": False}, cot={"enabled": False}, instructions=section)


# --- ROUGE-L and the Self-Instruct filters -------------------------------------------------------

def test_rouge_l_matches_the_lcs_f_measure():
    a, b = rouge_tokens("The cat sat on the mat."), rouge_tokens("the cat on the mat")
    # LCS = 5 ("the cat on the mat"): P = 5/5, R = 5/6, F = 2PR/(P+R)
    assert rouge_l(a, b) == pytest.approx(2 * 1 * (5 / 6) / (1 + 5 / 6))
    assert rouge_l(a, a) == 1.0 and rouge_l(a, rouge_tokens("dogs bark loudly")) == 0.0
    assert rouge_l(a, []) == 0.0 and rouge_l(a, b) == rouge_l(b, a)
    assert max_rouge_l(b, [rouge_tokens("nothing shared here"), a]) == (pytest.approx(rouge_l(a, b)), 1)


def test_numbered_replies_parse_into_tasks():
    reply = "Here you go:\n9. Write a poem about rain.\n10) Task: Explain gravity\n   to a child.\n- Name three rivers."
    assert parse_new_instructions(reply) == ["Write a poem about rain.", "Explain gravity\nto a child.",
                                             "Name three rivers."]
    one = "Describe a sunset in two sentences."
    assert parse_new_instructions(f"Task: {one}") == [one]
    assert parse_new_instructions("   ") == []


def test_self_instruct_keeps_only_tasks_unlike_the_pool(tmp_path):
    cfg = InstructionsConfig(enabled=True, self_instruct={"count": 6})
    seeds = _seeds()
    with FakeOpenAI(responder=instruction_responder) as srv:
        out, stats = _run(lambda c: generate_self_instruct(c, seeds, cfg, run_id="r", seed=7), srv, tmp_path)
    assert len(out.rows) == 6 and stats.failures == 0
    prompts = [r["messages"][0]["content"] for r in out.rows]
    pool = [rouge_tokens(s.instruction) for s in seeds]
    for p in prompts:  # below 0.7 against the seeds and every task kept before it
        assert max_rouge_l(rouge_tokens(p), pool)[0] < 0.7, p
        pool.append(rouge_tokens(p))
    for r in out.rows:
        answer = r["messages"][1]["content"]
        assert r["kind"] == "instruction" and r["method"] == "self_instruct"
        assert r["text"] == f"{r['messages'][0]['content']}\n\n{answer}"
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert answer.startswith("Here is a clear answer")
        gen = json.loads(r["gen_params"])
        assert gen["temperature"] == 0.7 and gen["top_p"] == 0.5 and len(gen["example_ids"]) == 6
        assert r["teacher_model"] == "fake-model" and r["request_hash"] and r["completion_tokens"] > 0
    reasons = Counter(r["drop_reason"].split("(")[0] for r in out.rejected)
    # the responder copies its first example into every reply and adds a task with "picture"
    assert reasons["rouge_l_similar"] >= out.requests and reasons["blocked_word:picture"] == out.requests
    assert all(r["text"] for r in out.rejected)  # the rejected task itself is the row's text


# --- Evol-Instruct --------------------------------------------------------------------------------

def test_evolution_elimination_rules():
    ec = EvolInstructConfig()
    good = "Here are the three steps, each with an example of how it works in practice."
    parent = "List six ways to save water at home."
    assert evol_failure(parent, parent + " Use a table with the litres saved by each.", good, ec) is None
    assert evol_failure(parent, "  list six ways to SAVE water at home. ", good, ec) == "evol_no_gain:identical"
    assert evol_failure(parent, "List six ways to save water at home quickly.", good, ec).startswith(
        "evol_no_gain:rouge_l(")
    assert evol_failure(parent, "#Rewritten Prompt#: List ten ways.", good, ec) == "evol_copied_prompt:rewritten_prompt"
    assert evol_failure(parent, "List ten ways, with costs.", "Sorry, I can't.", ec).startswith("evol_sorry_reply(")
    assert evol_failure(parent, "List ten ways, with costs.", "It is what it is, and so on...", ec) == \
        "evol_stop_words_only"
    # the teacher's verdict replaces the similarity rule, not the others
    assert evol_failure(parent, parent, good, ec, teacher_equal=False) is None
    assert evol_failure(parent, "List ten ways, with costs.", good, ec, teacher_equal=True) == \
        "evol_no_gain:teacher_equal"


def test_evol_instruct_eliminates_failed_evolutions_and_retries_their_parent(tmp_path):
    cfg = InstructionsConfig(enabled=True, evol_instruct={"count": 12, "rounds": 3})
    seeds = _seeds()
    with FakeOpenAI(responder=instruction_responder) as srv:
        out, _ = _run(lambda c: generate_evol(c, seeds, cfg, run_id="r", seed=3), srv, tmp_path)
    assert out.rows and out.rejected
    reasons = Counter(r["drop_reason"].split("(")[0].split(":")[0] for r in out.rejected)
    assert {"evol_no_gain", "evol_copied_prompt", "evol_sorry_reply"} <= set(reasons), reasons
    by_id = {r["id"]: r for r in out.rows}
    seed_ids = {s.seed_id for s in seeds}
    for r in out.rows:
        gen = json.loads(r["gen_params"])
        assert r["template"] == f"evol_{gen['operation']}_v1" and r["method"] == "evol_instruct"
        assert "#" not in r["messages"][0]["content"] and "sorry" not in r["messages"][1]["content"].lower()
        # the parent is the chain's last successful evolution, else its root seed
        parent = by_id.get(r["parent_seed_id"])
        if parent is None:
            assert r["parent_seed_id"] == r["seed_id"] in seed_ids
        else:
            assert json.loads(parent["gen_params"])["chain"] == gen["chain"]
            assert json.loads(parent["gen_params"])["round"] < gen["round"]
    # a chain whose evolution failed evolves the same parent again in its next round
    failed = [json.loads(r["gen_params"]) | {"parent": r["parent_seed_id"]} for r in out.rejected]
    retried = [f for f in failed if f["round"] < 3 and any(
        json.loads(r["gen_params"])["chain"] == f["chain"] and json.loads(r["gen_params"])["round"] == f["round"] + 1
        and r["parent_seed_id"] == f["parent"] for r in out.rows)]
    assert retried, failed


def test_evol_no_gain_judged_by_the_teacher(tmp_path):
    def equal_teacher(body):
        last = body.get("messages", [{}])[-1].get("content", "")
        return "Equal" if last.startswith("Here are two Instructions") else instruction_responder(body)

    cfg = InstructionsConfig(enabled=True, evol_instruct={"count": 6, "rounds": 1, "no_gain_check": "teacher"})
    with FakeOpenAI(responder=equal_teacher) as srv:
        out, _ = _run(lambda c: generate_evol(c, _seeds(), cfg, seed=3), srv, tmp_path)
        asked = [r for r in srv.requests if r["json"] and "Here are two Instructions" in json.dumps(r["json"])]
    assert not out.rows and asked
    assert "evol_no_gain:teacher_equal" in {r["drop_reason"] for r in out.rejected}


# --- Magpie and the completions endpoint -----------------------------------------------------------

def test_magpie_sends_only_the_template_prefix_to_completions(tmp_path):
    cfg = InstructionsConfig(enabled=True, magpie={"count": len(MAGPIE_QUERIES)})
    with FakeOpenAI(responder=instruction_responder) as srv:
        out, _ = _run(lambda c: generate_magpie(c, cfg, run_id="r", seed=0), srv, tmp_path)
        text_requests = [r["json"] for r in srv.requests if r["path"] == "/v1/completions"]
        chat_requests = [r["json"] for r in srv.requests if r["path"] == "/v1/chat/completions"]
    assert len(text_requests) == len(MAGPIE_QUERIES)
    assert all(b["prompt"] == "<|im_start|>user\n" and "messages" not in b and "<|im_end|>" in b["stop"]
               and b["temperature"] == 1.0 for b in text_requests)
    queries = [r["messages"][0]["content"] for r in out.rows]
    # the marker-cut limerick kept, the one-word query and the duplicate dropped
    assert "Write a limerick about a cat who loves rain." in queries and len(queries) == len(set(queries)) == 5
    assert {r["drop_reason"] for r in out.rejected} == {"magpie_short_query(1<3)", "magpie_duplicate_query"}
    assert len(chat_requests) == 5 and all(r["template"] == "magpie_chatml" for r in out.rows)


def test_magpie_prefix_follows_the_template_or_the_config(tmp_path):
    with FakeOpenAI(responder=instruction_responder) as srv:
        llama3 = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        for magpie, prefix in (({"template": "llama3"}, llama3),
                               ({"prefix": "USER: "}, "USER: ")):
            cfg = InstructionsConfig(enabled=True, magpie={"count": 1, **magpie})
            _run(lambda c, cfg=cfg: generate_magpie(c, cfg, seed=0), srv, tmp_path)
            assert [r for r in srv.requests if r["path"] == "/v1/completions"][-1]["json"]["prompt"] == prefix


def test_no_completions_endpoint_fails_in_one_line_before_other_requests(tmp_path, capsys):
    with FakeOpenAI(responder=instruction_responder) as srv:
        srv.serves_completions = False
        config = _config(tmp_path, srv, magpie={"count": 3}, self_instruct={"count": 2})
        with pytest.raises(MagpieUnavailable) as info:
            run_pipeline(config, "r404")
        assert srv.chat_count == 0 and srv.count == 1  # only the one probe was sent
    msg = str(info.value)
    assert "\n" not in msg and "instructions.magpie" in msg and "404" in msg and "Magpie" in msg

    # said in the config: refused before the run touches the teacher
    with FakeOpenAI(responder=instruction_responder) as srv:
        config = _config(tmp_path, srv, magpie={"count": 3, "completions_endpoint": False})
        from dataforge.runner.generation import generation_preflight

        with pytest.raises(ConfigError, match="instructions.magpie: the teacher has no completions endpoint"):
            generation_preflight(load_config(config))
        assert srv.count == 0


def test_a_probe_that_fails_otherwise_is_one_failed_query(tmp_path):
    from dataforge.generate.instructions import check_completions_endpoint

    cfg = InstructionsConfig(enabled=True, magpie={"count": 2})
    with FakeOpenAI(responder=instruction_responder) as srv:
        srv.script(["503"])

        async def go(client):
            first = await check_completions_endpoint(client, cfg.magpie, 1)
            assert isinstance(first, TeacherError) and first.reason == "http_503"
            return await generate_magpie(client, cfg, seed=1, first=first)
        out, _ = _run(go, srv, tmp_path, max_attempts=1)
    assert [r["drop_reason"] for r in out.rejected] == ["teacher_error:http_503"] and len(out.rows) == 1


def test_complete_text_is_cached_billed_and_not_retried_on_404(tmp_path):
    prices = {"fake-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
    with FakeOpenAI(responder=lambda b: "How do tides work?") as srv:
        async def go():
            async with _client(srv, tmp_path, prices=prices) as c:
                srv.script(["500"])
                a = await c.complete_text("<|im_start|>user\n", temperature=1.0, max_tokens=16, seed=1)
                b = await c.complete_text("<|im_start|>user\n", temperature=1.0, max_tokens=16, seed=1)
                return a, b, c.stats
        a, b, stats = asyncio.run(go())
        assert srv.completions_count == 2 and stats.retries == 1  # the 500 retried, the repeat cached
        assert a.text == b.text == "How do tides work?" and b.cached and not a.cached
        assert (a.prompt_tokens, a.completion_tokens) == (1, 4)  # the fake counts words
        assert stats.cost_usd == pytest.approx((1 * 1.0 + 4 * 2.0) / 1e6) and a.cost_usd == stats.cost_usd
        srv.serves_completions = False

        async def missing():
            async with _client(srv, tmp_path / "other") as c:
                await c.complete_text("x", temperature=1.0, max_tokens=4)
        with pytest.raises(TeacherError) as info:
            asyncio.run(missing())
        assert info.value.reason == "http_404" and info.value.attempts == 1


# --- seeds and config --------------------------------------------------------------------------------

def test_shipped_and_user_seeds(tmp_path):
    seeds, bad = load_instruction_seeds()
    assert len(seeds) >= 30 and not bad and len({s.seed_id for s in seeds}) == len(seeds)
    assert len({s.category for s in seeds}) >= 10
    user = tmp_path / "seeds.jsonl"
    user.write_text("\n".join([
        json.dumps({"instruction": "Name a colour.", "id": 7}),
        "{not json",
        json.dumps({"instruction": "Add the numbers.", "instances": [{"input": "2, 3", "output": "5"}]}),
        json.dumps({"input": "no instruction"}),
        json.dumps({"instruction": "Name a colour.", "id": "other"}),
    ]) + "\n")
    seeds, bad = load_instruction_seeds(user)
    assert [s.instruction for s in seeds] == ["Name a colour.", "Add the numbers.\n\n2, 3"]
    assert seeds[0].seed_id == "7" and [q.line for q in bad] == [2, 4, 5]
    with pytest.raises(ConfigError, match="instructions.seeds: seed file not found"):
        load_instruction_seeds(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("section, field", [
    ({"enabled": True}, "instructions: Value error, enabled with no method"),
    ({"magpie": {"template": "vicuna"}}, "instructions.magpie.template"),
    ({"evol_instruct": {"operations": {"bogus": 1.0}}}, "instructions.evol_instruct.operations.bogus"),
    ({"self_instruct": {"max_rouge_l": 1.5}}, "instructions.self_instruct.max_rouge_l"),
    ({"self_instruct": {"cuont": 3}}, "instructions.self_instruct.cuont: unknown field"),
    ({"answers_per_instruction": 9}, "instructions.answers_per_instruction"),
    ({"answers_per_instruction": 3, "answer_temperature": 0},
     ("instructions.answers_per_instruction: Value error, several answers need answer_temperature above 0")),
])
def test_bad_config_names_the_field(tmp_path, section, field):
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"instructions": section}))
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert f"{p.resolve()}: {field}" in str(info.value)


def test_request_plan_bounds_what_a_run_sends(tmp_path):
    from dataforge.generate.instructions import request_plan

    with FakeOpenAI(responder=instruction_responder) as srv:
        config = _config(tmp_path, srv, self_instruct={"count": 3}, evol_instruct={"count": 3}, magpie={"count": 5})
        plan = request_plan(load_config(config).instructions)
        run_pipeline(config, "plan")
        chat, text = srv.chat_count, srv.completions_count
    assert text == plan["magpie"]["requests"] == 5
    assert chat <= sum(v["requests"] for v in plan.values() if v["endpoint"] == "chat")
    assert set(plan) == {"self_instruct", "self_instruct_answers", "evol_instruct", "evol_instruct_answers", "magpie",
                         "magpie_answers"}
    cfg = load_config(config).instructions.model_copy(update={"answers_per_instruction": 3})
    three = request_plan(cfg)
    assert {k: v["requests"] for k, v in three.items() if k.endswith("_answers")} == {
        k: 3 * v["requests"] for k, v in plan.items() if k.endswith("_answers")}


# --- several answers per instruction ------------------------------------------------------------------

def _is_answer_request(body: dict) -> bool:
    """A chat request that answers an instruction (not one that generates, evolves or judges one)."""
    msgs = body.get("messages") or []
    last = msgs[-1].get("content", "") if msgs else ""
    return bool(msgs) and JUDGE_MARK not in msgs[0].get("content", "") and not (
        last.startswith(("Come up with", "Here are two Instructions")) or "#Given Prompt#" in last)


def _answer_requests(srv: FakeOpenAI) -> list[dict]:
    return [r["json"] for r in srv.requests if r["path"] == "/v1/chat/completions" and _is_answer_request(r["json"])]


def test_each_instruction_answered_n_times_with_distinct_requests(tmp_path):
    from dataforge.select.preference import PairOptions, candidates_of, prompt_key

    cfg = InstructionsConfig(enabled=True, self_instruct={"count": 4}, answers_per_instruction=3)
    with FakeOpenAI(responder=multi_answer_responder) as srv:
        out, stats = _run(lambda c: generate_self_instruct(c, _seeds(), cfg, run_id="r", seed=7), srv, tmp_path)
        answer_seeds = Counter(b["seed"] for b in _answer_requests(srv))
    assert stats.failures == 0 and len(out.rows) == 12 and answer_seeds == {7: 4, 8: 4, 9: 4}
    by_prompt: dict[str, list[dict]] = {}
    for r in out.rows:
        by_prompt.setdefault(r["messages"][0]["content"], []).append(r)
    assert len(by_prompt) == 4
    for instruction, rows in by_prompt.items():
        assert sorted(r["sample_index"] for r in rows) == [0, 1, 2]
        assert len({r["messages"][1]["content"] for r in rows}) == 3 and len({r["id"] for r in rows}) == 3
        gens = [json.loads(r["gen_params"]) for r in rows]
        key = prompt_key([{"role": "user", "content": instruction}])
        assert {g["answer"]["prompt_key"] for g in gens} == {key} and {g["answer"]["of"] for g in gens} == {3}
        assert sorted(g["answer"]["seed"] for g in gens) == [7, 8, 9]
        assert len({(g["request"], tuple(g["example_ids"])) for g in gens}) == 1  # one generating request
        # the preference builder puts the answers of one instruction in one judge group
        for r in rows:
            r["judge_score"] = 4.0
        groups = {candidates_of(r, True, PairOptions())[0][0].group for r in rows}
        assert groups == {f"instruction:{key}"}


def test_raising_n_reuses_the_answers_already_paid_for_and_drops_identical_ones(tmp_path):
    def same_answer(body):  # every answer to an instruction the same, whatever the seed
        if _is_answer_request(body):
            return "One fixed answer that does not depend on the seed at all, so every sample is the same."
        return instruction_responder(body)

    cfg1 = InstructionsConfig(enabled=True, magpie={"count": 4})
    cfg3 = InstructionsConfig(enabled=True, magpie={"count": 4}, answers_per_instruction=3)
    with FakeOpenAI(responder=same_answer) as srv:
        one, _ = _run(lambda c: generate_magpie(c, cfg1, seed=0), srv, tmp_path)
        three, stats = _run(lambda c: generate_magpie(c, cfg3, seed=0), srv, tmp_path)  # the same cache
    kept = [r for r in three.rows]
    assert sorted(r["id"] for r in kept) == sorted(r["id"] for r in one.rows) and len(kept) == 4
    assert all(r["sample_index"] == 0 for r in kept)
    dup = [r for r in three.rejected if r["drop_reason"] == "duplicate_answer"]
    assert len(dup) == 8 and sorted({r["sample_index"] for r in dup}) == [1, 2]
    # answer 0 and the Magpie queries came from the cache; only answers 1 and 2 were sent
    assert stats.cache_hits == 4 + 4 and stats.requests_sent == 8


def test_only_surviving_evolutions_get_more_answers(tmp_path):
    cfg = InstructionsConfig(enabled=True, evol_instruct={"count": 8, "rounds": 2}, answers_per_instruction=2)
    with FakeOpenAI(responder=multi_answer_responder) as srv:
        out, _ = _run(lambda c: generate_evol(c, _seeds(), cfg, run_id="r", seed=3), srv, tmp_path)
    first = [r for r in out.rows if r["sample_index"] == 0]
    second = [r for r in out.rows if r["sample_index"] == 1]
    assert first and len(second) == len(first)  # every surviving evolution has its second answer
    assert {r["messages"][0]["content"] for r in first} == {r["messages"][0]["content"] for r in second}
    eliminated = [r for r in out.rejected if r["drop_reason"].startswith("evol_")]
    assert eliminated and all(r["sample_index"] == 0 for r in eliminated)
    # an eliminated evolution was answered once: no second answer to it anywhere
    assert not {r["messages"][0]["content"] for r in eliminated if r["messages"]} & {
        r["messages"][0]["content"] for r in second}
    # a later round evolves answer 0's row: a parent is the root seed or a row with sample_index 0
    ids0 = {r["id"] for r in first}
    assert all(r["parent_seed_id"] in ids0 or r["parent_seed_id"] == r["seed_id"] for r in out.rows)
    assert any(r["parent_seed_id"] in ids0 for r in out.rows)


def test_judge_pairs_between_answers_of_one_instruction(tmp_path, monkeypatch):
    """instructions (3 answers each) -> heuristics -> dedup -> judge -> the ``preference`` layout
    with ``judge_kinds: [instruction]``: pairs of two answers to one instruction, loaded with
    ``datasets`` in the form TRL's DPOTrainer reads."""
    import pyarrow.parquet as pq
    import yaml
    from test_preference import check_trl_conversational, load_hf

    from dataforge.store import read_manifest

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with FakeOpenAI(responder=multi_answer_responder) as srv:
        config = _config(tmp_path, srv, self_instruct={"count": 4}, magpie={"count": 4}, answers_per_instruction=3)
        data = yaml.safe_load(config.read_text())
        data["judge"] = {"enabled": True, "output": "text", "threshold": 4.0}
        data["export"] = {"kinds": ["chat", "preference"], "formats": ["parquet"], "validation_fraction": 0.0,
                          "preference": {"judge_kinds": ["instruction"], "judge_pairs": "all"}}
        config.write_text(yaml.safe_dump(data))
        run = run_pipeline(config, "pairs")
    rec = json.loads(run.record_path.read_text())["stages"]
    generated = run.read("instructions").to_pylist()
    n = rec["instructions"]["extra"]["kept_instructions"]
    assert n >= 6 and len(generated) == 3 * n
    assert Counter(Counter(r["messages"][0]["content"] for r in generated).values()) == {3: n}
    # distinct answers to one instruction all pass dedup (the shared instruction does not make them duplicates)
    assert rec["dedup"]["rows_kept"] == rec["dedup"]["rows_in"] == rec["heuristics"]["rows_kept"] == 3 * n, rec
    scores = {r["id"]: r["judge_score"] for r in run.read("judge").to_pylist() + run.read_rejected("judge").to_pylist()}
    assert len(scores) == 3 * n and len(set(scores.values())) > 1
    m = read_manifest(run.export_dir("default"))
    counts = m["layouts"]["preference"]["pairs"]
    print("PAIR COUNTS", json.dumps(counts))
    assert counts["prompts"] == n and counts["prompts_single_response"] == 0 and counts["judge_pairs"] >= 1, counts
    assert counts["verification_pairs"] == 0
    path = run.export_dir("default") / "preference" / "train.parquet"
    ds = load_hf(path, tmp_path)
    check_trl_conversational(ds)
    assert len(ds) == counts["judge_pairs"] == m["layouts"]["preference"]["train"]
    answers_of: dict[str, set] = {}
    for r in generated:
        answers_of.setdefault(r["messages"][0]["content"], set()).add(r["messages"][1]["content"])
    for ex, raw in zip(ds, pq.read_table(path).to_pylist()):
        instruction = ex["prompt"][0]["content"]
        assert ex["prompt"] == [{"role": "user", "content": instruction}] and instruction in answers_of
        assert {ex["chosen"][0]["content"], ex["rejected"][0]["content"]} <= answers_of[instruction]
        assert raw["source"] == "judge" and raw["chosen_score"] - raw["rejected_score"] >= 1.0
        assert raw["chosen_score"] >= 4.0  # the chosen answer passed the judge


# --- the stage in a pipeline: curation, export, resume -------------------------------------------------

def test_pipeline_through_curation_judge_and_export(tmp_path):
    with FakeOpenAI(responder=instruction_responder) as srv:
        config = _config(tmp_path, srv, self_instruct={"count": 4}, evol_instruct={"count": 4, "rounds": 2},
                         magpie={"count": 7})
        import yaml

        data = yaml.safe_load(config.read_text())
        data["judge"] = {"enabled": True, "output": "text", "threshold": 4.0}
        config.write_text(yaml.safe_dump(data))
        run = run_pipeline(config, "p1")
        rec = json.loads(run.record_path.read_text())
    stages = rec["stages"]
    assert stages["instructions"]["rows_kept"] > 0 and {"heuristics", "dedup", "judge"} <= set(stages)
    for name in ("heuristics", "dedup", "judge"):
        assert stages[name]["rows_in"] > 0, (name, stages[name])
    judged = run.read("judge").to_pylist() + [r for r in run.read_rejected("judge").to_pylist()]
    assert judged and all(r["kind"] == "instruction" and r["judge_score"] is not None for r in judged)
    assert any(c.startswith("heur_") for c in run.read("judge").column_names)
    lines = [json.loads(x) for x in (run.export_dir("default") / "train.jsonl").read_text().splitlines()]
    assert lines and all(x["kind"] == "instruction" for x in lines)
    assert all([m["role"] for m in x["messages"]] == ["user", "assistant"] for x in lines)
    assert {x["id"] for x in lines} <= {r["id"] for r in run.read("judge").to_pylist()}
    extra = stages["instructions"]["extra"]
    assert set(extra["kept_by_method"]) == {"self_instruct", "evol_instruct", "magpie"}
    assert 0 < extra["instruction_distinct_n"]["distinct_2"] <= 1


def test_resume_after_a_crash_asks_nothing_again(tmp_path, monkeypatch):
    import dataforge.generate.instructions as gen

    with FakeOpenAI(responder=instruction_responder) as srv:
        config = _config(tmp_path, srv, self_instruct={"count": 3}, evol_instruct={"count": 3}, magpie={"count": 4})

        def crash(*a, **k):
            raise RuntimeError("killed after the teacher answered")

        monkeypatch.setattr(gen, "summarize_instructions", crash)
        with pytest.raises(RuntimeError, match="killed"):
            run_pipeline(config, "res")
        asked = srv.count
        monkeypatch.undo()
        run = run_pipeline(config, "res")  # the same run: the cache answers every request
        assert srv.count == asked
        first = sorted(r["id"] for r in run.read("instructions").to_pylist())
        rec = json.loads(run.record_path.read_text())
        assert rec["stages"]["instructions"]["teacher"]["cache_hits"] > 0
        run = run_pipeline(config, "res")  # committed: the stage is skipped
        assert srv.count == asked and sorted(r["id"] for r in run.read("instructions").to_pylist()) == first


def test_editing_the_seed_file_regenerates(tmp_path):
    with FakeOpenAI(responder=instruction_responder) as srv:
        seeds = tmp_path / "seeds.jsonl"
        seeds.write_text(json.dumps({"instruction": "Explain how a bicycle gear works."}) + "\n")
        config = _config(tmp_path, srv, seeds=str(seeds), evol_instruct={"count": 2, "rounds": 1})
        run_pipeline(config, "s1")
        asked = srv.count
        seeds.write_text(json.dumps({"instruction": "Describe how bees make honey."}) + "\n")
        run = run_pipeline(config, "s1")
        assert srv.count > asked
        assert all("bees" in r["text"] or "honey" in r["text"] for r in
                   run.read("instructions").to_pylist() + run.read_rejected("instructions").to_pylist())


# --- the real embedded teacher --------------------------------------------------------------------------

LOCAL_PORT = 8853  # apart from the ports other local-model tests use


@pytest.mark.local_model
def test_each_method_on_the_embedded_teacher(tmp_path):
    require_embedded_teacher()
    import yaml

    from dataforge.teacher.local import local_teacher

    config = tmp_path / "local.yaml"
    config.write_text(yaml.safe_dump({
        "name": "instructions-local", "data_root": str(tmp_path / "data"),
        "teacher": {"provider": "local", "local": {"port": LOCAL_PORT}},
        "textbooks": {"enabled": False}, "cot": {"enabled": False},
        "instructions": {"enabled": True, "answer_max_tokens": 96, "answers_per_instruction": 2,
                         "self_instruct": {"count": 2, "requests_per_round": 2, "max_requests": 4, "max_tokens": 160},
                         "evol_instruct": {"count": 2, "rounds": 1, "max_tokens": 96},
                         "magpie": {"count": 3, "max_tokens": 48}},
        "export": {"formats": ["jsonl"]},
    }))
    cfg = load_config(config)
    with local_teacher(cfg.teacher, tmp_path / "teacher"):
        run = run_pipeline(config, "local")
    rec = json.loads(run.record_path.read_text())
    st = rec["stages"]["instructions"]
    assert st["teacher"]["failures"] == 0 and st["teacher"]["requests_sent"] > 0, st
    rows = run.read("instructions").to_pylist()
    dropped = run.read_rejected("instructions").to_pylist()
    methods = Counter(r["method"] for r in rows + dropped)
    assert set(methods) == {"self_instruct", "evol_instruct", "magpie"}, methods
    # Magpie's queries came from /v1/completions: every magpie row holds a query the model wrote
    magpie = [r for r in rows + dropped if r["method"] == "magpie"]
    assert sum(1 for r in magpie if r["sample_index"] == 0) == 3 and all("<|im" not in r["text"] for r in magpie)
    for r in rows:
        assert r["kind"] == "instruction" and r["messages"][1]["content"].strip()
        assert r["text"].startswith(r["messages"][0]["content"]) and r["teacher_model"] == "smollm2-135m-instruct"
    # two answers per kept instruction (seed, seed + 1): sampled at 0.7 they differ, so each
    # instruction has two rows (a rare identical pair would be dropped as duplicate_answer)
    answers: dict[str, dict[int, str]] = {}
    for r in rows + [r for r in dropped if r["drop_reason"] == "duplicate_answer"]:
        answers.setdefault(r["messages"][0]["content"], {})[r["sample_index"]] = r["messages"][1]["content"]
    assert all(set(a) == {0, 1} for a in answers.values()), answers
    assert any(a[0] != a[1] for a in answers.values())
    assert len({r["id"] for r in rows}) == len(rows)
    print(json.dumps([{k: r[k] for k in ("method", "template", "text")} for r in rows + dropped], indent=1))
