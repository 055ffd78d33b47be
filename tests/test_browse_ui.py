"""`dataforge browse` in headless Chromium, end to end: the command serves a pipeline run (fake
teacher), Chromium is driven over the DevTools protocol (dataforge/browse/chromium.py): load,
search, filter by a drop reason, open a sample, move with the keys, label it, and find the
label with `dataforge sql`; a copied address opens the same view; the empty and error states.

Fails in CI without Chromium (`scripts/test` installs Debian's), skips elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
from fake_openai import FakeOpenAI
from responders import judging_responder
from run_helpers import run_pipeline, write_add_seeds, write_config
from typer.testing import CliRunner

from dataforge.browse.chromium import Chromium, find_chromium
from dataforge.cli import app


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browse-ui")
    with FakeOpenAI(responder=judging_responder) as srv:
        cfg = write_config(tmp / "c.yaml", srv.base_url, tmp / "data", name="ui",
                           textbooks={"taxonomies": ["mathematics"], "max_samples": 10},
                           cot={"seeds": str(write_add_seeds(tmp / "seeds.jsonl", 12)), "samples_per_question": 2},
                           judge={"enabled": True, "output": "text", "threshold": 4.0})
        return run_pipeline(cfg, "ui-run")


@pytest.fixture(scope="module")
def server(run):
    """`dataforge browse RUN --port 0` as a user starts it; yields its URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dataforge.cli", "browse", run.run_id, "--data-root",
                             str(run.data_root), "--port", "0", "--user", "ui-test"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = None
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "http://127.0.0.1:" in line:
            url = line.split()[3].rstrip("/")
            break
    if url is None:
        proc.kill()
        pytest.fail("dataforge browse did not start: " + (proc.stderr.read() if proc.stderr else ""))
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(20)
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()


@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        msg = "headless Chromium not found (Debian: apt-get install chromium; scripts/test installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    with Chromium() as b:
        yield b


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for(f"location.href === {json.dumps(url)} && document.body && document.body.dataset.ready === '1'")


def _loads(page) -> int:
    return int(page.evaluate("document.body.dataset.loads || '0'"))


def _after(page, before: int) -> None:
    page.wait_for(f"(+document.body.dataset.loads || 0) > {before}")


def _query(page) -> dict:
    return parse_qs(urlparse(page.evaluate("location.href")).query)


