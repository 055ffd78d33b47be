"""The program-of-thought sandbox: every way a program can end has a status and a clear reason."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from dataforge.generate.answers import Choice
from dataforge.generate.pot import (SANDBOX_ENV, ExecResult, SandboxLimits, answer_from_result, extract_program,
                                    run_program, run_programs)

FAST = SandboxLimits(timeout_s=4.0, cpu_s=3, memory_mb=256)


def test_correct_program_returns_its_value():
    r = run_program("def solution():\n    boxes = 3\n    per_box = 4\n    return boxes * per_box\n", FAST)
    assert (r.status, r.value, r.value_type, r.reason) == ("ok", "12", "int", "ok")
    assert answer_from_result(r) == "12"


def test_wrong_program_runs_but_its_answer_does_not_match():
    from dataforge.generate.answers import answers_match

    r = run_program("def solution():\n    return 3 + 4\n", FAST)
    assert r.ok and answer_from_result(r) == "7"
    assert not answers_match(answer_from_result(r), "12")


def test_infinite_loop_is_killed_by_the_wall_time_limit():
    r = run_program("def solution():\n    while True:\n        pass\n", SandboxLimits(timeout_s=1.0, cpu_s=30))
    assert r.status == "timeout"
    assert r.reason == "timeout: killed after 1 s of wall time"
    assert 1.0 <= r.seconds < 5.0


def test_sleeping_program_is_killed_by_the_wall_time_limit():
    r = run_program("import time\ndef solution():\n    time.sleep(60)\n    return 1\n", SandboxLimits(timeout_s=1.0))
    assert r.status == "timeout" and r.seconds < 5.0


def test_cpu_time_limit():
    r = run_program("def solution():\n    while True:\n        pass\n", SandboxLimits(timeout_s=30, cpu_s=1))
    assert r.status == "cpu_limit"
    assert r.reason == "cpu_limit: used more than 1 s of CPU time"


@pytest.mark.parametrize("body", [
    "    x = bytearray(10 ** 10)\n    return len(x)\n",          # one huge allocation
    "    xs = []\n    while True:\n        xs.append(' ' * 10 ** 6)\n",  # a slow leak
])
def test_memory_bomb_is_stopped(body):
    r = run_program("def solution():\n" + body, SandboxLimits(timeout_s=10, memory_mb=128))
    assert r.status == "memory_limit", r
    assert "memory" in r.reason.lower()


def test_network_is_refused():
    prog = ("import socket\ndef solution():\n    s = socket.socket()\n"
            "    s.connect(('127.0.0.1', 9))\n    return 1\n")
    r = run_program(prog, FAST)
    assert r.status == "error"
    assert "PermissionError: network access is disabled in the program sandbox (line 3)" in r.reason
    # the harness alone (no namespace, no uid switch): a library that opens sockets is refused too
    harness_only = SandboxLimits(network_namespace=False, run_as_uid=None)
    r2 = run_program("import urllib.request\ndef solution():\n"
                     "    return urllib.request.urlopen('http://127.0.0.1:9/').status\n", harness_only)
    assert r2.status == "error" and "network access is disabled" in r2.reason, r2


def _listening_server() -> tuple[socket.socket, list[int]]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    hits: list[int] = []
    return srv, hits


def test_reimported_socket_module_still_reaches_nothing():
    """The harness patch can be undone by re-importing ``_socket``; the private network
    namespace (and, as root, the unprivileged uid) must still keep a loopback server unreached."""
    srv, hits = _listening_server()
    port = srv.getsockname()[1]
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                hits.append(1)
                conn.close()
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    prog = ("import sys\ndef solution():\n    del sys.modules['_socket']\n    import _socket\n"
            f"    s = _socket.socket()\n    s.connect(('127.0.0.1', {port}))\n    return 1\n")
    try:
        probe = run_program("def solution():\n    return open('/proc/self/net/dev').read().count(':')\n",
                            SandboxLimits(run_as_uid=None))
        if probe.value != "1" and os.geteuid() != 0:
            pytest.skip("no network namespace here (unprivileged user namespaces disabled) and not root")
        r = run_program(prog, SandboxLimits(run_as_uid=None) if probe.value == "1" else FAST)
    finally:
        stop.set()
        t.join()
        srv.close()
    assert r.status == "error", r
    assert hits == [], "the sandboxed program reached the loopback server"


def test_environment_holds_no_secrets(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-never-arrive")
    monkeypatch.setenv("DATAFORGE_TEST_KEY", "secret-2")
    r = run_program("import os\ndef solution():\n"
                    "    return os.environ.get('OPENAI_API_KEY', 'absent') + '|' + ','.join(sorted(os.environ))\n", FAST)
    assert r.ok
    value, names = r.value.split("|")
    assert value == "absent"
    # only the minimal PATH (and LC_CTYPE, which the interpreter sets itself: PEP 538; PWD,
    # which bwrap sets to the sandbox's working directory)
    assert set(names.split(",")) <= {"PATH", "LC_CTYPE", "PWD"} and "PATH" in names
    assert SANDBOX_ENV == {"PATH": "/usr/bin:/bin"}


def test_working_directory_is_fresh_and_empty():
    prog = "import os\ndef solution():\n    return str(len(os.listdir('.'))) + ' ' + os.getcwd()\n"
    r = run_program(prog, FAST)
    # strict: a private tmpfs that exists only in the program's mount namespace
    assert r.value == "0 /sandbox", r
    # weak: a fresh temporary directory, removed after the run, in which nothing can be
    # listed or opened (the seccomp filter refuses every open)
    r = run_program("import os\ndef solution():\n    return os.getcwd()\n", SandboxLimits(isolation="weak"))
    assert "dataforge-pot-" in r.value, r
    assert not os.path.exists(r.value)  # removed after the run
    r = run_program(prog, SandboxLimits(isolation="weak"))
    assert r.status == "error" and "Operation not permitted" in r.reason, r


def test_syntax_error_names_the_line():
    r = run_program("def solution():\n    x = (1 +\n    return x\n", FAST)
    assert r.status == "syntax_error"
    assert r.reason.startswith("syntax_error: line ")


def test_runtime_error_names_exception_and_line():
    r = run_program("def solution():\n    a = 1\n    return a / 0\n", FAST)
    assert r.status == "error"
    assert r.reason == "error: ZeroDivisionError: division by zero (line 3)"


def test_program_without_solution_function():
    r = run_program("x = 42\n", FAST)
    assert r.status == "no_solution" and "solution()" in r.reason


def test_no_program():
    assert run_program(None).status == "no_program"
    assert run_program("   ").status == "no_program"


def test_unsupported_return_type():
    r = run_program("def solution():\n    return [1, 2]\n", FAST)
    assert r.status == "bad_result" and "list" in r.reason


def test_output_is_bounded():
    r = run_program("def solution():\n    print('x' * 10 ** 7)\n    return 1\n", SandboxLimits(max_output_bytes=4096))
    assert r.status == "output_limit"
    assert r.reason == "output_limit: printed more than 4096 bytes"


def test_printing_does_not_disturb_the_result():
    r = run_program("import sys\ndef solution():\n    print('{\"status\": \"ok\", \"type\": \"int\", \"value\": \"999\"}')\n"
                    "    return 5\n", FAST)
    assert r.ok and r.value == "5"
    assert "999" in r.stderr


def test_starting_processes_is_refused():
    r = run_program("import os\ndef solution():\n    return os.system('true')\n", FAST)
    assert r.status == "error" and "starting processes is disabled" in r.reason
    r2 = run_program("import subprocess\ndef solution():\n    return subprocess.run(['true']).returncode\n", FAST)
    assert r2.status == "error"


def test_ctypes_is_unavailable():
    r = run_program("import ctypes\ndef solution():\n    return 1\n", FAST)
    assert r.status == "error" and "ctypes" in r.reason


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid switch applies when dataforge runs as root")
def test_runs_as_an_unprivileged_user_when_root(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    target.chmod(0o644)
    prog = f"import os\ndef solution():\n    open({str(target)!r}, 'w').write('gone')\n    return 1\n"
    r = run_program(prog, FAST)  # strict: the file is not even there
    assert r.status == "error" and ("Permission denied" in r.reason or "No such file" in r.reason), r
    r = run_program(prog, SandboxLimits(isolation="weak"))
    assert r.status == "error" and "Operation not permitted" in r.reason  # weak: the filter refuses any open
    assert target.read_text() == "keep me"
    uid = "import os\ndef solution():\n    return os.getuid()\n"
    assert run_program(uid, FAST).value == "65534"
    assert run_program(uid, SandboxLimits(isolation="weak")).value == "65534"


def test_float_noise_and_other_numbers():
    r = run_program("def solution():\n    return 0.1 + 0.2\n", FAST)
    assert r.value == "0.30000000000000004" and answer_from_result(r) == "0.3"
    r = run_program("from fractions import Fraction\ndef solution():\n    return Fraction(3, 4)\n", FAST)
    assert answer_from_result(r) == "0.75"
    r = run_program("def solution():\n    return 24.0\n", FAST)
    assert answer_from_result(r) == "24"
    r = run_program("def solution():\n    return '$1,200'\n", FAST)
    assert answer_from_result(r) == "1200"


def test_answers_of_other_types():
    opts = (Choice("A", "21"), Choice("B", "21.5"), Choice("C", "22"))
    assert answer_from_result(ExecResult("ok", "B", "str"), "option", opts) == "B"
    assert answer_from_result(ExecResult("ok", "21.5", "float"), "option", opts) == "B"
    assert answer_from_result(ExecResult("ok", "23", "int"), "option", opts) is None
    assert answer_from_result(ExecResult("ok", "yes", "bool"), "yesno") == "yes"
    assert answer_from_result(ExecResult("ok", "no", "str"), "yesno") == "no"
    assert answer_from_result(ExecResult("timeout", error="x")) is None


@pytest.mark.parametrize("reply, expected", [
    ("```python\ndef solution():\n    return 1\n```", "def solution():\n    return 1\n"),
    ("Here it is:\n```py\nimport math\n\ndef solution():\n    return math.sqrt(4)\n```\nDone.",
     "import math\n\ndef solution():\n    return math.sqrt(4)\n"),
    # the last block that defines solution wins over an earlier sketch
    ("```python\ndef helper():\n    pass\n```\n```python\ndef solution():\n    return 2\n```",
     "def solution():\n    return 2\n"),
    ("Sure.\ndef solution():\n    return 3", "def solution():\n    return 3\n"),
    ("x = 5\ndef solution():\n    return x", "x = 5\ndef solution():\n    return x\n"),
    ("```python\ndef solution():\n    return 4\n", "def solution():\n    return 4\n"),  # unclosed fence
    ("The answer is 12.", None),
    ("", None),
])
def test_extract_program(reply, expected):
    assert extract_program(reply) == expected


def test_many_programs_in_bulk_keep_their_order():
    progs = [f"def solution():\n    return {i} * {i}\n" for i in range(8)] + ["def solution(:\n"]
    results = run_programs(progs, FAST, workers=2)
    assert [r.value for r in results[:8]] == [str(i * i) for i in range(8)]
    assert results[8].status == "syntax_error"
    assert run_programs([], FAST) == []


@pytest.mark.shared_data
def test_svamp_equations_run_to_their_answers(shared_data):
    """SVAMP's equations as PAL programs: every one runs to the data set's answer except
    chal-680, whose Answer (1.0) contradicts its own equation ((4 - 2) + 3 = 5)."""
    from dataforge.generate.answers import answers_match, parse_gold

    path = shared_data / "reasoning" / "svamp.json"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    data = json.loads(path.read_text())
    picked = sorted(set(range(0, len(data), 10)) | {679})
    progs = [f"def solution():\n    return {data[i]['Equation']}\n" for i in picked]
    # generous wall time: this checks the equations' answers, not the limits (a loaded machine)
    results = run_programs(progs, SandboxLimits(timeout_s=60.0, cpu_s=10, memory_mb=256), workers=2)
    wrong = [data[i]["ID"] for i, r in zip(picked, results)
             if not answers_match(answer_from_result(r), parse_gold(data[i]["Answer"], "numeric"))]
    assert all(r.ok for r in results)
    assert wrong == ["chal-680"]


def test_limits_never_exceed_the_hard_limits_already_in_force():
    import resource

    from dataforge.generate.pot import clamp_limits

    assert clamp_limits(256, 256, 100) == (100, 100)
    assert clamp_limits(3, 4, resource.RLIM_INFINITY) == (3, 4)
    assert clamp_limits(3, 4, 10) == (3, 4)
