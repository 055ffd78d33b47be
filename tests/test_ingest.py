"""The ``ingest`` stage (dataforge/stages/ingest.py, dataforge/sources.py): every format, the field
mappings of each kind, quarantine with file, line and reason, provenance, ``max_rows`` and
``weight``, globs, folders and URIs, the preflight, per-file resume after kill -9, a pipeline whose
only data is its sources (no teacher), and the ``curate-folder`` flow."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from dataforge.config import ConfigError, parse_config
from dataforge.records import SAMPLE_SCHEMA, content_id
from dataforge.runner import open_run
from dataforge.runner.generation import generation_preflight
from dataforge.sources import SourceConfig, SourceError, glob_match, kept_by_weight
from dataforge.stages.ingest import KILL_ENV, ingest_schema, load_progress
from dataforge.stages.registry import get_stage

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@dataclass
class Ingested:
    run: object
    result: object
    kept: list[dict]
    rejected: list[dict]
    quarantined: list[dict]


def config(tmp_path: Path, sources, root: str = "data", **top) -> object:
    """A pipeline config whose only data is ``sources`` (paths relative to ``tmp_path``)."""
    data = {"name": "t", "data_root": str(tmp_path / root), "textbooks": {"enabled": False},
            "cot": {"enabled": False}, "ingest": {"sources": sources, **top.pop("ingest", {})}, **top}
    return parse_config(data, str(tmp_path / "p.yaml"))


def ingest(tmp_path: Path, sources, run_id: str = "r1", **top) -> Ingested:
    cfg = config(tmp_path, sources, **top)
    run = open_run(cfg, run_id)
    result = get_stage("ingest").run(run, cfg)
    qdir = run.quarantine_dir() / "ingest"
    quarantined = [json.loads(line) for f in sorted(qdir.glob("*.jsonl")) for line in f.read_text().splitlines()]
    return Ingested(run, result, run.read("ingest").to_pylist(), run.read_rejected("ingest").to_pylist(), quarantined)


def write_jsonl(path: Path, rows: list, opener=open) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def docs(n: int, start: int = 0, prefix: str = "doc") -> list[dict]:
    return [{"text": f"{prefix} {i}: " + " ".join(f"word{j}" for j in range(i % 7 + 3))}
            for i in range(start, start + n)]


# --- formats -----------------------------------------------------------------------------------

def test_jsonl_plain_gzip_and_zstd_give_the_same_rows(tmp_path):
    rows = docs(40)
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl.gz", rows, gzip.open)
    with pa.CompressedOutputStream(str(tmp_path / "c.jsonl.zst"), "zstd") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows).encode())
    got = ingest(tmp_path, {"plain": "a.jsonl", "gz": "b.jsonl.gz", "zst": "c.jsonl.zst"})
    by_source: dict[str, list] = {}
    for r in got.kept:
        by_source.setdefault(r["source_name"], []).append(r)
    assert set(by_source) == {"plain", "gz", "zst"}
    texts = [r["text"] for r in rows]
    for name, rs in by_source.items():
        assert [r["text"] for r in rs] == texts, name
        assert [r["source_row"] for r in rs] == list(range(1, 41))
    assert by_source["gz"][0]["source_file"] == str(tmp_path / "b.jsonl.gz")
    assert got.result.rows_kept == 120 and got.result.extra["sources"]["zst"]["records"] == 40


def test_parquet_csv_tsv_and_json_array(tmp_path):
    rows = docs(25)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet", row_group_size=7)
    (tmp_path / "d.csv").write_text("id,text\n" + "".join(f'{i},"{r["text"]}, with a comma"\n'
                                                          for i, r in enumerate(rows)))
    # a TSV without a header (FLAN's layout), quotes as text
    (tmp_path / "d.tsv").write_text("".join(f'q{i}\t"{r["text"]}\tx\n' for i, r in enumerate(rows)))
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=4))
    got = ingest(tmp_path, {
        "pq": "d.parquet", "csv": "d.csv", "arr": "d.json",
        "tsv": {"path": "d.tsv", "column_names": ["id", "text", "extra"]}})
    by = {n: [r for r in got.kept if r["source_name"] == n] for n in ("pq", "csv", "tsv", "arr")}
    texts = [r["text"] for r in rows]
    assert [r["text"] for r in by["pq"]] == texts and [r["source_row"] for r in by["pq"]] == list(range(1, 26))
    assert [r["text"] for r in by["csv"]] == [t + ", with a comma" for t in texts]
    assert [r["source_row"] for r in by["csv"]] == list(range(2, 27))  # the header is line 1
    assert [r["text"] for r in by["tsv"]] == [f'"{t}' for t in texts]
    assert [r["text"] for r in by["arr"]] == texts and [r["source_row"] for r in by["arr"]] == list(range(1, 26))
    assert not got.quarantined


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_a_json_array_streams_record_by_record_across_read_chunks(chunk):
    import io

    from dataforge.tabular import ReadLimits, iter_json_array_stream

    records = [{"text": "é" * (i % 5) + f" r{i}", "n": [i, {"k": "]},["}]} for i in range(30)]
    data = ("\ufeff[\n" + ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n").encode()
    got = list(iter_json_array_stream(io.BytesIO(data), "x.json", ReadLimits(), chunk_bytes=chunk))
    assert [g[2] for g in got] == records
    assert [(g[0], g[1]) for g in got] == [(i + 1, i + 2) for i in range(30)]  # record number, line
    # a record over the limit is one error, the array goes on; broken JSON ends the file
    lim = ReadLimits(max_value_bytes=40)
    data = b'[{"text": "short"}, {"text": "' + b"x" * 60 + b'"}, {"text": "after"}, {"text": oops}, {"text": "lost"}]'
    got = list(iter_json_array_stream(io.BytesIO(data), "x.json", lim, chunk_bytes=chunk))
    assert [g[2] for g in got if g[2]] == [{"text": "short"}, {"text": "after"}]
    errors = [(g[0], g[3]) for g in got if g[3]]
    assert errors[0][0] == 2 and "over the limit of 40 bytes" in errors[0][1]
    assert errors[1][0] == 4 and errors[1][1].startswith("not valid JSON") and "the rest of the file" in errors[1][1]
    assert len(got) == 4


def test_a_dataset_saved_with_datasets_is_read_from_its_arrow_files(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the `datasets` package is not installed")
    rows = docs(30)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:20]),
                               "test": datasets.Dataset.from_list(rows[20:])})
    dd.save_to_disk(str(tmp_path / "dict"))
    got = ingest(tmp_path, {"one": "one", "both": "dict", "test": {"path": "dict", "splits": ["test"]}})
    by = {n: [r["text"] for r in got.kept if r["source_name"] == n] for n in ("one", "both", "test")}
    texts = [r["text"] for r in rows]
    assert by["one"] == texts
    assert sorted(by["both"]) == sorted(texts) and by["test"] == texts[20:]
    files = {r["source_file"] for r in got.kept if r["source_name"] == "test"}
    assert len(files) == 1 and files.pop().endswith(".arrow")


def test_a_file_uri_a_glob_a_folder_and_a_list(tmp_path):
    write_jsonl(tmp_path / "c" / "a.jsonl", docs(3, 0))
    write_jsonl(tmp_path / "c" / "sub" / "b.jsonl", docs(3, 3))
    write_jsonl(tmp_path / "c" / "sub" / "deeper" / "c.jsonl.gz", docs(3, 6), gzip.open)
    write_jsonl(tmp_path / "c" / ".hidden" / "h.jsonl", docs(3, 9))
    (tmp_path / "c" / "_SUCCESS").write_text("")
    (tmp_path / "c" / "notes.txt").write_text("not data")
    got = ingest(tmp_path, {
        "folder": "c",
        "glob": "c/**/*.jsonl",
        "one_level": "c/*/*.jsonl",
        "uri": f"file://{tmp_path}/c/sub/*.jsonl",
        "listed": {"path": ["c/a.jsonl", f"file://{tmp_path}/c/sub/b.jsonl"]}})
    files = {n: sorted({r["source_file"] for r in got.kept if r["source_name"] == n})
             for n in ("folder", "glob", "one_level", "uri", "listed")}
    c = str(tmp_path / "c")
    assert files["folder"] == [f"{c}/a.jsonl", f"{c}/sub/b.jsonl", f"{c}/sub/deeper/c.jsonl.gz"]
    assert files["glob"] == [f"{c}/a.jsonl", f"{c}/sub/b.jsonl"]
    assert files["one_level"] == [f"{c}/sub/b.jsonl"]
    assert files["uri"] == [f"file://{c}/sub/b.jsonl"]
    assert files["listed"] == [f"{c}/a.jsonl", f"file://{c}/sub/b.jsonl"]
    assert glob_match("**/*.jsonl", "a.jsonl") and glob_match("a/**/b/*.j?", "a/x/y/b/c.js")
    assert not glob_match("*.jsonl", "sub/a.jsonl")


def test_a_uri_of_a_scheme_only_fsspec_knows(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    mem.pipe("/ingest-test/corpus/a.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in docs(5)))
    try:
        got = ingest(tmp_path, {"mem": "memory://ingest-test/corpus/*.jsonl"})
    finally:
        mem.rm("/ingest-test", recursive=True)
    assert [r["source_row"] for r in got.kept] == [1, 2, 3, 4, 5]
    assert got.kept[0]["source_file"] == "memory://ingest-test/corpus/a.jsonl"


# --- kinds and field mappings ------------------------------------------------------------------

def test_field_mappings_of_each_kind(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", [{"body": {"content": "A document about maps."}, "meta": 1}])
    write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "Hi!"}])
    write_jsonl(tmp_path / "chat.jsonl", [
        {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Capital of France?"},
                           {"from": "gpt", "value": "Paris."}]},
        {"conversations": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}])
    write_jsonl(tmp_path / "cot.jsonl", [{"q": "What is 2+3?", "sol": "2+3=5. #### 5", "final": 5}])
    got = ingest(tmp_path, {
        "docs": {"path": "docs.jsonl", "fields": {"text": "body.content"}},
        "alpaca": {"path": "alpaca.jsonl", "kind": "instruction"},
        "chat": {"path": "chat.jsonl", "kind": "instruction", "fields": {"messages": "conversations"}},
        "cot": {"path": "cot.jsonl", "kind": "cot",
                "fields": {"question": "q", "rationale": "sol", "answer": "final"}}})
    by = {}
    for r in got.kept:
        by.setdefault(r["source_name"], []).append(r)
    d = by["docs"][0]
    assert (d["kind"], d["text"], d["messages"]) == ("document", "A document about maps.", None)
    assert d["id"] == content_id("document", d["text"])
    a, b = by["alpaca"]
    assert a["kind"] == "instruction" and a["text"] == "Add the numbers.\n\n2 and 3\n\n5"
    assert a["messages"] == [{"role": "user", "content": "Add the numbers.\n\n2 and 3"},
                             {"role": "assistant", "content": "5"}]
    assert b["messages"][0] == {"role": "user", "content": "Say hi."}
    c1, c2 = by["chat"]
    assert [m["role"] for m in c1["messages"]] == ["system", "user", "assistant"]
    assert c1["text"] == "Be brief.\n\nCapital of France?\n\nParis." and c1["id"] == content_id(
        "instruction", c1["text"], c1["messages"])
    assert c2["messages"][-1] == {"role": "assistant", "content": "4"}
    c = by["cot"][0]
    assert (c["kind"], c["question"], c["rationale"], c["answer"]) == ("cot", "What is 2+3?", "2+3=5. #### 5", "5")
    assert c["text"] == "Question: What is 2+3?\nAnswer: 2+3=5. #### 5"
    # every row is a valid record: the sample schema, then the provenance columns
    assert got.run.read("ingest").schema.equals(ingest_schema(), check_metadata=False)
    assert ingest_schema().names[: len(SAMPLE_SCHEMA)] == SAMPLE_SCHEMA.names


def test_malformed_records_are_quarantined_with_file_line_and_reason(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join([
        json.dumps({"text": "fine one"}).encode() + b"\n",
        b"{not json\n",
        b"\n",
        json.dumps({"other": "x"}).encode() + b"\n",
        json.dumps({"text": 7}).encode() + b"\n",
        b'{"text": "bad \xff utf8"}\n',
        b"[1, 2]\n",
        json.dumps({"text": "   "}).encode() + b"\n",
        json.dumps({"text": "fine two"}).encode() + b"\n"]))
    (tmp_path / "bad.csv").write_text("text,x\nok,1\ntoo,many,fields\n")
    pq.write_table(pa.table({"text": ["a parquet row", None]}), tmp_path / "bad.parquet")
    (tmp_path / "trunc.json").write_text('[{"text": "first"}, {"text": "sec')
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]},
                                          {"messages": [{"role": "robot", "content": "x"}]}])
    got = ingest(tmp_path, {"j": "bad.jsonl", "c": "bad.csv", "p": "bad.parquet", "a": "trunc.json",
                            "m": {"path": "chat.jsonl", "kind": "instruction"}})
    assert sorted(r["text"] for r in got.kept) == ["a parquet row", "fine one", "fine two", "first", "ok"]
    # an empty text is a rejected row, with the stage and the field
    assert [(r["text"], r["drop_stage"], r["drop_reason"], r["source_row"]) for r in got.rejected] == \
        [("   ", "ingest", "empty_text:text", 8)]
    q = {(Path(r["file"]).name, r["line"]): r["reason"] for r in got.quarantined}
    assert q[("bad.jsonl", 2)].startswith("not valid JSON")
    assert q[("bad.jsonl", 4)] == "field 'text' (text) is missing"
    assert q[("bad.jsonl", 5)] == "field 'text' (text) is not a string (int)"
    assert q[("bad.jsonl", 6)].startswith("invalid UTF-8")
    assert q[("bad.jsonl", 7)] == "expected a JSON object, got list"
    assert q[("bad.csv", 3)] == "3 fields where the header has 2"
    assert q[("bad.parquet", 2)] == "field 'text' (text) is null"
    assert "the JSON array is not closed" in q[("trunc.json", 1)] or "not valid JSON" in q[("trunc.json", 1)]
    assert q[("chat.jsonl", 1)] == "field 'instruction' (instruction) is missing"
    assert all(r["file"].startswith(str(tmp_path)) for r in got.quarantined)
    raw = {(Path(r["file"]).name, r["line"]): r["raw"] for r in got.quarantined}
    assert raw[("bad.jsonl", 4)] == '{"other": "x"}' and raw[("bad.parquet", 2)] == '{"text": null}'
    assert got.result.extra["quarantined"] == len(got.quarantined) == 10
    assert got.result.rows_in == got.result.rows_kept + got.result.rows_dropped == 6


def test_messages_are_checked(tmp_path):
    write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": "not a list"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}])
    got = ingest(tmp_path, {"m": {"path": "chat.jsonl", "kind": "instruction", "fields": {"messages": "messages"}}})
    reasons = [r["reason"] for r in got.quarantined]
    assert reasons == ["messages: no assistant turn",
                       "messages[0]: role 'robot' is not system, user or assistant (or ShareGPT's human, gpt)",
                       "field 'messages' (messages) is not a non-empty list of turns"]
    assert [r["drop_reason"] for r in got.rejected] == ["empty_text:messages"] and not got.kept


# --- sampling and caps -------------------------------------------------------------------------

def test_weight_keeps_a_deterministic_hash_sample(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", docs(400))
    one = ingest(tmp_path, {"a": {"path": "a.jsonl", "weight": 0.25}}, run_id="r1")
    two = ingest(tmp_path, {"a": {"path": "a.jsonl", "weight": 0.25}}, run_id="r2")
    other_seed = ingest(tmp_path, {"a": {"path": "a.jsonl", "weight": 0.25}}, run_id="r3", seed=99)
    ids = [r["id"] for r in one.kept]
    assert ids == [r["id"] for r in two.kept] and ids != [r["id"] for r in other_seed.kept]
    assert 60 <= len(ids) <= 140  # a quarter of 400, give or take
    expected = [content_id("document", r["text"]) for r in docs(400)]
    assert ids == [i for i in expected if kept_by_weight(i, 0.25, 1234)]
    assert one.result.extra["sources"]["a"]["sampled_out"] == 400 - len(ids)
    # a larger weight keeps a superset: the sample is nested
    half = ingest(tmp_path, {"a": {"path": "a.jsonl", "weight": 0.5}}, run_id="r4")
    assert set(ids) <= {r["id"] for r in half.kept}


def test_max_rows_stops_the_source_and_leaves_later_files_unread(tmp_path):
    for i in range(3):
        write_jsonl(tmp_path / "parts" / f"p{i}.jsonl", docs(10, 10 * i))
    write_jsonl(tmp_path / "other.jsonl", docs(4, 100))
    got = ingest(tmp_path, {"capped": {"path": "parts/*.jsonl", "max_rows": 13}, "other": "other.jsonl"})
    capped = [r for r in got.kept if r["source_name"] == "capped"]
    assert [r["text"] for r in capped] == [d["text"] for d in docs(13)]
    s = got.result.extra["sources"]["capped"]
    assert (s["files"], s["files_not_read"], s["kept"], s["capped"]) == (3, 1, 13, True)
    assert s["records"] == 13  # the second file was read up to its third record, no further
    assert len([r for r in got.kept if r["source_name"] == "other"]) == 4
    # with a weight, the cap counts kept rows
    w = ingest(tmp_path, {"capped": {"path": "parts/*.jsonl", "max_rows": 5, "weight": 0.5}}, run_id="r2")
    assert len(w.kept) == 5 and w.result.extra["sources"]["capped"]["sampled_out"] > 0


# --- configuration and preflight ---------------------------------------------------------------

def test_the_section_is_validated_with_its_fields_named(tmp_path):
    def error(sources, **section) -> str:
        with pytest.raises(ConfigError) as e:
            parse_config({"ingest": {"sources": sources, **section}})
        return str(e.value)

    assert "ingest.sources.pile.weight" in error({"pile": {"path": "x.jsonl", "weight": 2}})
    assert "ingest.sources.pile: Value error, fields.output: not a field of a document source (choose from text)" in \
        error({"pile": {"path": "x.jsonl", "fields": {"output": "o"}}})
    assert "ingest.sources.pile.kind" in error({"pile": {"path": "x.jsonl", "kind": "poem"}})
    assert "ingest.sources.pile.colour: unknown field" in error({"pile": {"path": "x.jsonl", "colour": 1}})
    assert "a listed source needs a name" in error([{"path": "x.jsonl"}])
    assert "name at least one source" in error({}, enabled=True)
    assert "give messages, or instruction" in error(
        {"c": {"path": "x", "kind": "instruction", "fields": {"messages": "m", "output": "o"}}})
    cfg = parse_config({"ingest": {"sources": [{"name": "a", "path": "x.jsonl"}, {"name": "b", "path": "y.jsonl"}]}})
    assert cfg.ingest.enabled and list(cfg.ingest.sources) == ["a", "b"]
    assert not parse_config({}).ingest.enabled
    assert not parse_config({"ingest": {"enabled": False, "sources": {"a": "x.jsonl"}}}).ingest.enabled


def test_preflight_names_every_source_without_a_readable_file_in_one_line(tmp_path):
    write_jsonl(tmp_path / "ok.jsonl", docs(2))
    (tmp_path / "data.bin").write_text("?")
    (tmp_path / "empty").mkdir()
    cfg = config(tmp_path, {"ok": "ok.jsonl", "missing": "nope.jsonl", "glob": "*.parquet",
                            "unknown": "data.bin", "emptydir": "empty"})
    with pytest.raises(SourceError) as e:
        generation_preflight(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "ok" not in msg.split(":")[0]
    assert "ingest.sources.missing: nope.jsonl: no such file or folder" in msg
    assert "ingest.sources.glob: *.parquet: matches no file" in msg
    assert "ingest.sources.unknown: data.bin: cannot tell the format" in msg
    assert "ingest.sources.emptydir: empty: matches no file with a known extension" in msg
    # and before anything is written: the flow's run_pipeline calls it before opening a run
    assert not (tmp_path / "data").exists()


# --- resume after kill -9 ----------------------------------------------------------------------

RUN_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from run_helpers import run_pipeline
run_pipeline({config!r}, "r1")
"""


