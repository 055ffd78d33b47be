"""Step verification for chain-of-thought rationales: every arithmetic claim checked, every
operand traced back to the question or an earlier step (issue 11).

Checking the final answer against the gold one (:mod:`dataforge.generate.cot`) keeps
rationales that reach the right number through wrong steps. :func:`check_steps` reads a
rationale the way a marker would and returns a :class:`StepReport`.

* **Claims.** Every chain ``E0 = E1 = ... = En`` in which a side holds an operator is a
  claim (one step), and each neighbouring pair must agree. Operators: ``+``, ``-`` (also
  ``−``, ``–``), ``*``, ``x``, ``×``, ``·``, ``/``, ``÷``, ``^``, parentheses (also implicit:
  ``2(3 + 4)``, ``1/2 (68)``), the words *plus*, *minus*, *times*, *multiplied by*, *divided
  by*, and *of* right after a fraction or a percentage (``3/4 of 20 = 15``, ``20% of 50 =
  10``). Besides ``=`` a computation may be joined to its result by *is*, *are*, *was*,
  *were*, *equals*, *is equal to*. Numbers may carry currency
  (``$2 * 9 = $18``), thousands separators (``1,200``, ``80 000``), decimals, percentages
  (``1.5%``, ``20 percent``), mixed numbers (``2 1/2``, ``1 and 1/3``) and unit words
  (``3 hours * 60 minutes = 180 minutes``, ``$25/week``, ``5 fish that were left``): up to
  eight words after a number when an operator or an equals sign follows them. A percentage is
  p/100, or a plain number with a ``%`` label (``10/50 * 100 = 20%``). A fraction written
  tight after a spaced division is one number (``25 / 1/3 = 75``). A run-on chain
  ``5 + 3 = 8 - 2 = 6`` (a side starting from the previous value) is two steps.
  Evaluation is our own recursive-descent parser over :class:`fractions.Fraction`:
  nothing is ``eval``-ed.
* **What is not a claim.** Algebra: a number glued to a letter (``5x``, ``3N``), a lone
  letter next to an operator or ``=``, an expression cut off at its left by an operator or
  an unclosed parenthesis (``w - 20 + 10 = w``, ``25 classmates + his 1 teacher + 1 himself =
  27``). Clock times (``12:30``, ``0900``). Labels: a first side that is a bare number
  (``Remaining 10 = 62,300/10``) and a bare number with unit words (``2 hours = 120``, ``=
  16 quarters = 16 * $0.25``). A share equated in words, or with money or units, to the amount
  it stands for (``4/7 is equal to $24``, ``1/4 cup = 1.5 tablespoons``, ``= 1/3 of $150``),
  unless the amount is what another operator makes of the two numbers (``8 / 10 = 80`` is a
  wrong operator). A range (``Weeks 1-2``). A conversion the
  sentence names: ``$1 / 2 = 50 cents``, "5 thousand dollars ... 5 * 3 = $15,000".
* **Precision.** A result written with *d* decimals must be the value rounded (either way at
  a tie) to *d* decimals when the value needs more digits (``10/3 = 3.33`` and ``= 3.3`` pass,
  ``10/3 = 3.4`` fails; with *d* >= 2 truncation passes too: ``2/3 = 0.66``). A value exact
  at *d* decimals must be written exactly (``1.5 * 3 = 4.4`` fails). **An integer written for
  a non-integer value fails** (``10/3 = 3``, ``47/2 = 24``: the classic slip), unless the text
  says it rounds: "about", "approximately", "roughly", "around", "nearly", "almost", ``≈``,
  ``~`` relax the claim to 5% (or one unit of the last written digit); the words round(ed),
  whole, full, complete, remainder, remaining, at most, at least, maximum, minimum, enough,
  only in the same sentence accept the floor or the ceiling. An operand that is an earlier
  value rounded (``10/3 = 3.33``, later ``3.33 * 3 = 10``) is re-read as that value.
* **Calculator annotations** (GSM8K's ``<<48/2=24>>``) are taken out of the text (a teacher
  does not write them) and checked on their own; the visible text is checked as it reads
  without them. Errors keep character offsets into the rationale as given. Text from a
  ``####`` line on (GSM8K's final answer) is not read.
* **Value tracking** (when the question is given): every operand of a claim must be known.
  Known are: the numbers of the question (digits, fractions, percentages, mixed numbers,
  number words: "three", "one hundred forty-four", "twice"/"double" = 2, "triple" = 3, "half"
  = 1/2, "a third", "two-thirds", "quarter", "dozen" = 12, "pair" = 2, "an hour and a half",
  "an hour and 45 minutes", ordinals, "120 million"; the count of weekdays or names it
  lists); every number stated earlier in the rationale (prose included) and every value
  computed before (sub-expressions, sums of regrouped terms, products before a division);
  the constants 0, 1, 2, 1/2, 1/4, 3/4, 100; any whole number up to 12 used as a factor or a
  divisor (a count: 3 people, 4 legs), not as a term of a sum; the constants of the units the
  question or the rationale names (hours 60, days 24 and 7, weeks 7 and 52, months 12, 28-31,
  dozen 12, cents 100, pounds 16, gallons 4 and 128, feet 12, miles 5280, kilo- 1000, ...:
  :data:`UNIT_CONSTANTS`). A known number k also makes k·c and k/c known for c = 100 and the
  unit constants (a conversion); a percentage p also 100 - p, 100 + p and their hundredths; a
  fraction f also 1 - f and 1/f; a number above 12 is known when it is the sum or difference
  of two different stated numbers above 12 (mental arithmetic). A number matches a known one
  rounded to its written decimals; signs are ignored. Anything else is an ``untracked_value``
  error: the number came from nowhere.

:func:`naive_check_steps` is the baseline a regular expression gives (``a op b = c`` with
plain numbers, exact). :func:`check_program_steps` checks a program-of-thought solution
against its own comments: a comment's arithmetic (``# 48 / 2 = 24``) and every value a
comment states for a variable (``may = april / 2  # = 24``) against what the program computes
(the locals of ``solution()`` captured by :func:`dataforge.generate.pot.run_program` with
``capture_locals=True``, else a static evaluation of its straight-line arithmetic).
"""

from __future__ import annotations

import ast
import bisect
import functools
import io
import math
import re
import tokenize
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction

__all__ = ["StepError", "StepReport", "check_steps", "naive_check_steps", "check_program_steps",
           "strip_annotations", "question_values", "unit_constants", "ERROR_KINDS", "DEFAULT_CONSTANTS",
           "CONVERSIONS", "UNIT_CONSTANTS"]

#: the kinds of :class:`StepError`
ERROR_KINDS = ("arithmetic", "untracked_value", "program_mismatch")

#: numbers every rationale may use without naming them first (and any whole number up to 12 as
#: a factor or a divisor: a count of things)
DEFAULT_CONSTANTS: frozenset[Fraction] = frozenset(
    [Fraction(0), Fraction(1), Fraction(2), Fraction(100), Fraction(1, 2), Fraction(1, 4), Fraction(3, 4)])
#: k known makes k*c and k/c known, for every text (percent, cents)
CONVERSIONS: tuple[int, ...] = (100,)
#: the constants and conversion factors a unit brings when the question or the rationale names it
UNIT_CONSTANTS: tuple[tuple[str, tuple[int, ...]], ...] = (
    (r"hours?|hourly|hrs?", (60, 3600, 24, 30, 15, 45)), (r"minutes?|mins?", (60, 30, 15, 45)),
    (r"seconds?|secs?", (60, 3600)),
    (r"days?|daily|nights?", (24, 7, 30, 365)), (r"weeks?|weekly|fortnight", (7, 52, 14)),
    (r"months?|monthly", (12, 30, 31, 4, 28)), (r"years?|annual(?:ly)?|yearly|birthday|old|ages?", (12, 52, 365)),
    (r"leap", (366,)), (r"dozens?", (12,)), (r"cents?|dollars?|\$|prices?|costs?|pay|paid|money|change", (100,)),
    (r"percent|%", (100,)), (r"quarters?", (25, 4)), (r"nickels?", (5,)), (r"dimes?", (10,)),
    (r"pounds?|lbs?", (16,)), (r"ounces?|oz", (16, 8, 32, 128)), (r"cups?", (8, 16)), (r"pints?", (2, 16)),
    (r"quarts?", (4, 32)), (r"gallons?", (4, 128, 8, 16)), (r"foot|feet|ft", (12, 3)), (r"yards?|yds?", (3, 36)),
    (r"inch(?:es)?", (12,)), (r"miles?", (5280,)), (r"tons?", (2000,)), (r"(?:kilo)?grams?|kg|g", (1000,)),
    (r"(?:kilo|centi|milli)?met(?:er|re)s?|km|cm|mm", (100, 1000)), (r"(?:milli)?lit(?:er|re)s?|ml", (1000,)),
    (r"centur(?:y|ies)", (100,)), (r"decades?", (10,)), (r"score", (20,)), (r"gross", (144,)),
    (r"thousands?|k|kilo\w*|kw|kwh", (1000,)), (r"millions?", (10 ** 6,)),
    (r"fingers?|toes?|(?:finger|toe)?nails?", (5, 10, 20)),
    (r"states", (50,)), (r"decks?|cards", (52,)), (r"alphabet", (26,)),
    (r"kmph|kmh|mps", (18, 5, 3600, 1000)))  # km/h <-> m/s: x 5/18, x 18/5
_MONTHS_RE = re.compile(r"\b(?:January|February|March|April|May|June|July|August|September|October|November|"
                        r"December)\b")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_RE = re.compile(r"\b(?:mon|tues|wednes|thurs|fri|satur|sun)days?\b", re.IGNORECASE)
_DAY_SPAN_RE = re.compile(r"\b(mon|tues|wednes|thurs|fri|satur|sun)day\s+(?:through|to|until|-|–)\s+"
                          r"(mon|tues|wednes|thurs|fri|satur|sun)day\b", re.IGNORECASE)
_NAME_LIST_RE = re.compile(r"\b[A-Z][a-z]+(?:,\s+[A-Z][a-z]+)*,?\s+(?:and|or)\s+[A-Z][a-z]+\b")
_UNIT_RE = re.compile("|".join(f"(?P<u{i}>{pat})" for i, (pat, _) in enumerate(UNIT_CONSTANTS)), re.IGNORECASE)
_UNIT_WORD_RE = re.compile(r"[A-Za-z]+|[$%]")


@functools.lru_cache(maxsize=4096)
def _unit_of(word: str) -> tuple[int, ...]:
    m = _UNIT_RE.fullmatch(word)
    return UNIT_CONSTANTS[int(m.lastgroup[1:])][1] if m else ()


def unit_constants(*texts: str | None) -> frozenset[int]:
    """The constants (and conversion factors) the units named in ``texts`` bring; month
    names bring 28, 30, 31."""
    out: set[int] = set()
    for text in texts:
        if not text:
            continue
        for w in set(_UNIT_WORD_RE.findall(text)):
            out.update(_unit_of(w))
        if _MONTHS_RE.search(text):
            out.update((28, 30, 31))
    return frozenset(out)


