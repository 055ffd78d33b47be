"""``cot``: chain-of-thought (and program-of-thought) solutions from the teacher, verified against
the gold answer and step by step (implementation: :mod:`dataforge.generate.cot`,
:mod:`dataforge.generate.steps`; runner: :func:`dataforge.runner.generation.run_cot`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataforge.config import CotConfig
from dataforge.hashing import file_sha256
from dataforge.stages.registry import GENERATION, Stage, register

if TYPE_CHECKING:
    from dataforge.config import PipelineConfig


def input_files(cfg: "PipelineConfig") -> list[str]:
    """The sha256 of the seed files the stage reads (missing files are left to the stage)."""
    from dataforge.generate.seeds import expand_seed_paths

    try:
        files = expand_seed_paths([cfg.resolve_path(p) for p in cfg.cot.seed_paths()])
    except (OSError, ValueError):
        return []
    return [file_sha256(f) for f in files if f.is_file()]


def _run(run, cfg, base_url=None, acquire=None):
    from dataforge.runner.generation import run_cot

    return run_cot(run, cfg, base_url, acquire)


STAGE = register(Stage(
    name="cot", order=20, kind=GENERATION, config_model=CotConfig, run=_run, teacher=True, input_files=input_files,
    extra_sections=("seed",), command="cot verify",
    columns=("question", "rationale", "answer", "gold_answer", "answer_correct", "votes", "agreement", "method",
             "program", "steps_checked", "step_errors", "first_step_error"),
    summary="Step-by-step solutions to seed questions, kept when the answer and every step check out",
    drop_reasons=("answer_mismatch", "no_final_answer", "truncated_no_final_answer", "program_failed:<status>",
                  "wrong_step:<kind: step (value)>", "no_calculation", "unsupported_answer:<n>",
                  "unsupported_quantity:<n noun>", "weak_agreement(<agreement><<min>)", "teacher_error:<why>"),
    module=__name__,
))
