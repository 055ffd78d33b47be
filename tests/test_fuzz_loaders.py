"""Fuzzing the seed and import loaders with hypothesis.

Every input — arbitrary bytes, JSON of the right shape with wrong types, truncated or
corrupted files, Parquet with odd columns — must end in a result (bad records quarantined
with file, line and reason) or one of the documented errors for a whole file:
:class:`~dataforge.config.ConfigError` (``SeedFormatError``, ``PassageError``),
:class:`~dataforge.tabular.InputError`, :class:`~dataforge.generate.verify.VerifyError` or
``FileNotFoundError``. Anything else is a bug. Example counts are fixed and the generation is
derandomized, so a run is reproducible and its figures (docs/reliability.md) stable.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataforge.config import ConfigError
from dataforge.generate import seeds as S
from dataforge.generate.textbooks import load_passages
from dataforge.generate.verify import Fields, VerifyError, verify_file
from dataforge.tabular import InputError, Quarantined, read_text_table

DOCUMENTED = (ConfigError, InputError, VerifyError, FileNotFoundError)
# DATAFORGE_FUZZ_EXAMPLES=2000 for a long, randomized hunt; the default run is derandomized
EXAMPLES = int(os.environ.get("DATAFORGE_FUZZ_EXAMPLES", "120"))

fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize="DATAFORGE_FUZZ_EXAMPLES" not in os.environ,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- strategies ----------------------------------------------------------------------------------

numberish = st.sampled_from(["42", "#### 17", "The answer is 5.", "#### 1e999", "1e400", "-0", "NaN", "inf", "3/0",
                             "1,000,000", "$5", "50%", "\\boxed{\\frac{1}{0}}", "####", "", " ", "A", "(B)", "yes",
                             "#### 99999999999999999999999999999999999999"])
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=30) | numberish)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


def _obj(keys: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    """Records with (some of) the format's keys, values right or wrong, plus stray keys."""
    return st.fixed_dictionaries({}, optional={k: v | json_values for k, v in keys.items()}).flatmap(
        lambda d: st.dictionaries(st.text(max_size=6), json_values, max_size=2).map(lambda extra: {**extra, **d}))


option_items = st.lists(st.sampled_from(["A)21", "B)21.5", "C) 3", "D)", "E)x", "(A) 5", "7", ""]) | st.text(max_size=8),
                        max_size=6)
choices = st.lists(st.fixed_dictionaries({}, optional={"label": st.sampled_from(["A", "B", "c", "", "1"]) | json_values,
                                                       "text": st.text(max_size=10) | json_values}), max_size=5)
RECORDS: dict[str, st.SearchStrategy[dict]] = {
    "gsm8k": _obj({"question": st.text(max_size=40), "answer": numberish}),
    "aqua": _obj({"question": st.text(max_size=40), "options": option_items, "correct": st.sampled_from("ABCDEFa ")}),
    "commonsenseqa": _obj({"question": _obj({"stem": st.text(max_size=40), "choices": choices}),
                           "answerKey": st.sampled_from(["A", "B", "E", "z", ""])}),
    "arith": _obj({"sQuestion": st.text(max_size=40), "lSolutions": st.lists(numberish | json_values, max_size=2)}),
    "svamp": _obj({"Body": st.text(max_size=30), "Question": st.text(max_size=30), "Answer": numberish | json_values}),
    "strategyqa": _obj({"input": st.text(max_size=40),
                        "target_scores": _obj({"Yes": st.sampled_from([0, 1, 0.5]), "No": st.sampled_from([0, 1])})}),
    "text": _obj({"text": st.text(max_size=60), "id": st.text(max_size=8) | st.integers()}),
    "solution": _obj({"question": st.text(max_size=40), "solution": numberish, "answer": numberish,
                      "options": option_items | json_values}),
}