def _counts(question: str) -> list[Fraction]:
    """Counts a question implies without writing them: the weekdays it names (and the rest
    of the week), "Monday through Friday" = 5, the names of a list "Sally, Jenny and Moses"."""
    out: list[Fraction] = []
    days = {m.group().lower().rstrip("s") for m in _WEEKDAY_RE.finditer(question)}
    if days:
        out += [Fraction(len(days)), Fraction(7 - len(days))]
    for m in _DAY_SPAN_RE.finditer(question):
        a = [d[:3] for d in _WEEKDAYS].index(m.group(1)[:3].lower())
        b = [d[:3] for d in _WEEKDAYS].index(m.group(2)[:3].lower())
        out.append(Fraction((b - a) % 7 + 1))
    for m in _NAME_LIST_RE.finditer(question):
        out.append(Fraction(len(re.findall(r"[A-Z][a-z]+", m.group()))))
    return out


_EXCERPT = 80
_SMALL_FACTOR_MAX = 12
_PAIR_MIN = 12
_PAIRS = True


@dataclass(frozen=True)
class StepError:
    """One wrong step. ``text`` is the claim as written (at most 80 characters), ``expected``
    the value its computed side really has (``arithmetic``, ``program_mismatch``), ``start``
    its character offset in the rationale as given (-1: unknown), ``detail`` a sentence."""

    kind: str
    text: str
    expected: str | None = None
    start: int = -1
    detail: str = ""

    def describe(self) -> str:
        return f"{self.kind}: {self.text!r}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class StepReport:
    """``steps_checked``: claims checked (a chain ``a = b = c`` is one step; calculator
    annotations count too); ``step_errors`` = len(errors); ``first_step_error`` describes the
    earliest error; ``values_checked``: operands traced (0 without a question)."""

    steps_checked: int
    step_errors: int
    first_step_error: str | None
    errors: tuple[StepError, ...] = ()
    values_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.step_errors == 0

    def as_dict(self) -> dict:
        return {**asdict(self), "errors": [asdict(e) for e in self.errors]}


def _report(steps: int, errors: list[StepError], values: int = 0) -> StepReport:
    errors = sorted(errors, key=lambda e: e.start)
    return StepReport(steps, len(errors), errors[0].describe() if errors else None, tuple(errors), values)


# --- text preparation -------------------------------------------------------------------------

_ANNOTATION_RE = re.compile(r"<<([^<>]*)>>")
_VULGAR = {"¼": "1/4", "½": "1/2", "¾": "3/4", "⅐": "1/7", "⅑": "1/9", "⅒": "1/10", "⅓": "1/3", "⅔": "2/3",
           "⅕": "1/5", "⅖": "2/5", "⅗": "3/5", "⅘": "4/5", "⅙": "1/6", "⅚": "5/6", "⅛": "1/8", "⅜": "3/8",
           "⅝": "5/8", "⅞": "7/8"}
_VULGAR_RE = re.compile("[" + "".join(_VULGAR) + "]")
_LATEX_RE = re.compile(r"(?P<vulgar>[" + "".join(_VULGAR) + r"])"
                       r"|\\(?:times|cdot|div|left|right|%|\$|\(|\)|\[|\]|,|!|;|quad|qquad|text\{[^{}]*\}|"
                       r"[dt]?frac\{(?P<num>[^{}]*)\}\{(?P<den>[^{}]*)\})")
_LATEX_MAP = {"\\times": "×", "\\cdot": "·", "\\div": "÷", "\\left": "", "\\right": "", "\\%": "%", "\\$": "$",
              "\\(": " ", "\\)": " ", "\\[": " ", "\\]": " ", "\\,": "", "\\!": "", "\\;": " ", "\\quad": " ",
              "\\qquad": " "}


class _Text:
    """A rewritten text and the map of its offsets back to the original."""

    def __init__(self, original: str, pattern: re.Pattern[str] | None, repl) -> None:
        self.anchors_new: list[int] = [0]
        self.anchors_old: list[int] = [0]
        if pattern is None:
            self.text = original
            return
        parts: list[str] = []
        pos = new_len = 0
        for m in pattern.finditer(original):
            parts.append(original[pos:m.start()])
            new_len += m.start() - pos
            r = repl(m)
            self.anchors_new.append(new_len)
            self.anchors_old.append(m.start())
            parts.append(r)
            new_len += len(r)
            pos = m.end()
            self.anchors_new.append(new_len)
            self.anchors_old.append(m.end())
        parts.append(original[pos:])
        self.text = "".join(parts)

    def original_offset(self, i: int) -> int:
        k = bisect.bisect_right(self.anchors_new, i) - 1
        return self.anchors_old[k] + (i - self.anchors_new[k])


def strip_annotations(text: str) -> str:
    """GSM8K's calculator annotations ``<<48/2=24>>`` taken out: the text a teacher writes."""
    return _ANNOTATION_RE.sub("", text)


def _latex_repl(m: re.Match[str]) -> str:
    s = m.group(0)
    if m.group("vulgar") is not None:  # ¾ -> 3/4, 2½ -> 2 1/2
        start = m.start()
        return (" " if start > 0 and m.string[start - 1].isdigit() else "") + _VULGAR[s]
    if m.group("num") is not None:
        return f"({m.group('num')})/({m.group('den')})"
    if s.startswith("\\text{"):
        return " " + s[6:-1] + " "
    return _LATEX_MAP.get(s, " ")


# --- tokens -----------------------------------------------------------------------------------

_NUM_BODY = (r"\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?![\d/-])(?!\s?/\s?\d)(?:\.\d+)?"
             r"|\d+(?:\.\d+)?|\.\d+")
_TOKEN_RE = re.compile(  # words first: most tokens are words, and a word never starts a number
    r"(?P<word>[A-Za-z][A-Za-z'’]*(?:-[A-Za-z]+)*)"
    r"|(?P<num>(?<![\d.])(?P<cur>[$€£¥₹¢]\s?)?(?P<body>" + _NUM_BODY + r")(?P<pct>\s?%)?"
    r"(?P<glue>[A-Za-z]+(?:\^[23](?!\d))?)?)"
    r"|(?P<op>\*\*|[-+*/×·÷^−–⋅∗])"
    r"|(?P<eq>=~|~=|==|=|≈|≃|≅|~)"
    r"|(?P<lp>[(\[])|(?P<rp>[)\]])"
    r"|(?P<nl>\n)"
    r"|(?P<punct>\S)")
_OPS = {"+": "+", "-": "-", "−": "-", "–": "-", "*": "*", "×": "*", "·": "*", "⋅": "*", "∗": "*", "/": "/",
        "÷": "/", "^": "^", "**": "^"}
# a number followed by these letters is a number with a unit or an ordinal, not algebra
_GLUE_UNITS = {"km", "kg", "mg", "cm", "mm", "lb", "lbs", "oz", "ft", "ml", "hr", "hrs", "min", "mins", "sec", "secs",
               "am", "pm", "mph", "st", "nd", "rd", "th", "gb", "mb", "tb", "kb", "in", "yd", "yds", "mi", "kph", "kmh",
               "sq", "cents", "ths", "km/h", "years", "year", "days", "day", "hours", "minutes", "pages", "miles"}
_SINGLE_LETTER_OK = {"a", "A", "I"}


class _Tok:
    """A token. Words, signs and punctuation set only kind, text, low, start and end (the
    number fields keep their class defaults: creating tokens is the checker's main cost)."""

    value: Fraction | None = None
    decimals = 0
    percent = money = var = False
    op = ""

    def __init__(self, kind: str, text: str, start: int, end: int) -> None:
        self.kind, self.text, self.start, self.end = kind, text, start, end
        self.low = text.lower() if kind == "word" else text


def _char_before(text: str, i: int) -> str:
    """``text[:i].rstrip()[-1:]`` without copying ``text[:i]`` (quadratic over many tokens)."""
    while i > 0 and text[i - 1].isspace():
        i -= 1
    return text[i - 1] if i > 0 else ""


def _char_after(text: str, i: int) -> str:
    """``text[i:].lstrip()[:1]`` without copying ``text[i:]``."""
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    return text[i] if i < n else ""


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    line_start = True
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup  # the outermost group: "num" for a number
        s, e = m.start(), m.end()
        if kind == "num":
            body = m.group("body")
            glue = m.group("glue") or ""
            if glue in ("x", "X") and e < len(text) and (text[e].isdigit() or text[e] in "$(" or (
                    text[e] == " " and text[e + 1:e + 2].isdigit())):
                # 2x3: a number, then the multiplication sign
                t = _Tok("num", text[s:e - 1], s, e - 1)
                _fill_num(t, m, body, "")
                toks.append(t)
                o = _Tok("op", "x", e - 1, e)
                o.op = "*"
                toks.append(o)
                line_start = False
                continue
            t = _Tok("num", m.group(), s, e)
            _fill_num(t, m, body, glue)
            if s > 0 and (text[s - 1].isalpha() or text[s - 1] == "_"):
                w = re.search(r"[A-Za-z_]+$", text[max(0, s - 30):s])
                x_op = text[s - 1] in "xX" and (s < 2 or not text[s - 2].isalpha())  # 2x3, 225 x4
                if not x_op and (w is None or len(w.group()) < 3 or "_" in w.group()):
                    t.var = True  # A1, x2, n_3: a name, not a number
            clock = _CLOCK_RE.match(text, max(0, s - 3)) if ":" in text[max(0, s - 3):e + 1] else None
            if (len(body) > 1 and body[0] == "0" and body[1].isdigit()) or \
                    (clock and clock.start(1) <= s < clock.end()):
                t.var = True  # 0900, 12:30: clock times
            toks.append(t)
        elif kind == "op":
            raw = m.group()
            nxt = text[e:e + 1]
            if line_start and raw in ("-", "*", "+", "–", "**") and (nxt in (" ", "\t") or raw == "**"):
                toks.append(_Tok("punct", raw, s, e))  # a bullet or markdown
                continue
            if raw == "**":
                prev = _char_before(text, s)
                after = _char_after(text, e)
                if not ((prev.isdigit() or prev == ")") and (after.isdigit() or after == "(")):
                    line_start = False
                    continue  # markdown bold: no token at all ("= **$20**")
            t = _Tok("op", raw, s, e)
            t.op = _OPS[raw]
            toks.append(t)
        else:
            toks.append(_Tok(kind, m.group(), s, e))
        line_start = kind == "nl"
    return toks


_CLOCK_RE = re.compile(r".{0,3}?(?<!\d)((?:[01]?\d|2[0-4]):[0-5]\d)(?!\d)")


