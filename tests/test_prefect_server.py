"""Scheduled runs on a real Prefect server: ``dataforge service start`` runs ``prefect server
start`` on loopback (SQLite under the data root, a free port) and ``python -m flows.serve``,
which registers the deployments of a ``prefect.yaml``; runs are triggered through the API
(``run_deployment``) against the fake teacher, and their artifacts are read back through the API.

One service per module (start-up ~15-30 s on a loaded 2-core machine); stopped at the end, and
the test checks its processes are gone.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dataforge.cli import app
from dataforge.config import load_config
from dataforge.service import PrefectService
from dataforge.store import list_runs
from dataforge.teacher.local import pid_alive
from fake_openai import FakeOpenAI
from responders import teacher_responder
from test_pipeline import write_config

pytestmark = [pytest.mark.prefect, pytest.mark.prefect_server]

RPM = 120  # the shared teacher limit of the two concurrent runs: 2 requests a second ...
BURST = 2  # ... after a burst of 2
TEXTBOOKS_PER_RUN = 12
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TimedResponder:
    """The deterministic test teacher, recording when each chat request arrived and its prompt."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[float, str]] = []

    def __call__(self, body: dict) -> str:
        with self.lock:
            self.seen.append((time.monotonic(), body["messages"][-1]["content"]))
        return teacher_responder(body)


def write_prefect_yaml(path: Path, main: Path, a: Path, b: Path) -> None:
    def deployment(name: str, cfg: Path, parameters: dict | None = None, **fields) -> dict:
        # config_path relative to prefect.yaml, as in the repository's own file
        params = {"config_path": str(cfg.relative_to(path.parent)), "data_root": None, **(parameters or {})}
        return {"name": name, "entrypoint": "flows/pipeline.py:pipeline", "parameters": params,
                "tags": ["dataforge", "test"], **fields}

    spec = {"name": "dataforge-test", "deployments": [
        deployment("pipeline", main, schedules=[{"cron": "0 3 * * *", "timezone": "UTC", "active": True}],
                   concurrency_limit=1, description="the whole pipeline, daily"),
        deployment("gen-a", a, parameters={"stages": ["generation"]}),
        deployment("gen-b", b, parameters={"stages": ["generation"]}),
    ]}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def limited_config(tmp: Path, base_url: str, topics: list[str]) -> Path:
    tmp.mkdir()
    return write_config(tmp, base_url, name=tmp.name,
                        teacher={"requests_per_minute": RPM},
                        orchestration={"teacher_burst": BURST},
                        textbooks={"topics": topics, "max_samples": TEXTBOOKS_PER_RUN},
                        cot={"enabled": False})


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("service")
    saved = {k: os.environ.get(k) for k in ("DATAFORGE_TEST_KEY", "PREFECT_API_URL")}
    os.environ["DATAFORGE_TEST_KEY"] = "sk-test"
    os.environ.pop("PREFECT_API_URL", None)  # our own server, even where one is configured
    responder = TimedResponder()
    srv = FakeOpenAI(responder=responder).start()
    main_dir = tmp / "main"
    main_dir.mkdir()
    main = write_config(main_dir, srv.base_url)
    a = limited_config(tmp / "a", srv.base_url, ["glaciers", "volcanoes", "deserts"])
    b = limited_config(tmp / "b", srv.base_url, ["comets", "planets", "nebulae"])
    prefect_file = tmp / "prefect.yaml"
    write_prefect_yaml(prefect_file, main, a, b)
    data_root = tmp / "data"
    port = free_port()
    svc = PrefectService(data_root, prefect_file=prefect_file, port=port)
    try:
        r = runner.invoke(app, ["service", "start", "--data-root", str(data_root), "--prefect-file",
                                str(prefect_file), "--port", str(port), "--timeout", "240"])
        logs = [data_root / "prefect" / n for n in ("serve.log", "server.log")]
        assert r.exit_code == 0, r.output + "".join(f"\n--- {p}\n" + p.read_text(errors="replace")[-3000:]
                                                    for p in logs if p.exists())
        st = svc.state()
        assert st is not None
        yield {"svc": svc, "state": st, "api_url": st.api_url, "responder": responder, "data_root": data_root,
               "main": main, "tmp": tmp}
    finally:
        pids = [p for p in ((svc.state().serve_pid, svc.state().server_pid) if svc.state() else ()) if p]
        r = runner.invoke(app, ["service", "stop", "--data-root", str(data_root)])
        srv.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        assert r.exit_code == 0, r.output
        assert not [p for p in pids if pid_alive(p)], f"service processes left running: {pids}"


def _api(url: str):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: url})


