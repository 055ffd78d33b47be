"""Near-duplicate removal with MinHash LSH.

Each text becomes the set of word n-grams of its normalized form (Lee et al. 2022, "Deduplicating
Training Data Makes Language Models Better": 5-grams, Jaccard >= 0.8; the defaults of
:class:`dataforge.config.DedupConfig`). MinHash LSH proposes candidate pairs; every candidate
pair is verified with the estimated Jaccard similarity of the two signatures before it is
merged, which removes LSH false positives (so the LSH is tuned for recall, see
:data:`LSH_WEIGHTS`). Clusters are the connected components of the
verified pairs (union-find), so similarity is transitive: A~B and B~C put A, B, C together
even when A and C are below the threshold.
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from datasketch import MinHash, MinHashLSH

from dataforge.config import DedupConfig
from dataforge.records import with_drop

STAGE = "dedup"
REASON_PREFIX = "near_duplicate_of:"
COLUMN_PREFIX = "dedup_"

# datasketch 2.0.0 changed the default permutation scheme from the pre-2.0 one (now called
# "legacy") to "affine32", so the same text got a different signature after the upgrade. We pass
# the scheme explicitly so that signatures, and therefore which rows count as near-duplicates
# for a given config, cannot change silently if a later release changes the default again.
# "affine32" (not "legacy", which datasketch documents as biased and slower) is right for our
# sets: a document has hundreds to thousands of shingles, far below the ~1e8 elements at which
# the docs recommend "affine64". tests/test_dedup.py pins a signature against datasketch 2.0.0.
MINHASH_SCHEME = "affine32"

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
    """The MinHash signature of ``text``'s ``cfg.ngram``-shingles."""
    m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, scheme=MINHASH_SCHEME)
    m.update_batch(sorted(shingles(text, cfg.ngram)))
    return m


def near_duplicate_clusters(texts: Sequence[str], cfg: DedupConfig) -> list[int]:
    """For each text the index of its cluster's representative: the smallest row index in it.

    Rows are indexed in order and each row is queried against the earlier rows only, so every
    candidate pair is considered once; a pair is merged only when the estimated Jaccard of the
    two signatures reaches ``cfg.threshold``.
    """
    sketches = [minhash(text, cfg) for text in texts]
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:  # the smaller root wins, so a root is always its cluster's smallest index
            parent[max(ri, rj)] = min(ri, rj)

    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=LSH_WEIGHTS)
    for i, sketch in enumerate(sketches):
        for j in sorted(lsh.query(sketch)):
            if sketch.jaccard(sketches[j]) >= cfg.threshold:
                union(i, j)
        lsh.insert(i, sketch)
    return [find(i) for i in range(len(texts))]


def apply_dedup(table: pa.Table, cfg: DedupConfig) -> tuple[pa.Table, pa.Table]:
    """The dedup stage: keep one survivor per near-duplicate cluster.

    The survivor is the row created first (``created_at``; rows without one come last), ties
    broken by ``id`` and then by row position, so the choice does not depend on row order
    except between rows that are identical in all three. Every row gains ``dedup_cluster``
    (the survivor's id) and ``dedup_size`` (rows in the cluster); the others are rejected with
    ``drop_reason = "near_duplicate_of:<survivor id>"``. A disabled stage keeps every row as
    its own cluster of one.
    """
    table = table.drop_columns([name for name in table.column_names if name.startswith(COLUMN_PREFIX)])
    n = table.num_rows
    ids: list[str] = table.column("id").to_pylist()
    if cfg.enabled:
        roots = near_duplicate_clusters([text or "" for text in table.column("text").to_pylist()], cfg)
    else:
        roots = list(range(n))

    members: dict[int, list[int]] = {}
    for i, root in enumerate(roots):
        members.setdefault(root, []).append(i)

    created: list[int | None] = pc.cast(table.column("created_at"), pa.int64()).to_pylist()

    def survivor_order(i: int) -> tuple[bool, int, str, int]:
        return (created[i] is None, created[i] or 0, ids[i], i)

    survivor_of_root = {root: min(rows, key=survivor_order) for root, rows in members.items()}
    survivors = [survivor_of_root[root] for root in roots]

    out = table.append_column(
        pa.field("dedup_cluster", pa.string()), pa.array([ids[s] for s in survivors], pa.string())
    )
    out = out.append_column(
        pa.field("dedup_size", pa.int32()), pa.array([len(members[root]) for root in roots], pa.int32())
    )
    is_survivor = pa.array([survivors[i] == i for i in range(n)], pa.bool_())
    kept = out.filter(is_survivor)
    reasons = [f"{REASON_PREFIX}{ids[s]}" for i, s in enumerate(survivors) if s != i]
    rejected = with_drop(out.filter(pc.invert(is_survivor)), STAGE, reasons)
    return kept, rejected