def _fill_num(t: _Tok, m: re.Match[str], body: str, glue: str) -> None:
    clean = body if body.isdigit() else re.sub(r"[,\s\u00a0\u202f]", "", body)
    if len(clean) > 40:  # no quantity: an identifier, a hash
        t.value, t.var = Fraction(0), True
        return
    if "." in clean:
        whole, _, frac = clean.partition(".")
        t.decimals = len(frac)
        t.value = Fraction(int(whole or "0") * 10 ** t.decimals + int(frac), 10 ** t.decimals)
    else:
        t.value = Fraction(int(clean))
    t.percent = m.group("pct") is not None
    t.money = m.group("cur") is not None
    if glue:
        g = glue.lower()
        nxt = m.string[m.end():m.end() + 3].lstrip()[:1]
        if (len(glue) == 1 and (g not in "gmlshk" or nxt in ("=", "+", "-", "*", "/", "^")))\
                or (len(glue) == 2 and g not in _GLUE_UNITS):
            t.var = True  # 5x, 3N, 3m = 210: algebra (or a unit we cannot tell from a variable)


# --- parsing ----------------------------------------------------------------------------------

_OP_WORDS = {"plus": "+", "minus": "-", "times": "*", "x": "*", "multiplied": "*", "divided": "/", "of": "*"}
_EQ_WORDS = {"is", "are", "was", "were", "equals", "equal"}
_APPROX_WORDS = {"about", "approximately", "approx", "around", "roughly", "nearly", "almost"}
_APPROX_EQ = {"≈", "≃", "≅", "~", "=~", "~="}
_CUE_RE = re.compile(r"\b(?:round|rounded|rounding|rounds|whole|full|complete|remainder|remaining|at most|at least|"
                     r"maximum|minimum|enough|only|approximately|about|roughly|nearly|almost)\b", re.IGNORECASE)
_MAX_UNIT_WORDS = 8
# words that end a quantity's unit: "9 because - 18/-2 = 9" is not "9 units minus ..."
_CONNECTIVES = {"because", "so", "then", "since", "thus", "therefore", "but", "or", "if",
                "when", "while", "whereas", "hence", "where", "plus", "minus", "times", "gives", "makes", "yields",
                "give", "make", "yield"}


class _Abort(Exception):
    """The chain uses a variable: it is algebra, not an arithmetic claim."""


# nodes: ("n", value, decimals, percent, money, token index) | ("u", node) | ("b", op, left, right)

_MAX_OPS = 60  # operators in one expression: longer runs are cut (the trees stay shallow)
_MAX_DEPTH = 12  # nested parentheses


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.t = toks
        self.n = len(toks)
        self.depth = 0

    # -- helpers
    def _is_x_op(self, i: int) -> bool:
        t = self.t[i]
        return (t.kind == "word" and t.low == "x" and i + 1 < self.n
                and self.t[i + 1].kind in ("num", "lp"))

    def _binop(self, i: int, left) -> tuple[str, int] | None:
        """The operator at token i (and the index after it), or None."""
        if i >= self.n:
            return None
        t = self.t[i]
        if t.kind == "op":
            return t.op, i + 1
        if t.kind == "word":
            w = t.low
            if w == "x":
                return ("*", i + 1) if self._is_x_op(i) else None
            if w in ("plus", "minus", "times"):
                return _OP_WORDS[w], i + 1
            if w in ("multiplied", "divided") and i + 1 < self.n and self.t[i + 1].low == "by":
                return _OP_WORDS[w], i + 2
            if w == "of" and left is not None and _fraction_like(left) and i + 1 < self.n \
                    and self.t[i + 1].kind in ("num", "lp") and self.t[i - 1].kind in ("num", "rp"):
                return "of", i + 1
        if t.kind == "lp" and i > 0 and self.t[i - 1].kind in ("num", "rp") and t.start - self.t[i - 1].end <= 1:
            return "*", i  # 2(3 + 4), 1/2 (68)
        if t.kind == "num" and i > 0 and self.t[i - 1].kind == "rp" and t.start - self.t[i - 1].end <= 1:
            return "*", i  # (0.25)125, (1/2) 278
        return None

    def _eq(self, i: int) -> tuple[int, bool, bool] | None:
        """(index after the equals sign, approximate?, written as a word?) or None."""
        if i >= self.n:
            return None
        t = self.t[i]
        approx = False
        word = False
        if t.kind == "eq":
            approx = t.text in _APPROX_EQ
            j = i + 1
        elif t.kind == "word" and t.low in _EQ_WORDS:
            word = True
            j = i + 1
            if t.low == "equal":
                if j < self.n and self.t[j].low == "to":
                    j += 1
                else:
                    return None
            elif j + 1 < self.n and self.t[j].low == "equal" and self.t[j + 1].low == "to":
                j += 2
        else:
            return None
        while j < self.n and (self.t[j].low in _APPROX_WORDS
                              or (self.t[j].kind == "eq" and self.t[j].text in _APPROX_EQ)):
            approx = True
            j += 1
        return j, approx, word

    def _units(self, j: int) -> int:
        """Skip unit words after an operand when an operator or equals sign follows them."""
        k, words = j, 0
        if (k + 1 < self.n and self.t[k].text == "/" and self.t[k + 1].kind == "word" and k > 0
                and self.t[k - 1].kind in ("num", "rp") and (
                    (self.t[k - 1].end == self.t[k].start and self.t[k].end == self.t[k + 1].start)
                    or len(self.t[k + 1].text) > 2)):
            k += 2  # 5MB/song, $25/week, $5 / period
            words += 1
            while (k + 1 < self.n and self.t[k].text == "/" and self.t[k + 1].kind == "word"
                   and self.t[k - 1].end == self.t[k].start and self.t[k].end == self.t[k + 1].start):
                k += 2  # $2/student/week
                words += 1
        while k < self.n and words < _MAX_UNIT_WORDS:
            t = self.t[k]
            if t.kind != "word" or t.low in _CONNECTIVES:
                break
            if t.low in _EQ_WORDS and not (k + 1 < self.n and self.t[k + 1].kind == "word"
                                           and self.t[k + 1].low not in _APPROX_WORDS
                                           and self.t[k + 1].low not in _EQ_WORDS):
                break  # "is 8", "is about 8", "is equal to"; but "fish that were left = 11"
            if t.low in _OP_WORDS and not (t.low == "of" and k + 1 < self.n and self.t[k + 1].kind == "word"):
                break  # "of" before a word is part of the unit: "2 of Peter's hands"
            if len(t.text) == 1:
                nxt = self.t[k + 1] if k + 1 < self.n else None
                if nxt is not None and (nxt.kind in ("op", "eq") or nxt.low in _EQ_WORDS):
                    raise _Abort  # "5 x = 20", "3 + n = 8", "25 or A^2"
                if t.text not in _SINGLE_LETTER_OK:
                    break
            words += 1
            k += 1
            if (k + 1 < self.n and self.t[k].kind == "op" and self.t[k].text == "/"
                    and self.t[k].start == self.t[k - 1].end
                    and (self.t[k + 1].kind == "word" or (self.t[k + 1].kind == "num" and self.t[k + 1].percent))):
                k += 2  # stickers/page, degrees/5%
        if k == j or k >= self.n:
            return j
        t = self.t[k]
        if t.kind in ("op", "rp", "eq") or t.low in _EQ_WORDS or (t.kind == "word" and t.low in _OP_WORDS):
            return k
        return j

    # -- grammar
    def expr(self, i: int):
        r = self.term(i)
        if r is None:
            return None
        node, i = r
        for _ in range(_MAX_OPS):
            b = self._binop(i, node)
            if b is None or b[0] not in "+-":
                return node, i
            r = self.term(b[1])
            if r is None:
                return node, i
            node, i = ("b", b[0], node, r[0]), r[1]
        return node, i

    def term(self, i: int):
        r = self.power(i)
        if r is None:
            return None
        node, i = r
        for _ in range(_MAX_OPS):
            b = self._binop(i, node)
            if b is None or b[0] not in ("*", "/", "of"):
                return node, i
            r = None
            if b[0] == "/" and self._spaced(i) and self._tight_fraction(b[1]):
                # "25 / 1/3": a fraction written tight is one number
                j = b[1]
                frac = ("p", ("b", "/", self._literal(j)[0], self._literal(j + 2)[0]))
                r = frac, self._units(j + 3)
            if r is None:
                r = self.power(b[1])
            if r is None:
                return node, i
            node, i = ("b", b[0], node, r[0]), r[1]
        return node, i

    def _spaced(self, i: int) -> bool:
        t = self.t[i]
        return t.kind == "op" and (i == 0 or self.t[i - 1].end < t.start
                                   or (i + 1 < self.n and self.t[i + 1].start > t.end))

    def _tight_fraction(self, j: int) -> bool:
        if j + 2 >= self.n:
            return False
        a, sl, b = self.t[j], self.t[j + 1], self.t[j + 2]
        return (a.kind == "num" and sl.text == "/" and b.kind == "num" and a.end == sl.start and sl.end == b.start
                and not a.var and not b.var and not a.decimals and not b.decimals and not a.percent and not b.percent
                and b.value != 0)

    def power(self, i: int):
        r = self.unary(i)
        if r is None:
            return None
        node, i = r
        b = self._binop(i, node)
        if b is not None and b[0] == "^":
            r2 = self.unary(b[1])
            if r2 is not None:
                return ("b", "^", node, r2[0]), r2[1]
        return node, i

    def unary(self, i: int):
        if i < self.n and self.t[i].kind == "op" and self.t[i].op in "+-" and i + 1 < self.n \
                and self.t[i + 1].kind in ("num", "lp") and self.t[i + 1].start == self.t[i].end:
            r = self.atom(i + 1)
            if r is None:
                return None
            return (("u", r[0]) if self.t[i].op == "-" else r[0]), r[1]
        return self.atom(i)

    def atom(self, i: int):
        if i >= self.n:
            return None
        t = self.t[i]
        if t.kind == "num":
            if t.var:
                raise _Abort
            node, j = self._literal(i)
            if j == i + 1 and not t.percent and self._tight_fraction(i) and not (
                    i + 3 < self.n and self.t[i + 3].text == "/" and self.t[i + 3].start == self.t[i + 2].end) and not (
                    i > 0 and self.t[i - 1].text == "/" and self.t[i - 1].end == t.start):
                # "1/20" written tight is one number (same value: it only binds tighter)
                node = ("p", ("b", "/", node, self._literal(i + 2)[0]))
                j = i + 3
            return node, self._units(j)
        if t.kind == "lp":
            if self.depth >= _MAX_DEPTH:
                return None
            self.depth += 1
            try:
                r = self.expr(i + 1)
            finally:
                self.depth -= 1
            if r is None:
                return None
            node, j = r
            if j < self.n and self.t[j].kind == "rp":
                return ("p", node), self._units(j + 1)
            return None
        return None

    def _literal(self, i: int):
        t = self.t[i]
        # a mixed number: 2 1/2
        if (t.decimals == 0 and not t.percent and i + 3 < self.n and self.t[i + 1].kind == "num"
                and self.t[i + 2].text == "/" and self.t[i + 3].kind == "num" and self.t[i + 1].start == t.end + 1
                and self.t[i + 2].start == self.t[i + 1].end and self.t[i + 3].start == self.t[i + 2].end
                and not self.t[i + 1].money and not self.t[i + 3].money and not self.t[i + 1].decimals
                and not self.t[i + 3].decimals and not self.t[i + 3].var
                and 0 < self.t[i + 1].value < self.t[i + 3].value):
            value = t.value + self.t[i + 1].value / self.t[i + 3].value
            return ("n", value, 0, False, t.money, i), i + 4
        # "1 and 1/3", "16 and (2/3)"
        if t.decimals == 0 and not t.percent and i + 4 < self.n and self.t[i + 1].low == "and":
            k = i + 2
            paren = self.t[k].kind == "lp"
            if paren:
                k += 1
            if (self._tight_fraction(k) and 0 < self.t[k].value < self.t[k + 2].value
                    and (not paren or (k + 3 < self.n and self.t[k + 3].kind == "rp"))):
                value = t.value + self.t[k].value / self.t[k + 2].value
                return ("n", value, 0, False, t.money, i), k + 3 + (1 if paren else 0)
        j = i + 1
        pct = t.percent
        if not pct and j < self.n and self.t[j].low in ("percent", "per") and self.t[j].kind == "word":
            if self.t[j].low == "percent":
                pct, j = True, j + 1
            elif j + 1 < self.n and self.t[j + 1].low == "cent":
                pct, j = True, j + 2
        return ("n", t.value, t.decimals, pct, t.money, i), j


