"""Inputs that cannot take a process down (issue 13, part 3).

Probes: a small Parquet file that decompresses to far more than it holds (a zstd "bomb" and a
dictionary bomb the footer does not see), a JSON line nested 100k deep, over-long lines,
invalid UTF-8, and 1 MB adversarial teacher replies fed to every scanner of teacher text with
a time bound. Every probe failed on the code before the read limits and the linear scanners
(see the report of issue 13): Parquet bombs were read whole, deep nesting raised
RecursionError for the whole file, invalid UTF-8 was replaced silently, the raw text of a
quarantined line was kept whole (or cut at 2000 characters without saying so), and answer
extraction took from seconds to minutes on the replies below.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataforge.generate import answers, gates, steps, synthesis
from dataforge.generate import seeds as S
from dataforge.generate.answers import Choice
from dataforge.generate.textbooks import PassageError, load_passages
from dataforge.generate.verify import Fields, VerifyError, verify_file
from dataforge.select import judge
from dataforge.tabular import (
    QUARANTINE_RAW_CHARS,
    InputError,
    Quarantined,
    ReadLimits,
    iter_records,
    read_text_table,
    write_quarantine,
)

MiB = 1 << 20


# --- Parquet bombs -----------------------------------------------------------------------------

def _dictionary_bomb(path: Path, value_bytes: int, rows: int) -> Path:
    """One repetitive string, dictionary-encoded, repeated ``rows`` times: a few KB on disk, a
    footer that counts the dictionary once, ``value_bytes * rows`` once decoded. Written from
    a DictionaryArray, so building it never holds the decoded column."""
    col = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["a" * value_bytes]))
    pq.write_table(pa.table({"text": col, "answer": pa.array(["5"] * rows)}), path, compression="zstd",
                   use_dictionary=True)
    return path


def _zstd_bomb(path: Path, value_bytes: int, rows: int) -> Path:
    """The same without a dictionary: the footer's uncompressed sizes give it away."""
    col = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["a" * value_bytes]))
    pq.write_table(pa.table({"text": col.dictionary_decode()}), path, compression="zstd", use_dictionary=False)
    return path


def test_dictionary_bomb_is_refused_before_it_is_decoded(tmp_path):
    p = _dictionary_bomb(tmp_path / "bomb.parquet", MiB, 200)  # 200 MiB decoded
    assert p.stat().st_size < 8 * 1024
    md = pq.ParquetFile(p).metadata
    footer = sum(md.row_group(0).column(c).total_uncompressed_size for c in range(md.num_columns))
    limits = ReadLimits(max_bytes=50 * MiB)
    assert footer < limits.max_bytes  # the footer does not see it: the batches' sizes do
    with pytest.raises(InputError, match=r"bomb\.parquet: decoded size.*over the limit of 52,428,800 "
                                         r"\(DATAFORGE_MAX_INPUT_BYTES\)"):
        read_text_table(p, limits=limits)
    with pytest.raises(InputError, match="DATAFORGE_MAX_INPUT_BYTES"):
        list(iter_records(p, limits=limits))
    with pytest.raises(VerifyError, match="DATAFORGE_MAX_INPUT_BYTES"):
        verify_file(p, tmp_path / "out.parquet", Fields(solution="text"), limits=limits)
    with pytest.raises(PassageError, match="DATAFORGE_MAX_INPUT_BYTES"):
        load_passages(p, limits=limits)


def test_zstd_bomb_is_refused_from_the_footer(tmp_path):
    p = _zstd_bomb(tmp_path / "bomb.parquet", MiB, 120)  # 120 MiB, zstd to a few KB
    assert p.stat().st_size < 64 * 1024
    with pytest.raises(InputError, match=r"uncompressed size in bytes 125,\d+,\d+, over the limit of 104,857,600"):
        read_text_table(p, limits=ReadLimits(max_bytes=100 * MiB))


