"""The dataforge pipeline as a Prefect flow: one task per stage, one per shard where a stage
has several (heuristics, decontam); dedup signs each shard and groups each LSH band in its own
task. Runs in-process on Prefect's temporary local API by default (set
``PREFECT_API_URL`` to use a server; ``dataforge service start`` runs one with the deployments of
``prefect.yaml``). Tasks run on threads or on Dask (``runner`` section, flows/runners.py), are
retried (``orchestration`` section), share the teacher's rate limit with concurrent runs
(flows/limits.py) and leave Prefect artifacts with the funnel and drop reasons (flows/artifacts.py).
``stages`` runs a part of the pipeline (generation only, curation and export only, ...).

    seeds ──► textbooks ─┐
                         ├─► heuristics (per shard) ─► quality ─► dedup (per shard, per band) ─► decontam ─► export
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
from dataforge.config import ConfigError, PipelineConfig, load_config  # noqa: E402
from dataforge.store import Run, StoreError, list_runs  # noqa: E402
from dataforge.teacher.local import local_teacher  # noqa: E402
from flows.artifacts import publish_run_artifacts  # noqa: E402
from flows.limits import TeacherSlot, ensure_teacher_limit  # noqa: E402
from flows.runners import describe as describe_runner, task_runner  # noqa: E402


@task(name="textbooks", cache_policy=NO_CACHE)
def textbooks_task(run: Run, cfg: PipelineConfig, base_url: str | None, limit: str | None = None
                   ) -> stages.StageResult:
    return stages.run_textbooks(run, cfg, base_url, acquire=TeacherSlot(limit) if limit else None)


@task(name="cot", cache_policy=NO_CACHE)
def cot_task(run: Run, cfg: PipelineConfig, base_url: str | None, limit: str | None = None) -> stages.StageResult:
    return stages.run_cot(run, cfg, base_url, acquire=TeacherSlot(limit) if limit else None)


# errors that come back the same on a retry: a bad config, a stage's missing input, a bug
_NOT_RETRIED = (ConfigError, StoreError, ValueError, TypeError, KeyError, AttributeError, AssertionError)


def _worth_retrying(task_, task_run, state) -> bool:
    return not isinstance(state.data, _NOT_RETRIED)


def _retrying(task_, cfg: PipelineConfig):
    """``task_`` with the config's retries: a retried stage is idempotent (it clears what an
    interrupted attempt left, skips what is committed, and the teacher cache answers what was
    already asked)."""
    o = cfg.orchestration
    return task_.with_options(retries=o.retries, retry_delay_seconds=o.retry_delay_seconds,
                              retry_condition_fn=_worth_retrying)


@task(name="curate-shard", task_run_name="{stage}-shard-{shard}", cache_policy=NO_CACHE)
def shard_task(run: Run, cfg: PipelineConfig, stage: str, shard: int, path: Path):
    return stages.run_sharded_shard(run, cfg, stage, shard, path)


@task(name="curate", task_run_name="{stage}", cache_policy=NO_CACHE)
def whole_task(run: Run, cfg: PipelineConfig, stage: str, limit: str | None = None) -> stages.StageResult:
    return stages.run_whole(run, cfg, stage, acquire=TeacherSlot(limit) if limit else None)


def _run_sharded(run: Run, cfg: PipelineConfig, stage: str) -> stages.StageResult:
    io = stages.curation_io(run, cfg, stage)
    if io.done():
        return io.previous_result()
    t0 = time.perf_counter()
    io.begin()
    shards = list(enumerate(stages.curation_inputs(run, cfg, stage)))
    futures = [_retrying(shard_task, cfg).submit(run, cfg, stage, i, p) for i, p in shards]
    return stages.commit_sharded(io, [f.result() for f in futures], t0)


@task(name="dedup-sign", task_run_name="dedup-sign-shard-{shard}", cache_policy=NO_CACHE)
def dedup_sign_task(run: Run, cfg: PipelineConfig, shard: int, path: Path):
    return stages.dedup_sign_shard(run, cfg, path)


@task(name="dedup-plan", cache_policy=NO_CACHE)
def dedup_plan_task(run: Run, cfg: PipelineConfig, paths: list[Path], parts: list):
    return stages.dedup_plan(run, cfg, paths, parts)


@task(name="dedup-band", task_run_name="dedup-band-{band}", cache_policy=NO_CACHE)
def dedup_band_task(plan, band: int):
    return stages.dedup_band(plan, band)


@task(name="dedup-finish", cache_policy=NO_CACHE)
def dedup_finish_task(run: Run, cfg: PipelineConfig, paths: list[Path], plan, per_band: list, parts: list
                      ) -> stages.StageResult:
    return stages.dedup_finish(run, cfg, paths, plan, per_band, parts)


def _run_dedup(run: Run, cfg: PipelineConfig) -> stages.StageResult:
    """Dedup spread over tasks: signatures per input shard, candidate pairs per LSH band, then
    verification, clustering and the commit in one task (dataforge/curate/dedup_parts.py; the
    same result as ``apply_dedup`` in one process). Futures are handed from task to task, so on
    Dask the signature arrays move between workers without passing through the flow."""
    io = stages.dedup_io(run, cfg)
    if io.done():
        return io.previous_result()
    paths = stages.curation_inputs(run, cfg, "dedup")
    if not paths:
        return _retrying(whole_task, cfg).submit(run, cfg, "dedup").result()
    t0 = time.perf_counter()
    io.begin()
    parts = [_retrying(dedup_sign_task, cfg).submit(run, cfg, i, p) for i, p in enumerate(paths)]
    plan = _retrying(dedup_plan_task, cfg).submit(run, cfg, paths, parts)
    bands = stages.dedup_bands(cfg)
    per_band = [_retrying(dedup_band_task, cfg).submit(plan, b) for b in range(bands)]
    result = _retrying(dedup_finish_task, cfg).submit(run, cfg, paths, plan, per_band, parts).result()
    result.seconds = time.perf_counter() - t0
    result.extra = {**(result.extra or {}), "tasks": {"sign": len(parts), "bands": bands}}
    return result


@task(name="export", cache_policy=NO_CACHE)
def export_task(run: Run, cfg: PipelineConfig) -> stages.StageResult:
    return stages.run_export(run, cfg)


def _teacher_context(cfg: PipelineConfig, run: Run):
    """The embedded teacher runs only while generation needs it (and only when local)."""
    if cfg.teacher.provider == "local" and stages.generation_pending(run, cfg):
        return local_teacher(cfg.teacher, cfg.resolved_local_dir() / "teacher")
    return contextlib.nullcontext(None)


def _stage_teacher(cfg: PipelineConfig, run: Run, stage: str):
    """A curation stage that asks the teacher (the judge) gets the embedded one while it is
    pending; its client reaches it at ``teacher.resolved_base_url()``."""
    if cfg.teacher.provider == "local" and stages.teacher_stage_pending(run, cfg, stage):
        return local_teacher(cfg.teacher, cfg.resolved_local_dir() / "teacher")
    return contextlib.nullcontext(None)


def _record(run: Run, results: list, result: stages.StageResult) -> None:
    results.append(result)
    stages.record_result(run, result)


STAGE_GROUPS = {"generation": stages.GENERATION_STAGES, "curation": stages.CURATION_STAGES, "export": ("export",)}


def select_stages(names: list[str] | None) -> set[str]:
    """The stages a flow's ``stages`` parameter selects (None: every stage). Names are stages
    (``textbooks``, ``dedup``, ``export``, ...) or groups: ``generation``, ``curation``, ``export``.
    A selected stage still runs only when the config enables it."""
    every = {*stages.GENERATION_STAGES, *stages.CURATION_STAGES, "export"}
    if names is None:
        return every
    out: set[str] = set()
    for n in [names] if isinstance(names, str) else names:
        if n in STAGE_GROUPS:
            out.update(STAGE_GROUPS[n])
        elif n in every:
            out.add(n)
        else:
            choices = ", ".join([*STAGE_GROUPS, *stages.GENERATION_STAGES, *stages.CURATION_STAGES])
            raise ConfigError(f"stages: unknown stage {n!r} (choose from {choices})")
    if not out:
        raise ConfigError("stages: name at least one stage")
    return out


def resolve_run_id(cfg: PipelineConfig, run_id: str | None, selected: set[str]) -> str | None:
    """A part that generates nothing continues a run: ``run_id``, else the latest run of this
    pipeline (by name) under the data root. None means a new run."""
    if run_id or any(s in selected for s in stages.enabled_generation(cfg)):
        return run_id
    mine = [r for r in list_runs(cfg.data_root) if r.load_record().name == cfg.name]
    if not mine:
        raise ConfigError(f"stages {sorted(selected)}: these continue a run, but {cfg.data_root} has no run of "
                          f"pipeline {cfg.name!r} (run generation first, or pass run_id)")
    return mine[-1].run_id


def _publish(run: Run, cfg: PipelineConfig, exported: bool) -> None:
    """The run's Prefect artifacts; a failure here is logged, never the run's failure."""
    if not run.is_local:
        get_run_logger().info("no Prefect artifacts for a run on %s (the warehouse reads local files)",
                              run.filesystem.type_name)
        return
    try:
        publish_run_artifacts(run, cfg.name, str(run.export_dir(cfg.export.name)) if exported else None)
    except Exception as err:  # noqa: BLE001 - artifacts are a report, the data is committed
        get_run_logger().warning("could not publish the run's artifacts: %s: %s", type(err).__name__, err)


def run_pipeline(cfg: PipelineConfig, run_id: str | None = None, selected: set[str] | None = None) -> Run:
    """Run (or resume) the pipeline for ``cfg`` inside the current flow: every stage, or the
    ``selected`` ones (see :func:`select_stages`)."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    selected = select_stages(None) if selected is None else selected
    run = stages.open_run(cfg, resolve_run_id(cfg, run_id, selected))
    logger.info("run %s at %s (tasks on %s)", run.run_id, run.dir, describe_runner(cfg.runner))
    results: list[stages.StageResult] = []
    current: str | None = None
    generation = [s for s in stages.enabled_generation(cfg) if s in selected]
    try:
        current = "generation"
        if generation:
            limit = ensure_teacher_limit(cfg) if stages.generation_pending(run, cfg) else None
            with _teacher_context(cfg, run) as base_url:
                gen_tasks = {"textbooks": textbooks_task, "cot": cot_task}
                futures = {name: _retrying(gen_tasks[name], cfg).submit(run, cfg, base_url, limit)
                           for name in generation}
                for name, fut in futures.items():
                    current = name
                    _record(run, results, fut.result())

        for stage in stages.enabled_curation(cfg):
            if stage not in selected:
                continue
            current = stage
            if stage in stages.SHARDED_STAGES:
                _record(run, results, _run_sharded(run, cfg, stage))
            elif stage == "dedup":
                _record(run, results, _run_dedup(run, cfg))
            else:
                # a stage that asks the teacher (the judge) takes the same shared rate limit as generation
                limit = ensure_teacher_limit(cfg) if stages.teacher_stage_pending(run, cfg, stage) else None
                with _stage_teacher(cfg, run, stage):
                    _record(run, results, _retrying(whole_task, cfg).submit(run, cfg, stage, limit).result())
        if "export" in selected:
            current = "export"
            _record(run, results, _retrying(export_task, cfg).submit(run, cfg).result())
    except BaseException as err:
        stages.record_failure(run, current, err)
        _publish(run, cfg, exported=False)
        raise
    stages.finish_run(run, results, time.perf_counter() - t0)
    _publish(run, cfg, exported="export" in selected)
    return run


