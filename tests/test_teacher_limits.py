"""The teacher client's budget features against the fake server: rate limits and the global
pause on 429, length and schema retries, structured output, several samples per prompt (``n``),
token and cost accounting, the progress status line, ``dataforge teacher show``, and chaos."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pydantic
import pytest
from typer.testing import CliRunner

from dataforge.config import ModelPrice, TeacherConfig
from dataforge.progress import progress_bar
from dataforge.teacher import (
    Completion,
    RateLimiter,
    RequestCache,
    TeacherClient,
    TeacherError,
    TokenBucket,
    estimate_tokens,
    request_key,
)
from fake_openai import FakeOpenAI, echo_responder
from teacher_fixtures import KEY_ENV, VirtualTime, fake_teacher_cfg

SENTINEL = "sk-test-LIMITS-SENTINEL-42"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime."}]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SENTINEL)
    return SENTINEL


@pytest.fixture
def srv():
    with FakeOpenAI() as server:
        yield server


make_cfg = fake_teacher_cfg


def run(coro_fn: Callable, cfg: TeacherConfig, cache: RequestCache | None = None, vt: VirtualTime | None = None):
    """Run ``coro_fn(client)`` on a fresh client (virtual time by default); returns (result, stats)."""
    vt = vt or VirtualTime()

    async def go():
        async with TeacherClient(cfg, cache, sleep=vt.sleep, clock=vt.clock) as client:
            return await coro_fn(client), client.stats

    return asyncio.run(go())


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def chat_bodies(srv: FakeOpenAI) -> list[dict]:
    return [r["json"] for r in srv.requests if r["path"].endswith("/chat/completions")]


# --------------------------------------------------------------------------- token buckets


class ManualClock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_reserves_in_order_and_refills():
    clock = ManualClock()
    bucket = TokenBucket(60, clock)  # capacity 60, one a second
    assert [bucket.reserve(1) for _ in range(60)] == [0.0] * 60
    # the bucket is empty: each further reservation waits one more second than the last
    assert bucket.reserve(1) == pytest.approx(1.0)
    assert bucket.reserve(1) == pytest.approx(2.0)
    assert bucket.level == pytest.approx(-2.0)
    clock.t += 5.0
    assert bucket.level == pytest.approx(3.0)
    clock.t += 3600.0
    assert bucket.level == 60.0  # never above capacity
    # more than the capacity: waits for a full bucket, not forever
    bucket.reserve(30)
    assert bucket.reserve(500) == pytest.approx(30.0)
    bucket.credit(70)
    assert bucket.level == pytest.approx(40.0)


def test_rate_limiter_waits_for_buckets_and_pauses():
    vt = VirtualTime(start=0.0)
    limiter = RateLimiter(requests_per_minute=6, tokens_per_minute=600, clock=vt.clock, sleep=vt.sleep)

    async def go() -> list[float]:
        sent = []
        for _ in range(8):
            await limiter.acquire(10)
            sent.append(vt.now)
        return sent

    # six requests at once (the bucket holds a minute's worth), then one every 10 s
    assert asyncio.run(go()) == [0.0] * 6 + [10.0, 20.0]

    vt2 = VirtualTime(start=0.0)
    limiter = RateLimiter(tokens_per_minute=600, clock=vt2.clock, sleep=vt2.sleep)  # 10 tokens a second

    async def tokens() -> None:
        assert await limiter.acquire(500) == 500
        limiter.reconcile(500, 100)  # used less than reserved: 400 come back
        assert limiter.tokens.level == pytest.approx(500)
        await limiter.acquire(500)
        assert vt2.delays == []
        await limiter.acquire(200)  # 200 owed at 10/s
        assert vt2.delays == [pytest.approx(20.0)]
        limiter.pause(7.5)
        await limiter.acquire(0)
        assert vt2.delays[-1] == pytest.approx(7.5) and limiter.pauses == 1

    asyncio.run(tokens())


def test_pause_set_while_waiting_extends_the_wait():
    vt = VirtualTime(start=0.0)
    limiter = RateLimiter(clock=vt.clock, sleep=vt.sleep)
    limiter.pause(2.0)

    async def go() -> None:
        first = asyncio.ensure_future(limiter.acquire(1))
        await asyncio.sleep(0)  # `first` computed its target (2.0) and sleeps
        limiter.pause(5.0)  # a 429 meanwhile: the whole client holds until 7.0
        await first

    asyncio.run(go())
    assert sum(vt.delays) == pytest.approx(7.0)


def test_estimate_tokens():
    msgs = [{"role": "system", "content": "x" * 40}, {"role": "user", "content": [{"type": "text", "text": "y" * 20}]}]
    assert estimate_tokens(msgs, 100) == 15 + 100
    assert estimate_tokens(msgs, 100, n=3) == 15 + 300


# --------------------------------------------------------------------------- rate limits in the client


def test_client_requests_per_minute_timing(srv: FakeOpenAI):
    vt = VirtualTime()
    sent_at: list[float] = []

    def responder(body: dict) -> str:
        sent_at.append(vt.now)
        return echo_responder(body)

    srv.responder = responder
    cfg = make_cfg(srv, requests_per_minute=6)

    async def go(client: TeacherClient):
        return [await client.complete(user(f"q{i}"), temperature=0, max_tokens=8) for i in range(8)]

    results, stats = run(go, cfg, vt=vt)
    assert len(results) == 8 and stats.requests_sent == 8
    assert sent_at == [1000.0] * 6 + [1010.0, 1020.0]
    assert vt.delays == [pytest.approx(10.0)] * 2


def test_client_reserves_estimated_tokens_and_reconciles(srv: FakeOpenAI):
    vt = VirtualTime()
    cfg = make_cfg(srv, tokens_per_minute=600, max_concurrency=2)

    async def sequential(client: TeacherClient):
        # each reserves ~100 tokens but uses ~20: reconciled, ten fit in a 600-token minute
        out = [await client.complete(user(f"q{i}"), temperature=0, max_tokens=100) for i in range(10)]
        return out, client.limiter.tokens.level

    (results, level), stats = run(sequential, cfg, vt=vt)
    assert len(results) == 10 and vt.delays == []
    assert level == pytest.approx(600 - stats.prompt_tokens - stats.completion_tokens)

    vt = VirtualTime()

    async def concurrent(client: TeacherClient):
        # two at once, 400 + 400 estimated: the second waits for the first's reservation
        return await asyncio.gather(*(client.complete(user(f"c{i}"), temperature=0, max_tokens=400)
                                      for i in range(2)))

    run(concurrent, cfg, vt=vt)
    est = estimate_tokens(user("c0"), 400)
    assert vt.delays == [pytest.approx((2 * est - 600) / 10.0)]


def test_429_pauses_every_request_of_the_client(srv: FakeOpenAI):
    """After a 429 with Retry-After, requests started meanwhile by other callers wait too."""
    received: list[tuple[str, float]] = []
    lock = threading.Lock()

    def responder(body: dict) -> str:
        with lock:
            received.append((body["messages"][-1]["content"], time.monotonic()))
        return echo_responder(body)

    srv.responder = responder
    srv.script(["429:0.4"])
    cfg = make_cfg(srv, max_concurrency=8)

    async def go():
        async with TeacherClient(cfg) as client:
            first = asyncio.ensure_future(client.complete(user("first"), temperature=0, max_tokens=8))
            deadline = time.monotonic() + 3.0
            while client.limiter.pauses == 0:  # the 429 came back and paused the client
                assert time.monotonic() < deadline, "the 429 did not pause the client"
                await asyncio.sleep(0.005)
            paused_until = client.limiter.paused_until
            others = await asyncio.gather(*(client.complete(user(f"other{i}"), temperature=0, max_tokens=8)
                                            for i in range(3)))
            return paused_until, await first, others, client.stats

    paused_until, first, others, stats = asyncio.run(go())
    assert stats.retries == 1 and stats.requests_sent == 5
    assert first.text.endswith("first") and [o.text[-6:] for o in others] == ["other0", "other1", "other2"]
    assert sorted(q for q, _ in received) == ["first", "other0", "other1", "other2"]
    # nobody reached the server before the pause was over (without the pause the others
    # would have been answered ~0.4 s earlier)
    assert all(t >= paused_until - 0.01 for _, t in received), (received, paused_until)


# --------------------------------------------------------------------------- length retries


def test_length_retry_grows_max_tokens_and_caches_under_the_original_key(srv: FakeOpenAI, tmp_path: Path):
    srv.script(["length", "length", "ok"])
    cfg = make_cfg(srv, retry_on_length=True, prices={"fake-model": ModelPrice(input_per_mtok=1, output_per_mtok=2)})
    with RequestCache(tmp_path / "c.sqlite") as cache:
        c, stats = run(lambda cl: cl.complete(MESSAGES, temperature=0.5, max_tokens=64, seed=3), cfg, cache)
        assert [b["max_tokens"] for b in chat_bodies(srv)] == [64, 128, 256]
        key = request_key("fake-model", MESSAGES, {"temperature": 0.5, "max_tokens": 64, "seed": 3}, 0)
        assert c.request_hash == key and c.finish_reason == "stop" and not c.cached
        assert stats.retries == 2 and stats.requests_sent == 3 and stats.failures == 0
        # all three answers were billed; the sample's cost includes its two truncated attempts
        per_answer = (6 * 1 + c.completion_tokens * 2) / 1e6
        assert stats.prompt_tokens == 3 * 6 and stats.completion_tokens == 3 * c.completion_tokens
        assert c.cost_usd == pytest.approx(3 * per_answer) and stats.cost_usd == pytest.approx(c.cost_usd)
        entry = cache.get_entry(key)
        assert entry is not None and len(cache) == 1
        assert entry.request["params"]["max_tokens"] == 64 and entry.request["sent_params"]["max_tokens"] == 256
        assert entry.request["attempts"] == 3

        again, stats2 = run(lambda cl: cl.complete(MESSAGES, temperature=0.5, max_tokens=64, seed=3), cfg, cache)
    assert again.cached and again.text == c.text and srv.chat_count == 3
    assert stats2.cost_usd == 0 and again.cost_usd == pytest.approx(c.cost_usd)


def test_length_at_the_cap_is_a_teacher_error(srv: FakeOpenAI, tmp_path: Path):
    srv.default_action = "length"
    cfg = make_cfg(srv, retry_on_length=True, max_tokens_cap=100, max_attempts=6)

    async def go(client: TeacherClient):
        with pytest.raises(TeacherError) as info:
            await client.complete(MESSAGES, temperature=0.5, max_tokens=64)
        return info.value

    with RequestCache(tmp_path / "c.sqlite") as cache:
        err, stats = run(go, cfg, cache)
        assert len(cache) == 0
    assert err.reason == "length" and err.attempts == 2 and "max_tokens=100" in str(err)
    assert [b["max_tokens"] for b in chat_bodies(srv)] == [64, 100]
    assert stats.failures == 1 and stats.completion_tokens > 0  # the truncated answers were billed


def test_length_retry_respects_max_attempts(srv: FakeOpenAI):
    srv.default_action = "length"
    cfg = make_cfg(srv, retry_on_length=True, length_retry_factor=1.5, max_attempts=3)

    async def go(client: TeacherClient):
        with pytest.raises(TeacherError) as info:
            await client.complete(MESSAGES, temperature=0.5, max_tokens=100)
        return info.value

    err, _ = run(go, cfg)
    assert err.reason == "length" and err.attempts == 3
    assert [b["max_tokens"] for b in chat_bodies(srv)] == [100, 150, 225]


# --------------------------------------------------------------------------- structured output


class Answer(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    answer: int
    reasoning: str


class ScriptedReplies:
    """A responder that answers from a list, then repeats the last reply."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = deque(replies)

    def __call__(self, body: dict) -> str:
        return self.replies.popleft() if len(self.replies) > 1 else self.replies[0]


