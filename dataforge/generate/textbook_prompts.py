"""Prompt templates for textbook sections, the built-in audiences, styles and formats, and the
stock-opener check.

Two templates, both phrased the way phi-1.5 and Cosmopedia phrase theirs (a subject, an
audience, a style; Cosmopedia's web-extract prompts for passages):

* ``textbook_topic_v2`` — a section about one subtopic of a taxonomy (or an inline topic),
  naming what the sibling subtopics of the same topic cover so the sections divide the ground
  instead of repeating each other;
* ``textbook_passage_v2`` — a section inspired by a seed passage (Cosmopedia's
  ``prompts/web_samples``: the extract, cut to ``max_passage_chars``, then the request).

Both forbid the stock openers that Cosmopedia found dominating its first generations ("Once
upon a time", "In the realm of"; its blog-post prompt also bans "Have you ever..." and "Hello
dear readers"), and :func:`stock_opener` checks a reply for them afterwards. The list lives in
``compliance_patterns.yaml`` with the other patterns the compliance gate (``gates.py``) checks.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

TOPIC_TEMPLATE = "textbook_topic_v2"
PASSAGE_TEMPLATE = "textbook_passage_v2"


@dataclass(frozen=True)
class AxisSpec:
    """A resolved axis value: the column value, the phrase used in the request, and the
    description the prompt gives (None for a custom value given without one)."""

    name: str
    phrase: str
    description: str | None


def _article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


# Audiences: Cosmopedia's (young children, high school students, college students, researchers),
# with professionals in place of researchers.
AUDIENCES: dict[str, AxisSpec] = {a.name: a for a in [
    AxisSpec("young children", "young children",
             "Readers aged 6 to 10. Use short sentences and everyday words, explain any new word the first time "
             "it appears, and build every idea on things a child has seen or done. No formulas beyond simple "
             "arithmetic."),
    AxisSpec("high school students", "high school students",
             "Readers aged 14 to 18 who know school arithmetic and basic algebra. Define technical terms, "
             "show each step, and connect the idea to something they meet outside class."),
    AxisSpec("college students", "college students",
             "First- or second-year university students. Use precise terminology and notation, give the "
             "reasoning behind each claim, and expect them to follow a multi-step argument."),
    AxisSpec("professionals", "professionals",
             "Working adults who need to apply the idea in their job. Be concise and concrete, assume general "
             "education but not specialist training, and focus on how the idea is used and where it goes wrong."),
]}

STYLES: dict[str, AxisSpec] = {s.name: s for s in [
    AxisSpec("academic textbook", "an academic textbook",
             "Rigorous and well organised: develop each concept fully before the next, with precise "
             "definitions and an engaging, professional tone."),
    AxisSpec("narrative", "a narrative",
             "Teach through a story: characters meet a situation where the idea matters and work it out; the "
             "explanation is woven into what happens, and the facts stay correct."),
    AxisSpec("how-to guide", "a how-to guide",
             "Practical and step by step, like a WikiHow article: numbered steps, why each step works, and "
             "tips on common mistakes."),
    AxisSpec("blog post", "a blog post",
             "Conversational and insightful: a fresh angle on the idea, concrete examples or anecdotes, and "
             "complex points made accessible."),
]}

FORMATS: dict[str, AxisSpec] = {f.name: f for f in [
    AxisSpec("worked example", "an explanation with a worked example",
             "Explain the idea, then work through one concrete example step by step, showing every step."),
    AxisSpec("exercises with solutions", "exercises with solutions",
             "Explain the idea briefly, then give two or three exercises of rising difficulty, each followed by "
             "its full solution."),
]}

PATTERNS_FILE = Path(__file__).resolve().parent / "compliance_patterns.yaml"


@functools.lru_cache(maxsize=1)
def load_compliance_patterns() -> dict:
    """``compliance_patterns.yaml``: every pattern of a reply that disobeys the textbook prompt,
    grouped by reason (the compliance gate in ``gates.py`` reads the same file)."""
    data = yaml.safe_load(PATTERNS_FILE.read_text(encoding="utf-8"))
    phrases = data.get("stock_opener", {}).get("phrases") if isinstance(data, dict) else None
    if not phrases or not all(isinstance(p, str) and p.strip() for p in phrases):
        raise ValueError(f"{PATTERNS_FILE}: stock_opener.phrases must be a non-empty list of phrases")
    return data


# Openers that made Cosmopedia's early generations read alike, and their close relatives: the
# `stock_opener` phrases of compliance_patterns.yaml, so the prompt's ban list and the check are
# one list. Matched at the start of a reply, case-insensitively, after markdown marks and quotes.
STOCK_OPENERS: tuple[str, ...] = tuple(
    " ".join(p.split()) for p in load_compliance_patterns()["stock_opener"]["phrases"])

_OPENER_RE = re.compile(
    r"^(?:" + "|".join(re.escape(o.lower()).replace("'", "['’]") for o in
                       sorted(STOCK_OPENERS, key=len, reverse=True)) + r")\b")
_LEADING_MARKS = re.compile(r"^[\s#*_>\"'“”‘’`~\-–—]+")


def stock_opener(text: str) -> str | None:
    """The stock opener a reply starts with (as listed in :data:`STOCK_OPENERS`), or None.

    Leading markdown (``#``, ``**``, ``>``), quotes and dashes are skipped, so ``**Once upon a
    time**`` counts; a phrase counts only as whole words (``Hellos`` is not ``Hello``)."""
    head = " ".join(_LEADING_MARKS.sub("", text[:200]).split()).lower()
    m = _OPENER_RE.match(head)
    if not m:
        return None
    matched = m.group(0).replace("’", "'")
    return next(o for o in STOCK_OPENERS if o.lower() == matched)


def opening_rule() -> str:
    listed = ", ".join(f'"{o}"' for o in STOCK_OPENERS)
    return ("Begin directly with the substance of the subject. Do not open with a stock phrase such as "
            f"{listed}, do not greet the reader, and do not start with a title or a heading such as "
            '"Introduction". Vary how sentences and paragraphs begin.')


def resolve_axis(kind: str, name: str, description: str | None) -> AxisSpec:
    """The spec of an axis value named in the config: the built-in one (its description unless
    the config gives another), or a custom value used as it is."""
    catalogue = {"audience": AUDIENCES, "style": STYLES, "format": FORMATS}[kind]
    builtin = catalogue.get(name)
    if builtin:
        return AxisSpec(name, builtin.phrase, description or builtin.description)
    phrase = name if kind == "audience" else _article(name) if kind == "style" else name
    return AxisSpec(name, phrase, description)


def _axis_lines(audience: AxisSpec, style: AxisSpec, fmt: AxisSpec) -> list[str]:
    lines = []
    if audience.description:
        lines.append(f"Audience ({audience.name}): {audience.description}")
    if style.description:
        lines.append(f"Style ({style.name}): {style.description}")
    lines.append(f"Format ({fmt.name}): {fmt.description}" if fmt.description else f"Format: {fmt.phrase}.")
    return lines


def topic_prompt(*, subject: str | None, topic: str, subtopic: str | None, covers: str | None,
                 siblings: tuple[tuple[str, str | None], ...], audience: AxisSpec, style: AxisSpec,
                 fmt: AxisSpec) -> str:
    """The request for a section about one (sub)topic, naming what its sibling sections cover."""
    focus = subtopic or topic
    parts = [f'Write a section of {style.phrase} about {focus} for {audience.phrase}.']
    if subtopic:
        where = f'the unit "{topic}"' + (f" of {subject}" if subject else "")
        parts.append(f"This section belongs to {where}." + (f" It covers {covers}." if covers else ""))
    if siblings:
        listed = "\n".join(f"- {name}: {what}" if what else f"- {name}" for name, what in siblings)
        parts.append("Other sections of the same unit cover the subtopics below. Do not repeat their content or "
                     f"their examples; mention them at most in passing and stay on {focus}.\n{listed}")
    parts.append("\n".join(_axis_lines(audience, style, fmt)))
    parts.append(opening_rule())
    return "\n\n".join(parts)


def passage_prompt(*, extract: str, audience: AxisSpec, style: AxisSpec, fmt: AxisSpec) -> str:
    """The request for a section inspired by a seed passage (Cosmopedia's web-extract prompt:
    the extract is context, the section teaches what the extract touches on)."""
    parts = [
        (f"Write a section of {style.phrase} for {audience.phrase}, inspired by the extract below. Take the idea "
         "in it most worth teaching and develop it in depth. Do not summarise the extract and do not mention it "
         "or the page it came from."),
        f'Extract: "{extract}"',
        "\n".join(_axis_lines(audience, style, fmt)),
        opening_rule(),
    ]
    return "\n\n".join(parts)
