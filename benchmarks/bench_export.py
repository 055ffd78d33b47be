"""The hand-off export: the bulk Arrow path against the row-by-row reference, side by side.

Both write the same dataset (chat, prompt_completion and text layouts; JSONL and Parquet;
train/validation split by id hash) from the same table; tests/test_export.py checks they write
the same content. The table is built from real text when the shared data is there (GSM8K train
question/solution pairs as chat samples, Pile documents as text samples), else synthetic rows.

    .venv/bin/python benchmarks/bench_export.py [--rows 60000] [--repeats 3]

Reports the median wall time of each engine, rows per second and the ratio, and the peak
Python-heap allocation (tracemalloc) of one export of each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DATAFORGE_PROGRESS", "0")  # no progress lines between the timings

import pyarrow as pa

from dataforge.export import export_table
from dataforge.records import make_sample, samples_to_table


def shared_data() -> Path:
    return Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def build_table(n: int) -> tuple[pa.Table, str]:
    root = shared_data()
    gsm, pile = root / "gsm8k" / "train.jsonl", root / "web" / "pile_1k.jsonl"
    rows = []
    if gsm.exists() and pile.exists():
        pairs = [json.loads(x) for x in gsm.read_text(encoding="utf-8").splitlines() if x.strip()]
        docs = [json.loads(x)["contents"] for x in pile.read_text(encoding="utf-8").splitlines() if x.strip()]
        source = f"shared data: GSM8K train ({len(pairs)} pairs) + Pile ({len(docs)} docs), cycled"
        for i in range(n):
            if i % 4 == 3:
                rows.append(make_sample("document", f"{docs[i % len(docs)]} [{i}]", None))
            else:
                p = pairs[i % len(pairs)]
                msgs = [{"role": "system", "content": "Solve the problem step by step."},
                        {"role": "user", "content": p["question"]},
                        {"role": "assistant", "content": f"{p['answer']} [{i}]"}]
                rows.append(make_sample("cot", msgs[-1]["content"], msgs, question=p["question"]))
    else:
        source = "synthetic rows (shared data absent)"
        for i in range(n):
            if i % 4 == 3:
                rows.append(make_sample("document", f"document {i} " + "words " * 120, None))
            else:
                msgs = [{"role": "user", "content": f"What is {i} + 1?"},
                        {"role": "assistant", "content": f"{i} + 1 = {i + 1}. " * 8}]
                rows.append(make_sample("cot", msgs[-1]["content"], msgs))
    return samples_to_table(rows), source


def run_once(table: pa.Table, engine: str, out: Path) -> float:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    export_table(table, out, ["jsonl", "parquet"], kinds=["chat", "prompt_completion", "text"],
                 validation_fraction=0.02, engine=engine)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    table, source = build_table(args.rows)
    mb = table.nbytes / 1e6
    print(f"{table.num_rows:,} rows ({mb:.1f} MB in Arrow), {source}")
    times: dict[str, list[float]] = {"arrow": [], "reference": []}
    with tempfile.TemporaryDirectory(prefix="dataforge-bench-export-") as d:
        for r in range(args.repeats):
            for engine in (("arrow", "reference") if r % 2 == 0 else ("reference", "arrow")):  # alternate order
                times[engine].append(run_once(table, engine, Path(d) / engine))
                print(f"  repeat {r + 1}: {engine:9s} {times[engine][-1]:.2f} s", flush=True)
        peaks = {}
        for engine in ("arrow", "reference"):
            tracemalloc.start()
            run_once(table, engine, Path(d) / engine)
            peaks[engine] = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print("| engine | median s | rows/s | peak Python heap MB |")
    print("|---|---|---|---|")
    for k in ("reference", "arrow"):
        print(f"| {k} | {med[k]:.2f} | {table.num_rows / med[k]:,.0f} | {peaks[k]:.0f} |")
    print(f"\nspeed-up arrow vs reference: {med['reference'] / med['arrow']:.1f}x "
          f"(repeats: {', '.join(f'{a:.2f}/{b:.2f}' for a, b in zip(times['reference'], times['arrow']))} s)")


if __name__ == "__main__":
    main()
