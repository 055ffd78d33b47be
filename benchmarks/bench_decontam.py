"""Decontamination against GSM8K test + MultiArith + SVAMP (issue 4, part 4).

Measured in one run, on the shared data:

  1. catch rate: GSM8K *test* questions reworded lightly (3 words substituted; half with every
     number changed; sentence order kept) and planted in generated-looking samples (a CoT
     exchange with a system preamble, a worked example, a textbook paragraph);
  2. false-positive rate: every GSM8K *train* question (different problems in the same style)
     planted the same way, after setting aside the train questions that are near-identical to
     a test item by a test independent of the detector (whole-question difflib ratio >= 0.6);
  3. throughput (samples/s) of the fast path (Arrow normalization, numpy uint64 n-gram hashes,
     searchsorted) vs the reference path (tuples of words in a dict; the baseline, as a
     straightforward Cosmopedia-style port would be written), on a mix of CoT samples (train
     question + its worked solution), the planted samples and Pile documents (long text);
     several repeats, medians and the ratio; both paths must agree on every sample;
  4. catch / false positives across settings (ngram, min_block, ignore_numbers): the reasons
     for DecontamConfig's defaults.

    .venv/bin/python benchmarks/bench_decontam.py [--repeats 5] [--planted 400] [--no-grid]

Needs /work/shared/data (DATAFORGE_SHARED_DATA); exits with a message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from dataforge.config import BenchmarkSource, DecontamConfig  # noqa: E402
from dataforge.curate.decontam import load_index, reference_scan, scan  # noqa: E402
from decontam_plants import near_identical_mask, plant, reword  # noqa: E402
from timing import median_time  # noqa: E402  (benchmarks/timing.py)


def shared_data() -> Path:
    return Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def planted_docs(test: list[str], n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = random.Random(seed)
    chosen = rng.sample(range(len(test)), n)
    docs = [plant(reword(test[i], rng, 3, change_numbers=k % 2 == 1), rng) for k, i in enumerate(chosen)]
    return docs, np.array(chosen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--planted", type=int, default=400)
    ap.add_argument("--cot", type=int, default=3000, help="CoT samples (train question + solution) in the mix")
    ap.add_argument("--no-grid", action="store_true", help="skip the settings grid")
    args = ap.parse_args()
    data = shared_data()
    if not (data / "gsm8k" / "test.jsonl").exists():
        sys.exit(f"shared data not found at {data} (set DATAFORGE_SHARED_DATA)")

    cfg = DecontamConfig()
    sources = [BenchmarkSource(name="gsm8k_test", path=str(data / "gsm8k" / "test.jsonl")),
               BenchmarkSource(name="multiarith", path=str(data / "reasoning" / "multiarith.json")),
               BenchmarkSource(name="svamp", path=str(data / "reasoning" / "svamp.json"))]
    t_build, index = median_time(lambda: load_index(sources, Path, cfg.ngram, cfg.ignore_numbers, cfg.min_block),
                                 args.repeats)
    print(f"index: {index.num_items} items (gsm8k_test + multiarith + svamp), {len(index.vocab)} words, "
          f"{sum(len(h) for h, _ in index.tables.values())} n-grams; built in {t_build * 1000:.0f} ms (median)")
    print(f"settings: ngram {cfg.ngram}, min_block {cfg.min_block}, ignore_numbers {cfg.ignore_numbers}, "
          f"match_fraction {cfg.match_fraction}")

    test = [r["question"] for r in jsonl(data / "gsm8k" / "test.jsonl")]
    train_rows = jsonl(data / "gsm8k" / "train.jsonl")
    train = [r["question"] for r in train_rows]

    # 1. catch rate (the GSM8K test items are the first items of the index, in file order)
    docs, chosen = planted_docs(test, args.planted, seed=11)
    r = scan(index, docs)
    caught = (r.fraction > cfg.match_fraction) & (r.item == chosen)
    print(f"catch: {caught.sum()}/{len(docs)} = {caught.mean():.1%} (numbers kept {caught[0::2].mean():.1%}, "
          f"numbers changed {caught[1::2].mean():.1%})")

    # 2. false positives on GSM8K train, near-identical ones set aside
    t0 = time.perf_counter()
    near = near_identical_mask(train, test)
    print(f"train questions near-identical to a test item (ratio >= 0.6): {near.sum()} of {len(train)} "
          f"({time.perf_counter() - t0:.0f} s to find)")
    rng = random.Random(12)
    negatives = [plant(q, rng) for q, n in zip(train, near) if not n]
    rn = scan(index, negatives)
    flagged = rn.fraction > cfg.match_fraction
    by_bench = {b: sum(index.names[i] == b for i in rn.item[flagged]) for b in ("gsm8k_test", "multiarith", "svamp")}
    print(f"false positives: {flagged.sum()}/{len(negatives)} = {flagged.mean():.2%} (by benchmark: {by_bench})")
    near_docs = [plant(q, rng) for q, n in zip(train, near) if n]
    rnear = scan(index, near_docs)
    print(f"  (the near-identical ones, flagged: {(rnear.fraction > cfg.match_fraction).sum()}/{len(near_docs)})")

    # 3. throughput, fast vs reference, on a mix
    pile = [d["contents"] for d in jsonl(data / "web" / "pile_1k.jsonl")]
    rng = random.Random(13)
    cot = [f"Question: {row['question']}\nAnswer: {row['answer']}" for row in rng.sample(train_rows, args.cot)]
    mix = cot + docs + pile
    words = sum(len(t.split()) for t in mix)
    t_fast, fast = median_time(lambda: scan(index, pa.array(mix, pa.string())), args.repeats)
    t_ref, ref = median_time(lambda: reference_scan(index, mix), max(1, args.repeats // 2))
    agree = bool(np.array_equal(fast.item, ref.item) and np.allclose(fast.fraction, ref.fraction))
    print(f"throughput on {len(mix)} samples ({len(cot)} CoT, {len(docs)} planted, {len(pile)} Pile documents; "
          f"{words / 1e6:.2f}M words), {fast.candidates} candidate pairs confirmed:")
    print(f"  fast      {t_fast:7.3f} s  {len(mix) / t_fast:9.0f} samples/s  {words / t_fast / 1e6:6.2f}M words/s")
    print(f"  reference {t_ref:7.3f} s  {len(mix) / t_ref:9.0f} samples/s  {words / t_ref / 1e6:6.2f}M words/s")
    print(f"  speed-up {t_ref / t_fast:.1f}x; results agree: {agree}")
    t_cot, _ = median_time(lambda: scan(index, pa.array(cot, pa.string())), args.repeats)
    print(f"  fast, CoT samples alone: {len(cot) / t_cot:.0f} samples/s")

    if args.no_grid:
        return
    # 4. settings grid (GSM8K test index, so every flag is against a GSM8K item)
    print("settings grid (GSM8K test only): ngram min_block ignore_numbers -> catch, false positives")
    for ignore in (False, True):
        for mb in (1, 3):
            for n in (6, 8, 10):
                idx = load_index(sources[:1], Path, n, ignore, mb)
                c = ((scan(idx, docs).fraction > cfg.match_fraction) & (scan(idx, docs).item == chosen)).mean()
                fp = int((scan(idx, negatives).fraction > cfg.match_fraction).sum())
                print(f"  {n:2d} {mb} {ignore!s:5}  catch {c:6.1%}  fp {fp}/{len(negatives)}")


if __name__ == "__main__":
    main()