def _run_child(config_path: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    script = RUN_SCRIPT.format(tests=str(TESTS), config=str(config_path))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)


def _rows(run) -> list[dict]:
    return run.read("ingest").to_pylist()


def test_kill_9_mid_file_resumes_at_that_file_without_opening_finished_ones(tmp_path):
    corpus = tmp_path / "corpus"
    for i in range(4):
        write_jsonl(corpus / f"part-{i}.jsonl", docs(300, 1000 * i, prefix=f"file{i}"))
    write_jsonl(corpus / "part-1.jsonl",
                [*docs(150, 1000, prefix="file1"), "{broken", *docs(150, 1150, prefix="file1")])

    def write_cfg(root: str, workers: int | None = None) -> Path:
        path = tmp_path / f"{root}.yaml"
        path.write_text(yaml.safe_dump({
            "name": "k", "data_root": str(tmp_path / root), "shard_rows": 50, "textbooks": {"enabled": False},
            "cot": {"enabled": False}, "heuristics": {"enabled": False}, "export": {"kinds": ["text"]},
            "runner": {"workers": workers},
            "ingest": {"batch_rows": 40, "sources": {"corpus": {"path": str(corpus), "weight": 0.9}}}}))
        return path

    # the uninterrupted run, for comparison (files read two at a time)
    whole = _run_child(write_cfg("whole", 2))
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed_cfg = write_cfg("killed", 1)  # one file at a time: the kill comes after files 0 and 1, before 3
    first = _run_child(killed_cfg, {KILL_ENV: "2:120"})
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    from dataforge.config import load_config
    from dataforge.store import MANIFEST, Run

    run = Run(load_config(killed_cfg).data_root, "r1")
    prog = load_progress(run)
    assert [f["index"] for f in prog["files"]] == [0, 1]  # files 0 and 1 were finished
    assert not (run.stage_dir("ingest") / MANIFEST).exists()
    partial = sorted(p.name for p in run.stage_dir("ingest").glob("part-00002-*.parquet"))
    assert partial, "the kill came in the middle of file 2, after some of its shards"
    assert (run.quarantine_dir() / "ingest" / "00001-corpus.jsonl").exists()

    # finished files are trusted by size and modification time: spoil their content (same size,
    # same mtime) so that re-reading them would change the output
    for i in (0, 1):
        p = corpus / f"part-{i}.jsonl"
        st = p.stat()
        p.write_bytes(b" " * (st.st_size - 1) + b"\n")
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))

    write_cfg("killed", 2)  # the resume reads files 2 and 3 at once (the runner is not in the stage's hash)
    second = _run_child(killed_cfg)
    assert second.returncode == 0, second.stderr[-3000:]
    rec = run.load_record()
    extra = rec.stages["ingest"].extra
    assert (extra["files_reused"], extra["files_read"], extra["attempt"]) == (2, 2, 2)
    prog = load_progress(run)
    assert [f["attempt"] for f in prog["files"]] == [1, 1, 2, 2]
    assert [a["files_done"] for a in prog["attempts"]] == [0, 2]

    whole_run = Run(load_config(tmp_path / "whole.yaml").data_root, "r1")
    assert _rows(run) == _rows(whole_run)  # every row and column (the same run id in both data roots)
    assert [f["name"] for f in run.committed("ingest")["files"]] == \
        [f["name"] for f in whole_run.committed("ingest")["files"]]
    assert extra["quarantined"] == 1 and extra["sources"] == whole_run.load_record().stages["ingest"].extra["sources"]
    for split in ("train", "validation"):
        a = pq.read_table(run.export_dir("default") / "text" / f"{split}.parquet").to_pylist()
        b = pq.read_table(whole_run.export_dir("default") / "text" / f"{split}.parquet").to_pylist()
        assert a == b
    assert not list(run.dir.rglob(".tmp-*"))


