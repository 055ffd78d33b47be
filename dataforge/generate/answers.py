"""Final-answer extraction and comparison for chain-of-thought solutions, per answer type.

Four answer types cover the seed sets (:mod:`dataforge.generate.seeds`):

``numeric``  GSM8K, MultiArith, SVAMP, AddSub, SingleEq: a number, normalized to a canonical
             string (``"1,234.50"`` → ``"1234.5"``, ``"3/4"`` → ``"0.75"``, ``"25%"`` → ``"25"``).
``option``   AQuA, CommonsenseQA, QASC, ECQA: one of the question's options. The canonical
             answer is the option's label (``"B"``, ``"Sentence A"``) or, for an unlabelled
             list of options (FLAN's ``- bloody mess``), the option's text.
``yesno``    StrategyQA, CREAK: ``"yes"`` or ``"no"``.
``text``     anything else: a short string, compared after SQuAD-style normalization.

Where a solution states its answer, in order of preference: GSM8K's ``#### N``, a
``\\boxed{...}`` (MATH; nested braces and ``\\frac{a}{b}`` are read), and the last "the answer
is ..." (the answer trigger of zero-shot CoT, Kojima et al. 2022). Failing all of those, the
answer-cleansing fallback of Kojima et al.: the last number (numeric), the last option
mentioned (option), a sentence that opens with yes or no (yesno). An option answer is always
checked against the options: a letter that is not one of them is no answer.

Every scanner here runs in time linear in the reply (a teacher reply is untrusted input: 20k
newlines or thousands of unclosed ``\\boxed{`` must not take seconds). Three bounds make that
hold and never matter for a real reply: a box whose contents exceed ``MAX_BOX_CHARS`` is not an
answer, only the last ``MAX_TRIGGERS`` answer triggers are read, and what follows a trigger is
read up to ``MAX_SPAN_CHARS`` characters of its line.
"""

from __future__ import annotations

import math
import re
import string
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, get_args

AnswerType = Literal["numeric", "option", "yesno", "text"]
ANSWER_TYPES: tuple[str, ...] = get_args(AnswerType)


@dataclass(frozen=True)
class Choice:
    """One option of a multiple-choice question; ``label`` is None in an unlabelled list."""

    label: str | None
    text: str

    @property
    def key(self) -> str:
        """The canonical answer that names this option."""
        return self.label if self.label is not None else self.text


# --- numbers -------------------------------------------------------------------------------

_MINUS = "-\u2212\u2013"  # hyphen-minus, minus sign, en dash
# 1,234,567 (strict thousands groups) or 1234; an optional decimal part; or .5
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
_NUM = (rf"(?<![\w.])[{_MINUS}]?\$?\s?[{_MINUS}]?(?:{_DIGITS})"
        rf"(?:\s?/\s?(?:\d{{1,3}}(?:,\d{{3}})+(?!\d)|\d+))?(?:\s?%)?")
_NUM_RE = re.compile(_NUM)
_HASH_RE = re.compile(r"####\s*(.+)")
_MIXED_RE = re.compile(rf"^([{_MINUS}]?)\s*(\d+)\s+(\d+)\s*/\s*(\d+)$")
# the answer trigger: "the answer is", "final answer:", "Answer = ", "answer would be" ...;
# for multiple choice also "the correct option is", "choice:"
# ("Answer Choices:", which opens a list of options, is not a trigger)
_TRIGGER = r"(?:\s+choice)?\s*(?:(?:is|are|would\s+be|will\s+be|should\s+be|must\s+be)\b\s*[:=]?|[:=])"
_MARKER_RE = re.compile(r"\b(?:final\s+|correct\s+|right\s+|best\s+)?answers?" + _TRIGGER, re.IGNORECASE)
_OPTION_MARKER_RE = re.compile(r"\b(?:final\s+|correct\s+|right\s+|best\s+)?(?:answers?|option|choice)" + _TRIGGER,
                               re.IGNORECASE)
_WORD_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
               "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
               "nineteen"]
_WORD_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_WORD_NUMBERS = {w: i for i, w in enumerate(_WORD_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_WORD_TENS)}
_WORD_NUM_RE = re.compile(
    r"^\W*(" + "|".join(sorted(_WORD_NUMBERS, key=len, reverse=True)) + r")(?:[-\s](" + "|".join(_WORD_UNITS[1:10])
    + r"))?\b", re.IGNORECASE)


