"""The command line: help texts, config errors, and sql/report/export/runs over a real run.

The run is produced by the stage runners directly (no Prefect) against the fake teacher,
which also shows the library works without the orchestration layer.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from dataforge import runner as df_runner
from dataforge.cli import app
from dataforge.config import load_config
from fake_openai import FakeOpenAI
from responders import teacher_responder

runner = CliRunner()


@pytest.mark.parametrize("args", [[], ["run"], ["sql"], ["report"], ["export"], ["runs"],
                                  ["teacher"], ["teacher", "serve"], ["teacher", "status"], ["teacher", "stop"]])
def test_help(args):
    r = runner.invoke(app, [*args, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "dataforge.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "sql" in r.stdout and "teacher" in r.stdout


def test_bad_config_names_file_and_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("cot:\n  samples_per_question: many\ntextbook: {}\n")
    r = runner.invoke(app, ["run", str(p)])
    assert r.exit_code == 2
    assert "bad.yaml: cot.samples_per_question" in r.output
    assert "bad.yaml: textbook: unknown field" in r.output


def test_no_runs_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["report", "--data-root", str(tmp_path)])
    assert r.exit_code == 2 and "no runs under" in r.output


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    seeds = tmp / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"question": f"What is {i} + 2?", "answer": f"#### {i + 2}"}) + "\n"
                             for i in range(3)))
    with FakeOpenAI(responder=teacher_responder) as srv:
        cfg_path = tmp / "p.yaml"
        cfg_path.write_text(yaml.safe_dump({
            "name": "cli", "data_root": str(tmp / "data"),
            "teacher": {"provider": "openai", "base_url": srv.base_url, "model": "fake"},
            "textbooks": {"topics": ["maps", "clouds"], "max_samples": 2},
            "cot": {"seeds": str(seeds), "samples_per_question": 2}}))
        cfg = load_config(cfg_path)
        run = df_runner.open_run(cfg)
        for runner_fn in (df_runner.run_textbooks, df_runner.run_cot):
            df_runner.record_result(run, runner_fn(run, cfg))
        for runner_fn in (lambda r, c: df_runner.run_curation_stage(r, c, "heuristics"), lambda r, c: df_runner.run_curation_stage(r, c, "dedup"), df_runner.run_export):
            df_runner.record_result(run, runner_fn(run, cfg))
    return cfg, run


def test_sql_report_export_runs(small_run):
    cfg, run = small_run
    root = ["--data-root", cfg.data_root]
    r = runner.invoke(app, ["sql", "select drop_stage, drop_reason, count(*) as n from rejections group by all", *root,
                            "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.output.splitlines()]
    # odd seeds answer wrong: 3 questions x 2 samples -> 3 mismatches
    assert {"drop_stage": "cot", "drop_reason": "answer_mismatch", "n": 3} in rows

    r = runner.invoke(app, ["sql", "select stage, rows_kept from funnel", *root, "--run", run.run_id, "--format", "csv"])
    assert r.exit_code == 0 and r.output.splitlines()[0] == '"stage","rows_kept"'

    r = runner.invoke(app, ["sql", "select nope from nowhere", *root])
    assert r.exit_code == 2 and "query failed" in r.output

    r = runner.invoke(app, ["report", *root])
    assert r.exit_code == 0, r.output
    for word in ("funnel", "drop reasons", "answer_mismatch", "textbooks", "dedup"):
        assert word in r.output

    r = runner.invoke(app, ["export", *root, "--name", "sft", "--formats", "jsonl"])
    assert r.exit_code == 0, r.output
    out = run.export_dir("sft")
    assert (out / "train.jsonl").exists() and not (out / "train.parquet").exists()

    r = runner.invoke(app, ["export", *root, "--formats", "csv"])
    assert r.exit_code == 2 and "unknown format" in r.output

    r = runner.invoke(app, ["runs", *root])
    assert r.exit_code == 0 and run.run_id in r.output

    r = runner.invoke(app, ["report", *root, "--run", "no-such-run"])
    assert r.exit_code == 2 and "no run 'no-such-run'" in r.output
