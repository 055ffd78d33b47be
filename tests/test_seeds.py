"""Seed loading: good lines load, malformed lines are quarantined with file, line and reason."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dataforge.generate.seeds import Quarantined, load_gsm8k_jsonl, seed_id, write_quarantine

REPO = Path(__file__).resolve().parents[1]

GOOD_1 = {"question": "Tom has 3 boxes with 24 apples each. How many apples?", "answer": "3 * 24 = 72\n#### 72"}
GOOD_2 = {"question": "A car costs $1,234 more than a bike. The bike costs nothing. What does the car cost?",
          "answer": "The car costs $1,234.\n#### 1,234"}
GOOD_3 = {"question": "  What is half of 9?  ", "answer": 4.5}  # numeric answer, padded question
GOOD_4 = {"question": "Write a poem about rain."}  # no answer: a seed without gold

# (line content, expected reason fragment); None marks a good line or a blank line
LINES: list[tuple[str, str | None]] = [
    (json.dumps(GOOD_1), None),                                                   # 1
    ('{"question": "unterminated", "answer": "#### 1"', "not valid JSON"),        # 2
    ("[1, 2, 3]", "expected a JSON object, got list"),                            # 3
    (json.dumps({"answer": "#### 3"}), "missing or empty string field 'question'"),  # 4
    (json.dumps({"question": "   ", "answer": "#### 3"}), "missing or empty string field 'question'"),  # 5
    ("", None),                                                                   # 6 blank
    (json.dumps({"question": "How many legs has a cat?", "answer": "four, obviously"}),
     "field 'answer' holds no numeric final answer"),                             # 7
    (json.dumps(GOOD_2), None),                                                   # 8
    (json.dumps({"question": GOOD_1["question"] + " ", "answer": "#### 72"}), "duplicate question"),  # 9
    (json.dumps(GOOD_3), None),                                                   # 10
    ("   ", None),                                                                # 11 whitespace only
    (json.dumps({"question": "List?", "answer": ["#### 1"]}), "field 'answer' must be a string or number"),  # 12
    (json.dumps(GOOD_4), None),                                                   # 13
    ('"just a string"', "expected a JSON object, got str"),                       # 14
    (json.dumps({"question": 17, "answer": "#### 1"}), "missing or empty string field 'question'"),  # 15
]


@pytest.fixture
def seed_file(tmp_path) -> Path:
    p = tmp_path / "seeds.jsonl"
    p.write_text("\n".join(line for line, _ in LINES) + "\n", encoding="utf-8")
    return p


def test_good_lines_load_with_gold_and_line_numbers(seed_file):
    seeds, bad = load_gsm8k_jsonl(seed_file)
    assert [(s.line, s.question, s.gold_answer) for s in seeds] == [
        (1, GOOD_1["question"], "72"),
        (8, GOOD_2["question"], "1234"),
        (10, "What is half of 9?", "4.5"),
        (13, GOOD_4["question"], None),
    ]
    assert all(s.source == str(seed_file) for s in seeds)
    assert [s.seed_id for s in seeds] == [seed_id(s.question) for s in seeds]
    assert len({s.seed_id for s in seeds}) == 4


def test_bad_lines_are_quarantined_with_file_line_and_reason(seed_file):
    _, bad = load_gsm8k_jsonl(seed_file)
    expected = [(i, reason) for i, (_, reason) in enumerate(LINES, start=1) if reason]
    assert [q.line for q in bad] == [i for i, _ in expected]
    for q, (lineno, reason) in zip(bad, expected):
        assert q.file == str(seed_file)
        assert reason in q.reason, (lineno, q.reason)
        assert q.raw == LINES[lineno - 1][0]
    # the JSON error says where
    assert "column" in bad[0].reason


def test_warning_names_file_and_line(seed_file, caplog):
    with caplog.at_level(logging.WARNING, logger="dataforge.seeds"):
        load_gsm8k_jsonl(seed_file)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == sum(1 for _, reason in LINES if reason)
    assert any(str(seed_file) in w and "line 3:" in w and "got list" in w for w in warnings), warnings
    assert any("line 9:" in w and "duplicate question" in w for w in warnings), warnings
    assert not any("line 1:" in w or "line 6:" in w for w in warnings)


def test_write_quarantine_appends_json_lines(seed_file, tmp_path):
    _, bad = load_gsm8k_jsonl(seed_file)
    out = tmp_path / "run" / "quarantine" / "cot_seeds.jsonl"
    write_quarantine(out, [])
    assert not out.exists()  # created only when there is something to write
    write_quarantine(out, bad)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"file": q.file, "line": q.line, "reason": q.reason, "raw": q.raw} for q in bad]
    assert set(rows[0]) == {"file", "line", "reason", "raw"}
    write_quarantine(out, bad[:1])
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(bad) + 1
    assert [Quarantined(**r) for r in rows] == bad


def test_custom_field_names(tmp_path):
    p = tmp_path / "custom.jsonl"
    p.write_text(json.dumps({"problem": "What is 6 * 7?", "solution": "#### 42"}) + "\n"
                 + json.dumps({"question": "ignored?", "answer": "#### 1"}) + "\n")
    seeds, bad = load_gsm8k_jsonl(p, question_field="problem", answer_field="solution")
    assert [(s.question, s.gold_answer) for s in seeds] == [("What is 6 * 7?", "42")]
    assert [(q.line, q.reason) for q in bad] == [(2, "missing or empty string field 'problem'")]


def test_shipped_sample_loads_fully():
    path = REPO / "seeds" / "gsm8k_sample.jsonl"
    seeds, bad = load_gsm8k_jsonl(path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert bad == []
    assert len(seeds) == len(lines) > 0
    for s, line in zip(seeds, lines):
        assert s.gold_answer is not None
        assert s.gold_answer == json.loads(line)["answer"].split("####")[-1].strip().replace(",", "")


def test_missing_file_names_the_path(tmp_path):
    p = tmp_path / "no" / "such.jsonl"
    with pytest.raises(FileNotFoundError, match=str(p)):
        load_gsm8k_jsonl(p)


def test_byte_order_mark_is_not_data(tmp_path):
    from dataforge.generate.seeds import load_gsm8k_jsonl

    p = tmp_path / "bom.jsonl"
    p.write_bytes("\ufeff".encode() + b'{"question": "What is 1 + 1?", "answer": "#### 2"}\n')
    seeds, bad = load_gsm8k_jsonl(p)
    assert bad == [] and [s.gold_answer for s in seeds] == ["2"]
