"""The curation stages' runners: a chain of stages, each reading the kept rows of the enabled
stage before it (the generation stages for the first one).

A *shard* stage maps each input shard to one output shard independently (so flows/ can fan
shards out to workers); a *whole* stage sees all its input rows at once (dedup compares rows
across shards). Both run the stage's registered ``apply(table, cfg)`` and write what it returns;
a whole stage that asks the teacher returns a third item, ``{"teacher": TeacherStats.as_dict()}``,
which goes into run.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa

from dataforge.config import PipelineConfig
from dataforge.records import SAMPLE_SCHEMA
from dataforge.runner.generation import enabled_generation
from dataforge.runner.io import StageIO, StageResult
from dataforge.stages.registry import CURATION, enabled, get_stage
from dataforge.store import FileEntry, Run


def enabled_curation(cfg: PipelineConfig) -> list[str]:
    """The curation stages this config runs, in order."""
    return [s.name for s in enabled(cfg, CURATION)]


def curation_inputs_of(cfg: PipelineConfig, stage: str) -> list[str]:
    """The stage(s) whose kept rows ``stage`` reads: the enabled curation stage before it, or
    the generation stages for the first one."""
    order = get_stage(stage).order
    before = [s.name for s in enabled(cfg, CURATION) if s.order < order]
    return [before[-1]] if before else enabled_generation(cfg)


def teacher_stage_pending(run: Run, cfg: PipelineConfig, stage: str) -> bool:
    """Whether ``stage`` asks the teacher and still has to run (not committed for its input)."""
    st = get_stage(stage)
    return st.teacher and st.enabled_in(cfg) and not curation_io(run, cfg, stage).done()


def curation_io(run: Run, cfg: PipelineConfig, stage: str) -> StageIO:
    """The stage's writers and commit; its hash covers its config sections (its own and its
    ``extra_sections``) and what its ``input_files`` returns (a model file's content)."""
    st = get_stage(stage)
    extra = st.input_files(cfg) if st.input_files else None
    return StageIO(run, cfg, stage, curation_inputs_of(cfg, stage), st.sections(), extra_config=extra)


def curation_inputs(run: Run, cfg: PipelineConfig, stage: str) -> list[Path]:
    """The committed shards ``stage`` reads."""
    return [p for s in curation_inputs_of(cfg, stage) for p in run.files(s)]


def run_sharded_shard(run: Run, cfg: PipelineConfig, stage: str, shard: int, path: Path
                      ) -> tuple[list[dict], list[dict], int]:
    """Run a shard stage on one input shard; returns its file entries (not yet committed)
    and its row count."""
    io = curation_io(run, cfg, stage)
    table = run.read_file(path)
    kept, rejected = get_stage(stage).apply(table, cfg)
    ke, re_ = io.write_shard(shard, kept, rejected)
    return [e.as_dict() for e in ke], [e.as_dict() for e in re_], table.num_rows


def commit_sharded(io: StageIO, shard_results: Sequence[tuple[list[dict], list[dict], int]], t0: float) -> StageResult:
    kept = [FileEntry(**e) for k, _, _ in shard_results for e in k]
    rej = [FileEntry(**e) for _, r, _ in shard_results for e in r]
    schema = io.run.file_schema(io.run.stage_dir(io.stage) / kept[0].name) if kept else _empty_output_schema(io)
    io.commit(kept, rej, schema)
    return StageResult(io.stage, rows_in=sum(n for _, _, n in shard_results), rows_kept=sum(e.rows for e in kept),
                       rows_dropped=sum(e.rows for e in rej), seconds=time.perf_counter() - t0)


def input_schema(io: StageIO) -> pa.Schema:
    """The schema of the rows this stage reads (for an empty input)."""
    prev = io.inputs[0] if io.inputs else None
    if prev is not None and get_stage(prev).kind == CURATION:
        return _empty_output_schema(StageIO(io.run, io.cfg, prev, curation_inputs_of(io.cfg, prev), [prev]))
    return SAMPLE_SCHEMA


def _empty_output_schema(io: StageIO) -> pa.Schema:
    """The kept schema of a stage whose input has no rows: its function run on an empty table."""
    st = get_stage(io.stage)
    if st.apply is None:
        return SAMPLE_SCHEMA
    return st.apply(input_schema(io).empty_table(), io.cfg)[0].schema


def run_sharded(run: Run, cfg: PipelineConfig, stage: str, map_shards: Callable | None = None) -> StageResult:
    """A whole sharded stage; ``map_shards(fn, items)`` lets a caller fan shards out."""
    io = curation_io(run, cfg, stage)
    if io.done():
        return io.previous_result()
    t0 = time.perf_counter()
    io.begin()
    items = list(enumerate(curation_inputs(run, cfg, stage)))
    mapper = map_shards or (lambda fn, xs: [fn(*x) for x in xs])
    results = mapper(lambda shard, path: run_sharded_shard(run, cfg, stage, shard, path), items)
    return commit_sharded(io, results, t0)


def read_inputs(run: Run, io: StageIO, paths: Sequence[Path]) -> pa.Table:
    """All input rows of a whole stage, shard after shard."""
    return (pa.concat_tables([run.read_file(p) for p in paths], promote_options="permissive") if paths
            else input_schema(io).empty_table())


def run_whole(run: Run, cfg: PipelineConfig, stage: str, acquire: Callable | None = None) -> StageResult:
    """A stage that needs all its input rows at once. ``acquire`` reaches a stage that asks the
    teacher: awaited before each request, as in generation."""
    st = get_stage(stage)
    if st.run_whole is not None:  # its own runner, in bounded memory (dedup: out of core)
        return st.run_whole(run, cfg)
    io = curation_io(run, cfg, stage)
    if io.done():
        return io.previous_result()
    t0 = time.perf_counter()
    io.begin()
    paths = curation_inputs(run, cfg, stage)
    table = read_inputs(run, io, paths)
    kw = {"acquire": acquire} if acquire is not None and st.teacher else {}
    from dataforge.teacher.budget import ledger_for, use_ledger

    # a stage that asks the teacher counts its spend in the run's ledger (teacher.budget_usd)
    with use_ledger(ledger_for(run, cfg.teacher) if st.teacher else None):
        kept, rejected, *info = st.apply(table, cfg, **kw)
    ke, re_ = io.write_shard(0, kept, rejected)
    io.commit(ke, re_, kept.schema)
    # a stage that asks the teacher (the judge) returns its client's stats as a third item
    teacher = info[0].get("teacher") if info else None
    return StageResult(stage, rows_in=table.num_rows, rows_kept=kept.num_rows, rows_dropped=rejected.num_rows,
                       seconds=time.perf_counter() - t0, teacher=teacher)


def run_curation_stage(run: Run, cfg: PipelineConfig, stage: str, map_shards: Callable | None = None) -> StageResult:
    """Run ``stage`` by its scope: shard by shard (``map_shards(fn, items)`` fans them out) or whole."""
    if get_stage(stage).scope == "shard":
        return run_sharded(run, cfg, stage, map_shards)
    return run_whole(run, cfg, stage)
