"""Program of thought: the teacher writes ``def solution(): ...``, a sandbox runs it.

Program-aided reasoning hands the arithmetic to an interpreter (PAL, Gao et al. 2023,
"PAL: Program-aided Language Models"; Program of Thoughts, Chen et al. 2023), and TinyGSM
(Liu et al. 2023) distils 12.3M such programs into small models. The programs are untrusted
model output, so each one runs in its own process:

* ``sys.executable -I -S``: isolated mode, no site-packages; a fresh, empty temporary working
  directory; an environment holding nothing but a minimal ``PATH`` (no inherited secrets).
* limits set in a ``preexec_fn`` before the interpreter starts: address space (RLIMIT_AS),
  CPU seconds (RLIMIT_CPU), file size (RLIMIT_FSIZE), open files, no core dumps; a wall-time
  limit enforced by the parent, which kills the whole process group.
* no network: a private, empty network namespace when the kernel allows one
  (``unshare(CLONE_NEWNET)``; as non-root together with a user namespace), and always a
  harness that replaces ``socket.socket`` (and ``_socket.socket``, ``create_connection``,
  name lookups), blocks ``ctypes`` and process creation before the program is compiled.
  The harness alone can be undone by a determined program (re-importing ``_socket``); the
  namespace is what holds then (tests/test_pot.py tries exactly that).
* when dataforge runs as root, the harness switches to an unprivileged uid (``nobody``)
  before it compiles the program, after importing the modules programs commonly use (the
  interpreter's own files may not be readable by that uid).
* output bounded: stdout and stderr together may not exceed ``max_output_bytes``.

The harness hands the value back as one JSON line on a private copy of the original stdout;
whatever the program prints goes to stderr (kept, bounded, for the error message).
A program can still read the files its uid may read: as a non-root user that is all of that
user's files, so run dataforge in a container when the teacher is not trusted.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dataforge.generate.answers import Choice, extract_answer, normalize_number

#: environment of the program: nothing inherited (no API keys, no proxies), a minimal PATH
SANDBOX_ENV = {"PATH": "/usr/bin:/bin"}

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
try:  # resolved in the parent: a child between fork and exec must not load libraries
    _LIBC_UNSHARE = ctypes.CDLL(None, use_errno=True).unshare
except (OSError, AttributeError):  # not Linux
    _LIBC_UNSHARE = None

# Runs in the sandboxed interpreter. Reads the program from stdin; as root, imports the
# modules programs commonly use and drops to an unprivileged uid; disables the network and
# process creation; runs solution(); writes {"status": ..., ...} to the private result fd.
HARNESS = r'''
import json, os, sys, socket, _socket, posix, _posixsubprocess
from fractions import Fraction
from decimal import Decimal
_result = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
_src = sys.stdin.read()
sys.stdin.close()
_uid = int(sys.argv[1])
_capture = len(sys.argv) > 2 and sys.argv[2] == "1"
if _uid >= 0 and os.geteuid() == 0:
    # imported before the drop: the interpreter's own files may not be readable by that uid
    import math, cmath, fractions, decimal, statistics, itertools, functools, collections, datetime, \
        re, string, operator, random, heapq, bisect, traceback
    os.setgroups([])
    os.setgid(_uid)
    os.setuid(_uid)

_captured = {}

def _report(obj):
    if _captured:
        obj["locals"] = _captured
    _result.write(json.dumps(obj) + "\n")
    _result.flush()

def _numbers(frame_locals):
    # the numbers among solution()'s locals, as text: exact types only (no user code runs),
    # bounded in count and size so that the report stays far below the output limit
    out, size = {}, 0
    for _k, _v in frame_locals.items():
        _t = type(_v)
        if type(_k) is not str or len(_k) > 64:
            continue
        if _t is int and _v.bit_length() <= 200:
            _s = str(_v)
        elif _t is float and _v == _v and _v not in (float("inf"), float("-inf")):
            _s = repr(_v)
        elif _t is Fraction and _v.numerator.bit_length() <= 200 and _v.denominator.bit_length() <= 200:
            _s = f"{_v.numerator}/{_v.denominator}"
        elif _t is Decimal and _v.is_finite() and len(str(_v)) <= 80:
            _s = str(_v)
        else:
            continue
        size += len(_k) + len(_s)
        if len(out) >= 100 or size > 8000:
            break
        out[_k] = _s
    return out

def _no_network(*args, **kwargs):
    raise PermissionError("network access is disabled in the program sandbox")

def _no_process(*args, **kwargs):
    raise PermissionError("starting processes is disabled in the program sandbox")

class _NoSocket(socket.socket):  # a class, so that modules subclassing socket (ssl) still import
    def __init__(self, *args, **kwargs):
        _no_network()

for _mod in (socket, _socket):
    _mod.socket = _mod.SocketType = _NoSocket
    for _name in ("socketpair", "fromfd", "create_connection", "create_server", "getaddrinfo", "gethostbyname",
                  "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
        if hasattr(_mod, _name):
            setattr(_mod, _name, _no_network)
for _name in ("system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve",
              "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "kill",
              "killpg"):
    for _mod in (os, posix):
        if hasattr(_mod, _name):
            setattr(_mod, _name, _no_process)
_posixsubprocess.fork_exec = _no_process
for _name in ("ctypes", "_ctypes"):
    sys.modules[_name] = None

try:
    _code = compile(_src, "<program>", "exec")
except (SyntaxError, ValueError) as _e:
    _report({"status": "syntax_error", "error": f"line {getattr(_e, 'lineno', '?')}: {getattr(_e, 'msg', _e)}"})
    raise SystemExit(0)

def _describe(e):
    tb, line = e.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<program>":
            line = tb.tb_lineno
        tb = tb.tb_next
    where = f" (line {line})" if line else ""
    return f"{type(e).__name__}: {str(e)[:300]}{where}"

_g = {"__name__": "__program__", "__builtins__": __builtins__}
try:
    exec(_code, _g)
    _fn = _g.get("solution")
    if not callable(_fn):
        _report({"status": "no_solution", "error": "the program defines no function solution()"})
        raise SystemExit(0)
    if _capture and hasattr(_fn, "__code__"):
        _target = _fn.__code__
        _last = []

        def _on_return(frame, event, arg):
            if event == "return" and frame.f_code is _target:
                _last[:] = [dict(frame.f_locals)]

        sys.setprofile(_on_return)
        try:
            _value = _fn()
        finally:
            sys.setprofile(None)
        if _last:
            _captured.update(_numbers(_last[0]))
        del _last
    else:
        _value = _fn()
except MemoryError:
    _g.clear()
    _report({"status": "memory_limit", "error": "MemoryError: the program exceeded its memory limit"})
    raise SystemExit(0)
except SystemExit:
    raise
except BaseException as _e:
    _report({"status": "error", "error": _describe(_e)})
    raise SystemExit(0)

if isinstance(_value, bool):
    _report({"status": "ok", "type": "bool", "value": "yes" if _value else "no"})
elif isinstance(_value, int):
    try:
        _report({"status": "ok", "type": "int", "value": str(_value)})
    except ValueError:
        _report({"status": "bad_result", "error": "solution() returned an integer too large to print"})
elif isinstance(_value, float):
    if _value != _value or _value in (float("inf"), float("-inf")):
        _report({"status": "bad_result", "error": f"solution() returned {_value}"})
    else:
        _report({"status": "ok", "type": "float", "value": repr(_value)})
elif isinstance(_value, Fraction):
    _report({"status": "ok", "type": "fraction", "value": f"{_value.numerator}/{_value.denominator}"})
elif isinstance(_value, Decimal):
    _report({"status": "ok", "type": "decimal", "value": str(_value)})
elif isinstance(_value, str):
    _report({"status": "ok", "type": "str", "value": _value[:1000]})
else:
    _report({"status": "bad_result",
             "error": f"solution() returned {type(_value).__name__}; expected a number, a string or a bool"})
'''

#: every status :func:`run_program` can end with; ``ok`` is the only success
STATUSES = ("ok", "no_program", "syntax_error", "no_solution", "error", "bad_result", "timeout", "cpu_limit",
            "memory_limit", "output_limit", "crashed")


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one program (defaults: generous for grade-school arithmetic)."""

    timeout_s: float = 5.0  # wall time, enforced by the parent
    cpu_s: int = 3  # RLIMIT_CPU: the kernel sends SIGXCPU
    memory_mb: int = 256  # RLIMIT_AS: allocations beyond it fail with MemoryError
    max_output_bytes: int = 65_536  # stdout + stderr
    file_size_bytes: int = 1_048_576  # RLIMIT_FSIZE
    network_namespace: bool = True  # try a private, empty network namespace as well
    run_as_uid: int | None = 65534  # when dataforge runs as root: the uid programs run as (nobody)