def _config(config_path: str, data_root: str | None) -> PipelineConfig:
    cfg = load_config(config_path)
    root = data_root or os.environ.get("DATAFORGE_DATA_ROOT")
    if root:
        cfg.data_root = root
    return cfg


@flow(name="dataforge-pipeline-tasks")
def pipeline_tasks(config_path: str, data_root: str | None = None, run_id: str | None = None,
                   stages: list[str] | None = None) -> str:
    """The pipeline's tasks under the task runner the config chose (a subflow of ``pipeline``)."""
    return run_pipeline(_config(config_path, data_root), run_id, select_stages(stages)).run_id


@flow(name="dataforge-pipeline")
def pipeline(config_path: str, data_root: str | None = None, run_id: str | None = None,
             stages: list[str] | None = None) -> str:
    """Run the pipeline described by the YAML at ``config_path``; returns the run id.

    ``data_root`` defaults to ``$DATAFORGE_DATA_ROOT``, then to the config's. ``run_id`` resumes
    that run. ``stages`` runs a part: stage names or the groups ``generation``, ``curation``,
    ``export`` (a part without generation continues the pipeline's latest run). With
    ``runner: {kind: dask}`` the tasks run on Dask in a subflow.
    """
    cfg = _config(config_path, data_root)
    selected = select_stages(stages)
    if cfg.runner.kind != "threads":
        on_runner = pipeline_tasks.with_options(task_runner=task_runner(cfg.runner))
        return on_runner(config_path, data_root, run_id, stages)
    return run_pipeline(cfg, run_id, selected).run_id
