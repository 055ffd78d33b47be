"""Batch API mode of the teacher (dataforge/teacher/batch.py) against the fake server's
/v1/files and /v1/batches: submit, poll, collect, partial and whole-batch failures,
resubmission, resume after a crash, and the generation code and stage runner on top."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from pydantic import BaseModel, ConfigDict

from dataforge import runner
from dataforge.config import ConfigError, TeacherConfig, parse_config
from dataforge.generate.textbooks import generate_textbooks, load_textbook_sources, plan_textbooks
from dataforge.teacher import Completion, RequestCache, TeacherClient, TeacherError, request_key
from dataforge.teacher.batch import BatchTeacherClient, read_batch_states
from fake_openai import FakeOpenAI, echo_responder
from teacher_fixtures import KEY_ENV, fake_teacher_cfg

SENTINEL = "sk-batch-SENTINEL-4242"
PARAMS = {"temperature": 0.7, "max_tokens": 64}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SENTINEL)
    return SENTINEL


@pytest.fixture
def srv():
    with FakeOpenAI() as server:
        yield server


def make_cfg(srv: FakeOpenAI, **overrides) -> TeacherConfig:
    return fake_teacher_cfg(srv, **{"mode": "batch", "batch_poll_interval_s": 0.01, "backoff_initial_s": 0.001,
                                    "backoff_max_s": 0.01, "max_attempts": 1, **overrides})


def prompts(n: int, tag: str = "q") -> list[list[dict]]:
    return [[{"role": "user", "content": f"{tag} number {i}?"}] for i in range(n)]


def key_of(messages: list[dict], seed: int | None = None, sample_index: int = 0) -> str:
    params = {**PARAMS, **({"seed": seed} if seed is not None else {})}
    return request_key("fake-model", messages, params, sample_index)


async def ask_all(client: BatchTeacherClient, batch: list[list[dict]]) -> list[Completion | TeacherError]:
    """One complete() per prompt, all at once (as the generation code does); errors returned."""
    async def one(messages: list[dict]) -> Completion | TeacherError:
        try:
            return await client.complete(messages, **PARAMS)
        except TeacherError as err:
            return err

    return list(await asyncio.gather(*(one(m) for m in batch)))


def run_batch(cfg: TeacherConfig, cache: RequestCache, state_dir: Path, batch: list[list[dict]],
              ) -> tuple[list[Completion | TeacherError], BatchTeacherClient]:
    async def go():
        async with BatchTeacherClient(cfg, cache, state_dir=state_dir, flush_after_s=0.02) as client:
            return await ask_all(client, batch), client

    return asyncio.run(go())


def uploaded_lines(srv: FakeOpenAI) -> list[list[dict]]:
    """The JSONL lines of every input file clients uploaded, one list per file."""
    return [[json.loads(x) for x in f["content"].decode().splitlines()]
            for f in srv.files.values() if f["purpose"] == "batch"]


async def until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait (in the event loop) until ``predicate()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def all_bytes_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def textbook_plan(n: int):
    """(config, sources, cells) for ``n`` textbook sections on inline topics."""
    pcfg = parse_config({"teacher": {"provider": "openai"},
                         "textbooks": {"topics": ["fractions", "magnets", "rivers", "tides"][:n], "max_samples": n}})
    sources = load_textbook_sources(pcfg.textbooks, pcfg.resolve_path)
    return pcfg, sources, plan_textbooks(sources, n, pcfg.seed)


def echoes_its_prompt(row: dict) -> bool:
    """The fake's default responder echoes the last user message after a digest."""
    prompt = [m["content"] for m in row["messages"] if m["role"] == "user"][-1]
    return row["text"].startswith("Echo (") and row["text"].endswith(prompt.strip())


# --------------------------------------------------------------------------- the happy path


