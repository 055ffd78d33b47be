"""Question synthesis: new problems written from seed problems, growth beyond the seeds.

TinyGSM (Liu et al. 2023) grew GSM8K's 7.5k problems to 12.3M by asking a teacher for *new*
problems in the style of given ones; MetaMath and WizardMath rewrite seed problems the same
way. A synthesized question has no gold answer, so its answer is the teacher's own consensus:
it is answered by the k samples of the CoT stage like any seed, and its samples are kept only
when the vote agrees strongly (``agreement >= cot.synthesis.min_agreement`` for the sample's
answer) — self-consistency as the filter (Wang et al. 2023; Huang et al. 2022, "Large Language
Models Can Self-Improve", kept rationales whose answer won ≥ a set share of the votes).

Each synthesized question is one teacher request per (seed, variant): the prompt shows the
seed problem (and, when there are several seeds, one more as a second example of the style)
and asks for one new problem with different names, context and numbers. The reply is cleaned
(labels such as "New problem:" and any answer the teacher added are cut) and checked; a reply
that is unusable is recorded as a rejected row with the reason, never dropped silently:

- ``synth_empty`` — nothing left after cleaning;
- ``synth_too_short`` / ``synth_too_long`` — outside ``min_words`` .. ``max_words``;
- ``synth_not_a_question`` — no question mark and no imperative ask ("Find", "How", ...);
- ``synth_copy_of_seed`` — word-trigram Jaccard with its seed (or the shown example) ≥
  ``max_seed_similarity``: the teacher restated the problem instead of writing a new one;
- ``synth_duplicate`` — the same question (normalized) was already synthesized or is a seed.

The survivors become :class:`~dataforge.generate.seeds.Seed` objects with ``gold_answer=None``,
``source = "synthetic:<parent source>"`` and ``parent_seed_id`` set, and the answer type of
their parent (a multiple-choice seed yields a numeric question: the prompt asks for a word
problem with a number as its answer, so only numeric seeds are used as parents).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dataforge.config import SynthesisConfig
from dataforge.generate.seeds import Seed, seed_id
from dataforge.records import make_sample
from dataforge.teacher import TeacherClient, TeacherError

TEMPLATE = "synth_question_v1"

SYSTEM = ("You write new math word problems for a school workbook. Each new problem must be different from the "
          "examples: new names, a new everyday situation and new numbers, with the same kind of reasoning. "
          "Write only the problem, ending with its question. Do not solve it.")

_LABEL = re.compile(r"^\s*(?:\*\*)?(?:new\s+)?(?:math\s+)?(?:word\s+)?(?:problem|question|example)\s*(?:\d+)?\s*[:.)-]"
                    r"\s*(?:\*\*)?\s*", re.IGNORECASE)
_CUT = re.compile(r"\n\s*(?:\*\*)?(?:solution|answer|step\s*1|let'?s|to solve|we (?:can|need))\b|####|"
                  r"\bthe answer is\b", re.IGNORECASE)
_ASK = re.compile(r"\?|\b(?:how many|how much|what|find|calculate|compute|determine|work out)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class SynthResult:
    seeds: list[Seed]  # the new questions that passed the checks
    rejected: list[dict]  # one record per unusable reply or failed request, with drop_reason
    requests: int


def synthesis_messages(parent: Seed, example: Seed | None) -> list[dict[str, str]]:
    """The prompt for one new problem from ``parent`` (and a second example of the style)."""
    shown = [parent] + ([example] if example is not None else [])
    parts = [f"Example {i}: {s.question.strip()}" for i, s in enumerate(shown, start=1)]
    user = ("\n\n".join(parts) + "\n\nWrite one new problem like Example 1, with different names, situation and "
            "numbers. It must have a single number as its answer. Write only the new problem.\nNew problem:")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def clean_question(reply: str) -> str:
    """The problem in a reply: labels stripped, any solution or answer the teacher added cut,
    whitespace collapsed; ends at the last question mark when there is one."""
    text = reply.strip().strip('"').strip()
    text = _LABEL.sub("", text, count=1)
    m = _CUT.search(text)
    if m:
        text = text[: m.start()]
    text = " ".join(text.split())
    q = text.rfind("?")
    if q != -1:
        text = text[: q + 1]
    return text.strip().strip('"').strip()


def _trigrams(text: str) -> set[tuple[str, ...]]:
    w = _WORD.findall(text.lower())
    return {tuple(w[i:i + 3]) for i in range(max(len(w) - 2, 0))} or {tuple(w)}


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the word trigrams of two texts (lowercased, punctuation ignored)."""
    x, y = _trigrams(a), _trigrams(b)
    return len(x & y) / len(x | y) if x or y else 1.0


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def check_question(question: str, parent: Seed, example: Seed | None, cfg: SynthesisConfig) -> str | None:
    """None when ``question`` is usable, else the drop reason (see the module docstring)."""
    if not question:
        return "synth_empty"
    n = len(question.split())
    if n < cfg.min_words:
        return f"synth_too_short({n}<{cfg.min_words} words)"
    if n > cfg.max_words:
        return f"synth_too_long({n}>{cfg.max_words} words)"
    if not _ASK.search(question):
        return "synth_not_a_question"
    for other in (parent, example):
        if other is not None:
            sim = similarity(question, other.question)
            if sim >= cfg.max_seed_similarity:
                return f"synth_copy_of_seed({sim:.2f}>={cfg.max_seed_similarity})"
    return None


