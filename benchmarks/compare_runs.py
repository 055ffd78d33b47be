"""Two runs' outputs, stage by stage: the kept ids, the (id, drop_stage, drop_reason) of every
dropped row, and the exported rows (less run_id). Used for issue 12's check that the quickstart
gives the same ids and drop reasons before and after the refactor:

    .venv/bin/python benchmarks/compare_runs.py <data root>/runs/<run a> <data root>/runs/<run b>
"""
import sys, pyarrow.parquet as pq
from pathlib import Path
def load(run):
    out = {}
    for d in sorted(Path(run).iterdir()):
        if d.is_dir() and d.name not in ("rejected", "quarantine", "export"):
            files = sorted(d.glob("*.parquet"))
            out[("kept", d.name)] = sorted(r for f in files for r in pq.read_table(f, columns=["id"]).column("id").to_pylist())
    for d in sorted((Path(run) / "rejected").iterdir()) if (Path(run)/"rejected").exists() else []:
        files = sorted(d.glob("*.parquet"))
        out[("rejected", d.name)] = sorted(tuple(x.values()) for f in files for x in pq.read_table(f, columns=["id", "drop_stage", "drop_reason"]).to_pylist())
    ex = sorted(Path(run, "export").rglob("*.parquet"))
    # every export row but its run_id (which names the run, so differs by construction)
    out[("export", "rows")] = sorted(str({k: v for k, v in r.items() if k != "run_id"})
                                     for f in ex for r in pq.read_table(f).to_pylist())
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
print("sections:", sorted(a) == sorted(b), sorted(set(a) ^ set(b)))
for k in sorted(set(a) | set(b)):
    print(k, len(a.get(k, [])), len(b.get(k, [])), "SAME" if a.get(k) == b.get(k) else "DIFFERENT")
