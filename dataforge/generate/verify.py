"""Check the final answers of a file of solutions: ``dataforge cot verify FILE``.

Reads JSON lines or Parquet with a question, a solution and a gold answer per record,
extracts each solution's final answer for its answer type (given, or inferred from the gold
answer and any options in the question), compares it with the gold answer, and writes one
row per record with the extracted answer and the verdict, as Parquet or JSON lines (by the
output's suffix). Malformed records are quarantined with file, line and reason in a JSON-lines
file beside the output; they never stop the check.

Verdicts: ``correct``, ``wrong_step`` (the final answer matches the gold one, but a step of the
solution does not hold: :mod:`dataforge.generate.steps`), ``incorrect`` (an answer that differs
from the gold one), ``no_answer`` (nothing extractable: no number, no option, ...), ``no_gold``
(nothing to compare with). ``correct`` (the column and the count) is about the final answer, so
a ``wrong_step`` row counts as correct there; accuracy is correct / records with a gold answer.
Every solution's steps are checked (``steps_checked``, ``step_errors``, ``first_step_error``)
unless ``check_steps=False``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataforge.generate.answers import (ANSWER_TYPES, Choice, answers_match, extract_answer, infer_answer_type,
                                        parse_gold, parse_options)
from dataforge import tabular
from dataforge.errors import DataforgeError
from dataforge.generate import steps
from dataforge.tabular import QUARANTINE_RAW_CHARS, Quarantined, ReadLimits, write_quarantine

VERDICTS = ("correct", "wrong_step", "incorrect", "no_answer", "no_gold")

OUTPUT_SCHEMA = pa.schema([
    pa.field("row", pa.int64()),  # line of a JSON-lines file, row number (from 1) of a Parquet file
    pa.field("question", pa.string()),
    pa.field("solution", pa.string()),
    pa.field("gold", pa.string()),  # the gold field as given
    pa.field("answer_type", pa.string()),
    pa.field("gold_answer", pa.string()),  # canonical
    pa.field("answer", pa.string()),  # extracted from the solution, canonical
    pa.field("correct", pa.bool_()),  # the final answer matches the gold answer
    pa.field("steps_checked", pa.int32()),  # arithmetic claims and traced values checked (null: not checked)
    pa.field("step_errors", pa.int32()),
    pa.field("first_step_error", pa.string()),  # the first wrong step, as written
    pa.field("verdict", pa.string()),
])


class VerifyError(DataforgeError, ValueError):
    """A problem with the whole input (unreadable, wrong columns, unknown output format)."""


@dataclass
class VerifySummary:
    file: str
    rows: int = 0
    extracted: int = 0
    with_gold: int = 0
    correct: int = 0
    wrong_step: int = 0  # correct final answer, wrong step
    quarantined: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)
    output: str | None = None
    quarantine_file: str | None = None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.with_gold if self.with_gold else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy}


@dataclass(frozen=True)
class Fields:
    """Which fields of a record hold what (``gold=None``: no gold answers)."""

    question: str = "question"
    solution: str = "solution"
    gold: str | None = "answer"
    options: str | None = None  # a list ("A)21" or {label, text}) or a mapping label -> text


def iter_records(path: Path, limits: ReadLimits | None = None
                 ) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line or row number, record or None, error or None, raw text) for each record, within
    the read limits (:class:`dataforge.tabular.ReadLimits`; the environment's by default)."""
    try:
        yield from tabular.iter_records(path, limits=limits)
    except tabular.InputError as err:
        raise VerifyError(str(err)) from None


def _options_from(value: Any) -> tuple[Choice, ...] | None:
    """Options given in their own field; None when the value is not a list of options."""
    if isinstance(value, dict):
        return tuple(Choice(str(k).strip(), str(v).strip()) for k, v in value.items())
    if isinstance(value, list) and value:
        if all(isinstance(v, dict) and "label" in v and "text" in v for v in value):
            return tuple(Choice(str(v["label"]).strip(), str(v["text"]).strip()) for v in value)
        if all(isinstance(v, str) for v in value):
            parsed = parse_options("Options:\n" + "\n".join(value))
            return parsed if len(parsed) == len(value) else tuple(Choice(None, v.strip()) for v in value)
    return None


