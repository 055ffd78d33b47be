"""Dedup in parts, so flows/ can run each as a task: signatures per shard, candidates per LSH
band, then verification, clustering and the commit (the same result as the whole stage)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from dataforge.config import PipelineConfig
from dataforge.runner.curation import curation_io, input_schema, read_inputs
from dataforge.runner.io import StageIO, StageResult
from dataforge.store import Run


def dedup_io(run: Run, cfg: PipelineConfig) -> StageIO:
    return curation_io(run, cfg, "dedup")


def dedup_sign_shard(run: Run, cfg: PipelineConfig, path: Path) -> Any:
    """Signatures of one input shard of dedup (uint32 ``[n, num_perm]``, exact hashes, lengths)."""
    from dataforge.curate.dedup_parts import sign_shard

    return sign_shard(run.read_file(path, ["text"]).column("text"), cfg.dedup)

def dedup_plan(run: Run, cfg: PipelineConfig, paths: Sequence[Path], parts: Sequence[Any]) -> Any:
    """Survivor ranks and exact groups over every input row (reads the rank columns only)."""
    from dataforge.curate.dedup_parts import RANK_COLUMNS, plan_dedup

    tables = []
    for p in paths:
        names = run.file_schema(p).names
        tables.append(run.read_file(p, [c for c in RANK_COLUMNS if c in names]))
    rank_table = (pa.concat_tables(tables, promote_options="permissive") if tables
                  else input_schema(dedup_io(run, cfg)).empty_table())
    return plan_dedup(rank_table.select([c for c in RANK_COLUMNS if c in rank_table.column_names]), parts, cfg.dedup)

def dedup_bands(cfg: PipelineConfig) -> int:
    """How many LSH bands (band tasks) dedup has for this config."""
    from dataforge.curate.dedup import lsh_params

    return lsh_params(cfg.dedup)[0]

def dedup_band(plan: Any, band: int) -> Any:
    from dataforge.curate.dedup_parts import band_candidates

    return band_candidates(plan, band)

def dedup_finish(run: Run, cfg: PipelineConfig, paths: Sequence[Path], plan: Any, per_band: Sequence[Any],
                 parts: Sequence[Any]) -> StageResult:
    """Verification, clustering, and the stage's output written and committed (as
    :func:`run_whole` does for ``apply_dedup``, with the same result)."""
    from dataforge.curate.dedup_parts import finish_dedup

    t0 = time.perf_counter()
    io = dedup_io(run, cfg)
    table = read_inputs(run, io, paths)
    kept, rejected = finish_dedup(table, plan, per_band, parts, cfg.dedup)
    ke, re_ = io.write_shard(0, kept, rejected)
    io.commit(ke, re_, kept.schema)
    return StageResult("dedup", rows_in=table.num_rows, rows_kept=kept.num_rows, rows_dropped=rejected.num_rows,
                       seconds=time.perf_counter() - t0)
