"""Words and sentences as datatrove counts them for English: spaCy's rule-based tokenizer and
sentencizer, ported without spaCy.

Datatrove's ``split_into_words`` / ``split_into_sentences`` run ``spacy.blank("en")`` (plus the
``sentencizer`` pipe). Its tokenizer is rules, not a model: split on whitespace, then peel
prefixes and suffixes off each chunk and split it at infixes, with a table of special cases
("don't" is "do" "n't", "Mr." stays whole). The rules (regular expressions, special cases and
the sentencizer's punctuation) are spaCy 3.8's, stored in ``spacy_en_tokenizer.json`` (spaCy is
MIT-licensed, Explosion AI); :func:`chunk_tokens` follows ``Tokenizer.explain``, spaCy's own
Python statement of the algorithm, including its final pass that re-joins special cases the
affix rules split ("Mr.Smith": "Mr" "." "Smith" becomes "Mr." "Smith").

The sentencizer starts a new sentence at the first token after a sentence-final mark (a token
that *is* one of its punctuation characters, e.g. "." but not "..." or "Mr.") that is not itself
punctuation; :func:`count_sentences`.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from pathlib import Path

_RULES_FILE = Path(__file__).with_name("spacy_en_tokenizer.json")


@functools.cache
def _rules() -> dict:
    data = json.loads(_RULES_FILE.read_text(encoding="utf-8"))
    return {
        # every prefix rule is anchored with "^" (no MULTILINE), so match == spaCy's search, and
        # does not scan the rest of a long chunk
        "prefix": re.compile(data["prefix"][0], data["prefix"][1]).match,
        "suffix": re.compile(data["suffix"][0], data["suffix"][1]).search,
        "infix": re.compile(data["infix"][0], data["infix"][1]).finditer,
        "url": re.compile(data["url"][0], data["url"][1]).match,
        "special": {k: tuple(v) for k, v in data["special_cases"].items()},
        "longest": max(map(len, data["special_cases"]), default=0),
        "punct_chars": frozenset(data["sentence_punct_chars"]),
    }


@functools.lru_cache(maxsize=1 << 16)
def chunk_tokens(chunk: str) -> tuple[str, ...]:
    """The tokens of one whitespace-free chunk, as spaCy's English tokenizer splits it."""
    special = _rules()["special"]
    if (chunk.isalpha() or chunk.isdecimal()) and chunk not in special:
        return (chunk,)  # no prefix, suffix or infix rule applies to letters only or digits only
    simple = _simple_shape(chunk, special)
    if simple is not None:
        return simple
    tokens = _affix_tokens(chunk, special, _rules()["longest"])
    patterns = _special_patterns()
    if not any(tok in patterns for tok in tokens):
        return tokens
    # spaCy's special matcher: a run of tokens that the affix rules made of a special case
    # becomes that special case's tokens (longest run first, left to right)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for pattern, replacement in patterns.get(tokens[i], ()):
            if tokens[i:i + len(pattern)] == pattern:
                out.extend(replacement)
                i += len(pattern)
                break
        else:
            out.append(tokens[i])
            i += 1
    return tuple(out)


# The commonest chunk shapes, split without the big regular expressions: ASCII letters or digits
# with at most one prefix "(", "[" or quote, at most one suffix ",", ";", ":", "!", "?", ")", "]" or
# quote, and an optional period right after the letters or digits (two marks can make a special
# case such as ":)" or "''", left to the full rules).
_SIMPLE = re.compile(r"""([(\["'“‘]?)([A-Za-z]+|[0-9]+)(\.?)([,;:!?)\]"'”’]?)""")


def _simple_shape(chunk: str, special: dict) -> tuple[str, ...] | None:
    m = _SIMPLE.fullmatch(chunk)
    if m is None:
        return None
    pre, core, period, post = m.groups()
    if not (pre or period or post) or core in special or (core + period) in special \
            or (core + period + post[:1]) in special or (pre[-1:] + core) in special:
        return None
    if period:
        # spaCy's suffix rules split "." after a digit, a lowercase letter or two capitals
        if core[-1].isdigit() or core[-1].islower() or (len(core) > 1 and core[-2:].isupper()):
            return (*pre, core, ".", *post)
        return (*pre, core + ".", *post)
    return (*pre, core, *post)


