"""Chain-of-thought solutions for seed questions, k samples each, checked against gold.

Each sample's final answer is extracted (:mod:`dataforge.generate.answers`) and compared with
the seed's gold answer. Across the k samples of one question, ``votes`` counts the samples
that reached the same answer and ``agreement`` is votes / k (self-consistency, Wang et al. 2023).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from dataforge.config import CotConfig
from dataforge.generate.answers import answers_match, extract_final_answer
from dataforge.generate.seeds import Seed
from dataforge.records import make_sample
from dataforge.teacher.client import answered_at
from dataforge.teacher import TeacherClient, TeacherError

TEMPLATE = "cot_fewshot_v1"

SYSTEM = 'Solve the math word problem. Think step by step, show the calculation, and end with "The answer is N."'

# Two worked examples written for this template: short, one calculation per line, and the
# closing phrase the extractor looks for. Small teachers follow a format far better when shown.
FEW_SHOT = [
    {"role": "user", "content": "Tom has 3 boxes with 4 apples in each box. How many apples does Tom have?"},
    {"role": "assistant", "content": "Each box has 4 apples and there are 3 boxes.\n3 * 4 = 12\nThe answer is 12."},
    {"role": "user", "content": "Sara had 10 pencils. She gave 4 pencils to her friend. How many pencils does Sara have now?"},
    {"role": "assistant", "content": "Sara started with 10 pencils and gave away 4.\n10 - 4 = 6\nThe answer is 6."},
]


def cot_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, *FEW_SHOT, {"role": "user", "content": question}]


def add_votes(rows: list[dict], k: int) -> None:
    """Fill ``votes`` and ``agreement`` for the samples of each question, in place."""
    by_seed: dict[str, list[dict]] = {}
    for r in rows:
        by_seed.setdefault(r["seed_id"], []).append(r)
    for group in by_seed.values():
        counts = Counter(r["answer"] for r in group if r["answer"] is not None)
        for r in group:
            v = counts.get(r["answer"], 0) if r["answer"] is not None else 0
            r["votes"] = v
            r["agreement"] = v / k


async def generate_cot(client: TeacherClient, seeds: list[Seed], cfg: CotConfig, *, run_id: str, seed: int,
                       on_done: Callable[[], None] | None = None) -> tuple[list[dict], list[dict]]:
    """k samples per seed question. Returns (samples, failures); every sample carries its
    extracted ``answer`` and ``answer_correct``; the keep/drop decision is :func:`verdict`."""
    params = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}

    async def one(s: Seed, k: int) -> tuple[dict | None, dict | None]:
        messages = cot_messages(s.question)
        sample_seed = seed + k
        common = dict(teacher_model=client.cfg.model, template=TEMPLATE, seed_id=s.seed_id, sample_index=k,
                      gen_params={**params, "seed": sample_seed}, run_id=run_id, question=s.question,
                      gold_answer=s.gold_answer)
        try:
            c = await client.complete(messages, seed=sample_seed, sample_index=k, **params)
        except TeacherError as err:
            row = make_sample("cot", "", None, **common)
            row["drop_reason"] = f"teacher_error:{err.reason}"
            return None, row
        finally:
            if on_done:
                on_done()
        rationale = c.text.strip()
        answer = extract_final_answer(rationale)
        chat = [{"role": "user", "content": s.question}, {"role": "assistant", "content": rationale}]
        text = f"Question: {s.question}\nAnswer: {rationale}"
        row = make_sample("cot", text, chat, **common, rationale=rationale, answer=answer,
                          answer_correct=answers_match(answer, s.gold_answer) if s.gold_answer else None,
                          request_hash=c.request_hash, finish_reason=c.finish_reason, created_at=answered_at(c),
                          prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens)
        return row, None

    results = await asyncio.gather(*(one(s, k) for s in seeds for k in range(cfg.samples_per_question)))
    rows = [r for r, _ in results if r]
    add_votes(rows, cfg.samples_per_question)
    return rows, [f for _, f in results if f]


def verdict(row: dict, keep: str) -> str | None:
    """None to keep the sample, else the drop reason (``keep: verified`` keeps only samples
    whose answer matches the gold answer; questions without gold keep every sample)."""
    if keep == "all" or row.get("gold_answer") is None:
        return None
    if row.get("answer") is None:
        return "no_final_answer" if row.get("finish_reason") != "length" else "truncated_no_final_answer"
    if not row.get("answer_correct"):
        return "answer_mismatch"
    return None
