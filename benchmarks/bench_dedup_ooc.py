"""Issue 14, part 3: out-of-core dedup against the in-memory stage, and the band-grouping engines.

Corpus: ``bench_dedup.build_corpus`` (real text units from ``../shared/data`` recombined into
documents, with planted near and exact copies), written as Parquet shards of ``--shard-rows``.
Each path runs in a fresh subprocess, so its peak RSS (``VmHWM``) is its own:

1. ``in-memory``: every shard read into one table, ``apply_dedup`` (the reference decisions).
2. ``out-of-core``: ``dataforge.curate.dedup_ooc.Workspace`` shard by shard — sign, plan, one
   DuckDB query per band, verify and cluster, then each shard's kept/rejected built and
   dropped (what the runner writes) — the path ``dataforge run`` takes.

The kept ids of the two are checked equal. Then one LSH band's grouping (sort by key, next
band's key, position; runs of equal keys) at the corpus's size by three engines, each in its own
subprocess: numpy's in-memory ``lexsort``, DuckDB (512 MB limit, spilling), polars' streaming
engine (``sink_parquet`` of a sorted lazy frame).

Run: ``.venv/bin/python benchmarks/bench_dedup_ooc.py [--docs 400000 --planted 40000
--shard-rows 50000]``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("DATAFORGE_PROGRESS", "0")


def _child(mode: str, folder: str) -> dict:
    import resource

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataforge.config import DedupConfig
    from dataforge.curate import minhash as fast
    from dataforge.curate.dedup import apply_dedup
    from dataforge.curate.dedup_ooc import RANK_COLUMNS, Workspace

    cfg = DedupConfig()
    shards = sorted(Path(folder, "shards").glob("*.parquet"))
    t0 = time.perf_counter()
    out: dict = {}
    if mode == "in-memory":
        table = pa.concat_tables([pq.read_table(p) for p in shards])
        kept, _ = apply_dedup(table, cfg)
        kept_ids = kept.column("id").to_pylist()
    elif mode == "out-of-core":
        ws = Workspace(Path(folder, "ws"), cfg)
        signs, offset, ranks = [], 0, []
        for i, p in enumerate(shards):
            t = pq.read_table(p, columns=["text"])
            signs.append(ws.sign_shard(i, offset, t.column("text")))
            offset += t.num_rows
            del t
            ranks.append(pq.read_table(p, columns=[c for c in RANK_COLUMNS if c in pq.read_schema(p).names]))
        plan = ws.plan(signs, pa.concat_tables(ranks))
        del ranks
        band_files = [ws.band_candidates(plan, b) for b in range(plan.bands)]
        decisions = ws.decide(plan, band_files)
        ids = ws.ids()
        kept_ids = []
        for s, p in zip(signs, shards):
            kept, _ = ws.shard_tables(pq.read_table(p), s.offset, decisions, ids)
            kept_ids += kept.column("id").to_pylist()
            del kept
        ws.remove()
    else:  # one band's grouping by an engine
        kd = Path(folder, "band.parquet")
        if mode == "numpy":
            band = pq.read_table(kd)
            key, nxt = band.column("key").to_numpy(), band.column("nxt").to_numpy()
            del band
        t0 = time.perf_counter()
        if mode == "numpy":
            order = np.lexsort((nxt, key))
            k = key[order]
            multi = int(np.count_nonzero(np.r_[k[1:] == k[:-1], False] | np.r_[False, k[1:] == k[:-1]]))
        elif mode == "duckdb":
            import duckdb

            con = duckdb.connect(config={"memory_limit": "512MB", "threads": 1,
                                         "temp_directory": str(Path(folder, "duck"))})
            reader = con.sql(f"""WITH t AS (SELECT * FROM read_parquet('{kd}')),
                                 m AS (SELECT key FROM t GROUP BY key HAVING count(*) > 1)
                                 SELECT pos, key FROM t SEMI JOIN m USING (key) ORDER BY key, nxt, pos""").to_arrow_reader(
                1 << 20)
            multi = sum(b.num_rows for b in reader)
        else:  # polars streaming
            import polars as pl

            lf = pl.scan_parquet(kd)
            counts = lf.group_by("key").agg(pl.len().alias("c")).filter(pl.col("c") > 1).select("key")
            target = Path(folder, "polars-out.parquet")
            lf.join(counts, on="key", how="semi").sort(["key", "nxt", "pos"]).sink_parquet(target)
            multi = pq.read_metadata(target).num_rows
        out["multi_rows"] = multi
        kept_ids = []
    out["seconds"] = time.perf_counter() - t0
    # VmHWM: this process image's peak (ru_maxrss would carry the forking parent's over exec)
    hwm = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:")]
    out["peak_rss_mb"] = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if kept_ids:
        Path(folder, f"kept-{mode}.json").write_text(json.dumps(sorted(kept_ids)))
    out["kept"] = len(kept_ids)
    return out


def _run_child(mode: str, folder: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", mode, folder], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=400_000)
    ap.add_argument("--planted", type=int, default=40_000)
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child)))
        return
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from bench_dedup import build_corpus

    from dataforge.config import DedupConfig
    from dataforge.curate import minhash as fast
    from dataforge.curate.dedup import sign_texts

    folder = tempfile.mkdtemp(prefix="dataforge-bench-ooc-")
    table, facts = build_corpus(args.docs, args.planted)
    table = table.select(["id", "text", "created_at"])
    Path(folder, "shards").mkdir()
    sigs = []
    for i, start in enumerate(range(0, table.num_rows, args.shard_rows)):
        part = table.slice(start, args.shard_rows)
        pq.write_table(part, Path(folder, "shards", f"part-{i:05d}.parquet"))
        sigs.append(sign_texts(part.column("text"), DedupConfig())[0])
    del table
    sig = np.concatenate(sigs)
    del sigs
    pq.write_table(pa.table({"pos": np.arange(sig.shape[0], dtype=np.int64), "key": fast.band_keys(sig, 0, 8),
                             "nxt": fast.band_keys(sig, 1, 8)}), Path(folder, "band.parquet"))
    del sig
    res = {m: _run_child(m, folder) for m in ("in-memory", "out-of-core")}
    same = Path(folder, "kept-in-memory.json").read_text() == Path(folder, "kept-out-of-core.json").read_text()
    engines = {m: _run_child(m, folder) for m in ("numpy", "duckdb", "polars")}
    print(f"corpus: {facts['rows']:,} rows, {facts['mb']:.0f} MB of text, shards of {args.shard_rows:,} rows; "
          f"kept ids equal: {same}\n")
    print("| dedup path | seconds | peak RSS MB | kept |\n|---|---|---|---|")
    for m, r in res.items():
        print(f"| {m} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['kept']:,} |")
    print("\n| band grouping engine (one band) | seconds | peak RSS MB | rows in runs |\n|---|---|---|---|")
    for m, r in engines.items():
        print(f"| {m} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['multi_rows']:,} |")
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    if not same:
        raise SystemExit("the out-of-core kept ids differ from the in-memory ones")


if __name__ == "__main__":
    main()