def test_files_that_finish_out_of_order_are_each_kept_on_resume(tmp_path):
    """Two workers: a large file 0 and small files 1..3, which finish (on the other worker) while
    file 0 is read; a kill -9 in file 0 resumes reading file 0 alone."""
    from dataforge.config import load_config
    from dataforge.store import Run

    corpus = tmp_path / "corpus"
    write_jsonl(corpus / "part-0.jsonl", docs(2000, 0, prefix="big"))
    for i in (1, 2, 3):
        write_jsonl(corpus / f"part-{i}.jsonl", [*docs(30, 10000 * i, prefix=f"small{i}"), "not json"])

    def write_cfg(root: str, workers: int) -> Path:
        path = tmp_path / f"{root}.yaml"
        path.write_text(yaml.safe_dump({
            "name": "o", "data_root": str(tmp_path / root), "shard_rows": 200, "textbooks": {"enabled": False},
            "cot": {"enabled": False}, "heuristics": {"enabled": False}, "dedup": {"enabled": False},
            "export": {"kinds": ["text"]}, "runner": {"workers": workers},
            "ingest": {"batch_rows": 50, "sources": {"corpus": {"path": str(corpus)}}}}))
        return path

    whole = _run_child(write_cfg("whole", 1))
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed_cfg = write_cfg("killed", 2)
    first = _run_child(killed_cfg, {KILL_ENV: "0:1000:1,2,3"})  # killed once files 1..3 are recorded
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    run = Run(load_config(killed_cfg).data_root, "r1")
    assert sorted(f["index"] for f in load_progress(run)["files"]) == [1, 2, 3]
    assert sorted(p.name for p in run.stage_dir("ingest").glob("part-00000-*.parquet")), "file 0's first shards"
    for i in (1, 2, 3):  # spoiled, same size and modification time: re-reading them would show
        p = corpus / f"part-{i}.jsonl"
        st = p.stat()
        p.write_bytes(b" " * (st.st_size - 1) + b"\n")
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))

    second = _run_child(killed_cfg)
    assert second.returncode == 0, second.stderr[-3000:]
    extra = run.load_record().stages["ingest"].extra
    assert (extra["files_reused"], extra["files_read"], extra["attempt"]) == (3, 1, 2)
    assert {f["index"]: f["attempt"] for f in load_progress(run)["files"]} == {0: 2, 1: 1, 2: 1, 3: 1}
    whole_run = Run(load_config(tmp_path / "whole.yaml").data_root, "r1")
    assert _rows(run) == _rows(whole_run)
    assert [f["name"] for f in run.committed("ingest")["files"]] == \
        [f["name"] for f in whole_run.committed("ingest")["files"]]
    assert extra["sources"] == whole_run.load_record().stages["ingest"].extra["sources"]
    assert sorted(p.name for p in (run.quarantine_dir() / "ingest").iterdir()) == \
        ["00001-corpus.jsonl", "00002-corpus.jsonl", "00003-corpus.jsonl"]
    assert not list(run.dir.rglob(".tmp-*"))