def test_structured_output_parses_and_caches(srv: FakeOpenAI, tmp_path: Path):
    srv.responder = ScriptedReplies(['{"answer": 7, "reasoning": "7 is prime"}'])
    cfg = make_cfg(srv)
    with RequestCache(tmp_path / "c.sqlite") as cache:
        c, _ = run(lambda cl: cl.complete_structured(MESSAGES, Answer, temperature=0, max_tokens=64), cfg, cache)
        again, _ = run(lambda cl: cl.complete_structured(MESSAGES, Answer, temperature=0, max_tokens=64), cfg, cache)
    assert c.parsed == Answer(answer=7, reasoning="7 is prime") and not c.cached
    assert again.cached and again.parsed == c.parsed and srv.chat_count == 1
    (body,) = chat_bodies(srv)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": Answer.model_json_schema(), "strict": True},
    }
    assert c.request_hash == request_key("fake-model", MESSAGES, {
        "temperature": 0, "max_tokens": 64, "response_format": body["response_format"]}, 0)


def test_schema_invalid_then_valid(srv: FakeOpenAI, tmp_path: Path):
    srv.responder = ScriptedReplies([
        "Sure! The answer is 7.",  # not JSON
        '{"answer": "seven", "reasoning": "x"}',  # wrong type
        '```json\n{"answer": 7, "reasoning": "fenced"}\n```',  # valid, in a code fence
    ])
    cfg = make_cfg(srv)
    with RequestCache(tmp_path / "c.sqlite") as cache:
        c, stats = run(lambda cl: cl.complete_structured(MESSAGES, Answer, temperature=0.7, max_tokens=64), cfg, cache)
        entry = cache.get_entry(c.request_hash)
    assert c.parsed == Answer(answer=7, reasoning="fenced")
    assert srv.chat_count == 3 and stats.retries == 2 and stats.failures == 0
    assert entry is not None and entry.request["attempts"] == 3