def test_default_limit_refuses_a_bomb_bigger_than_it(tmp_path, monkeypatch):
    for env in ("DATAFORGE_MAX_INPUT_BYTES", "DATAFORGE_MAX_INPUT_ROWS", "DATAFORGE_MAX_VALUE_BYTES"):
        monkeypatch.delenv(env, raising=False)
    default = ReadLimits()
    rows = default.max_bytes // default.max_value_bytes + 8  # values at the value limit, total over 4 GiB
    p = _dictionary_bomb(tmp_path / "big.parquet", default.max_value_bytes, rows)
    assert p.stat().st_size < 64 * 1024
    with pytest.raises(InputError, match="over the limit of 4,294,967,296"):
        read_text_table(p)
    with pytest.raises(VerifyError, match="DATAFORGE_MAX_INPUT_BYTES"):
        verify_file(p, tmp_path / "out.parquet", Fields(solution="text"))


def test_limits_come_from_the_environment(tmp_path, monkeypatch):
    p = _dictionary_bomb(tmp_path / "bomb.parquet", 64 * 1024, 200)  # 12.5 MiB
    read_text_table(p)  # within the defaults
    monkeypatch.setenv("DATAFORGE_MAX_INPUT_BYTES", "10_000_000")
    with pytest.raises(InputError, match="over the limit of 10,000,000"):
        read_text_table(p)
    monkeypatch.setenv("DATAFORGE_MAX_INPUT_BYTES", "lots")
    with pytest.raises(InputError, match="DATAFORGE_MAX_INPUT_BYTES='lots'"):
        read_text_table(p)


def test_parquet_rows_over_the_limit(tmp_path):
    p = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": pa.array(["x"] * 5000)}), p)
    with pytest.raises(InputError, match=r"rows 5,000, over the limit of 1,000 \(DATAFORGE_MAX_INPUT_ROWS\)"):
        read_text_table(p, limits=ReadLimits(max_rows=1000))


def test_parquet_value_over_the_limit_is_quarantined(tmp_path):
    p = tmp_path / "values.parquet"
    pq.write_table(pa.table({"text": ["short", "x" * 5000, "also short"], "answer": ["1", "2", "3"]}), p)
    lim = ReadLimits(max_value_bytes=1000)
    table, bad = read_text_table(p, limits=lim)
    assert table.column("text").to_pylist() == ["short", "also short"]
    assert table.column("source_row").to_pylist() == [1, 3]
    assert [(q.line, q.reason) for q in bad] == [
        (2, "value of column 'text' is 5,000 bytes, over the limit of 1,000 (DATAFORGE_MAX_VALUE_BYTES)")]
    recs = list(iter_records(p, limits=lim))
    assert [(n, r is None, e is not None) for n, r, e, _ in recs] == [(1, False, False), (2, True, True), (3, False, False)]
    passages, pbad = load_passages(p, limits=lim)
    assert [x.line for x in passages] == [1, 3] and [q.line for q in pbad] == [2]


