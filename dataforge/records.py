"""The sample record: its Arrow schema, its content-hash id, and how it renders to training text.

Every stage reads and writes tables that start with :data:`SAMPLE_SCHEMA`. Stages append
columns with their own prefix (``heur_*``, ``dedup_*``, ...); a dropped row additionally
carries ``drop_stage`` and ``drop_reason`` (see :data:`DROP_FIELDS`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 4

KINDS = ("textbook", "cot", "instruction", "document")

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

# The teacher's per-token top-k (``teacher.logprobs: k``; dataforge/teacher/logprobs.py), aligned
# with the completion: ``"".join(tokens)`` is the reply as the teacher sent it (the row's
# assistant text is that reply stripped). Ids index the vocabulary ``vocab`` fingerprints (-1: a
# token with no id there); without a known vocabulary ``vocab``/``ids``/``top_ids`` are null and
# ``top_tokens`` holds the strings. Log-probabilities are float16 stored as their uint16 bits
# (``np.asarray(v, np.uint16).view(np.float16)``): Parquet round-trips Arrow's halffloat, but DuckDB
# (the warehouse) cannot take it from Arrow, so the bits travel everywhere a uint16 does.
TOPK_TYPE = pa.struct([
    ("vocab", pa.string()),
    ("k", pa.int32()),
    ("tokens", pa.list_(pa.string())),  # the sampled token per position
    ("ids", pa.list_(pa.int32())),
    ("logprob_f16", pa.list_(pa.uint16())),  # of the sampled token
    ("top_ids", pa.list_(pa.list_(pa.int32()))),
    ("top_tokens", pa.list_(pa.list_(pa.string()))),
    ("top_logprobs_f16", pa.list_(pa.list_(pa.uint16()))),
])

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("messages", pa.list_(MESSAGE_TYPE)),
        # provenance
        pa.field("teacher_model", pa.string()),
        pa.field("template", pa.string()),
        # diversity axes of generated text (phi-1.5, Cosmopedia): each one a column
        pa.field("subject", pa.string()),
        pa.field("topic", pa.string()),
        pa.field("subtopic", pa.string()),
        pa.field("audience", pa.string()),
        pa.field("style", pa.string()),
        pa.field("format", pa.string()),
        pa.field("passage_id", pa.string()),  # seed passage a textbook section was written from
        pa.field("seed_id", pa.string()),
        pa.field("seed_source", pa.string()),  # seed set the question came from (gsm8k, aqua, ...)
        pa.field("parent_seed_id", pa.string()),  # a synthesized question: the seed it was written from
        pa.field("sample_index", pa.int32()),
        pa.field("gen_params", pa.string()),  # JSON of the generation parameters
        pa.field("request_hash", pa.string()),  # key of the teacher request cache
        pa.field("finish_reason", pa.string()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        pa.field("cost_usd", pa.float64()),
        pa.field("run_id", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        # chain of thought
        pa.field("system_prompt", pa.string()),  # name of the (Orca-style) system prompt used
        pa.field("method", pa.string()),  # "cot" (rationale in prose) or "pot" (program of thought)
        pa.field("program", pa.string()),  # program-of-thought source, when method == "pot"
        pa.field("question", pa.string()),
        pa.field("rationale", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("gold_answer", pa.string()),
        pa.field("answer_correct", pa.bool_()),
        pa.field("votes", pa.int32()),
        pa.field("agreement", pa.float32()),
        # step verification of a rationale (dataforge/generate/steps.py): arithmetic claims and
        # traced values checked, how many were wrong, and the first wrong one as written
        pa.field("steps_checked", pa.int32()),
        pa.field("step_errors", pa.int32()),
        pa.field("first_step_error", pa.string()),
        # the generation gates of a textbook section (dataforge/generate/gates.py): the prompt
        # rule its reply broke (null: none), similarity to its planned topic, readability grade
        pa.field("gen_compliance", pa.string()),
        pa.field("gen_topic_similarity", pa.float32()),
        pa.field("gen_reading_grade", pa.float32()),
        # distillation signals: the teacher's top-k per generated token (null when not asked)
        pa.field("teacher_topk", TOPK_TYPE),
    ],
    metadata={"dataforge.schema_version": str(SCHEMA_VERSION)},
)

DROP_FIELDS = [pa.field("drop_stage", pa.string()), pa.field("drop_reason", pa.string())]

CORE_COLUMNS = tuple(SAMPLE_SCHEMA.names)


def content_id(kind: str, text: str, messages: Sequence[Mapping[str, str]] | None = None) -> str:
    """Stable id of a sample: sha256 over its kind, text and messages, first 16 bytes in hex.

    Identical content always gets the same id, whatever run or stage produced it, so ids can
    be compared across runs (exact duplicates share an id).
    """
    h = hashlib.sha256()
    h.update(kind.encode())
    h.update(b"\x00")
    h.update(text.encode())
    if messages:
        h.update(b"\x00")
        h.update(json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False).encode())
    return h.hexdigest()[:32]


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def make_sample(kind: str, text: str, messages: Sequence[Mapping[str, str]] | None = None, **fields: Any) -> dict:
    """Build one record dict with its id; unknown field names are refused."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    unknown = set(fields) - set(CORE_COLUMNS)
    if unknown:
        raise ValueError(f"unknown record fields: {sorted(unknown)}")
    row = {name: None for name in CORE_COLUMNS}
    row.update(fields)
    row["kind"] = kind
    row["text"] = text
    row["messages"] = [dict(role=m["role"], content=m["content"]) for m in messages] if messages else None
    row["id"] = content_id(kind, text, messages)
    if row["created_at"] is None:
        row["created_at"] = now_utc()
    if isinstance(row.get("gen_params"), Mapping):
        row["gen_params"] = json.dumps(row["gen_params"], sort_keys=True)
    return row


def samples_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts with the core columns) to a table of exactly :data:`SAMPLE_SCHEMA`."""
    rows = list(rows)
    return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


def with_drop(table: pa.Table, stage: str, reasons: Sequence[str] | pa.Array) -> pa.Table:
    """Mark every row of ``table`` as dropped by ``stage`` with its reason."""
    n = table.num_rows
    reasons_arr = reasons if isinstance(reasons, pa.Array) else pa.array(list(reasons), pa.string())
    if len(reasons_arr) != n:
        raise ValueError(f"{len(reasons_arr)} reasons for {n} rows")
    for name in ("drop_stage", "drop_reason"):
        if name in table.column_names:
            table = table.drop_columns([name])
    table = table.append_column(DROP_FIELDS[0], pa.array([stage] * n, pa.string()))
    return table.append_column(DROP_FIELDS[1], reasons_arr.cast(pa.string()))


def check_sample_table(table: pa.Table) -> None:
    """Raise ValueError naming the first core column that is missing or of the wrong type."""
    for field in SAMPLE_SCHEMA:
        if field.name not in table.column_names:
            raise ValueError(f"missing core column {field.name!r}")
        actual = table.schema.field(field.name).type
        if actual != field.type:
            raise ValueError(f"column {field.name!r} is {actual}, expected {field.type}")


def render_messages(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat rendering of a sample: its ``messages`` when present, else the text as a
    single assistant turn preceded by nothing (a pretraining document)."""
    if row.get("messages"):
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    return [{"role": "assistant", "content": row["text"]}]
