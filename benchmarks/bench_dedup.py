"""MinHash deduplication: dataforge's compiled path vs a datasketch pipeline, side by side in one run.

Corpus (deterministic, from the real data in ``../shared/data``; nothing is written to the repo):
units of real text (Pile documents cut into 40-80-word pieces, Alpaca instruction/input/output
triples, GSM8K problems with solutions, FLAN CoT rationales) are glued 2-4 at a time into
``--docs`` base documents; then ``--planted`` of them get 1-2 near copies at a known word-edit
rate (substitutions, insertions, deletions of 0.5-20% of the words) and a fifth of those an
exact copy up to case and punctuation. Default: 100,000 + ~17,000 rows, ~100 MB of text.

Both pipelines use the same parameters (5-gram shingles of the same normalized text, 128
"affine32" permutations, seed 1, xxh32 shingle hash, threshold 0.8, bands x rows 16 x 8 by the
datasketch rule weighted for recall, candidates verified by estimated Jaccard):

- ``datasketch``: per document ``MinHash.update_batch`` over :func:`dedup.shingles` (the
  permutations computed once and shared, as a careful user would), ``MinHashLSH.query`` then
  ``insert``, verification with ``MinHash.jaccard``, union-find;
- ``dataforge``: :func:`dedup.apply_dedup` on one thread, end to end from the Arrow table to the
  kept and rejected tables (exact pass, signatures, banding, verification, star clustering).

Reported, medians of ``--repeats`` alternating runs:

- end-to-end wall time and thread CPU time of each and the ratios (issue 14 target: >= 20x;
  issue 4's was >= 10x), the user part of the CPU time too (the system part, page faults of new
  memory, varies with the machine's memory state), and ours split into signatures and the rest
  (exact pass, banding, verification, clustering, output tables);
- signature throughput, MB of UTF-8 text in (the input column's bytes) per CPU-second of the
  signing thread (issue 14 target: >= 200 MB/s per core, single-threaded; thread CPU time,
  because the machine is shared), for the kernel and for datasketch's signing alone;
- peak memory per document: each pipeline once in a fresh subprocess, peak RSS (ru_maxrss)
  minus RSS after loading the corpus, divided by the rows; plus tracemalloc's peak for ours;
- accuracy on a 10,000-row sample (all planted groups first, then random rows) against the
  exact Jaccard of the shingle sets (all pairs >= 0.7 found by an exact prefix-filter join):
  recall of pairs with Jaccard >= threshold + 0.05 (a pair is found when both pipelines' LSH +
  verification links it, or the exact pass groups it), and the share of merged pairs (same
  cluster) whose Jaccard is below threshold - 0.1 (target <= 1%);
- templated text: 10,000 rows sharing a 240-word frame with 3 x 12 words of their own (pairwise
  Jaccard ~0.70): largest cluster with star clustering, with connected components, and datasketch.

Run: ``.venv/bin/python benchmarks/bench_dedup.py [--docs 100000 --planted 10000 --repeats 3]``
(``--quick`` for 20,000 docs and one repeat). Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DATAFORGE_PROGRESS", "0")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from dataforge.config import DedupConfig  # noqa: E402
from dataforge.curate import dedup  # noqa: E402
from dataforge.curate import minhash as fast  # noqa: E402

EDIT_RATES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)


# --- corpus ------------------------------------------------------------------------------------

def shared_data() -> Path:
    d = Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (d / "web" / "pile_1k.jsonl").exists():
        sys.exit(f"shared data not found at {d} (set DATAFORGE_SHARED_DATA)")
    return d


def text_units(d: Path, rng: random.Random) -> list[str]:
    units: list[str] = []
    for line in (d / "web" / "pile_1k.jsonl").read_text(encoding="utf-8").splitlines():
        words = json.loads(line)["contents"].split()
        i = 0
        while i < len(words):
            k = rng.randint(40, 80)
            if len(words) - i >= 20:
                units.append(" ".join(words[i:i + k]))
            i += k
    for name in ("random_9k.json", "claude_t45.json"):
        for r in json.loads((d / "alpaca" / name).read_text(encoding="utf-8")):
            units.append(" ".join(x for x in (r["instruction"], r["input"], r["output"]) if x))
    for name in ("train.jsonl", "test.jsonl"):
        for line in (d / "gsm8k" / name).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            units.append(f"{r['question']} {r['answer']}")
    for path in sorted((d / "flan_cot").glob("*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            units.append(line.replace("\\n", " ").replace("\t", " "))
    return [u for u in units if len(u.split()) >= 8]


def edit(text: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    words = text.split(" ")
    out = []
    for w in words:
        r = rng.random()
        if r < rate / 3:
            continue  # delete
        if r < 2 * rate / 3:
            out.append(rng.choice(vocab))  # substitute
            continue
        out.append(w)
        if r < rate:
            out.append(rng.choice(vocab))  # insert
    return " ".join(out)


def build_corpus(n_docs: int, n_planted: int, seed: int = 4) -> tuple[pa.Table, dict]:
    """The benchmark table (``id``, ``text``, ``created_at``, ``group``: the base document a row
    was made from) and facts about it."""
    rng = random.Random(seed)
    units = text_units(shared_data(), rng)
    vocab = sorted({w for u in units[:20000] for w in u.split() if w.isalpha()})
    texts = [" ".join(rng.choice(units) for _ in range(rng.randint(2, 4))) for _ in range(n_docs)]
    groups = list(range(n_docs))
    rates = [0.0] * n_docs
    for base in rng.sample(range(n_docs), n_planted):
        for _ in range(rng.choice((1, 1, 2))):
            rate = rng.choice(EDIT_RATES)
            texts.append(edit(texts[base], rate, rng, vocab))
            groups.append(base)
            rates.append(rate)
        if rng.random() < 0.2:  # an exact duplicate up to case and punctuation
            texts.append(texts[base].upper().replace(". ", " . "))
            groups.append(base)
            rates.append(0.0)
    n = len(texts)
    order = list(range(n))
    rng.shuffle(order)  # copies do not all come last
    table = pa.table({
        "id": pa.array([f"doc{i:07d}" for i in range(n)]),
        "text": pa.array([texts[i] for i in order]),
        "created_at": pa.array(np.datetime64("2024-01-01") + np.array(order, dtype="timedelta64[s]")),
        "group": pa.array([groups[i] for i in order], pa.int64()),
        "edit_rate": pa.array([rates[i] for i in order], pa.float64()),
    })
    return table, {"rows": n, "units": len(units), "mb": pa.compute.sum(pa.compute.binary_length(
        table.column("text").cast(pa.binary()))).as_py() / 1e6}


# --- the two pipelines -------------------------------------------------------------------------

def datasketch_pipeline(texts: list[str], cfg: DedupConfig) -> tuple[list[int], list[tuple[int, int]]]:
    """MinHash + MinHashLSH + verification + union-find: (root per row, verified pairs)."""
    from datasketch import MinHash, MinHashLSH

    bands, rows = dedup.lsh_params(cfg)
    template = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=dedup.HASHFUNC, scheme="affine32")
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, params=(bands, rows))
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    sketches, pairs = [], []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=dedup.HASHFUNC, scheme="affine32",
                    permutations=template.permutations)
        m.update_batch(dedup.shingles(text, cfg.ngram))
        for j in lsh.query(m):
            if m.jaccard(sketches[j]) >= cfg.threshold:
                pairs.append((j, i))
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
        lsh.insert(i, m)
        sketches.append(m)
    return [find(i) for i in range(len(texts))], pairs


def datasketch_signing(texts: list[str], cfg: DedupConfig) -> None:
    from datasketch import MinHash

    template = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=dedup.HASHFUNC, scheme="affine32")
    for text in texts:
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=dedup.HASHFUNC, scheme="affine32",
                    permutations=template.permutations)
        m.update_batch(dedup.shingles(text, cfg.ngram))


def dataforge_pipeline(table: pa.Table, cfg: DedupConfig) -> tuple[pa.Table, pa.Table]:
    return dedup.apply_dedup(table.select(["id", "text", "created_at"]), cfg, workers=1)


def timed(fn, *args):
    w, c = time.perf_counter(), time.thread_time()
    out = fn(*args)
    return out, time.perf_counter() - w, time.thread_time() - c


def fresh_memory_sys_ms(mb: int = 112, repeats: int = 3) -> float:
    """System CPU milliseconds to touch ``mb`` MB of newly allocated memory (median): what page
    faults cost on this machine at the moment (transparent huge pages and their compaction make it
    vary widely on a shared VM). Both pipelines pay it for the memory they allocate."""
    out = []
    for _ in range(repeats):
        s0 = thread_user_sys()[1]
        np.ones(mb * 1_000_000, np.uint8)
        out.append((thread_user_sys()[1] - s0) * 1000)
    return statistics.median(out)


def thread_user_sys() -> tuple[float, float]:
    """This thread's user and system CPU seconds so far. The system part (page faults of new
    memory: on this VM, transparent huge pages with compaction) varies from run to run with the
    machine's memory state; the user part is the code's own work."""
    r = resource.getrusage(resource.RUSAGE_THREAD)
    return r.ru_utime, r.ru_stime


# --- accuracy ----------------------------------------------------------------------------------

def exact_pairs(sets: list[set[int]], min_jaccard: float) -> dict[tuple[int, int], float]:
    """Every pair with Jaccard >= ``min_jaccard`` (exact: a prefix-filter join, Chaudhuri et al.
    2006 - two sets that similar share a token among the first |x| - ceil(t|x|) + 1 of each,
    tokens ordered rarest first), with its Jaccard."""
    freq: dict[int, int] = defaultdict(int)
    for s in sets:
        for t in s:
            freq[t] += 1
    ordered = [sorted(s, key=lambda t: (freq[t], t)) for s in sets]
    index: dict[int, list[int]] = defaultdict(list)
    out = {}
    for i, toks in enumerate(ordered):
        prefix = len(toks) - int(np.ceil(min_jaccard * len(toks))) + 1
        cands = set()
        for t in toks[:prefix]:
            cands.update(index[t])
            index[t].append(i)
        for j in cands:
            a, b = sets[i], sets[j]
            jac = len(a & b) / len(a | b)
            if jac >= min_jaccard:
                out[(j, i)] = jac
    return out


def accuracy(sample: pa.Table, cfg: DedupConfig) -> dict:
    texts = sample.column("text").to_pylist()
    sets = [{hash(s) for s in dedup.shingles(t, cfg.ngram)} for t in texts]
    truth = exact_pairs(sets, cfg.threshold - 0.1)
    high = {p for p, j in truth.items() if j >= cfg.threshold + 0.05}

    def jac(i: int, j: int) -> float:
        a, b = sets[i], sets[j]
        return len(a & b) / len(a | b)

    def merged_pairs(cluster_of: list) -> list[tuple[int, int]]:
        members = defaultdict(list)
        for i, c in enumerate(cluster_of):
            members[c].append(i)
        return [(a, b) for m in members.values() if len(m) > 1 for k, a in enumerate(m) for b in m[k + 1:]]

    def score(found: set, cluster_of: list) -> dict:
        merged = merged_pairs(cluster_of)
        low = sum(1 for a, b in merged if ((a, b) if a < b else (b, a)) not in truth or jac(a, b) < cfg.threshold - 0.1)
        together = sum(1 for a, b in high if cluster_of[a] == cluster_of[b])
        return {"pairs_high": len(high), "recall_high": sum(1 for p in high if p in found) / max(1, len(high)),
                "cluster_recall_high": together / max(1, len(high)),
                "merged_pairs": len(merged), "merged_below": low, "merged_below_share": low / max(1, len(merged))}

    # dataforge: pairs linked by the exact pass or by LSH + verification
    sig, exact_hash, norm_len = fast.signatures(sample.column("text"))
    n = len(texts)
    rep = dedup.exact_groups(exact_hash, norm_len, np.arange(n))
    found = {(min(i, int(r)), max(i, int(r))) for i, r in enumerate(rep) if r != i}
    by_rep = defaultdict(list)
    for i, r in enumerate(rep):
        by_rep[int(r)].append(i)
    for m in by_rep.values():
        found.update((a, b) for k, a in enumerate(m) for b in m[k + 1:])
    bands, rows = dedup.lsh_params(cfg)
    codes = fast.unique_codes(np.concatenate([fast.candidate_pairs(sig, b, rows, bands) for b in range(bands)]))
    left, right, _ = fast.verify_pairs(sig, codes, cfg.threshold)
    verified = set(zip(left.tolist(), right.tolist()))
    for a, b in verified:  # exact duplicates of a linked row are linked too
        for x in by_rep[int(rep[a])]:
            for y in by_rep[int(rep[b])]:
                found.add((min(x, y), max(x, y)))
    kept, rejected = dedup.apply_dedup(sample.select(["id", "text", "created_at"]), cfg)
    cluster = dict(zip(kept.column("id").to_pylist(), kept.column("dedup_cluster").to_pylist()))
    cluster.update(zip(rejected.column("id").to_pylist(), rejected.column("dedup_cluster").to_pylist()))
    ours = score(found, [cluster[i] for i in sample.column("id").to_pylist()])

    roots, pairs = datasketch_pipeline(texts, cfg)
    theirs = score({(min(a, b), max(a, b)) for a, b in pairs}, roots)
    return {"dataforge": ours, "datasketch": theirs, "exact_pairs_ge_0.7": len(truth)}


def accuracy_sample(table: pa.Table, size: int, seed: int = 5) -> pa.Table:
    rng = random.Random(seed)
    groups = table.column("group").to_numpy()
    counts = np.bincount(groups)
    planted = [g for g in np.flatnonzero(counts > 1).tolist()]
    rng.shuffle(planted)
    members = defaultdict(list)
    for i, g in enumerate(groups.tolist()):
        members[g].append(i)
    chosen: list[int] = []
    for g in planted:
        if len(chosen) + len(members[g]) > size * 0.6:
            break
        chosen.extend(members[g])
    taken = set(chosen)
    rest = [i for i in rng.sample(range(table.num_rows), min(table.num_rows, 2 * size)) if i not in taken]
    chosen.extend(rest[: size - len(chosen)])
    return table.take(pa.array(sorted(chosen)))


# --- templated text ----------------------------------------------------------------------------

def templated(n: int = 10_000, content_words: int = 12, seed: int = 7) -> list[str]:
    sys.path.insert(0, str(REPO / "tests"))
    from test_dedup import templated_texts

    return templated_texts(n, content_words, seed)


def templated_report(cfg: DedupConfig) -> dict:
    texts = templated()
    table = pa.table({"id": pa.array([f"t{i:05d}" for i in range(len(texts))]), "text": pa.array(texts)})
    out = {}
    for clustering in ("star", "components"):
        c = cfg.model_copy(update={"clustering": clustering})
        (kept, _), wall, _ = timed(dedup.apply_dedup, table, c)
        out[clustering] = {"largest": int(max(kept.column("dedup_size").to_pylist())), "kept": kept.num_rows,
                           "seconds": round(wall, 2)}
    roots, _ = datasketch_pipeline(texts, cfg)
    out["datasketch_components"] = {"largest": int(np.bincount(roots).max()), "kept": len(set(roots))}
    return out


# --- memory (each pipeline in a fresh process) -------------------------------------------------

def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def child(which: str, corpus: Path) -> None:
    cfg = DedupConfig()
    table = pq.read_table(corpus)
    texts = table.column("text").to_pylist() if which == "datasketch" else None
    if which == "dataforge":  # compile and build the tables outside the measurement
        dataforge_pipeline(table.slice(0, 100), cfg)
    before = rss_mb()
    was_reset = reset_peak_rss()
    if which == "datasketch":
        datasketch_pipeline(texts, cfg)
    else:
        dataforge_pipeline(table, cfg)
    peak = peak_rss_mb()
    print(json.dumps({"rss_before_mb": round(before, 1), "peak_mb": round(peak, 1), "peak_reset": was_reset,
                      "delta_mb": round(peak - before, 1), "rows": table.num_rows}))


def memory_of(which: str, corpus: Path) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", which, "--corpus", str(corpus)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- main --------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--planted", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="20,000 docs, one repeat, 5,000-row sample")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--child", choices=["dataforge", "datasketch"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.corpus)
        return
    if args.quick:
        args.docs, args.planted, args.repeats, args.sample = 20_000, 2_000, 1, 5_000

    cfg = DedupConfig()
    t = time.perf_counter()
    table, facts = build_corpus(args.docs, args.planted)
    print(f"corpus: {facts['rows']:,} rows, {facts['mb']:.1f} MB of text from {facts['units']:,} units "
          f"({time.perf_counter() - t:.1f} s to build)", flush=True)
    texts = table.column("text").to_pylist()
    t = time.perf_counter()
    dataforge_pipeline(table.slice(0, 200), cfg)  # numba compiles (or loads its cache) and tables
    print(f"warm-up (numba compile or cache load, Unicode tables): {time.perf_counter() - t:.1f} s", flush=True)

    ours, theirs, sign_cpu, sign_wall, ds_sign_cpu = [], [], [], [], []
    ours_cpu, theirs_cpu = [], []  # thread CPU time: both pipelines run on this one thread
    ours_user, theirs_user, sign_user = [], [], []  # the user part of it
    results = {}
    for r in range(args.repeats):
        u0 = thread_user_sys()[0]
        (_, _), wall, cpu = timed(dataforge_pipeline, table, cfg)
        ours_user.append(thread_user_sys()[0] - u0)
        ours.append(wall)
        ours_cpu.append(cpu)
        u0 = thread_user_sys()[0]
        _, w, c = timed(fast.signatures, table.column("text"), cfg.num_perm, cfg.ngram, cfg.seed)
        sign_user.append(thread_user_sys()[0] - u0)
        sign_wall.append(w)
        sign_cpu.append(c)
        u0 = thread_user_sys()[0]
        (roots, _), wall, cpu = timed(datasketch_pipeline, texts, cfg)
        theirs_user.append(thread_user_sys()[0] - u0)
        theirs.append(wall)
        theirs_cpu.append(cpu)
        sub = texts[: max(1, len(texts) // 10)]
        _, _, c = timed(datasketch_signing, sub, cfg)
        ds_sign_cpu.append(c * len(texts) / len(sub))
        print(f"repeat {r + 1}: dataforge {ours[-1]:.2f} s (CPU {ours_cpu[-1]:.2f}), datasketch {theirs[-1]:.2f} s "
              f"(CPU {theirs_cpu[-1]:.2f}), "
              f"kernel {facts['mb'] / sign_cpu[-1]:.0f} MB/s per core (wall {facts['mb'] / sign_wall[-1]:.0f})",
              flush=True)
    results["fresh_memory_sys_ms_per_112mb"] = fresh_memory_sys_ms()
    kept, rejected = dataforge_pipeline(table, cfg)
    summary = dedup.dedup_summary(kept, rejected)
    results["dataforge_summary"] = summary
    results["datasketch_clusters"] = len(set(roots))

    tracemalloc.start()
    dataforge_pipeline(table, cfg)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    memory = {}
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "corpus.parquet"
            pq.write_table(table, corpus)
            for which in ("dataforge", "datasketch"):
                memory[which] = memory_of(which, corpus)
                print(f"memory {which}: {memory[which]}", flush=True)

    sample = accuracy_sample(table, args.sample)
    acc = accuracy(sample, cfg)
    tmpl = templated_report(cfg)

    med = statistics.median
    n = facts["rows"]
    print("\n| | dataforge | datasketch | ratio |")
    print("|---|---|---|---|")
    print(f"| end to end, {n:,} rows, {facts['mb']:.0f} MB (median of {args.repeats}) | {med(ours):.2f} s | "
          f"{med(theirs):.2f} s | **{med(theirs) / med(ours):.1f}x** |")
    print(f"| end to end, thread CPU seconds (robust to other jobs on the machine) | {med(ours_cpu):.2f} s | "
          f"{med(theirs_cpu):.2f} s | **{med(theirs_cpu) / med(ours_cpu):.1f}x** |")
    print(f"| end to end, thread user CPU seconds (without the system time of page faults) | "
          f"{med(ours_user):.2f} s | {med(theirs_user):.2f} s | **{med(theirs_user) / med(ours_user):.1f}x** |")
    print(f"| ours: signatures / the rest (exact pass, bands, verification, clustering, output tables), "
          f"thread CPU | {med(sign_cpu):.2f} s / {med(ours_cpu) - med(sign_cpu):.2f} s | | |")
    print(f"| signatures, MB/s per core (thread CPU time) | {facts['mb'] / med(sign_cpu):.0f} | "
          f"{facts['mb'] / med(ds_sign_cpu):.1f} | {med(ds_sign_cpu) / med(sign_cpu):.0f}x |")
    print(f"| signatures, MB/s per core (thread user CPU) | {facts['mb'] / med(sign_user):.0f} | | |")
    print(f"| signatures, MB/s wall | {facts['mb'] / med(sign_wall):.0f} | | |")
    print(f"| the machine now: system CPU to touch 112 MB of new memory (page faults) | "
          f"{results['fresh_memory_sys_ms_per_112mb']:.0f} ms | | |")
    if memory:
        print(f"| peak memory per row (RSS delta in a fresh process) | "
              f"{memory['dataforge']['delta_mb'] * 1e6 / n:.0f} B | {memory['datasketch']['delta_mb'] * 1e6 / n:.0f} B | |")
    print(f"| peak memory per row (tracemalloc, ours) | {traced_peak / n:.0f} B | | |")
    for name in ("dataforge", "datasketch"):
        a = acc[name]
        print(f"| {name}: recall of pairs >= {cfg.threshold + 0.05:.2f} ({a['pairs_high']}) | "
              f"linked {a['recall_high']:.4f}, same cluster {a['cluster_recall_high']:.4f} | | |")
        print(f"| {name}: merged pairs below {cfg.threshold - 0.1:.2f} | {a['merged_below']} of {a['merged_pairs']} "
              f"({a['merged_below_share']:.4%}) | | |")
    print(f"| templated 10k: largest cluster star / components / datasketch components | "
          f"{tmpl['star']['largest']} / {tmpl['components']['largest']} / {tmpl['datasketch_components']['largest']} | | |")
    print("\n" + json.dumps({"facts": facts, "ours_s": ours, "datasketch_s": theirs, "ours_cpu_s": ours_cpu,
                             "datasketch_cpu_s": theirs_cpu, "sign_cpu_s": sign_cpu, "ours_user_s": ours_user,
                             "datasketch_user_s": theirs_user, "sign_user_s": sign_user,
                             "sign_wall_s": sign_wall, "datasketch_sign_cpu_s": ds_sign_cpu,
                             "traced_peak_bytes": traced_peak, "memory": memory, "accuracy": acc,
                             "templated": tmpl, **results}, default=str))


if __name__ == "__main__":
    main()