def test_bomb_rss_stays_small(tmp_path):
    """The review's probe: a ~1 KB file through ``cot verify`` (2.8 GB RSS before); refused
    with the process still small (a child process, so the figure is its own)."""
    import subprocess
    import sys
    p = _dictionary_bomb(tmp_path / "bomb.parquet", MiB, 1000)  # 1000 MiB decoded
    code = ("import sys\n"
            "from dataforge.generate.verify import Fields, verify_file, VerifyError\n"
            "from dataforge.tabular import ReadLimits\n"
            f"try:\n    verify_file({str(p)!r}, {str(tmp_path / 'o.parquet')!r}, Fields(solution='text'), limits=ReadLimits(max_bytes=256 << 20))\n"
            "except VerifyError as e:\n    print('refused', e, file=sys.stderr)\n"
            # VmHWM, not ru_maxrss: Linux keeps the forking parent's ru_maxrss across exec
            "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert "refused" in out.stderr, out.stderr
    assert int(out.stdout.strip()) < 600 * 1024  # KiB: well under the 1 GB the file decodes to


# --- JSON lines: nesting, long lines, invalid UTF-8 ----------------------------------------------

def _jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


GOOD = [b'{"text": "first", "question": "What is 2+2?", "answer": "4", "solution": "2+2=4. The answer is 4."}',
        b'{"text": "third", "question": "What is 3+3?", "answer": "6", "solution": "3+3=6. The answer is 6."}']
DEEP = b"[" * 100_000


def test_deep_nesting_is_quarantined_and_the_rest_is_read(tmp_path):
    p = _jsonl(tmp_path / "deep.jsonl", [GOOD[0], DEEP, b'{"text": ' + b'{"a": ' * 70_000 + b"1", GOOD[1]])
    table, bad = read_text_table(p)
    assert table.column("text").to_pylist() == ["first", "third"]
    assert [(q.line, q.reason) for q in bad] == [
        (2, "JSON nested deeper than 64 levels (DATAFORGE_MAX_JSON_DEPTH)"),
        (3, "JSON nested deeper than 64 levels (DATAFORGE_MAX_JSON_DEPTH)")]
    assert all(len(q.raw) < QUARANTINE_RAW_CHARS + 100 for q in bad)
    summary = verify_file(p, tmp_path / "out.jsonl")
    assert summary.rows == 2 and summary.quarantined == 2
    passages, pbad = load_passages(p)
    assert len(passages) == 2 and [q.line for q in pbad] == [2, 3]
    seeds, sbad = S.load_seed_file(p, "gsm8k")
    assert len(seeds) == 2 and [q.line for q in sbad] == [2, 3]


def test_nesting_within_the_limit_is_read(tmp_path):
    line = b'{"text": "ok", "x": ' + b"[" * 60 + b"]" * 60 + b', "s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}'
    table, bad = read_text_table(_jsonl(tmp_path / "ok.jsonl", [line]))
    assert bad == [] and table.column("text").to_pylist() == ["ok"]


def test_deep_json_array_seed_record_is_quarantined(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text('[{"sQuestion": "What is 1+1?", "lSolutions": [2]}, ' + "[" * 100_000 + "]")
    seeds, bad = S.load_seed_file(p, "multiarith")
    assert len(seeds) == 1 and "nested too deeply" in bad[0].reason


def test_long_line_is_quarantined_cut(tmp_path, monkeypatch):
    long = b'{"text": "' + b"x" * (3 * MiB) + b'"}'
    p = _jsonl(tmp_path / "long.jsonl", [GOOD[0], long, GOOD[1]])
    lim = ReadLimits(max_value_bytes=MiB)
    table, bad = read_text_table(p, limits=lim)
    assert table.column("text").to_pylist() == ["first", "third"]
    (q,) = bad
    assert q.line == 2
    assert q.reason == (f"line of {len(long) + 1:,} bytes, over the limit of 1,048,576 bytes for one record "
                        "(DATAFORGE_MAX_VALUE_BYTES)")
    assert q.raw.startswith('{"text": "xxx') and q.raw.endswith("characters in all]")
    assert len(q.raw) < QUARANTINE_RAW_CHARS + 100
    monkeypatch.setenv("DATAFORGE_MAX_VALUE_BYTES", str(MiB))  # the loaders without a limits argument
    _, sbad = S.load_seed_file(p, "gsm8k")
    assert [q.line for q in sbad] == [2] and "DATAFORGE_MAX_VALUE_BYTES" in sbad[0].reason


def test_jsonl_rows_and_size_over_the_limit(tmp_path):
    p = _jsonl(tmp_path / "many.jsonl", [b'{"text": "x%d"}' % i for i in range(50)])
    with pytest.raises(InputError, match=r"more than 10 records \(line 11\).*DATAFORGE_MAX_INPUT_ROWS"):
        read_text_table(p, limits=ReadLimits(max_rows=10))
    with pytest.raises(InputError, match=r"size in bytes .* over the limit of 100 \(DATAFORGE_MAX_INPUT_BYTES\)"):
        read_text_table(p, limits=ReadLimits(max_bytes=100))


def test_invalid_utf8_in_a_json_line_is_quarantined(tmp_path):
    p = _jsonl(tmp_path / "bad.jsonl", [GOOD[0], b'{"text": "caf\xe9 \xff\xfe"}', GOOD[1]])
    table, bad = read_text_table(p)
    assert table.column("text").to_pylist() == ["first", "third"]
    assert [(q.line, q.reason) for q in bad] == [(2, "invalid UTF-8 (3 byte sequences that are not UTF-8)")]
    assert "\ufffd" in bad[0].raw
    summary = verify_file(p, tmp_path / "out.jsonl")
    assert summary.quarantined == 1


def test_invalid_utf8_in_other_text_is_counted(tmp_path, caplog):
    p = tmp_path / "cot.tsv"
    p.write_bytes(b"What is 1+1?\t2\tOne and one.\nWhat is 2+\xff2?\t4\tTwo and two.\n"
                  b"What is \xfe3+3?\t6\tThree and three.\n")
    with caplog.at_level(logging.WARNING):
        seeds, bad = S.load_seed_file(p, "flan_tsv")
    assert len(seeds) == 3 and not bad
    assert any("2 lines with invalid UTF-8" in r.getMessage() and "cot.tsv" in r.getMessage() for r in caplog.records)


def test_crlf_and_cr_line_endings_and_bom(tmp_path):
    p = tmp_path / "endings.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"text": "a"}\r\n{"text": "b"}\r{"text": "c"}\n')
    table, bad = read_text_table(p)
    assert bad == [] and table.column("text").to_pylist() == ["a", "b", "c"]
    assert table.column("source_row").to_pylist() == [1, 2, 3]


def test_quarantined_raw_text_is_cut_with_its_length(tmp_path):
    q = Quarantined("f.jsonl", 3, "why", "y" * (1 << 20))
    assert len(q.raw) < QUARANTINE_RAW_CHARS + 100 and q.raw_length == 1 << 20
    write_quarantine(tmp_path / "q.jsonl", [q, Quarantined("f.jsonl", 4, "short", "abc")])
    rows = [json.loads(x) for x in (tmp_path / "q.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0]["raw_length"] == 1 << 20 and rows[0]["raw"].endswith("[cut: 1,048,576 characters in all]")
    assert rows[1] == {"file": "f.jsonl", "line": 4, "reason": "short", "raw": "abc"}


# --- teacher replies: linear scanners ------------------------------------------------------------

MB = 1 << 20


def _fill(unit: str, tail: str = "") -> str:
    return (unit * (MB // len(unit) + 1))[:MB - len(tail)] + tail


ADVERSARIAL = {
    "newlines": _fill("\n", "The answer is 5. #### 5"),
    "x_newlines": _fill("x\n"),
    "unclosed_boxed": _fill("\\boxed{"),
    "unclosed_boxed_number": _fill("\\boxed{1 "),
    "nested_boxed": "\\boxed{" * 50_000 + "1" + "}" * 50_000,
    "digits": _fill("1", " half minute / hundred = 3"),
    "spaces": "a" + _fill(" ", "b = 3 half minute"),
    "dollars": _fill("$"),
    "equals": _fill("="),
    "equation_chain": _fill("1 = "),
    "parentheses": "(" * 100_000 + "1" + ")" * 100_000,
    "open_parentheses": _fill("("),
    "one_line": _fill("word "),
    "triggers": _fill("the answer is "),
    "nested_frac": "the answer is " + "\\frac{" * 30_000 + "1}{2}" + "}{3}" * 30_000,
    "stars": _fill("1**"),
    "yes_lines": _fill("\n yes"),
    "json_deep": '{"score": ' + "[" * 200_000,
    "brackets": "[" * 200_000,
}
OPTIONS = (Choice("A", "bank"), Choice("B", "library"), Choice("C", "12"))
QUESTION = "Tom has 3 apples and 4 pears. How many fruits?"
ENTRY_POINTS = {
    "extract_numeric": lambda t: answers.extract_answer(t, "numeric"),
    "extract_option": lambda t: answers.extract_answer(t, "option", OPTIONS),
    "extract_yesno": lambda t: answers.extract_answer(t, "yesno"),
    "extract_text": lambda t: answers.extract_answer(t, "text"),
    "parse_options": answers.parse_options,
    "check_steps": lambda t: steps.check_steps(t, QUESTION),
    "answer_support": lambda t: steps.answer_support(t, "5", QUESTION),
    "unsupported_quantity": lambda t: steps.unsupported_quantity(t, QUESTION),
    "compliance": lambda t: gates.compliance(t, "stop"),
    "text_counts": gates.text_counts,
    "content_words": gates.content_words,
    "clean_question": synthesis.clean_question,
    "parse_judge_reply": judge.parse_judge_reply,
}
# CPU seconds, generous; before the fixes the same calls took 7 s to minutes
BOUND_S = 2.0


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_adversarial_replies_are_read_in_bounded_time(entry):
    fn = ENTRY_POINTS[entry]
    slow = {}
    for name, text in ADVERSARIAL.items():
        t0 = time.process_time()  # CPU time: what other work on the shared machine does not inflate
        fn(text)  # never raises
        dt = time.process_time() - t0
        if dt > BOUND_S:
            slow[name] = round(dt, 2)
    assert not slow, f"{entry}: over {BOUND_S} s on {slow}"


def test_bounded_scanners_keep_their_answers():
    """The bounds (box length, triggers read, span length, rationale length) never touch a
    real reply; near them, the answers are still found."""
    assert answers.extract_answer("\\boxed{" + "1" * 10 + "} and \\boxed{2}") == "2"
    assert answers.extract_answer("\\boxed{\\boxed{\\boxed{7}}}") == "7"
    assert answers.extract_answer("x \\boxed{" * 1000 + " \\boxed{42}") == "42"
    assert answers.extract_answer("The answer is 3.\n" * 1000 + "The answer is 9.") == "9"
    assert answers.extract_answer("\\frac{\\frac{1}{2}}{\\frac{3}{4}}") is not None
    assert answers.extract_answer("Maybe. Yes.\n" + "\n" * 50_000 + "No, it is not.", "yesno") == "no"
    assert answers.extract_answer("Maybe. Yes. No.", "yesno") == "yes"  # findall's non-overlapping matches
    assert steps.check_steps("2 + 3 = 6\n" + "\n" * 100_000 + "1 + 1 = 2").step_errors == 1


def test_the_cli_flags_and_the_config_section_set_the_limits(tmp_path, monkeypatch):
    """`dataforge --max-json-depth N <command>` and a config's `inputs:` section reach the readers
    (flags and the environment win over the config)."""
    import json as _json

    from typer.testing import CliRunner

    from dataforge.cli import app
    from dataforge.config import ConfigError, parse_config
    from dataforge.tabular import LIMIT_ENV, limits_in_env, read_limits

    import os

    for env in LIMIT_ENV.values():  # recorded as they are, so the flag's setting is undone after the test
        monkeypatch.setenv(env, "1")
        monkeypatch.delenv(env)
    src = tmp_path / "in.jsonl"
    src.write_text(_json.dumps({"text": "flat"}) + "\n" + _json.dumps({"text": "deep", "x": [[[[[1]]]]]}) + "\n")
    r = CliRunner().invoke(app, ["--max-json-depth", "3", "filter", str(src), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "quarantined 1" in r.output and "nest" in (tmp_path / "o" / "quarantine.jsonl").read_text()
    assert os.environ.pop(LIMIT_ENV["max_depth"]) == "3"  # the flag set it (for this process)

    cfg = parse_config({"inputs": {"max_depth": 5, "max_rows": 10}})
    with limits_in_env(**cfg.inputs.model_dump()):
        assert read_limits().max_depth == 5 and read_limits().max_rows == 10
    assert read_limits().max_depth == 64  # restored
    monkeypatch.setenv(LIMIT_ENV["max_depth"], "7")
    with limits_in_env(**cfg.inputs.model_dump()):
        assert read_limits().max_depth == 7  # the environment (and so the flags) win
    with pytest.raises(ConfigError, match=r"inputs\.max_rows"):
        parse_config({"inputs": {"max_rows": 0}})