def test_submit_poll_collect_fills_the_cache_in_order(srv: FakeOpenAI, tmp_path: Path, caplog):
    caplog.set_level("DEBUG")
    batch = prompts(5)
    cache = RequestCache(tmp_path / "cache.sqlite")
    results, client = run_batch(make_cfg(srv), cache, tmp_path / "batches", batch)

    assert [r.text for r in results] == [echo_responder({"messages": m}) for m in batch]
    assert all(isinstance(r, Completion) and not r.cached and r.finish_reason == "stop" for r in results)
    assert [r.request_hash for r in results] == [key_of(m) for m in batch]
    # one upload, one batch, polled through validating -> in_progress -> completed; no chat requests
    assert (srv.file_uploads, srv.batch_creations, srv.chat_count) == (1, 1, 0)
    (b,) = srv.batches.values()
    assert b["status"] == "completed" and b["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    (lines,) = uploaded_lines(srv)
    assert [ln["custom_id"] for ln in lines] == [key_of(m) for m in batch]
    assert all(ln["method"] == "POST" and ln["url"] == "/v1/chat/completions" for ln in lines)
    assert lines[0]["body"] == {"model": "fake-model", "messages": batch[0], **PARAMS}

    stats = client.stats
    assert stats.requests_sent == 5 and stats.cache_hits == 0 and stats.failures == 0
    assert stats.prompt_tokens == sum(r.prompt_tokens for r in results) > 0
    assert stats.completion_tokens == sum(r.completion_tokens for r in results) > 0

    # every answer is in the cache with the online client's request record
    assert len(cache) == 5
    assert cache.get_request(key_of(batch[0])) == {"model": "fake-model", "messages": batch[0], "params": PARAMS,
                                                   "sample_index": 0, "base_url": srv.base_url, "attempts": 1,
                                                   "cost_usd": 0.0}
    # the state file says collected; the local input copy is gone
    (state,) = read_batch_states(tmp_path / "batches")
    assert (state.status, state.batch_status, state.succeeded, state.failed) == ("collected", "completed", 5, 0)
    assert state.batch_id == b["id"] and state.input_file_id == b["input_file_id"]
    assert set(state.requests) == {key_of(m) for m in batch}
    assert not list((tmp_path / "batches").glob("*.jsonl"))

    # the two modes share the cache: the online client finds every answer there
    async def online():
        async with TeacherClient(make_cfg(srv, mode="online"), cache) as c:
            return [await c.complete(m, **PARAMS) for m in batch], c.stats

    again, online_stats = asyncio.run(online())
    assert [r.text for r in again] == [r.text for r in results] and online_stats.cache_hits == 5
    assert srv.chat_count == 0

    # the key went to the server in the Authorization header, nowhere on disk
    headers = {k.lower(): v for k, v in srv.requests[0]["headers"].items()}
    assert headers["authorization"] == f"Bearer {SENTINEL}"
    cache.close()
    assert SENTINEL.encode() not in all_bytes_under(tmp_path)
    assert SENTINEL not in caplog.text and "batch_" in caplog.text


def test_cached_and_repeated_requests_never_enter_a_batch(srv: FakeOpenAI, tmp_path: Path):
    cache = RequestCache(tmp_path / "cache.sqlite")
    first = prompts(2)
    run_batch(make_cfg(srv), cache, tmp_path / "b", first)
    assert srv.batch_creations == 1

    # two cached, two new, one of the new ones asked twice at once: a batch of two lines
    batch = first + prompts(2, tag="new") + [prompts(2, tag="new")[0]]
    results, client = run_batch(make_cfg(srv), cache, tmp_path / "b", batch)
    assert all(isinstance(r, Completion) for r in results)
    assert [r.cached for r in results] == [True, True, False, False, False]
    assert results[2].text == results[4].text
    assert client.stats.cache_hits == 2 and client.stats.requests_sent == 2
    assert srv.batch_creations == 2
    assert [len(lines) for lines in uploaded_lines(srv)] == [2, 2]

    # everything cached: nothing is uploaded at all
    results, client = run_batch(make_cfg(srv), cache, tmp_path / "b", batch)
    assert client.stats.cache_hits == 5 and (srv.file_uploads, srv.batch_creations) == (2, 2)


def test_batch_max_requests_splits_the_queue(srv: FakeOpenAI, tmp_path: Path):
    results, client = run_batch(make_cfg(srv, batch_max_requests=2), RequestCache(tmp_path / "c.sqlite"),
                                tmp_path / "b", prompts(5))
    assert all(isinstance(r, Completion) for r in results)
    assert sorted(len(lines) for lines in uploaded_lines(srv)) == [1, 2, 2]
    assert srv.batch_creations == 3 and client.stats.requests_sent == 5


# --------------------------------------------------------------------------- the online client's features, over batches


def test_batch_answers_are_priced_with_the_batch_discount(srv: FakeOpenAI, tmp_path: Path):
    prices = {"fake-model": {"input_per_mtok": 1000.0, "output_per_mtok": 3000.0}}
    cfg = make_cfg(srv, prices=prices, batch_discount=0.5)
    cache = RequestCache(tmp_path / "c.sqlite")
    results, client = run_batch(cfg, cache, tmp_path / "b", prompts(3))
    list_price = [(r.prompt_tokens * 1000.0 + r.completion_tokens * 3000.0) / 1e6 for r in results]
    assert [r.cost_usd for r in results] == pytest.approx([p / 2 for p in list_price])
    assert client.stats.cost_usd == pytest.approx(sum(list_price) / 2) and client.stats.cost_usd > 0
    assert cache.get_request(results[0].request_hash)["cost_usd"] == pytest.approx(list_price[0] / 2)
    # a cache hit costs the run nothing but keeps what its answer cost
    again, client = run_batch(cfg, cache, tmp_path / "b", prompts(3))
    assert client.stats.cost_usd == 0 and [r.cost_usd for r in again] == pytest.approx([r.cost_usd for r in results])


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int


def test_complete_structured_retries_an_invalid_reply_in_the_next_batch(srv: FakeOpenAI, tmp_path: Path):
    replies = iter(['{"value": "not a number"}', '{"value": 42}'])
    srv.responder = lambda body: next(replies)

    async def go():
        async with BatchTeacherClient(make_cfg(srv, max_attempts=2), RequestCache(tmp_path / "c.sqlite"),
                                      state_dir=tmp_path / "b", flush_after_s=0.02) as client:
            return await client.complete_structured(prompts(1)[0], Answer, temperature=0.0, max_tokens=32), client.stats

    c, stats = asyncio.run(go())
    assert isinstance(c.parsed, Answer) and c.parsed.value == 42
    assert srv.batch_creations == 2 and stats.retries == 1
    bodies = [lines[0]["body"] for lines in uploaded_lines(srv)]
    assert bodies[0] == bodies[1] and bodies[0]["response_format"]["type"] == "json_schema"
    assert bodies[0]["response_format"]["json_schema"]["schema"] == Answer.model_json_schema()


def test_complete_n_sends_one_line_per_sample_under_the_complete_keys(srv: FakeOpenAI, tmp_path: Path):
    messages = prompts(1)[0]

    async def go():
        async with BatchTeacherClient(make_cfg(srv), RequestCache(tmp_path / "c.sqlite"), state_dir=tmp_path / "b",
                                      flush_after_s=0.02) as client:
            return await client.complete_n(messages, 3, seed=10, **PARAMS)

    results = asyncio.run(go())
    assert [r.sample_index for r in results] == [0, 1, 2]
    assert [r.text for r in results] == [echo_responder({"messages": messages, "seed": 10 + i}) for i in range(3)]
    (lines,) = uploaded_lines(srv)
    assert [ln["custom_id"] for ln in lines] == [key_of(messages, seed=10 + i, sample_index=i) for i in range(3)]
    assert all("n" not in ln["body"] for ln in lines) and srv.batch_creations == 1


def test_a_truncated_answer_is_asked_again_with_more_tokens(srv: FakeOpenAI, tmp_path: Path):
    srv.script(["length", "ok"])
    cache = RequestCache(tmp_path / "c.sqlite")
    results, _ = run_batch(make_cfg(srv, retry_on_length=True, max_attempts=2), cache, tmp_path / "b", prompts(1))
    (c,) = results
    assert isinstance(c, Completion) and c.finish_reason == "stop"
    first, second = (lines[0] for lines in uploaded_lines(srv))
    assert first["custom_id"] == second["custom_id"] == c.request_hash == key_of(prompts(1)[0])
    assert (first["body"]["max_tokens"], second["body"]["max_tokens"]) == (64, 128)
    assert cache.get_request(c.request_hash)["sent_params"]["max_tokens"] == 128


# --------------------------------------------------------------------------- failures


def test_error_lines_become_teacher_errors_while_the_rest_succeed(srv: FakeOpenAI, tmp_path: Path):
    srv.script(["ok", "500", "400", "malformed", "empty_choices", "429", "ok"])
    cache = RequestCache(tmp_path / "cache.sqlite")
    batch = prompts(7)
    results, client = run_batch(make_cfg(srv, max_attempts=1), cache, tmp_path / "b", batch)

    reasons = [r.reason if isinstance(r, TeacherError) else "ok" for r in results]
    assert reasons == ["ok", "batch_error:http_500", "batch_error:http_400", "malformed_response",
                       "malformed_response", "batch_error:http_429", "ok"]
    assert "injected HTTP 500" in str(results[1]) and results[1].attempts == 1
    assert client.stats.failures == 5 and srv.batch_creations == 1
    # only the answers are cached: a re-run asks again for the failures only
    assert len(cache) == 2
    (b,) = srv.batches.values()
    assert b["request_counts"] == {"total": 7, "completed": 4, "failed": 3}  # malformed lines are "200"
    (state,) = read_batch_states(tmp_path / "b")  # counted as the provider does: the client judges bodies
    assert (state.status, state.succeeded, state.failed) == ("collected", 4, 3)


def test_retryable_lines_are_resubmitted_in_a_new_batch(srv: FakeOpenAI, tmp_path: Path):
    # batch 1: 500 (retryable), ok, 400 (not retryable), malformed (retryable); batch 2 answers the two
    srv.script(["500", "ok", "400", "malformed"])
    results, client = run_batch(make_cfg(srv, max_attempts=3), RequestCache(tmp_path / "c.sqlite"),
                                tmp_path / "b", prompts(4))
    assert [type(r).__name__ for r in results] == ["Completion", "Completion", "TeacherError", "Completion"]
    assert results[2].reason == "batch_error:http_400" and results[2].attempts == 1
    assert srv.batch_creations == 2
    assert [[ln["custom_id"] for ln in lines] for lines in uploaded_lines(srv)][1] == [
        key_of(prompts(4)[0]), key_of(prompts(4)[3])]
    assert client.stats.retries == 2 and client.stats.requests_sent == 6 and client.stats.failures == 1


def test_a_failed_batch_fails_its_requests_without_resubmitting(srv: FakeOpenAI, tmp_path: Path):
    srv.batch_fail = True
    results, client = run_batch(make_cfg(srv, max_attempts=3), RequestCache(tmp_path / "c.sqlite"),
                                tmp_path / "b", prompts(3))
    assert all(isinstance(r, TeacherError) and r.reason == "batch_failed" for r in results)
    assert "injected batch failure" in str(results[0])
    assert srv.batch_creations == 1 and client.stats.failures == 3
    (state,) = read_batch_states(tmp_path / "b")
    assert (state.status, state.batch_status) == ("collected", "failed")


def test_an_expired_batch_keeps_its_answers_and_fails_the_rest(srv: FakeOpenAI, tmp_path: Path):
    srv.batch_expire, srv.batch_expire_answered = True, 2
    cache = RequestCache(tmp_path / "c.sqlite")
    results, _ = run_batch(make_cfg(srv, max_attempts=1), cache, tmp_path / "b", prompts(4))
    assert [isinstance(r, Completion) for r in results] == [True, True, False, False]
    assert {r.reason for r in results[2:]} == {"batch_expired"}
    assert len(cache) == 2
    (b,) = srv.batches.values()
    assert b["status"] == "expired" and b["request_counts"] == {"total": 4, "completed": 2, "failed": 2}



def test_expired_lines_are_asked_again_in_the_next_batch(srv: FakeOpenAI, tmp_path: Path):
    srv.batch_expire, srv.batch_expire_answered = True, 1
    cfg = make_cfg(srv, max_attempts=2, batch_poll_interval_s=0.2)

    async def go():
        async with BatchTeacherClient(cfg, RequestCache(tmp_path / "c.sqlite"), state_dir=tmp_path / "b",
                                      flush_after_s=0.02) as client:
            answers = asyncio.ensure_future(ask_all(client, prompts(3)))
            await until(lambda: any(b["status"] == "expired" for b in list(srv.batches.values())), "the expiry")
            srv.batch_expire = False  # the provider has capacity again before the next batch finishes
            return await answers, client.stats

    results, stats = asyncio.run(go())
    assert all(isinstance(r, Completion) for r in results)
    assert srv.batch_creations == 2 and [len(lines) for lines in uploaded_lines(srv)] == [3, 2]
    assert stats.retries == 2 and stats.requests_sent == 5


def test_a_cancelled_batch_fails_its_requests(srv: FakeOpenAI, tmp_path: Path):
    srv.batch_polls_to_complete = 10**6

    async def go():
        async with BatchTeacherClient(make_cfg(srv, max_attempts=3), RequestCache(tmp_path / "c.sqlite"),
                                      state_dir=tmp_path / "b", flush_after_s=0.02) as client:
            pending = asyncio.ensure_future(ask_all(client, prompts(3)))
            await until(lambda: srv.batch_creations > 0, "the batch creation")
            (batch_id,) = srv.batches
            async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="other", max_retries=0) as sdk:
                cancelled = await sdk.batches.cancel(batch_id)
            assert cancelled.status == "cancelling"
            return await pending

    results = asyncio.run(go())
    assert all(isinstance(r, TeacherError) and r.reason == "batch_cancelled" for r in results)
    assert srv.batch_creations == 1


