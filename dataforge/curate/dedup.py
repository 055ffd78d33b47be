"""Deduplication: exact (hash of the normalized text), then near-duplicates with MinHash LSH.

**Normalization** (both steps, and the reference and fast paths alike): Unicode NFKC, lowercase,
punctuation (Unicode category P*) to spaces, whitespace collapsed to single spaces
(:func:`normalize_for_dedup`). So "Hello, World!" and "hello world" are exact duplicates.

**Exact**: rows whose normalized texts are equal (a 64-bit hash plus the length, see
``minhash.signatures``) form a group; its best row (see *survivor* below) stays, the others are
dropped with ``drop_reason = "exact_duplicate_of:<id>"``. Only the group's best row goes on to
near-duplicate detection. ``exact: false`` skips this step (exact duplicates are then found as
near-duplicates, estimated Jaccard 1).

**Near**: each text becomes the set of word ``n``-grams of its normalized form (Lee et al. 2022,
"Deduplicating Training Data Makes Language Models Better": 5-grams, Jaccard >= 0.8; the
defaults of :class:`dataforge.config.DedupConfig`), hashed with xxh32 and signed with
``num_perm`` "affine32" MinHash permutations; LSH with ``bands`` x ``rows`` proposes candidate
pairs, and every candidate pair is verified with the estimated Jaccard of the two signatures
before it counts. The fast path is :mod:`dataforge.curate.minhash` (compiled, over the Arrow
buffers); :func:`minhash` and :func:`near_duplicate_clusters` are the readable datasketch
reference it is tested against (bit-identical signatures, same clusters).

**Clusters and survivors** (``clustering``): ``star`` (default) visits rows best first; an
unclaimed row becomes a survivor and claims every unclaimed row it has a *verified* pair with.
Every dropped row is therefore itself within the threshold of the survivor it names, and
similarity is not transitive: a long template shared by thousands of otherwise different rows
cannot chain them into one cluster through LSH collisions. ``components`` is the classic
alternative: connected components of the verified pairs (union-find), one survivor each.
The survivor is the row with the highest ``quality_score`` (when the column exists; nulls
last), then the oldest ``created_at`` (when it exists; nulls last; a user's file without it:
the earliest line), then the smallest ``id``, then the first row. Every row gains ``dedup_cluster`` (its survivor's id), ``dedup_size``
(rows in the cluster, exact duplicates included) and ``dedup_similarity`` (estimated Jaccard
with the survivor); a dropped row is rejected with ``exact_duplicate_of:<id>`` (an exact
duplicate names the row with the same normalized text, which may itself be a near-duplicate of
the cluster's survivor) or ``near_duplicate_of:<survivor id>``.
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from datasketch import MinHash, MinHashLSH

from dataforge.config import DedupConfig
from dataforge.curate import minhash as fast
from dataforge.records import with_drop

STAGE = "dedup"
REASON_PREFIX = "near_duplicate_of:"
EXACT_REASON_PREFIX = "exact_duplicate_of:"
COLUMN_PREFIX = "dedup_"

# datasketch 2.0.0 changed the default permutation scheme from the pre-2.0 one (now called
# "legacy") to "affine32", so the same text got a different signature after the upgrade. We pass
# the scheme explicitly so that signatures, and therefore which rows count as near-duplicates
# for a given config, cannot change silently if a later release changes the default again.
# "affine32" (not "legacy", which datasketch documents as biased and slower) is right for our
# sets: a document has hundreds to thousands of shingles, far below the ~1e8 elements at which
# the docs recommend "affine64". tests/test_dedup.py pins a signature against datasketch 2.0.0.
MINHASH_SCHEME = "affine32"

# The shingle hash: xxh32 (seed 0) of the utf-8 shingle, instead of datasketch's default
# sha1_hash32, which alone costs more than the fast kernel's whole budget. The kernel
# reimplements it; the reference and the benchmark's datasketch baseline pass this C binding.
HASHFUNC = xxhash.xxh32_intdigest

# MinHashLSH picks its band layout by weighing false positives against false negatives; the
# default (0.5, 0.5) gives b=9 bands of r=13 rows for threshold 0.8 / 128 permutations, an
# S-curve centred near 0.845 that proposes only ~40% of the pairs whose Jaccard is exactly 0.8
# and ~69% at 0.85. Every candidate is verified below, so a false positive costs one signature
# comparison while a false negative is a duplicate kept: weighting (0.05, 0.95) gives b=16, r=8,
# which proposes ~95% of the pairs at 0.8 and ~99% at 0.85 (and ~6% at 0.5, all then rejected
# by the verification). Measured on the Pile sample, 50 copies of >= 100-word documents with
# ~1.5% of the words changed (Jaccard ~0.85), 6 RNG seeds: 33-41 of 50 found with the default
# weights, 46-49 with these.
LSH_WEIGHTS = (0.05, 0.95)


def lsh_params(cfg: DedupConfig) -> tuple[int, int]:
    """``(bands, rows)``: the configured ones, else datasketch's rule with :data:`LSH_WEIGHTS`."""
    if cfg.bands is not None and cfg.rows is not None:
        return cfg.bands, cfg.rows
    return fast.optimal_bands(cfg.threshold, cfg.num_perm, LSH_WEIGHTS)


