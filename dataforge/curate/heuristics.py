"""Heuristic rule filters: Gopher quality, Gopher repetition, C4 and FineWeb's own rules.

Four rule families, each with its own config section (:class:`dataforge.config.HeuristicsConfig`;
defaults = the published thresholds) and ``enabled`` flag, checked in the order
``gopher_quality, gopher_repetition, c4, fineweb_quality``; a dropped row's ``drop_reason``
names the first rule it failed as ``<family>:<rule>`` (:data:`RULE_NAMES`).

* Gopher quality — Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from
  Training Gopher", Appendix A.1.1: fewer than 50 or more than 100,000 words; a mean word length
  outside 3..10 characters; a symbol-to-word ratio above 0.1 for the hash symbol or the
  ellipsis; more than 90% of lines starting with a bullet point or more than 30% ending with an
  ellipsis; fewer than 80% of words with an alphabetic character; fewer than two stop words.
  Datatrove's ``GopherQualityFilter`` is the reference; by default the semantics follow it
  except where noted in :func:`gopher_quality_metrics` (deliberate, documented deviations);
  ``definitions: datatrove`` follows it exactly (:func:`_text_metrics_datatrove`).
* Gopher repetition — the same paper, Table A1, as datatrove 0.10.1's ``GopherRepetitionFilter``
  (:func:`gopher_repetition_metrics`).
* C4 — Raffel et al. 2020, as datatrove 0.10.1's ``C4QualityFilter`` with its defaults: line
  rules that remove lines and document rules that drop documents; the line cleaning is a
  modifier (the kept rows' text becomes their kept lines, ``heur_c4_lines_removed``)
  (:func:`c4_metrics`).
* FineWeb quality — Penedo et al. 2024, as datatrove 0.10.1's ``FineWebQualityFilter``
  (:func:`fineweb_quality_metrics`).

The Gopher repetition and FineWeb rules count words, and C4 counts sentences, as datatrove does
for English: with spaCy's rule-based tokenizer and sentencizer, ported in
:mod:`dataforge.curate.wordtok` (no spaCy needed). benchmarks/bench_rules.py measures how often
the decisions agree with datatrove's.

This module is the readable reference: one Python pass per document. The stage runs the bulk
implementation in :mod:`dataforge.curate.heuristics_fast` (one numba scan over the UTF-8
buffer, a cache of distinct chunks, an exact n-gram kernel), which is tested to give the same metrics and decisions. The rules themselves
(families, metrics, bounds, schemas, character sets) are data in
:mod:`dataforge.curate.heuristics_rules`, which both read.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataforge.config import C4Config, FineWebQualityConfig, GopherQualityConfig, HeuristicsConfig
from dataforge.curate import wordtok
from dataforge.curate.heuristics_rules import (  # noqa: F401 (FAMILY_NAMES, *_RULE*: re-exported)
    C4_END_PUNCTUATION,
    C4_SCHEMA,
    DATATROVE_PUNCTUATION,
    DUP_NGRAMS,
    FAMILIES,
    FAMILY_NAMES,
    FINEWEB_SCHEMA,
    GOPHER_QUALITY_RULE_NAMES,
    GOPHER_QUALITY_RULES,
    GOPHER_REPETITION_RULES,
    GOPHER_REPETITION_SCHEMA,
    METRIC_PREFIX,
    METRICS_SCHEMA,
    POLICY_SUBSTRINGS,
    RULE_NAMES,
    TERMINAL_PUNCTUATION,
    TOP_NGRAMS,
    punctuation_and_symbols,
)
from dataforge.records import with_drop

STAGE = "heuristics"
# A bullet line starts with a bullet character; the ASCII markers "-", "*", "+" and the en dash
# count only when followed by whitespace, so "**bold**", "--flag" or "-5" are not bullets.
_BULLET_LINE = re.compile(r"^(?:[•‣⁃◦▪▫●○■□►▸➢➤]|[-*+–](?:\s|$))")
_ELLIPSES = ("...", "…")


def split_words(text: str) -> list[str]:
    """The words of ``text``: whitespace tokens with leading and trailing punctuation/symbols
    stripped; tokens made only of punctuation or symbols ("-", "...", "#", "|") are not words.

    This stands in for the word tokenizer datatrove uses (which splits punctuation off into
    tokens of its own): "end." and "(see" count as the words "end" and "see", so word lengths
    are not inflated by attached punctuation, while "3.14", "don't" or "e-mail" stay whole.
    """
    punct = punctuation_and_symbols()
    words = []
    for token in text.split():
        # An index walk over a set: ~10x faster than token.strip() with 8k characters to strip.
        start, end = 0, len(token)
        while start < end and token[start] in punct:
            start += 1
        while end > start and token[end - 1] in punct:
            end -= 1
        if start < end:
            words.append(token[start:end])
    return words


def _ratio(part: float, whole: float) -> float:
    """``part / whole``, and 0.0 for an empty whole (a document without words or lines)."""
    return part / whole if whole else 0.0


def _text_metrics(text: str, stop_words: frozenset[str]) -> dict[str, float | int]:
    words = split_words(text)
    n_words = len(words)
    # Lines that are blank are not lines for the bullet/ellipsis ratios (datatrove counts them):
    # a bullet list with blank lines between items is still all bullets.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    n_symbols = text.count("#") + sum(text.count(e) for e in _ELLIPSES)
    return {
        "heur_n_words": n_words,
        "heur_avg_word_length": _ratio(sum(len(w) for w in words), n_words),
        # One combined ratio for "#" and ellipses (datatrove checks them separately, same bound).
        "heur_symbol_word_ratio": _ratio(n_symbols, n_words),
        "heur_bullet_lines_ratio": _ratio(sum(1 for line in lines if _BULLET_LINE.match(line)), len(lines)),
        "heur_ellipsis_lines_ratio": _ratio(sum(1 for line in lines if line.endswith(_ELLIPSES)), len(lines)),
        "heur_alpha_words_ratio": _ratio(sum(1 for w in words if any(c.isalpha() for c in w)), n_words),
        # Occurrences, as in datatrove ("the ... the" counts 2), matched case-insensitively.
        "heur_stop_words": sum(1 for w in words if w.lower() in stop_words),
    }


def gopher_quality_metrics(texts: Sequence[str | None], stop_words: Collection[str] | None = None,
                           definitions: str = "dataforge") -> pa.Table:
    """The Gopher quality metrics of each text, as a table of :data:`METRICS_SCHEMA`.

    A ``None`` text (a row that is not checked) gets null metrics. ``stop_words`` defaults to
    the paper's eight words (:class:`GopherQualityConfig`).

    Definitions (a "word" is what :func:`split_words` returns):
    ``heur_n_words`` number of words; ``heur_avg_word_length`` mean characters per word;
    ``heur_symbol_word_ratio`` ("#" count + "..." and "…" count) / words;
    ``heur_bullet_lines_ratio`` / ``heur_ellipsis_lines_ratio`` share of non-blank lines that
    start with a bullet / end with an ellipsis; ``heur_alpha_words_ratio`` share of words with
    at least one alphabetic character; ``heur_stop_words`` stop-word occurrences. A text with
    no words has every ratio and the mean word length 0.0.

    ``definitions="datatrove"`` counts as datatrove 0.10.1's GopherQualityFilter instead
    (:func:`_text_metrics_datatrove`).
    """
    if stop_words is None:
        stop_words = GopherQualityConfig().stop_words
    if definitions == "datatrove":
        exact = frozenset(stop_words)
        rows = [None if text is None else _text_metrics_datatrove(text, exact) for text in texts]
        return _table(rows, METRICS_SCHEMA)
    stop_set = frozenset(w.lower() for w in stop_words)
    rows = [None if text is None else _text_metrics(text, stop_set) for text in texts]
    columns = {name: [None if row is None else row[name] for row in rows] for name in METRICS_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=METRICS_SCHEMA)


def gopher_quality_reasons(metrics: pa.Table, cfg: GopherQualityConfig) -> list[str | None]:
    """For each row of ``metrics`` the first failing rule (``"gopher_quality:<config field>"``),
    or None when every enabled rule passes or the row was not checked (null metrics).

    Rules run in config field order; a None threshold disables its rule.
    """
    enabled = [(rule, rule.threshold(cfg)) for rule in GOPHER_QUALITY_RULES if rule.threshold(cfg) is not None]
    columns = {name: metrics.column(name).to_pylist() for name in {rule.metric for rule, _ in enabled}}
    checked = metrics.column("heur_n_words").is_valid().to_pylist()
    reasons: list[str | None] = []
    for i in range(metrics.num_rows):
        reason = None
        if checked[i]:
            for rule, threshold in enabled:
                if rule.fails(columns[rule.metric][i], threshold):
                    reason = rule.reason
                    break
        reasons.append(reason)
    return reasons


def _text_metrics_datatrove(text: str, stop_words: frozenset[str]) -> dict[str, float | int]:
    """Gopher quality metrics as datatrove 0.10.1 counts them: ``heur_n_words`` and the mean word
    length over the tokens (:func:`tokenize`) that are not all punctuation; the "#" and the
    ellipsis ratios over all tokens (one column: the larger, as both share the bound); bullet /
    ellipsis line shares over every line of ``splitlines()`` (blank ones too; bullets are "•" and
    "-"); the alpha share over all tokens; and how many *distinct* stop words occur (as written)."""
    words = tokenize(text)
    kept = [w for w in words if any(ch not in DATATROVE_PUNCTUATION for ch in w)]
    lines = text.splitlines()
    symbols = max(text.count("#"), text.count("...") + text.count("…"))
    return {
        "heur_n_words": len(kept),
        "heur_avg_word_length": _ratio(sum(len(w) for w in kept), len(kept)),
        "heur_symbol_word_ratio": _ratio(symbols, len(words)),
        "heur_bullet_lines_ratio": _ratio(sum(1 for ln in lines if ln.lstrip().startswith(("•", "-"))), len(lines)),
        "heur_ellipsis_lines_ratio": _ratio(sum(1 for ln in lines if ln.rstrip().endswith(("...", "…"))), len(lines)),
        "heur_alpha_words_ratio": _ratio(sum(1 for w in words if any(c.isalpha() for c in w)), len(words)),
        "heur_stop_words": len(stop_words & set(words)),
    }

# --- tokens and sentences: spaCy's English rules, as datatrove counts them (wordtok) ------------

tokenize = wordtok.tokenize
count_sentences = wordtok.count_sentences


# --- Gopher repetition (reference) -------------------------------------------------------------

_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")


def find_duplicates(items: Sequence[str]) -> tuple[int, int]:
    """(items seen before, characters of those items), as datatrove's ``find_duplicates``."""
    seen: set[str] = set()
    n = chars = 0
    for item in items:
        if item in seen:
            n += 1
            chars += len(item)
        else:
            seen.add(item)
    return n, chars


