"""Textbook sections from a table of topic x audience x style (phi-1, phi-1.5, Cosmopedia).

Diversity is engineered, not hoped for: every sample is one cell of the table, chosen by a
seeded shuffle, and the cell's axes are stored as columns so coverage can be queried.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from dataforge.config import TextbookConfig
from dataforge.records import make_sample
from dataforge.teacher.client import answered_at
from dataforge.teacher import TeacherClient, TeacherError

TEMPLATE = "textbook_v1"


@dataclass(frozen=True)
class TextbookCell:
    topic: str
    audience: str
    style: str


def plan_textbooks(cfg: TextbookConfig, seed: int) -> list[TextbookCell]:
    """A deterministic sample of the topic x audience x style table, ``max_samples`` cells."""
    cells = [TextbookCell(t, a, s) for t, a, s in itertools.product(cfg.topics, cfg.audiences, cfg.styles)]
    random.Random(seed).shuffle(cells)
    return cells[: cfg.max_samples]


def textbook_messages(cell: TextbookCell) -> list[dict[str, str]]:
    prompt = (
        f"Write a section of a {cell.style} about {cell.topic} for {cell.audience}. "
        "Explain the key ideas clearly and in order, and include one worked example. "
        "Write in full paragraphs. Do not greet the reader and do not start with a title like 'Introduction'."
    )
    return [{"role": "user", "content": prompt}]


async def generate_textbooks(client: TeacherClient, cells: list[TextbookCell], cfg: TextbookConfig, *,
                             run_id: str, seed: int, on_done: Callable[[], None] | None = None
                             ) -> tuple[list[dict], list[dict]]:
    """Ask the teacher for one section per cell. Returns (samples, failures); a failure is a
    record with empty text whose ``drop_reason`` says why the request failed."""
    params = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}

    async def one(i: int, cell: TextbookCell) -> tuple[dict | None, dict | None]:
        messages = textbook_messages(cell)
        common = dict(teacher_model=client.cfg.model, template=TEMPLATE, topic=cell.topic,
                      audience=cell.audience, style=cell.style, sample_index=0,
                      gen_params={**params, "seed": seed + i}, run_id=run_id)
        try:
            c = await client.complete(messages, seed=seed + i, sample_index=0, **params)
        except TeacherError as err:
            row = make_sample("textbook", "", None, **common)
            row["drop_reason"] = f"teacher_error:{err.reason}"
            return None, row
        finally:
            if on_done:
                on_done()
        text = c.text.strip()
        row = make_sample("textbook", text, messages + [{"role": "assistant", "content": text}], **common,
                          request_hash=c.request_hash, finish_reason=c.finish_reason, created_at=answered_at(c),
                          prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens)
        return row, None

    results = await asyncio.gather(*(one(i, cell) for i, cell in enumerate(cells)))
    return [r for r, _ in results if r], [f for _, f in results if f]
