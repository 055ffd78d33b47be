"""PII redaction (``pii`` stage): catch rate, look-alikes left intact, throughput.

Measured in one run:

  1. on the planted set of ``benchmarks/pii_data.py`` (real passages, one planted PII item and
     one planted look-alike each; built first when absent): per type, the share of planted PII
     *removed* (every character of the value inside a redacted span) and *typed* (inside a span
     of its own type); per category, the share of look-alikes *intact* (no redacted span
     touches them); split A and the held-out split B apart; 95% Wilson intervals. Redactions
     that touch no planted item (real PII of the passages, or false positives) are counted and
     listed. The same figures for a naive baseline: one textbook regular expression per type
     run over every row, no checksums, no context rules;
  2. throughput on the shared Pile documents (``--copies`` of the 1,000, one table): the stage
     (``apply_pii``: RE2 prefilter per type on the Arrow column, Python rules only on candidate
     rows) vs the reference path (``redact_text`` on every value) vs the naive baseline; medians
     of ``--repeats``; rows/s and MB/s of text; the stage's output checked equal to the
     reference's;
  3. what the stage changes in the 1,000 Pile documents: counts per type, rows touched, every
     change with its context (``--show`` prints them).

    .venv/bin/python benchmarks/bench_pii.py [--repeats 5 --copies 20 --show]

Needs /work/shared/data (DATAFORGE_SHARED_DATA); exits with a message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from dataforge.stages.pii import PII_TYPES, PiiConfig, apply_pii, find_pii  # noqa: E402
from pii_data import OUT_DIR, build, build_c, shared_data  # noqa: E402
from timing import median_time  # noqa: E402  (benchmarks/timing.py)

# the naive baseline: the kind of one-regex-per-type redactor found in tutorials
NAIVE = {
    "email": re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    "phone": re.compile(r"\+?\(?\d[\d\s().-]{7,}\d"),
    "ip": re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{0,4}\b"),
    "card": re.compile(r"\b(?:\d[ -]?){13,19}\b"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
    "secret": re.compile(r"\b(?:sk-[A-Za-z0-9-]{20,}|AKIA[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{36}|xox[a-z]-[\w-]+|"
                         r"AIza[\w-]{35})"),
}
NAIVE_ORDER = ("secret", "email", "iban", "card", "ip", "phone")


def naive_spans(text: str) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    for t in NAIVE_ORDER:
        for m in NAIVE[t].finditer(text):
            s, e = m.span()
            if not any(s < e2 and s2 < e for s2, e2, _ in spans):
                spans.append((s, e, t))
    return sorted(spans)


def naive_redact(text: str) -> str:
    out, pos = [], 0
    for s, e, t in naive_spans(text):
        out.append(text[pos:s] + f"<{t.upper()}>")
        pos = e
    return "".join(out) + text[pos:]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return 100 * (c - h), 100 * (c + h)


def pct(k: int, n: int) -> str:
    if n == 0:
        return "-"
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f}% [{lo:.1f}, {hi:.1f}] ({k}/{n})"


def evaluate(rows: list[dict], spans_of) -> dict:
    """Per (split, type) counts of removed / typed PII and per (split, category) intact look-alikes."""
    pii = defaultdict(lambda: [0, 0, 0])  # removed, typed, n
    look = defaultdict(lambda: [0, 0])  # intact, n
    missed: list[tuple] = []
    touched: list[tuple] = []
    extra = Counter()
    extra_examples: list[tuple] = []
    for row in rows:
        text = row["text"]
        spans = spans_of(text)
        used = [False] * len(spans)
        for it in row["items"]:
            s, e = it["start"], it["end"]
            over = [(i, sp) for i, sp in enumerate(spans) if sp[0] < e and s < sp[1]]
            for i, _ in over:
                used[i] = True
            if it["role"] == "pii":
                need = [k for k in range(s, e) if text[k].isalnum()]
                covered = all(any(a <= k < b for _, (a, b, _) in over) for k in need)
                typed = covered and all(any(a <= k < b and t == it["type"] for _, (a, b, t) in over) for k in need)
                for key in ((row["split"], it["type"]), ("all", it["type"]), (row["split"], "ALL"), ("all", "ALL")):
                    c = pii[key]
                    c[0] += covered
                    c[1] += typed
                    c[2] += 1
                if not covered:
                    missed.append((row["split"], it["type"], it["format"], it["value"]))
            else:
                intact = not over
                for key in ((row["split"], it["type"]), ("all", it["type"]), (row["split"], "ALL"), ("all", "ALL")):
                    c = look[key]
                    c[0] += intact
                    c[1] += 1
                if not intact:
                    touched.append((row["split"], it["type"], it["value"], [text[a:b] for _, (a, b, _) in over]))
        for (a, b, t), u in zip(spans, used):
            if not u:
                extra[t] += 1
                extra_examples.append((row["id"], row["source"], t, text[max(0, a - 40):a] + "[[" + text[a:b] + "]]"
                                       + text[b:b + 40]))
    return {"pii": pii, "look": look, "missed": missed, "touched": touched, "extra": extra,
            "extra_examples": extra_examples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--copies", type=int, default=20, help="copies of the 1,000 Pile documents for throughput")
    ap.add_argument("--rows", type=int, default=6000, help="rows of the planted set when it is built here")
    ap.add_argument("--rows-c", type=int, default=3000, help="rows of the held-out split C when built here")
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--show", action="store_true", help="print every change in the Pile documents and every miss")
    args = ap.parse_args()
    data = shared_data()
    if not (data / "web" / "pile_1k.jsonl").exists():
        sys.exit(f"shared data not found at {data} (set DATAFORGE_SHARED_DATA)")

    path = OUT_DIR / "planted.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    else:
        rows = build(args.rows, args.seed, data) + build_c(args.rows_c, args.seed + 1, data)
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"planted set: {path} ({len(rows)} rows, {sum(len(r['items']) for r in rows)} items)")

    # 1. quality
    cfg = PiiConfig(enabled=True)
    ours = evaluate(rows, lambda t: find_pii(t))
    naive = evaluate(rows, naive_spans)
    # the stage's output is the spans' redaction (checked on the whole set)
    table = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
    kept, _ = apply_pii(table, cfg)
    ref, _ = apply_pii(table, cfg, bulk=False)
    assert kept.equals(ref), "bulk and reference paths disagree on the planted set"
    out_texts = kept.column("text").to_pylist()
    still = sum(it["value"] in out for r, out in zip(rows, out_texts) for it in r["items"] if it["role"] == "pii")
    print(f"stage output: bulk == reference on {len(rows)} rows; planted values still present verbatim: {still}")

    print("\n| PII type | split A: removed | split B (held out) | split C (held out, new formats) | all | "
          "right placeholder | naive regex |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t in (*PII_TYPES, "ALL"):
        cells = [pct(ours["pii"][(sp, t)][0], ours["pii"][(sp, t)][2]) for sp in ("A", "B", "C", "all")]
        al, nv = ours["pii"][("all", t)], naive["pii"][("all", t)]
        print(f"| {t} | {' | '.join(cells)} | {100 * al[1] / max(al[2], 1):.1f}% | {100 * nv[0] / max(nv[2], 1):.1f}% |")
    print("\n| look-alike | split A: intact | split B (held out) | split C (held out) | all | naive regex |")
    print("|---|---:|---:|---:|---:|---:|")
    cats = sorted({k[1] for k in ours["look"] if k[0] == "all" and k[1] != "ALL"}) + ["ALL"]
    for c in cats:
        cells = [pct(*ours["look"][(sp, c)]) if ours["look"][(sp, c)][1] else "-" for sp in ("A", "B", "C", "all")]
        nv = naive["look"][("all", c)]
        print(f"| {c} | {' | '.join(cells)} | {100 * nv[0] / max(nv[1], 1):.1f}% |")
    print(f"\nmissed PII ({len(ours['missed'])}) by type/format:",
          dict(Counter((m[1], m[2]) for m in ours["missed"]).most_common()))
    print(f"look-alikes touched ({len(ours['touched'])}) by category:", dict(Counter(t[1] for t in ours["touched"])))
    print(f"redactions touching no planted item (in the real passages): ours {dict(ours['extra'])}, "
          f"naive {dict(naive['extra'])}")
    if args.show:
        for m in ours["missed"]:
            print("  MISSED", m)
        for t in ours["touched"]:
            print("  TOUCHED", t)
        for x in ours["extra_examples"]:
            print("  EXTRA", x)

    # 2. throughput on the Pile
    docs = [json.loads(line) for line in (data / "web" / "pile_1k.jsonl").open(encoding="utf-8")]
    texts = [d["contents"] for d in docs]
    big = pa.table({"id": [f"p{i}" for i in range(len(texts) * args.copies)], "text": texts * args.copies})
    mb = sum(len(t.encode()) for t in texts) * args.copies / 1e6
    n = big.num_rows
    t_bulk, (bulk_kept, _) = median_time(lambda: apply_pii(big, cfg), args.repeats)
    t_ref, (ref_kept, _) = median_time(lambda: apply_pii(big, cfg, bulk=False), max(1, args.repeats // 2))
    t_naive, _ = median_time(lambda: [naive_redact(t) for t in big.column("text").to_pylist()], max(1, args.repeats // 2))
    assert bulk_kept.equals(ref_kept), "bulk and reference paths disagree on the Pile"
    # the worst case for the prefilter: the planted set, where every row holds PII
    pmb = sum(len(r["text"].encode()) for r in rows) / 1e6
    p_bulk, _ = median_time(lambda: apply_pii(table, cfg), args.repeats)
    p_ref, _ = median_time(lambda: apply_pii(table, cfg, bulk=False), max(1, args.repeats // 2))
    p_naive, _ = median_time(lambda: [naive_redact(r["text"]) for r in rows], max(1, args.repeats // 2))
    print(f"\nthroughput, medians: {n:,} Pile rows ({mb:.1f} MB); {len(rows):,} planted rows ({pmb:.1f} MB, "
          "every row holds PII)")
    print("| path | Pile rows/s | Pile MB/s | vs reference | planted rows/s | planted MB/s | vs reference |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, t, pt in (("stage (RE2 prefilter + rules on candidates)", t_bulk, p_bulk),
                        ("reference (rules on every row)", t_ref, p_ref),
                        ("naive regex per row (no checks)", t_naive, p_naive)):
        print(f"| {name} | {n / t:,.0f} | {mb / t:.1f} | {t_ref / t:.1f}x | {len(rows) / pt:,.0f} | {pmb / pt:.1f} "
              f"| {p_ref / pt:.1f}x |")

    # 3. what it changes in the Pile
    pile = pa.table({"id": [f"p{i}" for i in range(len(texts))], "text": texts})
    out, _ = apply_pii(pile, cfg)
    totals = {t: int(pa.compute.sum(out.column(f"pii_{t}")).as_py()) for t in PII_TYPES}
    touched_rows = sum(any(out.column(f"pii_{t}")[i].as_py() for t in PII_TYPES) for i in range(out.num_rows))
    print(f"\nPile (1,000 documents): {touched_rows} rows changed; findings {totals}")
    by_source = Counter()
    for i, d in enumerate(docs):
        for s, e, t in find_pii(d["contents"]):
            by_source[(d["metadata"]["pile_set_name"], t)] += 1
            if args.show:
                c = d["contents"]
                print(f"  PILE {i} {d['metadata']['pile_set_name']} {t}: "
                      f"{c[max(0, s - 50):s]!r} [[{c[s:e]}]] {c[e:e + 50]!r}")
    print("by source:", dict(by_source))


if __name__ == "__main__":
    main()