def verify_record(obj: dict, fields: Fields, answer_type: str = "auto", check_steps: bool = True) -> dict | str:
    """The output row for one record, or the reason it is malformed."""
    solution = obj.get(fields.solution)
    if not isinstance(solution, str):
        return (f"missing field {fields.solution!r}" if solution is None
                else f"field {fields.solution!r} must be a string, got {type(solution).__name__}")
    question = obj.get(fields.question)
    if question is not None and not isinstance(question, str):
        return f"field {fields.question!r} must be a string, got {type(question).__name__}"
    options: tuple[Choice, ...] = ()
    if fields.options and obj.get(fields.options) is not None:
        parsed = _options_from(obj[fields.options])
        if parsed is None:
            return f"field {fields.options!r} must be a list of options or a mapping label -> text"
        options = parsed
    elif question:
        options = parse_options(question)
    gold_raw = obj.get(fields.gold) if fields.gold else None
    if isinstance(gold_raw, (list, dict)):
        return f"field {fields.gold!r} must be a string or a number, got {type(gold_raw).__name__}"
    atype = answer_type
    if atype == "auto":
        atype = infer_answer_type(gold_raw, options) if gold_raw is not None else ("option" if options else "numeric")
    if atype == "option" and not options:
        return "answer type option, but the record has no options (in the question or --options-field)"
    gold = parse_gold(gold_raw, atype, options) if gold_raw is not None else None
    if gold_raw is not None and gold is None:
        return f"field {fields.gold!r} ({str(gold_raw)[:80]!r}) is not a {atype} answer" + (
            " among the options" if atype == "option" else "")
    answer = extract_answer(solution, atype, options)
    correct = answers_match(answer, gold, answer_type=atype) if gold is not None else None
    report = steps.check_steps(solution, question) if check_steps else None
    verdict = ("no_gold" if gold is None else "no_answer" if answer is None else
               ("wrong_step" if report is not None and report.step_errors else "correct") if correct else "incorrect")
    return {"question": question, "solution": solution, "gold": None if gold_raw is None else str(gold_raw),
            "answer_type": atype, "gold_answer": gold, "answer": answer, "correct": correct,
            "steps_checked": report.steps_checked if report is not None else None,
            "step_errors": report.step_errors if report is not None else None,
            "first_step_error": report.first_step_error if report is not None else None, "verdict": verdict}


def default_output(path: Path) -> Path:
    return Path.cwd() / f"{path.stem}.verified.parquet"


def quarantine_path_for(out: Path) -> Path:
    return out.with_name(f"{out.stem}.quarantine.jsonl")


def verify_file(path: str | Path, out: str | Path | None = None, fields: Fields = Fields(),
                answer_type: str = "auto", quarantine: str | Path | None = None,
                check_steps: bool = True, limits: ReadLimits | None = None) -> VerifySummary:
    """Check every record of ``path``; write the rows to ``out`` (``.parquet`` or ``.jsonl``)
    and any malformed records to ``quarantine`` (default: beside ``out``)."""
    src = Path(path)
    if not src.exists():
        raise VerifyError(f"{src}: file not found")
    if answer_type != "auto" and answer_type not in ANSWER_TYPES:
        raise VerifyError(f"answer type must be auto or one of {', '.join(ANSWER_TYPES)}, got {answer_type!r}")
    dst = Path(out) if out else default_output(src)
    if dst.suffix.lower() not in (".parquet", ".jsonl"):
        raise VerifyError(f"{dst}: output must end in .parquet or .jsonl")
    if dst.resolve() == src.resolve():
        raise VerifyError(f"{dst}: the output would overwrite the input")
    q_path = Path(quarantine) if quarantine else quarantine_path_for(dst)

    summary = VerifySummary(file=str(src))
    rows: list[dict] = []
    bad: list[Quarantined] = []
    keys_seen: set[str] = set()
    parquet_columns = None
    if src.suffix.lower() == ".parquet":
        try:
            schema = pq.read_schema(src)
            tabular.decode_field_names(schema)
            parquet_columns = schema.names
        except tabular.PARQUET_ERRORS as err:
            raise VerifyError(f"{src}: not a readable Parquet file: {err}") from None
    if parquet_columns is not None and fields.solution not in parquet_columns:
        raise VerifyError(f"{src}: no column {fields.solution!r}; columns: {', '.join(parquet_columns)}")
    for num, obj, error, raw in iter_records(src, limits):
        if obj is None:
            bad.append(Quarantined(str(src), num, error or "unreadable", raw))  # raw cut by Quarantined
            continue
        keys_seen.update(obj)
        result = verify_record(obj, fields, answer_type, check_steps)
        if isinstance(result, str):
            bad.append(Quarantined(str(src), num, result, raw or json.dumps(obj, default=str)[:2 * QUARANTINE_RAW_CHARS]))
            continue
        rows.append({"row": num, **result})
    if not rows and bad and keys_seen and fields.solution not in keys_seen:
        raise VerifyError(f"{src}: no record has field {fields.solution!r}; fields seen: {', '.join(sorted(keys_seen))} "
                          "(name the solution field with --solution-field)")

    summary.rows = len(rows)
    summary.extracted = sum(1 for r in rows if r["answer"] is not None)
    summary.with_gold = sum(1 for r in rows if r["gold_answer"] is not None)
    summary.correct = sum(1 for r in rows if r["correct"])
    summary.wrong_step = sum(1 for r in rows if r["verdict"] == "wrong_step")
    summary.quarantined = len(bad)
    summary.by_type = dict(Counter(r["answer_type"] for r in rows))
    summary.verdicts = {v: n for v in VERDICTS if (n := sum(1 for r in rows if r["verdict"] == v))}
    _write_rows(dst, rows)
    summary.output = str(dst)
    if bad:
        q_path.unlink(missing_ok=True)
        write_quarantine(q_path, bad)
        summary.quarantine_file = str(q_path)
    return summary


def _write_rows(dst: Path, rows: Sequence[dict]) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        if dst.suffix.lower() == ".parquet":
            pq.write_table(pa.Table.from_pylist(list(rows), schema=OUTPUT_SCHEMA), tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