def test_files_read_at_once_give_what_one_at_a_time_gives(tmp_path):
    """Kept and rejected rows (ids, source_row, every column), shard names, quarantine files and
    the stage's counts: the same with one worker as with two and three; a source with max_rows reads
    its files in order whatever the workers."""
    for i in range(5):
        write_jsonl(tmp_path / "a" / f"a{i}.jsonl", [*docs(40 + 17 * i, 100 * i, prefix=f"a{i}"), "not json",
                                                     {"text": "  "}, {"text": 3}, *docs(5, 900 + i)])
    for i in range(3):
        write_jsonl(tmp_path / "b" / f"b{i}.jsonl", docs(30, 1000 + 100 * i, prefix=f"b{i}"))
    sources = {"a": "a/*.jsonl", "capped": {"path": "b/*.jsonl", "max_rows": 45},
               "w": {"path": "a/a[0-2].jsonl", "weight": 0.5}}
    got = {n: ingest(tmp_path, sources, root=f"data{n}", runner={"workers": n}, shard_rows=16,
                     ingest={"batch_rows": 7}) for n in (1, 2, 3)}
    one = got[1]

    def same(extra: dict) -> dict:  # the data roots differ
        return {k: v for k, v in extra.items() if k != "quarantine_dir"}

    for other in (got[2], got[3]):
        assert [r["id"] for r in one.kept] == [r["id"] for r in other.kept]
        assert one.kept == other.kept and one.rejected == other.rejected and one.quarantined == other.quarantined
        assert [r["source_row"] for r in one.kept] == [r["source_row"] for r in other.kept]
        assert one.run.committed("ingest")["files"] == other.run.committed("ingest")["files"]
        assert one.run.committed_rejected("ingest")["files"] == other.run.committed_rejected("ingest")["files"]
        assert sorted(p.name for p in (other.run.quarantine_dir() / "ingest").iterdir()) == \
            sorted(p.name for p in (one.run.quarantine_dir() / "ingest").iterdir())
        assert same(one.result.extra) == same(other.result.extra) and one.result.rows_kept == other.result.rows_kept
    capped = [r["text"] for r in got[2].kept if r["source_name"] == "capped"]
    assert capped == [d["text"] for d in [*docs(30, 1000, prefix="b0"), *docs(15, 1100, prefix="b1")]]
    assert got[2].result.extra["sources"]["capped"]["files_not_read"] == 1