def normalize_number(s: str) -> str | None:
    """``"$1,234.50"`` → ``"1234.5"``; ``"3/4"`` → ``"0.75"``; ``"25%"`` → ``"25"``;
    ``"2 1/2"`` → ``"2.5"``; None when ``s`` is not a number."""
    s = s.strip().rstrip(".")
    for m in _MINUS[1:]:
        s = s.replace(m, "-")
    s = s.replace("$", "").replace(",", "").replace("%", "").strip()
    mixed = _MIXED_RE.match(s)
    if mixed:
        sign, whole, num, den = mixed.groups()
        if int(den) == 0:
            return None
        value = int(whole) + Fraction(int(num), int(den))
        return _format_fraction(-value if sign else value)
    s = s.replace(" ", "")
    if not s or not re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?", s):
        return None
    try:
        value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return _format_fraction(value)


def _format_fraction(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.15g}"  # 15 significant digits: .6g merged 12345.67 and 12345.68


def _first_number(text: str) -> str | None:
    """The first number in ``text`` (a mixed number like ``2 1/2`` counts as one), else a
    number word at its start ("five", "twenty-one")."""
    m = _NUM_RE.search(text)
    if m:
        rest = text[m.end():]
        frac = re.match(r"\s+(\d+)\s*/\s*(\d+)", rest)
        if frac and re.fullmatch(r"[-\u2212\u2013]?\s?\$?\d+", m.group().strip()):
            mixed = normalize_number(f"{m.group()} {frac.group(1)}/{frac.group(2)}")
            if mixed is not None:
                return mixed
        return normalize_number(m.group())
    w = _WORD_NUM_RE.match(text)
    if w:
        value = _WORD_NUMBERS[w.group(1).lower()] + (_WORD_NUMBERS[w.group(2).lower()] if w.group(2) else 0)
        return str(value)
    return None


def _last_number(text: str) -> str | None:
    found = _NUM_RE.findall(text)
    for raw in reversed(found):
        n = normalize_number(raw)
        if n is not None:
            return n
    return None


# --- LaTeX \boxed{...} ---------------------------------------------------------------------

_BOX_START_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_RE = re.compile(r"[{}]")
MAX_BOX_CHARS = 1000  # a final answer in a box is short; a longer "box" is not read (nor copied)
MAX_TRIGGERS = 32  # the last answer triggers read ("the answer is ..."), last first
MAX_SPAN_CHARS = 2000  # what follows a trigger, up to the end of its line or this many characters
MAX_FRAC_NESTING = 8  # \\frac inside \\frac read this deep; deeper ones keep their braces removed


def boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` in ``text``, braces balanced (so
    ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``); an unclosed box is ignored, as is one
    longer than ``MAX_BOX_CHARS``. One pass over the braces (a stack) matches every box, so
    thousands of unclosed boxes cost no more than one."""
    opens = [m.end() for m in _BOX_START_RE.finditer(text)]
    if not opens:
        return []
    close: dict[int, int] = {}  # position after a "{" -> position of its matching "}"
    stack: list[int] = []
    for m in _BRACE_RE.finditer(text, opens[0] - 1):
        if m.group() == "{":
            stack.append(m.end())
        elif stack:
            close[stack.pop()] = m.start()
    out = []
    for o in opens:
        c = close.get(o)
        if c is not None and c - o <= MAX_BOX_CHARS:
            out.append(text[o:c])
    return out


_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_SHORT_RE = re.compile(r"\\[dt]?frac\s*(\d)(\d)")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")


def latex_to_plain(s: str) -> str:
    """Just enough LaTeX to read a final answer: ``\\frac{a}{b}`` → ``a/b``, ``\\text{..}``
    units dropped, ``\\$``, ``\\%``, ``{,}``, ``^\\circ`` and spacing commands removed."""
    s = _TEXT_CMD_RE.sub(lambda m: " " + m.group(1) + " ", s)
    prev = None
    for _ in range(MAX_FRAC_NESTING):  # innermost first; each pass reads one level of nesting
        if prev == s:
            break
        prev = s
        s = _FRAC_RE.sub(lambda m: _frac(m.group(1), m.group(2)), s)
    s = _FRAC_SHORT_RE.sub(r"\1/\2", s)
    for old, new in (("\\$", "$"), ("\\%", "%"), ("{,}", ","), ("\\!", ""), ("\\,", ""), ("\\;", " "),
                     ("\\quad", " "), ("^\\circ", ""), ("^{\\circ}", ""), ("\\left", ""), ("\\right", ""),
                     ("\\displaystyle", ""), ("\\cdot", "*"), ("\\times", "*")):
        s = s.replace(old, new)
    return s.replace("{", "").replace("}", "").strip()


def _frac(num: str, den: str) -> str:
    num, den = num.strip(), den.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", num) and re.fullmatch(r"\d+(?:\.\d+)?", den):
        return f" {num}/{den}"
    return f"({num})/({den})"


def _number_in_box(content: str) -> str | None:
    plain = latex_to_plain(content)
    if "=" in plain:  # \boxed{x = 5}
        plain = plain.rsplit("=", 1)[1]
    return _first_number(plain)


# --- the marked answer ---------------------------------------------------------------------

def _marked_spans(text: str, options: bool = False) -> list[str]:
    """The text after each answer trigger, up to the end of its line, last trigger first
    (the last ``MAX_TRIGGERS`` triggers, each span at most ``MAX_SPAN_CHARS`` characters)."""
    ends = deque((m.end() for m in (_OPTION_MARKER_RE if options else _MARKER_RE).finditer(text)),
                 maxlen=MAX_TRIGGERS)
    spans = []
    for start in reversed(ends):
        stop = text.find("\n", start, start + MAX_SPAN_CHARS)
        spans.append(text[start: stop if stop >= 0 else start + MAX_SPAN_CHARS])
    return spans


def _hash_spans(text: str) -> list[str]:
    return [m.group(1) for m in _HASH_RE.finditer(text)][::-1]


def extract_numeric(text: str | None) -> str | None:
    """The normalized final number of a solution, or None when it states none."""
    if not text:
        return None
    for span in _hash_spans(text):
        n = _first_number(span)
        if n is not None:
            return n
    for content in reversed(boxed_contents(text)):
        n = _number_in_box(content)
        if n is not None:
            return n
    for span in _marked_spans(text):
        # the answer follows the trigger within its sentence; "The answer is unclear. He has
        # 3 kids." states no answer (the fallback below still reads the last number)
        head = re.split(r"(?<!\d)[.!?;](?!\d)", span, maxsplit=1)[0]
        head = latex_to_plain(head) if "\\" in head else head
        if "=" in head:  # "the answer is 5 + 3 = 8 apples"
            head = head.rsplit("=", 1)[1]
        n = _first_number(head)
        if n is not None:
            return n
    return _last_number(text)


# --- options -------------------------------------------------------------------------------

_OPTIONS_HEADER_RE = re.compile(r"(?:^|\s)(?:Options|Answer Choices|Choices)\s*:", re.IGNORECASE)
_LETTERED_INLINE_RE = re.compile(r"\(([A-Z])\)\s*")
_LINE_OPTION_RE = re.compile(r"^\s*(?:[-*\u2022]\s*)?(?:\(([A-Za-z])\)|([A-Z])\))\s*(.*)$")
_NAMED_LABEL_RE = re.compile(r"^\s*(?:[-*\u2022]\s*)?((?:Sentence|Option|Choice|Statement)\s+[A-Z0-9])\s*:\s*(.*)$")
_DASH_ITEM_RE = re.compile(r"^\s*[-*\u2022]\s*(.*)$")


def parse_options(question: str) -> tuple[Choice, ...]:
    """The options written into a question, in the formats of FLAN's CoT data and of the
    zero-shot-CoT prompts: an ``Options:`` or ``Answer Choices:`` block whose items are
    ``(A) text`` / ``A) text`` / ``- (A) text`` / ``- Sentence A: text`` / ``- text``, one per
    line or inline. Empty when the question has no such block."""
    headers = list(_OPTIONS_HEADER_RE.finditer(question))
    if not headers:
        return ()
    block = question[headers[-1].end():]  # the last block: a question may quote "Options:" earlier
    lines = [ln for ln in block.split("\n") if ln.strip()]
    if not lines:
        return ()
    if len(lines) == 1 and len(_LETTERED_INLINE_RE.findall(lines[0])) >= 2:  # (A) x (B) y on one line
        parts = _LETTERED_INLINE_RE.split(lines[0])
        return tuple(Choice(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2))
    choices: list[Choice] = []
    for ln in lines:
        named = _NAMED_LABEL_RE.match(ln)
        lettered = _LINE_OPTION_RE.match(ln)
        dash = _DASH_ITEM_RE.match(ln)
        if named:
            choices.append(Choice(named.group(1), named.group(2).strip()))
        elif lettered:
            choices.append(Choice((lettered.group(1) or lettered.group(2)).upper(), lettered.group(3).strip()))
        elif dash:
            choices.append(Choice(None, dash.group(1).strip()))
        else:
            break  # the block ends at the first line that is not an option
    labels = [c.label for c in choices]
    if any(labels) and not all(labels):
        return ()  # a mix of labelled and unlabelled items is not an option list we can trust
    return tuple(choices)


def format_options(choices: Sequence[Choice]) -> str:
    """``Answer Choices: (A) 21 (B) 21.5 ...``, the zero-shot-CoT rendering (Kojima et al.)."""
    return "Answer Choices: " + " ".join(f"({c.label}) {c.text}" if c.label else c.text for c in choices)


_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def normalize_text(s: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    s = s.lower().translate(_PUNCT_TABLE)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _option_value(c: Choice) -> str | None:
    """The number an option stands for when its text is a number (``"31 inches"`` → 31)."""
    text = re.sub(r"^(?:Rs\.?|INR|USD|US\$|\u20ac|\u00a3)\s*", "", c.text.strip())
    m = _NUM_RE.match(text)
    if not m:
        return None
    rest = text[m.end():].strip()
    if rest and not re.fullmatch(r"[A-Za-z$%.\s]{0,20}", rest):
        return None  # "6a2", "24a8": not a number with a unit
    return normalize_number(m.group())


def resolve_choice(candidate: str, choices: Sequence[Choice], *, strict: bool = False) -> str | None:
    """The key of the option ``candidate`` names, or None.

    ``candidate`` is what follows an answer trigger (or a gold answer): a label (``B``,
    ``(B)``, ``b)``, ``Sentence A``), an option's text, or a number equal to exactly one
    option's value. With ``strict`` (gold answers) the candidate must name the option and
    nothing else."""
    cand = candidate.strip()
    if not cand or not choices:
        return None
    labels = {c.label.lower(): c for c in choices if c.label}
    if labels:
        m = re.match(r"^\(?\s*([A-Za-z])\s*\)", cand) or re.match(r"^([A-Z])(?![\w'])", cand) \
            or re.match(r"^([a-z])\s*(?=[.:;,\]]|$)", cand)
        if m and m.group(1).lower() in labels and (not strict or not cand[m.end():].strip(" .")):
            if m.group(1) == "A" and re.match(r"\s+[a-z]", cand[m.end():]) and not strict:
                # "the answer is A bank": the article, when the words after it name an option
                by_text = resolve_choice(cand[m.end():], [c for c in choices], strict=True)
                if by_text is not None:
                    return by_text
            return labels[m.group(1).lower()].key
        for label in sorted(labels, key=len, reverse=True):
            if len(label) > 1 and cand.lower().startswith(label) and not cand[len(label):len(label) + 1].isalnum():
                if not strict or not cand[len(label):].strip(" .:"):
                    return labels[label].key
    norm = normalize_text(cand)
    if not norm:
        return None
    # the exact text first ("the ground" and "ground" can both be options), then normalized;
    # an option listed twice is one answer
    for same in (lambda c: c.text.strip().lower() == cand.lower().rstrip("."),
                 lambda c: normalize_text(c.text) == norm):
        keys = {c.key for c in choices if same(c)}
        if len(keys) == 1:
            return keys.pop()
        if keys:
            break
    if strict:
        return None
    # the candidate opens with an option's text ("bloody mess, because ..."): longest first
    for c in sorted(choices, key=lambda c: len(c.text), reverse=True):
        t = normalize_text(c.text)
        if t and (norm == t or norm.startswith(t + " ")):
            return c.key
    value = _first_number(cand)
    if value is not None:
        return _choice_by_value(value, choices)
    return None


def _choice_by_value(value: str, choices: Sequence[Choice]) -> str | None:
    hits = [c for c in choices if (v := _option_value(c)) is not None and answers_match(value, v)]
    return hits[0].key if len(hits) == 1 else None


def _last_mentioned_choice(text: str, choices: Sequence[Choice]) -> str | None:
    """The option whose label in parentheses or whose text occurs last (the longest text
    wins at one position); Kojima et al.'s multiple-choice fallback reads the letters only."""
    best: tuple[int, int, str] | None = None
    for c in choices:
        patterns = []
        if c.label:
            patterns.append(r"\(" + re.escape(c.label) + r"\)" if len(c.label) == 1 else r"\b" + re.escape(c.label) + r"\b")
        if len(normalize_text(c.text)) >= 2:
            patterns.append(r"(?<!\w)" + re.escape(c.text.strip()) + r"(?!\w|\.\d)")
        for p in patterns:
            for m in re.finditer(p, text, re.IGNORECASE):
                cand = (m.start(), m.end() - m.start(), c.key)
                if best is None or cand[:2] > best[:2]:
                    best = cand
    return best[2] if best is not None else None


def extract_option(text: str | None, choices: Sequence[Choice]) -> str | None:
    """The key of the option a solution picks, checked against ``choices``; None otherwise."""
    if not text or not choices:
        return None
    whole = text.strip().rstrip(".")
    direct = resolve_choice(whole, choices, strict=True)
    if direct is not None:
        return direct
    for content in reversed(boxed_contents(text)):
        key = resolve_choice(latex_to_plain(content), choices)
        if key is not None:
            return key
    for span in [*_hash_spans(text), *_marked_spans(text, options=True)]:
        key = resolve_choice(span, choices)
        if key is not None:
            return key
    # ends with a bare label line ("... so (B)" or "B.")
    last_line = text.strip().split("\n")[-1].strip()
    tail = re.search(r"(?:^|\s)\(?([A-Z])\)?\.?$", last_line)
    if tail and any(c.label == tail.group(1) for c in choices):
        return tail.group(1)
    key = _last_mentioned_choice(text, choices)
    if key is not None:
        return key
    number = _last_number(text)
    return _choice_by_value(number, choices) if number is not None else None


# --- yes / no ------------------------------------------------------------------------------

_YESNO = {"yes": "yes", "no": "no", "true": "yes", "false": "no"}
_YESNO_HEAD_RE = re.compile(r"^\W*(yes|no|true|false)\b", re.IGNORECASE)
# a sentence that opens with yes or no followed by punctuation: "No, he could not." (not "No one")
_YESNO_SENTENCE_RE = re.compile(r"(?:^|[.!?\n]\s*)(yes|no)\s*[,.!;:]|(?:^|[.!?\n]\s*)(yes|no)\s*$", re.IGNORECASE)


def extract_yesno(text: str | None) -> str | None:
    """``"yes"`` or ``"no"``: a marked answer, a boxed one, an opening "Yes." / "No,", or the
    last sentence that opens with one; None otherwise."""
    if not text:
        return None
    for content in reversed(boxed_contents(text)):
        m = _YESNO_HEAD_RE.match(latex_to_plain(content))
        if m:
            return _YESNO[m.group(1).lower()]
    for span in [*_hash_spans(text), *_marked_spans(text)]:
        m = _YESNO_HEAD_RE.match(span)
        if m:
            return _YESNO[m.group(1).lower()]
    head = re.match(r"^\W*(yes|no)\b(?!\s+(?:one|longer|more|matter|doubt)\b)", text, re.IGNORECASE)
    if head:
        return head.group(1).lower()
    return _last_yesno_sentence(text)


_YESNO_WORD_RE = re.compile(r"(?:^|(?<=[\s.!?]))(?:yes|no)", re.IGNORECASE)


def _last_yesno_sentence(text: str) -> str | None:
    """The answer of the last match of ``_YESNO_SENTENCE_RE`` in ``text`` (as ``findall``
    gives them: left to right, not overlapping), found in linear time: the regex itself
    retries its ``[.!?\\n]\\s*`` from every newline of a run of them (quadratic)."""
    n = len(text)
    pos = 0  # where the previous match ended
    last = None
    for m in _YESNO_WORD_RE.finditer(text):
        j = m.start()
        if j > 0:
            k = j  # start of the whitespace run before the word
            while k > 0 and text[k - 1].isspace():
                k -= 1
            # a match starts at ".!?" before the run, or at a newline inside it, at or after pos
            if not ((k > 0 and k - 1 >= pos and text[k - 1] in ".!?")
                    or text.find("\n", max(k, pos), j) >= 0):
                continue
        elif pos > 0:
            continue
        q = m.end()
        while q < n and text[q].isspace():
            q += 1
        if q < n and text[q] in ",.!;:":
            pos = q + 1
        elif q == n:
            pos = n
        else:
            continue
        last = m.group().lower()
    return last


# --- free text -----------------------------------------------------------------------------

def extract_text(text: str | None) -> str | None:
    """A short free-text answer: the marked one, a boxed one, else the last non-empty line."""
    if not text:
        return None
    for content in reversed(boxed_contents(text)):
        plain = latex_to_plain(content)
        if plain:
            return plain
    for span in [*_hash_spans(text), *_marked_spans(text)]:
        span = span.strip().rstrip(".").strip()
        if span:
            return span
    lines = [ln.strip() for ln in text.strip().split("\n") if ln.strip()]
    return lines[-1].rstrip(".") if lines else None


# --- per type ------------------------------------------------------------------------------

def extract_answer(text: str | None, answer_type: str = "numeric",
                   choices: Sequence[Choice] = ()) -> str | None:
    """The canonical final answer of ``text`` for ``answer_type`` (see the module docstring)."""
    if answer_type == "numeric":
        return extract_numeric(text)
    if answer_type == "option":
        return extract_option(text, choices)
    if answer_type == "yesno":
        return extract_yesno(text)
    if answer_type == "text":
        return extract_text(text)
    raise ValueError(f"answer type must be one of {ANSWER_TYPES}, got {answer_type!r}")


def extract_final_answer(text: str | None) -> str | None:
    """The normalized final number of a solution (the numeric extractor)."""
    return extract_numeric(text)


def gold_from_gsm8k(answer_field: str) -> str | None:
    """GSM8K's gold answer is the text after ``####``; other formats give the answer alone."""
    if "####" in answer_field:
        return normalize_number(answer_field.split("####")[-1])
    return normalize_number(answer_field)


def parse_gold(value: object, answer_type: str, choices: Sequence[Choice] = ()) -> str | None:
    """The canonical gold answer of a data set's answer field, or None when ``value`` is not
    an answer of ``answer_type`` (an option answer must name one of ``choices``)."""
    if value is None or isinstance(value, (list, dict)):
        return None
    if isinstance(value, bool):
        return ("yes" if value else "no") if answer_type == "yesno" else None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raw = repr(value) if isinstance(value, float) else str(value)
    if answer_type == "numeric":
        return gold_from_gsm8k(raw)
    if answer_type == "option":
        return resolve_choice(raw, choices, strict=True)
    if answer_type == "yesno":
        return _YESNO.get(raw.strip().strip(".").lower())
    if answer_type == "text":
        return raw.strip() or None
    raise ValueError(f"answer type must be one of {ANSWER_TYPES}, got {answer_type!r}")


def infer_answer_type(gold: object, choices: Sequence[Choice] = ()) -> str:
    """The answer type a gold answer implies: yes/no, an option of ``choices``, a number, or text."""
    if isinstance(gold, bool):
        return "yesno"
    raw = str(gold).strip() if gold is not None else ""
    if raw.lower().strip(".") in _YESNO:
        return "yesno"
    if choices and (resolve_choice(raw, choices, strict=True) is not None
                    or re.fullmatch(r"\(?[A-Z]\)?", raw)):  # a letter that is no option is a bad option
        return "option"
    if gold_from_gsm8k(raw) is not None:
        return "numeric"
    return "text"


def answers_match(predicted: str | None, gold: str | None, rel_tol: float = 1e-6,
                  answer_type: str | None = None) -> bool:
    """Whether two canonical answers agree. Numbers (the default) within ``rel_tol`` of
    max(1, |gold|); options and yes/no exactly (case aside); text after normalization."""
    if predicted is None or gold is None:
        return False
    if answer_type in ("option", "yesno"):
        return predicted.strip().lower() == gold.strip().lower()
    if answer_type == "text":
        return normalize_text(predicted) == normalize_text(gold)
    try:
        p, g = float(Fraction(predicted)), float(Fraction(gold))
    except (ValueError, ZeroDivisionError):
        return predicted.strip().lower() == gold.strip().lower()
    return abs(p - g) <= rel_tol * max(1.0, abs(g))


def answer_key(answer: str | None, answer_type: str = "numeric") -> str | None:
    """The key under which equal answers are counted together in self-consistency voting:
    numbers that agree to 9 significant digits, options and yes/no case-insensitively, text
    after normalization."""
    if answer is None:
        return None
    if answer_type == "numeric":
        try:
            return f"{float(Fraction(answer)):.9g}"
        except (ValueError, ZeroDivisionError):
            return answer.strip().lower()
    if answer_type == "text":
        return normalize_text(answer)
    return answer.strip().lower()
