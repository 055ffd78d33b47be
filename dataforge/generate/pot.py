"""Program of thought: the teacher writes ``def solution(): ...``, a sandbox runs it.

Program-aided reasoning hands the arithmetic to an interpreter (PAL, Gao et al. 2023,
"PAL: Program-aided Language Models"; Program of Thoughts, Chen et al. 2023), and TinyGSM
(Liu et al. 2023) distils 12.3M such programs into small models. The programs are untrusted
model output, so each one runs in its own sandbox. Two isolation levels
(``SandboxLimits.isolation``, ``cot.sandbox.isolation``; docs/reliability.md, "The
program-of-thought sandbox"):

``strict`` (the default) — the kernel enforces the limits, through bubblewrap (``bwrap``):

* its own user, PID, mount, network, IPC and UTS namespaces: every process a program starts
  dies with it (the PID namespace's init is killed when the program ends or is killed); the
  parent (and its ``/proc/<pid>/environ``) is not visible; the only interface is an unused
  loopback, so no socket reaches anything outside (``ctypes``, a re-imported ``_socket``);
* a file system of its own: ``/usr`` and the interpreter read-only, a fresh ``/proc`` and
  ``/dev``, a private, empty, size-capped tmpfs as working directory (``/tmp`` points into
  it); the data root, the home directory, the host's ``/tmp`` and ``/etc`` are not there;
* a seccomp filter (x86_64, aarch64) refusing non-Unix sockets, ptrace, process_vm_*,
  mount, unshare, setns, io_uring, bpf, perf_event_open, keyrings; no new user namespaces;
  no capabilities; its own session (no terminal injection);
* totals per program in a control group of its own (:mod:`dataforge.generate.pot_cgroup`):
  memory of all its processes and files, a task count, one CPU of bandwidth and the CPU
  seconds of all its processes together; per process besides: RLIMIT_NPROC (counted in the
  program's own user namespace), address space, CPU seconds, file size, open files; as root
  it runs as ``run_as_uid`` (nobody) on the host as well.

When strict isolation is not available here (no ``bwrap``, user namespaces disabled, no
writable cgroup unless ``require_cgroup`` is off), :func:`run_program` raises
:class:`PotSandboxError` (checked once per process and cached; :func:`check_sandbox` is the
preflight) instead of silently running programs with less.

``weak`` (opt-in, for machines without namespaces): a process of ``sys.executable -I -S`` with
rlimits, a clean environment, a best-effort network namespace, a uid switch as root, and a
seccomp filter the harness installs before the program runs (``seccomp_filter(weak=True)``):
no file can be opened or changed, nothing executed, no process started (threads can), no
socket, no signal to another process. So the parent's secrets stay unreadable and nothing
outlives the program here too; limits are per process.

In both modes the environment holds nothing but a minimal ``PATH``, the harness hands the
value back as one JSON line on a private copy of the original stdout (whatever the program
prints goes to stderr, kept, bounded, for the error message), and stdout and stderr together
may not exceed ``max_output_bytes``.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dataforge.errors import DataforgeError
from dataforge.generate import pot_cgroup
from dataforge.generate.answers import Choice, extract_answer, normalize_number

#: environment of the program: nothing inherited (no API keys, no proxies), a minimal PATH
SANDBOX_ENV = {"PATH": "/usr/bin:/bin"}

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
try:  # resolved in the parent: a child between fork and exec must not load libraries
    _LIBC = ctypes.CDLL(None, use_errno=True)
    _LIBC_UNSHARE = _LIBC.unshare
    _LIBC_MOUNT = _LIBC.mount
    _LIBC_MOUNT.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
except (OSError, AttributeError):  # not Linux
    _LIBC_UNSHARE = _LIBC_MOUNT = None
_CLONE_NEWNS = 0x00020000
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18

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
_nproc = int(sys.argv[3]) if len(sys.argv) > 3 else 0
if _nproc > 0:
    # strict mode: counted in the sandbox's own user namespace, so per program
    import resource
    resource.setrlimit(resource.RLIMIT_NPROC, (_nproc, _nproc))
_filter = bytes.fromhex(sys.argv[4]) if len(sys.argv) > 4 else b""
if (_uid >= 0 and os.geteuid() == 0) or _filter:
    # imported before the drop (the interpreter's own files may not be readable by that uid)
    # and before the weak mode's filter (which refuses to open any file)
    import math, cmath, fractions, decimal, statistics, itertools, functools, collections, datetime, \
        re, string, operator, random, heapq, bisect, traceback, numbers, copy, time, calendar, enum, \
        dataclasses, typing, textwrap, threading
if _filter:
    import ctypes
if _uid >= 0 and os.geteuid() == 0:
    os.setgroups([])
    os.setgid(_uid)
    os.setuid(_uid)
if _filter:
    # weak mode: the kernel refuses, from here on, to open or change files, execute, fork,
    # signal or open sockets (the program shares the host's file system and processes)
    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    _buf = ctypes.create_string_buffer(_filter, len(_filter))
    _prog = _Fprog(len(_filter) // 8, ctypes.addressof(_buf))
    _libc = ctypes.CDLL(None, use_errno=True)
    _z = ctypes.c_ulong(0)
    if _libc.prctl(38, ctypes.c_ulong(1), _z, _z, _z) != 0 or \
            _libc.prctl(22, ctypes.c_ulong(2), ctypes.byref(_prog), _z, _z) != 0:  # NO_NEW_PRIVS, SECCOMP
        _result.write(json.dumps({"status": "crashed", "error": "the seccomp filter could not be installed "
                                  f"(errno {ctypes.get_errno()})"}) + "\n")
        _result.flush()
        raise SystemExit(0)
    del _libc, _prog, _buf, _Fprog, ctypes

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
    network_namespace: bool = True  # weak mode: try a private, empty network namespace as well
    #: when dataforge runs as root: the uid programs run as (nobody); in strict mode as root
    #: programs always run as an unprivileged uid (None means nobody there)
    run_as_uid: int | None = 65534
    #: "strict": namespaces, seccomp and quotas through bubblewrap, else PotSandboxError;
    #: "weak": the former best-effort sandbox (see the module docstring)
    isolation: str = "strict"
    max_processes: int = 16  # strict: RLIMIT_NPROC inside the program's user namespace, and its cgroup's tasks
    disk_bytes: int = 16 * 1024 * 1024  # strict: size of the working directory's tmpfs
    #: strict: the program's totals (memory_mb + disk_bytes of memory for all its processes and
    #: files, max_processes tasks, one CPU of bandwidth, cpu_s CPU seconds together) in a control
    #: group of its own (dataforge/generate/pot_cgroup.py); where none can be made, programs are
    #: refused unless this is False (then the limits hold per process only)
    require_cgroup: bool = True


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


# --- strict isolation: bubblewrap, namespaces, seccomp ------------------------------------

class PotSandboxError(DataforgeError, RuntimeError):
    """Programs cannot run with the isolation asked for (strict needs bubblewrap and user
    namespaces); the message says what is missing and how to opt into the weak sandbox."""


ISOLATIONS = ("strict", "weak")

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
#: refused with EPERM inside the strict sandbox: name -> (x86_64 number, aarch64 number)
DENIED_SYSCALLS = {
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51),
    "unshare": (272, 97), "setns": (308, 268), "open_by_handle_at": (304, 265),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218), "bpf": (321, 280),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282), "kexec_load": (246, 104),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    # io_uring can open sockets without the socket() system call the filter inspects
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
}
_SOCKET_NR = {"x86_64": 41, "aarch64": 198}
#: refused besides in the weak sandbox, whose programs share the host's file system, processes
#: and network: no file is opened or changed, no program executed, no process started (threads
#: still can), no socket of any family, no signal sent; name -> (x86_64, aarch64; None: absent)
WEAK_DENIED_SYSCALLS = {
    "open": (2, None), "openat": (257, 56), "openat2": (437, 437), "creat": (85, None),
    "name_to_handle_at": (303, 264), "memfd_create": (319, 279),
    "execve": (59, 221), "execveat": (322, 281), "fork": (57, None), "vfork": (58, None),
    "socket": (41, 198), "socketpair": (53, 199),
    "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "pidfd_send_signal": (424, 424),
    "pidfd_open": (434, 434), "pidfd_getfd": (438, 438),
    "unlink": (87, None), "unlinkat": (263, 35), "rename": (82, None), "renameat": (264, 38),
    "renameat2": (316, 276), "mkdir": (83, None), "mkdirat": (258, 34), "rmdir": (84, None),
    "symlink": (88, None), "symlinkat": (266, 36), "link": (86, None), "linkat": (265, 37),
    "truncate": (76, 45), "chmod": (90, None), "fchmodat": (268, 53), "fchmodat2": (452, 452),
    "chown": (92, None), "lchown": (94, None), "fchownat": (260, 54), "mknod": (133, None),
    "mknodat": (259, 33), "utimes": (235, None), "utimensat": (280, 88), "futimesat": (261, None),
    "setxattr": (188, 5), "lsetxattr": (189, 6), "removexattr": (197, 14), "lremovexattr": (198, 15),
}
_CLONE_NR = {"x86_64": 56, "aarch64": 220}
_CLONE3_NR = 435
_CLONE_THREAD = 0x00010000


def seccomp_filter(machine: str | None = None, *, weak: bool = False) -> bytes | None:
    """The classic-BPF seccomp program of the sandbox: a foreign architecture (32-bit calls,
    x32) is killed or refused, :data:`DENIED_SYSCALLS` fail with EPERM, ``socket()`` of any
    family but AF_UNIX fails with EACCES. bwrap loads it (``--seccomp FD``) in strict mode.
    ``weak``: the weak sandbox's filter, which the harness installs itself before the
    program runs: :data:`WEAK_DENIED_SYSCALLS` fail too (EPERM), ``clone`` only makes threads
    (``CLONE_THREAD``), ``clone3`` answers ENOSYS (the C library falls back to ``clone``).
    None on other machines."""
    machine = machine or platform.machine()
    if machine not in _AUDIT_ARCH:
        return None
    idx = 0 if machine == "x86_64" else 1
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|JGE|JSET|K, BPF_RET|K
    allow, errno_, kill = 0x7FFF0000, 0x00050000, 0x80000000
    prog: list[list] = []
    labels: dict[str, int] = {}

    def ins(code: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        prog.append([code, jt, jf, k])

    ins(ld, 4)  # seccomp_data.arch
    ins(jeq, _AUDIT_ARCH[machine], 0, "kill")
    ins(ld, 0)  # seccomp_data.nr
    if machine == "x86_64":
        ins(jge, 0x40000000, "eperm", 0)  # the x32 ABI
    denied = [numbers[idx] for numbers in DENIED_SYSCALLS.values()]
    if weak:
        denied += [numbers[idx] for numbers in WEAK_DENIED_SYSCALLS.values() if numbers[idx] is not None]
        ins(jeq, _CLONE3_NR, "enosys", 0)
    for number in dict.fromkeys(denied):
        ins(jeq, number, "eperm", 0)
    if weak:
        ins(jeq, _CLONE_NR[machine], 0, "not_clone")
        ins(ld, 16)  # low half of args[0]: the clone flags (x86_64 and aarch64 alike)
        ins(jset, _CLONE_THREAD, "allow", "eperm")
        labels["not_clone"] = len(prog)
    ins(jeq, _SOCKET_NR[machine], 0, "allow")
    ins(ld, 16)  # low half of args[0]: the address family
    ins(jeq, 1, "allow", 0)  # AF_UNIX
    ins(ret, errno_ | 13)  # EACCES
    labels["allow"] = len(prog)
    ins(ret, allow)
    labels["eperm"] = len(prog)
    ins(ret, errno_ | 1)
    labels["kill"] = len(prog)
    ins(ret, kill)
    if weak:
        labels["enosys"] = len(prog)
        ins(ret, errno_ | 38)
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        assert 0 <= jt < 256 and 0 <= jf < 256
        out += struct.pack("=HBBI", code, jt, jf, k)
    return bytes(out)


_SECCOMP = seccomp_filter() if sys.platform.startswith("linux") else None
_WEAK_SECCOMP = seccomp_filter(weak=True) if sys.platform.startswith("linux") else None
_WORKDIR = "/sandbox"  # the program's working directory inside the strict sandbox (a tmpfs)
_PROBE = "def solution():\n    return 6 * 7\n"
_status_lock = threading.Lock()
_status: dict[tuple, str | None] = {}


def _strict_uid(limits: SandboxLimits) -> int:
    """The unprivileged uid bwrap runs as when dataforge runs as root (never root: the
    process count is only enforced for other uids); -1 when not root (no switch)."""
    if os.geteuid() != 0:
        return -1
    return limits.run_as_uid if limits.run_as_uid else 65534


def _interpreter() -> tuple[str, str]:
    """(installation prefix, real executable) of the interpreter programs run with."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return os.path.realpath(sys.base_prefix), exe


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def sandbox_problem(limits: SandboxLimits = SandboxLimits()) -> str | None:
    """None when the strict sandbox works here, else what is missing. Probed once per
    process (and uid) by running a tiny program in it; the answer is cached."""
    key = (os.geteuid(), _strict_uid(limits), limits.require_cgroup)
    with _status_lock:
        if key not in _status:
            _status[key] = _probe_strict(limits)
        return _status[key]