def test_schema_never_valid_is_a_teacher_error(srv: FakeOpenAI, tmp_path: Path):
    srv.responder = ScriptedReplies(['{"answer": 7}'])  # reasoning missing, every time
    cfg = make_cfg(srv, max_attempts=3)

    async def go(client: TeacherClient):
        with pytest.raises(TeacherError) as info:
            await client.complete_structured(MESSAGES, Answer, temperature=0.7, max_tokens=64)
        return info.value

    with RequestCache(tmp_path / "c.sqlite") as cache:
        err, stats = run(go, cfg, cache)
        assert len(cache) == 0
    assert err.reason == "schema_invalid" and err.attempts == 3 and "reasoning" in str(err)
    assert stats.failures == 1 and srv.chat_count == 3


def test_endpoint_refusing_json_schema_gets_json_object(srv: FakeOpenAI):
    """llama-cpp-python's server answers 500 to response_format json_schema; the client asks
    again with {"type": "json_object", "schema": ...} and keeps that form."""
    srv.refuses_json_schema = True
    srv.responder = ScriptedReplies(['{"answer": 2, "reasoning": "even prime"}'])
    cfg = make_cfg(srv)

    async def go(client: TeacherClient):
        a = await client.complete_structured(MESSAGES, Answer, temperature=0, max_tokens=64)
        b = await client.complete_structured(user("again"), Answer, temperature=0, max_tokens=64)
        return a, b, client.structured_wire

    (a, b, wire), stats = run(go, cfg)
    assert a.parsed == b.parsed == Answer(answer=2, reasoning="even prime")
    types = [body["response_format"]["type"] for body in chat_bodies(srv)]
    assert types == ["json_schema", "json_object", "json_object"] and wire == "json_object"
    assert chat_bodies(srv)[1]["response_format"]["schema"] == Answer.model_json_schema()
    assert stats.failures == 0

    # provider local (the embedded llama.cpp server) starts with json_object
    srv.requests.clear()
    local = TeacherConfig(provider="local", model="fake-model")

    async def local_go():
        async with TeacherClient(local, base_url=srv.base_url) as client:
            return await client.complete_structured(MESSAGES, Answer, temperature=0, max_tokens=64)

    c = asyncio.run(local_go())
    assert c.parsed is not None and [b["response_format"]["type"] for b in chat_bodies(srv)] == ["json_object"]
    # the cache key is the logical (json_schema) request, whatever the wire form
    assert c.request_hash == a.request_hash


