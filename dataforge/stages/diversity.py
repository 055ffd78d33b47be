"""``diversity``: DEITA / QDIT-style selection for coverage (implementation: :mod:`dataforge.select.diversity`)."""

from __future__ import annotations

from dataforge.config import DiversityConfig
from dataforge.stages.registry import CURATION, Stage, register


def _apply(table, cfg):
    from dataforge.select.diversity import apply_diversity_stage

    return apply_diversity_stage(table, cfg)


STAGE = register(Stage(
    name="diversity", order=700, kind=CURATION, config_model=DiversityConfig, scope="whole", apply=_apply,
    column_prefix="diversity_",
    columns=("diversity_selected_rank", "diversity_max_sim", "diversity_nearest_id", "diversity_embedding"),
    summary="Walk rows down a quality score and keep those not too close to one already chosen (DEITA) or "
            "maximizing quality + coverage (QDIT)",
    drop_reasons=("diversity:too_close_to:<id>", "diversity:over_budget"),
    module=__name__,
))
