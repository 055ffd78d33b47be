"""Hybrid labelling (FineWeb-Edu, Penedo et al. 2024; the seeds' "cheap proxy plus LLM
ranking"): the teacher rates a sample of rows on a rubric (``classifiers/rubrics/*.md``, an
additive 0..5 educational-value scale by default) with structured output
``{"reasoning": str, "score": int 0..5}``; a fastText model then learns those ratings
(:mod:`dataforge.curate.classifier`) and scores every row cheaply (:mod:`dataforge.curate.quality`).

Every request goes through :class:`dataforge.teacher.TeacherClient`: retried, rate limited,
cached under ``<data root>/cache/teacher.sqlite`` (a re-run pays nothing), validated against
:class:`RubricRating` (a reply that does not validate is asked again, then fails). A row whose
request fails for good is *recorded*, not dropped: it is a rejected row with
``drop_reason = teacher_error:<reason>``, beside the labelled rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from dataforge.errors import DataforgeError
from dataforge.records import with_drop
from dataforge.teacher import TeacherClient, TeacherError, parse_structured

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RUBRIC = REPO / "classifiers" / "rubrics" / "educational_value.md"
LABEL_STAGE = "label"
PLACEHOLDER = "{text}"


class RubricRating(BaseModel):
    """The teacher's structured answer (closed and all fields required, for strict mode)."""

    model_config = ConfigDict(extra="forbid")
    reasoning: str
    score: int = Field(ge=0, le=5)


class RubricError(DataforgeError, ValueError):
    """A rubric file that cannot be used (missing, or without the {text} placeholder)."""


def load_rubric(path: str | Path | None = None) -> str:
    """The rubric prompt; it must hold ``{text}`` where the extract goes."""
    p = Path(path) if path else DEFAULT_RUBRIC
    if not p.is_file():
        raise RubricError(f"{p}: rubric not found")
    text = p.read_text(encoding="utf-8")
    if PLACEHOLDER not in text:
        raise RubricError(f"{p}: the rubric has no {PLACEHOLDER} placeholder for the extract")
    return text


def rubric_messages(rubric: str, text: str, max_chars: int) -> list[dict]:
    """One user message: the rubric with the extract (cut at ``max_chars`` characters, as
    FineWeb-Edu's annotation cut long documents) in place of ``{text}``."""
    return [{"role": "user", "content": rubric.replace(PLACEHOLDER, text[:max_chars])}]


@dataclass
class Rating:
    score: int | None
    reasoning: str | None
    error: str | None
    request_hash: str | None = None
    cached: bool = False


async def rate_texts(client: TeacherClient, texts: Sequence[str], rubric: str, *, max_chars: int = 4000,
                     max_tokens: int = 300, temperature: float = 0.0, seed: int | None = 0,
                     on_done: Callable[[], None] | None = None) -> list[Rating]:
    """The teacher's rating of each text, in order; the client bounds the concurrency."""

    async def one(text: str) -> Rating:
        try:
            c = await client.complete_structured(rubric_messages(rubric, text, max_chars), RubricRating,
                                                 temperature=temperature, max_tokens=max_tokens, seed=seed,
                                                 name="rubric_rating")
            try:
                parsed = c.parsed if isinstance(c.parsed, RubricRating) else parse_structured(c.text, RubricRating)
            except (ValueError, RecursionError) as err:  # a reply that is not the schema: this text's failure only
                return Rating(None, None, f"malformed rating reply: {str(err)[:200]}", c.request_hash, c.cached)
            return Rating(parsed.score, parsed.reasoning, None, c.request_hash, c.cached)
        except TeacherError as err:
            return Rating(None, None, err.reason)
        finally:
            if on_done is not None:
                on_done()

    return list(await asyncio.gather(*(one(t) for t in texts)))


def sample_rows(table: pa.Table, n: int | None, seed: int) -> pa.Table:
    """``n`` rows drawn at random without replacement (seeded), in file order; all when
    ``n`` is None or at least the row count."""
    if n is None or n >= table.num_rows:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=n, replace=False))
    return table.take(pa.array(idx))


def attach_ratings(table: pa.Table, ratings: Sequence[Rating], teacher_model: str
                   ) -> tuple[pa.Table, pa.Table]:
    """(labelled rows with ``label``, ``label_reasoning``, ``label_teacher``, ``label_request``;
    failed rows with ``drop_stage = label`` and ``drop_reason = teacher_error:<reason>``)."""
    if len(ratings) != table.num_rows:
        raise ValueError(f"{len(ratings)} ratings for {table.num_rows} rows")
    ok = pa.array([r.error is None for r in ratings])
    out = table
    for name, values, typ in (("label", [r.score for r in ratings], pa.int64()),
                              ("label_reasoning", [r.reasoning for r in ratings], pa.string()),
                              ("label_teacher", [teacher_model] * len(ratings), pa.string()),
                              ("label_request", [r.request_hash for r in ratings], pa.string())):
        if name in out.column_names:
            out = out.drop_columns([name])
        out = out.append_column(name, pa.array(values, typ))
    failed = out.filter(pc.invert(ok))
    reasons = [f"teacher_error:{r.error}" for r in ratings if r.error is not None]
    return out.filter(ok), with_drop(failed, LABEL_STAGE, reasons)
