"""The run store: shard writer, manifests, atomic commit under crashes, run.json, run listing."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataforge.records import SAMPLE_SCHEMA, SCHEMA_VERSION, make_sample, samples_to_table
from dataforge.store import (
    MANIFEST,
    TMP_PREFIX,
    FileEntry,
    Run,
    RunRecord,
    ShardWriter,
    StageNotCommitted,
    StageStatus,
    StoreError,
    input_fingerprint,
    iter_batches,
    latest_run,
    list_runs,
    manifest_files,
    manifest_schema,
    read_manifest,
    read_table,
    schema_from_b64,
    schema_to_b64,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[1]

SIMPLE = pa.schema([("i", pa.int64()), ("s", pa.string())], metadata={"origin": "test_store"})


def simple_table(start: int, n: int) -> pa.Table:
    return pa.table({"i": pa.array(range(start, start + n), pa.int64()),
                     "s": [f"row {k}" for k in range(start, start + n)]}, schema=SIMPLE)


def sample_table(n: int, tag: str = "") -> pa.Table:
    rows = [make_sample("textbook", f"section {tag} {k}: water evaporates, condenses and falls as rain.",
                        topic="the water cycle", sample_index=k) for k in range(n)]
    return samples_to_table(rows)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def part_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.name.startswith("part-") and p.suffix == ".parquet")


def tmp_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.name.startswith(TMP_PREFIX))


# --- ShardWriter and manifests -------------------------------------------------------------

def test_shard_writer_bounds_rows_per_shard_and_uses_zstd(tmp_path):
    d = tmp_path / "stage"
    w = ShardWriter(d, max_rows=1000, schema=SIMPLE)
    # chunks of 300 cross the shard boundaries at 1000 and 2000 mid-chunk
    for start in range(0, 2500, 300):
        w.write(simple_table(start, min(300, 2500 - start)))
    entries = w.close()

    files = part_files(d)
    assert [p.name for p in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.ParquetFile(p).metadata.num_rows for p in files] == [1000, 1000, 500]
    assert [e.rows for e in entries] == [1000, 1000, 500]
    assert tmp_files(d) == []
    for p in files:
        md = pq.ParquetFile(p).metadata
        for rg in range(md.num_row_groups):
            for c in range(md.num_columns):
                assert md.row_group(rg).column(c).compression == "ZSTD", (p.name, rg, c)


def test_shard_writer_other_compression_is_honoured(tmp_path):
    # guards the zstd check above against a reader that reports ZSTD whatever was written
    w = ShardWriter(tmp_path / "s", max_rows=10, schema=SIMPLE, compression="snappy")
    w.write(simple_table(0, 5))
    (entry,) = w.close()
    md = pq.ParquetFile(tmp_path / "s" / entry.name).metadata
    assert md.row_group(0).column(0).compression == "SNAPPY"


def test_manifest_matches_files_on_disk(tmp_path):
    d = tmp_path / "stage"
    table = pa.concat_tables([sample_table(700, "a"), sample_table(600, "b")])
    w = ShardWriter(d, max_rows=500)
    w.write(table.slice(0, 700))
    w.write(table.slice(700))
    entries = w.close()
    m = write_manifest(d, entries, table.schema, stage="x", input_fingerprint="fp", config_hash="ch")

    on_disk = json.loads((d / MANIFEST).read_text())
    assert on_disk == m == read_manifest(d)
    assert [f["name"] for f in on_disk["files"]] == [p.name for p in part_files(d)]
    for f in on_disk["files"]:
        p = d / f["name"]
        assert f["sha256"] == sha256_of(p)
        assert f["bytes"] == p.stat().st_size
        assert f["rows"] == pq.ParquetFile(p).metadata.num_rows
    assert on_disk["rows"] == 1300
    assert on_disk["bytes"] == sum(p.stat().st_size for p in part_files(d))
    assert on_disk["stage"] == "x" and on_disk["input_fingerprint"] == "fp" and on_disk["config_hash"] == "ch"
    assert manifest_files(d) == part_files(d)


def test_schema_ipc_round_trip_keeps_types_and_metadata(tmp_path):
    schema = SAMPLE_SCHEMA.append(pa.field("heur_words", pa.int32()))
    back = schema_from_b64(schema_to_b64(schema))
    assert back.equals(schema, check_metadata=True)
    assert back.metadata[b"dataforge.schema_version"] == str(SCHEMA_VERSION).encode()

    d = tmp_path / "s"
    write_manifest(d, [], schema)
    assert manifest_schema(d).equals(schema, check_metadata=True)
    assert json.loads((d / MANIFEST).read_text())["schema"][3].startswith("messages: list<")


def test_read_table_and_iter_batches_return_exactly_the_rows_written(tmp_path):
    d = tmp_path / "stage"
    table = sample_table(2345, "r")
    w = ShardWriter(d, max_rows=1000, schema=SAMPLE_SCHEMA)
    for off in range(0, table.num_rows, 777):
        w.write(table.slice(off, 777))
    write_manifest(d, w.close(), SAMPLE_SCHEMA)

    back = read_table(d)
    assert back.num_rows == 2345
    assert back.to_pylist() == table.to_pylist()
    batches = list(iter_batches(d, batch_size=300))
    assert max(b.num_rows for b in batches) <= 300
    assert pa.Table.from_batches(batches).to_pylist() == table.to_pylist()
    ids = read_table(d, columns=["id"])
    assert ids.column_names == ["id"]
    assert ids.column("id").to_pylist() == table.column("id").to_pylist()
    # a file on disk that the manifest does not list is not read
    pq.write_table(sample_table(5, "stray"), d / "part-00099.parquet")
    assert read_table(d).num_rows == 2345


def test_writer_reorders_and_casts_to_its_schema(tmp_path):
    d = tmp_path / "s"
    w = ShardWriter(d, max_rows=100, schema=SIMPLE)
    w.write(pa.table({"s": ["a", "b"], "i": pa.array([1, 2], pa.int32())}))  # other order, int32
    write_manifest(d, w.close(), SIMPLE)
    back = read_table(d)
    assert back.schema.names == ["i", "s"]
    assert back.schema.field("i").type == pa.int64()
    assert back.to_pylist() == [{"i": 1, "s": "a"}, {"i": 2, "s": "b"}]


@pytest.mark.parametrize("write_empty", [False, True])
def test_empty_stage_keeps_its_schema(tmp_path, write_empty):
    d = tmp_path / "empty"
    if write_empty:  # schema taken from the (empty) table
        w = ShardWriter(d)
        w.write(SAMPLE_SCHEMA.empty_table())
        assert w.schema is not None
    else:
        w = ShardWriter(d, schema=SAMPLE_SCHEMA)
    entries = w.close()
    assert entries == [] and part_files(d) == [] and tmp_files(d) == []
    m = write_manifest(d, entries, w.schema)
    assert m["files"] == [] and m["rows"] == 0
    t = read_table(d)
    assert t.num_rows == 0
    assert t.schema.equals(SAMPLE_SCHEMA)
    assert read_table(d, columns=["id", "kind"]).schema.names == ["id", "kind"]
    assert list(iter_batches(d)) == []


def test_writer_error_inside_with_leaves_no_temporary_file(tmp_path):
    d = tmp_path / "s"
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(d, max_rows=1000, schema=SIMPLE) as w:
            w.write(simple_table(0, 10))
            assert len(tmp_files(d)) == 1
            raise RuntimeError("boom")
    assert tmp_files(d) == [] and part_files(d) == []


def test_max_rows_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        ShardWriter(tmp_path / "s", max_rows=0)


def test_uncommitted_directory_is_not_readable(tmp_path):
    d = tmp_path / "s"
    w = ShardWriter(d, max_rows=10, schema=SIMPLE)
    w.write(simple_table(0, 25))
    w.close()
    assert len(part_files(d)) == 3  # shards complete, but no manifest
    for fn in (read_table, manifest_files, manifest_schema):
        with pytest.raises(StageNotCommitted):
            fn(d)
    with pytest.raises(StageNotCommitted):
        list(iter_batches(d))


# --- crashes -------------------------------------------------------------------------------

CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import pyarrow as pa
    from dataforge.store import Run, ShardWriter, write_manifest
    from dataforge import store

    data_root, run_id, mode = sys.argv[1:4]
    run = Run(data_root, run_id)
    if mode == "rerun":
        run.begin_stage("gen")
    d = run.stage_dir("gen")
    d.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("i", pa.int64()), ("s", pa.string())])
    max_rows = {"tmp": 10**9, "rerun": 10**9, "renamed": 40, "manifest": 40}[mode]
    w = ShardWriter(d, max_rows=max_rows, schema=schema)
    big = "x" * 4000

    def ready(msg):
        print(msg, flush=True)
        time.sleep(120)  # wait for SIGKILL

    if mode == "manifest":
        w.write(pa.table({"i": list(range(100)), "s": [big] * 100}, schema=schema))
        entries = w.close()
        real_replace = os.replace
        def slow_replace(src, dst):
            if os.path.basename(str(dst)) == "_manifest.json":
                ready("READY manifest tmp written")
            return real_replace(src, dst)
        store.os.replace = slow_replace
        write_manifest(d, entries, schema)
        sys.exit(3)  # never reached

    announced = False
    for k in range(100000):
        w.write(pa.table({"i": [k] * 10, "s": [big] * 10}, schema=schema))
        names = os.listdir(d)
        if mode in ("tmp", "rerun"):
            hit = any(n.startswith(".tmp-") for n in names)
        else:
            hit = sum(n.startswith("part-") for n in names) >= 2
        if hit and not announced:
            print("READY " + ",".join(sorted(names)), flush=True)
            announced = True
        time.sleep(0.005)
    sys.exit(3)  # never reached in time
    """
)


