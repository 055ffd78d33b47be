"""The bulk path of the heuristic rules: the metrics of :mod:`dataforge.curate.heuristics` for a
whole column of texts at once. The rules, schemas and character sets come from
:mod:`dataforge.curate.heuristics_rules`; this module does not import the reference.

Lines, paragraphs and whitespace words are Arrow string kernels over the column (split into list
arrays, trimmed, matched, counted) with per-document sums by ``np.bincount`` over the list parent
indices; duplicate lines and paragraphs are the (document, dictionary id) pairs that are not the
first of their kind (``np.unique``). Word n-grams (Gopher repetition) are a numba kernel over the
dictionary ids of the tokens: rolling 64-bit hashes of n consecutive ids, a stable argsort for the
most frequent n-gram and an open-addressing hash set for datatrove's left-to-right duplicate scan.
Tokens (spaCy's rules, :mod:`dataforge.curate.wordtok`) are computed once per distinct whitespace
chunk of the column and spread to every occurrence by a ragged numpy gather; C4's sentence count
is a numba pass over per-token flags (sentence mark, punctuation) of the kept lines.
tests/test_heuristics.py checks every metric and decision against the reference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataforge.config import C4Config, FineWebQualityConfig, HeuristicsConfig
from dataforge.curate import heuristics_rules as rules
from dataforge.curate import wordtok


def _re2_class(chars: str, negate: bool = False) -> str:
    return "[" + ("^" if negate else "") + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


_WS = _re2_class(rules.WHITESPACE)
_NOT_WS = _re2_class(rules.WHITESPACE, negate=True)
# str.splitlines() separators ("\r\n" first: one break)
_SPLITLINES = "\r\n|" + _re2_class("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_BULLET = r"^(?:[•‣⁃◦▪▫●○■□►▸➢➤]|[-*+–](?:" + _WS + "|$))"
_PUNCT_SYMBOLS = "".join(sorted(rules.punctuation_and_symbols()))
_TERMINAL = pa.array(sorted(rules.TERMINAL_PUNCTUATION), pa.string())
_POLICY = "|".join(re.escape(p) for p in rules.POLICY_SUBSTRINGS)


class _Lists:
    """A list<string> array flattened: values, the document of each value, the document count."""

    def __init__(self, lists: pa.Array, n_docs: int):
        if isinstance(lists, pa.ChunkedArray):
            lists = lists.combine_chunks()
        self.values = pc.list_flatten(lists)
        self.parents = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
        self.n = n_docs

    def per_doc(self, weights: np.ndarray | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        w = np.ones(len(self.parents)) if weights is None else weights.astype(np.float64)
        if mask is not None:
            w = w * mask
        return np.bincount(self.parents, weights=w, minlength=self.n)


def _np(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.to_numpy(zero_copy_only=False)


def _ids(values: pa.Array) -> np.ndarray:
    """Dictionary ids of string values: equal strings, equal ids."""
    if len(values) == 0:
        return np.zeros(0, np.int64)
    return _np(pc.dictionary_encode(values).indices).astype(np.int64)


def _later_duplicates(parents: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """True for each value equal to an earlier value of the same document."""
    if len(ids) == 0:
        return np.zeros(0, bool)
    key = parents * (int(ids.max()) + 1) + ids
    _, first = np.unique(key, return_index=True)  # index of the first occurrence of each key
    dup = np.ones(len(ids), bool)
    dup[first] = False
    return dup


def _ratio(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    part = np.asarray(part, np.float64)
    whole = np.asarray(whole, np.float64)
    out = np.zeros(len(part))
    np.divide(part, whole, out=out, where=whole != 0)
    return out


def _strip(values: pa.Array) -> pa.Array:
    return pc.utf8_trim(values, characters=rules.WHITESPACE)


def _scatter(values: dict[str, np.ndarray], schema: pa.Schema, rows: np.ndarray, n: int) -> pa.Table:
    """Metric columns for the checked rows ``rows`` spread over ``n`` rows (nulls elsewhere)."""
    mask = np.ones(n, bool)
    mask[rows] = False
    columns = []
    for field in schema:
        full = np.zeros(n, dtype=field.type.to_pandas_dtype())
        full[rows] = values[field.name]
        columns.append(pa.array(full, field.type, mask=mask))
    return pa.Table.from_arrays(columns, schema=schema)


# --- tokens and n-grams -------------------------------------------------------------------------

class _Tokens:
    """The tokens (:func:`wordtok.tokenize`) of each string of ``arr``: ids (equal tokens, equal
    ids), lengths and per-string offsets, and the distinct token strings (``vocab[id]``).

    Only distinct whitespace chunks are tokenized (in Python, spaCy's rules); every occurrence
    then takes its chunk's token ids by a ragged numpy gather."""

    def __init__(self, arr: pa.Array):
        n = len(arr)
        chunks = _Lists(pc.split_pattern_regex(arr, _WS + "+"), n)
        nonempty = _np(pc.utf8_length(chunks.values)) > 0
        values = pc.filter(chunks.values, pa.array(nonempty))
        parents = chunks.parents[nonempty]
        if len(values):
            enc = pc.dictionary_encode(values)
            cid = _np(enc.indices).astype(np.int64)
            distinct = enc.dictionary.to_pylist()
        else:
            cid, distinct = np.zeros(0, np.int64), []
        split = wordtok.chunk_tokens
        per_chunk = [split(c) for c in distinct]
        chunk_counts = np.fromiter((len(t) for t in per_chunk), np.int64, len(per_chunk))
        chunk_start = np.zeros(len(per_chunk) + 1, np.int64)
        np.cumsum(chunk_counts, out=chunk_start[1:])
        # the distinct chunks' tokens, one after another, as dictionary ids
        flat_tokens = pa.array([t for toks in per_chunk for t in toks], pa.large_string())
        enc = pc.dictionary_encode(flat_tokens) if len(flat_tokens) else None
        flat = _np(enc.indices).astype(np.int64) if enc is not None else np.zeros(0, np.int64)
        cnt = chunk_counts[cid] if len(cid) else np.zeros(0, np.int64)
        total = int(cnt.sum())
        out_start = np.cumsum(cnt) - cnt
        src = np.repeat(chunk_start[cid] - out_start, cnt) + np.arange(total, dtype=np.int64)
        self.ids = flat[src] if total else np.zeros(0, np.int64)
        self.vocab = enc.dictionary.to_pylist() if enc is not None else []
        vocab_lens = _np(pc.utf8_length(enc.dictionary)).astype(np.int64) if enc is not None else np.zeros(0, np.int64)
        self.lens = vocab_lens[self.ids] if total else np.zeros(0, np.int64)
        self.counts = np.bincount(parents, weights=cnt, minlength=n).astype(np.int64)
        self.offsets = np.zeros(n + 1, np.int64)
        np.cumsum(self.counts, out=self.offsets[1:])


@numba.njit(cache=True, nogil=True)
def _sentencizer(mark, punct, offsets):
    """Sentences per string, as spaCy's sentencizer: 1 + the tokens that are neither punctuation
    nor a sentence mark and come after a sentence mark since the last such token (0: no tokens)."""
    n = len(offsets) - 1
    out = np.zeros(n, np.int64)
    for d in range(n):
        s, e = offsets[d], offsets[d + 1]
        if e == s:
            continue
        c = 1
        seen = False
        for j in range(s, e):
            if seen and not mark[j] and not punct[j]:
                c += 1
                seen = False
            elif mark[j]:
                seen = True
        out[d] = c
    return out


def _count_sentences(lines: pa.Array) -> np.ndarray:
    toks = _Tokens(lines)
    mark = np.fromiter((wordtok.is_sentence_mark(t) for t in toks.vocab), np.bool_, len(toks.vocab))
    punct = np.fromiter((wordtok.is_punct(t) for t in toks.vocab), np.bool_, len(toks.vocab))
    if len(toks.ids) == 0:
        return np.zeros(len(lines), np.int64)
    return _sentencizer(mark[toks.ids], punct[toks.ids], toks.offsets)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True)
