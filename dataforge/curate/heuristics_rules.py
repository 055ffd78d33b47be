"""The heuristic rules as data, shared by the reference and the bulk path.

The four families (:data:`FAMILIES`, in the order they are checked), each rule of a family
(:class:`Rule`: the metric it reads, the bound, the config field holding the threshold), the
metric schemas, and the character sets both implementations count with.
:mod:`dataforge.curate.heuristics` (the readable reference, and the stage) and
:mod:`dataforge.curate.heuristics_fast` (the bulk path) both read them from here, so neither
needs the other's internals; the stage imports the bulk path, never the reverse.
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dataforge.config import GopherQualityConfig, GopherRepetitionConfig, HeuristicsConfig

METRIC_PREFIX = "heur_"

# --- character sets ---------------------------------------------------------------------------


@functools.cache
def punctuation_and_symbols() -> frozenset[str]:
    """Every Unicode character of category P* (punctuation) or S* (symbols), built once (~0.1 s)."""
    return frozenset(
        ch for ch in map(chr, range(sys.maxunicode + 1)) if unicodedata.category(ch)[0] in ("P", "S")
    )


@functools.cache
def punctuation() -> frozenset[str]:
    """Every Unicode character of category P* (spaCy's ``is_punct`` is a token made only of these)."""
    return frozenset(ch for ch in punctuation_and_symbols() if unicodedata.category(ch)[0] == "P")


TERMINAL_PUNCTUATION = frozenset(
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964"
    "\u0965\u104a\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803"
    "\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c"
    "\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f"
    "\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb"
    "\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56"
    "\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047\U00011048"
    "\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6"
    "\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9\U0001144b"
    "\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce"
    "\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7"
    "\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43"
    "\U00011a9b\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e"
    "\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f\U0001da88"
)
"""datatrove 0.10.1's ``TERMINAL_PUNCTUATION`` (utils/text.py): FineWeb's ``stop_chars``."""

# datatrove 0.10.1's PUNCTUATION_SET (utils/text.py): a token made only of these is a "symbol word"
DATATROVE_PUNCTUATION = frozenset(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
) | frozenset(map(chr, [*range(0, 9), *range(11, 13), *range(13, 32), *range(127, 160)])) | TERMINAL_PUNCTUATION


# Python's whitespace (str.isspace, what str.split() and str.strip() use).
WHITESPACE = "".join(ch for ch in map(chr, range(sys.maxunicode + 1)) if ch.isspace())

# C4 (datatrove 0.10.1's C4QualityFilter): a kept line ends with one of these; a line holding a
# policy phrase is removed.
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                     "use cookies")


