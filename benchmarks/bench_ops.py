"""Issue 6 operations: dedup spread over Dask workers, and the store on pyarrow's filesystem layer.

Two side-by-side measurements, medians of ``--repeats`` alternating runs:

1. **Dedup in parts on Dask vs ``apply_dedup`` in one process.** The corpus of
   ``bench_dedup.py`` (real text from ``../shared/data`` with planted near and exact copies),
   cut into ``--shards`` shards. Baseline: ``apply_dedup(table)`` on one thread. Measured: the
   flow's task graph (``dataforge/curate/dedup_ooc.py``: a signature task per shard, a plan
   task, a task per LSH band, a finishing task), submitted with plain ``distributed`` futures to
   a ``--workers``-process LocalCluster (no Prefect: this isolates the compute and the transfer
   of the signature arrays between workers from Prefect's per-task bookkeeping). The outputs
   are checked equal. The shard tables are scattered to the workers before the clock starts,
   as the flow's workers read their shards from the data root.
2. **Store on the local path: this version vs the last commit's ``store.py``** (loaded from
   ``git show HEAD:dataforge/store.py``): ``ShardWriter`` of ``--store-rows`` sample-like rows
   in shards of 10,000, the manifest, then ``read_table``. Also the same on fsspec's in-memory
   filesystem (the object-store path: whole-object puts, manifest by move), for scale.

Run: ``.venv/bin/python benchmarks/bench_ops.py [--docs 40000 --planted 4000 --shards 8
--workers 2 --repeats 3 --store-rows 200000]``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DATAFORGE_PROGRESS", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import pyarrow as pa  # noqa: E402

from dataforge.config import DedupConfig  # noqa: E402
from dataforge.curate.dedup_ooc import RANK_COLUMNS, Workspace  # noqa: E402
from dataforge.curate.dedup import apply_dedup  # noqa: E402


# --- 1. dedup ----------------------------------------------------------------------------------

def dedup_on_dask(client, shard_futures, sizes, rank_table_future, cfg: DedupConfig, folder: str):
    """The flow's out-of-core task graph on Dask: a signature task per shard (files in a
    workspace the workers share), a plan, a task per LSH band, then the decisions and the
    output shard by shard (dataforge/curate/dedup_ooc.py)."""
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]

    def sign(t, i, off):
        return Workspace(folder, cfg).sign_shard(i, off, t.column("text"))

    def finish(plan, band_files, signs, *tables):
        ws = Workspace(folder, cfg)
        decisions = ws.decide(plan, band_files)
        outs = [ws.shard_tables(t, s.offset, decisions) for t, s in zip(tables, signs)]
        ws.remove()
        return (pa.concat_tables([o[0] for o in outs]), pa.concat_tables([o[1] for o in outs]))

    sig = [client.submit(sign, f, i, off, pure=False) for i, (f, off) in enumerate(zip(shard_futures, offsets))]
    plan = client.submit(lambda r, signs: Workspace(folder, cfg).plan(signs, r), rank_table_future, sig, pure=False)
    bands = Workspace(folder, cfg).bands
    per_band = [client.submit(lambda p, b: Workspace(folder, cfg).band_candidates(p, b), plan, b, pure=False)
                for b in range(bands)]
    return client.submit(finish, plan, per_band, sig, *shard_futures, pure=False).result()


def bench_dedup(args) -> dict:
    import distributed
    from bench_dedup import build_corpus

    table, facts = build_corpus(args.docs, args.planted)
    table = table.select(["id", "text", "created_at"])
    cfg = DedupConfig()
    n = table.num_rows
    cuts = [round(i * n / args.shards) for i in range(args.shards + 1)]
    shards = [table.slice(a, b - a) for a, b in zip(cuts, cuts[1:])]
    apply_dedup(table.slice(0, 100), cfg)  # compile the kernels
    res: dict = {"rows": n, "mb": facts["mb"], "shards": args.shards, "workers": args.workers,
                 "one": [], "dask": []}
    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        shard_f = client.scatter(shards, hash=False)  # dask tokenizes slices of one table alike
        rank_f = client.scatter(table.select([c for c in RANK_COLUMNS if c in table.column_names]),
                                hash=False)
        folder = tempfile.mkdtemp(prefix="dataforge-bench-dedup-")
        client.run(lambda: apply_dedup(table.slice(0, 100), cfg))  # compile on the workers too
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            kept, rejected = apply_dedup(table, cfg)
            res["one"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            k2, r2 = dedup_on_dask(client, shard_f, [t.num_rows for t in shards], rank_f, cfg, folder)
            res["dask"].append(time.perf_counter() - t0)
            assert k2.equals(kept) and r2.equals(rejected), "dedup out of core differs from apply_dedup"
        res["kept"], res["dropped"] = kept.num_rows, rejected.num_rows
    return res


# --- 2. store ----------------------------------------------------------------------------------

def load_head_store():
    src = subprocess.run(["git", "show", "HEAD:dataforge/store.py"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    path = Path(tempfile.mkdtemp()) / "store_head.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("store_head", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["store_head"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def store_table(rows: int) -> pa.Table:
    from dataforge.records import make_sample, samples_to_table

    base = [make_sample("textbook", f"section {k}: water evaporates, condenses and falls as rain over the hills "
                        f"and valleys, and rivers carry it back to the sea {k * 7919 % 1000003}.",
                        topic="the water cycle", sample_index=k) for k in range(10_000)]
    t = samples_to_table(base)
    return pa.concat_tables([t] * (rows // t.num_rows))


def store_round(mod, root: Path, table: pa.Table, filesystem=None) -> float:
    t0 = time.perf_counter()
    if filesystem is None:
        run = mod.Run(root, "r1")
    else:
        run = mod.Run(filesystem, "r1")
    run.begin_stage("s")
    if filesystem is None:
        w = mod.ShardWriter(run.stage_dir("s"), max_rows=10_000, schema=table.schema)
    else:
        w = run.shard_writer(run.stage_dir("s"), max_rows=10_000, schema=table.schema)
    w.write(table)
    run.commit_stage("s", w.close(), [], table.schema, table.schema, fingerprint="f", config_hash="c")
    back = run.read("s")
    assert back.num_rows == table.num_rows
    return time.perf_counter() - t0


def bench_store(args) -> dict:
    import uuid

    import pyarrow.fs as pafs
    from fsspec.implementations.memory import MemoryFileSystem

    from dataforge import store as new

    head = load_head_store()
    table = store_table(args.store_rows)
    res: dict = {"rows": table.num_rows, "head": [], "new": [], "memory": []}
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.repeats):
            res["head"].append(store_round(head, Path(d) / f"h{i}", table))
            res["new"].append(store_round(new, Path(d) / f"n{i}", table))
            mem = pafs.SubTreeFileSystem(f"/bench-{uuid.uuid4().hex[:8]}",
                                         pafs.PyFileSystem(pafs.FSSpecHandler(MemoryFileSystem())))
            res["memory"].append(store_round(new, None, table, filesystem=mem))
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=40_000)
    ap.add_argument("--planted", type=int, default=4_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--store-rows", type=int, default=200_000)
    ap.add_argument("--skip-dedup", action="store_true")
    args = ap.parse_args()
    med = statistics.median
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    if not args.skip_dedup:
        r = bench_dedup(args)
        print(f"\n### dedup: {r['rows']:,} rows ({r['mb']:.1f} MB), {r['shards']} shards, kept {r['kept']:,}, "
              f"dropped {r['dropped']:,}; identical output\n")
        print("| path | median s | runs |\n|---|---|---|")
        print(f"| apply_dedup, one process, one thread (baseline) | {med(r['one']):.2f} | "
              f"{', '.join(f'{x:.2f}' for x in r['one'])} |")
        print(f"| dedup in parts on a {r['workers']}-worker LocalCluster | {med(r['dask']):.2f} | "
              f"{', '.join(f'{x:.2f}' for x in r['dask'])} |")
        print(f"\nratio baseline / dask: {med(r['one']) / med(r['dask']):.2f}")
    s = bench_store(args)
    print(f"\n### store: write {s['rows']:,} rows in shards of 10,000 + manifest + read_table\n")
    print("| store | median s | runs |\n|---|---|---|")
    for k, label in (("head", "HEAD's store.py, local (baseline)"), ("new", "this store.py, local"),
                     ("memory", "this store.py, fsspec in-memory filesystem (object-store path)")):
        print(f"| {label} | {med(s[k]):.3f} | {', '.join(f'{x:.3f}' for x in s[k])} |")
    print(f"\nratio this / HEAD (local): {med(s['new']) / med(s['head']):.3f}")


if __name__ == "__main__":
    main()
