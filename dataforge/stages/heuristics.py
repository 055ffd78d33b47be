"""``heuristics``: rule filters from Gopher, C4 and FineWeb (implementation: :mod:`dataforge.curate.heuristics`)."""

from __future__ import annotations

from dataforge.config import HeuristicsConfig
from dataforge.stages.registry import CURATION, Stage, register


def _apply(table, cfg):
    from dataforge.curate.heuristics import apply_heuristics

    return apply_heuristics(table, cfg.heuristics)


STAGE = register(Stage(
    name="heuristics", order=100, kind=CURATION, config_model=HeuristicsConfig, scope="shard", apply=_apply,
    command="filter", column_prefix="heur_",
    summary="Gopher quality and repetition, C4 and FineWeb rules; drops a row at the first rule it fails",
    drop_reasons=("<family>:<rule> (gopher_quality:min_doc_words, c4:min_sentences, ...)",),
    module=__name__,
))
