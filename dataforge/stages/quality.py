"""``quality``: a fastText (or other) quality classifier scores every row, then a threshold or
top-fraction cut (implementation: :mod:`dataforge.curate.quality`)."""

from __future__ import annotations

from dataforge.config import QualityConfig
from dataforge.stages.registry import CURATION, Stage, register


def _apply(table, cfg):
    from dataforge.curate.quality import apply_quality_stage

    return apply_quality_stage(table, cfg)


def _inputs(cfg):
    from dataforge.curate.quality import quality_stage_inputs

    return quality_stage_inputs(cfg)


STAGE = register(Stage(
    name="quality", order=200, kind=CURATION, config_model=QualityConfig, scope="whole", apply=_apply,
    input_files=_inputs, command="classify", column_prefix="quality_", columns=("quality_score", "quality_model"),
    summary="Quality classifier score per row; keep above a threshold or the top fraction "
            "(whole: a top-fraction cut needs every score of the run)",
    drop_reasons=("quality:below_threshold(<score><<cutoff>)", "quality:below_top_fraction(<score><<cutoff>)"),
    module=__name__,
))