# --- the readable reference (datasketch) -------------------------------------------------------

@functools.cache
def _punctuation_to_space() -> dict[int, str]:
    """``str.translate`` table mapping every Unicode punctuation character (category P*) to a
    space; built once. Symbols (S*: "+", "=", "$") are content and are kept."""
    return {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] == "P"}


def normalize_for_dedup(text: str) -> str:
    """NFKC, lowercase, punctuation to spaces, whitespace collapsed to single spaces.

    NFKC comes first because it can produce upper-case letters (e.g. "ℌ" -> "H"). Punctuation
    becomes a space rather than nothing so that "end.Next" still splits into two words.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(text.translate(_punctuation_to_space()).split())


def shingles(text: str, n: int) -> set[bytes]:
    """The word ``n``-grams of the normalized text, each utf-8 encoded with words joined by a space.

    A text with fewer than ``n`` words is one shingle, the whole normalized text, so short texts
    still get a signature (identical short texts then match); an empty text gives ``{b""}``.
    """
    words = normalize_for_dedup(text).split()
    if len(words) < n:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


def minhash(text: str, cfg: DedupConfig) -> MinHash:
    """The MinHash signature of ``text``'s ``cfg.ngram``-shingles (datasketch, the reference)."""
    m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=HASHFUNC, scheme=MINHASH_SCHEME)
    m.update_batch(sorted(shingles(text, cfg.ngram)))
    return m


def near_duplicate_clusters(texts: Sequence[str], cfg: DedupConfig, rank: Sequence[int] | None = None) -> list[int]:
    """The reference near-duplicate clustering: for each text the index of its survivor.

    datasketch ``MinHashLSH`` (same bands x rows as the fast path) proposes every pair sharing a
    band; a pair counts when its estimated Jaccard reaches ``cfg.threshold``; then the clustering
    of ``cfg.clustering`` with ``rank`` (lower is better; default: row order) picks survivors.
    One Python object per row and per pair: slow, but easy to read."""
    rank = list(range(len(texts))) if rank is None else list(rank)
    sketches = [minhash(text, cfg) for text in texts]
    bands, rows = lsh_params(cfg)
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, params=(bands, rows))
    neighbours: list[list[int]] = [[] for _ in texts]
    for i, sketch in enumerate(sketches):
        for j in lsh.query(sketch):
            if sketch.jaccard(sketches[j]) >= cfg.threshold:
                neighbours[i].append(j)
                neighbours[j].append(i)
        lsh.insert(i, sketch)
    by_rank = sorted(range(len(texts)), key=lambda i: (rank[i], i))
    survivor = [-1] * len(texts)
    if cfg.clustering == "star":
        for u in by_rank:
            if survivor[u] == -1:
                survivor[u] = u
                for v in neighbours[u]:
                    if survivor[v] == -1:
                        survivor[v] = u
        return survivor
    for u in by_rank:  # components: a breadth-first walk from each best unvisited row
        if survivor[u] != -1:
            continue
        survivor[u], queue = u, [u]
        while queue:
            for v in neighbours[queue.pop()]:
                if survivor[v] == -1:
                    survivor[v] = u
                    queue.append(v)
    return survivor


# --- the stage (fast path) ---------------------------------------------------------------------