def _wait_terminal(client, flow_run_ids, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while True:
        runs = [client.read_flow_run(i) for i in flow_run_ids]
        if all(r.state and r.state.is_final() for r in runs):
            return runs
        assert time.monotonic() < deadline, [r.state for r in runs]
        time.sleep(1)


def test_service_status_reports_running(service):
    r = runner.invoke(app, ["service", "status", "--data-root", str(service["data_root"])])
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    assert st["state"] == "running" and st["api_url"] == service["api_url"]
    assert sorted(st["deployments"]) == ["gen-a", "gen-b", "pipeline"]
    # the server's SQLite database is under the data root
    assert (service["data_root"] / "prefect" / "prefect.db").exists()


def test_deployment_triggered_through_the_api_completes_with_artifacts(service):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment

    with _api(service["api_url"]):
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("dataforge-pipeline/pipeline")
            assert [s.schedule.cron for s in dep.schedules] == ["0 3 * * *"]
            assert dep.parameters["config_path"] == str(service["main"])  # made absolute by flows.serve

        flow_run = run_deployment("dataforge-pipeline/pipeline", timeout=300, poll_interval=1)
        assert flow_run.state.is_completed(), flow_run.state

        with get_client(sync_client=True) as client:
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
    by_key = {a.key: a for a in arts}
    assert set(by_key) == {"dataforge-t-summary", "dataforge-t-funnel", "dataforge-t-drop-reasons"}

    # the run the deployment made, under the service's data root (DATAFORGE_DATA_ROOT)
    runs = [r for r in list_runs(service["data_root"]) if r.load_record().name == "t"]
    assert len(runs) == 1
    rec = runs[0].load_record()
    assert rec.status == "completed" and load_config(service["main"]).name == "t"

    funnel = json.loads(by_key["dataforge-t-funnel"].data)
    assert [f["stage"] for f in funnel] == ["textbooks", "cot", "heuristics", "dedup", "export"]
    for f in funnel[:-1]:
        st = rec.stages[f["stage"]]
        assert (f["rows_in"], f["rows_kept"], f["rows_dropped"]) == (st.rows_in, st.rows_kept, st.rows_dropped)
    reasons = {(r["drop_stage"], r["drop_reason"]): r["rows"] for r in json.loads(by_key["dataforge-t-drop-reasons"].data)}
    assert reasons[("cot", "answer_mismatch")] == rec.stages["cot"].rows_dropped
    # near_duplicate_of:<id> grouped without the id
    assert reasons[("dedup", "near_duplicate_of")] == rec.stages["dedup"].rows_dropped > 0
    md = by_key["dataforge-t-summary"].data
    assert runs[0].run_id in md and "## Funnel" in md and "answer_mismatch" in md
    assert f"| {rec.teacher['requests_sent']} |" in md  # the teacher table


def test_concurrent_runs_share_the_teacher_rate_limit(service):
    from prefect import get_client
    from prefect.deployments import run_deployment

    responder = service["responder"]
    with responder.lock:
        responder.seen.clear()
    with _api(service["api_url"]):
        started = [run_deployment(f"dataforge-pipeline/gen-{x}", timeout=0) for x in "ab"]
        with get_client(sync_client=True) as client:
            done = _wait_terminal(client, [r.id for r in started])
            assert all(r.state.is_completed() for r in done), [r.state for r in done]
            limit = client.read_global_concurrency_limit_by_name("teacher:fake-model")
    # both runs' configs made the same named limit: 2 slots decaying at 120/60 a second
    assert (limit.limit, limit.slot_decay_per_second) == (BURST, RPM / 60)

    with responder.lock:
        seen = sorted(responder.seen)
    times = [t for t, _ in seen]
    assert len(times) == 2 * TEXTBOOKS_PER_RUN
    a = [t for t, p in seen if any(w in p for w in ("glaciers", "volcanoes", "deserts"))]
    b = [t for t, p in seen if any(w in p for w in ("comets", "planets", "nebulae"))]
    assert len(a) == len(b) == TEXTBOOKS_PER_RUN
    # Combined, never faster than the limit allows: any k consecutive requests span at least
    # (k - burst) / rate seconds (one request of slack for the server's decay rounding).
    # Unlimited, each client alone sends its 12 requests within a fraction of a second.
    rate = RPM / 60
    worst = max(j - i + 1 - (BURST + rate * (times[j] - times[i]))
                for i in range(len(times)) for j in range(i, len(times)))
    assert worst <= 1, f"{worst:.2f} requests above the shared limit"
    # the two runs overlapped in time, so the limit was shared rather than taken in turns
    assert min(a[-1], b[-1]) > max(a[0], b[0])


def test_service_commands_give_clear_errors(tmp_path):
    r = runner.invoke(app, ["service", "status", "--data-root", str(tmp_path)])
    assert r.exit_code == 1 and json.loads(r.output) == {"state": "stopped"}
    r = runner.invoke(app, ["service", "stop", "--data-root", str(tmp_path)])
    assert r.exit_code == 0 and "no service was running" in r.output
    bad = tmp_path / "prefect.yaml"
    bad.write_text("deployments: []\n")
    r = runner.invoke(app, ["service", "start", "--data-root", str(tmp_path), "--prefect-file", str(bad)])
    assert r.exit_code == 1 and "no named deployments" in r.output


@pytest.mark.parametrize("args", [["service"], ["service", "start"], ["service", "status"], ["service", "stop"]])
def test_service_help(args):
    r = runner.invoke(app, [*args, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output
