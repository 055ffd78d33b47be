"""Issue 13, part 4: the smaller hardening items, one section each.

1. credentials (user info, query values) in a URL never stored or logged;
2. a temporary Dask cluster listens on loopback only;
3. training checkpoints load with ``torch.load(weights_only=True)``: a planted one runs no code;
4. ``teacher stop`` / ``service stop`` never signal a pid that went to another process;
5. the teacher's and the service's state files are replaced atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_openai import FakeOpenAI

from dataforge.config import TeacherConfig, parse_config

REAL_POPEN = subprocess.Popen
PASSWORD, QUERY_SECRET = "pw-Secret-4711", "sk-query-Secret-0815"


def cred_url(base: str) -> str:
    """``base`` (http://host:port/path) with a password in its user info and a key in its query."""
    scheme, rest = base.split("://", 1)
    return f"{scheme}://alice:{PASSWORD}@{rest}?api_key={QUERY_SECRET}&api-version=2024-06-01"


def no_secret(text: str) -> bool:
    return PASSWORD not in text and QUERY_SECRET not in text


@pytest.fixture
def sleeper():
    """Start ``sleep`` processes in their own session (a pid that another program now owns);
    killed at the end."""
    procs: list[subprocess.Popen] = []

    def start(**kw) -> subprocess.Popen:
        kw.setdefault("start_new_session", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = REAL_POPEN(["sleep", "120"], **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(timeout=10)


# --- 1. credentials stripped from every stored URL --------------------------------------------


@pytest.mark.parametrize("url,expected", [
    ("https://alice:pw@api.example.com:8443/v1?api_key=sk-1&x=2#frag", "https://api.example.com:8443/v1"),
    ("https://sk-token@api.example.com/v1", "https://api.example.com/v1"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
    ("http://[::1]:8080/v1?k=v", "http://[::1]:8080/v1"),
    ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
    ("alice:pw@host/v1?key=secret", "host/v1"),  # not a URL with a scheme: still no credentials
    ("", ""),
])
def test_redact_url_keeps_scheme_host_port_path_only(url, expected):
    from dataforge.teacher.urls import redact_url, url_secrets

    assert redact_url(url) == expected
    assert redact_url(redact_url(url)) == redact_url(url)
    if "sk-1" in url:
        assert {"pw", "sk-1"} & set(url_secrets(url)) == {"sk-1"}  # "pw" is too short to mask everywhere


def test_teacher_client_logs_and_errors_hold_no_url_credentials(monkeypatch, caplog):
    """httpx logs every request's URL at INFO: with a password or a key in the base URL, the
    line held them on the old main."""
    from dataforge.teacher import TeacherClient, TeacherError

    caplog.set_level(logging.DEBUG)
    with FakeOpenAI() as srv:
        srv.default_action = "400"
        cfg = TeacherConfig(provider="openai", base_url=cred_url(srv.base_url), model="fake-model", max_attempts=1,
                            timeout_s=5)

        async def go():
            async with TeacherClient(cfg) as client:
                with pytest.raises(TeacherError) as err:
                    await client.complete([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0.0)
                return str(err.value)

        message = asyncio.run(go())
        assert srv.requests, "the request reached the server"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request" in logged  # the line that carried the URL
    assert no_secret(logged) and no_secret(message)


def test_service_state_file_keeps_no_url_credentials(tmp_path, monkeypatch, sleeper):
    """``PREFECT_API_URL`` with credentials: service.json stores it without them, and status
    still asks the server with them."""
    from dataforge import service as svc

    api = cred_url("http://127.0.0.1:9/api")
    asked: list[str] = []
    monkeypatch.setattr(svc, "api_healthy", lambda url, timeout=2.0: asked.append(url) or True)
    monkeypatch.setattr(svc, "registered_deployments", lambda url, names: list(names))
    monkeypatch.setattr(svc.PrefectService, "_spawn", lambda self, cmd, log, env: sleeper())
    service = svc.PrefectService(tmp_path, api_url=api)
    service.start(timeout_s=30)
    try:
        stored = service.state_file.read_text()
        assert no_secret(stored)
        assert json.loads(stored)["api_url"] == "http://127.0.0.1:9/api"
        asked.clear()
        status = service.status()
        assert status["state"] == "running" and no_secret(json.dumps(status))
        assert asked == [api]  # the health check still carries the credentials
    finally:
        service.stop(grace_s=5)


def test_run_json_snapshot_and_hashes_hold_no_url_credentials():
    cfg = parse_config({"teacher": {"provider": "openai", "base_url": cred_url("https://api.example.com/v1")}})
    assert no_secret(json.dumps(cfg.snapshot()))
    assert cfg.snapshot()["teacher"]["base_url"] == "https://api.example.com/v1"
    assert no_secret(json.dumps(cfg.teacher_identity()))
    # the endpoint's identity (what resume hashes) does not change with its credentials
    other = parse_config({"teacher": {"provider": "openai", "base_url": "https://bob:other@api.example.com/v1"}})
    assert other.teacher_identity() == cfg.teacher_identity()
    assert other.stage_hash("teacher") == cfg.stage_hash("teacher")
    # ... and the live config keeps them: the client still sends them
    assert PASSWORD in cfg.teacher.resolved_base_url()


def test_export_card_of_an_old_run_json_holds_no_url_credentials():
    """A run.json written before the snapshot was redacted still gives a clean card."""
    from dataforge.export import run_card_info

    config = {"teacher": {"provider": "openai", "model": "m", "base_url": cred_url("https://api.example.com/v1")}}
    rec = SimpleNamespace(stages={}, teacher=None, versions={}, config=config)
    run = SimpleNamespace(run_id="r1", load_record=lambda: rec)
    info = run_card_info(run, "textbooks")
    assert no_secret(json.dumps(info, default=str))
    assert info["config"]["teacher"]["base_url"] == "https://api.example.com/v1"


# --- 2. Dask bound to loopback ----------------------------------------------------------------


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def test_temporary_dask_cluster_listens_on_loopback_only(monkeypatch):
    psutil = pytest.importorskip("psutil")
    from distributed import LocalCluster

    from flows import runners

    monkeypatch.setattr(runners, "current_api_url", lambda: "http://127.0.0.1:9/api")
    runner = runners.task_runner(parse_config({"runner": {"kind": "dask", "n_workers": 1}}).runner)
    assert runner.cluster_class == "distributed.LocalCluster"
    with LocalCluster(**runner.cluster_kwargs) as cluster:
        me = psutil.Process()
        pids = {me.pid, *(c.pid for c in me.children(recursive=True))}
        listening = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the worker process binds after it starts
            listening = _listening(pids | {c.pid for c in me.children(recursive=True)})
            if len(cluster.scheduler_info.get("workers", {})) == 1 and len(listening) >= 4:
                break
            time.sleep(0.5)
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
        # scheduler, dashboard, nanny, worker
        assert len(listening) >= 4, listening
        assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in listening), listening


# --- 3. torch.load(weights_only=True) ----------------------------------------------------------


class _Planted:
    """Unpickling it runs ``os.mkdir(marker)``: any code could stand there."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_checkpoint_that_runs_code_when_unpickled_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from dataforge.config import SlmConfig
    from dataforge.slm.data import pack
    from dataforge.slm.presets import build_model
    from dataforge.slm.tokenizer import train_tokenizer
    from dataforge.slm.train import CHECKPOINT, train_model

    texts = [f"the cat number {i} sat on the mat and ate {i * 7} apples" for i in range(200)]
    tok = train_tokenizer(texts, vocab_size=300)
    cfg = SlmConfig(preset="tiny", seq_len=32, batch_size=4, max_steps=6, log_every=2, lr=3e-3, seed=3,
                    checkpoint_every=2)
    data = pack(tok, texts, cfg.seq_len)

    def model():
        return build_model("tiny", len(tok), seed=cfg.seed, eos_token_id=tok.eos_token_id, max_positions=cfg.seq_len)

    # what dataforge saves loads with weights_only=True (an interrupted run resumes)
    out = tmp_path / "run"
    assert train_model(model(), data, cfg, out, stop_after=2).interrupted
    state = torch.load(out / CHECKPOINT / "state.pt", weights_only=True)
    assert state["step"] == 2 and isinstance(state["fingerprint"]["config"], dict)
    assert train_model(model(), data, cfg, out).resumed_from == 2

    # a planted checkpoint: refused, and its code never ran
    marker = tmp_path / "code-ran"
    planted = tmp_path / "planted"
    (planted / CHECKPOINT).mkdir(parents=True)
    torch.save({"fingerprint": _Planted(marker), "model": {}, "step": 0}, planted / CHECKPOINT / "state.pt")
    with pytest.raises(ValueError) as err:
        train_model(model(), data, cfg, planted)
    assert not marker.exists(), "loading the checkpoint ran the code planted in it"
    assert "loads safely" in str(err.value)


# --- 4. pid identity checked before any signal; 5. state files written atomically -----------


@pytest.fixture
def replaced(monkeypatch) -> list[str]:
    """The names of the files replaced through os.replace (an atomic write ends with one)."""
    names: list[str] = []
    real = os.replace

    def recording(src, dst, *a, **kw):
        names.append(Path(dst).name)
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", recording)
    return names


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_teacher(tmp_path):
    from dataforge.teacher.local import LocalTeacher

    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF")
    cfg = TeacherConfig(provider="local", local={"port": _free_port(), "model_path": str(weights)})
    return LocalTeacher(cfg, tmp_path / "teacher")


def _alive(p: subprocess.Popen) -> bool:
    return p.poll() is None


def _ended(p: subprocess.Popen) -> bool:
    """Whether ``p`` ended (stop may have reaped it already: then Popen cannot see its status)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)
    return p.poll() is not None


@pytest.mark.parametrize("token", ["another-process", None], ids=["other-start-time", "old-state-file"])
def test_teacher_stop_never_signals_a_reused_pid(tmp_path, sleeper, caplog, token):
    """server.json names a pid that is now another program (a reboot, or the server died and
    the pid was reused): stop leaves that program alone and reports the stale state."""
    teacher = _local_teacher(tmp_path)
    other = sleeper()
    teacher.state_dir.mkdir(parents=True)
    state = {"pid": other.pid, "port": teacher.cfg.local.port, "host": "127.0.0.1", "model": "m",
             "model_path": "x", "log": str(tmp_path / "log")}
    if token is not None:
        state["pid_start"] = token
    teacher.state_file.write_text(json.dumps(state))
    with caplog.at_level(logging.WARNING):
        stopped = teacher.stop(grace_s=1.0)
    time.sleep(0.2)
    assert _alive(other), "stop signalled a process it did not start"
    assert stopped is False
    assert "stale" in caplog.text and str(other.pid) in caplog.text
    assert not teacher.state_file.exists()
    teacher.state_file.write_text(json.dumps(state))
    assert teacher.status()["state"] == "dead"  # not "running" as that pid


def test_teacher_state_is_written_atomically_with_the_start_token_and_stop_stops_ours(
        tmp_path, monkeypatch, sleeper, replaced):
    from dataforge.teacher import local

    started: list[subprocess.Popen] = []
    monkeypatch.setattr(local, "check_server_installed", lambda: None)
    monkeypatch.setattr(local.subprocess, "Popen",
                        lambda cmd, **kw: started.append(sleeper(**kw)) or started[-1])
    teacher = _local_teacher(tmp_path)
    st = teacher.serve(wait=False)
    assert st.pid == started[0].pid
    assert replaced == ["server.json"]  # written to a temporary file and renamed over
    assert not [p for p in teacher.state_dir.iterdir() if p.name.endswith(".tmp")]
    stored = json.loads(teacher.state_file.read_text())
    assert stored["pid"] == st.pid and stored["pid_start"] == local.process_start(st.pid)
    assert teacher.status()["state"] == "starting"  # ours, not answering
    assert teacher.stop(grace_s=5) is True
    assert _ended(started[0])


@pytest.mark.parametrize("token", ["another-process", None], ids=["other-start-time", "old-state-file"])
def test_service_stop_never_signals_a_reused_pid(tmp_path, sleeper, caplog, token):
    from dataforge.service import STATE_FILE, PrefectService

    service = PrefectService(tmp_path, api_url="", port=_free_port())
    service.home.mkdir(parents=True)
    serve, server = sleeper(), sleeper()
    state = {"api_url": service.own_api_url, "serve_pid": serve.pid, "server_pid": server.pid,
             "prefect_home": str(service.home), "prefect_file": "prefect.yaml", "deployments": ["d"],
             "server_log": None, "serve_log": "serve.log"}
    if token is not None:
        state.update(serve_start=token, server_start=token)
    (service.home / STATE_FILE).write_text(json.dumps(state))
    with caplog.at_level(logging.WARNING):
        stopped = service.stop(grace_s=1.0)
    time.sleep(0.2)
    assert _alive(serve) and _alive(server), "stop signalled processes it did not start"
    assert stopped is False
    assert "stale" in caplog.text
    assert not service.state_file.exists()
    (service.home / STATE_FILE).write_text(json.dumps(state))
    status = service.status()
    assert status["state"] == "stopped" and "stale_state_file" in status


def test_service_state_is_written_atomically_and_stop_stops_ours(tmp_path, monkeypatch, sleeper, replaced):
    from dataforge import service as svc

    healthy = iter([False] + [True] * 100)  # nothing on the port before the server starts
    monkeypatch.setattr(svc, "api_healthy", lambda url, timeout=2.0: next(healthy))
    monkeypatch.setattr(svc, "registered_deployments", lambda url, names: list(names))
    spawned: list[subprocess.Popen] = []
    monkeypatch.setattr(svc.PrefectService, "_spawn",
                        lambda self, cmd, log, env: spawned.append(sleeper()) or spawned[-1])
    service = svc.PrefectService(tmp_path, api_url="", port=_free_port())
    st = service.start(timeout_s=30)
    assert replaced == ["service.json", "service.json"]
    stored = json.loads(service.state_file.read_text())
    assert stored["server_pid"] == spawned[0].pid and stored["serve_pid"] == spawned[1].pid == st.serve_pid
    assert stored["server_start"] == svc.process_start(spawned[0].pid)
    assert stored["serve_start"] == svc.process_start(spawned[1].pid)
    assert service.status()["state"] == "running"
    assert service.stop(grace_s=5) is True
    assert all(_ended(p) for p in spawned)


def test_write_json_atomic_leaves_the_old_file_when_anything_fails(tmp_path, monkeypatch):
    from dataforge.atomic import write_json_atomic, write_text_atomic

    target = tmp_path / "state.json"
    write_json_atomic(target, {"pid": 1})
    assert json.loads(target.read_text()) == {"pid": 1}
    with pytest.raises(TypeError):
        write_json_atomic(target, {"pid": object()})  # does not serialize
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        write_text_atomic(target, '{"pid": 2}')
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert json.loads(target.read_text()) == {"pid": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind
    write_text_atomic(target, '{"pid": 3}')
    assert json.loads(target.read_text()) == {"pid": 3}
    mode = target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