def run_until_ready_then_kill(data_root: Path, run_id: str, mode: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(data_root), run_id, mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 0.5)
            if r:
                line = proc.stdout.readline()
                break
            if proc.poll() is not None:
                break
        assert line.startswith("READY"), f"child did not get ready: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        return line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_not_committed(run: Run, stage: str) -> None:
    d = run.stage_dir(stage)
    assert not (d / MANIFEST).exists()
    assert run.committed(stage) is None
    with pytest.raises(StageNotCommitted):
        read_table(d)
    with pytest.raises(StageNotCommitted):
        manifest_files(d)
    with pytest.raises(StageNotCommitted):
        run.read(stage)


def assert_begin_stage_clears(run: Run, stage: str) -> None:
    run.begin_stage(stage)
    assert list(run.stage_dir(stage).iterdir()) == []
    assert list(run.rejected_dir(stage).iterdir()) == []


def test_kill_while_first_shard_is_being_written(tmp_path):
    run = Run(tmp_path, "crash-1")
    run_until_ready_then_kill(tmp_path, "crash-1", "tmp")
    d = run.stage_dir("gen")
    leftovers = list(d.iterdir())
    assert leftovers, "the child wrote nothing"
    assert all(p.name.startswith(TMP_PREFIX) for p in leftovers), leftovers
    assert part_files(d) == []
    assert_not_committed(run, "gen")
    assert not run.is_done("gen", "none", "anything")
    assert_begin_stage_clears(run, "gen")


