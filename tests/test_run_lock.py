"""One writer per run and per export (issue 13): the run lock (flock locally, a lease on an object
store), refused or waiting second writers, a killed holder's lock taken over, two exports at once,
and the embedded teacher shared by runs (the last user stops it)."""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from dataforge import store
from dataforge.store import Run, ShardWriter

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "DATAFORGE_PROGRESS": "0"}
SIMPLE = pa.schema([("i", pa.int64())])

CHILD = textwrap.dedent(
    """
    import json, os, pickle, sys, time
    import pyarrow as pa
    from dataforge.store import Run, ShardWriter

    def root(arg):
        if arg.startswith("lease:"):  # an object-store-like filesystem shared between processes
            import fsspec
            import pyarrow.fs as pafs
            return (pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("file"))), arg[len("lease:"):])
        return arg

    mode, data_root, run_id = sys.argv[1:4]
    run = Run(root(data_root), run_id)
    try:
        if mode == "begin":  # a second writer on the stage
            run.begin_stage("gen")
            w = ShardWriter(run.stage_dir("gen"), schema=pa.schema([("i", pa.int64())]))
            w.write(pa.table({"i": [7, 8]}))
            run.commit_stage("gen", w.close(), [], w.schema, w.schema, fingerprint="child", config_hash="c")
            print("WROTE", flush=True)
        elif mode == "hold":  # take the run lock and keep it until killed
            with run.lock(ttl=float(sys.argv[4]) if len(sys.argv) > 4 else 60.0):
                print("READY", flush=True)
                time.sleep(120)
        elif mode == "wait":  # wait for the lock
            if float(sys.argv[4]) > 0:
                print("WAITING", flush=True)
            t0 = time.monotonic()
            with run.lock(timeout=float(sys.argv[4])):
                print("GOT", round(time.monotonic() - t0, 2), flush=True)
        elif mode == "worker":  # a Dask worker of the holder: the pickled Run carries the holder id
            run = pickle.loads(bytes.fromhex(sys.stdin.read().strip()))
            run.begin_stage("gen")
            print("WORKER-OK", flush=True)
    except Exception as err:
        if type(err).__name__ not in ("LockHeld", "LockLost"):
            raise
        print(f"REFUSED {type(err).__name__}: {err}", flush=True)
        sys.exit(3)
    """
)


def child(mode: str, data_root, run_id: str, *extra: str, stdin: str | None = None, timeout: float = 60):
    return subprocess.run([sys.executable, "-c", CHILD, mode, str(data_root), run_id, *extra], env=ENV,
                          capture_output=True, text=True, timeout=timeout, input=stdin)


def start_holder(data_root, run_id: str, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "hold", str(data_root), run_id, *extra], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if r else ""
    assert line.startswith("READY"), (line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
    return proc


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def lease_root(tmp_path: Path):
    import fsspec

    return (pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("file"))), str(tmp_path / "store"))


# --- the run lock: local data root (flock) ---------------------------------------------------------

def test_second_writer_on_a_stage_is_refused_naming_the_holder(tmp_path):
    """A writer is mid-stage (begun, shards written, not committed); a second process beginning
    the same stage is refused with the holder's host and pid, and the first writer's files and
    commit are left alone (today the second one clears the folder and commits its own rows)."""
    run = Run(tmp_path, "r")
    run.begin_stage("gen")
    w = ShardWriter(run.stage_dir("gen"), max_rows=100, schema=SIMPLE)
    w.write(pa.table({"i": list(range(5))}))
    entries = w.close()

    r = child("begin", tmp_path, "r")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "REFUSED LockHeld" in r.stdout and f"pid {os.getpid()} on {socket.gethostname()}" in r.stdout, r.stdout
    assert str(run.dir) in r.stdout
    assert [p.name for p in run.stage_dir("gen").iterdir()] == ["part-00000.parquet"]
    run.commit_stage("gen", entries, [], SIMPLE, SIMPLE, fingerprint="f", config_hash="c")
    assert run.read("gen", verify=True).column("i").to_pylist() == [0, 1, 2, 3, 4]
    # the commit ended this stage's implicit lock: now the other process may write the run
    r = child("begin", tmp_path, "r")
    assert r.returncode == 0 and "WROTE" in r.stdout, (r.stdout, r.stderr)
    assert run.read("gen", verify=True).column("i").to_pylist() == [7, 8]