def test_api_errors_are_retried_and_a_lost_create_reply_is_adopted(srv: FakeOpenAI, tmp_path: Path):
    # the server creates the batch but the reply is lost: the retry must find it, not create another
    srv.script_batch_creates(["lost"])
    results, client = run_batch(make_cfg(srv, max_attempts=2), RequestCache(tmp_path / "c.sqlite"),
                                tmp_path / "b", prompts(3))
    assert all(isinstance(r, Completion) for r in results)
    assert (srv.file_uploads, srv.batch_creations) == (1, 1)
    assert any(r["method"] == "GET" and r["path"].startswith("/v1/batches?") for r in srv.requests)
    assert client.stats.retries == 1 and client.stats.requests_sent == 3


def test_a_provider_that_refuses_the_batch_abandons_it(srv: FakeOpenAI, tmp_path: Path):
    cfg = make_cfg(srv, batch_completion_window="1h")  # the fake, like OpenAI, only takes 24h
    results, _ = run_batch(cfg, RequestCache(tmp_path / "c.sqlite"), tmp_path / "b", prompts(2))
    assert all(isinstance(r, TeacherError) and r.reason == "http_400" for r in results)
    (state,) = read_batch_states(tmp_path / "b")
    assert state.status == "abandoned" and "completion_window" in (state.error or "")
    # nothing to resume: the next client with a valid window submits afresh
    results, _ = run_batch(make_cfg(srv), RequestCache(tmp_path / "c.sqlite"), tmp_path / "b", prompts(2))
    assert all(isinstance(r, Completion) for r in results) and srv.batch_creations == 1


