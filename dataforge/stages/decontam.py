"""``decontam``: drops rows that overlap a benchmark's test items (implementation:
:mod:`dataforge.curate.decontam`)."""

from __future__ import annotations

from dataforge.config import DecontamConfig
from dataforge.stages.registry import CURATION, Stage, register


def _apply(table, cfg):
    from dataforge.curate.decontam import apply_decontam

    return apply_decontam(table, cfg)


def _inputs(cfg):
    from dataforge.curate.decontam import decontam_stage_inputs

    return decontam_stage_inputs(cfg)


STAGE = register(Stage(
    name="decontam", order=400, kind=CURATION, config_model=DecontamConfig, scope="shard", apply=_apply,
    input_files=_inputs, column_prefix="contam_",
    summary="Benchmark decontamination: n-gram candidates confirmed by sequence match (each row decided alone; "
            "the index is built once per process)",
    drop_reasons=("contaminated:<benchmark>:<item>",),
    module=__name__,
))