# --------------------------------------------------------------------------- several samples per prompt


def test_complete_n_uses_n_when_honoured_and_shares_the_cache(srv: FakeOpenAI, tmp_path: Path):
    cfg = make_cfg(srv, prices={"fake-model": ModelPrice(input_per_mtok=3, output_per_mtok=5)})

    async def go(client: TeacherClient):
        samples = await client.complete_n(MESSAGES, 4, temperature=0.9, max_tokens=32, seed=10)
        single = await client.complete(MESSAGES, temperature=0.9, max_tokens=32, seed=12, sample_index=2)
        return samples, single, client.n_honoured

    with RequestCache(tmp_path / "c.sqlite") as cache:
        (samples, single, honoured), stats = run(go, cfg, cache)
        assert len(cache) == 4
    (body,) = chat_bodies(srv)
    assert body["n"] == 4 and body["seed"] == 10 and honoured is True
    assert [s.sample_index for s in samples] == [0, 1, 2, 3]
    assert [s.text for s in samples] == [echo_responder({"messages": MESSAGES, "seed": 10 + i}) for i in range(4)]
    assert [s.request_hash for s in samples] == [
        request_key("fake-model", MESSAGES, {"temperature": 0.9, "max_tokens": 32, "seed": 10 + i}, i) for i in range(4)]
    # the per-sample path hits the sample the n request cached
    assert single.cached and single.text == samples[2].text and single.request_hash == samples[2].request_hash
    # usage is split among the samples; their costs add up to what the request cost
    assert sum(s.prompt_tokens for s in samples) == stats.prompt_tokens == 6
    assert sum(s.completion_tokens for s in samples) == stats.completion_tokens
    assert sum(s.cost_usd for s in samples) == pytest.approx(stats.cost_usd)
    assert stats.requests_sent == 1 and stats.cache_hits == 1