def _fraction_like(node) -> bool:
    if node[0] == "n":
        return node[3] or (node[2] > 0 and node[1] < 1)
    if node[0] == "b" and node[1] == "/":
        return _fraction_like_operand(node[2]) and _fraction_like_operand(node[3])
    if node[0] == "p":
        return _fraction_like(node[1])
    return False


def _fraction_like_operand(node) -> bool:
    return node[0] == "n" and not node[3]


def _has_op(node) -> bool:
    if node[0] == "n":
        return False
    if node[0] == "p":
        return _has_op(node[1])
    return True  # "u" counts: -5 = ... is not a claim on its own, see _bare


def _bare(node) -> bool:
    """A plain number (possibly negative or in parentheses): the stated result of a step."""
    while node[0] in ("u", "p"):
        node = node[1]
    return node[0] == "n"


def _bare_literal(node):
    neg = False
    while node[0] in ("u", "p"):
        if node[0] == "u":
            neg = not neg
        node = node[1]
    return node, neg


def _literals(node, out: list) -> list:
    k = node[0]
    if k == "n":
        out.append(node)
    elif k in ("u", "p"):
        _literals(node[1], out)
    else:
        _literals(node[2], out)
        _literals(node[3], out)
    return out


class _Skip(Exception):
    """Not evaluable (division by zero, a huge power)."""


def _eval(node, pct: bool, subst: Mapping[int, Fraction] | None = None) -> Fraction:
    k = node[0]
    if k == "n":
        if subst is not None and node[5] in subst:
            return subst[node[5]]
        v = node[1]
        return v / 100 if (pct and node[3]) else v
    if k == "u":
        return -_eval(node[1], pct, subst)
    if k == "p":
        return _eval(node[1], pct, subst)
    a = _eval(node[2], pct, subst)
    b = _eval(node[3], pct, subst)
    op = node[1]
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*" or op == "of":
        return a * b
    if op == "/":
        if b == 0:
            raise _Skip
        return a / b
    if b.denominator != 1 or abs(b) > 64 or (a != 0 and abs(a) > 10 ** 6 and b > 8):
        raise _Skip
    if a == 0 and b < 0:
        raise _Skip
    return a ** int(b)


@dataclass
class _Side:
    node: tuple
    start: int  # token indices
    end: int
    approx: bool = False  # written after an approximate equals sign
    word_eq: bool = False


@dataclass
class _Chain:
    sides: list[_Side]
    start: int
    end: int


def _chain_at(p: _Parser, i: int) -> _Chain | None:
    """The chain of expressions joined by equals signs that starts at token i (one side
    when there is no equals sign), or None when no expression starts there."""
    r = p.expr(i)
    if r is None:
        return None
    sides = [_Side(r[0], i, r[1])]
    j = r[1]
    while True:
        e = p._eq(j)
        if e is None:
            break
        j2, approx, word = e
        if word and not _has_op(sides[-1].node):
            break
        r = p.expr(j2)
        if r is None or (word and not _bare(r[0])):
            break  # "50% of 8 is 1.5*8": a word joins a computation to its result only
        sides.append(_Side(r[0], j2, r[1], approx, word))
        j = r[1]
    return _Chain(sides, i, j)


def _preceded_by_operator(toks: list[_Tok], i: int) -> bool:
    """The expression at i continues one to its left that we could not read (algebra, an
    unclosed parenthesis, a typo, words: "25 classmates + his 1 teacher + 1 himself = 27")."""
    if i == 0:
        return False
    j = i - 1
    while j > 0 and i - j <= 2 and toks[j].kind == "word" and toks[j].low not in _OP_WORDS \
            and toks[j].low not in _EQ_WORDS and toks[j].low not in _CONNECTIVES:
        j -= 1
    if j < i - 1 and toks[j].kind == "op" and toks[j].op != "^" and j > 0 \
            and toks[j - 1].kind in ("num", "word", "rp") \
            and toks[j].start > toks[j - 1].end and toks[j + 1].start > toks[j].end:
        return True
    t = toks[i - 1]
    before = toks[i - 2] if i >= 2 else None
    if t.kind == "op":
        if t.op == "-" and before is not None and before.kind == "word" and before.end == t.start \
                and t.end == toks[i].start and len(before.text) > 1:
            return False  # a hyphenated word: "COVID-19"
        return before is not None and before.kind in ("num", "word", "rp")
    if t.kind == "word" and t.low in ("plus", "minus", "times"):
        return True
    if t.kind == "num" and t.var:
        return True
    if t.kind in ("lp", "punct") and t.text in "(.[" and before is not None and before.kind == "op":
        return True  # "$100+($100*(10/100) = $110", "+ . 84 + .82"
    return False


def _followed_by_operator(toks: list[_Tok], j: int) -> bool:
    """The chain's last expression goes on with a variable: ``= 3 + x``."""
    if j >= len(toks) or toks[j].kind != "op" or j + 1 >= len(toks):
        return False
    t = toks[j + 1]
    return (t.kind == "word" and len(t.text) == 1 and t.text not in _SINGLE_LETTER_OK) or (t.kind == "num" and t.var)


# --- what the question (and the rationale so far) makes known ---------------------------------

_UNITS_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS_WORDS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALE_WORDS = {"hundred": 100, "thousand": 1000, "million": 10 ** 6, "billion": 10 ** 9}
_FRACTION_WORDS = {"half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4, "fourth": 4,
                   "fourths": 4, "fifth": 5, "fifths": 5, "sixth": 6, "sixths": 6, "seventh": 7, "sevenths": 7,
                   "eighth": 8, "eighths": 8, "ninth": 9, "ninths": 9, "tenth": 10, "tenths": 10, "twelfth": 12,
                   "twentieth": 20, "hundredth": 100, "hundredths": 100, "thousandth": 1000, "thousandths": 1000}
_MULTIPLIER_WORDS = {"twice": 2, "double": 2, "doubled": 2, "doubles": 2, "doubling": 2, "triple": 3, "tripled": 3,
                     "triples": 3, "thrice": 3, "quadruple": 4, "quadrupled": 4, "quintuple": 5, "dozen": 12,
                     "dozens": 12, "pair": 2, "pairs": 2, "couple": 2, "twins": 2, "twin": 2, "triplets": 3,
                     "score": 20, "gross": 144, "fortnight": 14, "once": 1, "single": 1, "both": 2,
                     "decade": 10, "decades": 10, "century": 100, "centuries": 100, "nickel": 5, "nickels": 5,
                     "dime": 10, "dimes": 10, "quarters": 25, "weekly": 7, "biweekly": 14, "annually": 12,
                     "hourly": 60, "leap": 366}
