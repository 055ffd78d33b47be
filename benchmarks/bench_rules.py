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
every disagreement counted by (our reason, datatrove's reason). Both tokenizers cache the split
of each distinct whitespace chunk for the life of the process (spaCy's ``Tokenizer`` cache, our
``wordtok.chunk_tokens``), so the medians are steady-state figures for both; "ours, cold" is our
first repeat after clearing our cache (every chunk tokenized from scratch). Our reference
(per-row Python) path is timed too, for scale.

    .venv/bin/python benchmarks/bench_rules.py [--copies 2 --repeats 3]

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
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

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
        seconds, decisions = [], None
        for _ in range(repeats):
            t = time.perf_counter()
            decisions = [decide(f, text, i) for i, text in enumerate(texts)]
            seconds.append(time.perf_counter() - t)
        result["families"][name] = {"seconds": seconds, "decisions": decisions}
    together = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i, text in enumerate(texts):
            for f in filters.values():
                decide(f, text, i)
        together.append(time.perf_counter() - t)
    result["together_seconds"] = together
    import datatrove
    import spacy
    result["versions"] = {"datatrove": getattr(datatrove, "__version__", "0.10.1"), "spacy": spacy.__version__}
    print(json.dumps(result))


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
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    import pyarrow as pa

    from dataforge.config import HeuristicsConfig
    from dataforge.curate import wordtok
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
    heuristics_table(texts[:50], cfg_for(FAMILIES))  # numba compiles (or loads its cache) once
    ours: dict = {}
    for label, families, definitions, _ in rows:
        cfg = cfg_for(families, definitions)
        wordtok.chunk_tokens.cache_clear()  # the first repeat tokenizes from scratch ("cold")
        seconds = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            _, reasons, _ = heuristics_table(texts, cfg)
            seconds.append(time.perf_counter() - t)
        ours[label] = {"seconds": seconds, "reasons": reasons}
    wordtok.chunk_tokens.cache_clear()
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
    print(f"\nour reference (per-row Python) path, all four families: {mb / ref_seconds:.2f} MB/s")
    print("\ndisagreements by (our reason, datatrove's reason), with example document indices:")
    for family, kinds in disagreements.items():
        for (a, b), idx in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
            print(f"  {family}: ours {a or 'keep'} / datatrove {b or 'keep'}: {len(idx)} {idx[:args.show]}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--datatrove-worker":
        datatrove_worker(sys.argv[2], int(sys.argv[3]))
    else:
        main()
