"""Seed loaders: turn a file of questions into seeds, quarantining malformed lines.

A malformed line never stops a run: it is reported with file, line and reason and set aside
in the run's quarantine file, and the rest of the file loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from dataforge.generate.answers import gold_from_gsm8k

log = logging.getLogger("dataforge.seeds")


@dataclass(frozen=True)
class Seed:
    seed_id: str
    question: str
    gold_answer: str | None
    source: str
    line: int


@dataclass(frozen=True)
class Quarantined:
    file: str
    line: int
    reason: str
    raw: str

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "reason": self.reason, "raw": self.raw}


def seed_id(question: str) -> str:
    return hashlib.sha256(question.strip().encode()).hexdigest()[:16]


def load_gsm8k_jsonl(path: str | Path, question_field: str = "question",
                     answer_field: str = "answer") -> tuple[list[Seed], list[Quarantined]]:
    """Read GSM8K-format JSON lines (``question``, ``answer`` with a final ``#### N``)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"seed file not found: {p}")
    seeds: list[Seed] = []
    bad: list[Quarantined] = []
    seen: set[str] = set()
    with open(p, encoding="utf-8-sig", errors="replace") as f:  # -sig: a byte-order mark is not data
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue

            def reject(reason: str) -> None:
                bad.append(Quarantined(str(p), lineno, reason, raw.rstrip("\n")[:2000]))
                log.warning("%s line %d: %s (quarantined)", p, lineno, reason)

            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                reject(f"not valid JSON: {err.msg} at column {err.colno}")
                continue
            if not isinstance(obj, dict):
                reject(f"expected a JSON object, got {type(obj).__name__}")
                continue
            q = obj.get(question_field)
            if not isinstance(q, str) or not q.strip():
                reject(f"missing or empty string field {question_field!r}")
                continue
            a = obj.get(answer_field)
            if a is not None and not isinstance(a, (str, int, float)):
                reject(f"field {answer_field!r} must be a string or number")
                continue
            gold = gold_from_gsm8k(str(a)) if a is not None else None
            if a is not None and gold is None:
                reject(f"field {answer_field!r} holds no numeric final answer")
                continue
            sid = seed_id(q)
            if sid in seen:
                reject("duplicate question")
                continue
            seen.add(sid)
            seeds.append(Seed(sid, q.strip(), gold, str(p), lineno))
    return seeds, bad


def write_quarantine(path: Path, rows: list[Quarantined]) -> None:
    """Append quarantined rows to a JSON-lines file (created only when there are rows)."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")
