"""``dedup``: exact then MinHash-LSH near-duplicate removal (implementation: :mod:`dataforge.curate.dedup`;
the runner and flows/ run it in parts, out of core: :mod:`dataforge.runner.dedup`)."""

from __future__ import annotations

from dataforge.config import DedupConfig
from dataforge.stages.registry import CURATION, Stage, register


def _apply(table, cfg):
    from dataforge.curate.dedup import apply_dedup

    return apply_dedup(table, cfg.dedup)


def _run_whole(run, cfg):
    from dataforge.runner.dedup import run_dedup

    return run_dedup(run, cfg)


STAGE = register(Stage(
    name="dedup", order=300, kind=CURATION, config_model=DedupConfig, scope="whole", apply=_apply,
    run_whole=_run_whole,
    column_prefix="dedup_", columns=("dedup_cluster", "dedup_size", "dedup_similarity"),
    summary="Exact and near-duplicate removal (MinHash LSH, 5-grams, Jaccard 0.8); one survivor per cluster",
    drop_reasons=("exact_duplicate_of:<id>", "near_duplicate_of:<id>"),
    module=__name__,
))