def test_a_file_that_fails_fails_the_run_and_the_files_read_beside_it_leave_no_partial_shard(tmp_path, monkeypatch):
    from dataforge.stages import ingest as stage
    from dataforge.store import MANIFEST

    for i in range(4):
        write_jsonl(tmp_path / "in" / f"f{i}.jsonl", docs(400, 1000 * i))
    real = stage.ingest_file

    def failing(run, io, cfg, src, sf, *args, **kwargs):
        if sf.index == 1:
            raise RuntimeError("boom: file 1 cannot be written")
        return real(run, io, cfg, src, sf, *args, **kwargs)

    monkeypatch.setattr(stage, "ingest_file", failing)
    monkeypatch.setattr(stage, "POOL", "thread")  # the patched function runs in this process
    cfg = config(tmp_path, {"in": "in"}, runner={"workers": 2}, shard_rows=10, ingest={"batch_rows": 5})
    run = open_run(cfg, "r1")
    with pytest.raises(RuntimeError, match=r"^boom: file 1 cannot be written$"):
        get_stage("ingest").run(run, cfg)
    assert not (run.stage_dir("ingest") / MANIFEST).exists()
    assert not list(run.dir.rglob(".tmp-*"))  # file 0, stopped at its next batch, removed its open shard
    recorded = load_progress(run)["files"]
    assert all(f["index"] != 1 for f in recorded)
    monkeypatch.setattr(stage, "ingest_file", real)
    again = get_stage("ingest").run(run, cfg)
    assert again.extra["files_reused"] == len(recorded) and len(run.read("ingest")) == 1600


