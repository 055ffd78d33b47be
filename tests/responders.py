"""Deterministic teacher replies for pipeline tests against the fake server."""

from __future__ import annotations

import re

TEXTBOOK_BODY = (
    "The topic of {topic} can be understood step by step. First we look at the main idea and the words "
    "that describe it, and then we work through an example with care. A student who reads this section "
    "should be able to explain the idea to a friend, to solve a small problem with it, and to say why "
    "the method works. We begin with the definition, move to the example, and end with a short summary "
    "of what was learned in this part of the book. Variant {seed}."
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
