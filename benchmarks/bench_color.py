"""CoLoR-Filter on real data, and the ablation report on the same pool (issue 5, the check).

Pool: math rationales (GSM8K train solutions, AQuA question + rationale) mixed with unrelated
text (Pile documents, CommonsenseQA questions, CREAK claims + rationales). Target: other GSM8K
train solutions (disjoint from the pool's). Held-out: the GSM8K *test* solutions.

Measured in one run:
  1. CoLoR at tau=4 with the small (5M) preset: precision (and recall) of math rationales in the
     kept rows, wall time;
  2. reference models trained at the same token count on the selection and on a random subset
     of the same size: both held-out losses on GSM8K test; wall time of 1+2 (must be <= 15 min
     on 2 CPU cores);
  3. the rest of the ablation: the whole pool at 0.5, 1, 2 and 4 x that budget, the fit
     L(D) = E + B / D^beta, the effective data multiplier; report.md / report.json /
     loss_curves.png in --out.

    .venv/bin/python benchmarks/bench_color.py [--out /tmp/dataforge-bench-color] [--quick]

Needs /work/shared/data (DATAFORGE_SHARED_DATA); exits with a message when it is absent.
``--quick`` is a smoke run (tiny preset, small pool, few steps): the numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataforge.ablate import run_ablation  # noqa: E402
from dataforge.config import ColorConfig, SlmConfig  # noqa: E402
from dataforge.select.color import apply_color  # noqa: E402

MATH = ("gsm8k", "aqua")


def shared_data() -> Path:
    return Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _tsv(path: Path) -> list[list[str]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3:
                rows.append([p.replace("\\n", "\n") for p in parts])
    return rows


def build_data(root: Path, n_gsm_pool: int, n_target: int, n_aqua: int, n_pile: int, n_csqa: int, n_creak: int,
               seed: int = 0) -> tuple[pa.Table, list[str], list[str]]:
    """(pool table with text/source/id, target texts, held-out texts)."""
    rng = np.random.default_rng(seed)
    gsm = _jsonl(root / "gsm8k" / "train.jsonl")
    order = rng.permutation(len(gsm))
    target = [gsm[i]["answer"] for i in order[:n_target]]
    pool: list[tuple[str, str]] = [(gsm[i]["answer"], "gsm8k") for i in order[n_target:n_target + n_gsm_pool]]
    aqua = _tsv(root / "flan_cot" / "aqua_train.tsv")
    pool += [(f"{aqua[i][0]}\n{aqua[i][2]}", "aqua") for i in rng.permutation(len(aqua))[:n_aqua]]
    pile = _jsonl(root / "web" / "pile_1k.jsonl")
    pool += [(pile[i]["contents"], "pile") for i in rng.permutation(len(pile))[:n_pile]]
    csqa = _jsonl(root / "reasoning" / "commonsenseqa_dev.jsonl")
    pool += [(q["question"]["stem"] + "\n" + "\n".join(f"({c['label']}) {c['text']}" for c in q["question"]["choices"]),
              "commonsenseqa") for q in (csqa[i] for i in rng.permutation(len(csqa))[:n_csqa])]
    creak = _tsv(root / "flan_cot" / "creak_train.tsv")
    pool += [(f"{creak[i][0]}\n{creak[i][2]}", "creak") for i in rng.permutation(len(creak))[:n_creak]]
    pool = [(t, s) for t, s in pool if t.strip()]
    table = pa.table({"id": [f"{s}-{i}" for i, (_, s) in enumerate(pool)], "text": [t for t, _ in pool],
                      "source": [s for _, s in pool]})
    heldout = [r["answer"] for r in _jsonl(root / "gsm8k" / "test.jsonl")]
    return table, target, heldout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/dataforge-bench-color"))
    ap.add_argument("--tau", type=float, default=4.0)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny preset, small pool")
    ap.add_argument("--pool-scale", type=float, default=1.0,
                    help="scale the pool's per-source row counts (0.5: 3,611 rows) and the prior sample")
    ap.add_argument("--steps", type=int, default=150, help="the equal budget D of the ablation arms, in steps")
    ap.add_argument("--budgets", default="0.5,1,2,4", help="random-data budgets for the fit, as multiples of D")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences (of 128 tokens) per step, every model")
    ap.add_argument("--eval-rows", type=int, default=2000, help="GSM8K test rows scored per held-out eval (of 1,319)")
    args = ap.parse_args()
    root = shared_data()
    if not root.exists():
        sys.exit(f"shared data folder {root} is absent (set DATAFORGE_SHARED_DATA)")
    t0, c0 = time.perf_counter(), time.process_time()
    if args.quick:
        sizes = dict(n_gsm_pool=200, n_target=200, n_aqua=100, n_pile=100, n_csqa=150, n_creak=150)
        slm = SlmConfig(preset="tiny", vocab_size=1024, seq_len=64, batch_size=8, max_steps=20, log_every=5)
        color = ColorConfig(tau=args.tau, preset="tiny", prior_rows=500, prior_steps=30,
                            cond_steps=10)
    else:
        sizes = {k: max(1, round(v * args.pool_scale)) for k, v in dict(
            n_gsm_pool=2000, n_aqua=1000, n_pile=1000, n_csqa=1221, n_creak=2000).items()}
        sizes["n_target"] = 2000
        slm = SlmConfig(preset="small", seq_len=128, batch_size=args.batch_size, lr=2e-3, max_steps=args.steps,
                        log_every=10, eval_rows=args.eval_rows)
        color = ColorConfig(tau=args.tau, preset="small", prior_rows=max(1, round(3000 * args.pool_scale)),
                            prior_steps=150, cond_steps=50, cond_lr=1e-3)
    pool, target, heldout = build_data(root, **sizes)
    print(f"pool {pool.num_rows} rows ({sum(s in MATH for s in pool.column('source').to_pylist())} math), "
          f"target {len(target)}, held-out {len(heldout)}", flush=True)

    t_color, c_color = time.perf_counter(), time.process_time()
    kept, rejected = apply_color(pool, color, slm.model_copy(update={"max_steps": None}), seed=slm.seed,
                                 target_texts=target)
    color_s, color_cpu = time.perf_counter() - t_color, time.process_time() - c_color
    src = kept.column("source").to_pylist()
    n_math_pool = sum(s in MATH for s in pool.column("source").to_pylist())
    precision = sum(s in MATH for s in src) / max(1, len(src))
    recall = sum(s in MATH for s in src) / max(1, n_math_pool)
    by_source = {s: src.count(s) for s in sorted(set(pool.column("source").to_pylist()))}
    print(f"color: kept {kept.num_rows}/{pool.num_rows} in {color_s:.0f}s ({color_cpu:.0f}s CPU); math precision {precision:.4f}, "
          f"recall {recall:.4f}; kept by source {by_source}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    pq.write_table(kept, args.out / "color_kept.parquet")
    stamps, cpu_stamps, arms = {}, {}, {}

    def on_arm(name: str, arm: dict) -> None:
        stamps[name] = time.perf_counter() - t0
        cpu_stamps[name] = time.process_time() - c0
        print(f"  arm {name}: {arm['tokens']:,} tokens, held-out {arm['heldout']}, {arm['seconds']:.0f}s "
              f"(t={stamps[name]:.0f}s wall, {cpu_stamps[name]:.0f}s CPU; load {os.getloadavg()[0]:.1f})", flush=True)
        arms[name] = arm
        if name == "random_subset":  # the check is complete: keep it even if the curve is cut short
            check = {"pool_rows": pool.num_rows, "kept": kept.num_rows, "kept_by_source": by_source,
                     "math_precision": precision, "math_recall": recall, "color_seconds": color_s,
                     "color_cpu_seconds": color_cpu, "check_seconds": stamps[name], "check_cpu_seconds": cpu_stamps[name],
                     "selection_loss": arms["selection"]["heldout"], "random_subset_loss": arm["heldout"],
                     "tokens": arm["tokens"]}
            (args.out / "bench_color_check.json").write_text(json.dumps(check, indent=2, default=float))

    budgets = tuple(float(x) for x in args.budgets.split(","))
    report = run_ablation(pool.column("text").to_pylist(), kept.column("text").to_pylist(), {"gsm8k_test": heldout},
                          slm, args.out, budgets=budgets, on_arm=on_arm)
    check_s = stamps["random_subset"]
    t = report["targets"]["gsm8k_test"]
    summary = {
        "preset": slm.preset, "tau": args.tau, "pool_rows": pool.num_rows, "math_rows": n_math_pool,
        "kept": kept.num_rows, "kept_by_source": by_source, "math_precision": precision, "math_recall": recall,
        "color_seconds": color_s, "color_cpu_seconds": color_cpu, "check_seconds": check_s,
        "check_cpu_seconds": cpu_stamps["random_subset"], "total_seconds": time.perf_counter() - t0,
        "total_cpu_seconds": time.process_time() - c0, "cpu_count": os.cpu_count(),
        "token_budget": report["token_budget"], "selection_loss": t["selection_loss"],
        "random_subset_loss": t["random_subset_loss"], "whole_pool_loss": t["whole_pool_loss"],
        "fit": t["fit"], "points": t["points"], "effective_tokens": t["effective_tokens"],
        "multiplier": t["multiplier"], "extrapolated": t["extrapolated"], "report": str(args.out / "report.md"),
    }
    (args.out / "bench_color.json").write_text(json.dumps(summary, indent=2, default=float))
    print(json.dumps(summary, indent=2, default=float))
    ok = precision >= 0.9 and t["selection_loss"] < t["random_subset_loss"] and check_s <= 900
    print(f"check: precision {precision:.3f} >= 0.90, selection {t['selection_loss']:.4f} < random "
          f"{t['random_subset_loss']:.4f}, {check_s:.0f}s <= 900s ({cpu_stamps['random_subset']:.0f}s CPU): "
          f"{'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