_WORD_RE = re.compile(r"[a-z]+")
_WORD_OR_MARK_RE = re.compile(r"[a-z]+|[,.;:!?]")
_ORDINAL_WORDS = {w: i + 1 for i, w in enumerate(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth".split())} | {
    "thirtieth": 30, "fortieth": 40, "fiftieth": 50, "sixtieth": 60, "hundredth": 100}
_SMALL_NUMBER = (r"\d+(?:\.\d+)?|\b(?:an?|" + "|".join(sorted(_UNITS_WORDS | _TENS_WORDS, key=len, reverse=True))
                 + r")\b")
_HALF_MORE_RE = re.compile(r"(" + _SMALL_NUMBER + r")\s+(?:[a-z]+\s+){0,2}and\s+(?:a\s+)?half\b", re.IGNORECASE)
_HOURS_MINUTES_RE = re.compile(r"(" + _SMALL_NUMBER + r")\s+hours?\s+(?:and\s+)?(\d+)\s+minutes?", re.IGNORECASE)
_MIXED_RE = re.compile(r"(?<![\d.,/])(\d+)\s+(?:and\s+)?(\d+)/(\d+)(?![\d/])")
_SCALED_RE = re.compile(r"(?<!\d)(\d+(?:\.\d+)?)\s*(hundred|thousand|million|billion)\b", re.IGNORECASE)


def _word_number_at(words: list[str], i: int) -> tuple[int, int]:
    """(value, index after it) of the number written in words from ``words[i]``: "one hundred
    forty-four", "two thousand and five", "twenty-one"; it ends at a comma or any other word."""
    total = current = 0
    j, last = i, ""
    n = len(words)
    while j < n:
        x = words[j]
        if x in _UNITS_WORDS or x in _TENS_WORDS:
            if last in ("unit", "teen") or (last == "ten" and (x in _TENS_WORDS or _UNITS_WORDS[x] >= 10)):
                break  # "five twenty": two numbers
            current += _UNITS_WORDS.get(x, _TENS_WORDS.get(x, 0))
            last = "ten" if x in _TENS_WORDS else ("teen" if _UNITS_WORDS[x] >= 10 else "unit")
        elif x == "hundred" and last in ("unit", "teen", "ten"):
            current *= 100
            last = "hundred"
        elif x in _SCALE_WORDS and x != "hundred" and last:
            total += current * _SCALE_WORDS[x]
            current, last = 0, "scale"
        elif (x == "and" and last in ("hundred", "scale") and j + 1 < n
              and (words[j + 1] in _UNITS_WORDS or words[j + 1] in _TENS_WORDS)):
            last = "and"
        else:
            break
        j += 1
    return total + current, j


def _word_numbers(text: str) -> list[tuple[Fraction, str]]:
    """(value, kind) of the number words of ``text``; kind: plain | fraction | percent."""
    out: list[tuple[Fraction, str]] = []
    words = _WORD_OR_MARK_RE.findall(text.lower())
    i, n = 0, len(words)
    while i < n:
        w = words[i]
        if w in _UNITS_WORDS or w in _TENS_WORDS:
            v, j = _word_number_at(words, i)
            if j < n and words[j] in _FRACTION_WORDS and v:
                out.append((Fraction(v, _FRACTION_WORDS[words[j]]), "fraction"))
            if j < n and words[j] == "percent":
                out.append((Fraction(v), "percent"))
            out.append((Fraction(v), "plain"))
            i = j
            continue
        if w in _SCALE_WORDS:
            out.append((Fraction(_SCALE_WORDS[w]), "plain"))
        elif w in _FRACTION_WORDS:
            out.append((Fraction(1, _FRACTION_WORDS[w]), "fraction"))
        if w in _MULTIPLIER_WORDS:
            out.append((Fraction(_MULTIPLIER_WORDS[w]), "plain"))
        i += 1
    for w in words:
        if w in _ORDINAL_WORDS:  # "her thirteenth birthday"
            out.append((Fraction(_ORDINAL_WORDS[w]), "plain"))
    for m in _HALF_MORE_RE.finditer(text) if "half" in text.lower() else ():  # "four and a half", "an hour and a half"
        base = _small_number(m.group(1))
        if base:
            out.append((base + Fraction(1, 2), "plain"))
    for m in _HOURS_MINUTES_RE.finditer(text) if "minute" in text.lower() else ():  # "an hour and 45 minutes"
        h, mins = _small_number(m.group(1)), Fraction(m.group(2))
        out.append((h + mins / 60, "plain"))
        out.append((h * 60 + mins, "plain"))
    for m in _MIXED_RE.finditer(text) if "/" in text else ():  # "1 1/2 rolls", "1 and 1/4 cups"
        num, den = int(m.group(2)), int(m.group(3))
        if 0 < num < den:
            out.append((int(m.group(1)) + Fraction(num, den), "plain"))
    return out


def _small_number(s: str) -> Fraction:
    s = s.lower()
    if s[0].isdigit():
        return Fraction(s)
    return Fraction(_UNITS_WORDS.get(s, _TENS_WORDS.get(s, 1 if s in ("a", "an") else 0)))


def _scaled_numbers(text: str) -> list[Fraction]:
    """``120 million`` -> 120000000."""
    return [Fraction(m.group(1)) * _SCALE_WORDS[m.group(2).lower()] for m in _SCALED_RE.finditer(text)]


_HASH_LINE_RE = re.compile(r"(?m)^[^\S\n]*####")


def _answer_line_start(text: str) -> int | None:
    """Where ``re.search(r"(?m)^\\s*####", text)`` starts, in linear time (that regex retries
    its ``\\s*`` from every line start of a run of blank lines: quadratic)."""
    m = _HASH_LINE_RE.search(text)
    if m is None:
        return None
    k = m.end() - 4
    while k > 0 and text[k - 1].isspace():
        k -= 1
    return k if k == 0 or text[k - 1] == "\n" else text.find("\n", k, m.end()) + 1


class _Known:
    """The numbers a step may use. ``base``: the numbers of the question and the rationale
    (with the variants of percentages and fractions) and the constants; a number is known
    when it is in ``base``, is a base number times or over a conversion factor, or (above
    12) the sum or difference of two stated numbers above 12."""

    __slots__ = ("base", "constants", "conversions", "seen", "stated", "stated_big")

    def __init__(self, constants: Iterable[Fraction], conversions: Iterable[int]) -> None:
        self.constants = frozenset(constants)
        self.base: set[Fraction] = set()
        self.conversions = tuple(Fraction(c) for c in conversions)
        self.seen: set[tuple[Fraction, str]] = set()
        self.stated: set[Fraction] = set()
        self.stated_big: list[Fraction] = []

    def add(self, v: Fraction, kind: str = "plain") -> None:
        if v < 0:
            v = -v
        key = (v, kind)
        if key in self.seen:
            return
        self.seen.add(key)
        if v not in self.stated:
            self.stated.add(v)
            if v > 12:
                self.stated_big.append(v)
        self.base.add(v)
        if kind == "percent":
            self.base.update((v / 100, 100 - v, (100 - v) / 100, 100 + v, (100 + v) / 100))
        elif kind == "fraction":
            if v:
                self.base.add(1 / v)
            if v < 1:
                self.base.add(1 - v)

    def _known(self, a: Fraction) -> bool:
        if a in self.base or a in self.constants:
            return True
        base = self.base
        for c in self.conversions:
            if a / c in base or a * c in base:
                return True
        return False

    def match(self, v: Fraction, decimals: int, percent: bool, factor: bool = True) -> tuple[bool, Fraction | None]:
        """(known?, the exact value a rounded literal stands for, if it differs). ``factor``:
        the number multiplies or divides (small counts 3..12 are known then)."""
        a = -v if v < 0 else v
        if self._known(a) or (percent and self._known(a / 100)):
            return True, None
        if factor and a.denominator == 1 and a <= _SMALL_FACTOR_MAX:
            return True, None
        if decimals:
            half = Fraction(1, 2 * 10 ** decimals)
            unit = Fraction(1, 10 ** decimals)
            for k in self._all_values():
                d = k - a
                if -half <= d <= half or (decimals >= 2 and 0 <= d < unit):
                    return True, (k if v >= 0 else -k)
        if a > _PAIR_MIN and _PAIRS:  # the sum or difference of two different numbers above 12 (in one's head)
            stated = self.stated
            for x in self.stated_big:
                y = a - x
                if y != x and ((y > _PAIR_MIN and y in stated) or (-y > _PAIR_MIN and -y in stated)):
                    return True, None
        return False, None

    def rounded_source(self, v: Fraction, decimals: int) -> Fraction | None:
        """A known value that ``v`` (written with ``decimals``) is a rounding of: 3.33 for 10/3."""
        if not decimals:
            return None
        a = -v if v < 0 else v
        half = Fraction(1, 2 * 10 ** decimals)
        scale = 10 ** decimals
        for k in self.base:
            if k != a and (k * scale).denominator != 1 and -half <= k - a <= half:
                return k if v >= 0 else -k
        return None

    def _all_values(self):
        yield from self.constants
        for k in list(self.base):
            yield k
            if k:
                for c in self.conversions:
                    yield k * c
                    yield k / c


def question_values(question: str | None) -> list[tuple[Fraction, str]]:
    """(value, kind) of every number a question states, in digits or in words."""
    if not question:
        return []
    return list(_question_values(question))


@functools.lru_cache(maxsize=1024)  # the k samples of a question share it
def _question_values(question: str) -> tuple[tuple[Fraction, str], ...]:
    out: list[tuple[Fraction, str]] = []
    toks = _tokenize(question)
    for idx, t in enumerate(toks):
        if t.kind != "num":
            continue
        kind = "percent" if t.percent or (idx + 1 < len(toks) and toks[idx + 1].low == "percent") else "plain"
        out.append((t.value, kind))
        # a fraction written a/b
        if (idx + 2 < len(toks) and toks[idx + 1].text == "/" and toks[idx + 2].kind == "num"
                and toks[idx + 2].value and toks[idx + 1].start == t.end):
            out.append((t.value / toks[idx + 2].value, "fraction"))
        if t.decimals and t.value < 1:
            out.append((t.value, "fraction"))
    out.extend(_word_numbers(question))
    out.extend((v, "plain") for v in _scaled_numbers(question))
    out.extend((v, "plain") for v in _counts(question))
    return tuple(out)


# --- the checker ------------------------------------------------------------------------------

_CALC_RESULT_RE = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")
_CALC_EXPR_RE = re.compile(r"[\d.+\-*/() ]+")
_CALC_OP_RE = re.compile(r"(?<=[\d)])\s*[-+*/]")
_CALC_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+|\*\*|[-+*/()]")


def _calc(expr: str) -> Fraction | None:
    """A calculator annotation's expression (numbers, + - * / **, parentheses), exactly."""
    toks = _CALC_TOKEN_RE.findall(expr)
    if "".join(toks) != expr.replace(" ", ""):
        return None
    pos = 0

    def atom() -> Fraction:
        nonlocal pos
        t = toks[pos]
        pos += 1
        if t == "-":
            return -atom()
        if t == "(":
            v = add()
            if toks[pos] != ")":
                raise ValueError
            pos += 1
            return v
        if t[0].isdigit() or t[0] == ".":
            return Fraction(t)
        raise ValueError

    def power() -> Fraction:
        nonlocal pos
        v = atom()
        if pos < len(toks) and toks[pos] == "**":
            pos += 1
            e = atom()
            if e.denominator != 1 or abs(e) > 64 or abs(v) > 10 ** 6 or (v == 0 and e < 0):
                raise ValueError
            v = v ** int(e)
        return v

    def mul() -> Fraction:
        nonlocal pos
        v = power()
        while pos < len(toks) and toks[pos] in ("*", "/"):
            op = toks[pos]
            pos += 1
            w = power()
            if op == "*":
                v *= w
            elif w == 0:
                raise ValueError
            else:
                v /= w
        return v

    def add() -> Fraction:
        nonlocal pos
        v = mul()
        while pos < len(toks) and toks[pos] in ("+", "-"):
            op = toks[pos]
            pos += 1
            w = mul()
            v = v + w if op == "+" else v - w
        return v

    try:
        v = add()
    except (ValueError, IndexError):
        return None
    return v if pos == len(toks) else None


def _fmt(v: Fraction) -> str:
    if v.denominator == 1:
        return str(v.numerator)
    return f"{float(v):.6g}"


def _round_ok(v: Fraction, c: Fraction, d: int, relaxed: bool, cue: bool) -> bool:
    """Whether ``c``, written with ``d`` decimals, states the value ``v``."""
    if v == c:
        return True
    unit = Fraction(1, 10 ** d)
    diff = abs(v - c)
    if relaxed:
        return diff <= max(abs(v) / 20, unit)
    if cue and (math.floor(v / unit) * unit == c or math.ceil(v / unit) * unit == c):
        return True
    scaled = v / unit
    if scaled.denominator == 1:
        return False  # exact at d decimals: must be written exactly
    if d == 0:
        return False  # an integer for a fraction: only with a rounding cue (above)
    if diff <= unit / 2:
        return True
    return d >= 2 and abs(v) > abs(c) and diff < unit and (v > 0) == (c >= 0)  # truncated


def _sentence_bounds(text: str, s: int, e: int) -> tuple[int, int]:
    a = max(text.rfind(". ", 0, s), text.rfind("\n", 0, s)) + 1
    b_candidates = [x for x in (text.find(". ", e), text.find("\n", e)) if x >= 0]
    return a, (min(b_candidates) if b_candidates else len(text))


def _excerpt(text: str, s: int, e: int) -> str:
    frag = " ".join(text[s:e].split())
    return frag if len(frag) <= _EXCERPT else frag[:_EXCERPT - 3] + "..."


def _subvalues(node, out: list[Fraction]) -> None:
    """The values of every operation inside ``node`` (mental intermediate results), and the
    product of the numbers a product multiplies (``12 x (5/3) = 60/3``)."""
    if node[0] == "b" and node[1] in ("*", "/", "of"):
        num = _numerator(node)
        if num is not None:
            out.append(num)
    if node[0] == "b" and node[1] in ("+", "-"):
        terms: list = []
        _terms(node, 1, terms)
        if 3 <= len(terms) <= 12:  # "4 * 30 + 10 + 45 = 120 + 55": terms regrouped
            for i in range(1, len(terms)):
                for j in range(i + 2, len(terms) + 1):
                    try:
                        out.append(sum((sign * _eval(t, True) for sign, t in terms[i:j]), Fraction(0)))
                    except _Skip:
                        pass
    if node[0] == "b":
        _subvalues(node[2], out)
        _subvalues(node[3], out)
        try:
            out.append(_eval(node, True))
        except _Skip:
            pass
    elif node[0] in ("u", "p"):
        _subvalues(node[1], out)


def _terms(node, sign: int, out: list) -> None:
    """The signed terms of a sum."""
    if node[0] == "b" and node[1] in ("+", "-"):
        _terms(node[2], sign, out)
        _terms(node[3], sign if node[1] == "+" else -sign, out)
    elif node[0] == "p" and node[1][0] == "b" and node[1][1] in ("+", "-"):
        _terms(node[1], sign, out)
    else:
        out.append((sign, node))


def _numerator(node) -> Fraction | None:
    """The product of the numbers a pure product/quotient multiplies (divisors left out)."""
    k = node[0]
    if k == "n":
        return node[1]
    if k in ("u", "p"):
        return _numerator(node[1])
    if node[1] in ("*", "of"):
        a, b = _numerator(node[2]), _numerator(node[3])
        return a * b if a is not None and b is not None else None
    if node[1] == "/":
        return _numerator(node[2])
    return None


def _proper_fraction(node) -> bool:
    """``3/4``, ``(1/3)``, ``25%``: a share, which GSM8K solutions equate with the amount it
    stands for ("3/4 is equal to $15", "20% = 10 students")."""
    while node[0] == "p":
        node = node[1]
    if node[0] == "n":
        return node[3]
    return (node[0] == "b" and node[1] == "/" and node[2][0] == "n" and node[3][0] == "n" and not node[2][3]
            and not node[3][3] and node[2][2] == 0 and node[3][2] == 0 and 0 < node[2][1] < node[3][1])


class _Checker:
    def __init__(self, question: str | None, track: bool, constants, conversions, check_annotations: bool) -> None:
        self.track = track
        self.known = _Known(constants, conversions)
        self.check_annotations = check_annotations
        if question:
            for v, kind in question_values(question):
                self.known.add(v, kind)
        self.errors: list[StepError] = []
        self.steps = 0
        self.values = 0

    def run(self, rationale: str) -> StepReport:
        prepared = _Text(rationale, _ANNOTATION_RE, lambda m: "")
        text = prepared.text
        cut = _answer_line_start(text)
        if cut is not None:
            text = text[:cut]
        latex = None
        if "\\" in text or _VULGAR_RE.search(text):
            latex = _Text(text, _LATEX_RE, _latex_repl)
            text = latex.text

        def where(i: int) -> int:
            if latex is not None:
                i = latex.original_offset(i)
            return prepared.original_offset(i)

        def shown(s: int, e: int) -> str:  # the excerpt as written (annotations aside)
            if latex is not None:
                s, e = latex.original_offset(s), latex.original_offset(e)
            return _excerpt(prepared.text, s, e)

        if self.check_annotations:
            for m in _ANNOTATION_RE.finditer(rationale):
                self._annotation(m)
        for v in _scaled_numbers(text):
            self.known.add(v)
        toks = _tokenize(text)
        p = _Parser(toks)
        n = len(toks)
        i = 0
        while i < n:
            t = toks[i]
            if t.kind in ("num", "lp") or (t.kind == "op" and t.op == "-"):
                try:
                    ch = _chain_at(p, i)
                    if ch is not None and _preceded_by_operator(toks, i):
                        for k in range(ch.start, ch.end):  # a partial expression: stated, not checked
                            if toks[k].kind == "num":
                                self._state(toks[k])
                        i = max(ch.end, i + 1)
                        continue
                except _Abort:
                    # skip the rest of this algebraic expression; its numbers are stated
                    j = i + 1
                    while j < n and toks[j].kind not in ("nl", "punct") and not (
                            toks[j].kind == "word" and toks[j].low not in _OP_WORDS and len(toks[j].text) > 1):
                        j += 1
                    for k in range(i, j):
                        if toks[k].kind == "num":
                            self._state(toks[k])
                    i = j
                    continue
                if ch is not None and len(ch.sides) > 1 and any(not _bare(s.node) for s in ch.sides) \
                        and not _followed_by_operator(toks, ch.end):
                    self._claim(ch, toks, text, where, shown)
                    i = ch.end
                    continue
                if ch is not None:  # "x = 5", or an expression without an equals sign: nothing to check
                    for k in range(ch.start, ch.end):
                        if toks[k].kind == "num":
                            self._state(toks[k])
                    for side in ch.sides:
                        self._add_values(side.node)
                    i = max(ch.end, i + 1)
                    continue
            if t.kind == "num":
                self._state(t)
            i += 1
        return _report(self.steps, self.errors, self.values)

    def _known_fractions(self, node, out: set) -> set:
        """ids of the literals of fractions a/b (whole numbers) whose value is known."""
        k = node[0]
        if k in ("u", "p"):
            self._known_fractions(node[1], out)
        elif k == "b":
            if (node[1] == "/" and node[2][0] == "n" and node[3][0] == "n" and node[3][1] and not node[2][2]
                    and not node[3][2] and not node[2][3] and not node[3][3]
                    and self.known.match(node[2][1] / node[3][1], 0, False, False)[0]):
                out.update((id(node[2]), id(node[3])))
            self._known_fractions(node[2], out)
            self._known_fractions(node[3], out)
        return out

    def _state(self, t: _Tok) -> None:
        self.known.add(t.value, "percent" if t.percent else "plain")

    def _add_values(self, node) -> None:
        vals: list[Fraction] = []
        _subvalues(node, vals)
        for v in vals:
            self.known.add(v)

    def _annotation(self, m: re.Match[str]) -> None:
        body = m.group(1)
        if "=" not in body:
            return
        lhs, _, rhs = body.rpartition("=")
        rhs = rhs.strip()
        if not _CALC_RESULT_RE.fullmatch(rhs) or not _CALC_EXPR_RE.fullmatch(lhs) or not _CALC_OP_RE.search(lhs):
            return
        v = _calc(lhs)
        if v is None:
            return
        c = Fraction(rhs)
        self.steps += 1
        d = len(rhs) - rhs.index(".") - 1 if "." in rhs else 0
        if not _round_ok(v, c, d, False, False) and not (d >= 2 and abs(v - c) <= Fraction(1, 10 ** d)):
            self.errors.append(StepError("arithmetic", _excerpt(m.group(0), 0, len(m.group(0))), _fmt(v), m.start(),
                                         f"calculator annotation: {lhs.strip()} is {_fmt(v)}, not {rhs.strip()}"))

    def _claim(self, ch: _Chain, toks: list[_Tok], text: str, where, shown) -> None:
        self.steps += 1
        s_char, e_char = toks[ch.start].start, toks[ch.end - 1].end
        excerpt = shown(s_char, e_char)
        subst: dict[int, Fraction] = {}
        # value tracking, left to right: each side may use the values of the sides before it
        prev_value: Fraction | None = None
        for k, side in enumerate(ch.sides):
            lits = _literals(side.node, [])
            result_fraction = k == len(ch.sides) - 1 and k > 0 and _simple_fraction(side.node)
            if not _bare(side.node) and not result_fraction:
                skip_first = k > 0 and prev_value is not None and lits[0][1] == abs(prev_value)
                roles = _factor_roles(side.node, {})
                as_fraction = self._known_fractions(side.node, set())
                for li, lit in enumerate(lits):
                    if li == 0 and skip_first:
                        continue
                    if id(lit) in as_fraction:  # "2 * 1/20" after "= 1/20": the fraction is known
                        self.values += self.track
                        continue
                    ok, alt = self.known.match(lit[1], lit[2], lit[3], roles.get(id(lit), False))
                    if alt is None and lit[2] and not lit[3]:
                        alt = self.known.rounded_source(lit[1], lit[2])
                    if alt is not None and alt != lit[1] and not lit[3]:
                        subst[lit[5]] = alt
                    if self.track:
                        self.values += 1
                        if not ok:
                            tok = toks[lit[5]]
                            self.errors.append(StepError(
                                "untracked_value", excerpt, None, where(tok.start),
                                f"{tok.text.strip()} is not in the question, not stated before and no common constant"))
                    self.known.add(lit[1], "percent" if lit[3] else "plain")
            try:
                prev_value = _eval(side.node, True)
            except _Skip:
                prev_value = None
            self._add_values(side.node)
            if prev_value is not None:
                self.known.add(prev_value)
            if _bare(side.node):
                for lit in lits:
                    self.known.add(lit[1], "percent" if lit[3] else "plain")
        # arithmetic: each neighbouring pair
        cue = None
        sentence = None
        for k, (a, b) in enumerate(zip(ch.sides, ch.sides[1:])):
            if _bare(a.node) and _bare(b.node) and (k == 0 or _with_unit(toks, a) or _with_unit(toks, b)):
                continue  # "x = 5", "2 hours = 120 minutes": a name or a conversion, not arithmetic
            try:
                ok, expected = self._pair(a, b, subst)
            except _Skip:
                continue
            if ok:
                continue
            if _bare(a.node) and (k == 0 or _with_unit(toks, a)):
                continue  # "Remaining 10 = 62,300/10", "2 hours = 120", "= 16 quarters = 16 * $0.25": a label
            if (_proper_fraction(a.node) or _proper_fraction(b.node)) and _amount_for_share(a, b, toks):
                continue  # "4/7 is equal to $24": the share and the amount it stands for
            if _range(toks, a) or _range(toks, b):
                continue  # "Weeks 1-2 = 96 - 70"
            if _ratio(toks, a) and _ratio(toks, b):
                continue  # "1/7:1/7:1/14 = 2:2:1": ratios on both sides, not arithmetic on their end terms
            if _of_restates(a, b):
                continue  # "3/3 - 2/3 = 1/3 of $150"
            if sentence is None:
                sentence = _sentence_bounds(text, s_char, e_char)
                cue = _CUE_RE.search(text, *sentence) is not None
            if cue:
                try:
                    ok, expected = self._pair(a, b, subst, cue=True)
                except _Skip:
                    ok = True
                if ok:
                    continue
            if self._scaled(a, b, text[sentence[0]:sentence[1]].lower()):
                continue  # "$1 / 2 = 50 cents", "5 thousand dollars ... 5 * 3 = $15,000"
            a_s, b_e = toks[a.start].start, toks[b.end - 1].end
            pair_text = shown(a_s, b_e) if len(ch.sides) > 2 else excerpt
            side_text = [shown(toks[x.start].start, toks[x.end - 1].end) for x in (a, b)]
            if _bare(a.node) and _bare(b.node):
                detail = f"{side_text[0]} and {side_text[1]} differ"
            else:
                detail = f"{side_text[1] if _bare(a.node) else side_text[0]} is {expected}" if expected else ""
            self.errors.append(StepError("arithmetic", pair_text, expected, where(a_s), detail))
            break

    def _scaled(self, a: _Side, b: _Side, sentence: str) -> bool:
        scales = [f for word, f in (("cent", 100), ("thousand", 1000), ("million", 10 ** 6), ("billion", 10 ** 9))
                  if word in sentence]
        if not scales:
            return False
        try:
            x, y = _eval(a.node, True), _eval(b.node, True)
        except _Skip:
            return False
        return any(x == y * f or y == x * f for f in scales)

    def _pair(self, a: _Side, b: _Side, subst: Mapping[int, Fraction], cue: bool = False) -> tuple[bool, str | None]:
        """Whether side ``a`` and side ``b`` agree; and the value of the computed side.
        Percentages are read as p/100 and, failing that, as plain numbers with a % label;
        operands that are earlier values rounded are re-read as those values."""
        relaxed = b.approx
        if _bare(a.node) and not _bare(b.node):
            a, b = b, a
        variants = [None, subst] if subst else [None]
        if _bare(b.node):
            lit, neg = _bare_literal(b.node)
            expected = None
            for pct_a in (True, False):
                for sub in variants:
                    v = _eval(a.node, pct_a, sub)
                    if expected is None:
                        expected = _fmt(v)
                    for pct_b in ((True, False) if lit[3] else (False,)):
                        c = lit[1] / 100 if pct_b else lit[1]
                        if _round_ok(v, -c if neg else c, lit[2] + (2 if pct_b else 0), relaxed, cue):
                            return True, None
            return False, expected
        # two computed sides
        va = _eval(a.node, True)
        for pct in (True, False):
            for sub in variants:
                x = _eval(a.node, pct, sub)
                y = _eval(b.node, pct, sub)
                if x == y or (relaxed and abs(x - y) <= abs(x) / 20):
                    return True, None
        # run-on: "5 + 3 = 8 - 2 = 6": b starts from a's value
        first = _first_literal(b.node)
        if first is not None and first[1] == abs(va) and first[1] != 0:
            return True, None
        return False, _fmt(va)


def _factor_roles(node, out: dict, factor: bool = False) -> dict:
    """id(literal) -> whether it is a factor or a divisor (not a term of a sum)."""
    k = node[0]
    if k == "n":
        out[id(node)] = factor
    elif k in ("u", "p"):
        _factor_roles(node[1], out, factor)
    else:
        f = node[1] in ("*", "/", "of", "^")
        _factor_roles(node[2], out, f or (factor and node[1] not in "+-"))
        _factor_roles(node[3], out, f or (factor and node[1] not in "+-"))
    return out


def _simple_fraction(node) -> bool:
    """``19/20``: a result written as a fraction."""
    while node[0] == "p":
        node = node[1]
    return (node[0] == "b" and node[1] == "/" and node[2][0] == "n" and node[3][0] == "n" and node[2][2] == 0
            and node[3][2] == 0 and not node[2][3] and not node[3][3])


def _with_unit(toks: list[_Tok], side: _Side) -> bool:
    """A bare side written with unit words: ``16 quarters``."""
    return any(toks[k].kind == "word" for k in range(side.start, side.end))


_RANGE_WORDS = {"week", "weeks", "day", "days", "page", "pages", "chapter", "chapters", "grade", "grades", "age",
                "ages",
                "level", "levels", "round", "rounds", "game", "games", "year", "years", "month", "months", "between",
                "from", "episodes", "lessons", "questions", "problems", "rows", "floors", "items"}


def _ratio(toks: list[_Tok], side: _Side) -> bool:
    """A side that is one term of a ratio ``a:b:c``: a colon token right before or right after it."""
    near = toks[max(0, side.start - 1):side.end + 2]  # the side and the token on either side of it
    return any(t.kind == "punct" and t.text == ":" for t in near)


def _range(toks: list[_Tok], side: _Side) -> bool:
    """``Weeks 1-2``: tight, the first number smaller, after a capitalised word or a word
    that counts things: a range, not 1 - 2."""
    node = side.node
    if not (node[0] == "b" and node[1] == "-" and node[2][0] == "n" and node[3][0] == "n"):
        return False
    i = node[2][5]
    a, b = toks[i], toks[node[3][5]]
    if not (b.start - a.end == 1 and toks[i + 1].text in "-–" and a.value < b.value and not a.decimals
            and not b.decimals):
        return False
    prev = toks[i - 1] if i > 0 else None
    return prev is not None and prev.kind == "word" and (prev.text[0].isupper() or prev.low in _RANGE_WORDS)


def _amount_for_share(a: _Side, b: _Side, toks: list[_Tok]) -> bool:
    """``4/7 is equal to $24``, ``1/4 cup = 1.5 tablespoons``: the share is joined to an
    amount (above 1) in words, or one side names a unit or money; and the amount is not what
    another operator makes of the two numbers (``8 / 10 = 80`` is a wrong operator)."""
    frac, other = (a, b) if _proper_fraction(a.node) else (b, a)
    worded = b.word_eq or _with_unit(toks, frac) or _with_unit(toks, other) or any(
        lit[4] for lit in _literals(other.node, []))
    if not worded:
        return False
    node = frac.node
    while node[0] == "p":
        node = node[1]
    try:
        v = _eval(other.node, True)
    except _Skip:
        return False
    if v <= 1:
        return False
    if node[0] != "b":
        return _bare(other.node)  # "20% = 10 students", not "10/50 * 100 = 25%"
    x, y = node[2][1], node[3][1]
    return v not in (x + y, x * y, y - x, x - y) and (x == 0 or v != y / x)


def _of_restates(a: _Side, b: _Side) -> bool:
    """``... = 1/3 of $150``: the right side names the share the left side computed."""
    node = b.node
    while node[0] == "p":
        node = node[1]
    if node[0] != "b" or node[1] != "of":
        return False
    try:
        return _eval(a.node, True) == _eval(node[2], True)
    except _Skip:
        return False


def _first_literal(node):
    while node[0] != "n":
        if node[0] in ("u", "p"):
            node = node[1]
        else:
            node = node[2]
    return node


MAX_RATIONALE_CHARS = 50_000  # ~12k tokens, beyond the longest real reply (max_tokens): the rest is not read


def _head(rationale: str) -> str:
    """An untrusted reply's first ``MAX_RATIONALE_CHARS`` characters, cut at a line end."""
    if len(rationale) <= MAX_RATIONALE_CHARS:
        return rationale
    cut = rationale.rfind("\n", 0, MAX_RATIONALE_CHARS)
    return rationale[:cut if cut > 0 else MAX_RATIONALE_CHARS]


def check_steps(rationale: str, question: str | None = None, *, track_values: bool | None = None,
                check_annotations: bool = True, constants: Iterable[Fraction] | None = None,
                conversions: Iterable[int] | None = None) -> StepReport:
    """Check every arithmetic claim of ``rationale`` and, when ``question`` is given (or
    ``track_values=True``), trace every operand to the question, an earlier step or a
    constant (see the module docstring). Never raises for odd text; text after a ``####``
    line (GSM8K's final answer) is not read."""
    if not rationale:
        return StepReport(0, 0, None)
    rationale = _head(rationale)
    track = (question is not None) if track_values is None else track_values
    units = unit_constants(question, rationale)
    if constants is None:
        constants = DEFAULT_CONSTANTS | {Fraction(u) for u in units}
    if conversions is None:
        conversions = sorted(set(CONVERSIONS) | units)
    return _Checker(question, track, constants, conversions, check_annotations).run(rationale)


# --- the baseline -----------------------------------------------------------------------------

_NAIVE_RE = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/x×])\s*(-?\d+(?:\.\d+)?)\s*=\s*(-?\d+(?:\.\d+)?)")