def test_kill_after_shards_renamed_but_before_manifest(tmp_path):
    run = Run(tmp_path, "crash-2")
    run_until_ready_then_kill(tmp_path, "crash-2", "renamed")
    d = run.stage_dir("gen")
    assert len(part_files(d)) >= 2  # complete shards are on disk ...
    assert_not_committed(run, "gen")  # ... but unreadable without a manifest
    assert not run.is_done("gen", "none", "anything")
    assert_begin_stage_clears(run, "gen")


def test_kill_during_manifest_write_leaves_no_manifest(tmp_path):
    run = Run(tmp_path, "crash-3")
    run_until_ready_then_kill(tmp_path, "crash-3", "manifest")
    d = run.stage_dir("gen")
    assert len(part_files(d)) == 3
    assert [p.name for p in tmp_files(d)][0].startswith(f"{TMP_PREFIX}{MANIFEST}")
    assert_not_committed(run, "gen")
    assert_begin_stage_clears(run, "gen")


def commit_gen(run: Run, table: pa.Table, fp: str = "fp-1", ch: str = "ch-1") -> dict:
    run.begin_stage("gen")
    w = ShardWriter(run.stage_dir("gen"), max_rows=100, schema=table.schema)
    w.write(table)
    return run.commit_stage("gen", w.close(), [], table.schema, table.schema, fingerprint=fp, config_hash=ch)


def test_committed_stage_then_crashed_rerun_is_not_done_and_not_stale(tmp_path):
    run = Run(tmp_path, "crash-4")
    commit_gen(run, simple_table(0, 250))
    assert run.is_done("gen", "fp-1", "ch-1")
    assert read_table(run.stage_dir("gen")).num_rows == 250

    run_until_ready_then_kill(tmp_path, "crash-4", "rerun")
    d = run.stage_dir("gen")
    # the re-run cleared the old shards and manifest; its own output never got committed
    assert all(p.name.startswith(TMP_PREFIX) for p in d.iterdir())
    assert_not_committed(run, "gen")
    assert not run.is_done("gen", "fp-1", "ch-1")
    assert_begin_stage_clears(run, "gen")


@pytest.mark.parametrize("had_manifest", [False, True])
def test_failed_manifest_replace_leaves_old_or_no_manifest(tmp_path, monkeypatch, had_manifest):
    d = tmp_path / "s"
    w = ShardWriter(d, max_rows=100, schema=SIMPLE)
    w.write(simple_table(0, 150))
    entries = w.close()
    old_text = None
    if had_manifest:
        write_manifest(d, entries[:1], SIMPLE, generation="old")
        old_text = (d / MANIFEST).read_text()

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_manifest(d, entries, SIMPLE, generation="new")
    monkeypatch.undo()

    if had_manifest:
        assert (d / MANIFEST).read_text() == old_text
        m = json.loads(old_text)
        assert m["generation"] == "old" and m["rows"] == 100
        assert read_table(d).num_rows == 100
    else:
        assert not (d / MANIFEST).exists()
        with pytest.raises(StageNotCommitted):
            read_table(d)
    # whatever the failed attempt left is only under a temporary name
    for p in d.iterdir():
        assert p.name.startswith(("part-", TMP_PREFIX)) or (had_manifest and p.name == MANIFEST), p.name


# --- is_done and fingerprints --------------------------------------------------------------

def test_is_done_requires_same_fingerprint_and_config_hash(tmp_path):
    run = Run(tmp_path, "r")
    assert not run.is_done("gen", "fp-1", "ch-1")
    commit_gen(run, simple_table(0, 10))
    assert run.is_done("gen", "fp-1", "ch-1")
    assert not run.is_done("gen", "fp-2", "ch-1")
    assert not run.is_done("gen", "fp-1", "ch-2")
    assert not run.is_done("other", "fp-1", "ch-1")
    # the rejected manifest alone is not a commit
    assert run.committed_rejected("gen")["kind"] == "rejected"
    (run.stage_dir("gen") / MANIFEST).unlink()
    assert not run.is_done("gen", "fp-1", "ch-1")


