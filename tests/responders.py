"""Deterministic teacher replies for pipeline tests against the fake server."""

from __future__ import annotations

import re

TEXTBOOK_BODY = (
    "The topic of {topic} can be understood step by step. First we look at the main idea and the words "
    "that describe it, and then we work through an example with care. A student who learns {topic} "
    "should be able to explain the idea to a friend, to solve a small problem with it, and to say why "
    "the method works. We begin with the definition, move to the example, and end with a short summary "
    "of what was learned about {topic}. Variant {seed}."
)


def teacher_responder(body: dict) -> str:
    """A deterministic stand-in teacher for pipeline tests: textbook prompts get a paragraph
    that passes the Gopher rules; questions "What is A + B?" get a worked solution that is
    right for even seeds and wrong for odd ones, so verification has both outcomes."""
    last = body["messages"][-1]["content"]
    seed = body.get("seed", 0) or 0
    if last.startswith("Write a section"):
        topic = re.search(r"about (.+?) for ", last)
        return TEXTBOOK_BODY.format(topic=topic.group(1) if topic else "this subject", seed=seed)
    m = re.search(r"What is (\d+) \+ (\d+)\?", last)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        result = a + b if seed % 2 == 0 else a + b + 1
        return f"We add {a} and {b}.\n{a} + {b} = {result}\nThe answer is {result}."
    return "I am not sure."


JUDGE_MARK = "request your feedback on the performance of AI assistant"


def judging_responder(body: dict) -> str:
    """:func:`teacher_responder` made distinct per sample seed, and an AlpaGasus judge: a
    judge request (its system prompt) gets a score line 3.0-5.0 taken from a hash of what it
    judges, then an explanation, so the judge keeps some rows and drops others."""
    import hashlib

    msgs = body.get("messages", [])
    if msgs and JUDGE_MARK in msgs[0].get("content", ""):
        h = int(hashlib.sha256(msgs[-1]["content"].encode()).hexdigest()[:8], 16)
        score = 3.0 + (h % 5) * 0.5
        return f"{score}\nThe response is {'accurate' if score >= 4.5 else 'partly accurate'}."
    return f"{teacher_responder(body)} (sample seed {body.get('seed')})"