def naive_check_steps(rationale: str) -> StepReport:
    """The baseline: a regular expression for ``a op b = c`` with plain numbers, checked
    exactly (to 1e-9). For the benchmark only."""
    errors: list[StepError] = []
    steps = 0
    for m in _NAIVE_RE.finditer(rationale or ""):
        a, op, b, c = float(m.group(1)), m.group(2), float(m.group(3)), float(m.group(4))
        steps += 1
        if op == "+":
            v = a + b
        elif op == "-":
            v = a - b
        elif op in "*x×":
            v = a * b
        elif b == 0:
            continue
        else:
            v = a / b
        if abs(v - c) > 1e-9 * max(1.0, abs(c)):
            errors.append(StepError("arithmetic", m.group(0)[:_EXCERPT], f"{v:g}", m.start()))
    return _report(steps, errors)


# --- programs ---------------------------------------------------------------------------------

_COMMENT_VALUE_RE = re.compile(r"(?:=|->|→|==|\bis\b|\bequals\b)\s*(?:about\s+|approximately\s+|~\s*)?\$?\s*"
                               r"(-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|-?\.\d+)\s*(%?)\s*"
                               r"(?:[A-Za-z$][\w$/ ]{0,30})?\.?\s*$")
_MAX_STATIC_STEPS = 2000


