"""The dedup stage in parts, so that a task runner can spread it over workers.

:func:`dataforge.curate.dedup.apply_dedup` does everything in one process. The flow
(``flows/pipeline.py``) runs the same computation as separate tasks, which on the Dask runner
land on different workers:

1. :func:`sign_shard`, one task per input shard: MinHash signatures (uint32 ``[n, num_perm]``),
   exact-text hashes and normalized lengths of the shard's ``text`` column. A row's signature
   depends on its text only, so the shards' results concatenated equal the signatures of the
   concatenated table.
2. :func:`plan_dedup`, one task: survivor ranks (from the rank columns of every shard), exact
   groups, and the signatures of the rows that go on to near-duplicate detection.
3. :func:`band_candidates`, one task per LSH band: the band's candidate pairs.
4. :func:`finish_dedup`, one task: verification and clustering of the union of the bands'
   candidates, then the stage's kept and rejected tables (dedup columns, drop reasons).

Every step calls the same functions as ``apply_dedup`` in the same order on the same arrays, and
the union of the candidate pairs is sorted (``np.unique``) before verification, so the result
does not depend on which worker ran what: ``tests/test_dedup_parts.py`` checks it equals
``apply_dedup`` (kept and rejected rows, ``dedup_cluster``, reasons).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from dataforge.config import DedupConfig
from dataforge.curate import minhash as fast
from dataforge.curate.dedup import COLUMN_PREFIX, dedup_tables, exact_groups, lsh_params, sign_texts, survivor_rank

# the columns survivor_rank reads (those a table has)
RANK_COLUMNS = ("quality_score", "created_at", "source_row", "id")

Signatures = tuple[np.ndarray, np.ndarray, np.ndarray]  # (sig uint32 [n, num_perm], exact_hash, norm_len)


def sign_shard(texts: pa.Array | pa.ChunkedArray, cfg: DedupConfig) -> Signatures:
    """Step 1: the signatures of one shard's texts (``minhash.signatures`` in batches)."""
    return sign_texts(texts, cfg)


def concat_signatures(parts: Sequence[Signatures], num_perm: int) -> Signatures:
    if not parts:
        return np.empty((0, num_perm), np.uint32), np.empty(0, np.uint64), np.empty(0, np.int64)
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]


@dataclass
class DedupPlan:
    """What the band and finishing steps need: for every row its exact-group representative
    (``rep``), the representatives (``reps``), and their signatures and ranks."""

    n: int
    rep: np.ndarray
    reps: np.ndarray
    sig_reps: np.ndarray
    rank_reps: np.ndarray
    bands: int
    rows: int


def plan_dedup(rank_table: pa.Table, parts: Sequence[Signatures], cfg: DedupConfig) -> DedupPlan:
    """Step 2: ``rank_table`` holds the rank columns (:data:`RANK_COLUMNS`) of all input rows in
    stage order; ``parts`` the shards' signatures in the same order."""
    sig, exact_hash, norm_len = concat_signatures(parts, cfg.num_perm)
    n = rank_table.num_rows
    if sig.shape[0] != n:
        raise ValueError(f"dedup: {sig.shape[0]} signatures for {n} rows")
    rank = survivor_rank(rank_table)
    rep = exact_groups(exact_hash, norm_len, rank) if cfg.exact else np.arange(n, dtype=np.int64)
    reps = np.flatnonzero(rep == np.arange(n))
    bands, rows = lsh_params(cfg)
    return DedupPlan(n, rep, reps, np.ascontiguousarray(sig[reps]), rank[reps], bands, rows)


def band_candidates(plan: DedupPlan, band: int) -> np.ndarray:
    """Step 3: the candidate pairs of one band among the representatives (int64 codes)."""
    if plan.sig_reps.shape[0] < 2:
        return np.zeros(0, dtype=np.int64)
    return fast.candidate_pairs(plan.sig_reps, band, plan.rows, plan.bands)


def near_survivors_from_bands(plan: DedupPlan, per_band: Sequence[np.ndarray], cfg: DedupConfig) -> np.ndarray:
    """Verification and clustering of the union of the bands' candidates (as
    ``dedup.near_survivors``): for each representative, the index (among representatives) of its
    survivor."""
    m = plan.sig_reps.shape[0]
    if m < 2:
        return np.arange(m, dtype=np.int64)
    codes = np.unique(np.concatenate(list(per_band))) if len(per_band) else np.zeros(0, np.int64)
    left, right, _ = fast.verify_pairs(plan.sig_reps, codes, cfg.threshold)
    if cfg.clustering == "components":
        return fast.connected_components(m, left, right, plan.rank_reps)
    return fast.star_clusters(m, left, right, plan.rank_reps)


def finish_dedup(table: pa.Table, plan: DedupPlan, per_band: Sequence[np.ndarray], parts: Sequence[Signatures],
                 cfg: DedupConfig) -> tuple[pa.Table, pa.Table]:
    """Step 4: the stage's (kept, rejected) for ``table`` (all input rows, in the order the plan
    was made for), exactly as ``apply_dedup(table, cfg)`` returns them."""
    table = table.drop_columns([name for name in table.column_names if name.startswith(COLUMN_PREFIX)])
    n = table.num_rows
    if n != plan.n:
        raise ValueError(f"dedup: a plan for {plan.n} rows given {n}")
    ids = table.column("id").combine_chunks() if n else pa.array([], pa.string())
    rep, reps = plan.rep, plan.reps
    sig = concat_signatures(parts, cfg.num_perm)[0]
    survivor = np.empty(n, dtype=np.int64)
    survivor[reps] = reps[near_survivors_from_bands(plan, per_band, cfg)]
    survivor = survivor[rep]
    similarity = fast.estimated_jaccard(sig, np.arange(n), survivor).astype(np.float32)
    return dedup_tables(table, ids, rep, survivor, similarity)


def dedup_in_parts(tables: Sequence[pa.Table], cfg: DedupConfig) -> tuple[pa.Table, pa.Table]:
    """All four steps in this process, one shard per table (for tests and as a readable map of
    what the flow's tasks do)."""
    parts = [sign_shard(t.column("text"), cfg) for t in tables]
    table = pa.concat_tables(tables, promote_options="permissive")
    rank_table = table.select([c for c in RANK_COLUMNS if c in table.column_names])
    plan = plan_dedup(rank_table, parts, cfg)
    per_band = [band_candidates(plan, b) for b in range(plan.bands)]
    return finish_dedup(table, plan, per_band, parts, cfg)
