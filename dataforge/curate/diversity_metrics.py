"""Lexical diversity of a set of texts: distinct-n (Li et al. 2016, "A Diversity-Promoting
Objective Function for Neural Conversation Models", NAACL).

distinct-n is the number of distinct n-grams in a set of texts divided by the total number of
tokens in it — Li et al. scale by the number of generated tokens "to avoid favoring long
sentences"; some later work divides by the number of n-grams instead, which differs by
``n - 1`` per text. N-grams never cross a text boundary. A set of sections that reuse the
same framings scores low; a set that says different things in different words scores high.

Tokens are maximal runs of Unicode letters and digits in the lower-cased text, matched with
the RE2 pattern :data:`TOKEN_PATTERN` — the same engine and pattern as the warehouse's
``lexical_diversity`` view (``regexp_extract_all(lower(text), '[\\p{L}\\p{N}]+')`` in DuckDB),
so this module and the SQL report give the same numbers.

Everything is computed in bulk: pyarrow tokenises and dictionary-encodes, numpy builds the
n-gram keys and counts distinct (group, n-gram) pairs with one sort.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TOKEN_PATTERN = r"[\p{L}\p{N}]+"
_SEPARATOR_PATTERN = r"[^\p{L}\p{N}]+"


def _as_strings(texts: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    arr = texts if isinstance(texts, pa.Array) else pa.array(list(texts), pa.string())
    if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.string())
    if not pa.types.is_string(arr.type):
        raise TypeError(f"texts must be strings, got {arr.type}")
    return arr


def tokenize(texts: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, int]:
    """(token ids, text index of each token, vocabulary size) for a set of texts, in order.
    A null text has no tokens."""
    arr = _as_strings(texts)
    pieces = pc.split_pattern_regex(pc.utf8_lower(arr), pattern=_SEPARATOR_PATTERN)
    parents = pc.list_parent_indices(pieces)
    flat = pc.list_flatten(pieces)
    keep = pc.greater(pc.utf8_length(flat), 0)  # splitting leaves "" at the edges
    flat, parents = pc.filter(flat, keep), pc.filter(parents, keep)
    encoded = pc.dictionary_encode(flat).combine_chunks() if isinstance(flat, pa.ChunkedArray) \
        else pc.dictionary_encode(flat)
    ids = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return ids, parents.to_numpy(zero_copy_only=False).astype(np.int64), len(encoded.dictionary)


def _ngram_keys(ids: np.ndarray, doc: np.ndarray, vocab: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(key of each n-gram, text index of each n-gram): equal keys mean equal n-grams."""
    if len(ids) < n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    m = len(ids) - n + 1
    valid = doc[:m] == doc[n - 1:]  # the n-gram starts and ends in the same text
    cols = [ids[k:k + m][valid] for k in range(n)]
    if vocab ** n < 2 ** 62:
        key = np.zeros(int(valid.sum()), np.int64)
        for c in cols:
            key = key * vocab + c
    else:  # too many distinct tokens to pack n ids into one integer
        key = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return key, doc[:m][valid]


def _distinct_per_group(group: np.ndarray, key: np.ndarray, n_groups: int) -> np.ndarray:
    """Number of distinct keys within each group, by one lexicographic sort."""
    if len(key) == 0:
        return np.zeros(n_groups, np.int64)
    order = np.lexsort((key, group))
    g, k = group[order], key[order]
    first = np.ones(len(k), bool)
    first[1:] = (g[1:] != g[:-1]) | (k[1:] != k[:-1])
    return np.bincount(g[first], minlength=n_groups)


def distinct_n(texts: Sequence[str | None] | pa.Array | pa.ChunkedArray,
               ns: Sequence[int] = (1, 2, 3)) -> dict[int, float]:
    """distinct-n of the whole set for each n in ``ns`` (0.0 when the texts hold no token)."""
    table = distinct_n_by(texts, [None] * len(_as_strings(texts)), ns)
    if table.num_rows == 0:
        return {n: 0.0 for n in ns}
    row = table.to_pylist()[0]
    return {n: row[f"distinct_{n}"] for n in ns}


def distinct_n_by(texts: Sequence[str | None] | pa.Array | pa.ChunkedArray,
                  groups: Sequence[str | None] | pa.Array | pa.ChunkedArray,
                  ns: Sequence[int] = (1, 2, 3)) -> pa.Table:
    """distinct-n per group value: one row per value that has at least one token, with
    ``value``, ``docs`` (texts with a token), ``tokens`` and ``distinct_<n>`` for each n.
    ``groups[i]`` is the group of ``texts[i]``; None is a group of its own."""
    if any(n < 1 for n in ns):
        raise ValueError(f"n must be at least 1, got {list(ns)}")
    arr = _as_strings(texts)
    garr = groups.combine_chunks() if isinstance(groups, pa.ChunkedArray) else (
        groups if isinstance(groups, pa.Array) else pa.array(list(groups), pa.string()))
    if len(garr) != len(arr):
        raise ValueError(f"{len(garr)} group values for {len(arr)} texts")
    genc = pc.dictionary_encode(garr, null_encoding="encode")
    gvalues = genc.dictionary.to_pylist()
    gcode = genc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    ids, doc, vocab = tokenize(arr)
    tok_group = gcode[doc]
    n_groups = len(gvalues)
    tokens = np.bincount(tok_group, minlength=n_groups)
    docs = _distinct_per_group(tok_group, doc, n_groups)
    cols: dict[str, list] = {"value": [], "docs": [], "tokens": []}
    ratios = {}
    for n in ns:
        key, kdoc = _ngram_keys(ids, doc, vocab, n)
        ratios[n] = _distinct_per_group(gcode[kdoc], key, n_groups)
    for n in ns:
        cols[f"distinct_{n}"] = []
    for g in np.flatnonzero(tokens):
        cols["value"].append(gvalues[g])
        cols["docs"].append(int(docs[g]))
        cols["tokens"].append(int(tokens[g]))
        for n in ns:
            cols[f"distinct_{n}"].append(float(ratios[n][g] / tokens[g]))
    schema = pa.schema([("value", garr.type if not pa.types.is_null(garr.type) else pa.string()),
                        ("docs", pa.int64()), ("tokens", pa.int64())]
                       + [(f"distinct_{n}", pa.float64()) for n in ns])
    return pa.Table.from_pydict(cols, schema=schema)