def test_complete_n_falls_back_when_n_is_not_honoured(tmp_path: Path):
    with FakeOpenAI(honours_n=False) as srv:
        cfg = make_cfg(srv)

        async def go(client: TeacherClient):
            first = await client.complete_n(MESSAGES, 3, temperature=0.9, max_tokens=32, seed=5)
            second = await client.complete_n(user("another"), 2, temperature=0.9, max_tokens=32, seed=5)
            return first, second, client.n_honoured

        (first, second, honoured), stats = run(go, cfg)
        bodies = chat_bodies(srv)
    assert honoured is False
    # first prompt: one request with n=3 answered with one choice, then the two missing samples
    # one by one with their own seeds; second prompt: no n at all
    sent = [(b.get("n"), b["seed"]) for b in bodies]
    assert sent[0] == (3, 5) and sorted(sent[1:3]) == [(None, 6), (None, 7)] and sorted(sent[3:]) == [(None, 5), (None, 6)]
    assert [s.text for s in first] == [echo_responder({"messages": MESSAGES, "seed": 5 + i}) for i in range(3)]
    assert [s.sample_index for s in second] == [0, 1] and stats.requests_sent == 5


def test_complete_n_mixed_with_the_cache(srv: FakeOpenAI, tmp_path: Path):
    cfg = make_cfg(srv)

    async def go(client: TeacherClient):
        early = [await client.complete(MESSAGES, temperature=0.9, max_tokens=32, seed=20 + i, sample_index=i)
                 for i in (1, 3)]
        samples = await client.complete_n(MESSAGES, 4, temperature=0.9, max_tokens=32, seed=20)
        return early, samples

    with RequestCache(tmp_path / "c.sqlite") as cache:
        (early, samples), stats = run(go, cfg, cache)
        assert len(cache) == 4
        # everything cached now: a third call sends nothing
        again, stats2 = run(lambda cl: cl.complete_n(MESSAGES, 4, temperature=0.9, max_tokens=32, seed=20), cfg, cache)
    bodies = chat_bodies(srv)
    assert len(bodies) == 3 and bodies[2]["n"] == 2 and bodies[2]["seed"] == 20
    assert [s.cached for s in samples] == [False, True, False, True]
    assert samples[1].text == early[0].text and samples[3].text == early[1].text
    assert stats.cache_hits == 2
    assert [s.text for s in again] == [s.text for s in samples] and stats2.requests_sent == 0 and stats2.cache_hits == 4


def test_complete_n_truncated_choices_are_asked_again_alone(srv: FakeOpenAI):
    srv.script(["length"])  # the n request: every choice cut off
    cfg = make_cfg(srv, retry_on_length=True)
    samples, stats = run(lambda cl: cl.complete_n(MESSAGES, 2, temperature=0.9, max_tokens=32, seed=1), cfg)
    assert stats.retries == 0 and stats.requests_sent == 3
    bodies = chat_bodies(srv)
    assert [(b.get("n"), b["max_tokens"]) for b in bodies] == [(2, 32), (None, 64), (None, 64)]
    assert all(s.finish_reason == "stop" for s in samples)