def _static_values(program: str) -> dict[str, object]:
    """The values of the names ``solution()`` assigns once, at its top level, computed from
    the program text alone: numbers, arithmetic, names, round/int/float/abs/min/max and
    math.floor/ceil. Nothing is executed; a name whose value needs anything else is absent."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {}
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "solution"), None)
    if fn is None:
        return {}
    env: dict[str, object] = {}
    budget = [_MAX_STATIC_STEPS]

    def ev(node):
        budget[0] -= 1
        if budget[0] < 0:
            raise _Skip
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            raise _Skip
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            op = node.op
            try:
                if isinstance(op, ast.Add):
                    return a + b
                if isinstance(op, ast.Sub):
                    return a - b
                if isinstance(op, ast.Mult):
                    if isinstance(a, int) and isinstance(b, int) and abs(a) > 10 ** 30 and abs(b) > 10 ** 30:
                        raise _Skip
                    return a * b
                if isinstance(op, ast.Div):
                    return a / b
                if isinstance(op, ast.FloorDiv):
                    return a // b
                if isinstance(op, ast.Mod):
                    return a % b
                if isinstance(op, ast.Pow):
                    if abs(b) > 64 or abs(a) > 10 ** 6:
                        raise _Skip
                    return a ** b
            except (ZeroDivisionError, OverflowError, TypeError, ValueError):
                raise _Skip from None
            raise _Skip
        if isinstance(node, ast.Call) and not node.keywords:
            f = node.func
            name = f.id if isinstance(f, ast.Name) else (
                f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else "")
            funcs = {"round": round, "int": int, "float": float, "abs": abs, "min": min, "max": max,
                     "math.floor": math.floor, "math.ceil": math.ceil, "math.sqrt": math.sqrt}
            if name in funcs and 1 <= len(node.args) <= 8:
                args = [ev(a) for a in node.args]
                try:
                    return funcs[name](*args)
                except (TypeError, ValueError, OverflowError):
                    raise _Skip from None
        raise _Skip

    counts: dict[str, int] = {}
    for node in ast.walk(fn):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.NamedExpr)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for tgt in targets:
                for nm in ast.walk(tgt):
                    if isinstance(nm, ast.Name):
                        counts[nm.id] = counts.get(nm.id, 0) + (2 if not isinstance(node, ast.Assign) else 1)
    for stmt in fn.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name = stmt.targets[0].id
            try:
                env[name] = ev(stmt.value)
            except (_Skip, RecursionError):
                env.pop(name, None)
    return {k: v for k, v in env.items() if counts.get(k) == 1}


def _once_assigned_lines(program: str) -> tuple[dict[int, str], dict[str, int]]:
    """Line -> the name assigned on it (top level of solution(), a single name); and how many
    times each name is bound anywhere in solution()."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {}, {}
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "solution"), None)
    if fn is None:
        return {}, {}
    counts: dict[str, int] = {}
    for node in ast.walk(fn):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.NamedExpr, ast.comprehension)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for tgt in targets:
                for nm in ast.walk(tgt):
                    if isinstance(nm, ast.Name):
                        counts[nm.id] = counts.get(nm.id, 0) + (1 if isinstance(node, ast.Assign) else 2)
    lines: dict[int, str] = {}
    for stmt in fn.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            for ln in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1):
                lines[ln] = stmt.targets[0].id
    return lines, counts


