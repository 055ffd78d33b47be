"""Run bookkeeping: open a run, record each stage's result or failure, export, finish."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone

from dataforge.config import PipelineConfig
from dataforge.runner.curation import enabled_curation
from dataforge.runner.generation import enabled_generation
from dataforge.runner.io import StageResult
from dataforge.stages.registry import final_stage
from dataforge.store import Run, StageStatus, input_fingerprint
from dataforge.teacher import TeacherStats


def run_export(run: Run, cfg: PipelineConfig) -> StageResult:
    """Export the final stage's rows; redone whenever its input or the export config changed."""
    from dataforge.export import export_run
    from dataforge.store import read_manifest

    t0 = time.perf_counter()
    source = final_stage(cfg)
    fp = input_fingerprint([run.committed(source)])
    out = run.export_dir(cfg.export.name)
    m = read_manifest(out, run.filesystem)
    export_cfg = cfg.export.model_dump(mode="json")
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

def open_run(cfg: PipelineConfig, run_id: str | None = None) -> Run:
    """Create a run (or reopen ``run_id`` to resume it) and write its ``run.json``."""
    from dataforge.store import RunRecord, new_run_id, package_versions
    from dataforge.records import now_utc

    run = Run(cfg.data_root, run_id or new_run_id(cfg.name))
    if run.exists():
        rec = run.load_record()
        rec.status = "running"
        rec.error = None
        rec.config = cfg.snapshot()
        rec.versions = package_versions()
    else:
        rec = RunRecord(run_id=run.run_id, name=cfg.name, created_at=now_utc().isoformat(),
                        config=cfg.snapshot(), versions=package_versions())
    for s in (*enabled_generation(cfg), *enabled_curation(cfg), "export"):
        rec.stages.setdefault(s, StageStatus())
    run.save_record(rec)
    return run

def record_result(run: Run, result: StageResult) -> None:
    rec = run.load_record()
    st = rec.stages.setdefault(result.stage, StageStatus())
    st.status = "skipped" if result.skipped else "completed"
    st.rows_in, st.rows_kept, st.rows_dropped = result.rows_in, result.rows_kept, result.rows_dropped
    if not result.skipped:
        st.seconds = round(result.seconds, 3)
        st.teacher = result.teacher
        st.finished_at = datetime.now(timezone.utc).isoformat()
    if result.extra:
        st.extra = result.extra
    run.save_record(rec)

def record_failure(run: Run, stage: str | None, error: BaseException) -> None:
    rec = run.load_record()
    msg = f"{type(error).__name__}: {error}"
    if stage:
        rec.stages.setdefault(stage, StageStatus()).status = "failed"
        rec.stages[stage].error = msg
    rec.status = "failed"
    rec.error = msg
    run.save_record(rec)

def finish_run(run: Run, results: Sequence[StageResult], seconds: float) -> None:
    rec = run.load_record()
    rec.status = "completed"
    rec.seconds = round(seconds, 3)
    rec.teacher = sum_teacher(results)
    run.save_record(rec)