def test_an_unwritable_state_dir_fails_the_requests_instead_of_hanging(srv: FakeOpenAI, tmp_path: Path):
    (tmp_path / "not-a-dir").write_text("x")

    async def go():
        async with BatchTeacherClient(make_cfg(srv), RequestCache(tmp_path / "c.sqlite"),
                                      state_dir=tmp_path / "not-a-dir" / "b", flush_after_s=0.02) as client:
            return await asyncio.wait_for(client.complete(prompts(1)[0], **PARAMS), timeout=10)

    with pytest.raises(OSError):
        asyncio.run(go())
    assert srv.file_uploads == 0


def test_batch_mode_needs_a_batch_capable_provider(tmp_path: Path):
    with pytest.raises(ConfigError, match="teacher.mode"):
        BatchTeacherClient(TeacherConfig(provider="local", mode="batch"), RequestCache(tmp_path / "c.sqlite"),
                           state_dir=tmp_path)
    with pytest.raises(ConfigError, match="teacher.mode"):
        parse_config({"teacher": {"provider": "openai", "mode": "bulk"}})
    with pytest.raises(ConfigError, match="teacher.batch_max_requests"):
        parse_config({"teacher": {"provider": "openai", "batch_max_requests": 0}})


# --------------------------------------------------------------------------- resume after a crash

