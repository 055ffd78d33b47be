"""Escape probes for the program-of-thought sandbox (issue 13).

Each probe is a program that escaped the former sandbox (the harness patches, rlimits and a
best-effort network namespace): processes that outlive ``run_program``, the parent's
environment through ``/proc``, sockets through ``ctypes`` or a re-imported ``_socket``,
ptrace, unbounded process and file counts, the host's files. The probes use only
``run_program`` and ``SandboxLimits`` options that existed before, so that they demonstrate
each escape on the old code path, and the kernel-enforced strict sandbox must stop all of
them. Some probes keep root (``run_as_uid=None``) or switch the network namespace off
(``network_namespace=False``): options the former sandbox honoured and silently weakened by.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from dataforge.generate.pot import SandboxLimits, run_program

REPO = Path(__file__).resolve().parents[1]
LIMITS = SandboxLimits(timeout_s=20.0, cpu_s=10, memory_mb=256)
#: the weakest settings the former sandbox accepted: root kept, no network namespace
PERMISSIVE = SandboxLimits(timeout_s=20.0, cpu_s=10, memory_mb=256, network_namespace=False, run_as_uid=None)

# undo the harness's patches: fresh os and posix modules (built in: importable after the
# former sandbox's uid switch too) ...
UNDO_POSIX = """import sys
for _m in ('os', 'posix'):
    sys.modules.pop(_m, None)
import os, posix
"""
# ... and a fresh _socket, ctypes importable again (extension modules: the former sandbox
# could load them again only when it kept root, hence PERMISSIVE for these probes)
UNDO_HARNESS = """import sys
for _m in ('os', 'posix', '_socket', 'socket', 'ctypes', '_ctypes'):
    sys.modules.pop(_m, None)
import os, posix, _socket
"""


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            found.append(int(entry))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:  # only the sleepers this test's programs started
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def _sleeper_program(token: str, setsid: bool, then: str = "return pid") -> str:
    return UNDO_POSIX + f"""
def solution():
    pid = posix.fork()
    if pid == 0:
        try:
            {'posix.setsid()' if setsid else 'pass'}
            null = posix.open('/dev/null', posix.O_RDWR)
            for fd in (0, 1, 2):  # let go of the sandbox's pipes: the call returns at once
                posix.dup2(null, fd)
            posix.execv('/usr/bin/sleep', ['sleep', '{token}'])
        finally:
            posix._exit(0)
    {then}
"""


@pytest.mark.parametrize("setsid", [False, True])
def test_started_processes_die_with_the_program(setsid):
    """A re-imported ``posix`` forks (and with ``setsid`` leaves the process group); the
    child must not be alive when run_program returns."""
    token = f"47.{uuid.uuid4().int % 10**6:06d}"
    r = run_program(_sleeper_program(token, setsid), LIMITS)
    left = _processes_with(token)
    time.sleep(0.3)
    left += _processes_with(token)
    _kill(left)
    assert left == [], f"a process the program started outlived run_program ({r})"
    assert r.ok, r


def test_started_processes_die_when_the_program_is_killed():
    token = f"48.{uuid.uuid4().int % 10**6:06d}"
    r = run_program(_sleeper_program(token, True, then="while True:\n        pass"),
                    SandboxLimits(timeout_s=2.0, cpu_s=10))
    left = _processes_with(token)
    _kill(left)
    assert left == [], f"a process the program started outlived run_program ({r})"
    assert r.status == "timeout", r


def test_process_count_is_limited():
    prog = UNDO_POSIX + """
import time
def solution():
    started = 0
    for _ in range(64):
        try:
            pid = posix.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(2)
            posix._exit(0)
        started += 1
    return started
