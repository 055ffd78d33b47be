"""Heuristic quality filter: the Gopher quality rules.

Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training Gopher",
Appendix A.1.1 ("Quality filtering"). A document is removed when it has fewer than 50 or more
than 100,000 words; a mean word length outside 3..10 characters; a symbol-to-word ratio above
0.1 for the hash symbol or the ellipsis; more than 90% of its lines starting with a bullet point
or more than 30% ending with an ellipsis; fewer than 80% of its words containing an alphabetic
character; or fewer than two of the stop words "the, be, to, of, and, that, have, with".
The thresholds live in :class:`dataforge.config.GopherQualityConfig` (defaults = the paper's).
Datatrove's ``GopherQualityFilter`` is the reference implementation; the semantics follow it
except where noted in :func:`gopher_quality_metrics`.

This is the readable reference implementation: one Python pass per document. A vectorized
implementation must produce the same metrics and reasons.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from dataforge.config import GopherQualityConfig, HeuristicsConfig
from dataforge.records import with_drop

STAGE = "heuristics"
RULE_PREFIX = "gopher_quality"
METRIC_PREFIX = "heur_"

METRICS_SCHEMA = pa.schema(
    [
        pa.field("heur_n_words", pa.int32()),
        pa.field("heur_avg_word_length", pa.float64()),
        pa.field("heur_symbol_word_ratio", pa.float64()),
        pa.field("heur_bullet_lines_ratio", pa.float64()),
        pa.field("heur_ellipsis_lines_ratio", pa.float64()),
        pa.field("heur_alpha_words_ratio", pa.float64()),
        pa.field("heur_stop_words", pa.int32()),
    ]
)


@dataclass(frozen=True)
class GopherRule:
    """One threshold rule: ``name`` is the GopherQualityConfig field holding its threshold."""

    name: str
    metric: str
    drop_below: bool  # True: drop when metric < threshold; False: drop when metric > threshold

    @property
    def reason(self) -> str:
        return f"{RULE_PREFIX}:{self.name}"

    def fails(self, value: float, threshold: float) -> bool:
        return value < threshold if self.drop_below else value > threshold


# In config field order, which is also the order the rules are checked in (the first failing
# rule names the drop reason).
GOPHER_RULES: tuple[GopherRule, ...] = (
    GopherRule("min_doc_words", "heur_n_words", drop_below=True),
    GopherRule("max_doc_words", "heur_n_words", drop_below=False),
    GopherRule("min_avg_word_length", "heur_avg_word_length", drop_below=True),
    GopherRule("max_avg_word_length", "heur_avg_word_length", drop_below=False),
    GopherRule("max_symbol_word_ratio", "heur_symbol_word_ratio", drop_below=False),
    GopherRule("max_bullet_lines_ratio", "heur_bullet_lines_ratio", drop_below=False),
    GopherRule("max_ellipsis_lines_ratio", "heur_ellipsis_lines_ratio", drop_below=False),
    # Named after the paper's "non-alpha" bound but, as in datatrove, a lower bound on the
    # share of words WITH an alphabetic character: 0.8 drops documents below 80% alpha words.
    GopherRule("max_non_alpha_words_ratio", "heur_alpha_words_ratio", drop_below=True),
    GopherRule("min_stop_words", "heur_stop_words", drop_below=True),
)
RULE_NAMES: tuple[str, ...] = tuple(rule.reason for rule in GOPHER_RULES)

_config_rules = [name for name in GopherQualityConfig.model_fields if name != "stop_words"]
if [rule.name for rule in GOPHER_RULES] != _config_rules:  # pragma: no cover - a programming error
    raise RuntimeError(f"GOPHER_RULES {[r.name for r in GOPHER_RULES]} out of sync with GopherQualityConfig {_config_rules}")

# A bullet line starts with a bullet character; the ASCII markers "-", "*", "+" and the en dash
# count only when followed by whitespace, so "**bold**", "--flag" or "-5" are not bullets.
_BULLET_LINE = re.compile(r"^(?:[•‣⁃◦▪▫●○■□►▸➢➤]|[-*+–](?:\s|$))")
_ELLIPSES = ("...", "…")


@functools.cache
def _punctuation_and_symbols() -> frozenset[str]:
    """Every Unicode character of category P* (punctuation) or S* (symbols), built once (~0.1 s)."""
    return frozenset(
        ch for ch in map(chr, range(sys.maxunicode + 1)) if unicodedata.category(ch)[0] in ("P", "S")
    )


def split_words(text: str) -> list[str]:
    """The words of ``text``: whitespace tokens with leading and trailing punctuation/symbols
    stripped; tokens made only of punctuation or symbols ("-", "...", "#", "|") are not words.

    This stands in for the word tokenizer datatrove uses (which splits punctuation off into
    tokens of its own): "end." and "(see" count as the words "end" and "see", so word lengths
    are not inflated by attached punctuation, while "3.14", "don't" or "e-mail" stay whole.
    """
    punct = _punctuation_and_symbols()
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


def gopher_quality_metrics(texts: Sequence[str | None], stop_words: Collection[str] | None = None) -> pa.Table:
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
    """
    if stop_words is None:
        stop_words = GopherQualityConfig().stop_words
    stop_set = frozenset(w.lower() for w in stop_words)
    rows = [None if text is None else _text_metrics(text, stop_set) for text in texts]
    columns = {name: [None if row is None else row[name] for row in rows] for name in METRICS_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=METRICS_SCHEMA)


