"""Async client for an OpenAI-compatible chat-completions teacher, trusted with a budget.

Design notes:

* The ``openai`` SDK's own retries are switched off (``max_retries=0``); this module retries
  instead so that every attempt, delay and give-up is counted in :class:`TeacherStats`, the
  delays are observable in tests (injected ``sleep`` and ``clock``), and malformed 200 replies
  are retried too. The raw response body is kept as the server sent it (``with_raw_response``),
  which is what the cache stores and ``dataforge teacher show`` prints.
* Every HTTP attempt holds one of ``max_concurrency`` slots and passes the client's
  :class:`~dataforge.teacher.ratelimit.RateLimiter` (requests and tokens per minute). A 429
  pauses the whole client for its Retry-After (or the backoff), not only the request that got it.
* Besides transport faults (429, 5xx, timeouts, connection errors, malformed replies), an
  answer cut off by ``max_tokens`` (with ``retry_on_length``) is asked again with a larger
  ``max_tokens``, and a structured answer that fails its schema is asked again. All attempts of
  a request share ``max_attempts``; a request that still fails raises :class:`TeacherError` with
  a machine-readable ``reason``.
* Each accepted answer is stored in the :class:`~dataforge.teacher.cache.RequestCache` the
  moment it arrives, under the key of the request as the caller asked it (never of a grown
  retry), so a repeated request is answered from the cache without any HTTP traffic. The stored
  request records what was really sent (``sent_params``), the attempts and the cost.
* Tokens and cost: every answer received is billed in :class:`TeacherStats` (also the truncated
  or invalid ones that were retried); a cache hit costs the run nothing, but its
  :class:`Completion` keeps the ``cost_usd`` it had when it was produced.
* The API key is only ever given to the SDK. It is never logged, stored in the cache or put
  into an exception message; a :class:`SecretRedactingFilter` is installed as a second line
  of defence against third-party debug logging.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal, TypeVar, overload
from urllib.parse import urlsplit

import openai
import pydantic

from dataforge.config import TeacherConfig
from dataforge.teacher.cache import RequestCache, request_key
from dataforge.teacher.budget import BudgetExceeded, SpendLedger, current_ledger, worst_case_prompt_tokens
from dataforge.teacher.logprobs import TokenLogprobs, parse_logprobs, request_params
from dataforge.teacher.ratelimit import Clock, RateLimiter, SleepFn, estimate_tokens
from dataforge.teacher.urls import redact_url, url_secrets

__all__ = [
    "Completion",
    "TeacherStats",
    "TeacherError",
    "TeacherClient",
    "SecretRedactingFilter",
    "parse_retry_after",
    "parse_structured",
    "answered_at",
]

log = logging.getLogger("dataforge.teacher")

PLACEHOLDER_KEY = "not-needed"

# Statuses worth another attempt besides 5xx: rate limited, and request timeout.
_RETRYABLE_4XX = frozenset({408, 429})

# Loggers that get the redacting filter. A logger's filters only see records created by that
# very logger (not its children), hence the explicit list of the modules that log requests.
_REDACTED_LOGGERS = (
    "dataforge",
    "dataforge.teacher",
    "openai",
    "openai._base_client",
    "openai._response",
    "httpx",
    "httpx2",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore2.connection",
    "httpcore2.http11",
)


# --------------------------------------------------------------------------- log redaction


class SecretRedactingFilter(logging.Filter):
    """Replace every occurrence of the given secrets with ``***`` in a record's message,
    its arguments and any formatted exception text. Never drops a record."""

    MASK = "***"

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = {s for s in secrets if s}

    def add(self, secret: str) -> None:
        if secret:
            self._secrets.add(secret)

    def redact(self, text: str) -> str:
        # longest first, so a secret containing another is masked whole
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, self.MASK)
        return text

    def _contains_secret(self, text: str) -> bool:
        return any(s in text for s in self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: redact the raw parts instead
            message = None
        if message is not None:
            if self._contains_secret(message):
                # Freeze the redacted, fully formatted message; args are no longer needed.
                record.msg, record.args = self.redact(message), None
        else:
            record.msg = self.redact(str(record.msg))
            if isinstance(record.args, tuple):
                record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


# One shared filter per process, so that many clients do not stack up filters.
_REDACTOR = SecretRedactingFilter()


def _install_redactor(secret: str) -> None:
    _REDACTOR.add(secret)
    for name in _REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)




# --------------------------------------------------------------------------- public types


ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str
    request_hash: str
    cached: bool
    sample_index: int
    # when the teacher answered (the response's unix ``created``); replayed from the cache, so a
    # re-run reproduces the same timestamps (and so the same "oldest wins" dedup decisions)
    created: int | None = None
    # USD this answer cost when it was produced, including the truncated or invalid attempts
    # retried on its way; a cache hit keeps it (the run's TeacherStats count a hit as 0)
    cost_usd: float = 0.0
    # the validated reply of complete_structured (an instance of its schema), else None
    parsed: pydantic.BaseModel | None = None
    # per-token top-k log-probabilities when the request asked for them (teacher.logprobs)
    logprobs: list[TokenLogprobs] | None = None


@dataclass
class TeacherStats:
    requests_sent: int = 0  # HTTP attempts actually sent
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0  # requests (samples) that gave up
    prompt_tokens: int = 0  # billed: every answer received, none from the cache
    completion_tokens: int = 0  # billed, as prompt_tokens
    cost_usd: float = 0.0  # USD of the billed tokens at the configured prices

    def as_dict(self) -> dict[str, int | float]:
        d: dict[str, int | float] = asdict(self)
        d["cost_usd"] = round(self.cost_usd, 8)
        return d

    def merge(self, other: "TeacherStats") -> "TeacherStats":
        """Add ``other``'s counters to this one (in place); returns self."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def summary(self) -> str:
        """One short line for a progress display: tokens, cost, cache hits, retries, failures."""
        parts = [f"{self.prompt_tokens + self.completion_tokens:,} tok", f"${self.cost_usd:.4f}",
                 f"{self.cache_hits} cached"]
        if self.retries:
            parts.append(f"{self.retries} retries")
        if self.failures:
            parts.append(f"{self.failures} failed")
        return " · ".join(parts)