def test_complete_n_failures(srv: FakeOpenAI):
    srv.default_action = "500"
    cfg = make_cfg(srv, max_attempts=2)

    async def go(client: TeacherClient):
        settled = await client.complete_n(MESSAGES, 3, temperature=0.9, max_tokens=32, seed=1, return_exceptions=True)
        with pytest.raises(TeacherError):
            await client.complete_n(user("x"), 2, temperature=0.9, max_tokens=32, seed=1)
        return settled

    settled, stats = run(go, cfg)
    assert [type(s) for s in settled] == [TeacherError] * 3 and {s.reason for s in settled} == {"http_500"}
    assert stats.failures == 3 + 2 and srv.chat_count == 2 + 2  # one n request per call, two attempts each


# --------------------------------------------------------------------------- cost accounting


def test_cost_accounting_with_a_price_table(srv: FakeOpenAI, tmp_path: Path):
    cfg = make_cfg(srv, prices={"fake-model": ModelPrice(input_per_mtok=2.5, output_per_mtok=10.0)})

    async def go(client: TeacherClient):
        return [await client.complete(user(f"question {i}"), temperature=0, max_tokens=16) for i in range(3)]

    with RequestCache(tmp_path / "c.sqlite") as cache:
        fresh, stats = run(go, cfg, cache)
        cached, stats2 = run(go, cfg, cache)
    for c in fresh:
        assert c.cost_usd == pytest.approx((c.prompt_tokens * 2.5 + c.completion_tokens * 10.0) / 1e6)
    assert stats.cost_usd == pytest.approx(sum(c.cost_usd for c in fresh)) and stats.cost_usd > 0
    assert stats.as_dict()["cost_usd"] == round(stats.cost_usd, 8)
    # cache hits cost the run nothing, but each answer keeps what it cost when produced
    assert stats2.cost_usd == 0 and stats2.prompt_tokens == 0 and stats2.cache_hits == 3
    assert [c.cost_usd for c in cached] == [c.cost_usd for c in fresh]


def test_price_lookup_and_batch_discount():
    cfg = TeacherConfig(provider="openai", model="gpt-4o-mini")
    # default table: OpenAI list prices; a dated model name matches its family
    assert cfg.price_for("gpt-4o-mini-2024-07-18") == cfg.prices["gpt-4o-mini"]
    assert cfg.price_for("gpt-4o-2024-08-06") == cfg.prices["gpt-4o"]
    assert cfg.cost_usd(1_000_000, 1_000_000) == pytest.approx(0.15 + 0.60)
    assert cfg.cost_usd(1_000_000, 1_000_000, batch=True) == pytest.approx((0.15 + 0.60) * 0.5)
    local = TeacherConfig()
    assert local.price_for() is None and local.cost_usd(10**6, 10**6) == 0.0
    with pytest.raises(pydantic.ValidationError, match="prices.m.input_per_mtok"):
        TeacherConfig(prices={"m": {"input_per_mtok": -1, "output_per_mtok": 1}})
    with pytest.raises(pydantic.ValidationError, match="length_retry_factor"):
        TeacherConfig(length_retry_factor=1.0)


# --------------------------------------------------------------------------- progress status


