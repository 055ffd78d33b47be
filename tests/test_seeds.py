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
    assert all(s.file == str(seed_file) and s.source == "gsm8k" for s in seeds)
    assert all(s.answer_type == "numeric" and s.options == () and s.record is None for s in seeds)
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


# --- the other formats ---------------------------------------------------------------------

from dataforge.generate.answers import Choice  # noqa: E402
from dataforge.generate.seeds import (SeedFormatError, detect_format, load_aqua_jsonl, load_arith_json,  # noqa: E402
                                      load_commonsenseqa_jsonl, load_flan_tsv, load_seed_file, load_seeds,
                                      load_strategyqa_json, load_svamp_json)


def test_duplicate_names_where_it_was_first_seen(seed_file):
    _, bad = load_gsm8k_jsonl(seed_file)
    dup = next(q for q in bad if q.line == 9)
    assert dup.reason == f"duplicate question (first seen at {seed_file}:1)"


FLAN_LINES = [
    # AQuA: lettered options in the question, letter answer in parentheses
    "A pen costs 2. What do 6 cost?\\nOptions:\\n(A) 10\\n(B) 12\\n(C) 14\t(B)\t6 * 2 = 12",
    # ECQA: unlabelled options, the answer is the option's text
    "Where is milk kept cold?\\nOptions:\\n- oven\\n- refrigerator\\n- cupboard\trefrigerator\tFridges are cold.",
    # CREAK: yes/no options
    "Is the sky green?\\nOptions:\\n- yes\\n- no\tno\tThe sky is blue.",
    # StrategyQA: no options, yes/no answer
    "Can a fish climb a tree?\tno\tFish have no legs.",
    # QASC: "- (A) text" items
    "What do plants need?\\nOptions:\\n- (A) light\\n- (B) rocks\t(A)\tPlants need light.",
    # Sense-making: "- Sentence A: ..." items
    "Which is against common sense?\\nOptions:\\n- Sentence A: \"He ate a shoe.\"\\n- Sentence B: \"He ate a pie.\"\\n"
    "\tSentence A\tShoes are not food.",
    "only two\tfields",                                                          # 7: wrong field count
    "Pick one\\nOptions:\\n(A) 1\\n(B) 2\t(D)\tno such option",                  # 8: answer not an option
    "\tyes\tno question",                                                       # 9: empty question
    "",                                                                           # 10: blank
    "How many legs has a cat?\t4\tCats have four legs.",                        # 11: numeric, no options
    "Can a fish climb a tree?\tyes\tagain",                                     # 12: duplicate of 4
]


@pytest.fixture
def flan_file(tmp_path) -> Path:
    p = tmp_path / "mixed_train.tsv"
    p.write_text("\n".join(FLAN_LINES) + "\n", encoding="utf-8")
    return p


def test_flan_tsv_types_options_and_gold(flan_file):
    seeds, bad = load_flan_tsv(flan_file)
    got = [(s.line, s.answer_type, s.gold_answer) for s in seeds]
    assert got == [(1, "option", "B"), (2, "option", "refrigerator"), (3, "yesno", "no"), (4, "yesno", "no"),
                   (5, "option", "A"), (6, "option", "Sentence A"), (11, "numeric", "4")]
    assert all(s.source == "flan_mixed" for s in seeds)
    aqua = seeds[0]
    assert aqua.options == (Choice("A", "10"), Choice("B", "12"), Choice("C", "14"))
    assert aqua.question == "A pen costs 2. What do 6 cost?\nOptions:\n(A) 10\n(B) 12\n(C) 14"  # \n unescaped
    assert seeds[1].options == (Choice(None, "oven"), Choice(None, "refrigerator"), Choice(None, "cupboard"))
    assert seeds[2].options == ()  # yes/no options make a yes/no question
    assert [(c.label, c.text) for c in seeds[5].options] == [("Sentence A", '"He ate a shoe."'),
                                                             ("Sentence B", '"He ate a pie."')]
    assert [(q.line, q.reason) for q in bad] == [
        (7, "expected 3 tab-separated fields (question, answer, rationale), got 2"),
        (8, "answer '(D)' (field 2) is not one of the options (A, B)"),
        (9, "empty question (field 1)"),
        (12, f"duplicate question (first seen at {flan_file}:4)"),
    ]


