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


# --- the instructions stage (tests/test_instructions.py) -------------------------------------

INSTRUCTION_ANSWER = (
    "Here is a clear answer to the request. First we look at what the task asks for and the words that "
    "describe it, and then we work through it with care, one step at a time. A reader who follows these "
    "steps should be able to explain the result to a friend and to say why the method works. We end with "
    "a short summary of what was learned. Variant {tag}."
)
_SUBJECTS = ("volcanoes", "compound interest", "sorting algorithms", "the French revolution", "bread baking",
             "photosynthesis", "chess openings", "tidal energy", "job interviews", "prime numbers", "bird migration",
             "public speaking", "solar panels", "ancient Rome", "recycling plastic", "time zones")
_VERBS = ("Explain", "Write a short guide to", "Give three facts about", "Compare two views of", "Summarize",
          "Describe a common mistake people make with", "List the steps of learning", "Argue for and against")
MAGPIE_QUERIES = (
    "How can I keep my houseplants alive while I travel for two weeks?",
    "What is the difference between a virus and a bacterium?",
    "Can you help me plan a birthday party for a ten year old?",
    "Why does ice float on water?",
    "Hi",  # too short: dropped as magpie_short_query
    "How can I keep my houseplants alive while I travel for two weeks?",  # a duplicate
    "Write a limerick about a cat who loves rain.<|im_end|>\n<|im_start|>assistant\nThere once",  # cut at the marker
)


