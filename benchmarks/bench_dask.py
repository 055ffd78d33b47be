"""Sharded curation on Dask vs in-process, side by side in one run.

The corpus is the shared data's 1,000 Pile documents, repeated ``--copies`` times (each copy's
text suffixed so no two rows share an id), committed as a generation stage of ``--shards``
shards. Each repeat curates a fresh copy of that run with the heuristics stage (Gopher rules,
one task per shard) three ways:

- ``library``: ``dataforge.stages.run_sharded`` in this process, shard after shard (no Prefect);
- ``threads``: the Prefect flow, ``runner: {kind: threads}`` (Prefect's thread pool);
- ``dask``: the Prefect flow, ``runner: {kind: dask, n_workers: 2}`` (a LocalCluster of 2
  worker processes, started and torn down inside the timed run, as a scheduled run would);
- ``dask-address``: the flow on a 2-worker LocalCluster started once before timing, given by
  ``runner: {kind: dask, address: ...}`` (a long-lived cluster: no start-up in the timing).

Reports the median wall time of each and the ratios, and checks the three give the same kept
ids. Run: ``.venv/bin/python benchmarks/bench_dask.py [--copies 20 --shards 8 --repeats 3]``.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DATAFORGE_PROGRESS", "0")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # the LocalCluster's start/stop chatter


def shared_pile() -> Path:
    d = Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
    return d / "web" / "pile_1k.jsonl"


def build_template(root: Path, copies: int, shards: int):
    """A committed 'textbooks' stage of the Pile documents; returns (config path, run)."""
    import yaml

    from dataforge import runner
    from dataforge.config import load_config
    from dataforge.records import content_id, samples_to_table
    from dataforge.store import Run

    docs = [json.loads(line)["contents"] for line in shared_pile().read_text().splitlines() if line.strip()]
    rows = []
    for c in range(copies):
        for i, text in enumerate(docs):
            t = f"{text}\n(copy {c})"
            rows.append({"id": content_id("document", t), "kind": "document", "text": t, "run_id": "bench"})
    cfg_path = root / "bench.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "bench", "data_root": str(root / "data"), "cot": {"enabled": False},
        "textbooks": {"topics": ["unused"]}, "dedup": {"enabled": False},
        "shard_rows": -(-len(rows) // shards)}))
    cfg = load_config(cfg_path)
    run = runner.open_run(cfg, "template")
    io = runner.generation_io(run, cfg, "textbooks")
    io.begin()
    table = samples_to_table(rows)
    kept, rejected = io.write_shard(0, table, runner.rejected_schema(table.schema).empty_table())
    io.commit(kept, rejected, table.schema)
    return cfg_path, Run(cfg.data_root, "template")


def fresh_copy(template, name: str):
    from dataforge.store import Run

    dst = template.data_root / "runs" / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(template.dir / "textbooks", dst / "textbooks")
    shutil.copytree(template.dir / "rejected", dst / "rejected")
    rec = json.loads(template.record_path.read_text())
    rec["run_id"] = name
    (dst / "run.json").write_text(json.dumps(rec))
    return Run(template.data_root, name)


def kept_ids(run) -> list[str]:
    return sorted(run.read("heuristics", columns=["id"]).column("id").to_pylist())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not shared_pile().exists():
        print(f"skipped: {shared_pile()} is absent (set DATAFORGE_SHARED_DATA)")
        return 0

    from dataforge import runner
    from dataforge.config import load_config
    from flows.pipeline import pipeline

    tmp = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    try:
        cfg_path, template = build_template(tmp, args.copies, args.shards)
        n_rows = template.committed("textbooks")["rows"]
        n_files = len(template.committed("textbooks")["files"])
        cfg = load_config(cfg_path)
        dask_cfg = tmp / "bench-dask.yaml"
        dask_cfg.write_text(cfg_path.read_text() + "runner: {kind: dask, n_workers: 2, threads_per_worker: 1}\n")
        pipeline(str(cfg_path), run_id=fresh_copy(template, "warmup").run_id, stages=["heuristics"])  # API start-up
        import distributed

        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
        address_cfg = tmp / "bench-address.yaml"
        address_cfg.write_text(cfg_path.read_text() + f"runner: {{kind: dask, address: '{cluster.scheduler_address}'}}\n")
        configs = {"threads": cfg_path, "dask": dask_cfg, "dask-address": address_cfg}

        times: dict[str, list[float]] = {"library": [], "threads": [], "dask": [], "dask-address": []}
        ids: dict[str, list[str]] = {}
        for rep in range(args.repeats):
            for way in times:  # alternate, so load drifts hit all three alike
                run = fresh_copy(template, f"{way}-{rep}")
                t0 = time.perf_counter()
                if way == "library":
                    runner.run_sharded(run, cfg, "heuristics")
                else:
                    pipeline(str(configs[way]), run_id=run.run_id, stages=["heuristics"])
                times[way].append(time.perf_counter() - t0)
                ids[way] = kept_ids(run)
                shutil.rmtree(run.dir)
        cluster.close()
        assert all(v == ids["library"] for v in ids.values()), "the ways kept different rows"
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"heuristics over {n_rows} rows in {n_files} shards, {args.repeats} repeats, cores={os.cpu_count()}")
        print(f"kept {len(ids['library'])} rows (identical ids every way)")
        for k, v in times.items():
            print(f"  {k:12s} median {med[k]:6.2f} s  ratio to library {med[k] / med['library']:5.2f}"
                  f"   runs {', '.join(f'{x:.2f}' for x in v)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