ARITH = [
    {"iIndex": 1, "sQuestion": "Joan had 70 shells. She gave away 27. How many are left? ", "lSolutions": ["43"]},
    {"iIndex": 2, "sQuestion": "A pie has 8 slices. 2 pies?", "lSolutions": [16.0]},
    {"iIndex": 3, "sQuestion": "", "lSolutions": [1.0]},
    {"iIndex": 4, "sQuestion": "No solution given?", "lSolutions": []},
    [1, 2],
    {"iIndex": 6, "sQuestion": "Half of 5?", "lSolutions": [2.5]},
]


def test_arith_json_array_records_have_lines_and_indices(tmp_path):
    p = tmp_path / "multiarith.json"
    p.write_text(json.dumps(ARITH, indent=2))
    seeds, bad = load_arith_json(p, "multiarith")
    assert [(s.record, s.gold_answer, s.source) for s in seeds] == [(0, "43", "multiarith"), (1, "16", "multiarith"),
                                                                    (5, "2.5", "multiarith")]
    assert seeds[0].question == "Joan had 70 shells. She gave away 27. How many are left?"
    text_lines = p.read_text().splitlines()
    for s in seeds:  # the line is where the record starts
        assert text_lines[s.line - 1].strip() == "{"
        assert f'"iIndex": {ARITH[s.record]["iIndex"]}' in text_lines[s.line]
    assert [(q.record, q.reason) for q in bad] == [
        (2, "missing or empty string field 'sQuestion'"),
        (3, "field 'lSolutions' holds no number (got null)"),
        (4, "expected a JSON object, got list"),
    ]
    assert bad[2].line == 28 and bad[2].raw.replace(" ", "").replace("\n", "") == "[1,2]"


def test_truncated_json_array_keeps_the_records_before_the_break(tmp_path):
    p = tmp_path / "addsub.json"
    full = json.dumps(ARITH[:2], indent=1)
    p.write_text(full[: full.rindex("}") - 3])  # cut inside the second record
    seeds, bad = load_arith_json(p, "addsub")
    assert [s.gold_answer for s in seeds] == ["43"]
    assert len(bad) == 1 and bad[0].record == 1
    assert bad[0].reason.startswith("not valid JSON: ") and "the rest of the file cannot be read" in bad[0].reason


def test_json_array_expected(tmp_path):
    p = tmp_path / "singleeq.json"
    p.write_text('{"a": 1}')
    with pytest.raises(SeedFormatError, match=r"singleeq.json line 1: expected a JSON array of records, found an object"):
        load_arith_json(p, "singleeq")


def test_svamp(tmp_path):
    p = tmp_path / "svamp.json"
    p.write_text(json.dumps([
        {"ID": "chal-1", "Body": "Each pack costs 76 dollars. There is a discount of 25 dollars",
         "Question": "How much do you pay?", "Equation": "( 76.0 - 25.0 )", "Answer": 51.0},
        {"ID": "chal-2", "Body": "x", "Question": "y?", "Answer": "many"},
        {"ID": "chal-3", "Question": "No body?", "Answer": 1.0},
    ]))
    seeds, bad = load_svamp_json(p)
    assert [(s.question, s.gold_answer) for s in seeds] == [
        ("Each pack costs 76 dollars. There is a discount of 25 dollars How much do you pay?", "51")]
    assert [(q.record, q.reason) for q in bad] == [(1, "field 'Answer' holds no number (got \"many\")"),
                                                  (2, "missing or empty string field 'Body' and 'Question'")]