@st.composite
def corrupt(draw, data: bytes) -> bytes:
    """The bytes as they are, truncated, or with a random slice replaced by random bytes."""
    how = draw(st.sampled_from(["keep", "truncate", "splice"]))
    if how == "keep" or not data:
        return data
    i = draw(st.integers(0, len(data)))
    if how == "truncate":
        return data[:i]
    return data[:i] + draw(st.binary(max_size=12)) + data[i + draw(st.integers(0, 12)):]


def jsonl_bytes(kind: str) -> st.SearchStrategy[bytes]:
    lines = st.lists(RECORDS[kind].map(json.dumps) | json_values.map(json.dumps) | st.text(max_size=20), max_size=8)
    return lines.map(lambda ls: "\n".join(ls).encode()).flatmap(lambda b: corrupt(b))


def json_array_bytes(kind: str, wrap: str | None = None) -> st.SearchStrategy[bytes]:
    arr = st.lists(RECORDS[kind] | json_values, max_size=8)
    doc = arr.map(lambda a: {wrap: a} if wrap else a) | json_values
    return doc.map(lambda d: json.dumps(d, indent=d.__class__ is list and 1 or None).encode()).flatmap(lambda b: corrupt(b))


tsv_bytes = st.lists(st.lists(st.text(max_size=25) | numberish, max_size=4).map("\t".join), max_size=8).map(
    lambda ls: "\n".join(ls).encode()).flatmap(lambda b: corrupt(b))

any_bytes = st.binary(max_size=400)


# --- the check -----------------------------------------------------------------------------------

def _quarantine_ok(bad: list[Quarantined], path: Path) -> None:
    for q in bad:
        assert q.file == str(path), q
        assert isinstance(q.line, int) and q.line >= 1, q
        assert isinstance(q.reason, str) and q.reason.strip(), q