@pytest.mark.parametrize("where", ["local", "object store"])
def test_a_resume_keeps_finished_files_and_removes_what_the_crashed_file_left(tmp_path, where):
    """The state a crash in the third file leaves (no manifest, a progress record ending in a torn
    line, a shard and a temporary file of the third file) on a local root and on an object store
    (fsspec's memory filesystem behind pyarrow: no rename, no append)."""
    import uuid

    from dataforge.store import MANIFEST, read_text, write_text

    for i in range(3):
        write_jsonl(tmp_path / "in" / f"f{i}.jsonl", [*docs(25, 100 * i), "not json"])
    root = str(tmp_path / "data") if where == "local" else f"memory://ingest-resume-{uuid.uuid4().hex[:8]}"
    cfg = parse_config({"name": "t", "data_root": root, "shard_rows": 10, "textbooks": {"enabled": False},
                        "cot": {"enabled": False}, "ingest": {"sources": {"in": str(tmp_path / "in")}}})
    run = open_run(cfg, "r1")
    first = get_stage("ingest").run(run, cfg)
    rows = run.read("ingest").to_pylist()
    assert first.extra["files_read"] == 3 and len(rows) == 75 and first.extra["quarantined"] == 3
    fs, stage = run.filesystem, run.stage_dir("ingest")

    def put(path, data: bytes) -> None:
        if fs is None:
            Path(path).write_bytes(data)
        else:
            with fs.open_output_stream(str(path)) as f:
                f.write(data)

    def names(folder) -> set[str]:
        import pyarrow.fs as pafs

        if fs is None:
            return {p.name for p in Path(folder).iterdir()}
        return {Path(i.path).name for i in fs.get_file_info(pafs.FileSelector(str(folder)))}

    # the crash: the kept manifest is not written, the third file's line is torn, its shards stay
    lines = read_text(stage / "_progress.jsonl", fs).splitlines()  # files are recorded as they finish, in any order
    third = next(i for i, line in enumerate(lines) if '"index": 2,' in line)
    lines.append(lines.pop(third))
    write_text(stage / "_progress.jsonl", "\n".join(lines[:4]) + "\n" + lines[4][:40], fs)
    if fs is None:
        (stage / MANIFEST).unlink()
    else:
        fs.delete_file(str(stage / MANIFEST))
    put(stage / "part-00002-00009.parquet", b"half a shard")
    put(stage / ".tmp-part-00002-00010.parquet", b"")
    assert sorted(f["index"] for f in load_progress(run)["files"]) == [0, 1]

    again = get_stage("ingest").run(run, cfg)
    assert (again.extra["files_reused"], again.extra["files_read"], again.extra["attempt"]) == (2, 1, 2)
    assert run.read("ingest").to_pylist() == rows
    assert names(stage) == {MANIFEST, "_progress.jsonl", *(f["name"] for f in run.committed("ingest")["files"])}
    assert len(names(run.quarantine_dir() / "ingest")) == 3
    assert [f["attempt"] for f in load_progress(run)["files"]] == [1, 1, 2]


