"""The hand-off export: the bulk Arrow path against the row-by-row reference, side by side;
and (issue 14) the streaming export of a large run against the former in-memory one.

1. ``small``: both engines write the same dataset (chat, prompt_completion and text layouts;
   JSONL and Parquet; train/validation split by id hash) from the same table;
   tests/test_export.py checks they write the same content. Reports the median wall time of
   each engine, rows per second and the ratio, and the peak Python-heap allocation
   (tracemalloc) of one export of each.
2. ``large``: a run whose final stage holds ``--large-mb`` MB of rows (their size in Arrow:
   the text, the chat turns, the provenance) in shards of ``--shard-rows`` rows, exported (the same layouts and formats, 2% validation, shards
   verified) by ``export_run`` as it is now (streaming: shard by shard, batch by batch) and by
   the former one, which read the whole stage into one table (``dataforge/export.py`` of
   ``--baseline-rev``, loaded from git into a temporary module). Each export runs in a fresh
   subprocess, alternating, ``--large-repeats`` times; reported: median wall and CPU seconds
   (user + system, all threads: steadier than wall time on a shared machine) and median peak
   RSS (the child's ``VmHWM``; ``ru_maxrss`` alongside — it also counts the parent's pages
   at the fork, so the parent stays small: the run is built in a subprocess too). The two
   outputs are then checked equal: JSON lines byte for byte, Parquet files' rows and schema,
   manifest, card and checksums but for the Parquet files' bytes and sha256 (a streamed file
   has more row groups) and the timestamps.

The rows are built from real text when the shared data is there (GSM8K train
question/solution pairs as chat samples, Pile documents as text samples), else synthetic rows.

    .venv/bin/python benchmarks/bench_export.py [--case small|large|both] [--rows 60000] [--repeats 3]
        [--large-mb 1000 --shard-rows 100000 --large-repeats 3 --baseline-rev 52b3055 --keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DATAFORGE_PROGRESS", "0")  # no progress lines between the timings

import pyarrow as pa

from dataforge.export import export_table
from dataforge.records import make_sample, samples_to_table


def shared_data() -> Path:
    return Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def row_maker() -> tuple[Callable[[int], dict], str]:
    """``make(i)``: sample row ``i`` (3 in 4 a 3-turn chat sample, 1 in 4 a text-only document)."""
    root = shared_data()
    gsm, pile = root / "gsm8k" / "train.jsonl", root / "web" / "pile_1k.jsonl"
    if gsm.exists() and pile.exists():
        pairs = [json.loads(x) for x in gsm.read_text(encoding="utf-8").splitlines() if x.strip()]
        docs = [json.loads(x)["contents"] for x in pile.read_text(encoding="utf-8").splitlines() if x.strip()]
        source = f"shared data: GSM8K train ({len(pairs)} pairs) + Pile ({len(docs)} docs), cycled"

        def make(i: int) -> dict:
            if i % 4 == 3:
                return make_sample("document", f"{docs[i % len(docs)]} [{i}]", None)
            p = pairs[i % len(pairs)]
            msgs = [{"role": "system", "content": "Solve the problem step by step."},
                    {"role": "user", "content": p["question"]},
                    {"role": "assistant", "content": f"{p['answer']} [{i}]"}]
            return make_sample("cot", msgs[-1]["content"], msgs, question=p["question"])
        return make, source

    def make_synthetic(i: int) -> dict:
        if i % 4 == 3:
            return make_sample("document", f"document {i} " + "words " * 120, None)
        msgs = [{"role": "user", "content": f"What is {i} + 1?"},
                {"role": "assistant", "content": f"{i} + 1 = {i + 1}. " * 8}]
        return make_sample("cot", msgs[-1]["content"], msgs)
    return make_synthetic, "synthetic rows (shared data absent)"


def build_table(n: int, start: int = 0) -> tuple[pa.Table, str]:
    make, source = row_maker()
    return samples_to_table([make(i) for i in range(start, start + n)]), source


def run_once(table: pa.Table, engine: str, out: Path) -> float:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    export_table(table, out, ["jsonl", "parquet"], kinds=["chat", "prompt_completion", "text"],
                 validation_fraction=0.02, engine=engine)
    return time.perf_counter() - t0


def small_case(args) -> None:
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


# --- the large case: streaming vs in memory, each export in its own process ----------------------------

BASELINE_REV = "52b3055"  # the last commit whose export read the whole final stage into one table
RUN_ID, STAGE = "bench-export", "dedup"
KINDS = ["chat", "prompt_completion", "text"]


def _peak_rss_mb() -> tuple[float, float]:
    """(VmHWM: this process image's peak RSS, ru_maxrss: the same but carrying the forking
    parent's pages at the fork), MB."""
    import resource

    hwm = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:")]
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (int(hwm[0].split()[1]) / 1024 if hwm else maxrss), maxrss


def _child_build(root: str, target_mb: int, shard_rows: int) -> dict:
    """The run: ``dedup`` committed as shards of ``shard_rows`` rows until they hold
    ``target_mb`` MB of rows in Arrow (rows built one shard at a time)."""
    import pyarrow.compute as pc

    from dataforge.config import PipelineConfig
    from dataforge.runner import open_run

    make, source = row_maker()
    run = open_run(PipelineConfig(name="bench", data_root=root), RUN_ID)
    run.begin_stage(STAGE)
    w = run.shard_writer(run.stage_dir(STAGE), max_rows=shard_rows)
    rows, text_bytes, arrow_bytes = 0, 0, 0
    while arrow_bytes < target_mb * 1e6:
        t = samples_to_table([make(i) for i in range(rows, rows + shard_rows)])
        w.write(t)
        rows += t.num_rows
        text_bytes += pc.sum(pc.binary_length(t.column("text"))).as_py()
        arrow_bytes += t.nbytes
    entries = w.close()
    run.commit_stage(STAGE, entries, [], w.schema, w.schema, fingerprint="bench", config_hash="bench")
    return {"rows": rows, "shards": len(entries), "text_mb": text_bytes / 1e6, "arrow_mb": arrow_bytes / 1e6,
            "parquet_mb": sum(e.bytes for e in entries) / 1e6, "source": source}


def _child_export(mode: str, root: str, rev: str) -> dict:
    """One export of the run (``streaming``: this checkout's; ``in-memory``: ``rev``'s)."""
    import importlib.util
    import subprocess

    from dataforge.config import ExportConfig
    from dataforge.store import Run

    if mode == "in-memory":
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:dataforge/export.py"], capture_output=True,
                             text=True, check=True).stdout
        path = Path(root) / f"export_{rev}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"export_{rev}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        export_run = module.export_run
    else:
        from dataforge.export import export_run
    run = Run(root, RUN_ID)
    cfg = ExportConfig(kinds=KINDS, validation_fraction=0.02)
    rss_before = _peak_rss_mb()[0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    _, manifest = export_run(run, STAGE, mode, ["jsonl", "parquet"], export_cfg=cfg)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    hwm, maxrss = _peak_rss_mb()
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": hwm, "ru_maxrss_mb": maxrss,
            "rss_before_mb": rss_before, "rows": manifest["rows"], "out_mb": manifest["bytes"] / 1e6}