def gopher_quality_reasons(metrics: pa.Table, cfg: GopherQualityConfig) -> list[str | None]:
    """For each row of ``metrics`` the first failing rule (``"gopher_quality:<config field>"``),
    or None when every enabled rule passes or the row was not checked (null metrics).

    Rules run in config field order; a None threshold disables its rule.
    """
    enabled = [(rule, getattr(cfg, rule.name)) for rule in GOPHER_RULES if getattr(cfg, rule.name) is not None]
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


def apply_heuristics(table: pa.Table, cfg: HeuristicsConfig) -> tuple[pa.Table, pa.Table]:
    """The heuristics stage: ``(kept, rejected)``.

    Only rows whose ``kind`` is in ``cfg.apply_to`` are checked (``heur_checked``); the others
    pass with null metrics. With ``cfg.keep_metrics`` the ``heur_*`` metric columns are added to
    both outputs. Rejected rows carry ``drop_stage="heuristics"`` and the first failing rule as
    ``drop_reason``. A disabled stage returns the table unchanged and no rejected rows.
    """
    if not cfg.enabled:
        return table, with_drop(table.slice(0, 0), STAGE, [])

    # Re-running the stage replaces its own columns instead of duplicating them.
    table = table.drop_columns([name for name in table.column_names if name.startswith(METRIC_PREFIX)])
    apply_to = set(cfg.apply_to)
    checked = [kind in apply_to for kind in table.column("kind").to_pylist()]
    # A missing text on a checked row is an empty document (and fails), never a silent pass.
    texts = [(text or "") if check else None for text, check in zip(table.column("text").to_pylist(), checked)]
    metrics = gopher_quality_metrics(texts, cfg.gopher_quality.stop_words)
    reasons = gopher_quality_reasons(metrics, cfg.gopher_quality)

    out = table.append_column(pa.field("heur_checked", pa.bool_()), pa.array(checked, pa.bool_()))
    if cfg.keep_metrics:
        for field in METRICS_SCHEMA:
            out = out.append_column(field, metrics.column(field.name))

    dropped = pa.array([reason is not None for reason in reasons], pa.bool_())
    kept = out.filter(pc.invert(dropped))
    rejected = with_drop(out.filter(dropped), STAGE, [reason for reason in reasons if reason is not None])
    return kept, rejected