def outcome(fn: Callable[[Path], Any], name: str, data: bytes, check: Callable[[Any, Path], None]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        try:
            result = fn(path)
        except DOCUMENTED as err:
            assert str(err).strip(), f"{type(err).__name__} without a message"
            return
        check(result, path)


def check_seeds(result: tuple[list[S.Seed], list[Quarantined]], path: Path) -> None:
    seeds, bad = result
    _quarantine_ok(bad, path)
    for s in seeds:
        assert isinstance(s.question, str) and s.question.strip()
        assert s.gold_answer is None or isinstance(s.gold_answer, str)
        assert s.answer_type in ("numeric", "option", "yesno", "text") and s.line >= 1
        if s.answer_type == "numeric" and s.gold_answer is not None:
            assert math.isfinite(float(s.gold_answer)), s.gold_answer


SEED_CASES = [
    ("gsm8k", "seeds.jsonl", S.load_gsm8k_jsonl, lambda: jsonl_bytes("gsm8k")),
    ("aqua", "aqua.jsonl", S.load_aqua_jsonl, lambda: jsonl_bytes("aqua")),
    ("commonsenseqa", "csqa.jsonl", S.load_commonsenseqa_jsonl, lambda: jsonl_bytes("commonsenseqa")),
    ("multiarith", "multiarith.json", lambda p: S.load_arith_json(p, "multiarith"), lambda: json_array_bytes("arith")),
    ("svamp", "svamp.json", S.load_svamp_json, lambda: json_array_bytes("svamp")),
    ("strategyqa", "strategyqa.json", S.load_strategyqa_json, lambda: json_array_bytes("strategyqa", "examples")),
    ("flan_tsv", "ecqa_train.tsv", S.load_flan_tsv, lambda: tsv_bytes),
]


@pytest.mark.parametrize("fmt, name, loader, structured", SEED_CASES, ids=[c[0] for c in SEED_CASES])
def test_seed_loaders_structured(fmt, name, loader, structured):
    @fuzz
    @given(data=structured())
    def run(data: bytes) -> None:
        outcome(loader, name, data, check_seeds)

    run()


@pytest.mark.parametrize("name", ["a.jsonl", "aqua.jsonl", "csqa.jsonl", "addsub.json", "singleeq.json", "svamp.json",
                                  "strategyqa.json", "flan.tsv", "seeds.txt"])
def test_seed_files_of_arbitrary_bytes(name):
    @fuzz
    @given(data=any_bytes)
    def run(data: bytes) -> None:
        outcome(lambda p: S.load_seeds([p]), name, data, check_seeds)

    run()


def test_load_passages():
    @fuzz
    @given(data=jsonl_bytes("text") | any_bytes, id_field=st.sampled_from([None, "id"]))
    def run(data: bytes, id_field: str | None) -> None:
        def check(result, path):
            passages, bad = result
            _quarantine_ok(bad, path)
            assert passages and all(p.text.strip() for p in passages)

        outcome(lambda p: load_passages(p, "text", id_field), "passages.jsonl", data, check)

    run()


def check_table(result: tuple[pa.Table, list[Quarantined]], path: Path) -> None:
    table, bad = result
    _quarantine_ok(bad, path)
    for col in ("text", "id", "source_file", "source_row"):
        assert col in table.column_names, (col, table.column_names)
    assert pa.types.is_string(table.schema.field("text").type) or pa.types.is_large_string(table.schema.field("text").type)
    assert table.column("text").null_count == 0


def test_read_text_table_jsonl():
    @fuzz
    @given(data=jsonl_bytes("text") | any_bytes)
    def run(data: bytes) -> None:
        outcome(lambda p: read_text_table(p, "text"), "in.jsonl", data, check_table)

    run()


parquet_columns = st.dictionaries(
    st.sampled_from(["text", "id", "body", "solution", "answer", "question", "options"]),
    st.sampled_from(["str", "int", "float", "list", "struct", "null", "bool", "binary"]), min_size=1, max_size=4)


def _column(kind: str, n: int, rnd: list[Any]) -> pa.Array:
    if kind == "str":
        return pa.array([None if r is None else str(r) for r in rnd], pa.string())
    if kind == "int":
        return pa.array([i if i % 3 else None for i in range(n)], pa.int64())
    if kind == "float":
        return pa.array([float("nan") if i % 2 else 1.5 for i in range(n)], pa.float64())
    if kind == "list":
        return pa.array([[str(r)] if r is not None else None for r in rnd], pa.list_(pa.string()))
    if kind == "struct":
        return pa.array([{"a": str(r)} for r in rnd], pa.struct([("a", pa.string())]))
    if kind == "bool":
        return pa.array([bool(i % 2) for i in range(n)], pa.bool_())
    if kind == "binary":
        return pa.array([b"\xff\xfe" for _ in range(n)], pa.binary())
    return pa.nulls(n)


@st.composite
def parquet_bytes(draw) -> bytes:
    cols = draw(parquet_columns)
    n = draw(st.integers(0, 6))
    rnd = draw(st.lists(st.none() | st.text(max_size=20) | numberish, min_size=n, max_size=n))
    table = pa.table({name: _column(kind, n, rnd) for name, kind in cols.items()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return draw(corrupt(sink.getvalue().to_pybytes()))


def test_parquet_inputs():
    @fuzz
    @given(data=parquet_bytes())
    def run(data: bytes) -> None:
        outcome(lambda p: read_text_table(p, "text"), "in.parquet", data, check_table)

        def passages_ok(result, path):
            _quarantine_ok(result[1], path)

        outcome(lambda p: load_passages(p, "text", "id"), "in.parquet", data, passages_ok)
        outcome(lambda p: _verify(p), "in.parquet", data, _verified)

    run()


def _verify(path: Path):
    return verify_file(path, path.with_name("out.parquet"), Fields(solution="solution", gold="answer",
                                                                   options="options"))


def _verified(summary, path: Path) -> None:
    assert summary.rows + summary.quarantined >= 0 and Path(summary.output).exists()
    assert summary.correct <= summary.with_gold <= summary.rows
    if summary.quarantine_file:
        for line in Path(summary.quarantine_file).read_text().splitlines():
            q = json.loads(line)
            assert q["file"] == str(path) and q["line"] >= 1 and q["reason"]


def test_cot_verify_reader():
    @fuzz
    @given(data=jsonl_bytes("solution") | any_bytes, answer_type=st.sampled_from(["auto", "numeric", "option", "yesno",
                                                                                   "text"]))
    def run(data: bytes, answer_type: str) -> None:
        outcome(lambda p: verify_file(p, p.with_name("out.jsonl"), Fields(solution="solution", gold="answer",
                                                                          options="options"), answer_type),
                "sols.jsonl", data, _verified)

    run()


# --- the bugs fuzzing found, kept as plain regression tests -------------------------------------------

def test_regression_corrupt_parquet_pages_are_an_input_error(tmp_path):
    # the footer reads, a page does not: iter_records used to let pyarrow's OSError through
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"solution": ["a " * 50] * 20}), buf, compression="none")
    data = bytearray(buf.getvalue().to_pybytes())
    data[4:40] = b"\x15" * 36
    path = tmp_path / "bad.parquet"
    path.write_bytes(bytes(data))
    with pytest.raises(VerifyError, match="not a readable Parquet file"):
        _verify(path)