# --- a pipeline whose only data is its sources -------------------------------------------------

@pytest.mark.prefect
def test_dataforge_run_of_a_sources_only_config_needs_no_teacher(tmp_path, pile_docs):
    from typer.testing import CliRunner

    from dataforge.cli.main import app
    from dataforge.store import list_runs

    write_jsonl(tmp_path / "pile.jsonl", pile_docs[:200])
    path = tmp_path / "sources.yaml"
    # teacher: local, and no llama.cpp server: a run that tried to start or ask it would fail
    path.write_text(yaml.safe_dump({
        "name": "src", "data_root": str(tmp_path / "data"), "teacher": "local",
        "textbooks": {"enabled": False}, "cot": {"enabled": False},
        "ingest": {"sources": {"pile": {"path": "pile.jsonl", "fields": {"text": "contents"}}}},
        "export": {"kinds": ["text"]}}))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    run = list_runs(tmp_path / "data")[-1]
    rec = run.load_record()
    assert list(rec.stages) == ["ingest", "heuristics", "dedup", "export"]
    assert all(st.status == "completed" for st in rec.stages.values())
    assert rec.stages["ingest"].rows_kept == 200 and rec.teacher["requests_sent"] == 0
    assert not (tmp_path / "data" / "teacher").exists()
    out = pq.read_table(run.export_dir("default") / "text" / "train.parquet")
    assert out.num_rows > 100 and set(out.column("kind").to_pylist()) == {"document"}

    # a source that matches nothing fails in one line, before a run is opened
    path.write_text(path.read_text().replace("pile.jsonl", "nope/*.jsonl"))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code != 0 and "ingest.sources.pile: nope/*.jsonl" in result.output
    assert len(list_runs(tmp_path / "data")) == 1


