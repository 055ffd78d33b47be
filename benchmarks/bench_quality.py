"""Quality scoring and the cut: the bulk path against the per-row baseline, in one run.

Scoring (``dataforge.curate.quality.score_texts``): normalisation as three Arrow kernels over
the whole column, one ``model.predict`` call on the list of lines, the label probabilities
mapped to scores with numpy. Baseline: what a per-row loop does -- normalise each text in
Python (``normalize_text_reference``) and call ``model.predict(line, k=-1)`` once per row
(``QualityModel.predict_line_reference``). Both score the same rows with the same model and
must agree (checked).

Cut (``cut_scores``): Arrow compare, filter and reason strings, against the same rule row by row
in Python (``cut_scores_reference``), on synthetic scores.

Rows: the Pile documents of the shared data (``web/pile_1k.jsonl``, ``--copies`` times) and the
Alpaca triples (``alpaca/random_9k.json``); the model is ``classifiers/models/web_quality.ftz``
(or ``--model``).

    .venv/bin/python benchmarks/bench_quality.py [--repeats 5] [--copies 5] [--cut-rows 1000000]

Needs /work/shared/data (DATAFORGE_SHARED_DATA); exits with a message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataforge.curate.quality import (
    cut_scores,
    cut_scores_reference,
    load_quality_model,
    normalize_text_reference,
    score_texts,
)


def shared_data() -> Path:
    return Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def baseline_scores(model, texts: list[str]) -> np.ndarray:
    return np.array([model.predict_line_reference(normalize_text_reference(t)) for t in texts])


def once(fn) -> tuple[float, object]:
    """Seconds of one call and its result (the callers alternate the two sides per repeat)."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--copies", type=int, default=5, help="times the 1,000 Pile documents are repeated")
    ap.add_argument("--cut-rows", type=int, default=1_000_000)
    ap.add_argument("--model", type=Path, default=REPO / "classifiers" / "models" / "web_quality.ftz")
    args = ap.parse_args()

    data = shared_data()
    if not data.exists():
        sys.exit(f"shared data folder {data} is absent (set DATAFORGE_SHARED_DATA)")
    model = load_quality_model(args.model)
    with (data / "web" / "pile_1k.jsonl").open(encoding="utf-8") as f:
        pile = [json.loads(line)["contents"] for line in f if line.strip()] * args.copies
    alpaca = ["\n".join(x for x in (r["instruction"], r["input"], r["output"]) if x)
              for r in json.loads((data / "alpaca" / "random_9k.json").read_text())]
    print(f"model {args.model} ({model.kind}); load average {os.getloadavg()[0]:.2f}; repeats {args.repeats}")
    print("| rows | MB | baseline s | dataforge s | speed-up | rows/s (dataforge) | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for name, texts in (("Pile docs", pile), ("Alpaca triples", alpaca)):
        col = pa.array(texts, pa.string())
        base_s, ours_s, base, ours = [], [], None, None
        for _ in range(args.repeats):  # alternate the two sides so load changes hit both
            t, base = once(lambda: baseline_scores(model, texts))
            base_s.append(t)
            t, ours = once(lambda: score_texts(model, col))
            ours_s.append(t)
        diff = float(np.max(np.abs(np.asarray(base) - np.asarray(ours))))
        b, o = statistics.median(base_s), statistics.median(ours_s)
        mb = sum(len(t.encode()) for t in texts) / 1e6
        print(f"| {name} ×{len(texts):,} | {mb:.1f} | {b:.3f} | {o:.3f} | {b / o:.2f}× | {len(texts) / o:,.0f} | "
              f"{diff:.1e} |")

    rng = np.random.default_rng(0)
    scores = rng.random(args.cut_rows)
    table = pa.table({"id": pa.array(np.arange(args.cut_rows).astype(str)), "quality_score": scores})
    rows = table.to_pylist()
    print()
    print("| cut | rows | baseline s | dataforge s | speed-up |")
    print("|---|---|---|---|---|")
    for kw in ({"threshold": 0.5}, {"top_fraction": 0.1}):
        base_s, ours_s = [], []
        for _ in range(args.repeats):
            t, (bk, _) = once(lambda: cut_scores_reference(rows, **kw))
            base_s.append(t)
            t, (ok, _) = once(lambda: cut_scores(table, **kw))
            ours_s.append(t)
        assert len(bk) == ok.num_rows
        b, o = statistics.median(base_s), statistics.median(ours_s)
        print(f"| {kw} | {args.cut_rows:,} | {b:.3f} | {o:.3f} | {b / o:.1f}× |")


if __name__ == "__main__":
    main()
