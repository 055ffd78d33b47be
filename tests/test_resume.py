"""A generation killed with SIGKILL and run again sends no request that was already answered.

The stage runs in a child process (the library's stage runner, no Prefect) against the fake
teacher in this process; the child is killed once the teacher has answered some requests.
The re-run must take every answered request from the cache.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from fake_openai import FakeOpenAI
from responders import teacher_responder

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import sys
from dataforge import runner
from dataforge.config import load_config
cfg = load_config(sys.argv[1])
run = runner.open_run(cfg, "resume-test")
runner.record_result(run, runner.run_cot(run, cfg))
print("DONE", flush=True)
"""


def _cached_requests(cache: Path) -> set[str]:
    con = sqlite3.connect(cache)
    try:
        rows = con.execute("select request from requests").fetchall()
    finally:
        con.close()
    return {json.dumps([json.loads(r)["messages"], json.loads(r)["params"].get("seed")], sort_keys=True) for (r,) in rows}


def _sent(srv: FakeOpenAI, start: int = 0) -> list[str]:
    bodies = [r["json"] for r in srv.requests[start:] if r["path"].endswith("/chat/completions")]
    return [json.dumps([b["messages"], b.get("seed")], sort_keys=True) for b in bodies]


def test_kill_9_mid_generation_then_resume_sends_nothing_answered(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) + "\n"
                             for i in range(30)))
    with FakeOpenAI(responder=teacher_responder, delay_s=0.05) as srv:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump({
            "name": "resume", "data_root": str(tmp_path / "data"),
            "teacher": {"provider": "openai", "base_url": srv.base_url, "model": "fake", "max_concurrency": 4},
            "textbooks": {"enabled": False},
            "cot": {"seeds": str(seeds), "samples_per_question": 2}}))
        env = {**os.environ, "PYTHONPATH": str(REPO), "DATAFORGE_PROGRESS": "0"}
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while srv.chat_count < 20 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        assert child.poll() is None, f"the child ended before it could be killed: {child.communicate()}"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()

        cache = tmp_path / "data" / "cache" / "teacher.sqlite"
        answered = _cached_requests(cache)
        assert 10 <= len(answered) < 60, len(answered)
        # the stage was not committed: the re-run has to do it
        assert not (tmp_path / "data" / "runs" / "resume-test" / "cot" / "_manifest.json").exists()

        before = len(srv.requests)
        r = subprocess.run([sys.executable, "-c", CHILD, str(cfg)], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "DONE" in r.stdout, r.stderr
        resent = set(_sent(srv, before)) & answered
        assert resent == set(), f"{len(resent)} answered requests were sent again"
        # and everything got done: 30 questions x 2 samples, each answered exactly once overall
        assert len(_cached_requests(cache)) == 60
        rec = json.loads((tmp_path / "data" / "runs" / "resume-test" / "run.json").read_text())
        assert rec["stages"]["cot"]["teacher"]["cache_hits"] == len(answered)
        assert rec["stages"]["cot"]["rows_in"] == 60
