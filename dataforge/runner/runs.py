"""Run bookkeeping: open a run, record each stage's result or failure, export, finish.

Every ``run.json`` change is one read-change-write under the run lock (:meth:`Run.update_record`).
The whole run is one writer's: the caller holds ``Run.lock()`` from before :func:`open_run` to
after :func:`finish_run` / :func:`record_failure` (see :func:`locked_run`); without it each
write takes the lock for itself, and fails naming the holder when another process has it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone

from dataforge.config import PipelineConfig
from dataforge.runner.curation import enabled_curation
from dataforge.runner.generation import enabled_generation
from dataforge.runner.io import StageResult
from dataforge.stages.registry import final_stage
from dataforge.store import ManifestError, Run, StageStatus, input_fingerprint
from dataforge.teacher import TeacherStats


def run_export(run: Run, cfg: PipelineConfig) -> StageResult:
    """Export the final stage's rows; redone whenever its input or the export config changed."""
    from dataforge.export import export_run
    from dataforge.store import read_manifest

    t0 = time.perf_counter()
    source = final_stage(cfg)
    fp = input_fingerprint([run.committed(source)])
    out = run.export_dir(cfg.export.name)
    try:
        m = read_manifest(out, run.filesystem)
    except ManifestError:  # a truncated or corrupt export manifest: export again
        m = None
    export_cfg = cfg.export.model_dump(mode="json")
    if "tokens" in cfg.export.kinds:  # a tokenizer changed in place is a changed export
        from dataforge.export import tokenizer_sha256
        export_cfg["tokenizer_sha256"] = tokenizer_sha256(cfg.export.tokenizer)
    if m and m.get("input_fingerprint") == fp and m.get("export_config") == export_cfg:
        return StageResult("export", rows_in=m["rows"], rows_kept=m["rows"], skipped=True)
    _, manifest = export_run(run, source, cfg.export.name, cfg.export.formats, export_cfg=cfg.export,
                             extra={"input_fingerprint": fp, "formats": list(cfg.export.formats),
                                    "export_config": export_cfg})
    rows = manifest["rows"]
    return StageResult("export", rows_in=rows, rows_kept=rows, seconds=time.perf_counter() - t0,
                       extra={"path": str(out), "counts": manifest.get("counts", {})})

def sum_teacher(results: Sequence[StageResult]) -> dict:
    total = TeacherStats()
    for r in results:
        if r.teacher:
            total.merge(TeacherStats(**r.teacher))
    return total.as_dict()

def run_for(cfg: PipelineConfig, run_id: str | None = None) -> Run:
    """The :class:`Run` ``run_id`` (a new id when None), nothing written: lock it, then
    :func:`open_run` it."""
    from dataforge.store import new_run_id

    return Run(cfg.data_root, run_id or new_run_id(cfg.name))


def open_run(cfg: PipelineConfig, run_id: str | Run | None = None) -> Run:
    """Create a run (or reopen ``run_id`` to resume it) and write its ``run.json``. ``run_id``
    may be a :class:`Run` (from :func:`run_for`, already locked)."""
    from dataforge.store import package_versions

    run = run_id if isinstance(run_id, Run) else run_for(cfg, run_id)
    took = not run.holds_lock()
    if took:  # read and write run.json as one step
        run.acquire_lock()
    try:
        if run.exists():
            rec = run.load_record()
            rec.status = "running"
            rec.error = None
            rec.config = cfg.snapshot()
            rec.versions = package_versions()
        else:
            from dataforge.records import now_utc
            from dataforge.store import RunRecord

            rec = RunRecord(run_id=run.run_id, name=cfg.name, created_at=now_utc().isoformat(),
                            config=cfg.snapshot(), versions=package_versions())
        for s in (*enabled_generation(cfg), *enabled_curation(cfg), "export"):
            rec.stages.setdefault(s, StageStatus())
        run.save_record(rec)
    finally:
        if took:
            run.release_lock()
    return run