@dataclass(frozen=True)
class ExecResult:
    status: str  # one of STATUSES
    value: str | None = None  # what solution() returned, as text (bools as "yes"/"no")
    value_type: str | None = None  # int | float | fraction | decimal | str | bool
    error: str | None = None
    seconds: float = 0.0
    stderr: str = ""  # the tail of what the program printed
    #: with ``capture_locals``: the numbers among solution()'s local variables when it returned,
    #: as text (int, float repr, "n/d" for a Fraction, Decimal), at most 100 of them
    local_values: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def reason(self) -> str:
        """``ok``, or the status and the error: ``timeout: killed after 5.0 s of wall time``."""
        return "ok" if self.ok else f"{self.status}: {self.error or 'no detail'}"


# --- extracting the program from a reply ---------------------------------------------------

_FENCE_RE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_CODE_START_RE = re.compile(r"^(?:import |from \S+ import |def |[A-Za-z_]\w* = )", re.MULTILINE)


def extract_program(reply: str | None) -> str | None:
    """The Python program of a teacher reply: the last fenced code block that defines
    ``solution``, else the first fenced block, else the reply from its first line of code
    (an import, a def or an assignment). None when the reply holds no ``def solution``."""
    if not reply or "def solution" not in reply:
        return None
    blocks = [b.strip("\n") for b in _FENCE_RE.findall(reply)]
    with_solution = [b for b in blocks if "def solution" in b]
    if with_solution:
        return with_solution[-1].rstrip() + "\n"
    m = _CODE_START_RE.search(reply)
    start = m.start() if m else reply.index("def solution")
    return reply[start:].rstrip() + "\n"