def test_run_lock_refuses_or_waits_and_run_json_writes_need_it(tmp_path):
    run = Run(tmp_path, "r")
    with run.lock():
        holder = run.lock_holder()
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["since"]
        r = child("wait", tmp_path, "r", "0")
        assert r.returncode == 3 and f"locked by pid {os.getpid()}" in r.stdout, (r.stdout, r.stderr)
        # a stage or run.json write from another process is refused too
        r = child("begin", tmp_path, "r")
        assert r.returncode == 3 and "REFUSED LockHeld" in r.stdout, r.stdout
        # the same process re-enters (every Run object of this run here shares the lock)
        with Run(tmp_path, "r").lock():
            Run(tmp_path, "r").begin_stage("gen")
        assert run.holds_lock()
        # a waiting writer gets the lock once the holder lets go
        waiter = subprocess.Popen([sys.executable, "-c", CHILD, "wait", str(tmp_path), "r", "30"], env=ENV,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert waiter.stdout.readline().strip() == "WAITING"  # started (slow on a loaded machine)
        time.sleep(1.5)
        assert waiter.poll() is None  # still waiting
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0 and out.startswith("GOT"), (out, err)
    assert float(out.split()[1]) >= 1.0
    assert not run.holds_lock()


def test_killed_holders_lock_is_taken_over(tmp_path):
    run = Run(tmp_path, "r")
    proc = start_holder(tmp_path, "r")
    try:
        with pytest.raises(store.LockHeld, match=f"pid {proc.pid} on {socket.gethostname()} since"):
            with run.lock():
                pass
    finally:
        kill(proc)  # SIGKILL: no clean-up ran; the kernel released the flock
    with run.lock(timeout=0):
        assert run.lock_holder()["pid"] == os.getpid()
        run.begin_stage("gen")


def test_a_worker_of_the_holder_may_write_others_may_not(tmp_path):
    """A Run pickled to a Dask worker carries the holder id: the worker writes while the holder
    holds the lock, and is refused once it is given up."""
    run = Run(tmp_path, "r")
    with run.lock():
        r = child("worker", tmp_path, "r", stdin=pickle.dumps(run).hex())
        assert r.returncode == 0 and "WORKER-OK" in r.stdout, (r.stdout, r.stderr)
        stale = pickle.dumps(run).hex()
    r = child("worker", tmp_path, "r", stdin=stale)
    assert r.returncode == 3 and "REFUSED LockLost" in r.stdout and "no longer held" in r.stdout, r.stdout


# --- the run lock on an object store: a lease -------------------------------------------------------

def test_lease_refuses_names_the_holder_and_is_taken_over_once_expired(tmp_path):
    fs, base = lease_root(tmp_path)
    run = Run((fs, base), "r")
    assert not run.is_local
    proc = start_holder(f"lease:{base}", "r", "2")  # ttl 2 s, renewed every 0.67 s
    try:
        time.sleep(2.5)  # longer than the ttl: the renewals keep it
        with pytest.raises(store.LockHeld, match=f"pid {proc.pid} on {socket.gethostname()} .*lease until"):
            with run.lock():
                pass
        r = child("begin", f"lease:{base}", "r")
        assert r.returncode == 3 and "REFUSED LockHeld" in r.stdout, (r.stdout, r.stderr)
    finally:
        kill(proc)
    t0 = time.monotonic()
    with run.lock(timeout=20):  # once its lease expires
        assert time.monotonic() - t0 < 10
        assert run.lock_holder()["pid"] == os.getpid()
        run.begin_stage("gen")
    assert run.lock_holder() is None  # released: the lease object is gone


def test_lease_check_after_write_and_loss(tmp_path):
    fs, base = lease_root(tmp_path)
    from pathlib import PurePosixPath

    key = PurePosixPath(base) / "lease.json"
    fs.create_dir(base, recursive=True)
    a, b = store.LeaseLock(fs, key, "A", ttl=1.0, settle=0.05), store.LeaseLock(fs, key, "B", ttl=1.0, settle=0.05)
    a.acquire()
    time.sleep(1.6)
    with pytest.raises(store.LockHeld):
        b.acquire(0)
    a.check()
    # another writer overwrote the lease (the race an object store cannot exclude): A notices
    fs.delete_file(str(key))
    b.acquire(0)
    with pytest.raises(store.LockLost):
        a.check()
    a.release()  # does not remove B's lease
    b.check()
    b.release()


# --- exports -----------------------------------------------------------------------------------------

EXPORT_CHILD = textwrap.dedent(
    """
    import sys, time
    import dataforge.export as ex
    from dataforge.records import make_sample, samples_to_table

    out, tag, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
    real = ex.write_file
    def slow_write(*a, **kw):
        print("WRITING", flush=True)
        time.sleep(slow)
        return real(*a, **kw)
    ex.write_file = slow_write
    table = samples_to_table([make_sample("textbook", f"{tag} section {k}: water evaporates.", topic="water",
                                          sample_index=k) for k in range(20)])
    ex.export_table(table, out, ["jsonl", "parquet"], title=tag)
    print("DONE", flush=True)
    """
)


def test_two_exports_at_once_both_finish_and_leave_one_whole_export(tmp_path):
    """Two processes export into the same folder at once: the second waits for the first (today
    removes the first one's temporary folder, half of the first one's files with it, and the first
    then puts its export, files missing, over the second's); the result is one whole
    export that its checksums confirm, and no temporary folder is left."""
    import hashlib

    out = tmp_path / "run" / "export" / "default"
    first = subprocess.Popen([sys.executable, "-c", EXPORT_CHILD, str(out), "first", "3"], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(2):  # the first file is written, the second on its way
        line = first.stdout.readline()
        assert line.startswith("WRITING"), (line, first.poll())
    second = subprocess.Popen([sys.executable, "-c", EXPORT_CHILD, str(out), "second", "0"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    o1, e1 = first.communicate(timeout=120)
    o2, e2 = second.communicate(timeout=120)
    assert first.returncode == 0 and "DONE" in o1, e1
    assert second.returncode == 0 and "DONE" in o2, e2
    for line in (out / "checksums.sha256").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    assert "second section" in (out / "train.jsonl").read_text()
    names = [p.name for p in out.parent.iterdir()]
    assert "default" in names and not [n for n in names if n.startswith(".tmp-")], names


# --- the embedded teacher, shared by runs -----------------------------------------------------------

def test_local_teacher_is_stopped_by_its_last_user_only(tmp_path, monkeypatch):
    """Two runs use the embedded teacher: the first starts it, the one that leaves first does not
    stop it (today the run that started it stops it under the other), the last one does. A user
    killed without leaving does not keep it up for ever."""
    from dataforge.config import TeacherConfig
    from dataforge.teacher import local

    calls = []

    def fake_serve(self, wait=True, **kw):
        calls.append("serve")
        st = local.ServerState(pid=4242, port=1, host="127.0.0.1", model="m", model_path="x", log="l")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"pid": 4242, "port": 1, "host": "127.0.0.1", "model": "m",
                                               "model_path": "x", "log": "l"}))
        return st

    def fake_stop(self, grace_s=10.0):
        calls.append("stop")
        self.state_file.unlink(missing_ok=True)
        return True

    def fake_status(self):
        return {"state": "running" if self.state_file.exists() else "stopped"}

    monkeypatch.setattr(local.LocalTeacher, "serve", fake_serve)
    monkeypatch.setattr(local.LocalTeacher, "stop", fake_stop)
    monkeypatch.setattr(local.LocalTeacher, "status", fake_status)
    cfg, state = TeacherConfig(provider="local"), tmp_path / "teacher"

    a = local.local_teacher(cfg, state)
    b = local.local_teacher(cfg, state)
    a.__enter__()
    b.__enter__()
    assert calls == ["serve"]
    a.__exit__(None, None, None)  # the run that started it leaves first
    assert calls == ["serve"]
    b.__exit__(None, None, None)
    assert calls == ["serve", "stop"]

    # a user that died inside its block (its file is left, its flock gone) is not counted
    with local.local_teacher(cfg, state):
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os
            fd = os.open({str(state / 'users' / 'dead-user.lock')!r}, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os._exit(0)
            """)], env=ENV, timeout=60)
        assert proc.returncode == 0
    assert calls == ["serve", "stop", "serve", "stop"]
    assert not list((state / "users").iterdir())

    # a server started by `dataforge teacher serve` (no mark) is left running
    fake_serve(local.LocalTeacher(cfg, state))
    with local.local_teacher(cfg, state):
        pass
    assert calls[-1] == "serve"


def test_resume_of_a_running_run_is_refused_naming_the_holder(tmp_path):
    """``dataforge run --resume`` (open_run) while another process runs the run: refused, naming it;
    after the holder finishes, the resume opens the run."""
    from dataforge.config import parse_config
    from dataforge.runner.runs import locked_run

    cfg = parse_config({"name": "t", "data_root": str(tmp_path / "data"), "textbooks": {"enabled": False}})
    script = textwrap.dedent(f"""
        import sys
        from dataforge import runner
        from dataforge.config import parse_config
        cfg = parse_config({{"name": "t", "data_root": {str(tmp_path / "data")!r}, "textbooks": {{"enabled": False}}}})
        try:
            runner.open_run(cfg, "r1")
        except Exception as err:
            print(type(err).__name__, err)
            sys.exit(3)
        print("OPENED")
        """)
    with locked_run(cfg, "r1") as run:
        assert run.load_record().status == "running"
        r = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=60)
        assert r.returncode == 3 and r.stdout.startswith("LockHeld") and f"pid {os.getpid()}" in r.stdout, r
    r = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "OPENED" in r.stdout, r