class TeacherError(RuntimeError):
    """A teacher request that failed for good.

    ``reason`` is short and machine-readable: ``http_<status>``, ``timeout``, ``connection``,
    ``malformed_response``, ``length`` (still cut off at the largest ``max_tokens`` allowed) or
    ``schema_invalid`` (a structured reply that never matched its schema). ``attempts`` is the
    number of HTTP attempts made; ``cost_usd`` what the failed attempts cost.
    """

    def __init__(self, reason: str, message: str, attempts: int, *, cost_usd: float = 0.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts
        self.cost_usd = cost_usd


class MalformedResponse(ValueError):
    """A response body that is not a usable chat completion (retried, then ``malformed_response``)."""


# --------------------------------------------------------------------------- helpers


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, else ``Retry-After`` as
    seconds or as an HTTP date. None when absent or unparseable; never negative."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = headers.get("retry-after")
    if value:
        try:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0.0, float(email.utils.mktime_tz(parsed)) - time.time())
        except (TypeError, ValueError, OverflowError):
            return None
    return None


_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL)


def parse_structured(text: str, schema: type[ModelT]) -> ModelT:
    """Validate a structured reply against ``schema``. A reply wrapped in one markdown code
    fence (as models without constrained decoding like to write) is unwrapped first.
    Raises ``ValueError`` (pydantic's ``ValidationError`` is one) when it does not match."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    return schema.model_validate_json(fenced.group(1) if fenced else stripped)


# the base URL without user info or query string (where credentials could hide): the one
# redaction of dataforge.teacher.urls, under the name batch.py and older callers import


def _choice_text(choice: Any) -> str:
    # a chat choice carries message.content; a text-completions choice (/v1/completions,
    # TeacherClient.complete_text) carries text instead
    text = choice["text"] if "message" not in choice and "text" in choice else choice["message"]["content"]
    if not isinstance(text, str):
        raise TypeError(f"message content is {type(text).__name__}")
    return text


def check_body(body: Any) -> list[dict]:
    """The choices of a raw response body, ordered by index; :class:`MalformedResponse`
    when it is not a usable chat completion (no choices, a choice without text, ...)."""
    try:
        choices = body["choices"]
        if not isinstance(choices, list) or not choices:
            raise ValueError("no choices")
        for c in choices:
            _choice_text(c)
        return sorted(choices, key=lambda c: c.get("index") or 0)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
        raise MalformedResponse(f"{type(err).__name__}: {err}") from None


def _usage(body: dict) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) a body reports; zeros when it reports none."""
    usage = body.get("usage") or {}
    try:
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError, AttributeError):
        return 0, 0


