"""Teacher client against a real HTTP server (tests/fake_openai.py) with injected faults."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import time
from pathlib import Path

import openai
import pytest

from dataforge.config import TeacherConfig
from dataforge.teacher import (
    Completion,
    RequestCache,
    SecretRedactingFilter,
    TeacherClient,
    TeacherError,
    TeacherStats,
    parse_retry_after,
    request_key,
)
from fake_openai import FakeOpenAI, echo_responder
from teacher_fixtures import KEY_ENV, VirtualTime, fake_teacher_cfg

SENTINEL = "sk-test-SENTINEL-123"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime."}]


RecordingSleep = VirtualTime


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SENTINEL)
    return SENTINEL


@pytest.fixture
def srv():
    with FakeOpenAI() as server:
        yield server


make_cfg = fake_teacher_cfg


def complete_once(cfg: TeacherConfig, cache: RequestCache | None = None, sleep=None, **kwargs):
    """Run one complete() in a fresh loop; returns (completion or TeacherError, stats)."""
    kwargs.setdefault("temperature", 0.7)
    kwargs.setdefault("max_tokens", 64)

    sleep = sleep or RecordingSleep()
    clock = sleep.clock if isinstance(sleep, RecordingSleep) else time.monotonic

    async def go():
        async with TeacherClient(cfg, cache, sleep=sleep, clock=clock) as client:
            try:
                result = await client.complete(MESSAGES, **kwargs)
            except TeacherError as err:
                result = err
            return result, client.stats

    return asyncio.run(go())


# --------------------------------------------------------------------------- request_key


def test_request_key_is_stable_and_order_independent():
    params = {"temperature": 0.7, "max_tokens": 64, "seed": 3}
    key = request_key("m", MESSAGES, params, 2)
    canonical = json.dumps(
        {"model": "m", "messages": MESSAGES, "params": params, "sample_index": 2},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    assert key == hashlib.sha256(canonical.encode()).hexdigest()
    assert key == request_key("m", MESSAGES, {"seed": 3, "max_tokens": 64, "temperature": 0.7}, 2)
    assert key == request_key("m", MESSAGES, {**params, "top_p": None, "response_format": None}, 2)
    reordered_msgs = [{"content": m["content"], "role": m["role"]} for m in MESSAGES]
    assert key == request_key("m", reordered_msgs, params, 2)
    # anything that changes the answer changes the key
    assert key != request_key("m", MESSAGES, params, 3)
    assert key != request_key("m2", MESSAGES, params, 2)
    assert key != request_key("m", MESSAGES, {**params, "seed": 4}, 2)
    assert key != request_key("m", MESSAGES[1:], params, 2)
    assert key != request_key("m", [{"role": "user", "content": "Näme a prime."}], params, 2)


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after({"retry-after": date}) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


# --------------------------------------------------------------------------- success and retries


def test_success(srv: FakeOpenAI):
    result, stats = complete_once(make_cfg(srv), seed=7)
    assert isinstance(result, Completion)
    expected = echo_responder({"messages": MESSAGES, "seed": 7})
    assert result.text == expected
    assert result.finish_reason == "stop"
    assert result.cached is False and result.sample_index == 0
    assert result.model == "fake-model"
    assert result.prompt_tokens == 6 and result.completion_tokens == len(expected.split())
    assert result.request_hash == request_key("fake-model", MESSAGES, {"temperature": 0.7, "max_tokens": 64, "seed": 7}, 0)
    assert stats.as_dict() == {
        "requests_sent": 1, "cache_hits": 0, "retries": 0, "failures": 0,
        "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens, "cost_usd": 0.0,
    }
    assert result.cost_usd == 0.0  # fake-model has no price
    (req,) = srv.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["json"]["model"] == "fake-model" and req["json"]["messages"] == MESSAGES
    assert req["json"]["temperature"] == 0.7 and req["json"]["max_tokens"] == 64 and req["json"]["seed"] == 7
    assert "top_p" not in req["json"]  # None parameters are not sent


def test_finish_reason_length_is_a_success(srv: FakeOpenAI):
    srv.script(["length"])
    result, stats = complete_once(make_cfg(srv))
    assert isinstance(result, Completion) and result.finish_reason == "length"
    assert stats.retries == 0


@pytest.mark.parametrize(
    "action, min_wait",
    [("429:2", 2.0), ("429ms:1500", 1.5), ("429:100", 5.0)],  # the last is capped at backoff_max_s
)
def test_429_waits_at_least_retry_after(srv: FakeOpenAI, action: str, min_wait: float, caplog):
    caplog.set_level(logging.WARNING, logger="dataforge.teacher")
    srv.script([action, "ok"])
    sleep = RecordingSleep()
    result, stats = complete_once(make_cfg(srv), sleep=sleep)
    assert isinstance(result, Completion)
    assert srv.chat_count == 2
    assert stats.retries == 1 and stats.requests_sent == 2 and stats.failures == 0
    assert len(sleep.delays) == 1 and min_wait <= sleep.delays[0] <= 5.0
    assert any("http_429" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_429_really_waits(srv: FakeOpenAI):
    """With the real asyncio.sleep the retry happens no sooner than Retry-After."""
    srv.script(["429:0.4", "ok"])
    start = time.monotonic()
    result, stats = complete_once(make_cfg(srv), sleep=asyncio.sleep)
    assert isinstance(result, Completion) and stats.retries == 1
    assert time.monotonic() - start >= 0.4


def test_5xx_then_success(srv: FakeOpenAI):
    srv.script(["500", "503", "ok"])
    sleep = RecordingSleep()
    result, stats = complete_once(make_cfg(srv, backoff_initial_s=0.5), sleep=sleep)
    assert isinstance(result, Completion)
    assert srv.chat_count == 3 and stats.requests_sent == 3 and stats.retries == 2
    # full jitter: the i-th delay lies in [0, initial * 2**i]
    assert len(sleep.delays) == 2
    assert 0 <= sleep.delays[0] <= 0.5 and 0 <= sleep.delays[1] <= 1.0


def test_persistent_500_gives_up_after_max_attempts(srv: FakeOpenAI):
    srv.default_action = "500"
    sleep = RecordingSleep()
    result, stats = complete_once(make_cfg(srv, max_attempts=4), sleep=sleep)
    assert isinstance(result, TeacherError)
    assert result.reason == "http_500" and result.attempts == 4
    assert "4 attempt" in str(result)
    assert srv.chat_count == 4
    assert stats.requests_sent == 4 and stats.retries == 3 and stats.failures == 1
    assert len(sleep.delays) == 3
    assert stats.prompt_tokens == 0 and stats.completion_tokens == 0


def test_timeout_then_success(srv: FakeOpenAI):
    srv.timeout_sleep = 2.0
    srv.script(["timeout", "ok"])
    start = time.monotonic()
    result, stats = complete_once(make_cfg(srv, timeout_s=0.5))
    elapsed = time.monotonic() - start
    assert isinstance(result, Completion)
    assert srv.chat_count == 2 and stats.retries == 1
    assert elapsed < 1.8  # the client gave up after ~0.5 s instead of waiting for the slow reply


def test_persistent_timeout_reason(srv: FakeOpenAI):
    srv.timeout_sleep = 2.0
    srv.script(["timeout", "timeout"])
    result, stats = complete_once(make_cfg(srv, timeout_s=0.3, max_attempts=2))
    assert isinstance(result, TeacherError) and result.reason == "timeout"
    assert stats.failures == 1 and srv.chat_count == 2


@pytest.mark.parametrize("action", ["malformed", "empty_choices"])
def test_malformed_reply_then_success(srv: FakeOpenAI, action: str):
    srv.script([action, "ok"])
    result, stats = complete_once(make_cfg(srv))
    assert isinstance(result, Completion) and result.text
    assert srv.chat_count == 2 and stats.retries == 1 and stats.failures == 0
    # a reply without choices still reports usage, and usage is what a provider bills
    billed = 2 if action == "empty_choices" else 1
    assert stats.prompt_tokens == billed * result.prompt_tokens


def test_persistent_malformed_reason(srv: FakeOpenAI):
    srv.default_action = "malformed"
    result, stats = complete_once(make_cfg(srv, max_attempts=2))
    assert isinstance(result, TeacherError) and result.reason == "malformed_response"
    assert srv.chat_count == 2 and stats.failures == 1


@pytest.mark.parametrize("status", ["400", "401", "403", "404", "422"])
def test_client_errors_are_not_retried(srv: FakeOpenAI, status: str):
    srv.default_action = status
    sleep = RecordingSleep()
    result, stats = complete_once(make_cfg(srv), sleep=sleep)
    assert isinstance(result, TeacherError) and result.reason == f"http_{status}"
    assert result.attempts == 1
    assert srv.chat_count == 1 and sleep.delays == []
    assert stats.requests_sent == 1 and stats.retries == 0 and stats.failures == 1


def test_connection_error_reason(srv: FakeOpenAI):
    cfg = make_cfg(srv, max_attempts=2)
    srv.stop()  # nothing listens on that port any more
    result, stats = complete_once(cfg)
    assert isinstance(result, TeacherError) and result.reason == "connection"
    assert stats.requests_sent == 2 and stats.failures == 1


def test_fail_rate_chaos_is_absorbed_by_retries():
    with FakeOpenAI(fail_rate=0.4, fail_seed=3) as srv:
        cfg = make_cfg(srv, max_attempts=20, max_concurrency=4)

        async def go():
            async with TeacherClient(cfg, sleep=RecordingSleep()) as client:
                results = await asyncio.gather(
                    *(client.complete(MESSAGES, temperature=1.0, max_tokens=32, sample_index=i) for i in range(10))
                )
                return results, client.stats

        results, stats = asyncio.run(go())
        failed = srv.actions_taken.count("500")
    assert len(results) == 10 and all(isinstance(r, Completion) for r in results)
    assert failed > 0 and stats.retries == failed and stats.requests_sent == 10 + failed


# --------------------------------------------------------------------------- cache


def test_cache_hit_skips_http_and_persists(srv: FakeOpenAI, tmp_path: Path):
    cfg = make_cfg(srv)
    path = tmp_path / "cache" / "teacher.sqlite"

    async def twice(cache: RequestCache):
        async with TeacherClient(cfg, cache) as client:
            first = await client.complete(MESSAGES, temperature=0.7, max_tokens=64, seed=1)
            second = await client.complete(MESSAGES, temperature=0.7, max_tokens=64, seed=1)
            return first, second, client.stats

    with RequestCache(path) as cache:
        first, second, stats = asyncio.run(twice(cache))
        assert first.cached is False and second.cached is True
        assert second.text == first.text and second.request_hash == first.request_hash
        assert (second.prompt_tokens, second.completion_tokens) == (first.prompt_tokens, first.completion_tokens)
        assert srv.chat_count == 1
        assert stats.cache_hits == 1 and stats.requests_sent == 1
        assert stats.completion_tokens == first.completion_tokens  # the cached answer is not counted again
        assert len(cache) == 1
        stored = cache.get_request(first.request_hash)
        assert stored == {
            "model": "fake-model",
            "messages": MESSAGES,
            "params": {"temperature": 0.7, "max_tokens": 64, "seed": 1},
            "sample_index": 0,
            "base_url": srv.base_url,
            "attempts": 1,
            "cost_usd": 0.0,
        }
        assert cache.get(first.request_hash)["choices"][0]["message"]["content"] == first.text

    # a new client with a new cache object on the same file: still a hit, no request
    with RequestCache(path) as cache:
        again, stats = complete_once(cfg, cache, seed=1)
    assert again.cached is True and again.text == first.text
    assert srv.chat_count == 1 and stats.cache_hits == 1 and stats.requests_sent == 0


def test_different_sample_index_is_a_new_request(srv: FakeOpenAI, tmp_path: Path):
    cfg = make_cfg(srv)

    async def go(cache: RequestCache):
        async with TeacherClient(cfg, cache) as client:
            return [await client.complete(MESSAGES, temperature=0.7, max_tokens=64, sample_index=i) for i in (0, 1, 0, 1)]

    with RequestCache(tmp_path / "c.sqlite") as cache:
        a0, a1, b0, b1 = asyncio.run(go(cache))
        assert len(cache) == 2
    assert a0.request_hash != a1.request_hash
    assert (a0.cached, a1.cached, b0.cached, b1.cached) == (False, False, True, True)
    assert (b0.sample_index, b1.sample_index) == (0, 1)
    assert srv.chat_count == 2


def test_failures_are_not_cached(srv: FakeOpenAI, tmp_path: Path):
    srv.script(["400"])
    with RequestCache(tmp_path / "c.sqlite") as cache:
        err, _ = complete_once(make_cfg(srv), cache)
        assert isinstance(err, TeacherError) and len(cache) == 0
        ok, _ = complete_once(make_cfg(srv), cache)
        assert isinstance(ok, Completion) and ok.cached is False and len(cache) == 1


def test_request_cache_basics(tmp_path: Path):
    path = tmp_path / "deep" / "dir" / "cache.sqlite"
    with RequestCache(path) as writer, RequestCache(path) as reader:
        assert writer.get("k") is None and writer.get_request("k") is None and len(writer) == 0
        writer.put("k", {"model": "m", "api_key": "nope", "Authorization": "nope"}, {"choices": [], "ü": "ß"})
        # committed at once: a second connection sees it without any close/flush
        assert reader.get("k") == {"choices": [], "ü": "ß"}
        assert reader.get_request("k") == {"model": "m"}  # credential-looking fields dropped
        writer.put("k", {"model": "m"}, {"v": 2})  # INSERT OR REPLACE
        assert len(reader) == 1 and reader.get("k") == {"v": 2}
    writer.close()  # idempotent
    with pytest.raises(RuntimeError):
        writer.get("k")
    assert path.exists()


# --------------------------------------------------------------------------- concurrency


def test_bounded_concurrency(srv: FakeOpenAI):
    srv.delay_s = 0.3
    cfg = make_cfg(srv, max_concurrency=2)

    async def go():
        async with TeacherClient(cfg) as client:
            return await asyncio.gather(
                *(client.complete(MESSAGES, temperature=0.7, max_tokens=16, sample_index=i) for i in range(6))
            )

    start = time.monotonic()
    results = asyncio.run(go())
    elapsed = time.monotonic() - start
    assert [r.sample_index for r in results] == list(range(6))
    assert srv.chat_count == 6
    assert srv.max_in_flight == 2  # the bound was reached, never exceeded
    assert elapsed >= 0.85  # three waves of 0.3 s


# --------------------------------------------------------------------------- secrets


def test_api_key_is_used_but_never_logged_or_stored(srv: FakeOpenAI, tmp_path: Path, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpx2", "httpcore", "httpcore2", "dataforge"):
        caplog.set_level(logging.DEBUG, logger=name)
    srv.timeout_sleep = 2.0
    srv.script(["429:0", "500", "malformed", "timeout", "ok", "401"])
    cfg = make_cfg(srv, timeout_s=0.3, max_attempts=6)
    cache_dir = tmp_path / "cache"

    async def go(cache: RequestCache):
        async with TeacherClient(cfg, cache, sleep=RecordingSleep()) as client:
            ok = await client.complete(MESSAGES, temperature=0.7, max_tokens=64)
            with pytest.raises(TeacherError) as info:
                await client.complete(MESSAGES, temperature=0.1, max_tokens=64)
            return ok, info.value

    with RequestCache(cache_dir / "teacher.sqlite") as cache:
        ok, err = asyncio.run(go(cache))
        assert isinstance(ok, Completion) and err.reason == "http_401"

    # the key reached the server, so it was really in use
    auth = {k.lower(): v for k, v in srv.requests[0]["headers"].items()}["authorization"]
    assert auth == f"Bearer {SENTINEL}"
    # logging was captured (SDK debug output and our retry warnings) ...
    names = {r.name for r in caplog.records}
    assert any(n.startswith("openai") for n in names) and "dataforge.teacher" in names
    # ... and holds no key
    assert SENTINEL not in caplog.text
    assert all(SENTINEL not in r.getMessage() for r in caplog.records)
    assert SENTINEL not in str(err)
    # nor does any file of the cache (database, WAL, shared memory)
    files = list(cache_dir.iterdir())
    assert files
    for f in files:
        assert SENTINEL.encode() not in f.read_bytes(), f


def test_redacting_filter_masks_the_configured_key(srv: FakeOpenAI, caplog):
    TeacherClient(make_cfg(srv))  # installs the filter for the configured key
    caplog.set_level(logging.DEBUG)
    logging.getLogger("dataforge").info("key is %s", SENTINEL)
    logging.getLogger("dataforge.teacher").warning(f"header Bearer {SENTINEL}")
    logging.getLogger("openai").debug("opts %s", {"headers": {"Authorization": SENTINEL}})
    assert SENTINEL not in caplog.text
    assert caplog.text.count("***") == 3


def test_redacting_filter_unit():
    flt = SecretRedactingFilter(["s3cret", ""])
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "a=%s b=%d", ("s3cret!", 5), None)
    assert flt.filter(rec) is True
    assert rec.getMessage() == "a=***! b=5"
    try:
        raise ValueError("boom s3cret")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    flt.filter(rec)
    assert "s3cret" not in rec.exc_text and "boom ***" in rec.exc_text
    untouched = logging.LogRecord("x", logging.INFO, __file__, 1, "n=%d", (3,), None)
    flt.filter(untouched)
    assert untouched.msg == "n=%d" and untouched.args == (3,)


# --------------------------------------------------------------------------- misc


def test_stats_merge_and_as_dict():
    a = TeacherStats(requests_sent=3, cache_hits=1, retries=2, failures=0, prompt_tokens=10, completion_tokens=20,
                     cost_usd=0.25)
    b = TeacherStats(requests_sent=1, cache_hits=0, retries=0, failures=1, prompt_tokens=5, completion_tokens=7,
                     cost_usd=0.125)
    assert a.merge(b) is a
    assert a.as_dict() == {
        "requests_sent": 4, "cache_hits": 1, "retries": 2, "failures": 1, "prompt_tokens": 15, "completion_tokens": 27,
        "cost_usd": 0.375,
    }
    # a run.json written before cost accounting still loads
    assert TeacherStats(**{"requests_sent": 2}).merge(a).cost_usd == 0.375
    assert a.summary() == "42 tok · $0.3750 · 1 cached · 2 retries · 1 failed"


def test_fake_server_models_endpoint(srv: FakeOpenAI):
    client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
    try:
        assert [m.id for m in client.models.list()] == ["fake-model"]
    finally:
        client.close()
    assert srv.requests[0]["method"] == "GET" and srv.count == 1 and srv.chat_count == 0