def test_input_fingerprint_follows_input_shards(tmp_path):
    run = Run(tmp_path, "r")
    m1 = commit_gen(run, simple_table(0, 250))
    fp1 = input_fingerprint([run.committed("gen")])
    assert fp1 == input_fingerprint([m1])  # deterministic for the same manifest

    m2 = commit_gen(run, simple_table(0, 250).set_column(1, "s", pa.array(["changed"] * 250)))
    fp2 = input_fingerprint([run.committed("gen")])
    assert [f["rows"] for f in m1["files"]] == [f["rows"] for f in m2["files"]]
    assert fp2 != fp1

    # only the last shard differs
    t3 = simple_table(0, 250)
    t3 = t3.set_column(1, "s", pa.array(t3.column("s").to_pylist()[:249] + ["other"]))
    m3 = commit_gen(run, t3)
    assert [f["sha256"] for f in m3["files"]][:2] == [f["sha256"] for f in m1["files"]][:2]
    assert input_fingerprint([m3]) not in (fp1, fp2)

    # order of inputs, a missing input, and the boundary between manifests all count
    assert input_fingerprint([m1, m2]) != input_fingerprint([m2, m1])
    assert input_fingerprint([m1, None]) != input_fingerprint([m1])
    a = {"files": [{"sha256": "aa"}, {"sha256": "bb"}]}
    b1, b2 = {"files": [{"sha256": "aa"}]}, {"files": [{"sha256": "bb"}]}
    assert input_fingerprint([a]) != input_fingerprint([b1, b2])


# --- run.json and runs ---------------------------------------------------------------------

def test_run_record_round_trip(tmp_path):
    run = Run(tmp_path, "rec-1")
    assert not run.exists()
    with pytest.raises(StoreError):
        run.load_record()
    rec = RunRecord(run_id="rec-1", name="quick", created_at="2024-05-01T10:00:00+00:00",
                    config={"teacher": {"api_key_env": "OPENAI_API_KEY"}, "seed": 7},
                    versions={"python": "3.x"},
                    stages={"cot": StageStatus(status="completed", rows_in=8, rows_kept=3, rows_dropped=5,
                                               seconds=1.5, teacher={"requests_sent": 8}, extra={"verified": 3}),
                            "dedup": StageStatus()})
    run.save_record(rec)
    assert run.exists() and run.record_path == tmp_path.resolve() / "runs" / "rec-1" / "run.json"
    back = run.load_record()
    assert back.updated_at is not None
    assert back == rec  # save_record stamped updated_at on rec too
    assert isinstance(back.stages["cot"], StageStatus)
    assert back.stages["cot"].rows_dropped == 5 and back.stages["cot"].extra == {"verified": 3}
    assert back.stages["dedup"].status == "pending"
    assert list(back.stages) == ["cot", "dedup"]
    assert json.loads(run.record_path.read_text())["stages"]["cot"]["teacher"] == {"requests_sent": 8}
    assert sorted(p.name for p in run.dir.iterdir()) == ["_lock.json", "run.json"]  # no temporary left


def make_run(root: Path, run_id: str, created: str) -> Run:
    run = Run(root, run_id)
    run.save_record(RunRecord(run_id=run_id, name="x", created_at=created))
    return run


def test_list_runs_and_latest_run_order_by_created_at(tmp_path):
    assert list_runs(tmp_path) == []
    with pytest.raises(StoreError, match="no runs"):
        latest_run(tmp_path)
    # names sort the opposite way from creation times
    make_run(tmp_path, "c-run", "2024-01-01T00:00:00+00:00")
    make_run(tmp_path, "a-run", "2024-03-01T00:00:00+00:00")
    make_run(tmp_path, "b-run", "2024-02-01T00:00:00+00:00")
    (tmp_path / "runs" / "not-a-run").mkdir()  # no run.json: ignored
    broken = tmp_path / "runs" / "z-broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")  # unreadable: ignored
    assert [r.run_id for r in list_runs(tmp_path)] == ["c-run", "b-run", "a-run"]
    assert latest_run(tmp_path).run_id == "a-run"
    make_run(tmp_path, "0-run", "2024-04-01T00:00:00+00:00")
    assert latest_run(tmp_path).run_id == "0-run"


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden", "..", "../escape"])
def test_invalid_run_id_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match="invalid run id"):
        Run(tmp_path, bad)


def test_run_layout(tmp_path):
    run = Run(tmp_path, "lay")
    root = tmp_path.resolve()
    assert run.stage_dir("cot") == root / "runs" / "lay" / "cot"
    assert run.rejected_dir("cot") == root / "runs" / "lay" / "rejected" / "cot"
    assert run.export_dir("default") == root / "runs" / "lay" / "export" / "default"


# --- a data root on pyarrow's filesystem layer (an object store) ------------------------------