# --- rules ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """One rule of a family: fails when ``metric`` is below (``op="min"``) / above (``"max"``)
    the threshold, or is true (``"flag"``). The threshold is the config field ``field`` (None
    disables the rule) or the constant ``fixed``. A dropped row's ``drop_reason`` is
    :attr:`reason`, ``<family>:<name>``."""

    family: str
    name: str
    metric: str
    op: str
    field: str | None = None
    fixed: float | None = None

    @property
    def reason(self) -> str:
        return f"{self.family}:{self.name}"

    def threshold(self, cfg: Any) -> float | bool | None:
        if self.op == "flag":
            return True
        return getattr(cfg, self.field) if self.field else self.fixed

    def fails(self, value: Any, threshold: Any, cfg: Any = None) -> bool:
        if self.op == "flag":
            return bool(value)
        if self.op == "min":
            if self.name == "line_punct_ratio" and cfg is not None and cfg.line_punct_exclude_zero and value == 0:
                return False
            return value < threshold
        return value > threshold


def _gopher_quality(name: str, metric: str, op: str) -> Rule:
    """A Gopher quality rule: its name is the GopherQualityConfig field holding its threshold."""
    return Rule("gopher_quality", name, metric, op, field=name)


# In config field order, which is also the order the rules are checked in (the first failing
# rule names the drop reason).
GOPHER_QUALITY_RULES: tuple[Rule, ...] = (
    _gopher_quality("min_doc_words", "heur_n_words", "min"),
    _gopher_quality("max_doc_words", "heur_n_words", "max"),
    _gopher_quality("min_avg_word_length", "heur_avg_word_length", "min"),
    _gopher_quality("max_avg_word_length", "heur_avg_word_length", "max"),
    _gopher_quality("max_symbol_word_ratio", "heur_symbol_word_ratio", "max"),
    _gopher_quality("max_bullet_lines_ratio", "heur_bullet_lines_ratio", "max"),
    _gopher_quality("max_ellipsis_lines_ratio", "heur_ellipsis_lines_ratio", "max"),
    # Named after the paper's "non-alpha" bound but, as in datatrove, a lower bound on the
    # share of words WITH an alphabetic character: 0.8 drops documents below 80% alpha words.
    _gopher_quality("max_non_alpha_words_ratio", "heur_alpha_words_ratio", "min"),
    _gopher_quality("min_stop_words", "heur_stop_words", "min"),
)
GOPHER_QUALITY_RULE_NAMES: tuple[str, ...] = tuple(rule.reason for rule in GOPHER_QUALITY_RULES)

_config_rules = [name for name in GopherQualityConfig.model_fields
                 if name not in ("enabled", "stop_words", "definitions")]
if [rule.name for rule in GOPHER_QUALITY_RULES] != _config_rules:  # pragma: no cover - a programming error
    raise RuntimeError(f"GOPHER_QUALITY_RULES {[r.name for r in GOPHER_QUALITY_RULES]} out of sync with "
                       f"GopherQualityConfig {_config_rules}")

REPETITION_FIELDS = [name for name in GopherRepetitionConfig.model_fields if name != "enabled"]
GOPHER_REPETITION_RULES: tuple[Rule, ...] = (
    Rule("gopher_repetition", "empty", "heur_n_chars", "min", fixed=1),
    *(Rule("gopher_repetition", name, f"heur_{name}", "max", field=name) for name in REPETITION_FIELDS),
)
TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
if REPETITION_FIELDS[4:] != [f"top_{n}_gram_char_frac" for n in TOP_NGRAMS] + [
        f"dup_{n}_gram_char_frac" for n in DUP_NGRAMS]:  # pragma: no cover - a programming error
    raise RuntimeError("GopherRepetitionConfig fields out of sync with TOP_NGRAMS / DUP_NGRAMS")

C4_RULES: tuple[Rule, ...] = (
    Rule("c4", "lorem_ipsum", "heur_c4_lorem_ipsum", "flag"),
    Rule("c4", "curly_bracket", "heur_c4_curly_bracket", "flag"),
    Rule("c4", "min_sentences", "heur_c4_sentences", "min", field="min_sentences"),
)
FINEWEB_RULES: tuple[Rule, ...] = (
    Rule("fineweb_quality", "empty", "heur_fw_lines", "min", fixed=1),
    Rule("fineweb_quality", "line_punct_ratio", "heur_fw_line_punct_ratio", "min", field="line_punct_ratio"),
    Rule("fineweb_quality", "short_line_ratio", "heur_fw_short_line_ratio", "max", field="short_line_ratio"),
    Rule("fineweb_quality", "char_dup_ratio", "heur_fw_char_dup_ratio", "max", field="char_dup_ratio"),
    Rule("fineweb_quality", "list_ratio", "heur_fw_list_ratio", "max", field="list_ratio"),
)

# --- metric schemas ---------------------------------------------------------------------------

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
GOPHER_REPETITION_SCHEMA = pa.schema(
    [pa.field("heur_n_chars", pa.int64())] + [pa.field(f"heur_{name}", pa.float64()) for name in REPETITION_FIELDS])
C4_SCHEMA = pa.schema([
    pa.field("heur_c4_sentences", pa.int32()),
    pa.field("heur_c4_lorem_ipsum", pa.bool_()),
    pa.field("heur_c4_curly_bracket", pa.bool_()),
    pa.field("heur_c4_lines_removed", pa.int32()),
])
FINEWEB_SCHEMA = pa.schema([
    pa.field("heur_fw_lines", pa.int32()),
    pa.field("heur_fw_line_punct_ratio", pa.float64()),
    pa.field("heur_fw_short_line_ratio", pa.float64()),
    pa.field("heur_fw_char_dup_ratio", pa.float64()),
    pa.field("heur_fw_list_ratio", pa.float64()),
])


@dataclass(frozen=True)
class Family:
    name: str  # the HeuristicsConfig field
    rules: tuple[Rule, ...]
    schema: pa.Schema


# The documented order: the first failed rule of the first failing family names the drop.
FAMILIES: tuple[Family, ...] = (
    Family("gopher_quality", GOPHER_QUALITY_RULES, METRICS_SCHEMA),
    Family("gopher_repetition", GOPHER_REPETITION_RULES, GOPHER_REPETITION_SCHEMA),
    Family("c4", C4_RULES, C4_SCHEMA),
    Family("fineweb_quality", FINEWEB_RULES, FINEWEB_SCHEMA),
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES)
RULE_NAMES: tuple[str, ...] = tuple(rule.reason for family in FAMILIES for rule in family.rules)
if list(FAMILY_NAMES) != [n for n in HeuristicsConfig.model_fields if n in FAMILY_NAMES]:  # pragma: no cover
    raise RuntimeError("FAMILIES out of the HeuristicsConfig field order")
