"""The dataforge pipeline as a Prefect flow: one task per stage, one per shard where a stage
has several (heuristics). Runs in-process on Prefect's temporary local API by default (set
``PREFECT_API_URL`` to use a server).

    seeds ──► textbooks ─┐
                         ├─► heuristics (per shard) ─► quality (per shard) ─► dedup ─► decontam ─► export
    seeds ──► cot ───────┘
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

# Prefect's temporary server needs longer than its 20 s default on a busy 2-core machine the
# first time (database migrations); analytics would phone home, which this network refuses.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from dataforge import stages  # noqa: E402
from dataforge.config import PipelineConfig, load_config  # noqa: E402
from dataforge.store import Run  # noqa: E402
from dataforge.teacher.local import local_teacher  # noqa: E402


@task(name="textbooks", cache_policy=NO_CACHE)
def textbooks_task(run: Run, cfg: PipelineConfig, base_url: str | None) -> stages.StageResult:
    return stages.run_textbooks(run, cfg, base_url)


@task(name="cot", cache_policy=NO_CACHE)
def cot_task(run: Run, cfg: PipelineConfig, base_url: str | None) -> stages.StageResult:
    return stages.run_cot(run, cfg, base_url)


@task(name="curate-shard", task_run_name="{stage}-shard-{shard}", cache_policy=NO_CACHE)
def shard_task(run: Run, cfg: PipelineConfig, stage: str, shard: int, path: Path):
    return stages.run_sharded_shard(run, cfg, stage, shard, path)


@task(name="curate", task_run_name="{stage}", cache_policy=NO_CACHE)
def whole_task(run: Run, cfg: PipelineConfig, stage: str) -> stages.StageResult:
    return stages.run_whole(run, cfg, stage)


def _run_sharded(run: Run, cfg: PipelineConfig, stage: str) -> stages.StageResult:
    io = stages.curation_io(run, cfg, stage)
    if io.done():
        return io.previous_result()
    t0 = time.perf_counter()
    io.begin()
    shards = list(enumerate(stages.curation_inputs(run, cfg, stage)))
    futures = [shard_task.submit(run, cfg, stage, i, p) for i, p in shards]
    return stages.commit_sharded(io, [f.result() for f in futures], t0)


@task(name="export", cache_policy=NO_CACHE)
def export_task(run: Run, cfg: PipelineConfig) -> stages.StageResult:
    return stages.run_export(run, cfg)


def _teacher_context(cfg: PipelineConfig, run: Run):
    """The embedded teacher runs only while generation needs it (and only when local)."""
    if cfg.teacher.provider == "local" and stages.generation_pending(run, cfg):
        return local_teacher(cfg.teacher, run.data_root / "teacher")
    return contextlib.nullcontext(None)


def _record(run: Run, results: list, result: stages.StageResult) -> None:
    results.append(result)
    stages.record_result(run, result)


def run_pipeline(cfg: PipelineConfig, run_id: str | None = None) -> Run:
    """Run (or resume) the whole pipeline for ``cfg`` inside the current flow."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    run = stages.open_run(cfg, run_id)
    logger.info("run %s at %s", run.run_id, run.dir)
    results: list[stages.StageResult] = []
    current: str | None = None
    try:
        current = "generation"
        with _teacher_context(cfg, run) as base_url:
            futures = {}
            if cfg.textbooks.enabled:
                futures["textbooks"] = textbooks_task.submit(run, cfg, base_url)
            if cfg.cot.enabled:
                futures["cot"] = cot_task.submit(run, cfg, base_url)
            for name, fut in futures.items():
                current = name
                _record(run, results, fut.result())

        for stage in stages.enabled_curation(cfg):
            current = stage
            if stage in stages.SHARDED_STAGES:
                _record(run, results, _run_sharded(run, cfg, stage))
            else:
                _record(run, results, whole_task(run, cfg, stage))
        current = "export"
        _record(run, results, export_task(run, cfg))
    except BaseException as err:
        stages.record_failure(run, current, err)
        raise
    stages.finish_run(run, results, time.perf_counter() - t0)
    return run


@flow(name="dataforge-pipeline")
def pipeline(config_path: str, data_root: str | None = None, run_id: str | None = None) -> str:
    """Run the pipeline described by the YAML at ``config_path``; returns the run id."""
    cfg = load_config(config_path)
    if data_root:
        cfg.data_root = data_root
    return run_pipeline(cfg, run_id).run_id
