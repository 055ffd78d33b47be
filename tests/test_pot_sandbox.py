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
        for weak in (False, True):
            prog = pot.seccomp_filter(machine, weak=weak)
            assert prog and len(prog) % 8 == 0 and len(prog) // 8 < 256
    assert pot.seccomp_filter("riscv64") is None


@pytest.mark.parametrize("setsid", [False, True])
def test_weak_mode_starts_no_process(setsid):
    """The opt-in weak sandbox has no PID namespace, so its seccomp filter refuses fork
    (``clone`` without ``CLONE_THREAD``) and exec: nothing can outlive the program, with or
    without ``setsid`` (the former weak sandbox killed only its process group)."""
    token = f"49.{uuid.uuid4().int % 10**6:06d}"
    r = run_program(_sleeper_program(token, setsid), WEAK_PERMISSIVE)
    time.sleep(0.5)
    left = _processes_with(token)
    _kill(left)
    assert left == [], f"a process the program started outlived run_program ({r})"
    assert r.status == "error" and "Operation not permitted" in (r.error or ""), r


# --- the weak sandbox (opt-in): the same probes, stopped by its seccomp filter ----------------

#: weak mode with root kept and no network namespace: only the filter stands in the way
WEAK_PERMISSIVE = SandboxLimits(timeout_s=20.0, cpu_s=10, memory_mb=256, network_namespace=False, run_as_uid=None,
                                isolation="weak")