def _probe_strict(limits: SandboxLimits) -> str | None:
    if not sys.platform.startswith("linux"):
        return f"strict isolation needs Linux namespaces (this is {sys.platform})"
    if shutil.which("bwrap", path=os.environ.get("PATH", "") + ":/usr/bin:/bin") is None:
        return "bubblewrap (bwrap) is not installed"
    prefix, exe = _interpreter()
    if not (_under(exe, prefix) or _under(exe, "/usr")):
        return f"the interpreter {exe} lies outside its prefix {prefix}"
    if limits.require_cgroup:
        problem = pot_cgroup.cgroup_problem()
        if problem is not None:
            return (f"no control group per program can be made ({problem}), so a program's processes "
                    "together could exceed its memory, CPU and task limits (set cot.sandbox.require_cgroup: "
                    "false to accept per-process limits)")
    probe_limits = SandboxLimits(timeout_s=max(10.0, limits.timeout_s), run_as_uid=limits.run_as_uid,
                                 require_cgroup=limits.require_cgroup)
    r = _run(_PROBE, probe_limits, capture_locals=False, strict=True)
    if r.ok and r.value == "42":
        return None
    detail = " ".join(line for line in r.stderr.strip().splitlines()[-2:] if line) or r.reason
    return f"bwrap could not start a sandbox ({detail})"