CRASHING_CHILD = """
import asyncio, json, sys
from pathlib import Path
from dataforge.config import TeacherConfig
from dataforge.teacher import RequestCache
from dataforge.teacher.batch import BatchTeacherClient

cfg = TeacherConfig.model_validate_json(sys.argv[1])
batch = json.loads(sys.argv[4])

async def main():
    client = BatchTeacherClient(cfg, RequestCache(sys.argv[3]), state_dir=Path(sys.argv[2]), flush_after_s=0.02)
    await asyncio.gather(*(client.complete(m, temperature=0.7, max_tokens=64) for m in batch))

asyncio.run(main())
"""


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_resume_after_a_killed_process_collects_the_batch_without_resubmitting(srv: FakeOpenAI, tmp_path: Path):
    batch = prompts(4)
    state_dir, cache_path = tmp_path / "batches", tmp_path / "cache.sqlite"
    srv.batch_polls_to_complete = 10**6  # the batch stays in progress while the process lives
    cfg = make_cfg(srv, batch_poll_interval_s=0.05)
    child = subprocess.Popen([sys.executable, "-c", CRASHING_CHILD, cfg.model_dump_json(), str(state_dir),
                              str(cache_path), json.dumps(batch)], env=os.environ.copy())
    try:
        wait_for(lambda: any(s.status == "submitted" for s in read_batch_states(state_dir)), "the submitted state")
        wait_for(lambda: any(r["path"].startswith("/v1/batches/") for r in srv.requests), "the first poll")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    (state,) = read_batch_states(state_dir)
    assert state.status == "submitted" and state.batch_id in srv.batches

    srv.batch_polls_to_complete = 1  # the provider finishes the batch in the meantime
    results, client = run_batch(cfg, RequestCache(cache_path), state_dir, batch)
    assert [r.text for r in results] == [echo_responder({"messages": m}) for m in batch]
    assert (srv.file_uploads, srv.batch_creations, srv.chat_count) == (1, 1, 0)
    assert client.stats.requests_sent == 0 and client.stats.completion_tokens > 0
    (state,) = read_batch_states(state_dir)
    assert state.status == "collected" and state.succeeded == 4