def test_regression_integer_beyond_int64_in_another_field(tmp_path):
    # pa.Table.from_pylist raised OverflowError, which read_text_table did not catch
    path = tmp_path / "big.jsonl"
    path.write_text('{"n": 9223372036854775808, "text": "hello"}\n{"n": 1, "text": "world"}\n')
    table, bad = read_text_table(path, "text")
    assert table.column("text").to_pylist() == ["hello", "world"] and not bad


def test_regression_quarantine_lines_survive_any_line_splitter(tmp_path):
    # raw text holding U+0085 / U+2028 was written as is, and str.splitlines() broke the line
    path = tmp_path / "sols.jsonl"
    path.write_bytes(b"0\xc2\x85\n\"\xe2\x80\xa8\"\n")
    summary = verify_file(path, tmp_path / "out.jsonl", Fields())
    lines = Path(summary.quarantine_file).read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["line"] for x in lines] == [1, 2]
    assert json.loads(lines[0])["raw"] == "0\x85"


@pytest.mark.parametrize("name, loader", [
    ("svamp.json", S.load_svamp_json), ("seeds.jsonl", S.load_gsm8k_jsonl),
    ("in.jsonl", lambda p: read_text_table(p, "text")), ("p.jsonl", lambda p: load_passages(p, "text")),
])
def test_regression_unpaired_surrogate_escapes_are_quarantined(tmp_path, name, loader):
    # json decodes "\udc00" to a str that cannot be encoded as UTF-8: seed_id's .encode() raised;
    # an escaped pair ("\ud83d\ude00", an emoji) is fine
    bad = ('{"Body": "a\\udc00", "Question": "How many?", "Answer": "4", "question": "x\\udc00?", '
           '"answer": "#### 4", "text": "t\\udc00"}')
    good = ('{"Body": "Sam has 3.", "Question": "How many? \\ud83d\\ude00", "Answer": "3", '
            '"question": "What is 1 + 2? \\ud83d\\ude00", "answer": "#### 3", "text": "A passage \\ud83d\\ude00."}')
    path = tmp_path / name
    path.write_text(f"[{bad},\n{good}]" if name.endswith(".json") else f"{bad}\n{good}\n", encoding="utf-8")
    loaded, bad_rows = loader(path)
    assert [(q.line, q.reason[:15]) for q in bad_rows] == [(1, "invalid Unicode")]
    assert len(loaded) == 1


def _patched_parquet(path: Path, columns: dict, old: bytes, new: bytes) -> Path:
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), buf, compression="none")
    path.write_bytes(buf.getvalue().to_pybytes().replace(old, new))
    return path


