"""Diversity selection (dataforge/select/diversity.py) against its baselines, in one run.

On the shared Alpaca sample (instruction + input + output), each measured ``--repeats`` times,
medians and ratios reported:

* n-gram sketches: the compiled kernel over the Arrow buffer vs the per-row Python reference
  (``embed_ngram_reference``, the same vectors bit for bit);
* DEITA (budget n/2, tau 0.7): the block-vectorized greedy vs the per-row numpy loop of
  DEITA's own code (one matrix-vector product against the chosen set per candidate) on all rows,
  and vs the per-pair Python reference on ``--reference-rows``; selections checked equal;
* QDIT: the lazy batched greedy vs the plain greedy that recomputes every gain at every step
  (selections checked equal);
* with ``--minilm``: MiniLM embedding throughput with length-sorted batches (ours) vs batches
  in input order (more padding); vectors checked equal.

    .venv/bin/python benchmarks/bench_diversity.py [--rows 9229 --deita-rows 9229 --reference-rows 1500 --qdit-rows 2000
                                                       --repeats 3 --minilm]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataforge.select import diversity as dv  # noqa: E402
from timing import median_time  # noqa: E402  (benchmarks/timing.py)

DATA = Path(os.environ.get("DATAFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def deita_numpy_loop(emb: np.ndarray, quality: np.ndarray, budget: int, tau: float) -> np.ndarray:
    """DEITA's repository style: walk the sorted rows, one matrix-vector product per candidate
    against the chosen set (kept in a preallocated matrix, so no copying)."""
    mat = np.empty((budget, emb.shape[1]), emb.dtype)
    chosen: list[int] = []
    for row in dv.quality_order(quality):
        k = len(chosen)
        if k >= budget:
            break
        if not k or float((mat[:k] @ emb[row]).max()) < tau:
            mat[k] = emb[row]
            chosen.append(int(row))
    return np.array(chosen)


def report(name: str, ours: float, base: float, base_name: str) -> dict:
    ratio = base / ours if ours else float("inf")
    print(f"{name:<34} ours {ours:8.3f} s   {base_name:<22} {base:8.3f} s   speed-up x{ratio:7.1f}")
    return {"bench": name, "ours_s": round(ours, 4), "baseline": base_name, "baseline_s": round(base, 4),
            "speedup": round(ratio, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=9229)
    ap.add_argument("--deita-rows", type=int, default=9229)
    ap.add_argument("--reference-rows", type=int, default=1500, help="rows for the per-pair Python baselines")
    ap.add_argument("--qdit-rows", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--minilm", action="store_true", help="also time MiniLM embeddings (slow on 2 cores)")
    ap.add_argument("--minilm-rows", type=int, default=256)
    args = ap.parse_args()
    path = DATA / "alpaca" / "random_9k.json"
    if not path.exists():
        sys.exit(f"shared data not found at {path} (set DATAFORGE_SHARED_DATA)")
    rows = json.loads(path.read_text())[: args.rows]
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in rows]
    quality = np.random.default_rng(0).random(len(texts))
    results = []
    print(f"{len(texts)} Alpaca rows, {args.repeats} repeats, medians (machine shared and noisy)")

    dv.embed_ngram(texts[:10])  # compile outside the timing
    t_fast, emb = median_time(lambda: dv.embed_ngram(texts), args.repeats)
    t_ref, ref = median_time(lambda: dv.embed_ngram_reference(texts), args.repeats)
    assert np.array_equal(emb, ref)
    results.append(report(f"ngram sketches ({len(texts)} rows)", t_fast, t_ref, "per-row Python"))

    tau = dv.DEFAULT_TAU["ngram"]
    for n, baseline in ((min(args.deita_rows, len(texts)), "numpy"), (min(args.reference_rows, len(texts)), "python")):
        e, q = emb[:n], quality[:n]
        budget = n // 2
        t_fast, sel = median_time(lambda: dv.deita_select(e, q, budget, tau), args.repeats)
        if baseline == "numpy":
            t_base, loop = median_time(lambda: deita_numpy_loop(e, q, budget, tau), args.repeats)
            picked = np.flatnonzero(sel.selected)[np.argsort(sel.rank[sel.selected])]
            assert np.array_equal(picked, loop)
            results.append(report(f"DEITA n={n} budget={budget}", t_fast, t_base, "per-row numpy (DEITA)"))
        else:
            t_base, ref_sel = median_time(lambda: dv.deita_select_reference(e, q, budget, tau), args.repeats)
            assert np.array_equal(sel.rank, ref_sel.rank)
            results.append(report(f"DEITA n={n} budget={budget}", t_fast, t_base, "per-pair Python"))

    n = min(args.qdit_rows, len(texts))
    e, q = emb[:n], quality[:n]
    k = max(1, n // 10)
    t_fast, sel = median_time(lambda: dv.qdit_select(e, q, k, 1.0), args.repeats)
    t_ref, ref_sel = median_time(lambda: dv.qdit_select_reference(e, q, k, 1.0), args.repeats)
    assert np.array_equal(sel.rank, ref_sel.rank)
    results.append(report(f"QDIT n={n} k={k}", t_fast, t_ref, "plain greedy"))
    cov_q = dv.facility_coverage(e, np.flatnonzero(sel.selected))
    cov_top = dv.facility_coverage(e, np.argsort(-q)[:k])
    print(f"  coverage (mean best sim): QDIT {cov_q:.4f}  top-k by quality {cov_top:.4f}")

    if args.minilm and dv.minilm_available():
        import torch

        sub = texts[: args.minilm_rows]
        dv.load_minilm()  # load outside the timing

        def unsorted() -> np.ndarray:
            model, tok = dv.load_minilm()
            out = []
            with torch.inference_mode():
                for s in range(0, len(sub), 64):
                    enc = tok.encode_batch(sub[s:s + 64])
                    ids = torch.tensor([x.ids for x in enc])
                    mask = torch.tensor([x.attention_mask for x in enc])
                    h = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
                    m = mask.unsqueeze(-1).float()
                    out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1).numpy())
            return np.concatenate(out)

        t_fast, a = median_time(lambda: dv.embed_minilm(sub), args.repeats)
        t_base, b = median_time(unsorted, args.repeats)
        assert np.allclose(a, b, atol=1e-4)
        results.append(report(f"MiniLM ({len(sub)} rows)", t_fast, t_base, "input-order batches"))
        print(f"  MiniLM throughput: {len(sub) / t_fast:.1f} rows/s (ours)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