# --- running it ----------------------------------------------------------------------------

def _limit_child(limits: SandboxLimits) -> Callable[[], None]:
    """The preexec_fn: runs in the child between fork and exec (only async-signal-tolerant
    work: syscalls through pre-resolved functions, no imports)."""
    cpu = max(1, int(limits.cpu_s))
    # computed in the parent, never above the hard limits we already run under (raising a
    # hard limit is refused, and would make every program "crashed")
    wanted = [(resource.RLIMIT_AS, limits.memory_mb * 1024 * 1024, limits.memory_mb * 1024 * 1024),
              (resource.RLIMIT_CPU, cpu, cpu + 1),
              (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
              (resource.RLIMIT_CORE, 0, 0),
              (resource.RLIMIT_NOFILE, 64, 64)]
    settings = [(which, *clamp_limits(soft, hard, resource.getrlimit(which)[1])) for which, soft, hard in wanted]
    is_root = os.geteuid() == 0

    def apply() -> None:
        if limits.network_namespace and _LIBC_UNSHARE is not None:
            # failure (no privileges, no user namespaces) leaves the harness as the guard
            if _LIBC_UNSHARE(_CLONE_NEWNET if is_root else _CLONE_NEWUSER | _CLONE_NEWNET) != 0 and is_root:
                _LIBC_UNSHARE(_CLONE_NEWUSER | _CLONE_NEWNET)
        for which, soft, hard in settings:
            resource.setrlimit(which, (soft, hard))

    return apply


def clamp_limits(soft: int, hard: int, current_hard: int) -> tuple[int, int]:
    """(soft, hard) lowered to the hard limit already in force, which a process cannot raise."""
    if current_hard == resource.RLIM_INFINITY:
        return soft, hard
    return min(soft, current_hard), min(hard, current_hard)


def run_program(source: str | None, limits: SandboxLimits = SandboxLimits(), *,
                capture_locals: bool = False) -> ExecResult:
    """Run ``source`` (which must define ``solution()``) in the sandbox; never raises for
    anything the program does. Every way it can end is a status with a readable reason.
    With ``capture_locals`` the harness also reports the numeric locals of ``solution()`` at
    its return (a profile hook inside the sandboxed child; the limits are unchanged) in
    ``local_values``, for :func:`dataforge.generate.steps.check_program_steps`."""
    if not source or not source.strip():
        return ExecResult("no_program", error="the reply holds no program defining solution()")
    t0 = time.perf_counter()
    uid = limits.run_as_uid if limits.run_as_uid is not None and os.geteuid() == 0 else -1
    with tempfile.TemporaryDirectory(prefix="dataforge-pot-") as workdir:
        if uid >= 0:
            os.chown(workdir, uid, -1)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", HARNESS, str(uid), "1" if capture_locals else "0"], cwd=workdir,
                env=dict(SANDBOX_ENV),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                preexec_fn=_limit_child(limits), start_new_session=True, close_fds=True)
        except (OSError, subprocess.SubprocessError) as err:
            return ExecResult("crashed", error=f"could not start the sandbox: {err}", seconds=time.perf_counter() - t0)
        out, err_text, killed_for = _communicate(proc, source.encode("utf-8", errors="replace"), limits, t0)
        seconds = time.perf_counter() - t0
    stderr_tail = err_text.decode("utf-8", errors="replace")[-2000:]
    if killed_for == "timeout":
        return ExecResult("timeout", error=f"killed after {limits.timeout_s:g} s of wall time", seconds=seconds,
                          stderr=stderr_tail)
    if killed_for == "output_limit":
        return ExecResult("output_limit", error=f"printed more than {limits.max_output_bytes} bytes", seconds=seconds,
                          stderr=stderr_tail)
    line = out.decode("utf-8", errors="replace").strip().splitlines()
    report = _parse_report(line[-1]) if line else None
    rc = proc.returncode
    if report is not None:
        status = report.get("status")
        if status == "ok":
            return ExecResult("ok", value=str(report.get("value")), value_type=str(report.get("type")),
                              seconds=seconds, stderr=stderr_tail, local_values=_local_values(report))
        if status in STATUSES:
            return ExecResult(status, error=str(report.get("error") or ""), seconds=seconds, stderr=stderr_tail)
    if rc is not None and rc < 0 and -rc == signal.SIGXCPU:
        return ExecResult("cpu_limit", error=f"used more than {limits.cpu_s} s of CPU time", seconds=seconds,
                          stderr=stderr_tail)
    if "MemoryError" in stderr_tail:
        return ExecResult("memory_limit", error=f"exceeded {limits.memory_mb} MB of memory", seconds=seconds,
                          stderr=stderr_tail)
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return ExecResult("crashed", error=f"killed by signal {name}", seconds=seconds, stderr=stderr_tail)
    last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else f"exit status {rc}, no result"
    return ExecResult("crashed", error=last[:300], seconds=seconds, stderr=stderr_tail)