@pytest.mark.parametrize("columns, old, new", [
    # field names that are not UTF-8: reading the names raised UnicodeDecodeError
    ({"text": ["a"], "elemXnt": ["b"]}, b"elemXnt", b"\x00\x80emXnt"),
    # string values that are not UTF-8: pyarrow reads them unchecked, to_pylist raised UnicodeDecodeError
    ({"text": ["fine", "XXXXbad"], "solution": ["#### 1", "#### 2"]}, b"XXXX", b"\xc3\x28\x80\xff"),
], ids=["names", "values"])
def test_regression_parquet_that_is_not_utf8_is_an_input_error(tmp_path, columns, old, new):
    path = _patched_parquet(tmp_path / "bad.parquet", columns, old, new)
    with pytest.raises(VerifyError, match="not a readable Parquet file"):
        _verify(path)
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_text_table(path, "text")
    with pytest.raises(ConfigError, match="not a readable Parquet file"):
        load_passages(path, "text")


def test_regression_rows_without_their_own_id_get_the_content_hash(tmp_path):
    # some rows of a file had an id and others none: those came out with a null id
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"id": "mine", "text": "a"}\n{"text": "b"}\n{"id": null, "text": "c"}\n')
    table, bad = read_text_table(path, "text")
    ids = table.column("id").to_pylist()
    assert not bad and ids[0] == "mine" and all(ids) and len(set(ids)) == 3
    (tmp_path / "b.jsonl").write_text('{"text": "b"}\n')
    alone, _ = read_text_table(tmp_path / "b.jsonl", "text")
    assert ids[1] == alone.column("id")[0].as_py()  # the same content hash as a file without ids


_LOADERS = [("seeds.jsonl", S.load_gsm8k_jsonl), ("in.jsonl", lambda p: read_text_table(p, "text")),
            ("p.jsonl", lambda p: load_passages(p, "text")),
            ("sols.jsonl", lambda p: _verify_rows(p))]


def _verify_rows(path: Path) -> tuple[list, list]:
    out = path.with_name("out.jsonl")
    summary = verify_file(path, out, Fields(solution="answer"))
    qpath = summary.quarantine_file
    bad = [json.loads(x) for x in Path(qpath).read_text(encoding="utf-8").splitlines()] if qpath else []
    return [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()], \
        [Quarantined(b["file"], b["line"], b["reason"], b["raw"]) for b in bad]


@given(depth=st.integers(min_value=65, max_value=200_000), opener=st.sampled_from(["[", "{\"a\": ", "[{\"b\": "]))
@fuzz
def test_deep_nesting_quarantines_one_line(depth, opener):
    # json.loads recursed: a line of 100k "[" raised RecursionError and aborted the whole file
    good = '{"question": "What is 1 + 2?", "answer": "#### 3", "text": "A passage."}'
    with tempfile.TemporaryDirectory() as d:
        for name, loader in _LOADERS:
            path = Path(d) / name
            path.write_text(f"{good}\n{opener * depth}\n{good.replace('1 + 2', '2 + 2').replace('A p', 'Another p')}\n",
                            encoding="utf-8")
            loaded, bad = loader(path)
            assert len(loaded) == 2 and [q.line for q in bad] == [2], name
            assert "nested" in bad[0].reason and len(bad[0].raw) < 5000


@given(size=st.integers(min_value=1025, max_value=300_000), fill=st.sampled_from(["x", "\u00e9", "[", " "]))
@fuzz
def test_long_lines_are_quarantined_cut(size, fill):
    good = '{"question": "What is 1 + 2?", "answer": "#### 3", "text": "A passage."}'
    old = os.environ.get("DATAFORGE_MAX_VALUE_BYTES")
    os.environ["DATAFORGE_MAX_VALUE_BYTES"] = "1024"
    try:
        with tempfile.TemporaryDirectory() as d:
            for name, loader in _LOADERS:
                path = Path(d) / name
                path.write_text(f"{good}\n{fill * size}\n", encoding="utf-8")
                loaded, bad = loader(path)
                assert len(loaded) == 1 and [q.line for q in bad] == [2], name
                assert "DATAFORGE_MAX_VALUE_BYTES" in bad[0].reason and len(bad[0].raw) < 5000
    finally:
        if old is None:
            os.environ.pop("DATAFORGE_MAX_VALUE_BYTES", None)
        else:
            os.environ["DATAFORGE_MAX_VALUE_BYTES"] = old
