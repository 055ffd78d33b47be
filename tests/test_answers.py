"""Final-answer extraction and matching; self-consistency votes and the keep/drop verdict."""

from __future__ import annotations

import json

import pytest

from dataforge.generate.answers import answers_match, extract_final_answer, gold_from_gsm8k, normalize_number
from dataforge.generate.cot import add_votes, verdict

from conftest import shared_data_dir


@pytest.mark.parametrize("text, expected", [
    ("Each box has 24 apples.\n3 * 24 = 72\n#### 72", "72"),
    ("#### 1,234", "1234"),
    ("The answer is 12.", "12"),
    ("so the answer is $5.50", "5.5"),
    ("Thus \\boxed{42} is our result.", "42"),
    ("The answer is 3/4", "0.75"),
    ("The answer is -7.", "-7"),
    ("#### -3", "-3"),
    ("He owes -$15 in the end. The answer is -$15.", "-15"),
    ("The answer is 12 apples.", "12"),
    ("The answer is: 9", "9"),
    ("Final answer = 0.5", "0.5"),
    ("The answer is 12,000.", "12000"),
    ("THE ANSWER IS 8", "8"),
    ("The answer is $12,345.67.", "12345.67"),
])
def test_extract_marked_answers(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    # #### wins over a later "answer is" and later numbers
    ("#### 40\nThe answer is 7. Bonus: 99", "40"),
    # \boxed wins over "the answer is"
    ("The answer is 5, i.e. \\boxed{6}", "6"),
    # the last "answer is" wins over earlier ones and over later bare numbers
    ("First I thought the answer is 3. Actually the answer is 4. It took 10 minutes.", "4"),
    # several #### lines: the last one
    ("#### 1\n#### 2", "2"),
])
def test_order_of_preference(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("She had 5 apples and bought 3 more, so 5 + 3 = 8 apples in total.", "8"),
    ("It is 10 - 4 = 6", "6"),
    ("That costs $2.25 per pound.", "2.25"),
])
def test_last_number_fallback(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize("text", [None, "", "I do not know.", "The answer is unclear", "\\boxed{x}"])
def test_no_number_gives_none(text):
    assert extract_final_answer(text) is None


@pytest.mark.parametrize("raw, expected", [
    ("$1,234.50", "1234.5"), ("3/4", "0.75"), (" 7 ", "7"), ("7.", "7"), ("-0.25", "-0.25"),
    ("1/0", None), ("abc", None), ("", None), ("4/2", "2"), ("1234567.5", "1234567.5"),
])
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_answers_match_tolerance_and_mismatch():
    assert answers_match("72", "72")
    assert answers_match("72.0", "72")
    assert answers_match("0.75", "0.75")
    assert answers_match("0.3333333", "0.33333333")  # within 1e-6 of max(1, |gold|)
    assert not answers_match("0.333", "0.33333333")
    assert answers_match("1000000.5", "1000000")  # relative: 0.5 <= 1e-6 * 1e6
    assert not answers_match("1000002", "1000000")
    assert not answers_match("71", "72")
    assert not answers_match("-72", "72")
    assert not answers_match(None, "72")
    assert not answers_match("72", None)
    assert answers_match("Yes", "yes")  # non-numbers compare as text
    assert not answers_match("yes", "no")
    assert answers_match("5", "5", rel_tol=0)
    assert answers_match("5.1", "5", rel_tol=0.05)
    # normalization must not round: 12345.7 is not 12345.67 (0.03 is beyond 1e-6 * 12345.67)
    a = extract_final_answer("The answer is $12,345.70")
    g = gold_from_gsm8k("#### 12,345.67")
    assert not answers_match(a, g)
    assert answers_match(extract_final_answer("The answer is 12345.67"), g)


def test_gold_from_gsm8k():
    assert gold_from_gsm8k("She paid 2 * 36 = <<2*36=72>>72 dollars.\n#### 72") == "72"
    assert gold_from_gsm8k("#### 1,000") == "1000"
    assert gold_from_gsm8k("#### -5") == "-5"
    assert gold_from_gsm8k("12") == "12"
    assert gold_from_gsm8k("$3.50") == "3.5"
    assert gold_from_gsm8k("x #### 1 #### 2") == "2"
    assert gold_from_gsm8k("about 12 apples") is None  # not a bare answer, no ####
    assert gold_from_gsm8k("#### twelve") is None


@pytest.mark.shared_data
def test_extractor_recovers_gold_from_every_gsm8k_solution(shared_data):
    files = [shared_data / "gsm8k" / "train.jsonl", shared_data / "gsm8k" / "test.jsonl"]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        pytest.skip(f"GSM8K files absent under {shared_data_dir()}: {missing}")
    total, failures = 0, []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                obj = json.loads(line)
                total += 1
                gold = gold_from_gsm8k(obj["answer"])
                got = extract_final_answer(obj["answer"])
                if gold is None or got != gold:
                    failures.append((f.name, lineno, gold, got))
    assert total == 8792
    assert failures == [], f"{len(failures)} of {total} failed, first: {failures[:5]}"


# --- self-consistency and verdict ----------------------------------------------------------

def test_add_votes_counts_within_each_question():
    answers = {"A": ["12", "12", "7", None], "B": ["12"], "C": ["3", "3", "3", "3"]}
    rows = [{"seed_id": s, "answer": a, "i": i} for s, xs in answers.items() for i, a in enumerate(xs)]
    rows.append(rows.pop(1))  # interleaved order must not matter
    add_votes(rows, k=4)
    got = {(r["seed_id"], r["i"]): (r["votes"], r["agreement"]) for r in rows}
    assert got == {
        ("A", 0): (2, 0.5), ("A", 1): (2, 0.5), ("A", 2): (1, 0.25), ("A", 3): (0, 0.0),
        ("B", 0): (1, 0.25),  # the "12"s of question A do not count for B
        ("C", 0): (4, 1.0), ("C", 1): (4, 1.0), ("C", 2): (4, 1.0), ("C", 3): (4, 1.0),
    }


def test_add_votes_all_missing_answers():
    rows = [{"seed_id": "A", "answer": None}, {"seed_id": "A", "answer": None}]
    add_votes(rows, k=2)
    assert [(r["votes"], r["agreement"]) for r in rows] == [(0, 0.0), (0, 0.0)]


@pytest.mark.parametrize("row, keep, expected", [
    ({"gold_answer": "72", "answer": "72", "answer_correct": True}, "verified", None),
    ({"gold_answer": "72", "answer": "71", "answer_correct": False}, "verified", "answer_mismatch"),
    ({"gold_answer": "72", "answer": None, "answer_correct": None, "finish_reason": "stop"}, "verified",
     "no_final_answer"),
    ({"gold_answer": "72", "answer": None, "answer_correct": None, "finish_reason": "length"}, "verified",
     "truncated_no_final_answer"),
    ({"gold_answer": None, "answer": "5", "answer_correct": None}, "verified", None),
    ({"gold_answer": "72", "answer": "71", "answer_correct": False}, "all", None),
    ({"gold_answer": "72", "answer": None, "answer_correct": None, "finish_reason": "length"}, "all", None),
])
def test_verdict(row, keep, expected):
    assert verdict(row, keep) == expected