def top_ngram_chars(words: Sequence[str], n: int) -> int:
    """Characters of the most frequent word n-gram (joined by spaces) times its count; ties go to
    the n-gram seen first (``Counter.most_common(1)``); 0 with fewer than n words."""
    grams = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    return len(gram) * count


def duplicated_ngram_chars(words: Sequence[str], n: int) -> int:
    """Characters of the word n-grams that repeat an earlier one, as datatrove's
    ``find_all_duplicate``: scanning left to right, a repeated n-gram counts its characters
    (words joined without spaces) and the scan jumps past it, so overlaps count once. N-grams
    are compared as word tuples (datatrove compares the joined strings, so "ab c" and "a bc"
    would match there)."""
    seen: set[tuple[str, ...]] = set()
    chars = i = 0
    while i < len(words) - n + 1:
        gram = tuple(words[i:i + n])
        if gram in seen:
            chars += sum(len(w) for w in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def _repetition_row(text: str) -> dict[str, float | int]:
    n_chars = len(text)
    row: dict[str, float | int] = {"heur_n_chars": n_chars}
    paragraphs = _PARAGRAPHS.split(text.strip())
    dup, chars = find_duplicates(paragraphs)
    row["heur_dup_para_frac"] = _ratio(dup, len(paragraphs))
    row["heur_dup_para_char_frac"] = _ratio(chars, n_chars)
    lines = _LINES.split(text)
    dup, chars = find_duplicates(lines)
    row["heur_dup_line_frac"] = _ratio(dup, len(lines))
    row["heur_dup_line_char_frac"] = _ratio(chars, n_chars)
    words = tokenize(text)
    for n in TOP_NGRAMS:
        row[f"heur_top_{n}_gram_char_frac"] = _ratio(top_ngram_chars(words, n), n_chars)
    for n in DUP_NGRAMS:
        row[f"heur_dup_{n}_gram_char_frac"] = _ratio(duplicated_ngram_chars(words, n), n_chars)
    return row


def gopher_repetition_metrics(texts: Sequence[str | None]) -> pa.Table:
    """The Gopher repetition metrics of each text (:data:`GOPHER_REPETITION_SCHEMA`; a None
    text gets nulls), as datatrove 0.10.1 computes them: paragraphs split on 2+ newlines of
    the stripped text, lines on 1+ newlines; ``dup_*_frac`` the share of paragraphs / lines
    that repeat an earlier one; ``dup_*_char_frac`` their characters over the text's;
    ``top_n_gram_char_frac`` the most frequent n-gram's characters x count over the text's;
    ``dup_n_gram_char_frac`` :func:`duplicated_ngram_chars` over the text's characters.
    An empty text has every fraction 0.0 (and fails the ``empty`` rule)."""
    return _table([None if t is None else _repetition_row(t) for t in texts], GOPHER_REPETITION_SCHEMA)


# --- C4 (reference) -------------------------------------------------------------------------------

CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")


def c4_lines(text: str, cfg: C4Config) -> tuple[list[str], dict[str, int | bool]]:
    """The lines C4 keeps (stripped, citations removed) and the document's C4 metrics:
    sentences in the kept lines, whether a line reaching that check holds "lorem ipsum" / a
    curly bracket, and how many non-blank lines were removed. The per-line checks run in
    datatrove's order: a word over ``max_word_length``; citations removed; no terminal
    punctuation; fewer than ``min_words_per_line`` words; "lorem ipsum" (document rule);
    "javascript"; "{" (document rule); a policy phrase. Datatrove stops at the first
    document-rule hit; here the scan goes on (the metrics of a document that is dropped
    anyway), and a line with a document-rule hit is not kept."""
    kept: list[str] = []
    sentences = removed = 0
    lorem = curly = False
    for raw in text.splitlines():
        line = raw.strip()
        nonblank = bool(line)  # removed lines are counted when they held something
        words = line.split()
        if cfg.max_word_length is not None and any(len(w) > cfg.max_word_length for w in words):
            removed += nonblank
            continue
        if cfg.remove_citations:
            line = CITATION_RE.sub("", line)
        if cfg.filter_no_terminal_punct and (not line.endswith(C4_END_PUNCTUATION) or line.endswith("...")):
            removed += nonblank
            continue
        if cfg.min_words_per_line is not None and len(words) < cfg.min_words_per_line:
            removed += nonblank
            continue
        lower = line.lower()
        if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
            lorem = True
            removed += 1
            continue
        if cfg.filter_javascript and "javascript" in lower:
            removed += 1
            continue
        if cfg.filter_curly_bracket and "{" in line:
            curly = True
            removed += 1
            continue
        if cfg.filter_policy and any(p in lower for p in POLICY_SUBSTRINGS):
            removed += 1
            continue
        sentences += count_sentences(line)
        kept.append(line)
    return kept, {"heur_c4_sentences": sentences, "heur_c4_lorem_ipsum": lorem, "heur_c4_curly_bracket": curly,
                  "heur_c4_lines_removed": removed}


def c4_clean_text(kept_lines: Sequence[str]) -> str:
    """The text C4's line cleaning leaves: the kept lines joined by newlines, stripped."""
    return "\n".join(kept_lines).strip()


def c4_metrics(texts: Sequence[str | None], cfg: C4Config | None = None) -> tuple[pa.Table, list[str | None]]:
    """The C4 metrics of each text (:data:`C4_SCHEMA`; None texts get nulls) and its cleaned
    text (:func:`c4_clean_text`; None for None)."""
    cfg = cfg or C4Config()
    rows, cleaned = [], []
    for text in texts:
        if text is None:
            rows.append(None)
            cleaned.append(None)
            continue
        kept, row = c4_lines(text, cfg)
        rows.append(row)
        cleaned.append(c4_clean_text(kept))
    return _table(rows, C4_SCHEMA), cleaned


# --- FineWeb quality (reference) -------------------------------------------------------------------

def _fineweb_row(text: str, cfg: FineWebQualityConfig) -> dict[str, float | int]:
    lines = [line for line in text.split("\n") if line.strip() != ""]
    n = len(lines)
    # datatrove: a line "ends with" terminal punctuation as written (trailing blanks count)
    punct = sum(1 for line in lines if line[-1:] in TERMINAL_PUNCTUATION)
    short = sum(1 for line in lines if len(line) <= cfg.short_line_length)
    non_newline = len(text) - text.count("\n")
    return {
        "heur_fw_lines": n,
        "heur_fw_line_punct_ratio": _ratio(punct, n),
        "heur_fw_short_line_ratio": _ratio(short, n),
        "heur_fw_char_dup_ratio": _ratio(find_duplicates(lines)[1], non_newline),
        "heur_fw_list_ratio": _ratio(text.count("\n"), len(tokenize(text))),
    }


def fineweb_quality_metrics(texts: Sequence[str | None], cfg: FineWebQualityConfig | None = None) -> pa.Table:
    """FineWeb's metrics of each text (:data:`FINEWEB_SCHEMA`), as datatrove 0.10.1: over the
    non-blank lines of ``text.split("\\n")``, the share ending in a terminal punctuation mark
    (:data:`TERMINAL_PUNCTUATION`), the share of at most ``short_line_length`` characters, the
    characters of lines repeating an earlier line over the text's non-newline characters; and
    newlines per token (:func:`tokenize`). No non-blank line: ratios 0.0 (``empty`` rule)."""
    cfg = cfg or FineWebQualityConfig()
    return _table([None if t is None else _fineweb_row(t, cfg) for t in texts], FINEWEB_SCHEMA)


# --- shared ----------------------------------------------------------------------------------------

def _table(rows: list[dict | None], schema: pa.Schema) -> pa.Table:
    columns = {name: [None if row is None else row[name] for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


def family_config(cfg: HeuristicsConfig, family: str) -> Any:
    return getattr(cfg, family)


def reference_metrics(texts: Sequence[str | None],
                      cfg: HeuristicsConfig) -> tuple[dict[str, pa.Table], list[str | None]]:
    """Per enabled family its metrics table, and the C4-cleaned texts (the input texts when C4 is
    off or does not clean lines): the readable reference the bulk path is tested against."""
    out: dict[str, pa.Table] = {}
    cleaned: list[str | None] = list(texts)
    if cfg.gopher_quality.enabled:
        out["gopher_quality"] = gopher_quality_metrics(texts, cfg.gopher_quality.stop_words,
                                                       cfg.gopher_quality.definitions)
    if cfg.gopher_repetition.enabled:
        out["gopher_repetition"] = gopher_repetition_metrics(texts)
    if cfg.c4.enabled:
        out["c4"], c4_cleaned = c4_metrics(texts, cfg.c4)
        if cfg.c4.clean_lines:
            cleaned = c4_cleaned
    if cfg.fineweb_quality.enabled:
        out["fineweb_quality"] = fineweb_quality_metrics(texts, cfg.fineweb_quality)
    return out, cleaned


def reference_reasons(metrics: dict[str, pa.Table], cfg: HeuristicsConfig) -> list[str | None]:
    """Row by row, the first failed rule over the families in order (None: kept or unchecked)."""
    n = next(iter(metrics.values())).num_rows if metrics else 0
    checks = []
    for family in FAMILIES:
        if family.name not in metrics:
            continue
        fcfg = family_config(cfg, family.name)
        table = metrics[family.name]
        for rule in family.rules:
            threshold = rule.threshold(fcfg)
            if threshold is not None:
                checks.append((rule, threshold, fcfg, table.column(rule.metric).to_pylist()))
    reasons: list[str | None] = []
    for i in range(n):
        reason = None
        for rule, threshold, fcfg, values in checks:
            if values[i] is not None and rule.fails(values[i], threshold, fcfg):
                reason = rule.reason
                break
        reasons.append(reason)
    return reasons


def first_failed(metrics: dict[str, pa.Table], cfg: HeuristicsConfig, n: int) -> list[str | None]:
    """The same as :func:`reference_reasons`, vectorized: one numpy comparison per rule."""
    reason = np.full(n, -1, np.int32)
    names: list[str] = []
    for family in FAMILIES:
        if family.name not in metrics:
            continue
        fcfg = family_config(cfg, family.name)
        table = metrics[family.name]
        for rule in family.rules:
            threshold = rule.threshold(fcfg)
            if threshold is None:
                continue
            col = table.column(rule.metric)
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            values = col.fill_null(False if rule.op == "flag" else 0).to_numpy(zero_copy_only=False)
            if rule.op == "flag":
                fail = values.astype(bool)
            elif rule.op == "min":
                fail = values < threshold
                if rule.name == "line_punct_ratio" and fcfg.line_punct_exclude_zero:
                    fail &= values != 0
            else:
                fail = values > threshold
            fail &= valid & (reason < 0)
            reason[fail] = len(names)
            names.append(rule.reason)
    lookup = np.array(names + [None], dtype=object)
    return lookup[reason].tolist()


# --- the stage --------------------------------------------------------------------------------

def heuristics_table(texts: "Sequence[str | None] | pa.Array", cfg: HeuristicsConfig,
                     fast: bool = True) -> tuple[pa.Table, list[str | None], list[str | None] | None]:
    """Metrics of every enabled family as one table (families in order), the drop reason of each
    text (None: kept, or not checked when the text is None) and the texts as C4's line cleaning
    leaves them. ``fast`` picks the bulk path, which also takes an Arrow string array (and then
    returns the cleaned texts only when C4 cleans lines); ``fast=False`` the reference."""
    if fast:
        # imported here: the bulk path loads numba, which the reference does not need
        from dataforge.curate.heuristics_fast import bulk_metrics

        metrics, cleaned = bulk_metrics(texts, cfg)
        reasons = first_failed(metrics, cfg, len(texts))
    else:
        metrics, cleaned = reference_metrics(texts, cfg)
        reasons = reference_reasons(metrics, cfg)
    columns: dict[str, pa.ChunkedArray] = {}
    fields: list[pa.Field] = []
    for family in FAMILIES:
        if family.name in metrics:
            for field in family.schema:
                if field.name not in columns:
                    fields.append(field)
                    columns[field.name] = metrics[family.name].column(field.name)
    table = pa.Table.from_arrays([columns[f.name] for f in fields], schema=pa.schema(fields)) if fields \
        else pa.table({"_": pa.nulls(len(texts))}).drop_columns(["_"])
    return table, reasons, cleaned


#: rows checked per pass: a pass's working memory grows with its rows (Python strings, the fast
#: kernels' per-byte and per-chunk arrays), and a run checks several shards at once on threads; a
#: 50,000-row shard in one pass held about 1.5 GB. Two threads on ten 20,000-row shards of the
#: scale corpus peaked at 1.60 GB with 5,000 rows a pass and 1.23 GB with 2,000, no slower.
BATCH_ROWS = 2000


def apply_heuristics(table: pa.Table, cfg: HeuristicsConfig, fast: bool = True,
                     batch_rows: int | None = None) -> tuple[pa.Table, pa.Table]:
    """The heuristics stage: ``(kept, rejected)``.

    Only rows whose ``kind`` is in ``cfg.apply_to`` are checked (``heur_checked``); the others
    pass with null metrics. With ``cfg.keep_metrics`` the ``heur_*`` metric columns of the
    enabled families are added to both outputs. Rejected rows carry ``drop_stage="heuristics"``
    and the first failed rule as ``drop_reason`` (``<family>:<rule>``). With C4 enabled and
    ``c4.clean_lines``, the kept rows' text is their kept lines (``heur_c4_lines_removed``
    always, even without ``keep_metrics``; rejected rows keep their text as it came).
    A disabled stage returns the table unchanged and no rejected rows. Rows are checked
    ``batch_rows`` at a time (default :data:`BATCH_ROWS`); the result does not depend on it.
    """
    if not cfg.enabled:
        return table, with_drop(table.slice(0, 0), STAGE, [])
    batch_rows = batch_rows or BATCH_ROWS
    if table.num_rows > batch_rows:
        parts = [apply_heuristics(table.slice(start, batch_rows), cfg, fast, batch_rows)
                 for start in range(0, table.num_rows, batch_rows)]
        return pa.concat_tables([k for k, _ in parts]), pa.concat_tables([r for _, r in parts])

    # Re-running the stage replaces its own columns instead of duplicating them.
    table = table.drop_columns([name for name in table.column_names if name.startswith(METRIC_PREFIX)])
    # A missing text on a checked row is an empty document (and fails), never a silent pass.
    checked = pc.fill_null(pc.is_in(table.column("kind").cast(pa.string()),
                                    value_set=pa.array(sorted(set(cfg.apply_to)), pa.string())), False)
    if fast:  # the bulk path reads the Arrow column (no Python string per row)
        text = table.column("text").cast(pa.large_string())
        texts = pc.if_else(checked, pc.fill_null(text, ""), pa.scalar(None, pa.large_string())).combine_chunks()
    else:
        texts = [(text or "") if check else None
                 for text, check in zip(table.column("text").to_pylist(), checked.to_pylist())]
    metrics, reasons, cleaned = heuristics_table(texts, cfg, fast=fast)

    out = table.append_column(pa.field("heur_checked", pa.bool_()), checked.combine_chunks())
    for field in metrics.schema:
        if cfg.keep_metrics or field.name == "heur_c4_lines_removed":
            out = out.append_column(field, metrics.column(field.name))

    dropped = pa.array([reason is not None for reason in reasons], pa.bool_())
    kept = out.filter(pc.invert(dropped))
    if cfg.c4.enabled and cfg.c4.clean_lines:
        text_type = table.schema.field("text").type
        new_text = [c if c is not None else t for c, t, r in zip(cleaned, table.column("text").to_pylist(), reasons)
                    if r is None]
        kept = kept.set_column(kept.column_names.index("text"), table.schema.field("text"),
                               pa.array(new_text, text_type))
    rejected = with_drop(out.filter(dropped), STAGE, [reason for reason in reasons if reason is not None])
    return kept, rejected


def heuristics_summary(kept: pa.Table, rejected: pa.Table) -> dict:
    """Counts for a report: rows, kept, dropped by rule (first failed rule, in rule order)."""
    counts = Counter(rejected.column("drop_reason").to_pylist()) if rejected.num_rows else Counter()
    by_rule = {name: counts[name] for name in RULE_NAMES if counts.get(name)}
    by_rule.update({k: v for k, v in counts.items() if k not in by_rule})
    lines_removed = 0
    if "heur_c4_lines_removed" in kept.column_names:
        lines_removed = int(pc.sum(kept.column("heur_c4_lines_removed")).as_py() or 0)
    return {"rows": kept.num_rows + rejected.num_rows, "kept": kept.num_rows, "dropped": rejected.num_rows,
            "by_rule": by_rule, "c4_lines_removed": lines_removed}