def _child_compare(root: str) -> dict:
    """The streaming and in-memory exports hold the same files: JSON lines byte for byte,
    Parquet the same rows and schema (compared a batch at a time), the manifests and cards the
    same but for the Parquet files' bytes and sha256 and the timestamps."""
    import re

    import pyarrow.parquet as pq

    from dataforge.store import Run

    run = Run(root, RUN_ID)
    a, b = run.export_dir("streaming"), run.export_dir("in-memory")
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()), "different files"
    parquet = [n for n in names if n.endswith(".parquet")]
    for name in names:
        if name.endswith(".jsonl"):
            with open(a / name, "rb") as fa, open(b / name, "rb") as fb:
                while True:
                    x, y = fa.read(1 << 24), fb.read(1 << 24)
                    assert x == y, name
                    if not x:
                        break
        elif name.endswith(".parquet"):
            pa_, pb = pq.ParquetFile(a / name), pq.ParquetFile(b / name)
            assert pa_.schema_arrow.equals(pb.schema_arrow, check_metadata=True), name
            for x, y in zip(pa_.iter_batches(batch_size=50_000), pb.iter_batches(batch_size=50_000), strict=True):
                assert x.equals(y), name

    def scrub(text: str, mode: str) -> str:
        text = text.replace(f"dataforge export {mode} of run", "dataforge export <name> of run")
        for n in parquet:  # the one thing that differs: a streamed Parquet file has more row groups
            text = re.sub(rf"\| {re.escape(n)} \| (\d+) \| \d+ \| `[0-9a-f]+` \|", rf"| {n} | \1 |", text)
            text = re.sub(rf"[0-9a-f]{{64}}  {re.escape(n)}\n", "", text)
        return re.sub(r'"(created_at|committed_at)": "[^"]+"', "", text)

    for name in ("README.md", "checksums.sha256"):
        assert scrub((a / name).read_text(), "streaming") == scrub((b / name).read_text(), "in-memory"), name
    ma, mb = (json.loads((d / "_manifest.json").read_text()) for d in (a, b))
    for m in (ma, mb):
        m.pop("committed_at"), m.pop("bytes")
        m["files"] = [{**f, "bytes": 0, "sha256": ""} if f["name"] in parquet else f for f in m["files"]]
    assert ma == mb, "manifests differ"
    groups = {n: (pq.ParquetFile(a / n).num_row_groups, pq.ParquetFile(b / n).num_row_groups) for n in parquet}
    return {"files": len(names), "parquet_row_groups": groups}