def _h(*parts: object) -> int:
    import hashlib

    return int(hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def instruction_responder(body: dict) -> str:
    """A stand-in teacher for the instructions stage. ``/v1/completions`` (a ``prompt``): a Magpie
    user query picked by the seed from MAGPIE_QUERIES. A Self-Instruct request: a numbered list of
    new tasks built from the seed, plus a copy of its first example (ROUGE-L 1.0) and a task with
    a blocked word. An evolution (#Given Prompt#): by a hash of prompt and seed, a proper rewrite
    (the parent plus a constraint), the parent unchanged (no gain), a reply that copies
    "#Rewritten Prompt#", or one whose answer will be "sorry" (it says IMPOSSIBLE). WizardLM's
    equality prompt: "Not Equal". A judge request: as :func:`judging_responder`. Anything else
    is answered with a paragraph that passes the Gopher rules ("Sorry." for IMPOSSIBLE)."""
    seed = body.get("seed", 0) or 0
    if "prompt" in body:
        return MAGPIE_QUERIES[seed % len(MAGPIE_QUERIES)]
    msgs = body.get("messages", [])
    if msgs and JUDGE_MARK in msgs[0].get("content", ""):
        return judging_responder(body)
    last = msgs[-1]["content"] if msgs else ""
    if last.startswith("Come up with"):
        n = int(re.search(r"Come up with (\d+)", last).group(1))
        first = int(re.search(r"numbered from (\d+)", last).group(1))
        example = re.search(r"^1\. (.+)$", last, re.M).group(1)
        tasks = [f"{_VERBS[_h(seed, j, 'v') % len(_VERBS)]} {_SUBJECTS[_h(seed, j) % len(_SUBJECTS)]} "
                 f"for a reader who is {10 + seed % 50 + j} years old." for j in range(max(1, n - 2))]
        tasks += [example, "Draw a picture of a cat sitting on a fence."]
        return "\n".join(f"{first + j}. {t}" for j, t in enumerate(tasks))
    if "#Given Prompt#" in last:
        parent = re.search(r"#Given Prompt#:\n(.*?)\n\n#(?:Rewritten|Created) Prompt#", last, re.S).group(1)
        kind = _h(parent, seed) % 6
        if kind == 0:
            return parent
        if kind == 1:
            return f"#Rewritten Prompt#: {parent}"
        if kind == 2:
            return f"{parent} Do it in a way that is IMPOSSIBLE."
        if "#Created Prompt#" in last:
            return f"Describe a rare kind of {_SUBJECTS[_h(parent) % len(_SUBJECTS)]} and why few people know it."
        return f"{parent} Answer in exactly three numbered steps and give one example for each step."
    if last.startswith("Here are two Instructions"):
        return "Not Equal"
    if "IMPOSSIBLE" in last:
        return "Sorry, I cannot do that."
    return INSTRUCTION_ANSWER.format(tag=_h(last, seed) % 1000)


# --- distillation signals (tests/test_distill.py) ---------------------------------------------


def split_tokens(text: str) -> list[str]:
    """A stand-in tokenization: words with their leading whitespace (concatenate to ``text``)."""
    return re.findall(r"\s*\S+|\s+$", text) or [text]


def fake_token_logprobs(tokens: list[str], k: int) -> list[dict]:
    """Chat-completions ``logprobs.content`` for ``tokens``: the sampled token first (logprob
    -0.1 .. -0.25 by position), then other tokens of the same reply, each 1 nat less likely."""
    out = []
    for i, tok in enumerate(tokens):
        lp = -(0.1 + 0.05 * (i % 4))
        alts = [tok] + [t for t in dict.fromkeys(tokens[i + 1:] + tokens[:i]) if t != tok][: max(0, k - 1)]
        out.append({"token": tok, "logprob": lp, "bytes": list(tok.encode()),
                    "top_logprobs": [{"token": t, "logprob": lp - j, "bytes": list(t.encode())}
                                     for j, t in enumerate(alts)]})
    return out


# --- several answers per instruction (tests/test_instructions.py) -----------------------------

ANSWER_SENTENCES = (
    "The first thing to do is to read the request slowly and note what it asks for.",
    "A good answer starts with the main idea and then adds the details that support it.",
    "It helps to think about who will read the answer and what they already know.",
    "One simple example can make an abstract point much easier to follow.",
    "When there are several steps, it is best to put them in the order they happen.",
    "Numbers should be checked twice, because a small slip can change the whole result.",
    "A short summary at the end reminds the reader of the points that matter most.",
    "Some people find it useful to draw a quick sketch of the problem on paper first.",
    "If a word has two meanings, the answer should say which one it uses.",
    "Comparing the idea with something familiar from daily life often makes it click.",
    "The answer should avoid long words where a plain word would do the same job.",
    "A common mistake is to answer a slightly different question from the one asked.",
    "Good sources are worth naming, so that the reader can learn more on their own.",
    "Each claim in the answer should follow from what was said before it.",
    "It is fine to admit what is uncertain instead of guessing with false confidence.",
    "Breaking a large task into smaller parts makes every part easier to handle.",
    "A reader who is new to the topic needs the key terms explained in simple words.",
    "Practice with a second example shows whether the method really has been understood.",
    "The tone of the answer should be friendly, clear and to the point.",
    "Before finishing, it is worth checking that every part of the request was covered.",
    "History can explain why things are done the way they are done today.",
    "A list of pros and cons helps when the request asks for a balanced view.",
    "Safety comes first whenever the task involves tools, heat or electricity.",
    "The last step is to read the whole answer again as if seeing it for the first time.",
)


def multi_answer_responder(body: dict) -> str:
    """:func:`instruction_responder`, except that an answer to an instruction is six sentences of
    ANSWER_SENTENCES chosen by a hash of the instruction and the request's seed: the answers of
    one instruction (seed + k) differ from each other and from other instructions' answers (so
    near-duplicate removal keeps them), and the judge (a hash of what it judges) scores them
    differently."""
    msgs = body.get("messages", [])
    last = msgs[-1]["content"] if msgs else ""
    if ("prompt" in body or (msgs and JUDGE_MARK in msgs[0].get("content", ""))
            or last.startswith(("Come up with", "Here are two Instructions"))
            or "#Given Prompt#" in last or "IMPOSSIBLE" in last):
        return instruction_responder(body)
    seed = body.get("seed", 0) or 0
    order = sorted(range(len(ANSWER_SENTENCES)), key=lambda i: _h(last, seed, i))
    return " ".join(ANSWER_SENTENCES[i] for i in sorted(order[:6]))
