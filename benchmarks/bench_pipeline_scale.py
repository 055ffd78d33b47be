"""Issue 14, done-when: the scale corpus (benchmarks/corpus.py) through ``dataforge run`` —
sources -> heuristics -> dedup -> export — on this machine, with its peak memory and throughput;
on the 1 GB slice, the kept ids against the in-memory path.

The run is the real command (``dataforge run <config>``, Prefect's temporary API, the threads
runner with its default workers) in a child process. Memory: the run process's own peak
(``/usr/bin/time -v``, "Maximum resident set size"), and the whole process tree's (the run and
Prefect's temporary API server, summed every 0.5 s from /proc). Throughput: the corpus's text
bytes (its ``_manifest.json``) over the command's wall time, Prefect's start and the end-of-run
summary included; each stage's own seconds come from the run record.

``--check`` (meant for the 1 GB slice) then computes the in-memory path in this process on the
rows the run ingested — ``apply_heuristics`` on the whole table, ``apply_dedup`` on what it
kept — and compares the kept ids with the run's export (the exported ids, and the rejected ids
and reasons of both stages).

Run: ``.venv/bin/python benchmarks/bench_pipeline_scale.py --corpus /work/corpus [--slice] [--check]``
(``$DATAFORGE_SCALE_CORPUS`` is the default corpus folder; skipped, with the reason, without one).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATAFORGE = Path(sys.executable).with_name("dataforge")


def tree_rss_mb(root: int) -> float:
    """The summed RSS of ``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_pipeline(config: Path, cwd: Path) -> dict:
    proc = subprocess.Popen(["/usr/bin/time", "-v", str(DATAFORGE), "run", str(config)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_tree = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not done.is_set():
            peak_tree = max(peak_tree, tree_rss_mb(proc.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    rid = re.search(r"--run (\S+)", out)
    if proc.returncode != 0 or not m or not rid:
        raise SystemExit(f"dataforge run failed ({proc.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", err))
    return {"wall": wall, "peak_run_mb": int(m.group(1)) / 1024, "peak_tree_mb": peak_tree, "cpu": cpu,
            "run_id": rid.group(1)}


def check_in_memory(data_root: Path, run_id: str, cfg_path: Path) -> dict:
    """The in-memory path on the run's ingested rows against what the run kept and dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dataforge.config import load_config
    from dataforge.curate.dedup import apply_dedup
    from dataforge.curate.heuristics import apply_heuristics
    from dataforge.store import Run

    cfg = load_config(cfg_path)
    run = Run(str(data_root), run_id)
    t0 = time.perf_counter()
    rows = run.read("ingest")
    kept_h, rej_h = apply_heuristics(rows, cfg.heuristics)
    del rows
    kept_d, rej_d = apply_dedup(kept_h, cfg.dedup)
    seconds = time.perf_counter() - t0

    def pairs(t: pa.Table) -> set[tuple[str, str]]:
        return set(zip(t.column("id").to_pylist(), t.column("drop_reason").to_pylist()))

    exported = pa.concat_tables([run.read("dedup", columns=["id"])]).column("id").to_pylist()
    same = {
        "kept_ids": set(kept_d.column("id").to_pylist()) == set(exported),
        "heuristics_rejected": pairs(rej_h) == pairs(run.read_rejected("heuristics")),
        "dedup_rejected": pairs(rej_d) == pairs(run.read_rejected("dedup")),
    }
    final = run.export_dir(cfg.export.name)
    exp_ids = pa.concat_tables([__import__("pyarrow.parquet").parquet.read_table(p, columns=["id"])
                                for p in sorted(final.rglob("*.parquet"))]).column("id")
    same["export_ids"] = set(exp_ids.to_pylist()) == set(kept_d.column("id").to_pylist())
    return {"seconds": seconds, "kept": kept_d.num_rows, "heur_dropped": rej_h.num_rows,
            "dedup_dropped": rej_d.num_rows, "rows_kept_by_run": len(exported),
            "unique_kept": int(pc.count_distinct(kept_d.column("id")).as_py()), **same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=os.environ.get("DATAFORGE_SCALE_CORPUS"))
    ap.add_argument("--slice", action="store_true", help="the corpus's 1 GB slice (_slice-1gb)")
    ap.add_argument("--check", action="store_true", help="compare with the in-memory path (use with --slice)")
    ap.add_argument("--shard-rows", type=int, default=20000)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    if args.corpus is None or not (args.corpus / "_manifest.json").exists():
        print("skipped: no scale corpus (build one with benchmarks/corpus.py; --corpus or $DATAFORGE_SCALE_CORPUS)")
        return
    manifest = json.loads((args.corpus / "_manifest.json").read_text())
    if args.slice:
        folder, text_bytes = args.corpus / manifest["slice"]["folder"], manifest["slice"]["text_bytes"]
    else:
        folder, text_bytes = args.corpus, manifest["text_bytes"]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dataforge-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    config = work / "scale.yaml"
    config.write_text(
        f"name: scale\ndata_root: ./data\nshard_rows: {args.shard_rows}\n"
        f"sources:\n  corpus: {{path: {folder}/part-*.jsonl.zst}}\n"
        "heuristics: {enabled: true, apply_to: [document]}\n"
        "export: {kinds: [text], formats: [parquet]}\n")
    r = run_pipeline(config, work)
    record = json.loads(next((work / "data" / "runs").glob(f"{r['run_id']}/run.json")).read_text())
    stages = {s["stage"]: s for s in record.get("stages", [])} if isinstance(record.get("stages"), list) \
        else record.get("stages", {})
    print(f"corpus: {folder} ({text_bytes / 1e9:.2f} GB of text); machine load before: {os.getloadavg()[0]:.1f}")
    print(f"dataforge run: {r['wall']:.0f} s wall, {r['cpu']:.0f} s CPU, {text_bytes / 1e6 / r['wall']:.1f} MB/s end to end;"
          f" peak RSS {r['peak_run_mb']:,.0f} MB (run process), {r['peak_tree_mb']:,.0f} MB (with Prefect's server)")
    for name, s in stages.items():
        secs = s.get("seconds")
        print(f"  {name:<11} {s.get('rows_in', '')!s:>9} in {s.get('rows_kept', '')!s:>9} kept  "
              f"{secs if secs is None else round(secs, 1)} s")
    if args.check:
        c = check_in_memory(work / "data", r["run_id"], config)
        print(f"in-memory path: {c['seconds']:.0f} s; kept {c['kept']:,} (run kept {c['rows_kept_by_run']:,}); "
              f"same kept ids: {c['kept_ids']}, same export ids: {c['export_ids']}, "
              f"same heuristics drops: {c['heuristics_rejected']}, same dedup drops: {c['dedup_rejected']}")


if __name__ == "__main__":
    main()