def survivor_rank(table: pa.Table) -> np.ndarray:
    """Each row's place in survivor order (0 = best): highest ``quality_score``, then oldest
    ``created_at`` (for a user's file without one: the earliest ``source_row``), then smallest
    ``id``, then row position (a stable sort); missing columns are skipped, nulls go last."""
    keys, cols = [], {}
    if "quality_score" in table.column_names:
        cols["q"] = pc.cast(table.column("quality_score"), pa.float64())
        keys.append(("q", "descending", "at_end"))
    if "created_at" in table.column_names:
        cols["c"] = table.column("created_at")
        keys.append(("c", "ascending", "at_end"))
    if "source_row" in table.column_names and "created_at" not in table.column_names:
        cols["r"] = table.column("source_row")  # a user's file (dataforge dedup FILE): earlier lines first
        keys.append(("r", "ascending", "at_end"))
    cols["i"] = table.column("id")
    keys.append(("i", "ascending", "at_end"))
    order = pc.sort_indices(pa.table(cols), sort_keys=keys).to_numpy()
    rank = np.empty(table.num_rows, dtype=np.int64)
    rank[order] = np.arange(table.num_rows)
    return rank


def exact_groups(exact_hash: np.ndarray, norm_len: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each row the best-ranked row with the same normalized text (equal 64-bit hash and
    length; two different texts share both with probability ~n^2 / 2^65)."""
    n = len(rank)
    rep = np.arange(n, dtype=np.int64)
    if n == 0:
        return rep
    rows = fast.maybe_shared(exact_hash)  # only rows whose hash may be shared need sorting
    if len(rows) == 0:
        return rep
    order = rows[np.lexsort((rank[rows], norm_len[rows], exact_hash[rows]))]
    h, ln = exact_hash[order], norm_len[order]
    new_group = np.ones(len(order), dtype=bool)
    new_group[1:] = (h[1:] != h[:-1]) | (ln[1:] != ln[:-1])
    first = order[np.flatnonzero(new_group)]
    group = np.cumsum(new_group) - 1
    rep[order] = first[group]
    return rep


SIGN_BATCH_ROWS = 8192  # rows per signature batch (a progress step; a unit of parallel work)


def progress_steps(n_rows: int, cfg: DedupConfig) -> int:
    """How many times :func:`apply_dedup` calls ``advance``: one per signature batch, one per band."""
    return -(-n_rows // SIGN_BATCH_ROWS) + lsh_params(cfg)[0]


def sign_texts(texts: pa.ChunkedArray | pa.Array, cfg: DedupConfig, workers: int = 1,
               advance: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``minhash.signatures`` of the texts in batches of :data:`SIGN_BATCH_ROWS` rows, on
    ``workers`` threads (the kernel releases the GIL); the result does not depend on ``workers``."""
    n = len(texts)
    out = (np.empty((n, cfg.num_perm), dtype=np.uint32), np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.int64))

    def sign(start: int) -> None:
        stop = min(n, start + SIGN_BATCH_ROWS)
        fast.signatures(texts.slice(start, stop - start), cfg.num_perm, cfg.ngram, cfg.seed,
                        out=tuple(a[start:stop] for a in out))
        if advance is not None:
            advance()

    starts = range(0, n, SIGN_BATCH_ROWS)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(sign, starts))
    else:
        for start in starts:
            sign(start)
    return out


def near_survivors(sig: np.ndarray, rank: np.ndarray, cfg: DedupConfig,
                   advance: Callable[[], None] | None = None) -> np.ndarray:
    """For each row (of ``sig``) its survivor: candidate pairs band by band, verification,
    clustering."""
    return _near_survivors(sig, None, rank, cfg, advance)


def _near_survivors(sig: np.ndarray, subset: np.ndarray | None, rank: np.ndarray, cfg: DedupConfig,
                    advance: Callable[[], None] | None = None) -> np.ndarray:
    """:func:`near_survivors` of ``sig[subset]`` (positions in ``subset``) without copying it."""
    n = sig.shape[0] if subset is None else len(subset)
    bands, rows = lsh_params(cfg)
    if n < 2:
        for _ in range(bands):
            if advance is not None:
                advance()
        return np.arange(n, dtype=np.int64)
    per_band = []
    for b in range(bands):
        per_band.append(fast.candidate_pairs(sig, b, rows, bands, subset=subset))
        if advance is not None:
            advance()
    codes = fast.unique_codes(np.concatenate(per_band))
    del per_band
    left, right, _ = fast.verify_pairs(sig, codes, cfg.threshold, subset=subset)
    if cfg.clustering == "components":
        return fast.connected_components(n, left, right, rank)
    return fast.star_clusters(n, left, right, rank)