def _mix(x):
    # splitmix64's finalizer
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _ngram_chars(ids, lens, offsets, top_ns, dup_ns, max_n):
    """Per document: for each n of ``top_ns`` the characters (words joined by spaces) of the most
    frequent n-gram times its count (ties: the n-gram seen first); for each n of ``dup_ns`` the
    characters (joined without spaces) of datatrove's left-to-right duplicated n-gram scan."""
    n_docs = len(offsets) - 1
    top = np.zeros((len(top_ns), n_docs), np.int64)
    dup = np.zeros((len(dup_ns), n_docs), np.int64)
    for d in range(n_docs):
        s = offsets[d]
        m = offsets[d + 1] - s
        if m < 2:
            continue
        csum = np.zeros(m + 1, np.int64)
        for i in range(m):
            csum[i + 1] = csum[i] + lens[s + i]
        h = np.empty(m, np.uint64)
        for i in range(m):
            h[i] = _mix(np.uint64(ids[s + i] + 1) * _GOLDEN)
        cur = 1
        for n in range(2, max_n + 1):
            k = m - n + 1
            if k <= 0:
                break
            # extend every window starting at i < k by one token
            for i in range(k):
                h[i] = _mix((h[i] ^ np.uint64(cur)) * _GOLDEN + np.uint64(ids[s + i + cur] + 1))
            cur = n
            hk = h[:k]
            for t in range(len(top_ns)):
                if top_ns[t] != n:
                    continue
                order = np.argsort(hk, kind="mergesort")  # stable: runs list positions in order
                best_count = 0
                best_pos = 0
                j = 0
                while j < k:
                    first = order[j]
                    c = 1
                    while j + c < k and hk[order[j + c]] == hk[first]:
                        c += 1
                    if c > best_count or (c == best_count and first < best_pos):
                        best_count = c
                        best_pos = first
                    j += c
                top[t, d] = (csum[best_pos + n] - csum[best_pos] + n - 1) * best_count
            for t in range(len(dup_ns)):
                if dup_ns[t] != n:
                    continue
                size = 1
                while size < 2 * k:
                    size *= 2
                table = np.zeros(size, np.uint64)
                used = np.zeros(size, np.bool_)
                mask = np.uint64(size - 1)
                chars = 0
                i = 0
                while i < k:
                    key = hk[i]
                    slot = key & mask
                    found = False
                    while used[slot]:
                        if table[slot] == key:
                            found = True
                            break
                        slot = (slot + np.uint64(1)) & mask
                    if found:
                        chars += csum[i + n] - csum[i]
                        i += n
                    else:
                        used[slot] = True
                        table[slot] = key
                        i += 1
                dup[t, d] = chars
    return top, dup


