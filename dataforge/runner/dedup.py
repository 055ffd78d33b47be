"""Dedup in parts, out of core, so flows/ can run each as a task and memory stays bounded by a
shard plus the candidate pairs: signatures per shard (to disk), a plan (ranks, exact groups),
candidates per LSH band (DuckDB), then verification, clustering and the output written shard by
shard (:mod:`dataforge.curate.dedup_ooc`; the same result as ``apply_dedup`` on all rows)."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from dataforge.atomic import write_text_atomic
from dataforge.config import PipelineConfig
from dataforge.curate.dedup_ooc import RANK_COLUMNS, Plan, ShardSigns, Workspace
from dataforge.runner.curation import curation_inputs, curation_io, input_schema
from dataforge.runner.io import StageIO, StageResult
from dataforge.store import Run, manifest_entries


@dataclass(frozen=True)
class DedupPlan:
    """What the band and finishing tasks need (small: it travels between tasks)."""

    folder: str
    plan: Plan
    dedup: Any  # the DedupConfig


def dedup_io(run: Run, cfg: PipelineConfig) -> StageIO:
    return curation_io(run, cfg, "dedup")


def workspace_dir(run: Run) -> Path:
    """The intermediate files' folder: inside the run on a local data root, else in the local
    temporary folder (the tasks of one flow share a machine or a disk)."""
    if run.is_local:
        return Path(run.dir) / ".dedup-work"
    return Path(tempfile.gettempdir()) / f"dataforge-dedup-{run.run_id}"


def dedup_begin(run: Run, cfg: PipelineConfig) -> None:
    """Start the stage: its folders cleared, a fresh workspace with the inputs' row offsets."""
    dedup_io(run, cfg).begin()
    Workspace(workspace_dir(run), cfg.dedup).remove()
    _offsets(run, cfg)


def _offsets(run: Run, cfg: PipelineConfig) -> dict[str, list[int]]:
    """Each input shard's [index, first global row], from the input stages' manifests: worked
    out once per dedup and kept in the workspace (``inputs.json``), so that each of many
    signature tasks does not read every manifest again."""
    folder = workspace_dir(run)
    cached = folder / "inputs.json"
    if cached.exists():
        return json.loads(cached.read_text())
    rows: dict[str, int] = {}
    for stage in curation_io(run, cfg, "dedup").inputs:
        for p, entry in manifest_entries(run.stage_dir(stage), run.filesystem):
            rows[str(p)] = int(entry.get("rows", 0))
    out, offset = {}, 0
    for i, p in enumerate(curation_inputs(run, cfg, "dedup")):
        out[str(p)] = [i, offset]
        offset += rows[str(p)] if str(p) in rows else run.read_file(p, ["id"]).num_rows
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cached, json.dumps(out))
    return out


def dedup_sign_shard(run: Run, cfg: PipelineConfig, path: Path) -> ShardSigns:
    """Signatures and band keys of one input shard, written to the workspace."""
    shard, offset = _offsets(run, cfg)[str(path)]
    ws = Workspace(workspace_dir(run), cfg.dedup)
    return ws.sign_shard(shard, offset, run.read_file(path, ["text"]).column("text"))


def dedup_plan(run: Run, cfg: PipelineConfig, paths: Sequence[Path], parts: Sequence[ShardSigns]) -> DedupPlan:
    """Survivor ranks and exact groups over every input row (reads the rank columns only)."""
    tables = []
    for p in paths:
        names = run.file_schema(p).names
        tables.append(run.read_file(p, [c for c in RANK_COLUMNS if c in names]))
    rank_table = (pa.concat_tables(tables, promote_options="permissive") if tables
                  else input_schema(dedup_io(run, cfg)).empty_table())
    rank_table = rank_table.select([c for c in RANK_COLUMNS if c in rank_table.column_names])
    folder = workspace_dir(run)
    plan = Workspace(folder, cfg.dedup).plan(sorted(parts, key=lambda s: s.shard), rank_table)
    return DedupPlan(str(folder), plan, cfg.dedup)