def _reasons(prefix: str, ids: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(pa.scalar(prefix, pa.string()), ids, "")


def apply_dedup(table: pa.Table, cfg: DedupConfig, workers: int = 1,
                advance: Callable[[], None] | None = None) -> tuple[pa.Table, pa.Table]:
    """The dedup stage: exact then near-duplicate removal, one survivor per cluster (see the
    module docstring for the rules and the columns). A disabled stage keeps every row as its own
    cluster of one. The output does not depend on row order except between rows identical in
    ``quality_score``, ``created_at`` and ``id``, nor on ``workers`` (threads signing batches).
    ``advance`` is called :func:`progress_steps` times."""
    table = table.drop_columns([name for name in table.column_names if name.startswith(COLUMN_PREFIX)])
    n = table.num_rows
    ids = table.column("id").combine_chunks() if n else pa.array([], pa.string())
    if cfg.enabled and n:
        sig, exact_hash, norm_len = sign_texts(table.column("text"), cfg, workers, advance)
        rank = survivor_rank(table)
        rep = exact_groups(exact_hash, norm_len, rank) if cfg.exact else np.arange(n, dtype=np.int64)
        reps = np.flatnonzero(rep == np.arange(n))
        survivor = np.empty(n, dtype=np.int64)
        survivor[reps] = reps[_near_survivors(sig, reps, rank[reps], cfg, advance)]
        survivor = survivor[rep]
        similarity = fast.estimated_jaccard(sig, np.arange(n), survivor).astype(np.float32)
    else:
        rep = survivor = np.arange(n, dtype=np.int64)
        similarity = np.ones(n, dtype=np.float32)
    return dedup_tables(table, ids, rep, survivor, similarity)


def dedup_tables(table: pa.Table, ids: pa.Array, rep: np.ndarray, survivor: np.ndarray, similarity: np.ndarray
                 ) -> tuple[pa.Table, pa.Table]:
    """(kept, rejected) from the decisions: ``rep`` (each row's exact-duplicate representative),
    ``survivor`` (its cluster's survivor) and ``similarity`` (estimated Jaccard with it), all over
    the rows of ``table`` (whose dedup_* columns are already dropped); ``ids`` its id column."""
    n = table.num_rows
    size = np.bincount(survivor, minlength=n)[survivor] if n else np.zeros(0, np.int64)
    out = table.append_column(pa.field("dedup_cluster", pa.string()), ids.take(pa.array(survivor)))
    out = out.append_column(pa.field("dedup_size", pa.int32()), pa.array(size.astype(np.int32)))
    out = out.append_column(pa.field("dedup_similarity", pa.float32()), pa.array(similarity))
    is_survivor = survivor == np.arange(n)
    kept = out.filter(pa.array(is_survivor))
    dropped = np.flatnonzero(~is_survivor)
    exact_drop = rep[dropped] != dropped
    reasons = pc.if_else(pa.array(exact_drop),
                         _reasons(EXACT_REASON_PREFIX, ids.take(pa.array(rep[dropped], pa.int64()))),
                         _reasons(REASON_PREFIX, ids.take(pa.array(survivor[dropped], pa.int64()))))
    rejected = with_drop(out.take(pa.array(dropped, pa.int64())), STAGE, reasons)
    return kept, rejected


def dedup_summary(kept: pa.Table, rejected: pa.Table) -> dict:
    """Counts for a one-line summary: rows, kept, exact and near duplicates, largest cluster."""
    reasons = rejected.column("drop_reason") if rejected.num_rows else pa.array([], pa.string())
    exact = pc.sum(pc.starts_with(reasons, EXACT_REASON_PREFIX)).as_py() or 0
    sizes = kept.column("dedup_size") if kept.num_rows else pa.array([0], pa.int32())
    return {"rows": kept.num_rows + rejected.num_rows, "kept": kept.num_rows, "exact_duplicates": exact,
            "near_duplicates": rejected.num_rows - exact, "largest_cluster": pc.max(sizes).as_py() or 0}