def _number(value: object) -> Fraction | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, Fraction)):
            return Fraction(value)
        if isinstance(value, float) and math.isfinite(value):
            return Fraction(repr(value))
        if isinstance(value, str):
            s = value.strip()
            if "/" in s:
                num, den = s.split("/", 1)
                return Fraction(int(num), int(den))
            return Fraction(s)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def _comments(program: str) -> list[tuple[int, int, str]]:
    """(line number, column of the ``#``, text after it) of every comment of ``program``
    (Python's own tokenizer, so a ``#`` inside a string is no comment); a line scan when the
    program does not tokenize."""
    out: list[tuple[int, int, str]] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(program).readline):
            if tok.type == tokenize.COMMENT:
                out.append((tok.start[0], tok.start[1], tok.string[1:]))
        return out
    except (tokenize.TokenError, IndentationError, SyntaxError):
        out = []
    for i, line in enumerate(program.split("\n"), start=1):
        pos = _comment_start(line)
        if pos >= 0:
            out.append((i, pos, line[pos + 1:]))
    return out


def check_program_steps(program: str, locals_: Mapping[str, object] | None = None,
                        question: str | None = None) -> StepReport:
    """A program-of-thought solution against its own comments. Every comment is read as a
    rationale (:func:`check_steps`, arithmetic only: the numbers of a program's comments
    come from its code); a wrong claim is a ``program_mismatch``. A comment that states a
    value at its end (``= 24``, ``-> 24``, ``is 24``) must agree with the value the program
    computes for the variable it is about: the variable it names (``# may = 24``), the one
    assigned on its line (``may = april / 2  # 48 / 2 = 24``), or, for a comment on a line of
    its own that shows a calculation, the one assigned on the next line of code. Values are
    ``locals_`` (the locals of ``solution()`` at its return, as
    :func:`dataforge.generate.pot.run_program` captures them with ``capture_locals=True``),
    else a static evaluation of its straight-line arithmetic (nothing is executed). Only
    names bound once in ``solution()`` are compared. ``question`` is not used yet."""
    del question
    if not program:
        return StepReport(0, 0, None)
    lines = program.split("\n")
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln) + 1)
    assigned_on, counts = _once_assigned_lines(program)
    values: dict[str, Fraction] = {}
    source = locals_ if locals_ is not None else _static_values(program)
    for k, v in source.items():
        f = _number(v)
        if f is not None and counts.get(k) == 1:
            values[k] = f
    names = sorted(values, key=len, reverse=True)
    errors: list[StepError] = []
    steps = 0
    for lineno, col, raw in _comments(program):
        comment = raw.strip()
        if not comment:
            continue
        line = lines[lineno - 1]
        start = offsets[lineno - 1] + col
        rep = check_steps(comment, None, track_values=False, check_annotations=False)
        steps += rep.steps_checked
        for e in rep.errors:
            errors.append(StepError("program_mismatch", e.text, e.expected, start + 1 + max(e.start, 0),
                                    f"a comment's arithmetic is wrong: {e.detail}" if e.detail else
                                    "a comment's arithmetic is wrong"))
        m = _COMMENT_VALUE_RE.search(comment)
        if not m:
            continue
        claimed = Fraction(m.group(1).replace(",", ""))
        decimals = len(m.group(1).split(".")[1]) if "." in m.group(1) else 0
        before = comment[:m.start()]
        named = [n for n in names if re.search(rf"(?<![\w.]){re.escape(n)}\s*$", before.rstrip(" :"))]
        target = None
        if named:
            target = named[0]
        elif line[:col].strip():
            target = assigned_on.get(lineno)
        elif rep.steps_checked:  # "# May: 48 / 2 = 24" above "may = april / 2"
            nxt = lineno + 1
            while nxt <= len(lines) and (not lines[nxt - 1].strip() or lines[nxt - 1].strip().startswith("#")):
                nxt += 1
            target = assigned_on.get(nxt)
        if target is None or target not in values:
            continue
        steps += 1
        actual = values[target]
        approx = bool(re.search(r"about|approx|~|≈", comment[max(0, m.start() - 2):m.end()]))
        ok = any(_round_ok(actual * scale, claimed, decimals, approx, False) for scale in
                 ((1, 100) if m.group(2) else (1,)))
        if not ok:
            errors.append(StepError("program_mismatch", _excerpt(line, 0, len(line)), _fmt(actual), start,
                                    f"the comment says {target} is {m.group(1)}{m.group(2)}, "
                                    f"the program computes {_fmt(actual)}"))
    return _report(steps, errors)


def _comment_start(line: str) -> int:
    """The index of the ``#`` that opens a comment (not inside a string), or -1."""
    quote = None
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return i
        i += 1
    return -1


# --------------------------------------------------------------------------- answer support

# the statement of the final answer: everything from the last one on is not the derivation
# (``^[^\S\n]*####``, not ``^\s*####``: that one retried its \s* from every line of a run of blank
# lines, quadratic; the start moves past leading blank lines, which no reader of the cut text sees)
_ANSWER_STATEMENT = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|answer\s*:|^[^\S\n]*####)", re.I | re.M)
# a number as a reader sees one: thousands separators allowed, a unit glued on (25ml, 200cm),
# but not a variable's coefficient (8x, 3N: a single letter glued on)
_PLAIN_NUMBER = re.compile(r"(?<![\w.])-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?"
                           r"(?![A-Za-z](?![A-Za-z])|\d)")
# a value written in another unit in the rationale ($0.25 for 25 cents, 3.5 kWh for 3500 Wh)
_CONVERSIONS = (Fraction(1), Fraction(100), Fraction(1, 100), Fraction(1000), Fraction(1, 1000), Fraction(60),
                Fraction(1, 60))


def _numbers_in(text: str) -> set[Fraction]:
    out: set[Fraction] = set()
    for m in _PLAIN_NUMBER.finditer(text):
        s = m.group(0).replace("$", "").replace(",", "").replace(" ", "")
        try:
            out.add(Fraction(s))
        except (ValueError, ZeroDivisionError):
            continue
    return out


def _derivation(rationale: str | None) -> str:
    """The rationale without calculator marks, up to the last statement of its final answer."""
    text = strip_annotations(_head(rationale or ""))
    starts = [m.start() for m in _ANSWER_STATEMENT.finditer(text)]
    return text[: starts[-1]] if starts else text


def answer_support(rationale: str, answer: str | None, question: str | None = None,
                   steps_checked: int | None = None) -> str | None:
    """Why a numeric final answer is not supported by its rationale, or None.

    A chain of thought must show where its answer comes from. ``no_calculation``: the rationale
    checks no arithmetic step (:func:`check_steps` found no claim) and the answer is not a number
    of the question, so nothing shows how it was reached ("each basket has 4 apples ... The
    answer is 8."). ``unsupported_answer``: the answer's value is written nowhere in the
    rationale before its final statement ("So each basket will have 6 apples. The answer is 8.").
    Numbers glued to letters (``8x``) do not count. Non-numeric answers return None."""
    if answer is None:
        return None
    try:
        value = Fraction(str(answer).replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None
    body = _derivation(rationale)
    in_question = value in _numbers_in(question or "")
    if steps_checked == 0 and not in_question:
        return "no_calculation"
    written = _numbers_in(body)
    if not in_question and not any(value * c in written for c in _CONVERSIONS):
        return f"unsupported_answer:{_fmt(value)}"
    return None


# a count of something: "10 tickets", "1,200 pages" (the noun lower-cased, plural -s cut)
_QUANTITY = re.compile(r"(?<![\w.$])(\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?\s+([a-z]{3,})\b")
# counts a unit noun (one UNIT_CONSTANTS knows) may carry as a conversion: "12 months", "1000 grams"
_UNIT_COUNTS = frozenset(Fraction(x) for x in (2, 3, 4, 7, 10, 12, 16, 24, 28, 30, 31, 52, 60, 100, 365, 1000))
# a value a rationale computes or states as a result: "= 24", "is 24", "a total of 24"
_RESULT = re.compile(r"(?:=|\bis\b|\bare\b|\bequals\b|\bmakes\b|\bgives\b|\btotal of\b)\s*\$?(\d[\d,]*(?:\.\d+)?)")


def _noun(word: str) -> str:
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def unsupported_quantity(rationale: str, question: str | None) -> str | None:
    """The first count a rationale states of something the question counts ("10 tickets" for a
    question about 4 tickets) that is neither a number of the question (digits or words), nor a
    result the rationale writes anywhere, nor the sum, difference, product or ratio of two of
    the question's numbers, nor a conversion count of a unit noun ("12 months"); None when every
    count checks out.

    The rationale misstates the problem: "There are 4 tickets. The total cost of 10 tickets is
    4 * 7 = $28" reaches the gold answer with a false sentence. On GSM8K train's gold solutions
    it fires on 37 of 7,473 (0.50%): multi-term mental sums ("He ate 70 apples in total" for 14 +
    14 + 42) and real slips in the gold text ("Sydney has 915 rocks because ... = 905")."""
    if not question:
        return None
    body = _derivation(rationale).lower()
    counted: set[str] = {_noun(m.group(2)) for m in _QUANTITY.finditer(question.lower())}
    counted.discard("time")
    if not counted:
        return None
    qnums = sorted(_numbers_in(question) | {v for v, _ in question_values(question)})
    results = {Fraction(x.replace(",", "")) for x in _RESULT.findall(body)}
    derived = {a + b for a in qnums for b in qnums} | {a * b for a in qnums for b in qnums}
    derived |= {abs(a - b) for a in qnums for b in qnums} | {a / b for a in qnums for b in qnums if b}
    known = set(qnums) | results | derived
    for m in _QUANTITY.finditer(body):
        n, noun = Fraction(m.group(1).replace(",", "")), _noun(m.group(2))
        if noun not in counted or n <= 1 or n in known or (_unit_of(m.group(2)) and n in _UNIT_COUNTS):
            continue
        return f"{m.group(1)} {m.group(2)}"
    return None
