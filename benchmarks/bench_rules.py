"""Heuristic rule filters vs datatrove 0.10.1 (issue 4, part 1).

In one run, on the same documents (the shared Pile sample, repeated ``--copies`` times):

  1. datatrove's GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter (its defaults,
     which are our C4 settings) and FineWebQualityFilter, each alone over every document
     (``filter(Document)`` calls, no pipeline), and the four in a row per document; in a
     separate virtual environment, benchmarks/.venv-datatrove, created on first run (datatrove
     and spaCy from the package registry; nothing touches the main venv);
  2. ours: :func:`dataforge.curate.heuristics.heuristics_table` (the bulk path the stage runs)
     with one family enabled at a time, and all four together; with Gopher quality's default
     (dataforge) definitions and with ``definitions: datatrove``;

then MB/s per core (UTF-8 bytes over single-process wall time, Arrow on one thread), medians of
``--repeats``, the speed ratio, and the agreement of the keep/drop decisions per family, with
every disagreement counted by (our reason, datatrove's reason). The same figures from CPU time
(``time.process_time`` of each process) follow: on this shared machine other work stretches the
wall time of both sides, and the CPU time much less. Both tokenizers cache the split of each
distinct whitespace chunk for the life of the process (spaCy's ``Tokenizer`` cache; our bulk
path's per-thread chunk cache, ``heuristics_fast.chunk_cache()``, and ``wordtok.chunk_tokens``), so the medians
are steady-state figures for both; "ours, cold" is our first repeat after clearing our caches
(every chunk tokenized from scratch). Our reference (per-row Python) path is timed too, for
scale, and ours on documents the process has not seen (the caches warmed on the other half of
the sample: every chunk new to the process goes through Python once). ``--before REV`` also
times a committed version's bulk path (``git archive REV dataforge``, run in a subprocess from
a temporary directory) in the same run.

    .venv/bin/python benchmarks/bench_rules.py [--copies 2 --repeats 3 --before REV]

Needs /work/shared/data (DATAFORGE_SHARED_DATA) and, on first run, the package registry.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / "benchmarks" / ".venv-datatrove"
DATATROVE = "datatrove==0.10.1"
# what datatrove's filters import for English (its word tokenizer and sentencizer are spaCy's)
DATATROVE_EXTRAS = ("spacy", "regex")
FAMILIES = ("gopher_quality", "gopher_repetition", "c4", "fineweb_quality")


# --- the datatrove side: runs inside benchmarks/.venv-datatrove --------------------------------

def datatrove_worker(docs_path: str, repeats: int) -> None:
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    texts = json.loads(Path(docs_path).read_text(encoding="utf-8"))
    filters = {"gopher_quality": GopherQualityFilter(), "gopher_repetition": GopherRepetitionFilter(),
               "c4": C4QualityFilter(), "fineweb_quality": FineWebQualityFilter()}

    def decide(f, text: str, i: int):
        try:
            out = f.filter(Document(text=text, id=str(i)))
        except Exception as e:  # noqa: BLE001 - datatrove divides by zero on some inputs
            return f"error:{type(e).__name__}"
        if out is True:
            return None
        return out[1] if isinstance(out, tuple) else "dropped"

    for f in filters.values():  # load spaCy before timing
        decide(f, "Warm up the tokenizer. It loads once.", -1)
    result: dict = {"families": {}}
    for name, f in filters.items():
        seconds, cpu, decisions = [], [], None
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            decisions = [decide(f, text, i) for i, text in enumerate(texts)]
            seconds.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        result["families"][name] = {"seconds": seconds, "cpu": cpu, "decisions": decisions}
    together, together_cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        for i, text in enumerate(texts):
            for f in filters.values():
                decide(f, text, i)
        together.append(time.perf_counter() - t)
        together_cpu.append(time.process_time() - c)
    result["together_seconds"] = together
    result["together_cpu"] = together_cpu
    import datatrove
    import spacy
    result["versions"] = {"datatrove": getattr(datatrove, "__version__", "0.10.1"), "spacy": spacy.__version__}
    print(json.dumps(result))


# --- a committed version of our bulk path: runs from a `git archive` of dataforge/ ------------------

def before_worker(docs_path: str, repeats: int) -> None:
    """Times ``heuristics_table`` of the ``dataforge`` package first on ``sys.path`` (the
    archived one) per family and together, with the same configs as :func:`main`."""
    import pyarrow as pa

    import dataforge
    from dataforge.config import HeuristicsConfig
    from dataforge.curate.heuristics import heuristics_table

    if not Path(dataforge.__file__).resolve().is_relative_to(Path.cwd().resolve()):
        sys.exit(f"the archived dataforge was not the one imported: {dataforge.__file__}")
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    texts = json.loads(Path(docs_path).read_text(encoding="utf-8"))

    def cfg_for(families) -> HeuristicsConfig:
        return HeuristicsConfig.model_validate({f: {"enabled": f in families} for f in FAMILIES})

    heuristics_table(texts[:50], cfg_for(FAMILIES))
    result = {}
    for label, families in [(f, (f,)) for f in FAMILIES] + [("together", FAMILIES)]:
        cfg = cfg_for(families)
        seconds, cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            heuristics_table(texts, cfg)
            seconds.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        result[label] = {"seconds": seconds, "cpu": cpu}
    # documents not seen: as main() does, with whatever caches that version has
    from dataforge.curate import heuristics_fast, wordtok

    clear = getattr(heuristics_fast, "clear_caches", wordtok.chunk_tokens.cache_clear)
    docs = list(dict.fromkeys(texts))
    half = len(docs) // 2
    seconds, cpu = [], []
    for _ in range(repeats):
        clear()
        heuristics_table(docs[:half], cfg_for(FAMILIES))
        t, c = time.perf_counter(), time.process_time()
        heuristics_table(docs[half:], cfg_for(FAMILIES))
        seconds.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    result["together, documents not seen"] = {"seconds": seconds, "cpu": cpu}
    print(json.dumps(result))


def run_before(rev: str, docs_file: Path, repeats: int) -> dict:
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-rules-before-") as tmp:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "dataforge"], capture_output=True,
                                 check=True).stdout
        import io
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        env = {**os.environ, "PYTHONPATH": tmp, "NUMBA_CACHE_DIR": str(Path(tmp) / ".numba")}
        proc = subprocess.run([sys.executable, __file__, "--before-worker", str(docs_file), str(repeats)],
                              capture_output=True, text=True, check=True, env=env, cwd=tmp)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} ({DATATROVE}, {', '.join(DATATROVE_EXTRAS)}) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", DATATROVE, *DATATROVE_EXTRAS], check=True)
    return python


# --- our side ----------------------------------------------------------------------------------

def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=2, help="the 1,000 Pile documents, repeated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--show", type=int, default=2, help="examples shown per kind of disagreement")
    ap.add_argument("--before", metavar="REV", help="also time the bulk path as committed at REV (git archive)")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    import pyarrow as pa

    from dataforge.config import HeuristicsConfig
    from dataforge.curate import heuristics_fast
    from dataforge.curate.heuristics import heuristics_table

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    shared = Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
    pile = shared / "web" / "pile_1k.jsonl"
    if not pile.exists():
        sys.exit(f"shared data not found at {pile} (set DATAFORGE_SHARED_DATA)")
    docs = [json.loads(line)["contents"] for line in pile.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = docs * args.copies
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    python = ensure_venv()
    docs_file = REPO / "benchmarks" / ".venv-datatrove" / "bench_rules_docs.json"
    docs_file.write_text(json.dumps(texts), encoding="utf-8")
    print(f"{len(texts)} documents, {mb:.2f} MB; datatrove running ...", file=sys.stderr, flush=True)
    proc = subprocess.run([str(python), __file__, "--datatrove-worker", str(docs_file), str(args.repeats)],
                          capture_output=True, text=True, check=True)
    dt = json.loads(proc.stdout.strip().splitlines()[-1])
    before = None
    if args.before:
        print(f"timing the bulk path as committed at {args.before} ...", file=sys.stderr, flush=True)
        before = run_before(args.before, docs_file, args.repeats)

    def cfg_for(families, definitions: str = "dataforge") -> HeuristicsConfig:
        data = {f: {"enabled": f in families} for f in FAMILIES}
        data["gopher_quality"]["definitions"] = definitions
        return HeuristicsConfig.model_validate(data)

    # (row label, our families, our Gopher quality definitions, the datatrove figures it faces)
    rows = [(f, (f,), "dataforge", f) for f in FAMILIES] + [
        ("together", FAMILIES, "dataforge", "together"),
        ("gopher_quality, datatrove definitions", ("gopher_quality",), "datatrove", "gopher_quality"),
        ("together, datatrove definitions", FAMILIES, "datatrove", "together"),
    ]
    for definitions in ("dataforge", "datatrove"):  # numba compiles (or loads its cache) once
        heuristics_table(texts[:50], cfg_for(FAMILIES, definitions))
    ours: dict = {}
    for label, families, definitions, _ in rows:
        cfg = cfg_for(families, definitions)
        heuristics_fast.clear_caches()  # the first repeat tokenizes from scratch ("cold")
        seconds, cpu = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            _, reasons, _ = heuristics_table(texts, cfg)
            seconds.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        ours[label] = {"seconds": seconds, "cpu": cpu, "reasons": reasons}
    # documents the process has not seen: the caches hold the other half of the sample
    half = len(docs) // 2
    unseen_mb = sum(len(t.encode("utf-8")) for t in docs[half:]) / 1e6
    unseen_s, unseen_c = [], []
    assert len(set(docs)) == len(docs)
    for _ in range(args.repeats):
        heuristics_fast.clear_caches()
        heuristics_table(docs[:half], cfg_for(FAMILIES))
        t, c = time.perf_counter(), time.process_time()
        heuristics_table(docs[half:], cfg_for(FAMILIES))
        unseen_s.append(time.perf_counter() - t)
        unseen_c.append(time.process_time() - c)
    ours["together, documents not seen"] = {"seconds": unseen_s, "cpu": unseen_c}
    heuristics_fast.clear_caches()
    t = time.perf_counter()
    heuristics_table(texts, cfg_for(FAMILIES), fast=False)
    ref_seconds = time.perf_counter() - t

    print(f"\n{len(texts)} documents ({args.copies} x pile_1k), {mb:.2f} MB, {args.repeats} repeats, medians; "
          f"datatrove {dt['versions']['datatrove']} + spaCy {dt['versions']['spacy']}\n")
    print("| family | datatrove MB/s | ours MB/s | speed-up | ours, cold MB/s | decisions equal | "
          "drops: ours / datatrove |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    n = len(docs)  # decisions compared on the distinct documents (copies decide alike)
    disagreements: dict = {}
    for label, _, _, theirs in rows:
        dt_s = statistics.median(dt["together_seconds"] if theirs == "together"
                                 else dt["families"][theirs]["seconds"])
        our_s = statistics.median(ours[label]["seconds"])
        if theirs == "together":
            dt_dec = [next((d["decisions"][i] for d in dt["families"].values() if d["decisions"][i]), None)
                      for i in range(n)]
        else:
            dt_dec = dt["families"][theirs]["decisions"][:n]
        our_dec = ours[label]["reasons"][:n]
        equal = sum((a is None) == (b is None) for a, b in zip(our_dec, dt_dec))
        cold = ours[label]["seconds"][0]
        print(f"| {label} | {mb / dt_s:.2f} | {mb / our_s:.2f} | {dt_s / our_s:.1f}x | {mb / cold:.2f} | {equal}/{n} "
              f"({100 * equal / n:.1f}%) | {sum(a is not None for a in our_dec)} / "
              f"{sum(b is not None for b in dt_dec)} |")
        if not label.startswith("together"):
            kinds: dict = {}
            for i, (a, b) in enumerate(zip(our_dec, dt_dec)):
                if (a is None) != (b is None):
                    kinds.setdefault((a, b), []).append(i)
            disagreements[label] = kinds
    print("\nThe same runs in CPU time (each process's time.process_time; medians):\n")
    print("| family | datatrove MB/s | ours MB/s | speed-up | ours, cold MB/s |")
    print("|---|---:|---:|---:|---:|")
    for label, _, _, theirs in rows:
        dt_c = statistics.median(dt["together_cpu"] if theirs == "together" else dt["families"][theirs]["cpu"])
        our_c = statistics.median(ours[label]["cpu"])
        print(f"| {label} | {mb / dt_c:.2f} | {mb / our_c:.2f} | {dt_c / our_c:.1f}x | {mb / ours[label]['cpu'][0]:.2f} |")
    if before is not None:
        print(f"\nThe bulk path as committed at {args.before}, same documents, same run (medians):\n")
        print("| family | before MB/s | now MB/s | speed-up | before CPU MB/s | now CPU MB/s | CPU speed-up |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, figures in before.items():
            size = unseen_mb if label.endswith("not seen") else mb
            b_s, b_c = statistics.median(figures["seconds"]), statistics.median(figures["cpu"])
            n_s, n_c = statistics.median(ours[label]["seconds"]), statistics.median(ours[label]["cpu"])
            print(f"| {label} | {size / b_s:.2f} | {size / n_s:.2f} | {b_s / n_s:.1f}x | {size / b_c:.2f} | "
                  f"{size / n_c:.2f} | {b_c / n_c:.1f}x |")
    print(f"\nours, all four families, on the {len(docs) - half} documents the process has not seen (the caches "
          f"warmed on the other {half}; {unseen_mb:.2f} MB): {unseen_mb / statistics.median(unseen_s):.2f} MB/s, "
          f"CPU {unseen_mb / statistics.median(unseen_c):.2f} MB/s")
    print(f"\nour reference (per-row Python) path, all four families: {mb / ref_seconds:.2f} MB/s")
    print("\ndisagreements by (our reason, datatrove's reason), with example document indices:")
    for family, kinds in disagreements.items():
        for (a, b), idx in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
            print(f"  {family}: ours {a or 'keep'} / datatrove {b or 'keep'}: {len(idx)} {idx[:args.show]}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--datatrove-worker":
        datatrove_worker(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--before-worker":
        before_worker(sys.argv[2], int(sys.argv[3]))
    else:
        main()