def check_sandbox(limits: SandboxLimits = SandboxLimits()) -> str:
    """The preflight: the isolation programs will run with ("strict" or "weak"), or
    :class:`PotSandboxError` when strict isolation is asked for and not available here."""
    if limits.isolation == "weak":
        if _WEAK_SECCOMP is None:
            raise PotSandboxError(
                f"the weak program sandbox needs a seccomp filter, which dataforge builds for x86_64 and aarch64 "
                f"Linux only (this is {sys.platform} {platform.machine()}): without it a program could read "
                "the parent's secrets")
        return "weak"
    if limits.isolation != "strict":
        raise PotSandboxError(f"unknown program sandbox isolation {limits.isolation!r}: use strict or weak")
    problem = sandbox_problem(limits)
    if problem is not None:
        raise PotSandboxError(
            f"program-of-thought cannot isolate programs here: {problem}. Strict isolation needs bubblewrap "
            "(apt-get install bubblewrap) and user namespaces (sysctl user.max_user_namespaces > 0, "
            "kernel.unprivileged_userns_clone=1 where it exists, "
            "kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu). Or opt into the weaker sandbox "
            "(no file system isolation, processes can outlive a program) with `cot: {sandbox: {isolation: weak}}`; "
            "see docs/reliability.md, 'The program-of-thought sandbox'")
    return "strict"