def test_resume_of_a_dropped_client_through_generate_textbooks(srv: FakeOpenAI, tmp_path: Path):
    srv.batch_polls_to_complete = 10**6
    pcfg, sources, cells = textbook_plan(3)
    cfg = make_cfg(srv)
    state_dir, cache_path = tmp_path / "batches", tmp_path / "cache.sqlite"

    def generate(client: BatchTeacherClient, run_id: str):
        return generate_textbooks(client, cells, sources, pcfg.textbooks, run_id=run_id, seed=pcfg.seed)

    async def crash():
        client = BatchTeacherClient(cfg, RequestCache(cache_path), state_dir=state_dir, flush_after_s=0.02)
        gen = asyncio.ensure_future(generate(client, "r1"))
        await until(lambda: any(r["path"].startswith("/v1/batches/") for r in srv.requests), "the first poll")
        gen.cancel()  # the process "dies": no aclose, nothing collected

    asyncio.run(crash())
    assert read_batch_states(state_dir)[0].status == "submitted"

    srv.batch_polls_to_complete = 1

    async def resume():
        async with BatchTeacherClient(cfg, RequestCache(cache_path), state_dir=state_dir, flush_after_s=0.02) as c:
            return await generate(c, "r2")

    rows, failures = asyncio.run(resume())
    assert failures == [] and len(rows) == len(cells) == 3
    assert all(echoes_its_prompt(r) for r in rows)
    assert (srv.file_uploads, srv.batch_creations) == (1, 1)