def _in_child(*argv: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {argv[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def large_case(args) -> None:
    with tempfile.TemporaryDirectory(prefix="dataforge-bench-export-large-") as d:
        root = Path(args.keep) if args.keep else Path(d)
        if not (root / "runs" / RUN_ID / STAGE / "_manifest.json").exists():
            t0 = time.perf_counter()
            built = _in_child("build", str(root), str(args.large_mb), str(args.shard_rows))
            (root / "built.json").write_text(json.dumps(built))
            print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
        built = json.loads((root / "built.json").read_text())
        print(f"run: {built['rows']:,} rows in {built['shards']} shards of {args.shard_rows:,}: "
              f"{built['text_mb']:,.0f} MB of text, {built['arrow_mb']:,.0f} MB in Arrow, "
              f"{built['parquet_mb']:,.0f} MB of Parquet; {built['source']}", flush=True)
        res: dict[str, list[dict]] = {"in-memory": [], "streaming": []}
        for r in range(args.large_repeats):
            for mode in (("streaming", "in-memory") if r % 2 == 0 else ("in-memory", "streaming")):
                res[mode].append(_in_child("export", mode, str(root), args.baseline_rev))
                x = res[mode][-1]
                print(f"  repeat {r + 1}: {mode:9s} {x['seconds']:6.1f} s ({x['cpu_seconds']:.1f} s CPU), "
                      f"peak RSS {x['peak_rss_mb']:,.0f} MB "
                      f"(ru_maxrss {x['ru_maxrss_mb']:,.0f}, before the export {x['rss_before_mb']:,.0f})", flush=True)
        same = _in_child("compare", str(root))
        print(f"outputs equal: {same['files']} files; Parquet row groups (streaming, in-memory): "
              f"{same['parquet_row_groups']}")
    med = {m: {k: statistics.median(x[k] for x in v) for k in ("seconds", "cpu_seconds", "peak_rss_mb",
                                                                 "ru_maxrss_mb", "rss_before_mb")}
           for m, v in res.items()}
    print()
    print("| export | median s | median CPU s | rows/s | median peak RSS MB (VmHWM) | ru_maxrss MB "
          "| RSS before the export MB |")
    print("|---|---|---|---|---|---|---|")
    for m in ("in-memory", "streaming"):
        print(f"| {m} | {med[m]['seconds']:.1f} | {med[m]['cpu_seconds']:.1f} | {built['rows'] / med[m]['seconds']:,.0f}"
              f" | {med[m]['peak_rss_mb']:,.0f} | {med[m]['ru_maxrss_mb']:,.0f} | {med[m]['rss_before_mb']:,.0f} |")
    print("\nrepeats (s): " + "; ".join(f"{m} " + ", ".join(f"{x['seconds']:.1f}" for x in v) for m, v in res.items()))
    print("repeats (CPU s): " + "; ".join(f"{m} " + ", ".join(f"{x['cpu_seconds']:.1f}" for x in v)
                                         for m, v in res.items()))
    print("repeats (peak RSS MB): " + "; ".join(f"{m} " + ", ".join(f"{x['peak_rss_mb']:,.0f}" for x in v)
                                          for m, v in res.items()))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        what, rest = sys.argv[2], sys.argv[3:]
        if what == "build":
            out = _child_build(rest[0], int(rest[1]), int(rest[2]))
        elif what == "export":
            out = _child_export(rest[0], rest[1], rest[2])
        else:
            out = _child_compare(rest[0])
        print(json.dumps(out, default=str))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=["small", "large", "both"], default="both")
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large-mb", type=int, default=1000, help="MB of rows (in Arrow) in the large run")
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--large-repeats", type=int, default=3)
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of the in-memory export")
    ap.add_argument("--keep", help="build (or reuse) the large run in this folder instead of a temporary one")
    args = ap.parse_args()
    if args.case in ("small", "both"):
        small_case(args)
    if args.case in ("large", "both"):
        large_case(args)


if __name__ == "__main__":
    main()