def test_progress_status_is_shown(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    monkeypatch.setenv("DATAFORGE_PROGRESS", "1")
    spent = {"tok": 0}
    with progress_bar("cot", 3, status=lambda: f"{spent['tok']} tok") as advance:
        for _ in range(3):
            spent["tok"] += 10
            advance()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["cot: 1/3  10 tok", "cot: 2/3  20 tok", "cot: 3/3  30 tok"]


def test_progress_status_column_renders():
    import io

    from rich.console import Console
    from rich.progress import BarColumn, Progress

    from dataforge.progress import StatusColumn

    out = io.StringIO()
    with Progress(BarColumn(), StatusColumn(lambda: "1,234 tok · $0.0100"),
                  console=Console(file=out, width=100)) as p:
        p.advance(p.add_task("x", total=1))
    assert "1,234 tok · $0.0100" in out.getvalue()


# --------------------------------------------------------------------------- teacher show


def test_teacher_show(srv: FakeOpenAI, tmp_path: Path):
    from dataforge.cli import app

    root = tmp_path / "data"
    runner = CliRunner()
    missing = runner.invoke(app, ["teacher", "show", "0" * 64, "--data-root", str(root)])
    assert missing.exit_code == 2 and "no teacher cache" in missing.output

    with RequestCache(root / "cache" / "teacher.sqlite") as cache:
        c, _ = run(lambda cl: cl.complete(MESSAGES, temperature=0.2, max_tokens=16, seed=9), make_cfg(srv), cache)

    for given in (c.request_hash, c.request_hash[:12].upper()):
        r = runner.invoke(app, ["teacher", "show", given, "--data-root", str(root)])
        assert r.exit_code == 0, r.output
        shown = json.loads(r.stdout)
        assert shown["request_hash"] == c.request_hash
        assert shown["request"]["messages"] == MESSAGES and shown["request"]["params"]["seed"] == 9
        assert shown["response"]["choices"][0]["message"]["content"] == c.text
        assert SENTINEL not in r.stdout

    absent = runner.invoke(app, ["teacher", "show", "f" * 64, "--data-root", str(root)])
    assert absent.exit_code == 2 and "no cached request with hash" in absent.output
    bad = runner.invoke(app, ["teacher", "show", "xyz", "--data-root", str(root)])
    assert bad.exit_code == 2 and "not a request hash" in bad.output


# --------------------------------------------------------------------------- chaos


REASONS = {"http_429", "http_500", "timeout", "malformed_response", "length"}


def test_chaos_every_request_settles_and_nothing_is_paid_twice(tmp_path: Path, caplog):
    caplog.set_level(logging.ERROR, logger="dataforge.teacher")
    rng = random.Random(7)
    faults = ["429:0", "500", "timeout", "malformed", "empty_choices", "length"]
    script: list[str] = []
    for _ in range(20):  # blocks of 20 replies: each fault once, 14 ok (30% faults), shuffled
        block = faults + ["ok"] * 14
        rng.shuffle(block)
        script += block
    questions = [user(f"chaos question {i}") for i in range(40)]
    # one request in flight at a time: which request meets which fault is then fixed by the
    # script, so the outcome is the same on every run (concurrency is covered above)
    settings = dict(max_attempts=2, timeout_s=0.25, retry_on_length=True, max_concurrency=1)

    async def ask_all(client: TeacherClient):
        return await asyncio.gather(*(client.complete(q, temperature=0.7, max_tokens=32) for q in questions),
                                    return_exceptions=True)

    with RequestCache(tmp_path / "c.sqlite") as cache:
        with FakeOpenAI(timeout_sleep=0.6) as srv:
            srv.script(script)
            first, stats = run(ask_all, make_cfg(srv, **settings), cache)
            taken = srv.actions_taken
        answered = [i for i, r in enumerate(first) if isinstance(r, Completion)]
        failed = [i for i, r in enumerate(first) if not isinstance(r, Completion)]
        assert all(isinstance(first[i], TeacherError) and first[i].reason in REASONS for i in failed), first
        assert answered and failed, "the seed should give both outcomes"
        assert stats.failures == len(failed) and len(cache) == len(answered)
        assert all(taken.count(f) > 0 for f in faults), taken  # every kind of fault was met
        assert stats.requests_sent == len(taken)

        # re-run against a healthy server: the answered requests come from the cache, only the
        # failed ones reach the server, once each
        with FakeOpenAI() as healthy:
            second, stats2 = run(ask_all, make_cfg(healthy, **settings), cache)
            resent = [b["messages"][-1]["content"] for b in chat_bodies(healthy)]
    assert sorted(resent) == sorted(questions[i][0]["content"] for i in failed)
    assert all(isinstance(r, Completion) for r in second)
    assert [second[i].cached for i in answered] == [True] * len(answered)
    assert [second[i].text for i in answered] == [first[i].text for i in answered]
    assert stats2.cache_hits == len(answered) and stats2.requests_sent == len(failed)