def test_uploaded_but_never_created_batch_is_created_from_the_same_file(srv: FakeOpenAI, tmp_path: Path):
    srv.script_batch_creates(["500"])
    cache = RequestCache(tmp_path / "c.sqlite")
    results, _ = run_batch(make_cfg(srv, max_attempts=1), cache, tmp_path / "b", prompts(2))
    assert all(isinstance(r, TeacherError) and r.reason == "http_500" for r in results)
    (state,) = read_batch_states(tmp_path / "b")
    assert state.status == "uploaded" and state.batch_id is None

    results, _ = run_batch(make_cfg(srv, max_attempts=1), cache, tmp_path / "b", prompts(2))
    assert all(isinstance(r, Completion) for r in results)
    assert (srv.file_uploads, srv.batch_creations) == (1, 1)
    (b,) = srv.batches.values()
    assert b["input_file_id"] == state.input_file_id


def test_a_resumed_batch_is_only_polled_when_its_requests_are_asked_for(srv: FakeOpenAI, tmp_path: Path):
    srv.batch_polls_to_complete = 10**6
    cfg = make_cfg(srv)
    cache = RequestCache(tmp_path / "c.sqlite")

    async def submit_and_drop():
        client = BatchTeacherClient(cfg, cache, state_dir=tmp_path / "b", flush_after_s=0.02)
        task = asyncio.ensure_future(ask_all(client, prompts(2, tag="old")))
        await until(lambda: any(r["path"].startswith("/v1/batches/") for r in srv.requests), "the first poll")
        task.cancel()

    asyncio.run(submit_and_drop())
    time.sleep(0.2)  # a poll the dropped client had on the wire reaches the server
    polls_before = sum(1 for r in srv.requests if r["path"].startswith("/v1/batches/"))
    srv.batch_polls_to_complete = 1
    # other requests: the old batch is left alone (not polled, not collected)
    results, _ = run_batch(cfg, cache, tmp_path / "b", prompts(2, tag="other"))
    assert all(isinstance(r, Completion) for r in results)
    old_id = read_batch_states(tmp_path / "b")[0].batch_id
    assert sum(1 for r in srv.requests if r["path"] == f"/v1/batches/{old_id}") == polls_before
    assert [s.status for s in read_batch_states(tmp_path / "b")] == ["submitted", "collected"]


def test_answers_of_a_resumed_batch_nobody_asked_for_yet_are_cached(srv: FakeOpenAI, tmp_path: Path):
    srv.batch_polls_to_complete = 10**6
    cfg = make_cfg(srv)
    cache = RequestCache(tmp_path / "c.sqlite")
    batch = prompts(3)

    async def ask(client: BatchTeacherClient, messages: list[dict], sample_index: int) -> Completion:
        return await client.complete(messages, sample_index=sample_index, **PARAMS)

    async def submit_and_drop():
        client = BatchTeacherClient(cfg, cache, state_dir=tmp_path / "b", flush_after_s=0.02)
        task = asyncio.ensure_future(asyncio.gather(*(ask(client, m, i) for i, m in enumerate(batch))))
        await until(lambda: any(s.status == "submitted" for s in read_batch_states(tmp_path / "b")), "submitted")
        task.cancel()

    asyncio.run(submit_and_drop())
    srv.batch_polls_to_complete = 1

    async def resume_one_then_the_rest():
        async with BatchTeacherClient(cfg, cache, state_dir=tmp_path / "b", flush_after_s=0.02) as client:
            first = await ask(client, batch[0], 0)  # collects the whole batch
            rest = [await ask(client, m, i) for i, m in enumerate(batch) if i > 0]
            return [first, *rest], client.stats

    results, stats = asyncio.run(resume_one_then_the_rest())
    assert [r.cached for r in results] == [False, True, True] and stats.cache_hits == 2
    assert (srv.file_uploads, srv.batch_creations) == (1, 1)
    record = cache.get_request(results[2].request_hash)
    assert record["sample_index"] == 2 and record["messages"] == batch[2] and record["params"] == PARAMS