def memory_fs(handler_cls=None):
    """An in-memory, object-store-like pyarrow filesystem (fsspec's MemoryFileSystem: no
    atomic rename of directories, nothing on local disk). fsspec's memory store is one global
    dict per process, so each filesystem here is rooted at its own random prefix."""
    import uuid

    import pyarrow.fs as pafs
    from fsspec.implementations.memory import MemoryFileSystem

    fs = pafs.PyFileSystem((handler_cls or pafs.FSSpecHandler)(MemoryFileSystem()))
    root = f"/test-{uuid.uuid4().hex[:8]}"  # fsspec memory paths are absolute
    fs.create_dir(root)
    return pafs.SubTreeFileSystem(root, fs)


def test_object_store_root_round_trip_without_local_files(tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    monkeypatch.chdir(tmp_path)
    fs = memory_fs()
    run = Run(fs, "r1")
    assert not run.is_local and run.filesystem is fs
    run.save_record(RunRecord(run_id="r1", name="n", created_at="2026-01-01T00:00:00+00:00"))
    assert run.exists() and run.load_record().name == "n"
    run.begin_stage("textbooks")
    w = run.shard_writer(run.stage_dir("textbooks"), max_rows=4, schema=SAMPLE_SCHEMA)
    table = sample_table(10)
    w.write(table)
    entries = w.close()
    assert [e.rows for e in entries] == [4, 4, 2]
    run.commit_stage("textbooks", entries, [], SAMPLE_SCHEMA, SAMPLE_SCHEMA, fingerprint="f", config_hash="c")
    assert run.read("textbooks").equals(table)
    m = run.committed("textbooks")
    for e in m["files"]:  # the manifest's size and sha256 are those of the stored objects
        with fs.open_input_stream(f"runs/r1/textbooks/{e['name']}") as f:
            data = f.read()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (e["bytes"], e["sha256"])
    assert sum(b.num_rows for b in iter_batches(run.stage_dir("textbooks"), filesystem=fs)) == 10
    assert run.is_done("textbooks", "f", "c")
    # no temporary keys left, nothing written to the local disk
    keys = [i.path for i in fs.get_file_info(pafs.FileSelector("", recursive=True))]
    assert not [k for k in keys if TMP_PREFIX in k], keys
    assert list(tmp_path.iterdir()) == []
    # run listing and the same bytes as a local store
    Run(fs, "r2").save_record(RunRecord(run_id="r2", name="n", created_at="2026-01-02T00:00:00+00:00"))
    assert [r.run_id for r in list_runs(fs)] == ["r1", "r2"] and latest_run(fs).run_id == "r2"
    local = Run(tmp_path / "data", "r1")
    local.begin_stage("textbooks")
    lw = local.shard_writer(local.stage_dir("textbooks"), max_rows=4, schema=SAMPLE_SCHEMA)
    lw.write(table)
    assert [(e.rows, e.bytes, e.sha256) for e in lw.close()] == [(e.rows, e.bytes, e.sha256) for e in entries]


def test_object_store_crash_between_data_and_manifest_shows_no_shard():
    fs = memory_fs()
    run = Run(fs, "r1")
    run.begin_stage("heuristics")
    w = run.shard_writer(run.stage_dir("heuristics"), max_rows=3, schema=SIMPLE)
    w.write(simple_table(0, 7))
    entries = w.close()  # the data is stored ...
    stored = [i for i in fs.get_file_info(pafs_selector("runs/r1/heuristics")) if i.path.endswith(".parquet")]
    assert len(stored) == len(entries) == 3
    # ... and the process dies before the manifest: the stage is not committed, nothing is readable
    assert run.committed("heuristics") is None
    with pytest.raises(StageNotCommitted):
        run.read("heuristics")
    with pytest.raises(StageNotCommitted):
        manifest_files(run.stage_dir("heuristics"), fs)
    # the next attempt clears the stray shards before writing its own
    run.begin_stage("heuristics")
    assert [i for i in fs.get_file_info(pafs_selector("runs/r1/heuristics"))] == []
    w = run.shard_writer(run.stage_dir("heuristics"), max_rows=3, schema=SIMPLE)
    w.write(simple_table(0, 2))
    run.commit_stage("heuristics", w.close(), [], SIMPLE, SIMPLE, fingerprint="f", config_hash="c")
    assert run.read("heuristics").equals(simple_table(0, 2))


def pafs_selector(path: str):
    import pyarrow.fs as pafs

    return pafs.FileSelector(path, allow_not_found=True)


def test_object_store_failed_manifest_write_leaves_the_old_manifest_or_none():
    """The manifest goes under a temporary key and is moved over the old one: a failure in the
    move leaves the previous commit (or none), never a partial manifest, and no temporary key."""
    import pyarrow.fs as pafs

    class FailingMove(pafs.FSSpecHandler):
        fail = False

        def move(self, src, dest):
            if FailingMove.fail:
                raise OSError("connection reset")
            return super().move(src, dest)

    fs = memory_fs(FailingMove)
    run = Run(fs, "r1")
    run.begin_stage("s")
    FailingMove.fail = True
    with pytest.raises(OSError, match="connection reset"):
        write_manifest(run.stage_dir("s"), [], SIMPLE, filesystem=fs)
    assert run.committed("s") is None
    FailingMove.fail = False
    write_manifest(run.stage_dir("s"), [], SIMPLE, filesystem=fs, tag="old")
    FailingMove.fail = True
    with pytest.raises(OSError):
        write_manifest(run.stage_dir("s"), [], SIMPLE, filesystem=fs, tag="new")
    FailingMove.fail = False
    assert run.committed("s")["tag"] == "old"
    assert not [i.path for i in fs.get_file_info(pafs_selector("runs/r1/s")) if TMP_PREFIX in i.path]


def test_object_store_shard_writer_error_uploads_nothing():
    fs = memory_fs()
    run = Run(fs, "r1")
    run.begin_stage("s")
    with pytest.raises(RuntimeError):
        with run.shard_writer(run.stage_dir("s"), max_rows=100, schema=SIMPLE) as w:
            w.write(simple_table(0, 5))
            raise RuntimeError("boom")
    assert list(fs.get_file_info(pafs_selector("runs/r1/s"))) == []


KILL_BEFORE_MANIFEST = textwrap.dedent("""
    import os, signal, sys
    import pyarrow as pa, pyarrow.fs as pafs
    from fsspec.implementations.local import LocalFileSystem
    from dataforge.store import Run
    # fsspec's local filesystem behind pyarrow's PyFileSystem: the store takes its object-store
    # path (no local renames), and the objects outlive this process for the parent to look at
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(LocalFileSystem()))
    run = Run((fs, sys.argv[1]), "r1")
    run.begin_stage("s")
    w = run.shard_writer(run.stage_dir("s"), max_rows=2, schema=pa.schema([("i", pa.int64())]))
    w.write(pa.table({"i": pa.array(range(5), pa.int64())}))
    w.close()
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_object_store_kill_before_manifest_leaves_no_visible_shard(tmp_path):
    import pyarrow.fs as pafs
    from fsspec.implementations.local import LocalFileSystem

    proc = subprocess.run([sys.executable, "-c", KILL_BEFORE_MANIFEST, str(tmp_path / "root")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    shards = sorted(p.name for p in (tmp_path / "root" / "runs" / "r1" / "s").iterdir())
    assert len(shards) == 3 and all(n.endswith(".parquet") for n in shards)  # written, not committed
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(LocalFileSystem()))
    run = Run((fs, str(tmp_path / "root")), "r1")
    assert not run.is_local and run.committed("s") is None
    with pytest.raises(StageNotCommitted):
        run.read("s")


def test_data_root_forms(tmp_path):
    import pickle
    from pathlib import PurePosixPath

    import pyarrow.fs as pafs

    from dataforge.store import is_local_data_root, local_data_root

    assert Run(f"file://{tmp_path}", "r1").dir == tmp_path.resolve() / "runs" / "r1"
    assert Run(pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), "r1").is_local
    assert Run((pafs.LocalFileSystem(), str(tmp_path)), "r1").dir == tmp_path.resolve() / "runs" / "r1"
    s3 = Run("s3://bucket/prefix?region=us-east-1", "r1")  # opened without going to the network
    assert isinstance(s3.filesystem, pafs.S3FileSystem) and s3.dir == PurePosixPath("bucket/prefix/runs/r1")
    back = pickle.loads(pickle.dumps(s3))  # travels to Dask workers
    assert back.dir == s3.dir and isinstance(back.filesystem, pafs.S3FileSystem)
    assert not is_local_data_root("s3://bucket/x") and is_local_data_root(f"file://{tmp_path}")
    assert is_local_data_root(str(tmp_path))
    with pytest.raises(StoreError, match=r"data root 'nosuch://x': pyarrow's filesystem layer cannot open it"):
        Run("nosuch://x", "r1")
    with pytest.raises(StoreError, match="needs a local data root"):
        local_data_root("s3://bucket/prefix?region=us-east-1")
    with pytest.raises(StoreError, match="export needs a local data root; run r1 is on s3"):
        s3.require_local("export")
    assert not (Path.cwd() / "s3:").exists() and not (Path.cwd() / "nosuch:").exists()


PARAGRAPHS = [
    "Water in the ocean is warmed by the sun and rises into the air as vapour. High in the sky the "
    "vapour cools and condenses into tiny droplets that gather as clouds. When the droplets grow heavy "
    "enough they fall back to the ground as rain or snow, and rivers carry the water back to the sea.",
    "A magnet has two ends that we call its poles. If you bring the north pole of one magnet close to the "
    "south pole of another, they pull towards each other, but two north poles push each other away. "
    "The earth itself behaves like a very large magnet, which is why a compass needle points north.",
    "To add two fractions with the same denominator, you add the numerators and keep the denominator. "
    "For fractions with different denominators, first find a common denominator, rewrite each fraction "
    "with it, and then add the numerators. Finally, simplify the result if you can.",
    "Plants make their own food by a process called photosynthesis. Their leaves take in carbon dioxide "
    "from the air and water from the soil, and with the energy of sunlight they turn them into sugar and "
    "oxygen. The oxygen is released into the air, where animals and people breathe it in.",
]


def curation_input(n: int = 24) -> pa.Table:
    """Sample rows with exact copies (case and punctuation) and near copies (a word changed)."""
    rows = []
    for k in range(n):
        text = PARAGRAPHS[k % len(PARAGRAPHS)]
        if k >= len(PARAGRAPHS) and k % 3 == 0:
            text = text.upper()
        elif k >= len(PARAGRAPHS) and k % 3 == 1:
            text = text.replace(" the ", " a ", 1).replace("and", f"and also {k}", 1)
        elif k >= len(PARAGRAPHS):
            text = f"Lesson {k}. " + text
        rows.append(make_sample("textbook", text, topic="science", sample_index=k,
                                created_at=datetime(2026, 1, 1, tzinfo=timezone.utc)))
    return samples_to_table(rows)


def test_curation_on_an_object_store_equals_local(tmp_path):
    """Heuristics and dedup (dedup in parts, as the flow's tasks run it) on an in-memory object
    store commit the same rows, bytes and checksums as on a local root; a hand-off export of the
    object-store run equals the local one."""
    from dataforge import runner
    from dataforge.config import parse_config
    from dataforge.export import export_table

    cfg = parse_config({"name": "t", "textbooks": {"enabled": False}, "shard_rows": 5})
    assert runner.enabled_curation(cfg) == ["heuristics", "dedup"]
    table = curation_input()
    local, remote = Run(tmp_path / "data", "r1"), Run(memory_fs(), "r1")
    for run in (local, remote):
        io = runner.generation_io(run, cfg, "cot")
        io.begin()
        kept, rej = io.write_shard(0, table, runner.rejected_schema(table.schema).empty_table())
        io.commit(kept, rej, table.schema)
        runner.run_curation_stage(run, cfg, "heuristics")
    runner.run_whole(local, cfg, "dedup")  # apply_dedup in one process
    io = runner.dedup_io(remote, cfg)  # the flow's tasks, one by one
    io.begin()
    paths = runner.curation_inputs(remote, cfg, "dedup")
    assert len(paths) > 1
    parts = [runner.dedup_sign_shard(remote, cfg, p) for p in paths]
    plan = runner.dedup_plan(remote, cfg, paths, parts)
    per_band = [runner.dedup_band(plan, b) for b in range(runner.dedup_bands(cfg))]
    runner.dedup_finish(remote, cfg, paths, plan, per_band, parts)

    for stage in ("cot", "heuristics", "dedup"):
        assert remote.read(stage).equals(local.read(stage)), stage
        assert remote.read_rejected(stage).equals(local.read_rejected(stage)), stage
        digest = lambda m: [(f["rows"], f["bytes"], f["sha256"]) for f in m["files"]]  # noqa: E731
        assert digest(remote.committed(stage)) == digest(local.committed(stage)), stage
    reasons = local.read_rejected("dedup").column("drop_reason").to_pylist()
    assert any(r.startswith("exact_duplicate_of:") for r in reasons)
    assert any(r.startswith("near_duplicate_of:") for r in reasons)
    assert runner.curation_io(remote, cfg, "dedup").done()  # resumes: the commit is seen

    out = {}
    for name, run in (("local", local), ("remote", remote)):
        export_table(run.read("dedup"), tmp_path / f"export-{name}", ["jsonl", "parquet"])
        out[name] = (tmp_path / f"export-{name}" / "checksums.sha256").read_text()
    assert out["remote"] == out["local"] and out["local"]
    # the export stage itself on the object store: tests/test_flows.py and tests/test_export.py


def test_cli_commands_that_need_local_files_refuse_an_object_store_root():
    from typer.testing import CliRunner

    from dataforge.cli import app

    for args in (["report"], ["sql", "select 1"], ["export"]):
        r = CliRunner().invoke(app, [*args, "--data-root", "s3://bucket/x?region=us-east-1"])
        assert r.exit_code == 2, (args, r.output)
        assert "is not a local path: sql, report and export need a local data root" in r.output, r.output


# --- manifests that cannot be turned against the reader (issue 13) -------------------------

def _sample_stage(run: Run, stage: str, table: pa.Table) -> dict:
    run.begin_stage(stage)
    w = ShardWriter(run.stage_dir(stage), max_rows=100, schema=table.schema)
    w.write(table)
    m = run.commit_stage(stage, w.close(), [], table.schema, table.schema, fingerprint="f", config_hash="c")
    if not run.exists():
        run.save_record(RunRecord(run_id=run.run_id, name="t", created_at="2026-01-01T00:00:00+00:00",
                                  stages={stage: StageStatus(status="completed")}))
    return m


def test_manifest_naming_a_file_outside_its_folder_is_refused(tmp_path):
    """(A ManifestError, a StoreError.) A manifest whose file name climbs out of the stage folder (``../../outside.parquet``) is
    refused, naming the manifest, by the stage reader and by the warehouse (``dataforge sql``):
    the outside file's rows are never read."""
    from dataforge.warehouse import query

    run = Run(tmp_path / "data", "r")
    _sample_stage(run, "heuristics", sample_table(3, "inside"))
    outside = run.dir / "outside.parquet"  # <run>/heuristics/../outside.parquet
    pq.write_table(sample_table(2, "SECRET"), outside)
    mpath = run.stage_dir("heuristics") / MANIFEST
    for bad in ("../outside.parquet", str(outside), "sub/../../outside.parquet"):
        m = json.loads(mpath.read_text())
        m["files"][0]["name"] = bad
        m["files"][0]["sha256"], m["files"][0]["bytes"] = sha256_of(outside), outside.stat().st_size
        mpath.write_text(json.dumps(m))
        for read in (lambda: run.read("heuristics"), lambda: run.files("heuristics"),
                     lambda: list(iter_batches(run.stage_dir("heuristics"))),
                     lambda: query(run, "select text from kept_rows"),
                     lambda: query(run, "select text from kept_rows", verify=False)):
            with pytest.raises(StoreError, match="not a plain file name") as err:
                read()
            assert str(mpath) in str(err.value) and repr(bad) in str(err.value)
    # a commit refuses such a name too
    run.begin_stage("dedup")
    with pytest.raises(StoreError, match="not a plain file name"):
        run.commit_stage("dedup", [FileEntry("../x.parquet", 1, 1, "0" * 64)], [], SIMPLE, SIMPLE,
                         fingerprint="f", config_hash="c")


def test_shard_changed_after_commit_fails_verification_on_read(tmp_path):
    """Two writers on one stage left a manifest of 5 rows and a file of the other writer's 2:
    a verified read (on by default for export and the warehouse) fails naming the file."""
    from dataforge.export import export_run
    from dataforge.warehouse import query

    run = Run(tmp_path / "data", "r")
    _sample_stage(run, "heuristics", sample_table(5, "mine"))
    shard = run.files("heuristics")[0]
    assert query(run, "select count(*) as n from kept_rows").column("n").to_pylist() == [5]
    pq.write_table(sample_table(2, "theirs"), shard, compression="zstd")  # the other writer's rows
    assert run.read("heuristics").num_rows == 2  # unverified: what is on disk
    for read in (lambda: query(run, "select count(*) from kept_rows"),  # sql and export verify by default
                 lambda: export_run(run, "heuristics", "default", ["jsonl"]),
                 lambda: run.read("heuristics", verify=True), lambda: run.verify("heuristics"),
                 lambda: run.files("heuristics", verify=True),
                 lambda: list(iter_batches(run.stage_dir("heuristics"), verify=True))):
        with pytest.raises(StoreError, match="does not match its manifest") as err:
            read()
        assert str(shard) in str(err.value)
    assert not run.export_dir("default").exists()
    assert query(run, "select count(*) as n from kept_rows", verify=False).column("n").to_pylist() == [2]  # --no-verify
    # the same size, other bytes: the sha256 catches it
    _sample_stage(run, "dedup", sample_table(5, "mine"))
    d_shard = run.files("dedup")[0]
    raw = bytearray(d_shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    d_shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="sha256"):
        run.read("dedup", verify=True)


def test_truncated_manifest_is_a_clear_error_and_the_stage_runs_again(tmp_path):
    from dataforge import runner
    from dataforge.config import parse_config

    cfg = parse_config({"name": "t", "textbooks": {"enabled": False}, "shard_rows": 5})
    run = Run(tmp_path / "data", "r1")
    table = curation_input()
    io = runner.generation_io(run, cfg, "cot")
    io.begin()
    kept, rej = io.write_shard(0, table, runner.rejected_schema(table.schema).empty_table())
    io.commit(kept, rej, table.schema)
    first = runner.run_curation_stage(run, cfg, "heuristics")
    assert not first.skipped and runner.run_curation_stage(run, cfg, "heuristics").skipped
    rows = run.read("heuristics").num_rows
    mpath = run.stage_dir("heuristics") / MANIFEST
    mpath.write_text(mpath.read_text()[: len(mpath.read_text()) // 2])  # a torn write
    with pytest.raises(StoreError, match="unreadable manifest") as err:
        run.read("heuristics")
    assert str(mpath) in str(err.value)
    with pytest.raises(StoreError):
        read_manifest(run.stage_dir("heuristics"))
    assert run.committed("heuristics") is None  # counts as not committed
    again = runner.run_curation_stage(run, cfg, "heuristics")  # resume: the stage runs again
    assert not again.skipped and again.rows_kept == first.rows_kept
    assert run.read("heuristics").num_rows == rows and read_manifest(run.stage_dir("heuristics"))["rows"] == rows


def test_fsync_helpers_are_used_on_commit(tmp_path, monkeypatch):
    """Shards, manifests and run.json are fsynced before their rename, their folder after."""
    from dataforge import store

    synced_files, synced_dirs = [], []
    real_file, real_dir = store.fsync_file, store.fsync_dir
    monkeypatch.setattr(store, "fsync_file", lambda p: (synced_files.append(Path(p).name), real_file(p))[1])
    monkeypatch.setattr(store, "fsync_dir", lambda p: (synced_dirs.append(Path(p)), real_dir(p))[1])
    run = Run(tmp_path, "r")
    _sample_stage(run, "gen", simple_table(0, 3))
    assert f"{TMP_PREFIX}part-00000.parquet" in synced_files
    assert run.stage_dir("gen") in synced_dirs and run.rejected_dir("gen") in synced_dirs  # manifests
    assert run.dir in synced_dirs  # run.json