def _root_links() -> list[str]:
    """/bin, /lib, ... as on the host: symlinks into /usr (merged /usr) or read-only binds."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _strict_command(limits: SandboxLimits, capture_locals: bool, info_fd: int, seccomp_fd: int | None,
                    prefix_source: str | None) -> list[str]:
    prefix, exe = _interpreter()
    bwrap = shutil.which("bwrap", path=os.environ.get("PATH", "") + ":/usr/bin:/bin") or "bwrap"
    cmd = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session",
           "--hostname", "sandbox", "--ro-bind", "/usr", "/usr", *_root_links()]
    if not _under(prefix, "/usr"):
        cmd += ["--ro-bind", prefix_source or prefix, prefix]
    cmd += ["--proc", "/proc", "--dev", "/dev",
            "--size", str(max(65536, int(limits.disk_bytes))), "--tmpfs", _WORKDIR, "--symlink", _WORKDIR, "/tmp",
            "--remount-ro", "/", "--chdir", _WORKDIR,
            "--clearenv", "--setenv", "PATH", SANDBOX_ENV["PATH"], "--info-fd", str(info_fd)]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return cmd + ["--", exe, "-I", "-S", "-c", HARNESS, "-1", "1" if capture_locals else "0",
                  str(max(3, int(limits.max_processes)))]


# --- running it ----------------------------------------------------------------------------

def _rlimit_settings(limits: SandboxLimits) -> list[tuple[int, int, int]]:
    cpu = max(1, int(limits.cpu_s))
    # computed in the parent, never above the hard limits we already run under (raising a
    # hard limit is refused, and would make every program "crashed")
    wanted = [(resource.RLIMIT_AS, limits.memory_mb * 1024 * 1024, limits.memory_mb * 1024 * 1024),
              (resource.RLIMIT_CPU, cpu, cpu + 1),
              (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
              (resource.RLIMIT_CORE, 0, 0),
              (resource.RLIMIT_NOFILE, 64, 64)]
    return [(which, *clamp_limits(soft, hard, resource.getrlimit(which)[1])) for which, soft, hard in wanted]


def _limit_child(limits: SandboxLimits) -> Callable[[], None]:
    """The weak mode's preexec_fn: runs in the child between fork and exec (only
    async-signal-tolerant work: syscalls through pre-resolved functions, no imports)."""
    settings = _rlimit_settings(limits)
    is_root = os.geteuid() == 0

    def apply() -> None:
        if limits.network_namespace and _LIBC_UNSHARE is not None:
            # failure (no privileges, no user namespaces) leaves the harness as the guard
            if _LIBC_UNSHARE(_CLONE_NEWNET if is_root else _CLONE_NEWUSER | _CLONE_NEWNET) != 0 and is_root:
                _LIBC_UNSHARE(_CLONE_NEWUSER | _CLONE_NEWNET)
        for which, soft, hard in settings:
            resource.setrlimit(which, (soft, hard))

    return apply


def _strict_child(limits: SandboxLimits, uid: int, prefix: bytes | None,
                  cgroup_procs: Sequence[bytes] = ()) -> Callable[[], None]:
    """The strict mode's preexec_fn (before bwrap starts): into the program's control group
    (so that bwrap and everything after it is counted there); the limits; as root, the switch
    to ``uid``, after binding the interpreter's prefix (which that uid may not be able to
    reach, e.g. under /root) onto /tmp in a private mount namespace of this child, for bwrap."""
    settings = _rlimit_settings(limits)
    procs = list(cgroup_procs)

    def apply() -> None:
        if procs:
            pot_cgroup.join_cgroup(procs)
        for which, soft, hard in settings:
            resource.setrlimit(which, (soft, hard))
        if uid < 0:
            return
        if prefix is not None:
            if _LIBC_UNSHARE is None or _LIBC_MOUNT is None or _LIBC_UNSHARE(_CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
            if _LIBC_MOUNT(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "making the mounts private failed")
            if _LIBC_MOUNT(prefix, b"/tmp", None, _MS_BIND | _MS_REC, None) != 0:
                raise OSError(ctypes.get_errno(), "binding the interpreter failed")
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

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
    ``local_values``, for :func:`dataforge.generate.steps.check_program_steps`.
    Raises :class:`PotSandboxError` when ``limits.isolation`` is strict and this machine
    cannot provide it (see :func:`check_sandbox`)."""
    if not source or not source.strip():
        return ExecResult("no_program", error="the reply holds no program defining solution()")
    strict = check_sandbox(limits) == "strict"
    return _run(source, limits, capture_locals=capture_locals, strict=strict)