def test_two_clients_in_two_threads_share_a_state_dir(srv: FakeOpenAI, tmp_path: Path):
    """The textbooks and CoT stages run at the same time, each with its own client."""
    cfg = make_cfg(srv)
    outcomes: dict[str, list] = {}

    def stage(tag: str) -> None:
        results, _ = run_batch(cfg, RequestCache(tmp_path / "c.sqlite"), tmp_path / "b", prompts(3, tag=tag))
        outcomes[tag] = results

    threads = [threading.Thread(target=stage, args=(tag,)) for tag in ("textbooks", "cot")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(isinstance(r, Completion) for rs in outcomes.values() for r in rs) and len(outcomes) == 2
    assert srv.batch_creations == 2
    assert sorted(s.status for s in read_batch_states(tmp_path / "b")) == ["collected", "collected"]


# --------------------------------------------------------------------------- the generation code on top


def test_generate_textbooks_through_the_batch_client(srv: FakeOpenAI, tmp_path: Path):
    pcfg, sources, cells = textbook_plan(4)

    async def go():
        async with BatchTeacherClient(make_cfg(srv), RequestCache(tmp_path / "c.sqlite"), state_dir=tmp_path / "b",
                                      flush_after_s=0.02) as client:
            result = await generate_textbooks(client, cells, sources, pcfg.textbooks, run_id="r", seed=pcfg.seed)
            return result, client.stats

    (rows, failures), stats = asyncio.run(go())
    assert failures == [] and len(rows) == 4
    assert sorted(r["topic"] for r in rows) == sorted(c.topic for c in cells)
    assert all(echoes_its_prompt(r) and r["request_hash"] for r in rows)
    assert (srv.batch_creations, stats.requests_sent) == (1, 4)


def test_stage_runner_in_batch_mode_then_a_rerun_sends_nothing(srv: FakeOpenAI, tmp_path: Path):
    cfg = parse_config({
        "name": "b", "data_root": str(tmp_path / "data"),
        "teacher": {"provider": "openai", "base_url": srv.base_url, "model": "fake-model", "api_key_env": KEY_ENV,
                    "mode": "batch", "batch_poll_interval_s": 0.01, "max_attempts": 2},
        # the fake batch teacher echoes its prompt: a reply the gates drop as meta-talk
        "textbooks": {"topics": ["fractions", "magnets", "rivers"], "max_samples": 3, "gates": {"enabled": False}},
    })
    run = runner.open_run(cfg, None)
    result = runner.run_textbooks(run, cfg)
    assert result.rows_kept == 3 and result.rows_dropped == 0
    assert result.teacher is not None and result.teacher["requests_sent"] == 3
    assert (srv.file_uploads, srv.batch_creations, srv.chat_count) == (1, 1, 0)
    (state,) = read_batch_states(cfg.teacher_cache_dir() / "batches")
    assert state.status == "collected"

    requests_before = srv.count
    run2 = runner.open_run(cfg, None)
    result2 = runner.run_textbooks(run2, cfg)
    assert result2.rows_kept == 3 and result2.teacher is not None
    assert result2.teacher["cache_hits"] == 3 and result2.teacher["requests_sent"] == 0
    assert srv.count == requests_before
    assert SENTINEL.encode() not in all_bytes_under(tmp_path / "data")


# --------------------------------------------------------------------------- the fake server itself


def test_fake_batch_server_validates_input_and_serves_files(srv: FakeOpenAI):
    client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": []}}
    data = (json.dumps(line) + "\n" + json.dumps(line) + "\n").encode()  # a duplicate custom_id
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert client.files.retrieve(f.id).bytes == len(data)
    assert client.files.content(f.id).read() == data
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert b.status == "validating"
    b = client.batches.retrieve(b.id)
    assert b.status == "failed" and b.errors is not None
    assert b.errors.data[0].line == 2 and "duplicate" in (b.errors.data[0].message or "")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-missing")
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(b.id)  # already terminal