def extract_completion(body: Any) -> tuple[str, str | None, int, int, str | None]:
    """(text, finish_reason, prompt_tokens, completion_tokens, model) of the first choice of
    a raw response body, or :class:`MalformedResponse` when it is not a usable completion."""
    choice = check_body(body)[0]
    prompt_tokens, completion_tokens = _usage(body)
    model = body.get("model")
    return (_choice_text(choice), choice.get("finish_reason"), prompt_tokens, completion_tokens,
            model if isinstance(model, str) else None)


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder: the parts sum to it)."""
    w = sum(weights)
    exact = [total * x / w for x in weights]
    parts = [int(e) for e in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _narrow(body: dict, choice: dict, prompt_tokens: int, completion_tokens: int) -> dict:
    """One choice of an ``n``-choice response as a response of its own, with its share of the
    usage: what the cache stores for each sample of an ``n`` request."""
    out = {k: v for k, v in body.items() if k not in ("choices", "usage")}
    out["choices"] = [{**choice, "index": 0}]
    out["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens}
    return out


def _schema_name(name: str) -> str:
    # OpenAI: ^[a-zA-Z0-9_-]{1,64}$
    return (re.sub(r"[^A-Za-z0-9_-]", "_", name) or "response")[:64]


@dataclass
class Tally:
    """What one logical request has used so far: HTTP attempts and billed USD."""

    attempts: int = 0
    cost_usd: float = 0.0
    note: str = ""  # context for the final error message (e.g. a wire format that was rejected)


_Problem = Literal["length", "schema_invalid"]


# --------------------------------------------------------------------------- the client


class TeacherClient:
    """Bounded-concurrency, rate-limited, retrying, caching chat-completions client.

    ``sleep`` is awaited for every backoff delay and rate-limit wait, ``clock`` (monotonic
    seconds) drives the rate limiter: inject both in tests to control time.
    """

    def __init__(
        self,
        cfg: TeacherConfig,
        cache: RequestCache | None = None,
        *,
        base_url: str | None = None,
        sleep: SleepFn = asyncio.sleep,
        clock: Clock = time.monotonic,
        acquire: Callable[[], Awaitable[Any]] | None = None,
        budget: SpendLedger | None = None,
    ) -> None:
        self.cfg = cfg
        self.cache = cache
        # awaited before every HTTP attempt, after the client's own limiter: a slot of a limit
        # shared with other processes (flows/ passes one that takes a Prefect global rate limit)
        self._acquire = acquire
        # the run's spend against teacher.budget_usd, shared by its clients (None: unbudgeted)
        self.budget = budget if budget is not None else current_ledger()
        self._in_flight = 0  # requests holding budget, awaited after a refusal
        self.base_url = base_url or cfg.resolved_base_url()
        self._public_base_url = redact_url(self.base_url)
        self.stats = TeacherStats()
        self._sleep = sleep
        self.limiter = RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute, clock=clock, sleep=sleep)
        api_key = cfg.api_key()
        self._secret = api_key if api_key != PLACEHOLDER_KEY else None
        if self._secret:
            _install_redactor(self._secret)
        # credentials in the URL itself (user info, query values) are masked in logs and errors too
        self._url_secrets = url_secrets(self.base_url)
        for secret in self._url_secrets:
            _install_redactor(secret)
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key, max_retries=0, timeout=cfg.timeout_s
        )
        # Created lazily: an asyncio.Semaphore must belong to the loop that uses it.
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None
        # What this client learned about its endpoint. None = not known yet.
        self.n_honoured: bool | None = None if cfg.use_n == "auto" else False
        self.structured_wire: str | None = {
            "json_schema": "json_schema",
            "json_object": "json_object",
            "auto": "json_object" if cfg.provider == "local" else None,
        }[cfg.structured_output]
        # an endpoint off this machine probably bills: warn once per model missing from the prices
        self._remote = urlsplit(self.base_url).hostname not in ("127.0.0.1", "localhost", "::1")
        self._warned_unpriced: set[str] = set()

    # -- plumbing

    def _get_semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore = asyncio.Semaphore(self.cfg.max_concurrency)
            self._semaphore_loop = loop
        return self._semaphore

    def _redact(self, text: str) -> str:
        for secret in ([self._secret] if self._secret else []) + self._url_secrets:
            text = text.replace(secret, "***")
        return text

    def _backoff(self, retry_index: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, but never shorter than a server's Retry-After
        (both capped at ``backoff_max_s``)."""
        cap = self.cfg.backoff_max_s
        delay = random.uniform(0.0, min(cap, self.cfg.backoff_initial_s * 2.0**retry_index))
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        return delay

    def _error(self, reason: str, detail: str, tally: Tally) -> TeacherError:
        note = f"; {tally.note}" if tally.note else ""
        return TeacherError(
            reason,
            self._redact(f"teacher request failed after {tally.attempts} attempt(s): {reason} ({detail}){note}"),
            tally.attempts,
            cost_usd=tally.cost_usd,
        )

    def _price(self, prompt_tokens: int, completion_tokens: int, model: str | None) -> float:
        name = model or self.cfg.model
        if self._remote and name not in self._warned_unpriced and self.cfg.price_for(name) is None:
            self._warned_unpriced.add(name)
            log.warning("teacher.prices has no entry for model %r: its tokens count as 0 USD", name)
        return self.cfg.cost_usd(prompt_tokens, completion_tokens, model=name)

    def _completion(self, body: dict, key: str, sample_index: int, cached: bool) -> Completion:
        text, finish_reason, prompt_tokens, completion_tokens, model = extract_completion(body)
        return Completion(
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=model or self.cfg.model,
            request_hash=key,
            cached=cached,
            sample_index=sample_index,
            created=body.get("created") if isinstance(body.get("created"), int) else None,
            logprobs=parse_logprobs(check_body(body)[0], self.cfg.logprobs) if self.cfg.logprobs else None,
        )

    @staticmethod
    def _params(temperature: float, max_tokens: int, top_p: float | None, seed: int | None,
                response_format: dict | None) -> dict:
        values = {"temperature": temperature, "max_tokens": max_tokens, "top_p": top_p, "seed": seed,
                  "response_format": response_format}
        return {k: v for k, v in values.items() if v is not None}

    # -- one HTTP attempt, and the transport retries around it

    async def _post(self, messages: list[dict], wire: dict, est_tokens: int) -> dict:
        """One HTTP attempt, in a concurrency slot, after the rate limiter: the raw body.
        Raises the SDK's errors or :class:`MalformedResponse`."""
        async with self._get_semaphore():
            reserved = await self.limiter.acquire(est_tokens)
            if self._acquire is not None:
                await self._acquire()
            hold = self._hold_budget(messages, wire)  # teacher.budget_usd: a refusal sends nothing
            if not isinstance(hold, BudgetExceeded):
                return await self._post_held(messages, wire, reserved, hold)
            self.limiter.reconcile(reserved, 0)
        await self._drain_in_flight()  # answers already asked for arrive (and are cached) first
        raise hold

    async def _post_held(self, messages: list[dict], wire: dict, reserved: int, hold: Any) -> dict:
        """The HTTP attempt of :meth:`_post`, inside its slot and its budget hold (settled here)."""
        body: Any = None
        try:
            self.stats.requests_sent += 1
            try:
                if "prompt" in wire:  # a text completion (complete_text): /v1/completions, no messages
                    raw = await self._client.completions.with_raw_response.create(model=self.cfg.model, **wire)
                else:
                    raw = await self._client.chat.completions.with_raw_response.create(
                        model=self.cfg.model, messages=messages, **wire
                    )
            except openai.RateLimitError:
                self.limiter.reconcile(reserved, 0)  # refused, so nothing was used
                raise
            try:
                body = json.loads(raw.content)
            except ValueError:
                raise MalformedResponse("the body is not JSON") from None
            if not isinstance(body, dict):
                raise MalformedResponse(f"the body is a JSON {type(body).__name__}")
            prompt_tokens, completion_tokens = _usage(body)
            self.limiter.reconcile(reserved, prompt_tokens + completion_tokens)
        finally:
            self._settle_budget(hold, body)
        return body

    # -- teacher.budget_usd (dataforge/teacher/budget.py)

    def _hold_budget(self, messages: list[dict], wire: dict) -> Any:
        """Reserve this attempt's worst-case cost in the run's ledger: the hold (None without a
        ledger), or the :class:`BudgetExceeded` refusing it."""
        if self.budget is None:
            return None
        prompt = worst_case_prompt_tokens(messages)
        if isinstance(wire.get("prompt"), str):  # a text completion
            prompt += worst_case_prompt_tokens([{"content": wire["prompt"]}])
        completion = int(wire.get("max_tokens") or 0) * int(wire.get("n") or 1)
        try:
            hold = self.budget.hold(self.cfg.cost_usd(prompt, completion))
        except BudgetExceeded as err:
            return err
        self._in_flight += 1
        return hold

    def _settle_budget(self, hold: Any, body: Any) -> None:
        if hold is None or self.budget is None:
            return
        self._in_flight -= 1
        billed = 0.0
        if isinstance(body, dict):
            prompt_tokens, completion_tokens = _usage(body)
            model = body.get("model") if isinstance(body.get("model"), str) else None
            billed = self.cfg.cost_usd(prompt_tokens, completion_tokens, model=model or self.cfg.model)
        self.budget.settle(hold, billed)

    async def _drain_in_flight(self) -> None:
        """After a refusal, wait until this client's requests already sent are answered: their
        answers are billed and cached, and the stage stops with nothing lost in the air."""
        while self._in_flight > 0:
            await asyncio.sleep(0.02)

    def _bill(self, body: dict, tally: Tally) -> None:
        prompt_tokens, completion_tokens = _usage(body)
        if not (prompt_tokens or completion_tokens):
            return
        model = body.get("model") if isinstance(body.get("model"), str) else None
        cost = self._price(prompt_tokens, completion_tokens, model)
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.cost_usd += cost
        tally.cost_usd += cost

    def _downgrade_structured(self, wire: dict, err: openai.APIStatusError, tally: Tally) -> bool:
        """With ``structured_output: auto``, an endpoint that refuses ``response_format`` type
        ``json_schema`` (llama-cpp-python's server answers 500 with a validation error) is
        asked again with ``{"type": "json_object", "schema": ...}``. True when ``wire`` was
        switched; the client keeps the working form once a reply comes back with it."""
        rf = wire.get("response_format")
        if (self.cfg.structured_output != "auto" or self.structured_wire == "json_schema"
                or not isinstance(rf, dict) or rf.get("type") != "json_schema"
                or err.status_code in (408, 429)):
            return False
        said = f"{err.message} {json.dumps(err.body, default=str)}"
        if "json_schema" not in said and "response_format" not in said:
            return False
        wire["response_format"] = {"type": "json_object", "schema": rf["json_schema"]["schema"]}
        tally.note = f"the endpoint refused response_format json_schema with HTTP {err.status_code}"
        log.info("teacher endpoint refused response_format json_schema (HTTP %d); trying json_object with the schema",
                 err.status_code)
        return True

    async def _send(self, messages: list[dict], wire: dict, key: str, tally: Tally, n: int = 1) -> dict:
        """HTTP attempts for one wire request until a well-formed completion arrives; bills it
        and returns the raw body. Transport faults are retried with backoff within
        ``max_attempts`` (shared through ``tally``); a 429 pauses the whole client."""
        max_attempts = self.cfg.max_attempts
        est = estimate_tokens(messages, int(wire.get("max_tokens") or 0), n)
        while True:
            tally.attempts += 1
            retry_after: float | None = None
            rate_limited = False
            try:
                body = await self._post(messages, wire, est)
                self._bill(body, tally)  # what the server reports using is paid, usable or not
                check_body(body)
            except openai.APIStatusError as err:
                status = err.status_code
                reason, detail = f"http_{status}", err.message
                if self._downgrade_structured(wire, err, tally) and tally.attempts < max_attempts:
                    self.stats.retries += 1
                    continue
                if status < 500 and status not in _RETRYABLE_4XX:
                    raise self._error(reason, f"not retryable: {detail}", tally) from None
                retry_after = parse_retry_after(err.response.headers)
                rate_limited = status == 429
            except openai.APITimeoutError:
                reason, detail = "timeout", f"no answer within {self.cfg.timeout_s}s"
            except openai.APIConnectionError as err:
                reason, detail = "connection", err.message
            except MalformedResponse as err:
                reason, detail = "malformed_response", str(err)
            else:
                return body

            if tally.attempts >= max_attempts:
                raise self._error(reason, detail, tally)
            delay = self._backoff(tally.attempts - 1, retry_after)
            self.stats.retries += 1
            log.warning(
                "teacher request %s failed (%s), attempt %d/%d; %s %.2fs",
                key[:16], reason, tally.attempts, max_attempts,
                "pausing every request for" if rate_limited else "retrying in", delay,
            )
            if rate_limited:
                self.limiter.pause(delay)  # the next attempt waits in the limiter, as does every other request
            else:
                await self._sleep(delay)

    # -- content checks, growth, the cache

    def _judge(self, c: Completion, schema: type[pydantic.BaseModel] | None, max_tokens: int) -> tuple[_Problem | None, str]:
        """Whether an answer is acceptable: not cut off (with ``retry_on_length``) and, for a
        structured request, valid against its schema (then ``c.parsed`` is set)."""
        if c.finish_reason == "length" and self.cfg.retry_on_length:
            return "length", f"cut off at max_tokens={max_tokens}"
        if schema is not None:
            try:
                c.parsed = parse_structured(c.text, schema)
            except ValueError as err:
                first = str(err).splitlines()
                return "schema_invalid", f"reply does not match {schema.__name__}: {' '.join(first[:3])[:300]}"
        return None, ""

    def _grown(self, current: int, asked: int) -> int | None:
        """The next ``max_tokens`` after a cut-off answer, or None at the cap."""
        cap = self.cfg.max_tokens_cap or 4 * asked
        if current >= cap:
            return None
        return min(cap, math.ceil(current * self.cfg.length_retry_factor))

    def _cached(self, key: str, sample_index: int, schema: type[pydantic.BaseModel] | None = None) -> Completion | None:
        if self.cache is None:
            return None
        entry = self.cache.get_entry(key)
        if entry is None:
            return None
        try:
            c = self._completion(entry.response, key, sample_index, cached=True)
            if schema is not None:
                c.parsed = parse_structured(c.text, schema)
        except ValueError:  # MalformedResponse or a schema mismatch: ask again
            log.warning("ignoring unusable cache entry %s", key[:16])
            return None
        cost = entry.request.get("cost_usd")
        c.cost_usd = float(cost) if isinstance(cost, (int, float)) else self.cfg.cost_usd(
            c.prompt_tokens, c.completion_tokens, model=c.model)
        self.stats.cache_hits += 1
        return c

    def _store(self, key: str, messages: list[dict], params: dict, sample_index: int, wire: dict, body: dict,
               tally: Tally, cost_usd: float, extra: dict | None = None) -> None:
        """Commit an accepted answer before handing it out. Synchronous on purpose: a WAL
        commit costs ~0.2 ms, and moving it to a worker thread measured no faster
        (benchmarks/bench_teacher_client.py, A/B in RESULTS.md)."""
        if self.cache is None:
            return
        request: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": messages,
            "params": params,
            "sample_index": sample_index,
            "base_url": self._public_base_url,
            "attempts": tally.attempts,
            "cost_usd": round(cost_usd, 10),
        }
        if wire != params:
            request["sent_params"] = wire  # a grown max_tokens, another wire format, n
        if extra:
            request.update(extra)
        self.cache.put(key, request, body)

    # -- a single sample, fresh

    async def _fresh(self, messages: list[dict], params: dict, key: str, sample_index: int, *,
                     schema: type[pydantic.BaseModel] | None = None, start_max_tokens: int | None = None) -> Completion:
        """Ask until an acceptable answer arrives; cache it under ``key`` (the request as the
        caller asked it) and return it. Raises :class:`TeacherError` (not yet counted)."""
        wire = dict(params)
        if schema is not None and self.structured_wire == "json_object":
            wire["response_format"] = {"type": "json_object", "schema": params["response_format"]["json_schema"]["schema"]}
        if start_max_tokens is not None:
            wire["max_tokens"] = start_max_tokens
        tally = Tally()
        while True:
            body = await self._send(messages, wire, key, tally)
            c = self._completion(body, key, sample_index, cached=False)
            problem, detail = self._judge(c, schema, wire["max_tokens"])
            if problem is None:
                if schema is not None and self.cfg.structured_output == "auto":
                    self.structured_wire = wire["response_format"]["type"]
                c.cost_usd = tally.cost_usd
                self._store(key, messages, params, sample_index, wire, body, tally, tally.cost_usd)
                return c
            if problem == "length":
                grown = self._grown(wire["max_tokens"], params["max_tokens"])
                if grown is None:
                    raise self._error("length", f"{detail}, the largest allowed", tally)
                wire["max_tokens"] = grown
            if tally.attempts >= self.cfg.max_attempts:
                raise self._error(problem, detail, tally)
            self.stats.retries += 1
            log.warning("teacher request %s: %s (%s), attempt %d/%d; asking again%s", key[:16], problem, detail,
                        tally.attempts, self.cfg.max_attempts,
                        f" with max_tokens={wire['max_tokens']}" if problem == "length" else "")

    async def _counted(self, messages: list[dict], params: dict, key: str, sample_index: int, *,
                       schema: type[pydantic.BaseModel] | None = None) -> Completion:
        """:meth:`_fresh`, counting a request that gives up in ``stats.failures``."""
        try:
            return await self._fresh(messages, params, key, sample_index, schema=schema)
        except TeacherError:
            self.stats.failures += 1
            raise

    # -- public API

    async def complete(
        self,
        messages: list[dict],
        *,
        temperature: float,
        max_tokens: int,
        top_p: float | None = None,
        seed: int | None = None,
        sample_index: int = 0,
        response_format: dict | None = None,
    ) -> Completion:
        """One chat completion, from the cache when this exact request was answered before."""
        params = self._params(temperature, max_tokens, top_p, seed, response_format)
        params.update(request_params(self.cfg.logprobs))  # part of the cache key: no reuse without them
        key = request_key(self.cfg.model, messages, params, sample_index)
        hit = self._cached(key, sample_index)
        if hit is not None:
            return hit
        return await self._counted(messages, params, key, sample_index)

    async def complete_structured(
        self,
        messages: list[dict],
        schema: type[ModelT],
        *,
        temperature: float,
        max_tokens: int,
        top_p: float | None = None,
        seed: int | None = None,
        sample_index: int = 0,
        name: str | None = None,
    ) -> Completion:
        """A reply constrained to ``schema`` (``response_format`` ``json_schema``, strict),
        validated into ``Completion.parsed``. A reply that is not valid JSON for the schema is
        asked again; one that never is raises ``TeacherError("schema_invalid")``.

        OpenAI's strict mode wants every object closed (``model_config = ConfigDict(extra="forbid")``)
        and every field required; llama.cpp and vLLM accept any JSON schema."""
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": _schema_name(name or schema.__name__), "schema": schema.model_json_schema(),
                            "strict": True},
        }
        params = self._params(temperature, max_tokens, top_p, seed, response_format)
        key = request_key(self.cfg.model, messages, params, sample_index)
        hit = self._cached(key, sample_index, schema)
        if hit is not None:
            return hit
        return await self._counted(messages, params, key, sample_index, schema=schema)

    async def complete_text(
        self,
        prompt: str,
        *,
        temperature: float,
        max_tokens: int,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        sample_index: int = 0,
    ) -> Completion:
        """One text completion from the completions endpoint (``/v1/completions``): the model
        continues ``prompt`` as it is, no chat template around it (Magpie sends a template's
        user prefix so the model writes the query itself). Cached, retried, rate-limited and
        billed exactly as :meth:`complete`; its cache key holds the prompt in ``params`` and no
        messages, so it never meets a chat request's. An endpoint without one answers 404:
        ``TeacherError("http_404")``, not retried."""
        params = self._params(temperature, max_tokens, top_p, seed, None)
        params["prompt"] = prompt
        if stop:
            params["stop"] = list(stop)
        key = request_key(self.cfg.model, [], params, sample_index)
        hit = self._cached(key, sample_index)
        if hit is not None:
            return hit
        return await self._counted([], params, key, sample_index)

    @overload
    async def complete_n(self, messages: list[dict], n: int, *, temperature: float, max_tokens: int,
                         top_p: float | None = ..., seed: int | None = ..., response_format: dict | None = ...,
                         return_exceptions: Literal[False] = ...) -> list[Completion]: ...

    @overload
    async def complete_n(self, messages: list[dict], n: int, *, temperature: float, max_tokens: int,
                         top_p: float | None = ..., seed: int | None = ..., response_format: dict | None = ...,
                         return_exceptions: Literal[True]) -> list[Completion | TeacherError]: ...

    async def complete_n(
        self,
        messages: list[dict],
        n: int,
        *,
        temperature: float,
        max_tokens: int,
        top_p: float | None = None,
        seed: int | None = None,
        response_format: dict | None = None,
        return_exceptions: bool = False,
    ) -> list[Completion] | list[Completion | TeacherError]:
        """``n`` samples for one prompt, in sample order (``Completion.sample_index`` = i).

        Sample i is cached under the key of ``complete(messages, ..., sample_index=i,
        seed=seed + i)`` (without a seed: ``seed`` omitted), so both paths share the cache.
        Samples not in the cache are asked for with the API's ``n`` in one request when the
        endpoint honours it (``use_n: auto``); when the reply has fewer choices, the missing
        samples are asked one request each (with their own seeds) and the client stops using
        ``n``. A sample that fails for good raises its :class:`TeacherError` after every other
        sample is settled (answered samples are cached: a re-run does not pay for them), or
        takes its place in the list with ``return_exceptions=True``.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        base = self._params(temperature, max_tokens, top_p, None, response_format)
        base.update(request_params(self.cfg.logprobs))  # part of the cache key, as in complete()

        def params_for(i: int) -> dict:
            return {**base, "seed": seed + i} if seed is not None else dict(base)

        keys = [request_key(self.cfg.model, messages, params_for(i), i) for i in range(n)]
        results: list[Completion | TeacherError | None] = [self._cached(keys[i], i) for i in range(n)]
        missing = [i for i, r in enumerate(results) if r is None]
        start_max_tokens: dict[int, int] = {}
        if len(missing) > 1 and self.n_honoured is not False:
            missing, start_max_tokens = await self._ask_with_n(messages, base, seed, missing, keys, params_for, results)
        if missing:
            outcomes = await asyncio.gather(
                *(self._fresh(messages, params_for(i), keys[i], i, start_max_tokens=start_max_tokens.get(i))
                  for i in missing),
                return_exceptions=True,
            )
            for i, outcome in zip(missing, outcomes):
                if isinstance(outcome, BaseException) and not isinstance(outcome, TeacherError):
                    raise outcome
                results[i] = outcome
        errors = [r for r in results if isinstance(r, TeacherError)]
        self.stats.failures += len(errors)
        if errors and not return_exceptions:
            raise errors[0]
        return [r for r in results if r is not None]

    async def _ask_with_n(self, messages: list[dict], base: dict, seed: int | None, missing: list[int],
                          keys: list[str], params_for: Any, results: list[Completion | TeacherError | None],
                          ) -> tuple[list[int], dict[int, int]]:
        """One request with ``n = len(missing)``; fills ``results`` with the acceptable choices.
        Returns the samples still to ask one by one, and the ``max_tokens`` to start those cut
        off at."""
        k = len(missing)
        wire = {**base, "n": k}
        if seed is not None:
            wire["seed"] = seed + missing[0]
        tally = Tally()
        try:
            body = await self._send(messages, wire, keys[missing[0]], tally, n=k)
        except TeacherError as err:
            if self.n_honoured is None and err.reason in ("http_400", "http_422"):
                self.n_honoured = False
                log.info("teacher endpoint refused n=%d (%s): one request per sample from now on", k, err.reason)
                return missing, {}
            for i in missing:
                results[i] = err
            return [], {}
        choices = check_body(body)[:k]
        got = len(choices)
        if got < k:
            if self.n_honoured is not False:
                log.info("teacher endpoint answered %d choice(s) for n=%d: one request per sample from now on", got, k)
            self.n_honoured = False
        elif self.n_honoured is None:
            self.n_honoured = True
        prompt_total, completion_total = _usage(body)
        prompt_shares = _split(prompt_total, [1] * got)
        completion_shares = _split(completion_total, [max(1, len(_choice_text(c))) for c in choices])
        leftover = missing[got:]
        start_max_tokens: dict[int, int] = {}
        for j, choice in enumerate(choices):
            i = missing[j]
            sample_body = _narrow(body, choice, prompt_shares[j], completion_shares[j])
            c = self._completion(sample_body, keys[i], i, cached=False)
            c.cost_usd = self.cfg.cost_usd(prompt_shares[j], completion_shares[j], model=c.model)
            problem, detail = self._judge(c, None, wire["max_tokens"])
            if problem == "length":
                grown = self._grown(wire["max_tokens"], base["max_tokens"])
                if grown is None:
                    results[i] = self._error("length", f"{detail}, the largest allowed", tally)
                else:
                    leftover.append(i)
                    start_max_tokens[i] = grown
                continue
            self._store(keys[i], messages, params_for(i), i, wire, sample_body, tally, c.cost_usd,
                        extra={"n_request": {"n": k, "choice": j, "usage": body.get("usage")}})
            results[i] = c
        return sorted(leftover), start_max_tokens

    async def aclose(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "TeacherClient":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def answered_at(c: Completion) -> datetime:
    """When the teacher produced ``c`` (falls back to now for servers that omit ``created``)."""
    if c.created:
        return datetime.fromtimestamp(c.created, timezone.utc)
    return datetime.now(timezone.utc)