def _run(source: str, limits: SandboxLimits, *, capture_locals: bool, strict: bool) -> ExecResult:
    t0 = time.perf_counter()
    data = source.encode("utf-8", errors="replace")
    if strict:
        uid = _strict_uid(limits)
        prefix, _ = _interpreter()
        bind_prefix = uid >= 0 and not _under(prefix, "/usr")
        info_r, info_w = os.pipe()
        fds = [info_w]
        seccomp_fd = None
        if _SECCOMP is not None:
            seccomp_fd, sc_w = os.pipe()
            os.write(sc_w, _SECCOMP)  # a few hundred bytes: fits the pipe's buffer
            os.close(sc_w)
            fds.append(seccomp_fd)
        group: pot_cgroup.ProgramCgroup | None = None
        try:
            if limits.require_cgroup:
                group = pot_cgroup.new_program_cgroup(
                    limits.memory_mb * 1024 * 1024 + int(limits.disk_bytes),
                    max(3, int(limits.max_processes)) + 2)  # + bwrap and the namespace's init
            proc = subprocess.Popen(
                _strict_command(limits, capture_locals, info_w, seccomp_fd, "/tmp" if bind_prefix else None),
                cwd="/", env=dict(SANDBOX_ENV), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                preexec_fn=_strict_child(limits, uid, os.fsencode(prefix) if bind_prefix else None,
                                         group.procs_files if group else ()),
                start_new_session=True, close_fds=True, pass_fds=tuple(fds))
        except (OSError, subprocess.SubprocessError) as err:
            os.close(info_r)
            if group is not None:
                group.remove(timeout=0)
            return ExecResult("crashed", error=f"could not start the sandbox: {err}", seconds=time.perf_counter() - t0)
        finally:
            for fd in fds:
                os.close(fd)
        try:
            out, err_text, killed_for = _communicate(proc, data, limits, t0, info_fd=info_r, group=group)
            memory_killed = group is not None and group.memory_killed()
        finally:
            os.close(info_r)
            if group is not None:
                group.remove()
        rc = proc.returncode
        if rc is not None and rc > 128:  # bwrap passes a signal on as 128 + its number
            rc = -(rc - 128)
        seconds = time.perf_counter() - t0
    else:
        uid = limits.run_as_uid if limits.run_as_uid is not None and os.geteuid() == 0 else -1
        with tempfile.TemporaryDirectory(prefix="dataforge-pot-") as workdir:
            if uid >= 0:
                os.chown(workdir, uid, -1)
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", HARNESS, str(uid), "1" if capture_locals else "0", "0",
                     (_WEAK_SECCOMP or b"").hex()],
                    cwd=workdir, env=dict(SANDBOX_ENV),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    preexec_fn=_limit_child(limits), start_new_session=True, close_fds=True)
            except (OSError, subprocess.SubprocessError) as err:
                return ExecResult("crashed", error=f"could not start the sandbox: {err}",
                                  seconds=time.perf_counter() - t0)
            out, err_text, killed_for = _communicate(proc, data, limits, t0)
            memory_killed = False
            rc = proc.returncode
            seconds = time.perf_counter() - t0
    stderr_tail = err_text.decode("utf-8", errors="replace")[-2000:]
    if killed_for == "timeout":
        return ExecResult("timeout", error=f"killed after {limits.timeout_s:g} s of wall time", seconds=seconds,
                          stderr=stderr_tail)
    if killed_for == "output_limit":
        return ExecResult("output_limit", error=f"printed more than {limits.max_output_bytes} bytes", seconds=seconds,
                          stderr=stderr_tail)
    if killed_for == "cpu_limit":
        return ExecResult("cpu_limit", error=f"used more than {limits.cpu_s} s of CPU time",
                          seconds=seconds, stderr=stderr_tail)
    line = out.decode("utf-8", errors="replace").strip().splitlines()
    report = _parse_report(line[-1]) if line else None
    if memory_killed and (report is None or report.get("status") != "ok"):
        return ExecResult("memory_limit", error=f"its processes together exceeded {limits.memory_mb} MB of memory "
                          "(killed by the kernel)", seconds=seconds, stderr=stderr_tail)
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


