"""Make docs/images/browse.png: `dataforge browse` on a small synthetic run, in headless Chromium.

The run is the benchmark's (benchmarks/bench_browse.py: real Alpaca, Pile and GSM8K text from the
shared data, written with the store's own writer, teacher requests in the request cache), 3,000
samples. A few samples are labelled, then the page is opened on CoT samples dropped as near
duplicates with the first one open (its dedup diff against the survivor, its votes and siblings),
through the same CDP driver the UI test uses, and captured with ``Page.captureScreenshot``.

    .venv/bin/python scripts/screenshot_browse.py [--out docs/images/browse.png] [--rows 3000]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DATAFORGE_PROGRESS", "0")

from dataforge.browse.chromium import Chromium, save_png
from dataforge.browse.queries import Filters, SampleIndex
from dataforge.browse.server import create_app, running


def _bench():
    spec = importlib.util.spec_from_file_location("bench_browse", REPO / "benchmarks" / "bench_browse.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "browse.png")
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--width", type=int, default=1480)
    ap.add_argument("--height", type=int, default=1240)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dataforge-shot-") as tmp:
        run = _bench().make_run(Path(tmp), args.rows, cache_rows=args.rows, run_id="demo-20261206T101500-1a2b3c")
        index = SampleIndex(run, user="ana")
        try:
            kept = index.page(Filters.from_params({"kind": ["cot"], "status": ["kept"]}), 0, 12)["rows"]
            for i, row in enumerate(kept[:9]):
                index.label(row["id"], "bad" if i % 4 == 3 else "good")
            with running(create_app(index)) as url, Chromium() as browser:
                page = browser.new_page(args.width, args.height)
                page.goto(f"{url}/?kind=cot&reason=near_duplicate_of")
                page.wait_for("document.body.dataset.ready === '1'")
                page.press("j")
                page.wait_for("document.body.dataset.sample")
                time.sleep(0.3)
                save_png(page.screenshot(), args.out)
        finally:
            index.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