def run_lock_timeout() -> float | None:
    """How long a second writer of a run waits for its lock: ``$DATAFORGE_RUN_LOCK_TIMEOUT``
    seconds (``inf``: for ever); by default 0, refused at once naming the holder."""
    import math
    import os

    text = os.environ.get("DATAFORGE_RUN_LOCK_TIMEOUT", "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"DATAFORGE_RUN_LOCK_TIMEOUT must be a number of seconds or inf, got {text!r}") from None
    return None if math.isinf(value) else max(0.0, value)


@contextlib.contextmanager
def locked_run(cfg: PipelineConfig, run_id: str | None = None, timeout: float | None | str = "env"
               ) -> Iterator[Run]:
    """Lock the run (``Run.lock(timeout)``: one writer per run; another is refused naming
    host, pid and start time, or waits ``timeout`` seconds, by default
    :func:`run_lock_timeout`), open it, yield it; the lock is given back when the block ends,
    however it ends."""
    run = run_for(cfg, run_id)
    with run.lock(run_lock_timeout() if timeout == "env" else timeout):
        yield open_run(cfg, run)


def budget_stop_result(stage: str, err: BaseException) -> StageResult:
    """What a stage refused by ``teacher.budget_usd`` returns instead of raising: nothing of it is
    committed (its answers are in the request cache), and the run stops cleanly."""
    return StageResult(stage, stopped={"reason": "budget", "budget_usd": getattr(err, "budget_usd", None),
                                       "spent_usd": round(getattr(err, "spent_usd", 0.0), 8),
                                       "message": str(err)})


def _budget_fields(run: Run) -> dict:
    """``run.json``'s budget fields (``spent_usd`` over every attempt, ``budget_usd``, and
    ``stopped: budget`` when a request was refused); empty without a budget."""
    from dataforge.teacher.budget import peek_ledger

    ledger = peek_ledger(run)
    return ledger.record() if ledger is not None else {}


def stop_run(run: Run, results: Sequence[StageResult], seconds: float) -> str:
    """Record a run stopped at its budget: ``status: stopped``, ``teacher.stopped: budget`` with
    the spend and the budget; committed stages stay committed. Returns the one-line message."""
    fields = _budget_fields(run)
    stopped = next((r.stopped for r in results if r.stopped), {}) or {}
    spent = fields.get("spent_usd", stopped.get("spent_usd"))
    budget = fields.get("budget_usd", stopped.get("budget_usd"))
    stages = ", ".join(r.stage for r in results if r.stopped)
    msg = (f"stopped: budget (spent ${spent:.6f} of ${budget:.6f}; not committed: {stages}, answers so far are "
           f"cached; raise teacher.budget_usd and resume with --resume {run.run_id})")

    def change(rec) -> None:
        rec.status = "stopped"
        rec.seconds = round(seconds, 3)
        rec.error = msg
        rec.teacher = {**sum_teacher(results), **fields, "stopped": "budget"}
    run.update_record(change)
    return msg


def record_result(run: Run, result: StageResult) -> None:
    def change(rec) -> None:
        st = rec.stages.setdefault(result.stage, StageStatus())
        if result.stopped:
            st.status = "stopped"
            st.error = f"stopped: {result.stopped.get('reason')} ({result.stopped.get('message')})"
            st.extra = {"stopped": result.stopped}
            return
        st.status = "skipped" if result.skipped else "completed"
        st.rows_in, st.rows_kept, st.rows_dropped = result.rows_in, result.rows_kept, result.rows_dropped
        if not result.skipped:
            st.seconds = round(result.seconds, 3)
            st.teacher = result.teacher
            st.finished_at = datetime.now(timezone.utc).isoformat()
        if result.extra:
            st.extra = result.extra
    run.update_record(change)


def record_failure(run: Run, stage: str | None, error: BaseException) -> None:
    msg = f"{type(error).__name__}: {error}"

    def change(rec) -> None:
        if stage:
            rec.stages.setdefault(stage, StageStatus()).status = "failed"
            rec.stages[stage].error = msg
        rec.status = "failed"
        rec.error = msg
        fields = _budget_fields(run)
        if fields:  # what this attempt spent counts against the budget on resume
            rec.teacher = {**(rec.teacher or {}), "spent_usd": fields["spent_usd"], "budget_usd": fields["budget_usd"]}
    run.update_record(change)


def finish_run(run: Run, results: Sequence[StageResult], seconds: float) -> None:
    def change(rec) -> None:
        rec.status = "completed"
        rec.seconds = round(seconds, 3)
        rec.teacher = {**sum_teacher(results), **_budget_fields(run)}
    run.update_record(change)
