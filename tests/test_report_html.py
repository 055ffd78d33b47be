"""`dataforge report --html`: one self-contained page for a pipeline run against the fake
teacher (with the AlpaGasus judge on, so a score column exists), opened in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from fake_openai import FakeOpenAI
from responders import judging_responder
from run_helpers import run_pipeline, write_add_seeds, write_config
from typer.testing import CliRunner

from dataforge.cli import app
from dataforge.report_html import (
    find_ablation,
    hbar_chart,
    histogram,
    render_report,
    write_report,
)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _ablation_report() -> dict:
    """The shape `dataforge ablate` writes to report.json (dataforge/ablate.py run_ablation)."""
    return {"preset": "tiny", "token_budget": 40000, "seed": 0,
            "arms": {"selection": {"rows": 100, "tokens": 40000, "heldout": {"gsm8k": 3.9}},
                     "random_subset": {"rows": 100, "tokens": 40000, "heldout": {"gsm8k": 4.3}},
                     "random_x0.5": {"rows": 400, "tokens": 20000, "heldout": {"gsm8k": 4.6}},
                     "whole_pool": {"rows": 400, "tokens": 40000, "heldout": {"gsm8k": 4.25}},
                     "random_x2": {"rows": 400, "tokens": 80000, "heldout": {"gsm8k": 3.95}}},
            "targets": {"gsm8k": {"points": [{"tokens": 20000, "loss": 4.6}, {"tokens": 40000, "loss": 4.25},
                                             {"tokens": 80000, "loss": 3.95}],
                                  "multiplier": 1.9, "below_floor": False, "extrapolated": False}}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    with FakeOpenAI(responder=judging_responder) as srv:
        cfg_path = write_config(
            tmp / "c.yaml", srv.base_url, tmp / "data", name="rep",
            teacher={"prices": {"fake-teacher": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}},
            textbooks={"taxonomies": ["mathematics"], "max_samples": 24},
            cot={"seeds": str(write_add_seeds(tmp / "seeds.jsonl", 16)), "samples_per_question": 2},
            judge={"enabled": True, "output": "text", "threshold": 4.0})
        return run_pipeline(cfg_path, "rep-run")


def _svgs(page: str) -> dict[str, str]:
    return dict(re.findall(r'<svg class="chart" data-chart="([^"]+)".*?(</svg>)', page, flags=re.DOTALL))


def test_page_has_every_section_and_is_self_contained(run_dir):
    page = render_report(run_dir)
    charts = set(_svgs(page))
    for name in ("funnel", "drop_reasons_cot", "drop_reasons_judge", "score_judge_score", "coverage_topic",
                 "coverage_audience", "coverage_style", "teacher_tokens", "teacher_cost", "teacher_requests"):
        assert name in charts, (name, sorted(charts))
    assert "No ablation for this run" in page
    # nothing fetched: no script, no external resource (the only URL is the SVG namespace)
    assert "<script" not in page.lower()
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    assert not re.search(r'\b(src|href)\s*=', page)


def test_numbers_in_the_charts_are_the_runs(run_dir):
    page = render_report(run_dir)
    rec = run_dir.load_record()
    for stage in ("textbooks", "cot", "judge"):
        st = rec.stages[stage]
        assert f"<title>{stage} · kept: {st.rows_kept}</title>" in page
        if st.rows_dropped:
            assert f"<title>{stage} · dropped: {st.rows_dropped}</title>" in page
    # the judge histogram holds every judged row: kept + dropped of the judge stage
    judged = re.findall(r"<title>(kept|dropped) \[[^)]*\): (\d+)</title>", page)
    n = {"kept": 0, "dropped": 0}
    for which, count in judged:
        n[which] += int(count)
    st = rec.stages["judge"]
    assert n == {"kept": st.rows_kept, "dropped": st.rows_dropped}
    # teacher requests per stage from run.json
    for stage in ("textbooks", "cot"):
        assert f"<title>{stage} · sent: {rec.stages[stage].teacher['requests_sent']}</title>" in page


def test_quality_gates_show_counts_per_reason_and_one_example_each(run_dir):
    """Every stage that dropped rows has a gate card: each reason with its count (the rows of
    `rejections` with that reason) and one example row, shown by its drop reason and text."""
    import html as html_mod

    from dataforge.warehouse import query

    gates = query(run_dir, "SELECT * FROM gate_drops").to_pylist()
    rejected = query(run_dir, "SELECT drop_stage, drop_reason, id, text FROM rejections").to_pylist()
    assert gates and sum(g["rows"] for g in gates) == len(rejected)
    assert {g["stage"] for g in gates} == {r["drop_stage"] for r in rejected}
    page = render_report(run_dir)
    section = page[page.index('<section id="gates">'):]
    section = section[:section.index("</section>")]
    by_id = {r["id"]: r for r in rejected}
    for g in gates:
        assert f'data-stage="{g["stage"]}"' in section
        ex = by_id[g["example_id"]]  # a real rejected row of that stage, with that reason
        assert ex["drop_stage"] == g["stage"] and ex["drop_reason"] == g["example_reason"]
        assert ex["drop_reason"].startswith(g["reason"].split(":")[0])
        assert html_mod.escape(g["example_reason"]) in section
        assert html_mod.escape(ex["text"][:80].strip()) in section
        row = re.search(rf'<tr><td>{re.escape(html_mod.escape(g["reason"]))}</td><td>([\d,]+)</td>', section)
        assert row and int(row.group(1).replace(",", "")) == g["rows"]
    # `dataforge report` prints the same table
    r = CliRunner().invoke(app, ["report", "--data-root", str(run_dir.data_root), "--run", run_dir.run_id])
    assert r.exit_code == 0 and "quality gates" in r.output and "answer_mismatch" in r.output


def test_ablation_section_when_the_run_has_one(run_dir, tmp_path):
    abl = run_dir.dir / "ablation" / "sel-vs-random"
    abl.mkdir(parents=True, exist_ok=True)
    (abl / "report.json").write_text(json.dumps(_ablation_report()))
    try:
        assert find_ablation(run_dir)["_path"] == "ablation/sel-vs-random/report.json"
        page = render_report(run_dir)
        assert {"ablation_arms_0", "ablation_curve_0"} <= set(_svgs(page))
        assert "Effective data multiplier on gsm8k: 1.90×" in page
        assert "<title>selection · loss: 3.900</title>" in page
    finally:
        shutil.rmtree(run_dir.dir / "ablation")
    # a broken report.json is ignored, not fatal
    (run_dir.dir / "ablation").mkdir()
    (run_dir.dir / "ablation" / "report.json").write_text("{not json")
    try:
        assert find_ablation(run_dir) is None and "No ablation" in render_report(run_dir)
    finally:
        shutil.rmtree(run_dir.dir / "ablation")


def test_chart_helpers_on_edge_cases():
    assert "nothing to show" in hbar_chart("x", [], [], "empty")
    assert "no scores" in histogram("h", [("kept", "#000", [])], "empty")
    one = histogram("h", [("kept", "#000", [2.0, 2.0, 2.0])], "constant")
    assert "kept [" in one and ": 3</title>" in one
    esc = hbar_chart("x", ["<b>&"], [("s", "#000", [1])], "escaping")
    assert "<b>&" not in esc and "&lt;b&gt;&amp;" in esc


def test_cli_report_html(run_dir, tmp_path):
    runner = CliRunner()
    root = ["--data-root", str(run_dir.data_root), "--run", run_dir.run_id]
    out = tmp_path / "r.html"
    r = runner.invoke(app, ["report", *root, "--html", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "report:" in r.output and out.stat().st_size > 10_000
    assert out.read_text().startswith("<!DOCTYPE html>")
    r = runner.invoke(app, ["report", *root, "--out", str(out)])
    assert r.exit_code == 2 and "--out needs --html" in r.output
    r = runner.invoke(app, ["report", "--help"])
    assert r.exit_code == 0 and "--html" in r.output


def _chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_opens_in_headless_chromium(run_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        msg = "headless Chromium not found (Debian: apt-get install chromium; scripts/test installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    abl = run_dir.dir / "ablation"
    abl.mkdir(exist_ok=True)
    (abl / "report.json").write_text(json.dumps(_ablation_report()))
    try:
        page = write_report(run_dir, tmp_path / "report.html")
    finally:
        shutil.rmtree(abl)
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    r = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,3000", page.as_uri()], check=False,
                       capture_output=True, text=True, timeout=120)
    assert shot.exists(), r.stderr[-2000:]
    from PIL import Image

    img = Image.open(shot)
    assert img.size == (1280, 3000)
    colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # charts and text, not a blank page
    # the browser's DOM holds the chart SVGs with their marks
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], check=False, capture_output=True, text=True,
                         timeout=120).stdout
    charts = re.findall(r'<svg class="chart" data-chart="([^"]+)"', dom)
    assert {"funnel", "score_judge_score", "coverage_topic", "teacher_tokens", "ablation_curve_0"} <= set(charts)
    assert dom.count('class="mark"') >= 30
    # keep the screenshot beside the run for a person to look at
    shutil.copy(shot, run_dir.dir / "report.png")
