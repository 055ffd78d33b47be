"""``dataforge service``: a Prefect server on loopback and the process serving the deployments.

``start`` launches, each in its own session and in the background:

1. ``prefect server start --host 127.0.0.1 --port <port>`` with ``PREFECT_HOME`` and its SQLite
   database under ``<data root>/prefect/`` (skipped when ``PREFECT_API_URL`` names a server
   already running: then the deployments are served against that one);
2. ``python -m flows.serve --prefect-file prefect.yaml`` (flows/serve.py), which registers the
   deployments with their schedules and executes their runs.

It waits until the API answers and every deployment is registered. The pids, URL and logs are
kept in ``<data root>/prefect/service.json`` (written atomically; the URL without credentials;
each pid with its process's start token); ``status`` reads it and asks the API, ``stop`` sends
SIGTERM to each process group it started (SIGKILL after a grace period), and never signals a
pid that has since gone to another process.

This module starts processes and speaks HTTP; it never imports Prefect (the library stays free
of it: the Prefect side lives in ``flows/``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import yaml

from dataforge.atomic import write_json_atomic
from dataforge.errors import DataforgeError
from dataforge.teacher.local import pid_alive, pid_is, process_start
from dataforge.teacher.urls import redact_url

log = logging.getLogger("dataforge.service")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PREFECT_FILE = REPO_ROOT / "prefect.yaml"
DEFAULT_PORT = 4200
STATE_FILE = "service.json"


class ServiceError(DataforgeError, RuntimeError):
    """The service cannot be started, asked or stopped (port taken, a process died, no state file)."""


@dataclass
class ServiceState:
    api_url: str
    serve_pid: int
    server_pid: int | None  # None: an external server (PREFECT_API_URL)
    prefect_home: str
    prefect_file: str
    deployments: list[str]
    server_log: str | None
    serve_log: str
    # start tokens (dataforge.teacher.local.process_start) of serve_pid and server_pid: a pid
    # reused by another process is not ours. None: a state file from before they were recorded
    serve_start: str | None = None
    server_start: str | None = None


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def registered_deployments(api_url: str, names: list[str]) -> list[str]:
    """Which of ``names`` the API has as deployments (any flow)."""
    try:
        r = httpx.post(f"{api_url}/deployments/filter", timeout=5.0,
                       json={"deployments": {"name": {"any_": names}}, "limit": 200})
        r.raise_for_status()
        return sorted({d["name"] for d in r.json()})
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return []


def deployment_names(prefect_file: Path) -> list[str]:
    try:
        spec = yaml.safe_load(prefect_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ServiceError(f"{prefect_file}: cannot read: {err}") from None
    names = [d.get("name") for d in spec.get("deployments") or [] if isinstance(d, dict)]
    if not names or not all(names):
        raise ServiceError(f"{prefect_file}: no named deployments under `deployments:`")
    return names


def _tail(path: str | None, chars: int = 3000) -> str:
    if not path or not Path(path).exists():
        return ""
    return Path(path).read_text(errors="replace")[-chars:]


# what the command line of each process contains (trusted for a state file without start tokens)
SERVE_MARKER, SERVER_MARKER = "flows.serve", "prefect"


def _stop_group(pid: int, grace_s: float, start: str | None = None, marker: str | None = None) -> bool:
    """SIGTERM the process group ``pid`` leads (we started it with its own session), then
    SIGKILL what is left after ``grace_s``. Returns whether it was running. A pid that is not
    the process we started (:func:`~dataforge.teacher.local.pid_is`) is never signalled."""
    if not pid_is(pid, start, marker):
        if pid_alive(pid):
            log.warning("stale service state: pid %d is now another process; not signalled", pid)
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_is(pid, start, marker):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    # the group may outlive its leader (a flow run's subprocess): kill what remains. While any
    # member lives its id stays taken; with the leader gone and the id taken by a new process,
    # that process is not ours and its group is left alone
    if pid_is(pid, start, marker) or not pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


class PrefectService:
    """The service of one data root: state under ``<data root>/prefect/``."""

    def __init__(self, data_root: str | os.PathLike, *, prefect_file: str | os.PathLike | None = None,
                 host: str = "127.0.0.1", port: int = DEFAULT_PORT, api_url: str | None = None):
        self.data_root = Path(data_root).resolve()
        self.home = self.data_root / "prefect"
        self.state_file = self.home / STATE_FILE
        self.prefect_file = Path(prefect_file or DEFAULT_PREFECT_FILE).resolve()
        self.host, self.port = host, port
        # a server someone else runs: serve against it, start none
        self.external_api = api_url if api_url is not None else os.environ.get("PREFECT_API_URL")

    @property
    def own_api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    def state(self) -> ServiceState | None:
        try:
            return ServiceState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write_state(self, st: ServiceState) -> None:
        """The state file, replaced atomically; its URL without user info or query."""
        write_json_atomic(self.state_file, {**asdict(st), "api_url": redact_url(st.api_url)})

    def _api_url(self, st: ServiceState) -> str:
        """The URL to ask: the stored one, or ``PREFECT_API_URL`` when it is that one with
        credentials (the state file keeps none)."""
        if self.external_api and redact_url(self.external_api.rstrip("/")) == st.api_url:
            return self.external_api.rstrip("/")
        return st.api_url

    def _env(self, api_url: str | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "DATAFORGE_DATA_ROOT": str(self.data_root),
            "DATAFORGE_PROGRESS": env.get("DATAFORGE_PROGRESS", "0"),
        })
        if api_url:
            env["PREFECT_API_URL"] = api_url
        else:
            env.pop("PREFECT_API_URL", None)
        return env

    def _spawn(self, cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        with open(log, "ab") as f:
            return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env, cwd=str(self.prefect_file.parent))

    def start(self, timeout_s: float = 300.0, serve_limit: int | None = None) -> ServiceState:
        """Start the server (unless external) and the serving process; wait until every
        deployment of ``prefect_file`` is registered. Already running: returns its state."""
        current = self.status()
        if current["state"] == "running":
            st = self.state()
            assert st is not None
            return st
        if current["state"] != "stopped":
            self.stop()
        names = deployment_names(self.prefect_file)
        self.home.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        server: subprocess.Popen | None = None
        server_log: Path | None = None
        if self.external_api:
            api_url = self.external_api.rstrip("/")
            if not api_healthy(api_url):
                raise ServiceError(f"PREFECT_API_URL={api_url} does not answer {api_url}/health")
        else:
            api_url = self.own_api_url
            if api_healthy(api_url):
                raise ServiceError(f"{api_url} already answers as a Prefect server that this data root did not "
                                   "start: stop it, pick another --port, or set PREFECT_API_URL to use it")
            server_log = self.home / "server.log"
            server = self._spawn([sys.executable, "-m", "prefect", "server", "start", "--host", self.host,
                                  "--port", str(self.port), "--analytics-off"], server_log, self._env(None))
        serve_log = self.home / "serve.log"
        st = ServiceState(api_url=redact_url(api_url), serve_pid=-1, server_pid=server.pid if server else None,
                          prefect_home=str(self.home), prefect_file=str(self.prefect_file), deployments=names,
                          server_log=str(server_log) if server_log else None, serve_log=str(serve_log),
                          server_start=process_start(server.pid) if server else None)
        self.write_state(st)
        try:
            while not api_healthy(api_url):
                if server is not None and server.poll() is not None:
                    raise ServiceError(f"the Prefect server exited during start-up; its log ends:\n{_tail(st.server_log)}")
                if time.monotonic() > deadline:
                    raise ServiceError(f"the Prefect server did not answer {api_url}/health within {timeout_s:.0f}s")
                time.sleep(0.5)
            cmd = [sys.executable, "-m", "flows.serve", "--prefect-file", str(self.prefect_file)]
            if serve_limit:
                cmd += ["--limit", str(serve_limit)]
            serve = self._spawn(cmd, serve_log, self._env(api_url))
            st.serve_pid, st.serve_start = serve.pid, process_start(serve.pid)
            self.write_state(st)
            while sorted(registered_deployments(api_url, names)) != sorted(set(names)):
                if serve.poll() is not None:
                    raise ServiceError(f"`python -m flows.serve` exited (code {serve.returncode}); its log ends:\n"
                                       f"{_tail(str(serve_log))}")
                if time.monotonic() > deadline:
                    raise ServiceError(f"the deployments {names} were not all registered within {timeout_s:.0f}s; "
                                       f"serve log: {serve_log}")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        return st

    def status(self) -> dict:
        """``running`` (our processes alive, the API answering), ``degraded`` (some are gone or
        it does not answer) or ``stopped``."""
        st = self.state()
        if st is None:
            return {"state": "stopped"}
        serve_alive = pid_is(st.serve_pid, st.serve_start, SERVE_MARKER)
        server_ours = st.server_pid is not None and pid_is(st.server_pid, st.server_start, SERVER_MARKER)
        server_alive = st.server_pid is None or server_ours
        healthy = api_healthy(self._api_url(st))
        info = {"api_url": st.api_url, "ui_url": st.api_url.removesuffix("/api"), "serve_pid": st.serve_pid,
                "server_pid": st.server_pid, "prefect_home": st.prefect_home, "deployments": st.deployments,
                "serve_log": st.serve_log, "server_log": st.server_log}
        if serve_alive and server_alive and healthy:
            return {"state": "running", **info}
        if not serve_alive and not server_ours:
            return {"state": "stopped", "stale_state_file": str(self.state_file)}
        return {"state": "degraded", "serve_alive": serve_alive, "server_alive": server_alive,
                "api_healthy": healthy, **info}

    def stop(self, grace_s: float = 15.0) -> bool:
        """Stop what ``start`` started (the serving process first). False: nothing was running."""
        st = self.state()
        if st is None:
            return False
        stopped = _stop_group(st.serve_pid, grace_s, st.serve_start, SERVE_MARKER)
        if st.server_pid is not None:
            stopped = _stop_group(st.server_pid, grace_s, st.server_start, SERVER_MARKER) or stopped
        self.state_file.unlink(missing_ok=True)
        return stopped