# --- families --------------------------------------------------------------------------------------

def _gopher_quality(arr: pa.Array, stop_words: Sequence[str]) -> dict[str, np.ndarray]:
    n = len(arr)
    toks = _Lists(pc.split_pattern_regex(arr, _WS + "+"), n)  # str.split(); empty ends are no words
    words = pc.utf8_trim(toks.values, characters=_PUNCT_SYMBOLS)
    lens = _np(pc.utf8_length(words)).astype(np.int64)
    is_word = lens > 0
    n_words = toks.per_doc(mask=is_word)
    alpha = _np(pc.match_substring_regex(words, r"\pL")).astype(bool) & is_word
    stop = _np(pc.is_in(pc.utf8_lower(words), value_set=pa.array(sorted({w.lower() for w in stop_words}),
                                                                  pa.string()))).astype(bool) & is_word
    symbols = sum(_np(pc.count_substring(arr, s)).astype(np.int64) for s in ("#", "...", "…"))
    lines = _Lists(pc.split_pattern_regex(arr, _SPLITLINES), n)
    stripped = _strip(lines.values)
    nonblank = _np(pc.utf8_length(stripped)) > 0
    n_lines = lines.per_doc(mask=nonblank)
    bullet = _np(pc.match_substring_regex(stripped, _BULLET)).astype(bool) & nonblank
    ellipsis = (_np(pc.ends_with(stripped, "...")).astype(bool) | _np(pc.ends_with(stripped, "…")).astype(bool))
    return {
        "heur_n_words": n_words.astype(np.int32),
        "heur_avg_word_length": _ratio(toks.per_doc(lens), n_words),
        "heur_symbol_word_ratio": _ratio(symbols, n_words),
        "heur_bullet_lines_ratio": _ratio(lines.per_doc(mask=bullet), n_lines),
        "heur_ellipsis_lines_ratio": _ratio(lines.per_doc(mask=ellipsis & nonblank), n_lines),
        "heur_alpha_words_ratio": _ratio(toks.per_doc(mask=alpha), n_words),
        "heur_stop_words": toks.per_doc(mask=stop).astype(np.int32),
    }


