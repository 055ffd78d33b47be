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
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataforge.records import SAMPLE_SCHEMA, SCHEMA_VERSION, make_sample, samples_to_table
from dataforge.store import (
    MANIFEST,
    TMP_PREFIX,
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
    import dataforge.store as store

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
    assert [p.name for p in run.dir.iterdir()] == ["run.json"]


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
    assert run.cache_dir == root / "cache"