def _communicate(proc: subprocess.Popen, data: bytes, limits: SandboxLimits, t0: float,
                 info_fd: int | None = None, group: pot_cgroup.ProgramCgroup | None = None
                 ) -> tuple[bytes, bytes, str | None]:
    """Feed stdin, read stdout/stderr up to the output bound, enforce the wall time and (with
    the program's control ``group``) the CPU time of all its processes together.
    Returns (stdout, stderr, None | "timeout" | "output_limit" | "cpu_limit"). ``info_fd``:
    bwrap's ``--info-fd`` (strict mode), whose ``child-pid`` is the init of the program's PID
    namespace: killing it kills every process the program started."""
    assert proc.stdin and proc.stdout and proc.stderr
    deadline = t0 + limits.timeout_s
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs: dict[int, bytearray] = {out_fd: bytearray(), err_fd: bytearray()}
    info = bytearray()
    init_pidfd: int | None = None
    killed_for: str | None = None
    sel = selectors.DefaultSelector()
    try:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        if info_fd is not None:
            sel.register(info_fd, selectors.EVENT_READ)
        pending = memoryview(data)
        while sel.get_map():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                killed_for = "timeout"
                break
            if group is not None and group.cpu_seconds() > limits.cpu_s:
                killed_for = "cpu_limit"
                break
            for key, _ in sel.select(timeout=min(remaining, 0.5 if group is None else 0.05)):
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
                    if key.fd == info_fd:
                        init_pidfd = _open_init(bytes(info))
                    continue
                if key.fd == info_fd:
                    info.extend(chunk[:4096])
                    continue
                bufs[key.fd].extend(chunk)
                if sum(len(b) for b in bufs.values()) > limits.max_output_bytes:
                    killed_for = "output_limit"
                    break
            if killed_for:
                break
        if killed_for is None:
            try:
                _wait_unreaped(proc, max(0.05, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                killed_for = "timeout"
    finally:
        sel.close()
        if info_fd is not None:
            _end_sandbox(proc, init_pidfd)
        else:
            # weak mode: the process group goes, even when the program ended (a child it
            # managed to start would otherwise live on; one that left the group still can)
            _kill_group(proc)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f and not f.closed:
                f.close()
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), killed_for


def _wait_unreaped(proc: subprocess.Popen, timeout: float) -> None:
    """Wait until ``proc`` has exited without reaping it: its pid (the process group's id)
    cannot be reused before the group is killed. TimeoutExpired after ``timeout``."""
    end = time.perf_counter() + timeout
    delay = 0.001
    while True:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:  # already reaped
            return
        if time.perf_counter() >= end:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(delay)
        delay = min(2 * delay, 0.02)


def _open_init(info: bytes) -> int | None:
    """A pidfd for the init of the program's PID namespace (bwrap's ``child-pid``): a stable
    handle, so that killing it later cannot hit another process that reused the pid."""
    try:
        child = int(json.loads(info.decode("utf-8", errors="replace") or "{}").get("child-pid") or 0)
    except (ValueError, AttributeError):
        return None
    if child <= 0 or not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(child)
    except OSError:
        return None


def _end_sandbox(proc: subprocess.Popen, init_pidfd: int | None) -> None:
    """Kill the init of the program's PID namespace and wait until it has exited: the kernel
    kills every process in the namespace before that (bwrap itself may exit earlier, as soon as
    the program's exit status is known). Then bwrap's process group, if still there."""
    if init_pidfd is not None:
        try:
            signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except OSError:
            pass
        try:
            poller = selectors.DefaultSelector()
            poller.register(init_pidfd, selectors.EVENT_READ)  # readable once the process has exited
            poller.select(timeout=5)
            poller.close()
        finally:
            os.close(init_pidfd)
    if proc.poll() is None:
        try:
            proc.wait(timeout=5 if init_pidfd is not None else 0.01)
            return
        except subprocess.TimeoutExpired:
            pass
        _kill_group(proc)


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