def plan_parents(seeds: Sequence[Seed], cfg: SynthesisConfig, run_seed: int) -> list[tuple[Seed, Seed | None, int]]:
    """(parent, second example, variant) for every synthesis request, in a fixed order: each
    numeric seed ``questions_per_seed`` times (capped at ``max_questions`` overall), the
    second example drawn from the other seeds by a generator seeded with the run seed."""
    parents = [s for s in seeds if s.answer_type == "numeric"]
    rng = random.Random(run_seed)
    out: list[tuple[Seed, Seed | None, int]] = []
    for v in range(cfg.questions_per_seed):
        for i, p in enumerate(parents):
            others = len(parents) - 1
            ex = parents[(i + 1 + rng.randrange(others)) % len(parents)] if others > 0 else None
            out.append((p, ex, v))
    return out[: cfg.max_questions] if cfg.max_questions else out


async def synthesize_questions(client: TeacherClient, seeds: Sequence[Seed], cfg: SynthesisConfig, *,
                               run_id: str, seed: int, on_done: Callable[[], None] | None = None) -> SynthResult:
    """Ask the teacher for new questions from ``seeds``; see the module docstring."""
    plan = plan_parents(seeds, cfg, seed)
    params = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}

    async def one(i: int, parent: Seed, example: Seed | None, variant: int):
        messages = synthesis_messages(parent, example)
        req_seed = seed + 7919 * (variant + 1)
        try:
            c = await client.complete(messages, seed=req_seed, sample_index=variant, **params)
        except TeacherError as err:
            return None, {"reason": f"teacher_error:{err.reason}", "parent": parent, "variant": variant,
                          "completion": None, "question": ""}
        finally:
            if on_done:
                on_done()
        question = clean_question(c.text)
        return (question, {"reason": check_question(question, parent, example, cfg), "parent": parent,
                           "variant": variant, "completion": c, "question": question, "raw": c.text})

    results = await asyncio.gather(*(one(i, p, e, v) for i, (p, e, v) in enumerate(plan)))
    known = {_norm(s.question) for s in seeds}
    new: list[Seed] = []
    rejected: list[dict] = []
    for question, info in results:
        parent: Seed = info["parent"]
        reason = info["reason"]
        if reason is None and _norm(question) in known:
            reason = "synth_duplicate"
        c = info.get("completion")
        if reason is not None:
            row = make_sample(
                "cot", info.get("raw") or question or "", None, teacher_model=client.cfg.model, template=TEMPLATE,
                seed_id=seed_id(question) if question else None, parent_seed_id=parent.seed_id,
                seed_source=f"synthetic:{parent.source}", sample_index=info["variant"], run_id=run_id,
                question=question or None, gen_params={**params},
                request_hash=c.request_hash if c else None, finish_reason=c.finish_reason if c else None,
                prompt_tokens=c.prompt_tokens if c else None, completion_tokens=c.completion_tokens if c else None,
                cost_usd=c.cost_usd if c else None)
            row["drop_reason"] = reason
            rejected.append(row)
            continue
        known.add(_norm(question))
        new.append(Seed(seed_id=seed_id(question), question=question, gold_answer=None,
                        source=f"synthetic:{parent.source}", line=parent.line, file=parent.file,
                        answer_type="numeric", parent_seed_id=parent.seed_id,
                        synth_request_hash=c.request_hash if c else None))
    return SynthResult(new, rejected, len(plan))


def consensus_verdict(row: dict, min_agreement: float) -> str | None:
    """Keep a sample of a synthesized question only when its answer won a strong vote."""
    if row.get("answer") is None:
        return "no_final_answer" if row.get("finish_reason") != "length" else "truncated_no_final_answer"
    agreement = row.get("agreement") or 0.0
    if agreement < min_agreement:
        return f"weak_agreement({agreement:.2f}<{min_agreement})"
    return None