@functools.cache
def _special_patterns() -> dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]]:
    """First token -> [(tokens the affix rules make of a special case, its special tokens)]."""
    patterns: dict[str, list] = {}
    for key, replacement in _rules()["special"].items():
        pattern = _affix_tokens(key, {}, 0)
        if pattern and pattern != replacement and "".join(pattern) == "".join(replacement):
            patterns.setdefault(pattern[0], []).append((pattern, replacement))
    for options in patterns.values():
        options.sort(key=lambda pr: -len(pr[0]))
    return patterns


_TAIL = 16  # longer than any suffix rule can match (6 characters), save runs of periods


def _suffix_search(substring: str):
    """spaCy's suffix search (its rules are anchored at the end), looking at the last ``_TAIL``
    characters first: peeling one suffix at a time off a long chunk ("((((...", "=====...")
    would otherwise rescan the whole chunk each time. Lookbehinds still see the whole string.
    Only the rule for runs of periods can match more than ``_TAIL`` characters, and then it
    also matches at the window's start, which sends the search back to the whole string."""
    search = _rules()["suffix"]
    start = len(substring) - _TAIL
    if start <= 0:
        return search(substring)
    m = search(substring, start)
    if m is not None and m.start() == start:
        return search(substring)
    return m


def _affix_tokens(chunk: str, special: dict[str, tuple[str, ...]], longest: int) -> tuple[str, ...]:
    """spaCy's affix pass over one chunk. A remainder longer than ``longest`` (the longest special
    case) is not looked up: peeling a long chunk one mark at a time would otherwise hash every
    remainder."""
    r = _rules()
    prefix_search, infix_finditer, url_match = r["prefix"], r["infix"], r["url"]
    suffix_search = _suffix_search
    tokens: list[str] = []
    suffixes: list[str] = []
    substring = chunk
    while substring:
        if len(substring) <= longest and substring in special:
            tokens.extend(special[substring])
            substring = ""
            continue
        # spaCy's loop "while prefix_search(s) or suffix_search(s)", each search run once per turn
        while True:
            pm = prefix_search(substring)
            sm = None if pm else suffix_search(substring)
            if not (pm or sm):
                break
            if len(substring) <= longest and substring in special:
                tokens.extend(special[substring])
                substring = ""
                break
            if pm:
                split = pm.end()
                if split == 0:
                    break
                tokens.append(substring[:split])
                substring = substring[split:]
                if len(substring) <= longest and substring in special:
                    continue
                sm = suffix_search(substring)
            if sm:
                split = sm.start()
                if split == len(substring):
                    break
                suffixes.append(substring[split:])
                substring = substring[:split]
        if not substring:
            continue
        if url_match(substring):
            tokens.append(substring)
        elif len(substring) <= longest and substring in special:
            tokens.extend(special[substring])
        else:
            offset = 0
            for m in infix_finditer(substring):
                if offset == 0 and m.start() == 0:
                    continue
                if substring[offset:m.start()]:
                    tokens.append(substring[offset:m.start()])
                if substring[m.start():m.end()]:
                    tokens.append(substring[m.start():m.end()])
                offset = m.end()
            if substring[offset:]:
                tokens.append(substring[offset:])
        substring = ""
    tokens.extend(reversed(suffixes))
    return tuple(tokens)


def tokenize(text: str) -> list[str]:
    """The words of ``text`` as datatrove's ``split_into_words`` returns them for English:
    spaCy's tokens (punctuation marks are tokens), whitespace dropped."""
    return [tok for chunk in text.split() for tok in chunk_tokens(chunk)]


def is_punct(token: str) -> bool:
    """spaCy's ``is_punct``: every character is Unicode punctuation (category P*)."""
    return all(unicodedata.category(ch).startswith("P") for ch in token)


def sentence_marks() -> frozenset[str]:
    """The sentencizer's punctuation characters (a token that is one of them ends a sentence)."""
    return _rules()["punct_chars"]


def is_sentence_mark(token: str) -> bool:
    """A token the sentencizer ends sentences at (one of its punctuation characters)."""
    return token in _rules()["punct_chars"]


def count_sentences(text: str) -> int:
    """Sentences in ``text`` by spaCy's sentencizer over :func:`tokenize` (0 for no tokens)."""
    tokens = tokenize(text)
    if not tokens:
        return 0
    n, seen_mark = 1, False
    for tok in tokens:
        mark = is_sentence_mark(tok)
        if seen_mark and not mark and not is_punct(tok):
            n += 1
            seen_mark = False
        elif mark:
            seen_mark = True
    return n
