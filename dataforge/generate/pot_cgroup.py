"""Per-program totals for the program-of-thought sandbox: one control group per program.

Resource limits (``setrlimit``) hold per process: a program that starts 15 processes gets 16
times the memory and CPU of one. A control group counts every process of the program
together, and the kernel enforces it:

* ``memory`` — the program's memory (its processes and the files in its tmpfs) has one cap;
  beyond it the kernel's OOM killer ends a process of the program (status ``memory_limit``);
* ``pids`` — one total of tasks (processes and threads);
* ``cpu`` — at most one CPU of bandwidth, and the CPU time of all its processes together is
  read from the group (``cpuacct.usage`` / ``cpu.stat``): the sandbox kills the program when
  the total passes ``cpu_s`` (status ``cpu_limit``).

Both cgroup hierarchies are handled:

* **v2** (unified): a group below this process's own cgroup, when that cgroup may be written
  (root; or a delegated subtree: ``systemd-run --user --scope -p Delegate=yes dataforge ...``).
  When this process is alone in its cgroup, it moves itself into a leaf ``dataforge-self``
  first (a cgroup with processes cannot hand controllers to children);
* **v1** (one hierarchy per controller, as on this project's CI machines): a group in each of
  the memory, pids, cpu and cpuacct hierarchies below this process's own, when writable.

:func:`cgroup_problem` says why per-program groups cannot be made here (None when they can);
the sandbox then refuses to run programs unless ``cot.sandbox.require_cgroup`` is false.
"""

from __future__ import annotations

import atexit
import errno
import itertools
import os
import threading
import time
from dataclasses import dataclass, field

CGROUP_ROOT = "/sys/fs/cgroup"
_V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
_V2_CONTROLLERS = ("memory", "pids", "cpu")
_CPU_PERIOD_US = 100_000

_lock = threading.Lock()
_state: dict[str, object] = {}
_counter = itertools.count()


@dataclass
class ProgramCgroup:
    """The control group(s) of one program. ``procs_files`` are the ``cgroup.procs`` files the
    sandbox's first process writes its pid into before it executes anything (between fork and
    exec), so that everything the program starts is counted from its first instruction."""

    version: int
    dirs: dict[str, str]  # controller -> group directory (v2: one directory for all)
    procs_files: list[bytes] = field(default_factory=list)
    _oom_base: int = 0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of every process the program has run so far."""
        if self.version == 1:
            try:
                return int(_read(os.path.join(self.dirs["cpuacct"], "cpuacct.usage"))) / 1e9
            except (OSError, ValueError):
                return 0.0
        return _stat(os.path.join(self.dirs["cpu"], "cpu.stat"), "usage_usec") / 1e6

    def memory_killed(self) -> bool:
        """True when the kernel's OOM killer ended a process of the program (its memory cap)."""
        return self._oom_kills() > self._oom_base

    def _oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        return int(_stat(os.path.join(self.dirs["memory"], name), "oom_kill"))

    def remove(self, timeout: float = 5.0) -> None:
        """Remove the group once its processes have gone (they are being killed: retried)."""
        end = time.monotonic() + timeout
        for path in sorted(set(self.dirs.values())):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as err:
                    if err.errno != errno.EBUSY or time.monotonic() >= end:
                        break
                    time.sleep(0.005)


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _stat(path: str, key: str) -> float:
    """The value of ``key`` in a cgroup file of ``key value`` lines (0 when absent or unreadable)."""
    try:
        for line in _read(path).splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return float(value)
    except (OSError, ValueError):
        pass
    return 0.0


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode("ascii"))
    finally:
        os.close(fd)


