"""Client-side rate limits: requests-per-minute and tokens-per-minute token buckets, and a
client-wide pause after a 429.

Each bucket holds one minute's worth (the provider's limit) and refills continuously, as in
OpenAI's cookbook ``api_request_parallel_processor`` and Bespoke curator's status tracker.
Unlike those, a caller never polls: :meth:`TokenBucket.reserve` debits the bucket at once (its
level may go below zero) and says how long the caller must wait until the debt is repaid, so
requests are served in the order they asked and a waiting request costs one timer, not a loop.

The clock and the sleep are injected, so tests drive time by hand and run in microseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Clock", "SleepFn", "TokenBucket", "RateLimiter", "estimate_tokens"]

Clock = Callable[[], float]
SleepFn = Callable[[float], Awaitable[Any]]


def estimate_tokens(messages: list[dict], max_tokens: int, n: int = 1) -> int:
    """What a request may use before it is sent: prompt characters / 4 (the usual rule of
    thumb for English with BPE tokenizers) plus the completion budget of each of its ``n``
    choices. The bucket is reconciled with the reported usage once the answer arrives."""
    chars = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):  # content parts: count the text ones
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return chars // 4 + max_tokens * n


class TokenBucket:
    """``per_minute`` units a minute: capacity ``per_minute``, refilled at ``per_minute / 60``
    a second. Not thread-safe; used from one event loop."""

    def __init__(self, per_minute: float, clock: Clock) -> None:
        if per_minute <= 0:
            raise ValueError(f"per_minute must be positive, got {per_minute}")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # units per second
        self._clock = clock
        self._level = self.capacity
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        if now > self._updated:
            self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
            self._updated = now

    @property
    def level(self) -> float:
        """Units available now (negative: owed by requests already waiting)."""
        self._refill()
        return self._level

    def reserve(self, amount: float) -> float:
        """Take ``amount`` now; returns the seconds to wait before using it (0: at once).

        An amount above the capacity could never be served; it is clamped to the capacity, so
        such a request waits for a full bucket instead of forever."""
        self._refill()
        self._level -= min(float(amount), self.capacity)
        return 0.0 if self._level >= 0 else -self._level / self.rate

    def credit(self, amount: float) -> None:
        """Give back ``amount`` (negative: take more), e.g. estimated minus actual usage."""
        self._refill()
        self._level = min(self.capacity, self._level + amount)


class RateLimiter:
    """Gate for every HTTP attempt of one client.

    ``acquire(tokens)`` waits until a request may go out: one unit of the requests bucket,
    ``tokens`` of the tokens bucket (each None = unlimited), and the end of any pause. ``pause``
    holds every later ``acquire`` of the client (a 429 is about the account, not one request);
    a pause set while a caller already sleeps extends that caller's wait too.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: SleepFn = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.requests = TokenBucket(requests_per_minute, clock) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute, clock) if tokens_per_minute else None
        self._paused_until = float("-inf")
        self.pauses = 0  # how many times pause() was called (a 429 each)
        self.waited_s = 0.0  # total seconds callers slept here (overlapping waits add up)

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def pause(self, seconds: float) -> None:
        """Hold every request of the client for ``seconds`` from now (never shortens a pause)."""
        self.pauses += 1
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    async def acquire(self, tokens: int) -> int:
        """Wait for a slot; returns the tokens reserved, to pass to :meth:`reconcile`."""
        now = self._clock()
        wait = 0.0
        if self.requests is not None:
            wait = max(wait, self.requests.reserve(1))
        reserved = 0
        if self.tokens is not None:
            reserved = int(min(tokens, self.tokens.capacity))
            wait = max(wait, self.tokens.reserve(reserved))
        target = max(now + wait, self._paused_until)
        # Sleep towards the target computed from our own bookkeeping rather than polling the
        # clock: an injected clock that does not move while a test's sleep returns at once
        # still ends the loop. A pause set meanwhile moves the target on.
        while target > now:
            await self._sleep(target - now)
            self.waited_s += target - now
            now = max(target, self._clock())
            target = max(target, self._paused_until)
        return reserved

    def reconcile(self, reserved: int, actual: int) -> None:
        """Correct a reservation with the tokens the request really used (refund or extra)."""
        if self.tokens is not None and reserved != actual:
            self.tokens.credit(reserved - actual)
