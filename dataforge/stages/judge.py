"""``judge``: AlpaGasus-style LLM-judge scores; keep rows at or above the threshold
(implementation: :mod:`dataforge.select.judge`)."""

from __future__ import annotations

from dataforge.config import JudgeConfig
from dataforge.stages.registry import CURATION, Stage, register


def _apply(table, cfg, acquire=None):
    from dataforge.select.judge import apply_judge_stage

    return apply_judge_stage(table, cfg, acquire)


STAGE = register(Stage(
    name="judge", order=500, kind=CURATION, config_model=JudgeConfig, scope="whole", apply=_apply, teacher=True,
    extra_sections=("teacher",), column_prefix="judge_",
    columns=("judge_score", "judge_reason", "judge_rubric", "judge_error"),
    summary="The teacher rates each row 0-5 (AlpaGasus prompt); keep judge_score >= the threshold",
    drop_reasons=("judge:score_<s><<threshold>", "judge:unparseable", "judge:teacher_error:<why>"),
    module=__name__,
))