"""
    r = run_program(prog, LIMITS)
    assert r.ok, r
    assert int(r.value) < 16, f"the program started {r.value} processes"


def test_parent_environment_is_unreadable():
    """The parent's environment (an API key) through /proc/<ppid>/environ or any /proc entry."""
    secret = f"sk-probe-{uuid.uuid4().hex}"
    prog = """import os
def solution():
    found = []
    pids = [str(os.getppid())] + [p for p in os.listdir('/proc') if p.isdigit()]
    for pid in pids:
        try:
            data = open(f'/proc/{pid}/environ', 'rb').read()
        except OSError:
            continue
        if b'DATAFORGE_PROBE_SECRET' in data:
            found.append(pid)
    return 'found in ' + ','.join(found) if found else 'absent'
"""
    driver = ("import sys\nfrom dataforge.generate.pot import SandboxLimits, run_program\n"
              "r = run_program(sys.stdin.read(), SandboxLimits(timeout_s=20.0, run_as_uid=None))\n"
              "print(r.status, r.value, r.error)\n")
    env = {**os.environ, "DATAFORGE_PROBE_SECRET": secret}
    done = subprocess.run([sys.executable, "-c", driver], check=False, input=prog, env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok absent None", done.stdout


class _Server:
    """A TCP server on the parent's loopback that counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits.append(1)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _ctypes_connect(port: int) -> str:
    return UNDO_HARNESS + f"""
import ctypes, struct
def solution():
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(2, 1, 0)
    if fd < 0:
        return 'socket refused: errno %d' % ctypes.get_errno()
    addr = struct.pack('=H', 2) + struct.pack('!H', {port}) + bytes([127, 0, 0, 1]) + bytes(8)
    if libc.connect(fd, addr, len(addr)) == 0:
        return 'connected'
    return 'connect failed: errno %d' % ctypes.get_errno()
"""


def _socket_connect(port: int) -> str:
    return UNDO_HARNESS + f"""
def solution():
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(('127.0.0.1', {port}))
    return 'connected'
"""


@pytest.mark.parametrize("program", [_ctypes_connect, _socket_connect], ids=["ctypes", "reimported_socket"])
def test_no_socket_reaches_the_parents_loopback(program):
    server = _Server()
    try:
        r = run_program(program(server.port), PERMISSIVE)
        time.sleep(0.3)
    finally:
        server.close()
    assert server.hits == [], f"the program reached a server in the parent's network namespace ({r})"
    assert r.value != "connected"
    # strict: the seccomp filter refuses the socket itself
    assert r.value == "socket refused: errno 13" or "PermissionError" in (r.error or ""), r


@pytest.mark.parametrize("program", [_ctypes_connect, _socket_connect], ids=["ctypes", "reimported_socket"])
def test_network_namespace_alone_holds_without_seccomp(program, monkeypatch):
    """Layer by layer: without the seccomp filter the private network namespace (nothing but
    an unused loopback) still keeps every socket from the parent's loopback."""
    pot = importlib.import_module("dataforge.generate.pot")
    if not hasattr(pot, "_SECCOMP"):
        pytest.fail("the strict sandbox (seccomp + network namespace) is missing")
    monkeypatch.setattr(pot, "_SECCOMP", None)
    server = _Server()
    try:
        r = run_program(program(server.port), PERMISSIVE)
        interfaces = run_program("def solution():\n    return ' '.join(sorted(l.split(':')[0].strip() for l in "
                                 "open('/proc/net/dev').read().splitlines()[2:]))\n", PERMISSIVE)
        time.sleep(0.3)
    finally:
        server.close()
    assert server.hits == [] and r.value != "connected", r
    assert interfaces.value == "lo", interfaces


def test_ptrace_is_refused():
    prog = UNDO_HARNESS + """
import ctypes
def solution():
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.ptrace(0, 0, 0, 0)  # PTRACE_TRACEME
    return 'allowed' if rc == 0 else 'refused: errno %d' % ctypes.get_errno()
"""
    r = run_program(prog, PERMISSIVE)
    assert r.value == "refused: errno 1", r


def test_disk_quota_stops_ten_thousand_files():
    prog = """import os
def solution():
    for i in range(10000):
        with open(f'f{i}', 'wb') as f:
            f.write(b'x' * 4096)
    return len(os.listdir('.'))
"""
    r = run_program(prog, LIMITS)
    assert r.status == "error" and "No space left on device" in r.reason, r


def test_host_files_are_invisible(tmp_path):
    """World-readable files in /tmp, the data root's teacher cache, a file in the home
    directory: none is there for the program to read."""
    token = uuid.uuid4().hex
    cache = tmp_path / "data" / "cache" / "teacher.sqlite"
    cache.parent.mkdir(parents=True)
    in_tmp = Path(f"/tmp/dataforge-probe-{token}.txt")
    in_home = Path.home() / f".dataforge-probe-{token}"
    planted = [cache, in_tmp, in_home]
    try:
        for p in planted:
            p.write_text(f"SECRET-{token}")
            p.chmod(0o644)
        prog = f"""def solution():
    seen = []
    for path in {[str(p) for p in planted]!r}:
        try:
            if 'SECRET' in open(path).read():
                seen.append(path)
        except OSError:
            pass
    return 'read ' + ' '.join(seen) if seen else 'nothing'
"""
        r = run_program(prog, PERMISSIVE)
    finally:
        for p in (in_tmp, in_home):
            p.unlink(missing_ok=True)
    assert r.value == "nothing", r


def test_writes_outside_the_working_directory_do_not_reach_the_host(tmp_path):
    token = uuid.uuid4().hex
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    targets = [Path(f"/tmp/dataforge-probe-out-{token}"), shared / "left-behind", Path(f"/var/tmp/df-{token}")]
    prog = f"""def solution():
    wrote = []
    for path in {[str(p) for p in targets]!r}:
        try:
            open(path, 'w').write('x')
            wrote.append(path)
        except OSError:
            pass
    return len(wrote)
"""
    try:
        r = run_program(prog, PERMISSIVE)
        leaked = [str(p) for p in targets if p.exists()]
    finally:
        for p in targets:
            p.unlink(missing_ok=True)
    assert r.ok, r
    assert leaked == [], f"the program left files on the host: {leaked}"


def test_strict_is_refused_clearly_where_unavailable(monkeypatch):
    """No bwrap: an error naming what is missing and the opt-in, never a silent fallback;
    the weak sandbox runs when opted into; the check runs once per process."""
    pot = importlib.import_module("dataforge.generate.pot")
    from dataforge.errors import DataforgeError

    monkeypatch.setattr(pot, "_status", {})
    monkeypatch.setattr(pot.shutil, "which", lambda *a, **k: None)
    with pytest.raises(pot.PotSandboxError) as caught:
        run_program("def solution():\n    return 1\n", LIMITS)
    assert isinstance(caught.value, DataforgeError)
    message = str(caught.value)
    assert "bubblewrap (bwrap) is not installed" in message and "isolation: weak" in message
    with pytest.raises(pot.PotSandboxError):
        pot.check_sandbox(LIMITS)
    weak = SandboxLimits(timeout_s=20.0, isolation="weak")
    assert pot.check_sandbox(weak) == "weak"
    assert run_program("def solution():\n    return 1\n", weak).value == "1"
    with pytest.raises(pot.PotSandboxError, match="unknown program sandbox isolation"):
        pot.check_sandbox(SandboxLimits(isolation="none"))

    calls = []
    monkeypatch.setattr(pot, "_status", {})
    monkeypatch.setattr(pot, "_probe_strict", lambda limits: calls.append(1))
    assert pot.check_sandbox(LIMITS) == "strict" and pot.check_sandbox(LIMITS) == "strict"
    assert calls == [1]


def test_config_has_the_isolation_switch():
    from dataforge.config import PotSandboxConfig

    assert PotSandboxConfig().isolation == "strict"
    assert PotSandboxConfig(isolation="weak").isolation == "weak"
    with pytest.raises(ValueError):
        PotSandboxConfig(isolation="off")


def test_seccomp_filter_is_well_formed():
    pot = importlib.import_module("dataforge.generate.pot")
    for machine in ("x86_64", "aarch64"):
        prog = pot.seccomp_filter(machine)
        assert prog and len(prog) % 8 == 0 and len(prog) // 8 < 256
    assert pot.seccomp_filter("riscv64") is None


def test_weak_mode_kills_the_process_group_when_the_program_ends():
    """The opt-in weak sandbox gives up the PID namespace, but a child that stays in the
    program's process group no longer outlives it (one that calls setsid still can)."""
    token = f"49.{uuid.uuid4().int % 10**6:06d}"
    r = run_program(_sleeper_program(token, False), SandboxLimits(timeout_s=20.0, isolation="weak"))
    time.sleep(0.5)  # SIGKILL goes to the group before run_program returns; delivery is asynchronous
    left = _processes_with(token)
    _kill(left)
    assert left == [], f"a process the program started outlived run_program ({r})"
    assert r.ok, r