def test_aqua_jsonl(tmp_path):
    p = tmp_path / "aqua_test.json"
    p.write_text("\n".join([
        json.dumps({"question": "Two trains ... how far?", "options": ["A)21", "B)21.5", "C)22", "D)22.5", "E)23"],
                    "rationale": "...", "correct": "B"}),
        json.dumps({"question": "Bad options", "options": "A)1 B)2", "correct": "A"}),
        json.dumps({"question": "Wrong letter", "options": ["A)1", "B)2"], "correct": "E"}),
        json.dumps({"question": "Odd item", "options": ["A)1", "two"], "correct": "A"}),
    ]) + "\n")
    seeds, bad = load_aqua_jsonl(p)
    assert len(seeds) == 1
    s = seeds[0]
    assert s.question == "Two trains ... how far?\nAnswer Choices: (A) 21 (B) 21.5 (C) 22 (D) 22.5 (E) 23"
    assert (s.answer_type, s.gold_answer, s.source, len(s.options)) == ("option", "B", "aqua", 5)
    assert [(q.line, q.reason.split(" (")[0]) for q in bad] == [
        (2, "field 'options' must be a non-empty list of strings like \"A)21\""),
        (3, "field 'correct'"),
        (4, "field 'options' has an item that is not \"<letter>)<text>\""),
    ]


def test_commonsenseqa(tmp_path):
    good = {"answerKey": "A", "id": "x", "question": {"question_concept": "door", "stem": "A revolving door is at a what?",
            "choices": [{"label": "A", "text": "bank"}, {"label": "B", "text": "library"}]}}
    p = tmp_path / "commonsenseqa_dev.jsonl"
    p.write_text("\n".join([json.dumps(good), json.dumps({**good, "answerKey": "Z"}),
                            json.dumps({"answerKey": "A", "question": {"stem": "no choices"}})]) + "\n")
    seeds, bad = load_commonsenseqa_jsonl(p)
    assert [(s.question, s.gold_answer, s.answer_type) for s in seeds] == [
        ("A revolving door is at a what?\nAnswer Choices: (A) bank (B) library", "A", "option")]
    assert [(q.line, q.reason) for q in bad] == [
        (2, "field 'answerKey' ('Z') is not one of the choice labels"),
        (3, "field 'question.choices' must be a list of {label, text}"),
    ]


def test_strategyqa_task_json_and_plain_array(tmp_path):
    examples = [{"input": "Is frost common at commencements?", "target_scores": {"Yes": 1, "No": 0}, "target": "Yes."},
                {"input": "Do fish sing?", "target_scores": {"Yes": 0, "No": 1}, "target": "No."},
                {"input": "Broken scores?", "target_scores": {"Yes": 1, "No": 1}}]
    p = tmp_path / "strategyqa_task.json"
    p.write_text(json.dumps({"canary": "x", "name": "strategyqa", "examples": examples}, indent=1))
    seeds, bad = load_strategyqa_json(p)
    assert [(s.gold_answer, s.answer_type, s.record) for s in seeds] == [("yes", "yesno", 0), ("no", "yesno", 1)]
    assert [(q.record, q.reason) for q in bad] == [(2, "field 'target_scores' must be {\"Yes\": 0|1, \"No\": 1|0}")]
    p2 = tmp_path / "strategyqa_plain.json"
    p2.write_text(json.dumps(examples[:2]))
    assert [s.gold_answer for s in load_strategyqa_json(p2)[0]] == ["yes", "no"]
    p3 = tmp_path / "strategyqa_other.json"
    p3.write_text(json.dumps({"data": examples}))
    with pytest.raises(SeedFormatError, match="expected a top-level object with an 'examples' array"):
        load_strategyqa_json(p3)


@pytest.mark.parametrize("name, fmt", [
    ("gsm8k_sample.jsonl", "gsm8k"), ("train.jsonl", "gsm8k"), ("aqua_train.tsv", "flan_tsv"),
    ("multiarith.json", "multiarith"), ("AddSub.json", "addsub"), ("singleeq.json", "singleeq"),
    ("svamp.json", "svamp"), ("aqua_test.jsonl", "aqua"), ("commonsenseqa_dev.jsonl", "commonsenseqa"),
    ("csqa.jsonl", "commonsenseqa"), ("strategyqa_task.json", "strategyqa"),
])
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt


def test_undetectable_format_says_what_to_set():
    with pytest.raises(SeedFormatError, match=r"questions.json: cannot tell the seed format.*cot.seed_format"):
        detect_format("questions.json")