# --- the curate-folder flow --------------------------------------------------------------------

@pytest.mark.prefect
def test_curate_folder_curates_only_the_files_that_appeared_since_its_last_run(tmp_path):
    from dataforge.config import load_config
    from dataforge.store import Run
    from flows.curate_folder import curate_folder, load_state

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "fold", "data_root": str(tmp_path / "data"),
                                    "heuristics": {"enabled": False}, "export": {"kinds": ["text"]}}))
    incoming = tmp_path / "data" / "incoming"
    write_jsonl(incoming / "a.jsonl", docs(5, 0))
    write_jsonl(incoming / "b.jsonl", docs(5, 5))
    first = curate_folder(str(path), "incoming", source="inbox")
    run1 = Run(tmp_path / "data", first)
    rows1 = run1.read("ingest").to_pylist()
    assert sorted({Path(r["source_file"]).name for r in rows1}) == ["a.jsonl", "b.jsonl"] and len(rows1) == 10
    assert {r["source_name"] for r in rows1} == {"inbox"}
    rec = run1.load_record()
    assert "textbooks" not in rec.stages and rec.stages["export"].status == "completed"

    write_jsonl(incoming / "c.jsonl", docs(3, 10))
    second = curate_folder(str(path), "incoming", source="inbox")
    assert second != first
    rows2 = Run(tmp_path / "data", second).read("ingest").to_pylist()
    assert sorted({Path(r["source_file"]).name for r in rows2}) == ["c.jsonl"] and len(rows2) == 3
    assert curate_folder(str(path), "incoming", source="inbox") is None  # nothing new
    state = load_state(load_config(path), "inbox")
    assert sorted(Path(f).name for f in state["files"]) == ["a.jsonl", "b.jsonl", "c.jsonl"]
    assert [r["run_id"] for r in state["runs"]] == [first, second]


# --- real data ---------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_real_pile_alpaca_and_gsm8k_files(tmp_path, shared_data):
    got = ingest(tmp_path, {
        "pile": {"path": str(shared_data / "web" / "pile_1k.jsonl"), "fields": {"text": "contents"}},
        "alpaca": {"path": str(shared_data / "alpaca" / "random_9k.json"), "kind": "instruction", "max_rows": 2000},
        "gsm8k": {"path": str(shared_data / "gsm8k" / "test.jsonl"), "kind": "cot",
                  "fields": {"rationale": "answer"}}})
    s = got.result.extra["sources"]
    assert (s["pile"]["records"], s["pile"]["quarantined"]) == (1000, 0)
    assert s["pile"]["kept"] + s["pile"]["empty"] == 1000
    assert s["alpaca"]["kept"] == 2000 and s["alpaca"]["capped"]
    assert s["gsm8k"]["kept"] == 1319
    pile = [r for r in got.kept if r["source_name"] == "pile"]
    with open(shared_data / "web" / "pile_1k.jsonl", encoding="utf-8") as f:
        lines = {i: json.loads(line)["contents"] for i, line in enumerate(f, 1)}
    assert all(lines[r["source_row"]] == r["text"] for r in pile)
    alpaca = [r for r in got.kept if r["source_name"] == "alpaca"]
    original = json.loads((shared_data / "alpaca" / "random_9k.json").read_text())
    for r in alpaca[:50]:
        o = original[r["source_row"] - 1]
        assert r["messages"][-1]["content"] == o["output"] and r["messages"][0]["content"].startswith(o["instruction"])


def test_the_stage_is_registered_with_its_page():
    st = get_stage("ingest")
    assert (st.kind, st.order, st.teacher) == ("generation", 5, False)
    assert SourceConfig.model_validate({"name": "x", "path": "a.jsonl"}).kind == "document"


def test_sources_at_the_top_are_the_ingest_stages_and_turn_generation_off():
    from dataforge.config import ConfigError, parse_config

    cfg = parse_config({"sources": {"pile": {"path": "corpus/*.jsonl"}}})
    assert cfg.ingest.enabled and "pile" in str(cfg.ingest.sources)
    assert not cfg.textbooks.enabled and not cfg.cot.enabled
    mixed = parse_config({"sources": {"pile": {"path": "corpus/*.jsonl"}}, "textbooks": {"enabled": True}})
    assert mixed.textbooks.enabled and not mixed.cot.enabled
    assert parse_config({}).textbooks.enabled  # no sources: generation as before
    with pytest.raises(ConfigError, match="both at the top and under ingest"):
        parse_config({"sources": {"a": {"path": "x.jsonl"}}, "ingest": {"sources": {"b": {"path": "y.jsonl"}}}})