def _gopher_quality_datatrove(arr: pa.Array, tokens: _Tokens, stop_words: Sequence[str]) -> dict[str, np.ndarray]:
    """The Gopher quality metrics with ``definitions="datatrove"`` (the reference:
    :func:`heuristics.gopher_quality_metrics`) in bulk: per-token flags are computed once per
    distinct token (``tokens.vocab``) and summed per document."""
    n = len(arr)
    vocab, ids = tokens.vocab, tokens.ids
    punct, stop_set = rules.DATATROVE_PUNCTUATION, frozenset(stop_words)
    word = np.fromiter((any(ch not in punct for ch in t) for t in vocab), np.bool_, len(vocab))[ids]
    alpha = np.fromiter((any(ch.isalpha() for ch in t) for t in vocab), np.bool_, len(vocab))[ids]
    stop = np.fromiter((t in stop_set for t in vocab), np.bool_, len(vocab))[ids]
    parents = np.repeat(np.arange(n, dtype=np.int64), tokens.counts)
    n_words = np.bincount(parents, weights=word, minlength=n)
    stop_first = ~_later_duplicates(parents[stop], ids[stop])  # distinct stop words per document
    hashes = _np(pc.count_substring(arr, "#")).astype(np.int64)
    ellipses = _np(pc.count_substring(arr, "...")).astype(np.int64) + _np(pc.count_substring(arr, "…"))
    lines = _Lists(pc.split_pattern_regex(arr, _SPLITLINES), n)
    # str.splitlines() has no piece after a final line break, and no line at all in ""
    last = pc.utf8_slice_codeunits(arr, -1)
    no_tail = _bools(pc.is_in(last, value_set=pa.array(list("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")))) | \
        (_np(pc.utf8_length(arr)) == 0)
    n_lines = lines.per_doc() - no_tail
    left = pc.utf8_ltrim(lines.values, characters=rules.WHITESPACE)
    bullet = _bools(pc.starts_with(left, "•")) | _bools(pc.starts_with(left, "-"))
    right = pc.utf8_rtrim(lines.values, characters=rules.WHITESPACE)
    ellipsis = _bools(pc.ends_with(right, "...")) | _bools(pc.ends_with(right, "…"))
    return {
        "heur_n_words": n_words.astype(np.int32),
        "heur_avg_word_length": _ratio(np.bincount(parents, weights=tokens.lens * word, minlength=n), n_words),
        "heur_symbol_word_ratio": _ratio(np.maximum(hashes, ellipses), tokens.counts),
        "heur_bullet_lines_ratio": _ratio(lines.per_doc(mask=bullet), n_lines),
        "heur_ellipsis_lines_ratio": _ratio(lines.per_doc(mask=ellipsis), n_lines),
        "heur_alpha_words_ratio": _ratio(np.bincount(parents, weights=alpha, minlength=n), tokens.counts),
        "heur_stop_words": np.bincount(parents[stop], weights=stop_first, minlength=n).astype(np.int32),
    }


