"""``heuristics``: rule filters from Gopher, C4 and FineWeb (implementation: :mod:`dataforge.curate.heuristics`)."""

from __future__ import annotations

from dataforge.config import HeuristicsConfig
from dataforge.stages.registry import CURATION, Stage, register


#: rows checked per call: a call's working memory grows with its rows (Python strings, the
#: kernels' per-byte arrays), and the flow runs several shards at once on threads; a 50,000-row
#: shard in one call held about 1.5 GB
BATCH_ROWS = 5000


def _apply(table, cfg):
    import pyarrow as pa

    from dataforge.curate.heuristics import apply_heuristics

    if table.num_rows <= BATCH_ROWS:
        return apply_heuristics(table, cfg.heuristics)
    parts = [apply_heuristics(table.slice(start, BATCH_ROWS), cfg.heuristics)
             for start in range(0, table.num_rows, BATCH_ROWS)]
    return (pa.concat_tables([k for k, _ in parts]), pa.concat_tables([r for _, r in parts]))


STAGE = register(Stage(
    name="heuristics", order=100, kind=CURATION, config_model=HeuristicsConfig, scope="shard", apply=_apply,
    command="filter", column_prefix="heur_",
    summary="Gopher quality and repetition, C4 and FineWeb rules; drops a row at the first rule it fails",
    drop_reasons=("<family>:<rule> (gopher_quality:min_doc_words, c4:min_sentences, ...)",),
    module=__name__,
))
