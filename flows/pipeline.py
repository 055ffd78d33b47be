"""The dataforge pipeline as a Prefect flow: one task per stage, one per shard for a stage the
registry declares per-shard (heuristics, decontam, langid, pii); dedup signs each shard and groups
each LSH band in its own task. The stages, their order and how each runs come from the registry
(dataforge/stages/registry.py; ``dataforge stages`` lists them). Runs in-process on Prefect's
temporary local API by default (set ``PREFECT_API_URL`` to use a server; ``dataforge service
start`` runs one with the deployments of ``prefect.yaml``). Tasks run on threads or on Dask
(``runner`` section, flows/runners.py), are retried (``orchestration`` section), share the
teacher's rate limit with concurrent runs (flows/limits.py) and leave Prefect artifacts with the
funnel and drop reasons (flows/artifacts.py). ``stages`` runs a part of the pipeline (generation
only, curation and export only, ...).

    seeds ──► textbooks ─┐
                         ├─► curation stages in registry order (each reads the kept rows of the
    seeds ──► cot ───────┘   enabled stage before it) ─► export (the final stage's kept rows)
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
from prefect.futures import as_completed  # noqa: E402

from dataforge import runner  # noqa: E402
from dataforge.config import ConfigError, PipelineConfig, load_config  # noqa: E402
from dataforge.runner.generation import generation_preflight  # noqa: E402
from dataforge.runner.runs import budget_stop_result, locked_run, stop_run  # noqa: E402
from dataforge.stages.registry import CURATION, GENERATION, get_stage, stage_names  # noqa: E402
from dataforge.store import Run, StoreError, list_runs  # noqa: E402
from dataforge.tabular import limits_in_env  # noqa: E402
from dataforge.teacher.budget import BudgetExceeded, close_ledger, open_ledger  # noqa: E402
from dataforge.teacher.local import local_teacher  # noqa: E402
from flows.artifacts import publish_run_artifacts  # noqa: E402
from flows.limits import TeacherSlot, ensure_teacher_limit  # noqa: E402
from flows.runners import describe as describe_runner, task_limit, task_runner  # noqa: E402


@task(name="generate", task_run_name="{stage}", cache_policy=NO_CACHE)
def generation_task(run: Run, cfg: PipelineConfig, stage: str, base_url: str | None, limit: str | None = None
                    ) -> runner.StageResult:
    """A generation stage (textbooks, cot): its registered runner, against the teacher at ``base_url``.
    A stage refused by ``teacher.budget_usd`` returns a stopped result (no task failure, no retry)."""
    try:
        return get_stage(stage).run(run, cfg, base_url, acquire=TeacherSlot(limit) if limit else None)
    except BudgetExceeded as err:
        return budget_stop_result(stage, err)


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
    return runner.run_sharded_shard(run, cfg, stage, shard, path)


@task(name="curate", task_run_name="{stage}", cache_policy=NO_CACHE)
def whole_task(run: Run, cfg: PipelineConfig, stage: str, limit: str | None = None) -> runner.StageResult:
    try:
        return runner.run_whole(run, cfg, stage, acquire=TeacherSlot(limit) if limit else None)
    except BudgetExceeded as err:  # the judge refused by teacher.budget_usd: a clean stop
        return budget_stop_result(stage, err)


def _run_sharded(run: Run, cfg: PipelineConfig, stage: str) -> runner.StageResult:
    io = runner.curation_io(run, cfg, stage)
    if io.done():
        return io.previous_result()
    t0 = time.perf_counter()
    io.begin()
    shards = list(enumerate(runner.curation_inputs(run, cfg, stage)))
    futures = _submit_bounded(_retrying(shard_task, cfg), [(run, cfg, stage, i, p) for i, p in shards], cfg)
    return runner.commit_sharded(io, [f.result() for f in futures], t0)


def _submit_bounded(task_, calls: list[tuple], cfg: PipelineConfig) -> list:
    """``task_.submit(*args)`` for each of ``calls``, in order, with at most ``task_limit`` of them
    unfinished at once: each running shard task holds its shard, so this bounds a stage's memory
    (Prefect's thread pool would start them all). The next call goes out when *any* running task
    ends, not the oldest: shards differ in size, and waiting on the oldest left a worker idle
    while a small shard's successor waited behind a large one. Returns the futures in order."""
    limit = task_limit(cfg.runner)
    futures: list = []
    running: set = set()
    for args in calls:
        if limit is not None and len(running) >= limit:
            running.discard(next(as_completed(list(running))))
        future = task_.submit(*args)
        futures.append(future)
        running.add(future)
    return futures


@task(name="dedup-sign", task_run_name="dedup-sign-shard-{shard}", cache_policy=NO_CACHE)
def dedup_sign_task(run: Run, cfg: PipelineConfig, shard: int, path: Path):
    return runner.dedup_sign_shard(run, cfg, path)


@task(name="dedup-plan", cache_policy=NO_CACHE)
def dedup_plan_task(run: Run, cfg: PipelineConfig, paths: list[Path], parts: list):
    return runner.dedup_plan(run, cfg, paths, parts)


@task(name="dedup-band", task_run_name="dedup-band-{band}", cache_policy=NO_CACHE)
def dedup_band_task(plan, band: int):
    return runner.dedup_band(plan, band)


@task(name="dedup-finish", cache_policy=NO_CACHE)
def dedup_finish_task(run: Run, cfg: PipelineConfig, paths: list[Path], plan, per_band: list, parts: list
                      ) -> runner.StageResult:
    return runner.dedup_finish(run, cfg, paths, plan, per_band, parts)


def _run_dedup(run: Run, cfg: PipelineConfig) -> runner.StageResult:
    """Dedup spread over tasks, out of core: signatures per input shard (written to the run's
    dedup workspace), candidate pairs per LSH band (DuckDB), then verification, clustering and
    the output shard by shard in one task (dataforge/curate/dedup_ooc.py; the same result as
    ``apply_dedup`` in one process). Only small descriptions pass between tasks."""
    io = runner.dedup_io(run, cfg)
    if io.done():
        return io.previous_result()
    paths = runner.curation_inputs(run, cfg, "dedup")
    if not paths:
        return _retrying(whole_task, cfg).submit(run, cfg, "dedup").result()
    t0 = time.perf_counter()
    runner.dedup_begin(run, cfg)
    phases: dict[str, float] = {}

    def phase(name: str, futures: list) -> None:  # each phase's wall time, for run.json
        for f in futures:
            f.wait()
        phases[name] = round(time.perf_counter() - t0 - sum(phases.values()), 3)

    parts = _submit_bounded(_retrying(dedup_sign_task, cfg), [(run, cfg, i, p) for i, p in enumerate(paths)], cfg)
    phase("sign", parts)
    plan = _retrying(dedup_plan_task, cfg).submit(run, cfg, paths, parts)
    phase("plan", [plan])
    bands = runner.dedup_bands(cfg)
    per_band = _submit_bounded(_retrying(dedup_band_task, cfg), [(plan, b) for b in range(bands)], cfg)
    phase("bands", per_band)
    finish = _retrying(dedup_finish_task, cfg).submit(run, cfg, paths, plan, per_band, parts)
    phase("finish", [finish])
    result = finish.result()
    result.seconds = time.perf_counter() - t0
    result.extra = {**(result.extra or {}), "tasks": {"sign": len(parts), "bands": bands}, "phase_seconds": phases}
    return result


@task(name="export", cache_policy=NO_CACHE)
def export_task(run: Run, cfg: PipelineConfig) -> runner.StageResult:
    return runner.run_export(run, cfg)


def teacher_context(cfg: PipelineConfig, run: Run, stage: str | None = None):
    """The embedded teacher, started only while it is needed and only when the teacher is local:
    for generation (``stage`` None) while any generation stage is pending, for a curation stage
    that asks the teacher (the judge) while that stage is pending. Its clients reach it at
    ``teacher.resolved_base_url()``; the context yields that URL (None when nothing started)."""
    pending = runner.generation_pending(run, cfg) if stage is None else runner.teacher_stage_pending(run, cfg, stage)
    if cfg.teacher.provider == "local" and pending:
        return local_teacher(cfg.teacher, cfg.resolved_local_dir() / "teacher")
    return contextlib.nullcontext(None)


def _record(run: Run, results: list, result: runner.StageResult) -> None:
    results.append(result)
    runner.record_result(run, result)


def stage_groups() -> dict[str, list[str]]:
    """The groups a flow's ``stages`` parameter accepts besides stage names, from the registry."""
    return {"generation": stage_names(GENERATION), "curation": stage_names(CURATION), "export": ["export"]}


def select_stages(names: list[str] | None) -> set[str]:
    """The stages a flow's ``stages`` parameter selects (None: every stage). Names are stages
    (``textbooks``, ``dedup``, ``export``, ...) or groups: ``generation``, ``curation``, ``export``.
    A selected stage still runs only when the config enables it."""
    groups = stage_groups()
    every = {*stage_names(), "export"}
    if names is None:
        return every
    out: set[str] = set()
    for n in [names] if isinstance(names, str) else names:
        if n in groups:
            out.update(groups[n])
        elif n in every:
            out.add(n)
        else:
            choices = ", ".join([*groups, *stage_names()])
            raise ConfigError(f"stages: unknown stage {n!r} (choose from {choices})")
    if not out:
        raise ConfigError("stages: name at least one stage")
    return out


def resolve_run_id(cfg: PipelineConfig, run_id: str | None, selected: set[str]) -> str | None:
    """A part that generates nothing continues a run: ``run_id``, else the latest run of this
    pipeline (by name) under the data root. None means a new run."""
    if run_id or any(s in selected for s in runner.enabled_generation(cfg)):
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
    ``selected`` ones (see :func:`select_stages`). One writer per run: the run lock is held from
    opening the run to finishing it (a second writer is refused, naming the holder)."""
    selected = select_stages(None) if selected is None else selected
    # before any run is opened or teacher started: a generation stage's inputs resolve (ingest's sources)
    generation_preflight(cfg, selected)
    with limits_in_env(**cfg.inputs.model_dump()), locked_run(cfg, resolve_run_id(cfg, run_id, selected)) as run:
        open_ledger(run, cfg.teacher)  # teacher.budget_usd: the spend of every stage of this attempt
        try:
            return _run_locked(cfg, run, selected)
        finally:
            close_ledger(run)


def _run_locked(cfg: PipelineConfig, run: Run, selected: set[str]) -> Run:
    logger = get_run_logger()
    t0 = time.perf_counter()
    logger.info("run %s at %s (tasks on %s)", run.run_id, run.dir, describe_runner(cfg.runner))
    results: list[runner.StageResult] = []
    current: str | None = None
    generation = [s for s in runner.enabled_generation(cfg) if s in selected]
    try:
        current = "generation"
        if generation:
            limit = ensure_teacher_limit(cfg) if runner.generation_pending(run, cfg) else None
            with teacher_context(cfg, run) as base_url:
                futures = {name: _retrying(generation_task, cfg).submit(run, cfg, name, base_url, limit)
                           for name in generation}
                for name, fut in futures.items():
                    current = name
                    _record(run, results, fut.result())
            if any(r.stopped for r in results):  # teacher.budget_usd: committed stages stay, the rest waits
                return _stop(run, cfg, results, t0)

        for stage in runner.enabled_curation(cfg):
            if stage not in selected:
                continue
            current = stage
            if get_stage(stage).scope == "shard":
                _record(run, results, _run_sharded(run, cfg, stage))
            elif stage == "dedup":  # in parts: a task per shard to sign, a task per LSH band
                _record(run, results, _run_dedup(run, cfg))
            else:
                # a stage that asks the teacher (the judge) takes the same shared rate limit as generation
                limit = ensure_teacher_limit(cfg) if runner.teacher_stage_pending(run, cfg, stage) else None
                with teacher_context(cfg, run, stage):
                    _record(run, results, _retrying(whole_task, cfg).submit(run, cfg, stage, limit).result())
                if results[-1].stopped:
                    return _stop(run, cfg, results, t0)
        if "export" in selected:
            current = "export"
            _record(run, results, _retrying(export_task, cfg).submit(run, cfg).result())
    except BaseException as err:
        runner.record_failure(run, current, err)
        _publish(run, cfg, exported=False)
        raise
    runner.finish_run(run, results, time.perf_counter() - t0)
    _publish(run, cfg, exported="export" in selected)
    return run


def _stop(run: Run, cfg: PipelineConfig, results: list, t0: float) -> Run:
    """End an attempt stopped by ``teacher.budget_usd``: record ``stopped: budget``, publish, log
    one line. ``--resume`` under a raised budget continues (the cache answers what was asked)."""
    msg = stop_run(run, results, time.perf_counter() - t0)
    get_run_logger().warning("run %s %s", run.run_id, msg)
    _publish(run, cfg, exported=False)
    return run


def flow_config(config_path: str, data_root: str | None) -> PipelineConfig:
    """A flow's config: the YAML, its data root overridden by ``data_root`` or ``$DATAFORGE_DATA_ROOT``."""
    cfg = load_config(config_path)
    root = data_root or os.environ.get("DATAFORGE_DATA_ROOT")
    if root:
        cfg.data_root = root
    return cfg


@flow(name="dataforge-pipeline-tasks")
def pipeline_tasks(config_path: str, data_root: str | None = None, run_id: str | None = None,
                   stages: list[str] | None = None) -> str:
    """The pipeline's tasks under the task runner the config chose (a subflow of ``pipeline``)."""
    return run_pipeline(flow_config(config_path, data_root), run_id, select_stages(stages)).run_id


@flow(name="dataforge-pipeline")
def pipeline(config_path: str, data_root: str | None = None, run_id: str | None = None,
             stages: list[str] | None = None) -> str:
    """Run the pipeline described by the YAML at ``config_path``; returns the run id.

    ``data_root`` defaults to ``$DATAFORGE_DATA_ROOT``, then to the config's. ``run_id`` resumes
    that run. ``stages`` runs a part: stage names or the groups ``generation``, ``curation``,
    ``export`` (a part without generation continues the pipeline's latest run). With
    ``runner: {kind: dask}`` the tasks run on Dask in a subflow.
    """
    cfg = flow_config(config_path, data_root)
    selected = select_stages(stages)
    if cfg.runner.kind != "threads":
        on_runner = pipeline_tasks.with_options(task_runner=task_runner(cfg.runner))
        return on_runner(config_path, data_root, run_id, stages)
    # threads: the flow's own pool (Prefect's has no bound: sys.maxsize workers); the shard and
    # dedup tasks are submitted at most runner.workers at once (_submit_bounded)
    return run_pipeline(cfg, run_id, selected).run_id