def _dup_fracs(parts: _Lists, n_chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dup = _later_duplicates(parts.parents, _ids(parts.values))
    lens = _np(pc.utf8_length(parts.values)).astype(np.int64) if len(parts.values) else np.zeros(0, np.int64)
    return _ratio(parts.per_doc(mask=dup), parts.per_doc()), _ratio(parts.per_doc(lens, mask=dup), n_chars)


def _gopher_repetition(arr: pa.Array, tokens: _Tokens) -> dict[str, np.ndarray]:
    n = len(arr)
    n_chars = _np(pc.utf8_length(arr)).astype(np.int64)
    out: dict[str, np.ndarray] = {"heur_n_chars": n_chars}
    paras = _Lists(pc.split_pattern_regex(_strip(arr), r"\n\n+"), n)
    out["heur_dup_para_frac"], out["heur_dup_para_char_frac"] = _dup_fracs(paras, n_chars)
    lines = _Lists(pc.split_pattern_regex(arr, r"\n+"), n)
    out["heur_dup_line_frac"], out["heur_dup_line_char_frac"] = _dup_fracs(lines, n_chars)
    top_ns = np.array(rules.TOP_NGRAMS, np.int64)
    dup_ns = np.array(rules.DUP_NGRAMS, np.int64)
    top, dup = _ngram_chars(tokens.ids, tokens.lens, tokens.offsets, top_ns, dup_ns, int(max(rules.DUP_NGRAMS)))
    for t, k in enumerate(rules.TOP_NGRAMS):
        out[f"heur_top_{k}_gram_char_frac"] = _ratio(top[t], n_chars)
    for t, k in enumerate(rules.DUP_NGRAMS):
        out[f"heur_dup_{k}_gram_char_frac"] = _ratio(dup[t], n_chars)
    return out


def _fineweb(arr: pa.Array, tokens: _Tokens, cfg: FineWebQualityConfig) -> dict[str, np.ndarray]:
    n = len(arr)
    lines = _Lists(pc.split_pattern(arr, "\n"), n)
    nonblank = _np(pc.utf8_length(_strip(lines.values))) > 0
    n_lines = lines.per_doc(mask=nonblank)
    punct = _np(pc.is_in(pc.utf8_slice_codeunits(lines.values, -1), value_set=_TERMINAL)).astype(bool)
    lens = _np(pc.utf8_length(lines.values)).astype(np.int64)
    kept = pc.filter(lines.values, pa.array(nonblank))
    kept_parents = lines.parents[nonblank]
    dup = _later_duplicates(kept_parents, _ids(kept))
    dup_chars = np.bincount(kept_parents, weights=(lens[nonblank] * dup).astype(np.float64), minlength=n)
    newlines = _np(pc.count_substring(arr, "\n")).astype(np.int64)
    n_chars = _np(pc.utf8_length(arr)).astype(np.int64)
    return {
        "heur_fw_lines": n_lines.astype(np.int32),
        "heur_fw_line_punct_ratio": _ratio(lines.per_doc(mask=punct & nonblank), n_lines),
        "heur_fw_short_line_ratio": _ratio(lines.per_doc(mask=(lens <= cfg.short_line_length) & nonblank), n_lines),
        "heur_fw_char_dup_ratio": _ratio(dup_chars, n_chars - newlines),
        "heur_fw_list_ratio": _ratio(newlines, tokens.counts),
    }


def _bools(arr: pa.Array) -> np.ndarray:
    return _np(arr).astype(bool)


def _c4(arr: pa.Array, cfg: C4Config) -> tuple[dict[str, np.ndarray], list[str]]:
    n = len(arr)
    lines = _Lists(pc.split_pattern_regex(arr, _SPLITLINES), n)
    stripped = _strip(lines.values)
    nonblank = _np(pc.utf8_length(stripped)) > 0
    m = len(stripped)
    gone = np.zeros(m, bool)  # removed by a line rule
    if cfg.max_word_length is not None:
        long_lines = np.flatnonzero(_np(pc.utf8_length(stripped)) > cfg.max_word_length)
        for i in long_lines:  # only lines longer than the limit can hold such a word
            gone[i] = any(len(w) > cfg.max_word_length for w in stripped[int(i)].as_py().split())
    line = pc.replace_substring_regex(stripped, r"\[\p{Nd}*\]|\[edit\]|\[citation needed\]", "") \
        if cfg.remove_citations else stripped
    if cfg.filter_no_terminal_punct:
        ends = np.zeros(m, bool)
        for p in rules.C4_END_PUNCTUATION:
            ends |= _bools(pc.ends_with(line, p))
        gone |= ~ends | _bools(pc.ends_with(line, "..."))
    if cfg.min_words_per_line is not None:
        gone |= _np(pc.count_substring_regex(stripped, _NOT_WS + "+")) < cfg.min_words_per_line
    lower = pc.utf8_lower(line)
    reach = ~gone
    lorem = reach & _bools(pc.match_substring(lower, "lorem ipsum")) if cfg.filter_lorem_ipsum else np.zeros(m, bool)
    reach &= ~lorem
    if cfg.filter_javascript:
        reach &= ~_bools(pc.match_substring(lower, "javascript"))
    curly = reach & _bools(pc.match_substring(line, "{")) if cfg.filter_curly_bracket else np.zeros(m, bool)
    reach &= ~curly
    if cfg.filter_policy:
        reach &= ~_bools(pc.match_substring_regex(lower, _POLICY))
    kept = reach
    removed = lines.per_doc(mask=~kept & nonblank)
    kept_parents = lines.parents[kept]
    counts = np.bincount(kept_parents, minlength=n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    kept_lines = pa.ListArray.from_arrays(pa.array(offsets), pc.filter(line, pa.array(kept)).cast(pa.string()))
    joined = pc.binary_join(kept_lines, "\n")
    kept_values = pc.filter(line, pa.array(kept))
    sentences = np.bincount(kept_parents, weights=_count_sentences(kept_values), minlength=n)
    cleaned = _strip(joined).to_pylist()
    return {
        "heur_c4_sentences": sentences.astype(np.int32),
        "heur_c4_lorem_ipsum": lines.per_doc(mask=lorem) > 0,
        "heur_c4_curly_bracket": lines.per_doc(mask=curly) > 0,
        "heur_c4_lines_removed": removed.astype(np.int32),
    }, cleaned


def bulk_metrics(texts: Sequence[str | None], cfg: HeuristicsConfig) -> tuple[dict[str, pa.Table], list[str | None]]:
    """What :func:`heuristics.reference_metrics` returns, computed in bulk."""
    n = len(texts)
    rows = np.array([i for i, t in enumerate(texts) if t is not None], np.int64)
    checked = [texts[i] for i in rows]
    arr = pa.array(checked, pa.large_string())
    out: dict[str, pa.Table] = {}
    cleaned: list[str | None] = list(texts)
    gq = cfg.gopher_quality
    datatrove_gq = gq.enabled and gq.definitions == "datatrove"
    tokens = _Tokens(arr) if (cfg.gopher_repetition.enabled or cfg.fineweb_quality.enabled or datatrove_gq) else None
    if gq.enabled:
        values = _gopher_quality_datatrove(arr, tokens, gq.stop_words) if datatrove_gq \
            else _gopher_quality(arr, gq.stop_words)
        out["gopher_quality"] = _scatter(values, rules.METRICS_SCHEMA, rows, n)
    if cfg.gopher_repetition.enabled:
        out["gopher_repetition"] = _scatter(_gopher_repetition(arr, tokens), rules.GOPHER_REPETITION_SCHEMA, rows, n)
    if cfg.c4.enabled:
        values, c4_cleaned = _c4(arr, cfg.c4)
        out["c4"] = _scatter(values, rules.C4_SCHEMA, rows, n)
        if cfg.c4.clean_lines:
            for i, text in zip(rows.tolist(), c4_cleaned):
                cleaned[i] = text
    if cfg.fineweb_quality.enabled:
        out["fineweb_quality"] = _scatter(_fineweb(arr, tokens, cfg.fineweb_quality), rules.FINEWEB_SCHEMA, rows, n)
    return out, cleaned
