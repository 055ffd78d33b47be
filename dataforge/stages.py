"""Stage runners: each reads the shards of the stage before it and writes its own.

These are plain functions of a :class:`~dataforge.store.Run` and a config, with no Prefect in
sight; ``flows/`` decides how many run at once and where. A runner returns a
:class:`StageResult`; the caller records it in ``run.json``. Each runner writes kept rows to
``<run>/<stage>/`` and dropped rows to ``<run>/rejected/<stage>/`` and commits with a manifest
that records the fingerprint of its inputs and the hash of its config, so a committed stage is
skipped on resume.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from dataforge.config import PipelineConfig
from dataforge.curate.decontam import apply_decontam, decontam_stage_inputs
from dataforge.curate.dedup import apply_dedup
from dataforge.curate.heuristics import apply_heuristics
from dataforge.curate.quality import apply_quality_stage, quality_stage_inputs
from dataforge.generate.cot import TRANSIENT_KEYS as COT_TRANSIENT_KEYS, generate_cot, methods_of, verdict
from dataforge.generate.seeds import load_seeds, write_quarantine
from dataforge.generate.synthesis import SynthResult, plan_parents, synthesize_questions
from dataforge.generate.textbooks import generate_textbooks, plan_textbooks
from dataforge.generate.gates import apply_textbook_gates
from dataforge.generate.taxonomy import TopicUnit
from dataforge.progress import progress_bar
from dataforge.select.color import apply_color_stage
from dataforge.select.diversity import apply_diversity_stage
from dataforge.select.judge import apply_judge_stage
from dataforge.records import DROP_FIELDS, SAMPLE_SCHEMA, samples_to_table, with_drop
from dataforge.store import FileEntry, Run, ShardWriter, StageStatus, input_fingerprint
from dataforge.teacher import RequestCache, TeacherClient, TeacherStats

log = logging.getLogger("dataforge.stages")

GENERATION_STAGES = ("textbooks", "cot")
# curation, then selection (DESIGN.md: ... decontam ─► select ─► export); all are optional
# except where their config enables them
CURATION_STAGES = ("heuristics", "quality", "dedup", "decontam", "judge", "color", "diversity")


@dataclass
class StageResult:
    stage: str
    rows_in: int = 0
    rows_kept: int = 0
    rows_dropped: int = 0
    seconds: float = 0.0
    skipped: bool = False
    teacher: dict | None = None
    extra: dict = field(default_factory=dict)


def rejected_schema(schema: pa.Schema) -> pa.Schema:
    for f in DROP_FIELDS:
        if f.name not in schema.names:
            schema = schema.append(f)
    return schema


class StageIO:
    """Writers and the commit for one stage of one run."""

    def __init__(self, run: Run, cfg: PipelineConfig, stage: str, inputs: Sequence[str], config_sections: Sequence[str],
                 extra_config: Any = None):
        self.run, self.cfg, self.stage = run, cfg, stage
        self.inputs = list(inputs)
        self.fingerprint = input_fingerprint(run.committed(s) for s in self.inputs) if self.inputs else "none"
        self.config_hash = cfg.stage_hash(*config_sections, extra=extra_config)

    def done(self) -> bool:
        return self.run.is_done(self.stage, self.fingerprint, self.config_hash)

    def previous_result(self) -> StageResult:
        kept = self.run.committed(self.stage) or {"rows": 0}
        rej = self.run.committed_rejected(self.stage) or {"rows": 0}
        return StageResult(self.stage, rows_in=kept["rows"] + rej["rows"], rows_kept=kept["rows"],
                           rows_dropped=rej["rows"], skipped=True)

    def begin(self) -> None:
        self.run.begin_stage(self.stage)

    def writers(self, shard: int, schema: pa.Schema) -> tuple[ShardWriter, ShardWriter]:
        prefix = f"part-{shard:05d}"
        kept = self.run.shard_writer(self.run.stage_dir(self.stage), prefix=prefix, max_rows=self.cfg.shard_rows,
                                     schema=schema)
        rej = self.run.shard_writer(self.run.rejected_dir(self.stage), prefix=prefix, max_rows=self.cfg.shard_rows,
                                    schema=rejected_schema(schema))
        return kept, rej

    def write_shard(self, shard: int, kept: pa.Table, rejected: pa.Table) -> tuple[list[FileEntry], list[FileEntry]]:
        kw, rw = self.writers(shard, kept.schema)
        kw.write(kept)
        rw.write(rejected)
        return kw.close(), rw.close()

    def commit(self, kept: Sequence[FileEntry], rejected: Sequence[FileEntry], schema: pa.Schema, extra: dict | None = None) -> None:
        self.run.commit_stage(self.stage, kept, rejected, schema, rejected_schema(schema),
                              fingerprint=self.fingerprint, config_hash=self.config_hash, extra=extra)


# --- generation ----------------------------------------------------------------------------

def _drop_table(rows: list[dict], stage: str) -> pa.Table:
    reasons = [r.pop("drop_reason") for r in rows]
    return with_drop(samples_to_table(rows), stage, reasons)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def generation_input_files(cfg: PipelineConfig, stage: str) -> list[Path]:
    """The files a generation stage reads besides its config: seed files (cot), taxonomy and
    passage files (textbooks). Missing files are left to the stage to report."""
    from dataforge.generate.seeds import expand_seed_paths
    from dataforge.generate.taxonomy import resolve_taxonomy

    files: list[Path] = []
    try:
        if stage == "cot":
            files = expand_seed_paths([cfg.resolve_path(p) for p in cfg.cot.seed_paths()])
        elif stage == "textbooks":
            files = [resolve_taxonomy(t, cfg.resolve_path)[1] for t in cfg.textbooks.taxonomies]
            if cfg.textbooks.passages:
                files.append(cfg.resolve_path(cfg.textbooks.passages))
    except (OSError, ValueError):
        return []
    return [f for f in files if f.is_file()]


def _generation_io(run: Run, cfg: PipelineConfig, stage: str) -> StageIO:
    """A generation stage is done when the teacher, its config section, the run seed *and the
    contents* of the files it reads are those of the committed output: editing a seed file in
    place (same path) regenerates instead of silently reusing the old output."""
    files = [_file_sha256(f) for f in generation_input_files(cfg, stage)]
    return StageIO(run, cfg, stage, [], [stage, "seed"], extra_config={**cfg.teacher_identity(), "files": files})


def generation_pending(run: Run, cfg: PipelineConfig) -> bool:
    """Whether any enabled generation stage still has to ask the teacher."""
    return any(getattr(cfg, s).enabled and not _generation_io(run, cfg, s).done() for s in GENERATION_STAGES)


def _teacher_client(cfg: PipelineConfig, run: Run, base_url: str | None, acquire: Callable | None = None
                    ) -> tuple[TeacherClient, RequestCache]:
    """The teacher client for ``cfg.teacher.mode`` (the batch client is a TeacherClient that
    sends batches) and its cache. Batch state lives beside the cache, so a crashed run's
    batches are collected by the next run. ``acquire`` (an async callable) is awaited before
    every online request: flows/ passes one that takes a slot of a rate limit shared by runs."""
    from dataforge.teacher.batch import BatchTeacherClient

    cache_dir = cfg.teacher_cache_dir()  # local even when the data root is an object store
    cache = RequestCache(cache_dir / "teacher.sqlite")
    if cfg.teacher.mode == "batch":
        return BatchTeacherClient(cfg.teacher, cache, base_url=base_url, state_dir=cache_dir / "batches"), cache
    return TeacherClient(cfg.teacher, cache, base_url=base_url, acquire=acquire), cache


def _write_run_quarantine(run: Run, name: str, rows: list) -> Path:
    """The run's quarantine file ``name`` holding ``rows`` (none: no file); through the run's
    filesystem when the data root is an object store (one whole object)."""
    path = run.quarantine_dir() / name
    if run.is_local:
        path.unlink(missing_ok=True)
        write_quarantine(path, rows)
        return path
    import tempfile

    import pyarrow.fs as pafs

    fs, key = run.filesystem, str(path)
    if fs.get_file_info(key).type == pafs.FileType.File:
        fs.delete_file(key)
    if rows:
        with tempfile.TemporaryDirectory(prefix="dataforge-quarantine-") as tmp:
            local = Path(tmp) / name
            write_quarantine(local, rows)
            fs.create_dir(str(path.parent), recursive=True)
            with fs.open_output_stream(key) as f:
                f.write(local.read_bytes())
    return path


def _gate_counts(rows: Sequence[dict]) -> dict[str, int]:
    """Dropped rows per gate reason, details left out (``noncompliant:meta_talk``, ``off_topic``)."""
    def key(reason: str) -> str:
        head, _, rest = reason.partition(":")
        return f"{head}:{rest.split(':')[0]}" if head == "noncompliant" else head
    return dict(Counter(key(r["drop_reason"]) for r in rows).most_common())


def run_textbooks(run: Run, cfg: PipelineConfig, base_url: str | None = None, acquire: Callable | None = None
                  ) -> StageResult:
    io = _generation_io(run, cfg, "textbooks")
    if io.done():
        return io.previous_result()
    from dataforge.generate.textbooks import load_textbook_sources, summarize_textbooks

    t0 = time.perf_counter()
    io.begin()
    # taxonomies, inline topics and seed passages; malformed passage lines are set aside
    sources = load_textbook_sources(cfg.textbooks, cfg.resolve_path)
    quarantine = _write_run_quarantine(run, "textbook_passages.jsonl", sources.quarantined)
    cells = plan_textbooks(sources, cfg.textbooks.max_samples, cfg.seed)

    async def go() -> tuple[list[dict], list[dict], TeacherStats]:
        client, cache = _teacher_client(cfg, run, base_url, acquire)
        try:
            with progress_bar("textbooks", len(cells), status=client.stats.summary) as advance:
                rows, failures = await generate_textbooks(client, cells, sources, cfg.textbooks, run_id=run.run_id,
                                                          seed=cfg.seed, on_done=advance)
            return rows, failures, client.stats
        finally:
            await client.aclose()
            cache.close()

    rows, failures, stats = asyncio.run(go())
    empty = [r for r in rows if not r["text"]]
    for r in empty:
        r["drop_reason"] = "empty_completion"
    rows = [r for r in rows if r["text"]]
    summary = summarize_textbooks(cells, rows, sources)
    # the generation gates: prompt compliance, topic faithfulness, audience fit (gates.py)
    covers = {(u.subject, u.topic, u.subtopic): u.covers for u in sources.units if isinstance(u, TopicUnit)}
    rows, gated = apply_textbook_gates(rows, cfg.textbooks.gates, covers)
    dropped = failures + empty + gated
    gate_counts = _gate_counts(gated)  # before _drop_table, which takes drop_reason off the rows
    kept_e, rej_e = io.write_shard(0, samples_to_table(rows), _drop_table(dropped, "textbooks"))
    extra = {**summary, "gates": gate_counts,
             "quarantined_passages": len(sources.quarantined),
             "quarantine_file": str(quarantine) if sources.quarantined else None}
    io.commit(kept_e, rej_e, SAMPLE_SCHEMA, extra=extra)
    return StageResult("textbooks", rows_in=len(cells), rows_kept=len(rows), rows_dropped=len(dropped),
                       seconds=time.perf_counter() - t0, teacher=stats.as_dict(), extra=extra)


def run_cot(run: Run, cfg: PipelineConfig, base_url: str | None = None, acquire: Callable | None = None
            ) -> StageResult:
    io = _generation_io(run, cfg, "cot")
    if io.done():
        return io.previous_result()
    t0 = time.perf_counter()
    io.begin()
    seed_paths = [cfg.resolve_path(p) for p in cfg.cot.seed_paths()]
    seeds, bad = load_seeds(seed_paths, cfg.cot.seed_format, cfg.cot.question_field, cfg.cot.answer_field)
    quarantine = _write_run_quarantine(run, "cot_seeds.jsonl", bad)
    if cfg.cot.max_questions:
        seeds = seeds[: cfg.cot.max_questions]
    per_question = cfg.cot.samples_per_question * len(methods_of(cfg.cot))
    synth_cfg = cfg.cot.synthesis
    synth: SynthResult | None = None

    async def go() -> tuple[list[dict], list[dict], TeacherStats]:
        nonlocal synth
        client, cache = _teacher_client(cfg, run, base_url, acquire)
        try:
            questions = list(seeds)
            if synth_cfg.enabled:
                n_synth = len(plan_parents(seeds, synth_cfg, cfg.seed))
                with progress_bar("question synthesis", n_synth, status=client.stats.summary) as advance:
                    synth = await synthesize_questions(client, seeds, synth_cfg, run_id=run.run_id, seed=cfg.seed,
                                                       on_done=advance)
                questions += synth.seeds
            with progress_bar("chain of thought", len(questions) * per_question,
                              status=client.stats.summary) as advance:
                rows, failures = await generate_cot(client, questions, cfg.cot, run_id=run.run_id, seed=cfg.seed,
                                                    on_done=advance)
            return rows, failures, client.stats
        finally:
            await client.aclose()
            cache.close()

    rows, failures, stats = asyncio.run(go())
    synth_rejected = synth.rejected if synth else []
    total = (len(seeds) + (len(synth.seeds) if synth else 0)) * per_question + len(synth_rejected)
    min_agreement = synth_cfg.min_agreement if synth_cfg.enabled else None
    kept, dropped = [], []
    program_status: Counter[str] = Counter()
    for r in rows:
        reason = verdict(r, cfg.cot.keep, min_agreement, cfg.cot.check_steps)
        if r.get("pot_status"):
            program_status[r["pot_status"]] += 1
        for key in COT_TRANSIENT_KEYS:
            r.pop(key, None)
        if reason is None:
            kept.append(r)
        else:
            r["drop_reason"] = reason
            dropped.append(r)
    synth_extra = ({"requests": synth.requests, "questions": len(synth.seeds),
                    "rejected": dict(Counter(r["drop_reason"].split("(")[0] for r in synth_rejected)),
                    "kept_samples": sum(1 for r in kept if r.get("parent_seed_id")),
                    "questions_with_kept_samples": len({r["seed_id"] for r in kept if r.get("parent_seed_id")})}
                   if synth else None)
    kept_e, rej_e = io.write_shard(0, samples_to_table(kept), _drop_table(synth_rejected + failures + dropped, "cot"))
    extra = {"seeds": len(seeds), "quarantined_seeds": len(bad), "synthesis": synth_extra,
             "quarantine_file": str(quarantine) if bad else None,
             "verified": sum(1 for r in rows if r["answer_correct"]),
             "wrong_step": sum(1 for r in rows if r["answer_correct"] and r.get("step_errors")),
             "seed_sources": dict(Counter(s.source for s in seeds)),
             "programs": dict(program_status) if program_status else None}
    io.commit(kept_e, rej_e, SAMPLE_SCHEMA, extra=extra)
    return StageResult("cot", rows_in=total, rows_kept=len(kept),
                       rows_dropped=len(synth_rejected) + len(failures) + len(dropped),
                       seconds=time.perf_counter() - t0, teacher=stats.as_dict(), extra=extra)


# --- curation ------------------------------------------------------------------------------

def enabled_generation(cfg: PipelineConfig) -> list[str]:
    return [s for s in GENERATION_STAGES if getattr(cfg, s).enabled]


# --- curation: a chain of stages, each reading the kept rows of the enabled stage before it ---
#
# A *sharded* stage maps each input shard to one output shard independently (so flows/ can fan
# shards out to workers); a *whole* stage sees all its input rows at once (dedup compares rows
# across shards). Each takes a table and the pipeline config and returns (kept, rejected), the
# rejected rows carrying drop_stage / drop_reason (records.with_drop). A whole stage may return a
# third item, a dict: {"teacher": TeacherStats.as_dict()} puts its teacher use in run.json.

ApplyFn = Callable[[pa.Table, PipelineConfig], tuple[pa.Table, pa.Table]]

SHARDED_STAGES: dict[str, ApplyFn] = {
    "heuristics": lambda table, cfg: apply_heuristics(table, cfg.heuristics),
    # sharded: each row is decided alone; the benchmark index is built once per process (curate/decontam.py)
    "decontam": lambda table, cfg: apply_decontam(table, cfg),
}
WHOLE_STAGES: dict[str, ApplyFn] = {
    "dedup": lambda table, cfg: apply_dedup(table, cfg.dedup),
    # whole, not sharded: a top_fraction cut needs every score of the run (curate/quality.py)
    "quality": lambda table, cfg: apply_quality_stage(table, cfg),
    "judge": lambda table, cfg, acquire=None: apply_judge_stage(table, cfg, acquire),
    "color": lambda table, cfg: apply_color_stage(table, cfg),
    "diversity": lambda table, cfg: apply_diversity_stage(table, cfg),
}


def enabled_curation(cfg: PipelineConfig) -> list[str]:
    """The curation stages this config runs, in order."""
    on = [s for s in CURATION_STAGES if getattr(cfg, s).enabled]
    missing = [s for s in on if s not in SHARDED_STAGES and s not in WHOLE_STAGES]
    if missing:
        raise ValueError(f"{', '.join(missing)}: enabled in the config but not available in this version of dataforge")
    return on


def curation_inputs_of(cfg: PipelineConfig, stage: str) -> list[str]:
    """The stage(s) whose kept rows ``stage`` reads: the enabled curation stage before it, or
    the generation stages for the first one."""
    before = [s for s in enabled_curation(cfg) if CURATION_STAGES.index(s) < CURATION_STAGES.index(stage)]
    return [before[-1]] if before else enabled_generation(cfg)


# config sections a stage reads besides its own (its hash covers them, so editing one re-runs it)
EXTRA_SECTIONS: dict[str, list[str]] = {"color": ["slm", "seed"], "judge": ["teacher"]}

# curation stages that ask the teacher: flows/ runs the embedded one while they are pending
TEACHER_STAGES = ("judge",)


def teacher_stage_pending(run: Run, cfg: PipelineConfig, stage: str) -> bool:
    """Whether ``stage`` asks the teacher and still has to run (not committed for its input)."""
    return stage in TEACHER_STAGES and getattr(cfg, stage).enabled and not curation_io(run, cfg, stage).done()


# what a stage depends on besides config (a model file's content): its hash covers it too
EXTRA_INPUTS: dict[str, Callable[[PipelineConfig], Any]] = {"quality": quality_stage_inputs,
                                                            "decontam": decontam_stage_inputs}


def curation_io(run: Run, cfg: PipelineConfig, stage: str) -> StageIO:
    extra = EXTRA_INPUTS[stage](cfg) if stage in EXTRA_INPUTS else None
    return StageIO(run, cfg, stage, curation_inputs_of(cfg, stage), [stage, *EXTRA_SECTIONS.get(stage, [])],
                   extra_config=extra)


def curation_inputs(run: Run, cfg: PipelineConfig, stage: str) -> list[Path]:
    """The committed shards ``stage`` reads."""
    return [p for s in curation_inputs_of(cfg, stage) for p in run.files(s)]


def heuristics_io(run: Run, cfg: PipelineConfig) -> StageIO:
    return curation_io(run, cfg, "heuristics")


def heuristics_inputs(run: Run, cfg: PipelineConfig) -> list[Path]:
    """The shards the heuristics stage reads: every committed generation shard."""
    return curation_inputs(run, cfg, "heuristics")


def run_sharded_shard(run: Run, cfg: PipelineConfig, stage: str, shard: int, path: Path
                      ) -> tuple[list[dict], list[dict], int]:
    """Run a sharded stage on one input shard; returns its file entries (not yet committed)
    and its row count."""
    io = curation_io(run, cfg, stage)
    table = run.read_file(path)
    kept, rejected = SHARDED_STAGES[stage](table, cfg)
    ke, re_ = io.write_shard(shard, kept, rejected)
    return [e.as_dict() for e in ke], [e.as_dict() for e in re_], table.num_rows


def run_heuristics_shard(run: Run, cfg: PipelineConfig, shard: int, path: Path) -> tuple[list[dict], list[dict], int]:
    return run_sharded_shard(run, cfg, "heuristics", shard, path)


def commit_sharded(io: StageIO, shard_results: Sequence[tuple[list[dict], list[dict], int]], t0: float) -> StageResult:
    kept = [FileEntry(**e) for k, _, _ in shard_results for e in k]
    rej = [FileEntry(**e) for _, r, _ in shard_results for e in r]
    schema = io.run.file_schema(io.run.stage_dir(io.stage) / kept[0].name) if kept else _empty_output_schema(io)
    io.commit(kept, rej, schema)
    return StageResult(io.stage, rows_in=sum(n for _, _, n in shard_results), rows_kept=sum(e.rows for e in kept),
                       rows_dropped=sum(e.rows for e in rej), seconds=time.perf_counter() - t0)


def _input_schema(io: StageIO) -> pa.Schema:
    """The schema of the rows this stage reads (for an empty input)."""
    prev = io.inputs[0] if io.inputs else None
    if prev in CURATION_STAGES:
        return _empty_output_schema(StageIO(io.run, io.cfg, prev, curation_inputs_of(io.cfg, prev), [prev]))
    return SAMPLE_SCHEMA


def _empty_output_schema(io: StageIO) -> pa.Schema:
    """The kept schema of a stage whose input has no rows: its function run on an empty table."""
    fn = SHARDED_STAGES.get(io.stage) or WHOLE_STAGES.get(io.stage)
    if fn is None:
        return SAMPLE_SCHEMA
    kept = fn(_input_schema(io).empty_table(), io.cfg)[0]
    return kept.schema


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


def run_heuristics(run: Run, cfg: PipelineConfig, map_shards: Callable | None = None) -> StageResult:
    return run_sharded(run, cfg, "heuristics", map_shards)


def _read_parquet(run: Run, path: Path, columns: list[str] | None = None) -> pa.Table:
    return run.read_file(path, columns)


def _parquet_schema(run: Run, path: Path) -> pa.Schema:
    return run.file_schema(path)


def _read_inputs(run: Run, io: StageIO, paths: Sequence[Path]) -> pa.Table:
    """All input rows of a whole stage, shard after shard."""
    return (pa.concat_tables([_read_parquet(run, p) for p in paths], promote_options="permissive") if paths
            else _input_schema(io).empty_table())


def run_whole(run: Run, cfg: PipelineConfig, stage: str, acquire: Callable | None = None) -> StageResult:
    """A stage that needs all its input rows at once. ``acquire`` reaches a stage that asks the
    teacher (:data:`TEACHER_STAGES`): awaited before each request, as in generation."""
    io = curation_io(run, cfg, stage)
    if io.done():
        return io.previous_result()
    t0 = time.perf_counter()
    io.begin()
    paths = curation_inputs(run, cfg, stage)
    table = _read_inputs(run, io, paths)
    kw = {"acquire": acquire} if acquire is not None and stage in TEACHER_STAGES else {}
    kept, rejected, *info = WHOLE_STAGES[stage](table, cfg, **kw)
    ke, re_ = io.write_shard(0, kept, rejected)
    io.commit(ke, re_, kept.schema)
    # a stage that asks the teacher (the judge) returns its client's stats as a third item
    teacher = info[0].get("teacher") if info else None
    return StageResult(stage, rows_in=table.num_rows, rows_kept=kept.num_rows, rows_dropped=rejected.num_rows,
                       seconds=time.perf_counter() - t0, teacher=teacher)


def dedup_io(run: Run, cfg: PipelineConfig) -> StageIO:
    return curation_io(run, cfg, "dedup")


# --- dedup in parts (flows/ runs each as a task: signatures per shard, candidates per band) ---

def dedup_sign_shard(run: Run, cfg: PipelineConfig, path: Path) -> Any:
    """Signatures of one input shard of dedup (uint32 ``[n, num_perm]``, exact hashes, lengths)."""
    from dataforge.curate.dedup_parts import sign_shard

    return sign_shard(_read_parquet(run, path, ["text"]).column("text"), cfg.dedup)


def dedup_plan(run: Run, cfg: PipelineConfig, paths: Sequence[Path], parts: Sequence[Any]) -> Any:
    """Survivor ranks and exact groups over every input row (reads the rank columns only)."""
    from dataforge.curate.dedup_parts import RANK_COLUMNS, plan_dedup

    tables = []
    for p in paths:
        names = _parquet_schema(run, p).names
        tables.append(_read_parquet(run, p, [c for c in RANK_COLUMNS if c in names]))
    rank_table = (pa.concat_tables(tables, promote_options="permissive") if tables
                  else _input_schema(dedup_io(run, cfg)).empty_table())
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
    table = _read_inputs(run, io, paths)
    kept, rejected = finish_dedup(table, plan, per_band, parts, cfg.dedup)
    ke, re_ = io.write_shard(0, kept, rejected)
    io.commit(ke, re_, kept.schema)
    return StageResult("dedup", rows_in=table.num_rows, rows_kept=kept.num_rows, rows_dropped=rejected.num_rows,
                       seconds=time.perf_counter() - t0)


def run_dedup(run: Run, cfg: PipelineConfig) -> StageResult:
    return run_whole(run, cfg, "dedup")


def run_curation_stage(run: Run, cfg: PipelineConfig, stage: str, map_shards: Callable | None = None) -> StageResult:
    if stage in SHARDED_STAGES:
        return run_sharded(run, cfg, stage, map_shards)
    return run_whole(run, cfg, stage)


def final_stage(cfg: PipelineConfig) -> str:
    """The stage whose kept rows are the run's output."""
    cur = enabled_curation(cfg)
    if cur:
        return cur[-1]
    gen = enabled_generation(cfg)
    return gen[-1] if gen else CURATION_STAGES[0]


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


# --- run bookkeeping -----------------------------------------------------------------------

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
