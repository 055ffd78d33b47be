"""Async client for an OpenAI-compatible chat-completions teacher.

Design notes:

* The ``openai`` SDK's own retries are switched off (``max_retries=0``); this module retries
  instead so that every attempt, delay and give-up is counted in :class:`TeacherStats`, the
  delays are observable in tests (injected ``sleep``), and malformed 200 replies are retried
  too (the SDK would hand them back as if they were fine).
* Each answer is stored in the :class:`~dataforge.teacher.cache.RequestCache` the moment it
  arrives; a repeated request (same model, messages, parameters and ``sample_index``) is
  answered from the cache without any HTTP traffic.
* The API key is only ever given to the SDK. It is never logged, stored in the cache or put
  into an exception message; a :class:`SecretRedactingFilter` is installed as a second line
  of defence against third-party debug logging.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
import pydantic

from dataforge.config import TeacherConfig
from dataforge.teacher.cache import RequestCache, request_key

__all__ = ["Completion", "TeacherStats", "TeacherError", "TeacherClient", "SecretRedactingFilter", "parse_retry_after"]

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


@dataclass
class TeacherStats:
    requests_sent: int = 0  # HTTP attempts actually sent
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0  # requests that gave up
    prompt_tokens: int = 0  # fresh answers only
    completion_tokens: int = 0  # fresh answers only

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def merge(self, other: "TeacherStats") -> "TeacherStats":
        """Add ``other``'s counters to this one (in place); returns self."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


class TeacherError(RuntimeError):
    """A teacher request that failed for good.

    ``reason`` is short and machine-readable: ``http_<status>``, ``timeout``, ``connection``
    or ``malformed_response``. ``attempts`` is the number of HTTP attempts made.
    """

    def __init__(self, reason: str, message: str, attempts: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts


class _MalformedResponse(ValueError):
    pass


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


def _public_url(url: str) -> str:
    """The base URL without user info or query string (where credentials could hide)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _extract(body: Any) -> tuple[str, str | None, int, int, str | None]:
    """(text, finish_reason, prompt_tokens, completion_tokens, model) from a raw response
    body, or :class:`_MalformedResponse` when it is not a usable chat completion."""
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError(f"message content is {type(text).__name__}")
        finish_reason = choice.get("finish_reason")
        usage = body.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        model = body.get("model")
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
        raise _MalformedResponse(f"{type(err).__name__}: {err}") from None
    return text, finish_reason, prompt_tokens, completion_tokens, model if isinstance(model, str) else None


# --------------------------------------------------------------------------- the client


SleepFn = Callable[[float], Awaitable[Any]]


class TeacherClient:
    """Bounded-concurrency, retrying, caching chat-completions client.

    ``sleep`` is awaited for every backoff delay (inject a recorder in tests).
    """

    def __init__(
        self,
        cfg: TeacherConfig,
        cache: RequestCache | None = None,
        *,
        base_url: str | None = None,
        sleep: SleepFn = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self.cache = cache
        self.base_url = base_url or cfg.resolved_base_url()
        self.stats = TeacherStats()
        self._sleep = sleep
        api_key = cfg.api_key()
        self._secret = api_key if api_key != PLACEHOLDER_KEY else None
        if self._secret:
            _install_redactor(self._secret)
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key, max_retries=0, timeout=cfg.timeout_s
        )
        # Created lazily: an asyncio.Semaphore must belong to the loop that uses it.
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None

    # -- plumbing

    def _get_semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore = asyncio.Semaphore(self.cfg.max_concurrency)
            self._semaphore_loop = loop
        return self._semaphore

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _backoff(self, retry_index: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, but never shorter than a server's Retry-After
        (both capped at ``backoff_max_s``)."""
        cap = self.cfg.backoff_max_s
        delay = random.uniform(0.0, min(cap, self.cfg.backoff_initial_s * 2.0**retry_index))
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        return delay

    def _completion(self, body: dict, key: str, sample_index: int, cached: bool) -> Completion:
        text, finish_reason, prompt_tokens, completion_tokens, model = _extract(body)
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
        )

    async def _attempt(self, messages: list[dict], params: dict, key: str, sample_index: int) -> tuple[Completion, dict]:
        """One HTTP attempt; raises SDK errors or :class:`_MalformedResponse`."""
        async with self._get_semaphore():
            self.stats.requests_sent += 1
            try:
                resp = await self._client.chat.completions.create(model=self.cfg.model, messages=messages, **params)
                # A non-JSON body may come back as a plain str, a body without choices as a
                # half-constructed model: both end up as malformed here.
                body = resp.model_dump(mode="json", warnings=False)
            except (openai.APIResponseValidationError, pydantic.ValidationError, ValueError, AttributeError, TypeError) as err:
                raise _MalformedResponse(f"{type(err).__name__}") from None
        return self._completion(body, key, sample_index, cached=False), body

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
        params = {
            k: v
            for k, v in {
                "temperature": temperature,
                "max_tokens": max_tokens,
                "top_p": top_p,
                "seed": seed,
                "response_format": response_format,
            }.items()
            if v is not None
        }
        key = request_key(self.cfg.model, messages, params, sample_index)

        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                try:
                    completion = self._completion(hit, key, sample_index, cached=True)
                except _MalformedResponse:
                    log.warning("ignoring unusable cache entry %s", key[:16])
                else:
                    self.stats.cache_hits += 1
                    return completion

        max_attempts = self.cfg.max_attempts
        for attempt in range(1, max_attempts + 1):
            retry_after: float | None = None
            try:
                completion, body = await self._attempt(messages, params, key, sample_index)
            except openai.APIStatusError as err:
                status = err.status_code
                reason = f"http_{status}"
                detail = err.message
                if status < 500 and status not in _RETRYABLE_4XX:
                    self.stats.failures += 1
                    raise TeacherError(
                        reason,
                        self._redact(f"teacher request failed after {attempt} attempt(s): {reason}, not retryable ({detail})"),
                        attempt,
                    ) from None
                retry_after = parse_retry_after(err.response.headers)
            except openai.APITimeoutError:
                reason, detail = "timeout", f"no answer within {self.cfg.timeout_s}s"
            except openai.APIConnectionError as err:
                reason, detail = "connection", err.message
            except _MalformedResponse as err:
                reason, detail = "malformed_response", str(err)
            else:
                self.stats.prompt_tokens += completion.prompt_tokens
                self.stats.completion_tokens += completion.completion_tokens
                if self.cache is not None:
                    request = {
                        "model": self.cfg.model,
                        "messages": messages,
                        "params": params,
                        "sample_index": sample_index,
                        "base_url": _public_url(self.base_url),
                    }
                    self.cache.put(key, request, body)
                return completion

            if attempt >= max_attempts:
                self.stats.failures += 1
                raise TeacherError(
                    reason,
                    self._redact(f"teacher request failed after {attempt} attempt(s): {reason} ({detail})"),
                    attempt,
                )
            delay = self._backoff(attempt - 1, retry_after)
            self.stats.retries += 1
            log.warning(
                "teacher request %s failed (%s), attempt %d/%d; retrying in %.2fs",
                key[:16], reason, attempt, max_attempts, delay,
            )
            await self._sleep(delay)
        raise AssertionError("unreachable")  # the loop always returns or raises

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