def _local_values(report: dict) -> dict[str, str] | None:
    found = report.get("locals")
    if not isinstance(found, dict):
        return None
    return {str(k): str(v) for k, v in found.items() if isinstance(v, str)}


def _parse_report(line: str) -> dict | None:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _communicate(proc: subprocess.Popen, data: bytes, limits: SandboxLimits, t0: float
                 ) -> tuple[bytes, bytes, str | None]:
    """Feed stdin, read stdout/stderr up to the output bound, enforce the wall time.
    Returns (stdout, stderr, None | "timeout" | "output_limit")."""
    assert proc.stdin and proc.stdout and proc.stderr
    deadline = t0 + limits.timeout_s
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs: dict[int, bytearray] = {out_fd: bytearray(), err_fd: bytearray()}
    killed_for: str | None = None
    sel = selectors.DefaultSelector()
    try:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        pending = memoryview(data)
        while sel.get_map():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                killed_for = "timeout"
                break
            for key, _ in sel.select(timeout=min(remaining, 0.5)):
                if key.fileobj is proc.stdin:
                    try:
                        n = os.write(proc.stdin.fileno(), pending[:65536])
                    except (BrokenPipeError, OSError):
                        n, pending = 0, memoryview(b"")
                    pending = pending[n:]
                    if not pending:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                bufs[key.fd].extend(chunk)
                if sum(len(b) for b in bufs.values()) > limits.max_output_bytes:
                    killed_for = "output_limit"
                    break
            if killed_for:
                break
        if killed_for is None:
            try:
                proc.wait(timeout=max(0.05, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                killed_for = "timeout"
    finally:
        sel.close()
        if killed_for is not None or proc.poll() is None:
            _kill_group(proc)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f and not f.closed:
                f.close()
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), killed_for


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_programs(sources: Sequence[str | None], limits: SandboxLimits = SandboxLimits(),
                 workers: int = 2) -> list[ExecResult]:
    """Run many programs, ``workers`` at a time (each in its own sandboxed process), in order."""
    if not sources:
        return []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pot-sandbox") as pool:
        return list(pool.map(lambda s: run_program(s, limits), sources))


# --- the answer of a program ---------------------------------------------------------------

def answer_from_result(result: ExecResult, answer_type: str = "numeric",
                       choices: Sequence[Choice] = ()) -> str | None:
    """The canonical answer a program's return value stands for, checked like a written
    answer: a number normalized; for multiple choice a label, an option's text or a number
    equal to one option's value; for yes/no a bool or the words."""
    if not result.ok or result.value is None:
        return None
    value = result.value
    if answer_type == "numeric":
        if result.value_type == "float":
            return _float_answer(float(value))
        if result.value_type in ("int", "fraction", "decimal"):
            return normalize_number(value)
        return extract_answer(value, "numeric")
    if answer_type == "yesno" and result.value_type == "bool":
        return value
    if answer_type == "option" and result.value_type in ("int", "float", "fraction", "decimal"):
        return extract_answer(f"The answer is {value}", "option", choices)
    return extract_answer(value, answer_type, choices)


def _float_answer(f: float) -> str | None:
    """A float result to a canonical number, rounded to 12 significant digits so that binary
    noise (``0.1 + 0.2`` = 0.30000000000000004) does not make a right program wrong."""
    if f.is_integer():
        return str(int(f))
    text = f"{f:.12g}"
    if "e" in text:
        text = f"{f:.15f}"
    return normalize_number(text)