def test_weak_mode_parent_environment_is_unreadable():
    """The parent's environment through /proc/<ppid>/environ: in weak mode the program shares
    the host's /proc, so the filter must refuse to open it, even to a program that kept root."""
    prog = """import os
def solution():
    try:
        data = open(f'/proc/{os.getppid()}/environ', 'rb').read()
    except OSError as e:
        return 'refused: errno %d' % e.errno
    return 'found' if b'DATAFORGE_PROBE_SECRET' in data else 'absent'
"""
    driver = ("import sys\nfrom dataforge.generate.pot import SandboxLimits, run_program\n"
              "r = run_program(sys.stdin.read(), SandboxLimits(timeout_s=20.0, run_as_uid=None, isolation='weak', "
              "network_namespace=False))\nprint(r.status, r.value, r.error)\n")
    env = {**os.environ, "DATAFORGE_PROBE_SECRET": f"sk-probe-{uuid.uuid4().hex}"}
    done = subprocess.run([sys.executable, "-c", driver], check=False, input=prog, env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok refused: errno 1 None", done.stdout


def test_weak_mode_host_files_are_unreadable_and_unwritable(tmp_path):
    token = uuid.uuid4().hex
    secret = tmp_path / "data" / "cache" / "teacher.sqlite"
    secret.parent.mkdir(parents=True)
    secret.write_text(f"SECRET-{token}")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "left-behind"
    prog = f"""import os
def solution():
    done = []
    for name, act in [('read', lambda: open({str(secret)!r}).read()),
                      ('write', lambda: open({str(out)!r}, 'w').write('x')),
                      ('unlink', lambda: os.unlink({str(victim)!r})),
                      ('rename', lambda: os.rename({str(victim)!r}, {str(victim)!r} + '.moved')),
                      ('mkdir', lambda: os.mkdir({str(tmp_path / 'newdir')!r})),
                      ('chmod', lambda: os.chmod({str(victim)!r}, 0o777))]:
        try:
            act()
            done.append(name)
        except OSError:
            pass
    return ' '.join(done) or 'nothing'
"""
    r = run_program(prog, WEAK_PERMISSIVE)
    assert r.value == "nothing", r
    assert victim.read_text() == "keep me" and not out.exists() and not (tmp_path / "newdir").exists()
    assert oct(victim.stat().st_mode & 0o777) != "0o777"


@pytest.mark.parametrize("program", [_ctypes_connect, _socket_connect], ids=["ctypes", "reimported_socket"])
def test_weak_mode_no_socket_reaches_the_parents_loopback(program):
    server = _Server()
    try:
        r = run_program(program(server.port), WEAK_PERMISSIVE)
        time.sleep(0.3)
    finally:
        server.close()
    assert server.hits == [] and r.value != "connected", r


def test_weak_mode_ptrace_is_refused():
    prog = UNDO_HARNESS + """
import ctypes
def solution():
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.ptrace(0, 0, 0, 0)  # PTRACE_TRACEME
    return 'allowed' if rc == 0 else 'refused: errno %d' % ctypes.get_errno()
"""
    r = run_program(prog, WEAK_PERMISSIVE)
    assert r.value != "allowed", r


def test_weak_mode_still_runs_ordinary_programs():
    """The filter leaves what arithmetic programs use: the usual modules (imported before it
    is installed), threads, exceptions, big integers."""
    prog = """import math, fractions, statistics, threading
from decimal import Decimal
def solution():
    out = []
    t = threading.Thread(target=lambda: out.append(math.comb(30, 12)))
    t.start(); t.join()
    try:
        1 / 0
    except ZeroDivisionError:
        pass
    return str(out[0] + int(statistics.mean([2, 4])) + fractions.Fraction(1, 2).denominator
               + int(Decimal('1.5') * 2))
"""
    r = run_program(prog, WEAK_PERMISSIVE)
    assert r.ok and r.value == str(86493225 + 3 + 2 + 3), r


# --- per-program totals: a control group per program (strict) ---------------------------------

def test_memory_is_capped_for_all_processes_together():
    """Ten processes of 100 MB each stay under the per-process limit (256 MB) but not under
    the program's total: the kernel kills some of them (SIGKILL, status 9)."""
    prog = UNDO_POSIX + """
def solution():
    pids = []
    for i in range(10):
        pid = posix.fork()
        if pid == 0:
            x = bytearray(100 * 1024 * 1024)
            for j in range(0, len(x), 4096):
                x[j] = 1
            import time
            time.sleep(2)
            posix._exit(0)
        pids.append(pid)
    return ' '.join(str(posix.waitpid(p, 0)[1]) for p in pids)
"""
    r = run_program(prog, LIMITS)
    assert r.ok, r
    statuses = r.value.split()
    assert len(statuses) == 10 and statuses.count("9") >= 5, f"exit statuses {statuses}: no total memory cap"


def test_cpu_time_is_capped_for_all_processes_together():
    """Thirteen spinning processes: their CPU time together reaches 2 s long before any one
    of them does; the program ends as cpu_limit within seconds, not at the wall time."""
    prog = UNDO_POSIX + """
def solution():
    for i in range(12):
        if posix.fork() == 0:
            while True:
                pass
    while True:
        pass
"""
    limits = SandboxLimits(timeout_s=60.0, cpu_s=2, memory_mb=256)
    # the same machine's pace, whatever its load: one spinning process to its limit
    one = run_program("def solution():\n    while True:\n        pass\n", limits)
    r = run_program(prog, limits)
    assert one.status == "cpu_limit" and r.status == "cpu_limit", (one, r)
    # per-process limits only: each of 13 processes sharing the CPUs reaches 2 s late (6.5 times
    # later on 2 cores); counted together the program stops about as soon as the single one
    assert r.seconds < 3 * one.seconds + 1, (one.seconds, r.seconds)


def test_program_groups_are_removed():
    pot_cgroup = importlib.import_module("dataforge.generate.pot_cgroup")
    version, base = pot_cgroup._setup()
    assert version, base
    for _ in range(3):
        assert run_program("def solution():\n    return 1\n", LIMITS).ok
    dirs = sorted(set(base.values())) if isinstance(base, dict) else [base]
    left = [e.name for d in dirs for e in os.scandir(d) if e.is_dir()]
    assert left == [], left


def test_strict_is_refused_without_a_control_group(monkeypatch):
    """No per-program group (not root, no delegation): strict refuses with the reason and
    the opt-out; ``require_cgroup=False`` accepts per-process limits."""
    pot = importlib.import_module("dataforge.generate.pot")
    monkeypatch.setattr(pot, "_status", {})
    monkeypatch.setattr(pot.pot_cgroup, "cgroup_problem", lambda: "the cgroup / is not writable by this user")
    with pytest.raises(pot.PotSandboxError) as caught:
        run_program("def solution():\n    return 1\n", LIMITS)
    assert "not writable" in str(caught.value) and "require_cgroup" in str(caught.value)
    relaxed = SandboxLimits(timeout_s=20.0, require_cgroup=False)
    assert run_program("def solution():\n    return 1\n", relaxed).value == "1"


def test_cgroup_v2_group_is_written(tmp_path, monkeypatch):
    """The v2 protocol on a directory laid out like a delegated cgroup: controllers enabled
    for the children, the program's caps written, its procs file named."""
    pot_cgroup = importlib.import_module("dataforge.generate.pot_cgroup")
    own = tmp_path / "user.slice" / "df.scope"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (own / "cgroup.subtree_control").write_text("")
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    monkeypatch.setattr(pot_cgroup, "_own_cgroups", lambda *a: {"": "/user.slice/df.scope"})
    monkeypatch.setattr(pot_cgroup, "_mounts", lambda *a: (str(tmp_path), {}))
    monkeypatch.setattr(pot_cgroup, "_state", {})
    real_mkdir = os.mkdir

    def mkdir_with_files(path, *args, **kwargs):  # the kernel populates a new group's files
        real_mkdir(path, *args, **kwargs)
        for name in ("cgroup.procs", "cgroup.subtree_control", "memory.max", "memory.swap.max", "pids.max",
                     "cpu.max"):
            Path(path, name).write_text("")

    monkeypatch.setattr(pot_cgroup.os, "mkdir", mkdir_with_files)
    monkeypatch.setattr(pot_cgroup.os, "makedirs",
                        lambda p, exist_ok=False: None if Path(p).exists() else mkdir_with_files(p))
    assert pot_cgroup.cgroup_problem() is None
    group = pot_cgroup.new_program_cgroup(272 * 1024 * 1024, 18)
    path = Path(group.dirs["memory"])
    assert path.parent.parent == own and (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (path / "memory.max").read_text() == str(272 * 1024 * 1024)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "pids.max").read_text() == "18" and (path / "cpu.max").read_text() == "100000 100000"
    assert group.procs_files == [os.fsencode(path / "cgroup.procs")]