def test_search_filter_open_label_and_find_it_with_sql(run, server, browser):
    api = httpx.Client(base_url=server, timeout=60)
    info = api.get("/api/info").json()
    page = browser.new_page(1400, 900)
    _open(page, server + "/")
    assert page.evaluate("document.getElementById('count').textContent") == f"1–{min(50, info['rows'])} of {info['rows']}"
    assert page.evaluate("document.querySelectorAll('#list li').length") == min(50, info["rows"])
    assert page.evaluate("document.querySelectorAll('#facets .facet').length") >= 6

    # search: "/" focuses the box, Enter runs it; the address holds it
    before = _loads(page)
    page.press("/")
    assert page.evaluate("document.activeElement.id") == "search"
    page.type("student")
    page.press("Enter")
    _after(page, before)
    assert _query(page)["q"] == ["student"]
    found = api.get("/api/samples", params={"q": "student"}).json()["total"]
    assert 0 < found < info["rows"]
    assert page.evaluate("document.getElementById('count').textContent").endswith(f"of {found}")

    # a drop reason from the facet panel (the search chip removed first)
    before = _loads(page)
    page.click("#chips .chip[data-chip='q']")
    _after(page, before)
    before = _loads(page)
    page.click("#facets li[data-facet='reason'][data-value='answer_mismatch']")
    _after(page, before)
    assert _query(page) == {"reason": ["answer_mismatch"]}
    reasons = page.evaluate("[...document.querySelectorAll('#list li .reason')].map(e => e.textContent)")
    mismatches = api.get("/api/samples", params={"reason": "answer_mismatch"}).json()["total"]
    assert reasons and set(reasons) == {"answer_mismatch"} and len(reasons) == min(50, mismatches)
    assert page.evaluate("document.querySelector('#facets li.on').dataset.value") == "answer_mismatch"

    # open a sample with j, move with j / k / g
    page.press("j")
    first = page.wait_for("document.body.dataset.sample")
    assert _query(page)["sample"] == [first]
    detail = page.evaluate("document.getElementById('detail').innerText")
    assert "WHY IT WAS DROPPED: COT" in detail.upper() and "answer_mismatch" in detail
    assert "TEACHER REQUEST AND RESPONSE" in detail.upper() and "Request" in detail
    if mismatches > 1:
        page.press("j")
        second = page.wait_for(f"document.body.dataset.sample !== {json.dumps(first)} && document.body.dataset.sample")
        assert page.evaluate("document.querySelector('#list li.sel').dataset.i") == "1"
        page.press("k")
        page.wait_for(f"document.body.dataset.sample === {json.dumps(first)}")
        page.press("j")
        page.wait_for(f"document.body.dataset.sample === {json.dumps(second)}")
        page.press("g")
        page.wait_for(f"document.body.dataset.sample === {json.dumps(first)}")

    # label it good with one key; the list and the detail show it
    page.press("+")
    page.wait_for(f"document.body.dataset.labelled === {json.dumps(first + ':good')}")
    assert page.evaluate("document.querySelector('#list li.sel .badge.good') !== null")
    assert page.evaluate("document.querySelector('.labels button.good.on') !== null")

    # ... and `dataforge sql` finds it
    r = CliRunner().invoke(app, ["sql", "--data-root", str(run.data_root), "--run", run.run_id, "--format", "json",
                                 "select id, label, \"user\" from labels"])
    assert r.exit_code == 0, r.output
    assert {"id": first, "label": "good", "user": "ui-test"} in [json.loads(x) for x in r.output.splitlines()]

    # the address is the view: opened anew, it shows the same filter and sample, with its label
    shared = page.evaluate("location.href")
    other = browser.new_page(1400, 900)
    _open(other, shared)
    other.wait_for(f"document.body.dataset.sample === {json.dumps(first)}")
    assert other.evaluate("document.querySelector('#facets li.on').dataset.value") == "answer_mismatch"
    assert other.evaluate("document.querySelector('#list li.sel').dataset.id") == first
    assert other.evaluate("document.querySelector('.labels button.good.on') !== null")
    for p in (run.dir / "labels").glob("*.parquet"):
        p.unlink()


def test_empty_and_error_states(server, browser):
    page = browser.new_page(1200, 800)
    _open(page, server + "/?" + urlencode({"q": "zzqx no such text"}))
    assert page.evaluate("!document.getElementById('list-empty').hidden")
    assert "No sample matches" in page.evaluate("document.getElementById('list-empty').textContent")
    assert page.evaluate("document.getElementById('count').textContent") == "0 samples"
    # the empty state offers to clear the filters
    before = _loads(page)
    page.click("#clear-all")
    _after(page, before)
    assert page.evaluate("location.search") == "" and page.evaluate("document.querySelectorAll('#list li').length") > 0
    # a bad filter in a shared address: the server's message, not a blank page
    _open(page, server + "/?" + urlencode({"judge_score": "high"}))
    banner = page.evaluate("document.getElementById('banner').hidden ? '' : document.getElementById('banner').textContent")
    assert "judge_score: a range is lo:hi" in banner
    # an unknown sample in the address
    _open(page, server + "/?sample=" + "0" * 32)
    page.wait_for("document.getElementById('detail').textContent.includes('Could not open sample')")
    # the compare view with no other run says so
    before = _loads(page)
    page.press("c")
    page.wait_for("!document.getElementById('compare-view').hidden")
    page.wait_for("document.getElementById('compare-body').textContent.includes('no other run')")
