"""The teacher's rate limit held across concurrent runs: a Prefect global concurrency limit.

Each run's :class:`~dataforge.teacher.TeacherClient` already keeps ``requests_per_minute`` with
its own token bucket, but two runs (two scheduled deployments, or a deployment and a manual
run) would each spend the whole budget. With a Prefect API the flow also creates (or updates)
the global concurrency limit ``teacher:<model>`` as a *rate limit*: ``limit`` slots (the burst;
default one minute's worth) that decay at ``rpm / 60`` a second (Prefect's token bucket), and
the client takes one slot per HTTP attempt through its ``acquire`` hook. Every run asking the
same model (on any machine reporting to the same server) then shares one budget, visible and
adjustable in the UI under Concurrency.
"""

from __future__ import annotations

import re

from prefect import get_client
from prefect.concurrency.asyncio import rate_limit

from dataforge.config import PipelineConfig

LIMIT_PREFIX = "teacher:"


def teacher_limit_name(model: str) -> str:
    """``teacher:<model>``, with the characters Prefect refuses in names (``/ % & < >``)
    replaced: ``Qwen/Qwen2.5-7B`` -> ``teacher:Qwen_Qwen2.5-7B``."""
    return LIMIT_PREFIX + re.sub(r"[/%&<>]", "_", model)


def teacher_limit_settings(cfg: PipelineConfig) -> tuple[str, int, float] | None:
    """(name, slots, decay per second) of the shared limit, or None when there is none to keep
    (no ``teacher.requests_per_minute``, ``orchestration.global_teacher_limit: false``, or the
    Batch API, which the provider rate-limits per batch)."""
    rpm = cfg.teacher.requests_per_minute
    if not rpm or not cfg.orchestration.global_teacher_limit or cfg.teacher.mode == "batch":
        return None
    burst = cfg.orchestration.teacher_burst or max(1, int(rpm))
    return teacher_limit_name(cfg.teacher.model), burst, rpm / 60.0


def ensure_teacher_limit(cfg: PipelineConfig) -> str | None:
    """Create or update the shared limit from ``cfg``; returns its name (None: no limit).

    Runs with different ``rpm`` for the same model overwrite each other's setting: the last
    run to start decides, as the limit is one budget."""
    settings = teacher_limit_settings(cfg)
    if settings is None:
        return None
    name, slots, decay = settings
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit=slots, slot_decay_per_second=decay)
    return name


class TeacherSlot:
    """The ``acquire`` hook for a TeacherClient: waits for one slot of the named rate limit.

    A plain picklable object (it travels to Dask workers with the generation task); strict, so
    a limit deleted while a run is going is an error rather than silently no limit."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self) -> None:
        await rate_limit(self.name, occupy=1, strict=True)

    def __repr__(self) -> str:
        return f"TeacherSlot({self.name!r})"
