"""The whole pipeline as a Prefect flow against the fake OpenAI-compatible teacher.

Runs on Prefect's temporary local API (the first flow run in a process starts it: ~10-30 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from dataforge.config import load_config
from dataforge.store import MANIFEST, Run
from dataforge.warehouse import query
from fake_openai import FakeOpenAI
from responders import teacher_responder

pytestmark = pytest.mark.prefect

SECRET = "sk-dataforge-SENTINEL-7f3a9"


def write_seeds(path: Path, n: int, bad_lines: bool = True) -> None:
    lines = [json.dumps({"question": f"What is {i} + {i + 1}?", "answer": f"{i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}"})
             for i in range(n)]
    if bad_lines:
        lines.insert(2, '{"question": "broken line", "answer": ')   # line 3: not JSON
        lines.insert(4, json.dumps({"answer": "#### 4"}))           # line 5: no question
    path.write_text("\n".join(lines) + "\n")


def write_config(tmp_path: Path, base_url: str, **overrides) -> Path:
    write_seeds(tmp_path / "seeds.jsonl", 6)
    cfg = {
        "name": "t",
        "data_root": str(tmp_path / "data"),
        "teacher": {"provider": "openai", "base_url": base_url, "model": "fake-model",
                    "api_key_env": "DATAFORGE_TEST_KEY", "backoff_initial_s": 0.01, "backoff_max_s": 0.05,
                    "max_attempts": 4, "timeout_s": 5},
        "textbooks": {"topics": ["fractions", "magnets", "rivers"], "audiences": ["children"],
                      "styles": ["textbook", "story"], "max_samples": 4},
        "cot": {"seeds": "seeds.jsonl", "samples_per_question": 2},
        "shard_rows": 3,
    }
    for k, v in overrides.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    p = tmp_path / "pipeline.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("DATAFORGE_TEST_KEY", SECRET)


def run_flow(config: Path, run_id: str | None = None) -> Run:
    from flows.pipeline import pipeline

    cfg = load_config(config)
    rid = pipeline(str(config), run_id=run_id)
    return Run(cfg.data_root, rid)


def all_bytes_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_pipeline_end_to_end_then_cached_rerun_then_resume(tmp_path, secret_env, caplog):
    caplog.set_level("DEBUG")
    with FakeOpenAI(responder=teacher_responder) as srv:
        srv.script(["429:0", "500"])  # the first requests meet a rate limit and a server error
        config = write_config(tmp_path, srv.base_url)
        run = run_flow(config)
        first_requests = srv.chat_count

        rec = json.loads(run.record_path.read_text())
        assert rec["status"] == "completed"
        for stage in ("textbooks", "cot", "heuristics", "dedup"):
            assert (run.stage_dir(stage) / MANIFEST).exists(), stage
            assert (run.rejected_dir(stage) / MANIFEST).exists(), stage
            assert rec["stages"][stage]["status"] == "completed"
        # 4 textbooks + 6 good seeds x 2 samples, and the two retried failures
        assert rec["teacher"]["requests_sent"] == 4 + 12 + 2 == first_requests
        assert rec["teacher"]["retries"] == 2 and rec["teacher"]["cache_hits"] == 0
        # shards are bounded: 6 verified CoT rows at 3 rows per shard -> 2 files
        cot_manifest = json.loads((run.stage_dir("cot") / MANIFEST).read_text())
        assert [f["rows"] for f in cot_manifest["files"]] == [3, 3]

        # even seeds answer right, odd wrong: half the CoT samples verify
        assert rec["stages"]["cot"]["rows_kept"] == 6 and rec["stages"]["cot"]["rows_dropped"] == 6
        # the malformed seed lines are quarantined with file, line and reason
        quarantine = [json.loads(x) for x in (run.quarantine_dir() / "cot_seeds.jsonl").read_text().splitlines()]
        assert [(q["line"], q["reason"][:12]) for q in quarantine] == [(3, "not valid JS"), (5, "missing or e")]
        assert all(q["file"].endswith("seeds.jsonl") for q in quarantine)

        # the export holds both kinds in chat format
        out = run.export_dir("default")
        lines = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
        kinds = {x["kind"] for x in lines}
        assert kinds == {"textbook", "cot"}
        assert all(x["messages"][-1]["role"] == "assistant" and x["messages"][0]["role"] == "user" for x in lines)
        assert pq.read_table(out / "train.parquet").num_rows == len(lines)

        # the textbooks are near-duplicates of one template: dedup keeps one per cluster
        reasons = query(run, "select drop_stage, drop_reason, count(*) as n from rejections group by all").to_pylist()
        by_stage = {(r["drop_stage"], r["drop_reason"].split(":")[0]): r["n"] for r in reasons}
        assert by_stage[("cot", "answer_mismatch")] == 6
        assert ("dedup", "near_duplicate_of") in by_stage
        funnel = query(run, "select stage, rows_in, rows_kept from funnel").to_pylist()
        assert [f["stage"] for f in funnel] == ["textbooks", "cot", "heuristics", "dedup", "export"]

        # the API key reached the server but nothing on disk or in the logs
        headers = {k.lower(): v for k, v in srv.requests[0]["headers"].items()}
        assert headers["authorization"] == f"Bearer {SECRET}"
        assert SECRET.encode() not in all_bytes_under(tmp_path / "data")
        assert SECRET not in caplog.text

        # a second run of the same config sends nothing: every answer comes from the cache
        run2 = run_flow(config)
        assert srv.chat_count == first_requests
        rec2 = json.loads(run2.record_path.read_text())
        assert rec2["teacher"]["requests_sent"] == 0 and rec2["teacher"]["cache_hits"] == 16
        ids1 = sorted(json.loads(x)["id"] for x in (out / "train.jsonl").read_text().splitlines())
        ids2 = sorted(json.loads(x)["id"] for x in (run2.export_dir("default") / "train.jsonl").read_text().splitlines())
        assert ids1 == ids2

        # resuming a finished run skips every committed stage
        run3 = run_flow(config, run_id=run.run_id)
        rec3 = json.loads(run3.record_path.read_text())
        assert {s: v["status"] for s, v in rec3["stages"].items()} == {
            "textbooks": "skipped", "cot": "skipped", "heuristics": "skipped", "dedup": "skipped", "export": "skipped"}
        assert srv.chat_count == first_requests


def test_failed_teacher_requests_become_rejected_rows(tmp_path, secret_env):
    with FakeOpenAI(responder=teacher_responder) as srv:
        srv.default_action = "500"
        config = write_config(tmp_path, srv.base_url, textbooks={"max_samples": 2},
                              cot={"max_questions": 1, "samples_per_question": 1})
        run = run_flow(config)
        rec = json.loads(run.record_path.read_text())
        assert rec["status"] == "completed"
        assert rec["teacher"]["failures"] == 3
        rej = query(run, "select drop_stage, drop_reason, count(*) n from rejections group by all order by 1").to_pylist()
        assert rej == [{"drop_stage": "cot", "drop_reason": "teacher_error:http_500", "n": 1},
                       {"drop_stage": "textbooks", "drop_reason": "teacher_error:http_500", "n": 2}]
