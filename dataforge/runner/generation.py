"""The generation stages' runners (textbooks, cot): ask the teacher, gate, write and commit.

A generation stage is done when the teacher, its config section, the run seed *and the
contents* of the files it reads (its registry ``input_files``) are those of the committed output:
editing a seed file in place (same path) regenerates instead of silently reusing the old output.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from dataforge.config import PipelineConfig
from dataforge.generate.cot import (TRANSIENT_KEYS as COT_TRANSIENT_KEYS, generate_cot, methods_of, sandbox_limits,
                                    verdict)
from dataforge.generate.pot import check_sandbox
from dataforge.generate.gates import apply_textbook_gates
from dataforge.generate.seeds import load_seeds, write_quarantine
from dataforge.generate.synthesis import SynthResult, plan_parents, synthesize_questions
from dataforge.generate.taxonomy import TopicUnit
from dataforge.generate.textbooks import generate_textbooks, plan_textbooks
from dataforge.progress import progress_bar
from dataforge.records import SAMPLE_SCHEMA, samples_to_table
from dataforge.runner.io import StageIO, StageResult, drop_table
from dataforge.stages.registry import GENERATION, enabled, generation_stages, get_stage
from dataforge.store import Run
from dataforge.teacher import RequestCache, TeacherClient, TeacherStats


def enabled_generation(cfg: PipelineConfig) -> list[str]:
    return [s.name for s in enabled(cfg, GENERATION)]


def generation_io(run: Run, cfg: PipelineConfig, stage: str, files: object = None) -> StageIO:
    """The stage's writers and commit; its hash covers its config sections, what its
    ``input_files`` returns (the sha256 of every file it reads; ``files``: that value, already
    computed) and, for a stage that asks the teacher, the teacher (see the module docstring)."""
    st = get_stage(stage)
    if files is None:
        files = st.input_files(cfg) if st.input_files else []
    teacher = cfg.teacher_identity() if st.teacher else {}
    return StageIO(run, cfg, stage, [], st.sections(), extra_config={**teacher, "files": files})


def generation_preflight(cfg: PipelineConfig, stages: Collection[str] | None = None) -> None:
    """Evaluate the ``input_files`` of the enabled generation stages (those among ``stages``):
    a stage whose input cannot be found fails here, in one line, before a run is opened or a
    teacher started (ingest: every source must match at least one readable file)."""
    for s in enabled(cfg, GENERATION):
        if s.input_files is not None and (stages is None or s.name in stages):
            s.input_files(cfg)


def generation_pending(run: Run, cfg: PipelineConfig) -> bool:
    """Whether any enabled generation stage still has to ask the teacher (a stage that asks none,
    ``ingest``, never needs it started)."""
    return any(s.teacher and s.enabled_in(cfg) and not generation_io(run, cfg, s.name).done()
               for s in generation_stages())


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
    from dataforge.teacher.budget import ledger_for  # the run's spend against teacher.budget_usd

    return TeacherClient(cfg.teacher, cache, base_url=base_url, acquire=acquire,
                         budget=ledger_for(run, cfg.teacher)), cache

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
    io = generation_io(run, cfg, "textbooks")
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
            with progress_bar("textbooks", len(cells) * cfg.textbooks.responses_per_cell,
                              status=client.stats.summary) as advance:
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
    kept_e, rej_e = io.write_shard(0, samples_to_table(rows), drop_table(dropped, "textbooks"))
    extra = {**summary, "gates": gate_counts,
             "quarantined_passages": len(sources.quarantined),
             "quarantine_file": str(quarantine) if sources.quarantined else None}
    io.commit(kept_e, rej_e, SAMPLE_SCHEMA, extra=extra)
    return StageResult("textbooks", rows_in=len(cells), rows_kept=len(rows), rows_dropped=len(dropped),
                       seconds=time.perf_counter() - t0, teacher=stats.as_dict(), extra=extra)

def run_cot(run: Run, cfg: PipelineConfig, base_url: str | None = None, acquire: Callable | None = None
            ) -> StageResult:
    io = generation_io(run, cfg, "cot")
    if io.done():
        return io.previous_result()
    t0 = time.perf_counter()
    io.begin()
    seed_paths = [cfg.resolve_path(p) for p in cfg.cot.seed_paths()]
    seeds, bad = load_seeds(seed_paths, cfg.cot.seed_format, cfg.cot.question_field, cfg.cot.answer_field)
    quarantine = _write_run_quarantine(run, "cot_seeds.jsonl", bad)
    if cfg.cot.max_questions:
        seeds = seeds[: cfg.cot.max_questions]
    if "pot" in methods_of(cfg.cot):
        # refuse before the first teacher call when the kernel sandbox is missing (never silently weaker)
        check_sandbox(sandbox_limits(cfg.cot))
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
    kept_e, rej_e = io.write_shard(0, samples_to_table(kept), drop_table(synth_rejected + failures + dropped, "cot"))
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