def test_load_seeds_globs_formats_and_cross_file_duplicates(tmp_path, flan_file):
    g = tmp_path / "more.jsonl"
    g.write_text(json.dumps({"question": "What is 6 * 7?", "answer": "#### 42"}) + "\n"
                 + json.dumps({"question": "Can a fish climb a tree?", "answer": "#### 0"}) + "\n")
    seeds, bad = load_seeds([str(tmp_path / "*.tsv"), g])
    assert [s.source for s in seeds][-1] == "gsm8k" and seeds[-1].gold_answer == "42"
    assert len(seeds) == 8
    cross = [q for q in bad if q.file == str(g)]
    assert [(q.line, q.reason) for q in cross] == [(2, f"duplicate question (first seen at {flan_file}:4)")]
    with pytest.raises(FileNotFoundError, match="seed pattern matches no file"):
        load_seeds([str(tmp_path / "*.nothing")])
    with pytest.raises(FileNotFoundError, match="seed file not found"):
        load_seeds([tmp_path / "absent.jsonl"])


def test_explicit_format_overrides_the_name(tmp_path):
    p = tmp_path / "svamp_like_but_gsm8k.jsonl"
    p.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "#### 4"}) + "\n")
    with pytest.raises(SeedFormatError):
        load_seed_file(p)  # auto: the name says svamp, a JSON array; the file is lines
    seeds, bad = load_seed_file(p, "gsm8k")
    assert [s.gold_answer for s in seeds] == ["4"] and bad == []


def test_quarantine_of_json_array_records_carries_the_index(tmp_path):
    p = tmp_path / "addsub.json"
    p.write_text(json.dumps([{"sQuestion": "ok?", "lSolutions": [1]}, {"sQuestion": 5}]))
    _, bad = load_arith_json(p, "addsub")
    out = tmp_path / "q.jsonl"
    write_quarantine(out, bad)
    row = json.loads(out.read_text())
    assert row["record"] == 1 and row["line"] == 1 and row["reason"] == "missing or empty string field 'sQuestion'"


# --- the real files ------------------------------------------------------------------------

# file → (seeds, quarantined, answer types). The quarantined records are the data sets' own
# repeats: MultiArith repeats 20 questions, each StrategyQA copy one (each is kept once). ECQA
# lists the right option twice in 32 questions: that is one answer, not a malformed row.
REAL = {
    "gsm8k/train.jsonl": (7473, 0, {"numeric"}),
    "gsm8k/test.jsonl": (1319, 0, {"numeric"}),
    "flan_cot/aqua_train.tsv": (2728, 0, {"option"}),
    "flan_cot/creak_train.tsv": (6915, 0, {"yesno"}),
    "flan_cot/ecqa_train.tsv": (7112, 0, {"option"}),
    "flan_cot/qasc_train.tsv": (1084, 0, {"option"}),
    "flan_cot/sensemaking_train.tsv": (6070, 0, {"option"}),
    "flan_cot/strategyqa_train.tsv": (2060, 1, {"yesno"}),
    "reasoning/multiarith.json": (580, 20, {"numeric"}),
    "reasoning/addsub.json": (395, 0, {"numeric"}),
    "reasoning/singleeq.json": (508, 0, {"numeric"}),
    "reasoning/svamp.json": (1000, 0, {"numeric"}),
    "reasoning/commonsenseqa_dev.jsonl": (1221, 0, {"option"}),
    "reasoning/strategyqa_task.json": (2289, 1, {"yesno"}),
}


@pytest.mark.shared_data
@pytest.mark.parametrize("rel", sorted(REAL))
def test_real_seed_files_load(shared_data, rel):
    path = shared_data / rel
    if not path.exists():
        pytest.skip(f"{path} is absent")
    seeds, bad = load_seed_file(path)
    n, n_bad, types = REAL[rel]
    assert (len(seeds), len(bad)) == (n, n_bad), [q.reason for q in bad[:3]]
    assert {s.answer_type for s in seeds} == types
    assert all(s.gold_answer is not None for s in seeds)
    assert all(q.reason.startswith("duplicate question (first seen at ") for q in bad)
    for s in seeds:
        if s.answer_type == "option":
            assert s.gold_answer in {o.key for o in s.options}
            assert len(s.options) >= 2