def _own_cgroups(proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """controller -> this process's cgroup path; key "" for the v2 unified hierarchy."""
    out: dict[str, str] = {}
    for line in _read(proc_cgroup).splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            out[""] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def _mounts(mountinfo: str = "/proc/self/mountinfo") -> tuple[str | None, dict[str, str]]:
    """(v2 mount point or None, {v1 controller: mount point})."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in _read(mountinfo).splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        mount_point = fields[4].replace("\\040", " ")
        fstype, options = rfields[0], rfields[2].split(",")
        if fstype == "cgroup2" and v2 is None:
            v2 = mount_point
        elif fstype == "cgroup":
            for c in options:
                if c in _V1_CONTROLLERS and c not in v1:
                    v1[c] = mount_point
    return v2, v1


def _base_v1() -> tuple[dict[str, str] | None, str | None]:
    _, mounts = _mounts()
    missing = [c for c in _V1_CONTROLLERS if c not in mounts]
    if missing:
        return None, f"cgroup v1 controllers {', '.join(missing)} are not mounted"
    own = _own_cgroups()
    bases: dict[str, str] = {}
    for c in _V1_CONTROLLERS:
        parent = os.path.join(mounts[c], own.get(c, "/").lstrip("/"))
        base = os.path.join(parent, f"dataforge-pot-{os.getpid()}")
        try:
            os.makedirs(base, exist_ok=True)
        except OSError as err:
            return None, f"cannot create a cgroup in {parent} ({err.strerror}); run as root or in a delegated cgroup"
        bases[c] = base
    # tasks go to the leaves only; make sure the memory hierarchy accounts children together
    try:
        if _read(os.path.join(bases["memory"], "memory.use_hierarchy")).strip() == "0":
            _write(os.path.join(bases["memory"], "memory.use_hierarchy"), "1")
    except OSError:
        pass
    return bases, None


def _base_v2(mount: str) -> tuple[str | None, str | None]:
    own = _own_cgroups().get("", "/")
    parent = os.path.join(mount, own.lstrip("/"))
    try:
        available = _read(os.path.join(parent, "cgroup.controllers")).split()
    except OSError as err:
        return None, f"cannot read {parent}/cgroup.controllers ({err.strerror})"
    missing = [c for c in _V2_CONTROLLERS if c not in available]
    if missing:
        return None, f"the cgroup {own} cannot use the {', '.join(missing)} controller(s) (not delegated to it)"
    if not os.access(parent, os.W_OK):
        return None, (f"the cgroup {own} is not writable by this user; run as root or in a delegated cgroup "
                      "(systemd-run --user --scope -p Delegate=yes dataforge ...)")
    enable = " ".join("+" + c for c in _V2_CONTROLLERS)
    try:
        _write(os.path.join(parent, "cgroup.subtree_control"), enable)
    except OSError as err:
        if err.errno != errno.EBUSY:
            return None, f"cannot enable {enable} in {parent} ({err.strerror})"
        # processes live in our cgroup ("no internal processes"): move this process alone
        members = [p for p in _read(os.path.join(parent, "cgroup.procs")).split() if p.strip()]
        if members != [str(os.getpid())]:
            return None, (f"the cgroup {own} holds other processes besides this one, so it cannot hand controllers "
                          "to per-program groups; start dataforge in a cgroup of its own "
                          "(systemd-run --user --scope -p Delegate=yes dataforge ...)")
        leaf = os.path.join(parent, "dataforge-self")
        try:
            os.makedirs(leaf, exist_ok=True)
            _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
            _write(os.path.join(parent, "cgroup.subtree_control"), enable)
        except OSError as err2:
            return None, f"cannot move this process into {leaf} to enable {enable} ({err2.strerror})"
    base = os.path.join(parent, f"dataforge-pot-{os.getpid()}")
    try:
        os.makedirs(base, exist_ok=True)
        _write(os.path.join(base, "cgroup.subtree_control"), enable)
    except OSError as err:
        return None, f"cannot create {base} ({err.strerror})"
    return base, None


def _setup() -> tuple[int, object]:
    """(version, base) once per process; (0, reason) when per-program groups are unavailable."""
    with _lock:
        if _state.get("pid") != os.getpid():  # a forked child sets up its own
            _state.clear()
            _state["pid"] = os.getpid()
            try:
                v2, _ = _mounts()
                if v2 is not None and os.path.exists(os.path.join(v2, "cgroup.controllers")) \
                        and "" in _own_cgroups() and not _mounts()[1]:
                    base, problem = _base_v2(v2)
                    version = 2
                else:
                    base, problem = _base_v1()
                    version = 1
            except OSError as err:  # no /proc, no cgroup file system
                base, problem, version = None, f"cannot read the cgroup setup ({err})", 0
            _state["result"] = (version, base) if problem is None else (0, problem)
            if problem is None:
                bases = sorted(set(base.values())) if isinstance(base, dict) else [str(base)]
                for b in bases:
                    _remove_stale(os.path.dirname(b))
                atexit.register(_remove_bases, bases)
        return _state["result"]  # type: ignore[return-value]


def _remove_tree(path: str) -> None:
    """rmdir a group and its (empty) program groups; a group with processes stays."""
    try:
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                try:
                    os.rmdir(entry.path)
                except OSError:
                    pass
        os.rmdir(path)
    except OSError:
        pass


def _remove_bases(bases: list[str]) -> None:
    if _state.get("pid") == os.getpid():
        for b in bases:
            _remove_tree(b)


def _remove_stale(parent: str) -> None:
    """Groups left by dataforge processes that died (killed before their exit handler ran)."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not name.startswith("dataforge-pot-") or not name[14:].isdigit():
            continue
        pid = int(name[14:])
        if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        _remove_tree(entry.path)


def cgroup_problem() -> str | None:
    """None when a control group per program can be made here, else why not."""
    version, detail = _setup()
    return None if version else str(detail)


def new_program_cgroup(memory_bytes: int, max_tasks: int, cpu_cores: float = 1.0) -> ProgramCgroup:
    """A fresh group (per controller on v1) for one program, with its caps written.
    Raises OSError when the group cannot be made (see :func:`cgroup_problem`)."""
    version, base = _setup()
    if not version:
        raise OSError(errno.EPERM, str(base))
    name = f"p{next(_counter)}"
    quota = f"{max(1000, int(cpu_cores * _CPU_PERIOD_US))}"
    if version == 2:
        path = os.path.join(str(base), name)
        os.mkdir(path)
        group = ProgramCgroup(2, {c: path for c in _V2_CONTROLLERS})
        try:
            _write(os.path.join(path, "memory.max"), str(memory_bytes))
            try:
                _write(os.path.join(path, "memory.swap.max"), "0")
            except FileNotFoundError:  # no swap accounting: nothing to cap
                pass
            _write(os.path.join(path, "pids.max"), str(max_tasks))
            _write(os.path.join(path, "cpu.max"), f"{quota} {_CPU_PERIOD_US}")
        except OSError:
            group.remove(timeout=0)
            raise
        group.procs_files = [os.fsencode(os.path.join(path, "cgroup.procs"))]
    else:
        bases: dict[str, str] = base  # type: ignore[assignment]
        dirs = {c: os.path.join(bases[c], name) for c in _V1_CONTROLLERS}
        group = ProgramCgroup(1, {})
        try:
            for c, path in dirs.items():
                os.mkdir(path)
                group.dirs[c] = path
            mem = dirs["memory"]
            _write(os.path.join(mem, "memory.limit_in_bytes"), str(memory_bytes))
            if os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes")):
                _write(os.path.join(mem, "memory.memsw.limit_in_bytes"), str(memory_bytes))
            _write(os.path.join(dirs["pids"], "pids.max"), str(max_tasks))
            _write(os.path.join(dirs["cpu"], "cpu.cfs_period_us"), str(_CPU_PERIOD_US))
            _write(os.path.join(dirs["cpu"], "cpu.cfs_quota_us"), quota)
        except OSError:
            group.remove(timeout=0)
            raise
        group.procs_files = [os.fsencode(os.path.join(p, "cgroup.procs")) for p in dirs.values()]
    group._oom_base = group._oom_kills()
    return group


def join_cgroup(procs_files: list[bytes]) -> None:
    """Move the calling process into the groups (called between fork and exec: plain system
    calls only). Raises OSError when the kernel refuses."""
    pid = str(os.getpid()).encode("ascii")
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)
