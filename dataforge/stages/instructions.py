"""``instructions``: instruction-tuning pairs from the teacher by Self-Instruct, Evol-Instruct and
Magpie, answered by the teacher (implementation: :mod:`dataforge.generate.instructions`; its
runner is :func:`run_instructions` below)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from dataforge.config import ConfigError, InstructionsConfig
from dataforge.hashing import file_sha256
from dataforge.stages.registry import GENERATION, Stage, register

if TYPE_CHECKING:
    from dataforge.config import PipelineConfig
    from dataforge.runner.io import StageResult
    from dataforge.store import Run


def seed_path(cfg: "PipelineConfig"):
    """The seed file the stage reads: ``instructions.seeds`` resolved like every config path, else
    the shipped seed tasks."""
    from dataforge.generate.instructions import default_seed_path

    return cfg.resolve_path(cfg.instructions.seeds) if cfg.instructions.seeds else default_seed_path()


def check_magpie(cfg: "PipelineConfig") -> None:
    """Refuse Magpie before the run starts when the config says the teacher cannot serve it: no
    completions endpoint, or the Batch API (its batches here are chat batches)."""
    ic = cfg.instructions
    if not ic.enabled or not ic.magpie.count:
        return
    if ic.magpie.completions_endpoint is False:
        raise ConfigError("instructions.magpie: the teacher has no completions endpoint (magpie.completions_endpoint: "
                          "false); Magpie needs /v1/completions: set instructions.magpie.count: 0")
    if cfg.teacher.mode == "batch":
        raise ConfigError("instructions.magpie: Magpie needs the online completions endpoint, not teacher.mode: batch;"
                          " set instructions.magpie.count: 0 or teacher.mode: online")


def input_files(cfg: "PipelineConfig") -> list[str]:
    """The sha256 of the seed file (a missing file is reported here, before the run opens); the
    Magpie check runs here too, so a teacher without a completions endpoint fails before any
    request of the run."""
    if cfg.instructions.enabled:
        check_magpie(cfg)
    path = seed_path(cfg)
    if not path.is_file():
        if cfg.instructions.enabled:
            raise ConfigError(f"instructions.seeds: seed file not found: {path}")
        return []
    return [file_sha256(path)]


def teacher_client(run: "Run", cfg: "PipelineConfig", base_url: str | None, acquire: Callable | None = None):
    """The teacher client (the batch client in ``teacher.mode: batch``) and its request cache, as
    the textbooks and cot runners make them."""
    from dataforge.teacher import RequestCache, TeacherClient
    from dataforge.teacher.batch import BatchTeacherClient

    cache_dir = cfg.teacher_cache_dir()
    cache = RequestCache(cache_dir / "teacher.sqlite")
    if cfg.teacher.mode == "batch":
        return BatchTeacherClient(cfg.teacher, cache, base_url=base_url, state_dir=cache_dir / "batches"), cache
    return TeacherClient(cfg.teacher, cache, base_url=base_url, acquire=acquire, **_budget(run, cfg)), cache


def _budget(run: "Run", cfg: "PipelineConfig") -> dict:
    """The run's spend ledger against ``teacher.budget_usd``, where this build has one (as the
    textbooks and cot runners pass it)."""
    try:
        from dataforge.teacher.budget import ledger_for
    except ImportError:
        return {}
    return {"budget": ledger_for(run, cfg.teacher)}


def run_instructions(run: "Run", cfg: "PipelineConfig", base_url: str | None = None,
                     acquire: Callable | None = None) -> "StageResult":
    """Generate, answer and filter; write kept and rejected rows; commit. Done (skipped) when
    the committed output has the same config, seed file and teacher; a re-run after a crash asks
    the teacher again, and its cache answers every request already answered."""
    import asyncio

    from dataforge.generate.instructions import (Generated, check_completions_endpoint, generate_evol,
                                                 generate_magpie, generate_self_instruct, load_instruction_seeds,
                                                 self_instruct_budget, summarize_instructions)
    from dataforge.generate.seeds import write_quarantine
    from dataforge.progress import progress_bar
    from dataforge.records import SAMPLE_SCHEMA, samples_to_table
    from dataforge.runner.generation import generation_io
    from dataforge.runner.io import StageResult, drop_table

    io = generation_io(run, cfg, "instructions")
    if io.done():
        return io.previous_result()
    ic = cfg.instructions
    check_magpie(cfg)
    t0 = time.perf_counter()
    io.begin()
    seeds, bad = load_instruction_seeds(seed_path(cfg))
    if bad and run.is_local:
        write_quarantine(run.quarantine_dir() / "instruction_seeds.jsonl", bad)
    total = self_instruct_budget(ic.self_instruct) + ic.evol_instruct.count * ic.evol_instruct.rounds + ic.magpie.count
    parts: dict[str, Generated] = {}

    async def go():
        client, cache = teacher_client(run, cfg, base_url, acquire)
        try:
            with progress_bar("instructions", total, status=client.stats.summary) as advance:
                first = None
                if ic.magpie.count:  # alone, before any other request: is there a completions endpoint?
                    first = await check_completions_endpoint(client, ic.magpie, cfg.seed)
                jobs = {}
                if ic.magpie.count:
                    jobs["magpie"] = generate_magpie(client, ic, run_id=run.run_id, seed=cfg.seed, first=first,
                                                     on_done=advance)
                if ic.self_instruct.count:
                    jobs["self_instruct"] = generate_self_instruct(client, seeds, ic, run_id=run.run_id, seed=cfg.seed,
                                                                   on_done=advance)
                if ic.evol_instruct.count:
                    jobs["evol_instruct"] = generate_evol(client, seeds, ic, run_id=run.run_id, seed=cfg.seed,
                                                          on_done=advance)
                done = await asyncio.gather(*jobs.values())
            parts.update(zip(jobs, done))
            return client.stats
        finally:
            await client.aclose()
            cache.close()

    stats = asyncio.run(go())
    order = [m for m in ("self_instruct", "evol_instruct", "magpie") if m in parts]
    kept = [r for m in order for r in parts[m].rows]
    dropped = [r for m in order for r in parts[m].rejected]
    kept_e, rej_e = io.write_shard(0, samples_to_table(kept), drop_table(dropped, "instructions"))
    extra = {**summarize_instructions(kept, parts), "seeds": len(seeds), "quarantined_seeds": len(bad)}
    io.commit(kept_e, rej_e, SAMPLE_SCHEMA, extra=extra)
    return StageResult("instructions", rows_in=len(kept) + len(dropped), rows_kept=len(kept),
                       rows_dropped=len(dropped), seconds=time.perf_counter() - t0, teacher=stats.as_dict(),
                       extra=extra)


def _run(run, cfg, base_url=None, acquire=None):
    return run_instructions(run, cfg, base_url, acquire)


STAGE = register(Stage(
    name="instructions", order=30, kind=GENERATION, config_model=InstructionsConfig, run=_run, teacher=True,
    input_files=input_files, extra_sections=("seed",), command="run",
    columns=("method", "template", "seed_id", "seed_source", "parent_seed_id", "topic", "gen_params"),
    summary="Instruction-answer pairs by Self-Instruct, Evol-Instruct and Magpie, answered by the teacher",
    drop_reasons=("rouge_l_similar(<score>>=<max>)", "too_short(<words><<min>)", "too_long(<words>><max>)",
                  "blocked_word:<word>", "bad_start", "no_instruction", "surplus", "evol_no_gain:<how>",
                  "evol_copied_prompt:<words>", "evol_sorry_reply(<words><<max> words)", "evol_stop_words_only",
                  "evol_empty", "magpie_empty_query", "magpie_short_query(<words><<min>)", "magpie_duplicate_query",
                  "empty_completion", "duplicate_answer", "teacher_error:<why>"),
    module=__name__,
))
