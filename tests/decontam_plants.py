"""Planted benchmark items for decontamination tests and benchmarks: a question reworded
lightly (a few words substituted, numbers kept or changed, sentence order kept) inside a
generated-looking sample (a CoT exchange with a system preamble, or a textbook paragraph)."""

from __future__ import annotations

import random
import re

# swaps a light rewording makes: names, objects, verbs; anything else gets a filler word
SUBSTITUTES = {
    "has": "owns", "have": "own", "buys": "purchases", "bought": "purchased", "sells": "sold",
    "gives": "hands", "gave": "handed", "makes": "earns", "many": "much", "each": "every",
    "total": "overall", "cost": "price", "costs": "is priced at", "money": "cash", "store": "shop",
    "friends": "pals", "day": "morning", "week": "weekend", "she": "he", "he": "she", "her": "his",
    "his": "her", "a": "one", "the": "this", "and": "plus", "more": "extra", "uses": "needs",
    "wants": "would like", "takes": "needs", "car": "truck", "book": "novel", "books": "novels",
}
FILLERS = ["really", "then", "also", "just", "still", "already", "actually", "now"]

PREAMBLES = [
    "System: You are a helpful assistant who explains math step by step.\nUser: Solve this problem.\n",
    "Below is a worked example from our grade-school practice set.\n\nProblem: ",
    "Chapter 3, Section 2: Word problems.\nIn this section we practise reading a story problem carefully "
    "before we compute anything. Consider the following situation. ",
]
ENDINGS = [
    "\nAssistant: Let's think step by step. First we write down what we know, then we compute the "
    "answer one operation at a time, checking each step.",
    "\n\nSolution: We read the problem twice, list the quantities, and combine them in the order the "
    "story gives them. The answer follows from the last step.",
    " Notice how every number in the story plays a role. A good habit is to underline each quantity "
    "and write the unit next to it, so that nothing is lost when we set up the computation.",
]


def reword(question: str, rng: random.Random, substitutions: int = 3, change_numbers: bool = False) -> str:
    """Substitute ``substitutions`` words (a synonym when one is listed, else insert a filler
    word after it), optionally change every number, keep the sentence order."""
    tokens = question.split(" ")
    words = [i for i, t in enumerate(tokens) if re.fullmatch(r"[A-Za-z]+[,.?]?", t)]
    for i in rng.sample(words, min(substitutions, len(words))):
        core = tokens[i].rstrip(",.?")
        tail = tokens[i][len(core):]
        sub = SUBSTITUTES.get(core.lower())
        tokens[i] = (sub if sub else f"{core} {rng.choice(FILLERS)}") + tail
    out = " ".join(tokens)
    if change_numbers:
        out = re.sub(r"\d+", lambda m: str(int(m.group()) + rng.randint(1, 9)), out)
    return out


def plant(question: str, rng: random.Random) -> str:
    """``question`` inside a generated-looking sample."""
    k = rng.randrange(len(PREAMBLES))
    return PREAMBLES[k] + question + ENDINGS[k]


def near_identical_mask(questions: list[str], items: list[str], threshold: float = 0.6):
    """Whether each question is near-identical to some item by a test independent of the
    detector: whole-question difflib ratio >= ``threshold`` (normalized words). The
    bag-of-words overlap bounds the ratio from above, so only those pairs are compared.
    Returns a numpy bool array."""
    import difflib

    import numpy as np

    from dataforge.curate.decontam import normalize_words

    item_words = [normalize_words(q) for q in items]
    vocab = {w: i for i, w in enumerate(sorted({w for ws in item_words for w in ws}))}
    bags = np.zeros((len(items), len(vocab)), np.int16)
    for r, ws in enumerate(item_words):
        np.add.at(bags[r], [vocab[w] for w in ws], 1)
    lengths = bags.sum(1)
    out = np.zeros(len(questions), bool)
    for k, q in enumerate(questions):
        w = normalize_words(q)
        bag = np.zeros(len(vocab), np.int16)
        np.add.at(bag, [vocab[x] for x in w if x in vocab], 1)
        bound = 2 * np.minimum(bags, bag).sum(1) / (lengths + len(w))
        out[k] = any(difflib.SequenceMatcher(None, w, item_words[t], autojunk=False).ratio() >= threshold
                     for t in np.flatnonzero(bound >= threshold))
    return out