def dedup_bands(cfg: PipelineConfig) -> int:
    """How many LSH bands (band tasks) dedup has for this config."""
    from dataforge.curate.dedup import lsh_params

    return lsh_params(cfg.dedup)[0]


def dedup_band(plan: DedupPlan, band: int) -> str:
    """One band's candidate pairs, saved in the workspace; returns the file's path."""
    return str(Workspace(plan.folder, plan.dedup).band_candidates(plan.plan, band))


def dedup_finish(run: Run, cfg: PipelineConfig, paths: Sequence[Path], plan: DedupPlan, per_band: Sequence[str],
                 parts: Sequence[ShardSigns]) -> StageResult:
    """Verification, clustering, and the stage's output written shard by shard and committed
    (the same rows, in the same order, as ``apply_dedup`` on all input rows)."""
    t0 = time.perf_counter()
    io = dedup_io(run, cfg)
    ws = Workspace(plan.folder, cfg.dedup)
    decisions = ws.decide(plan.plan, [Path(p) for p in per_band])
    decide_seconds = time.perf_counter() - t0
    by_shard = {s.shard: s for s in parts}
    schema = (pa.unify_schemas([run.file_schema(p) for p in paths], promote_options="permissive") if paths
              else input_schema(io))
    ids = ws.ids()

    def write(i: int, p: Path) -> tuple[list, list, pa.Schema, int, int, int]:
        table = pa.concat_tables([schema.empty_table(), run.read_file(p)], promote_options="permissive")
        kept, rejected = ws.shard_tables(table, by_shard[i].offset, decisions, ids)
        del table  # kept and rejected are copies: the shard as read is not held while they are written
        ke, re_ = io.write_shard(i, kept, rejected)
        return ke, re_, kept.schema, kept.num_rows + rejected.num_rows, kept.num_rows, rejected.num_rows

    # shards are read, split and written on finish_threads(cfg) threads (Parquet's reading,
    # compression and writing release the GIL); each holds one shard at a time
    with ThreadPoolExecutor(finish_threads(cfg)) as pool:
        done = list(pool.map(write, range(len(paths)), paths))
    kept_entries = [e for d in done for e in d[0]]
    rej_entries = [e for d in done for e in d[1]]
    kept_schema = done[-1][2] if done else None
    rows_in, rows_kept, rows_dropped = (sum(d[k] for d in done) for k in (3, 4, 5))
    if kept_schema is None:
        from dataforge.curate.dedup import apply_dedup

        kept_schema = apply_dedup(schema.empty_table(), cfg.dedup)[0].schema
    io.commit(kept_entries, rej_entries, kept_schema)
    ws.remove()
    return StageResult("dedup", rows_in=rows_in, rows_kept=rows_kept, rows_dropped=rows_dropped,
                       seconds=time.perf_counter() - t0, extra={"decide_seconds": round(decide_seconds, 3)})


def finish_threads(cfg: PipelineConfig) -> int:
    """Threads that write dedup's output shards at once: the threads runner's workers, or the
    threads of one Dask worker (the finishing task runs on one)."""
    return cfg.runner.thread_workers() if cfg.runner.kind == "threads" else cfg.runner.threads_per_worker


def run_dedup(run: Run, cfg: PipelineConfig) -> StageResult:
    """The whole stage in this process, part after part (the in-process runner's path)."""
    io = dedup_io(run, cfg)
    if io.done():
        return io.previous_result()
    t0 = time.perf_counter()
    dedup_begin(run, cfg)
    paths = curation_inputs(run, cfg, "dedup")
    parts = [dedup_sign_shard(run, cfg, p) for p in paths]
    plan = dedup_plan(run, cfg, paths, parts)
    per_band = [dedup_band(plan, b) for b in range(plan.plan.bands)]
    result = dedup_finish(run, cfg, paths, plan, per_band, parts)
    result.seconds = time.perf_counter() - t0
    return result

