"""``color``: CoLoR-Filter selection, scoring rows by a small reference model's conditional loss
reduction (implementation: :mod:`dataforge.select.color`)."""

from __future__ import annotations

from dataforge.config import ColorConfig
from dataforge.hashing import file_sha256
from dataforge.stages.registry import CURATION, Stage, register


def _apply(table, cfg):
    from dataforge.select.color import apply_color_stage

    return apply_color_stage(table, cfg)


def _inputs(cfg) -> dict:
    """The target file's content: editing it in place (same path) re-runs the stage."""
    target = cfg.resolve_path(cfg.color.target) if cfg.color.target else None
    return {"target_sha256": file_sha256(target) if target is not None and target.is_file() else None}


STAGE = register(Stage(
    name="color", order=600, kind=CURATION, config_model=ColorConfig, scope="whole", apply=_apply,
    input_files=_inputs, extra_sections=("slm", "seed"), column_prefix="color_",
    columns=("color_score", "color_prior_loss", "color_cond_loss"),
    summary="CoLoR-Filter: prior loss minus conditional loss of a small reference model; keep the top fraction",
    drop_reasons=("color:below_top_1/<tau>", "color:empty"),
    module=__name__,
))
