"""The educational-value model's data and its rater check (classifiers/recipes/educational_value.yaml).

Three steps around ``dataforge classifier label`` / ``train``, each a subcommand:

``pool``     the text to rate, written to a folder outside the repository:
             ``pool.jsonl`` (the Pile documents of the web_quality recipe's sources, a seeded
             sample per source, plus textbook sections), ``probes.jsonl`` (the words of every
             Wikipedia document of the pool, shuffled: text that should rate lower than its
             original) and ``retest.jsonl`` (a seeded subset of the Pile rows, rated again
             with sampling).
``measure``  whether the ratings mean anything: the rating distribution per group, the ROC-AUC of
             the rating against the web_quality recipe's source labels (reference-like = 1, web
             chatter = 0) with a 95% interval, the shuffled-words probe against its originals,
             and test-retest agreement (exact, within 1, Spearman, quadratic weighted kappa).
``card``     the model card: the training card of ``dataforge classifier train`` with the rater
             check stated at the top, and whether the model is fit to ship.

Run from the repository root with the project's Python; the commands are in the recipe.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from dataforge.curate.classifier import auc_ci95, average_ranks, card_markdown, roc_auc
from dataforge.hashing import file_sha256

REFERENCE = ["Wikipedia (en)", "PubMed Abstracts", "PubMed Central", "USPTO Backgrounds"]  # web_quality label 1
WEB = ["Pile-CC", "OpenSubtitles", "HackerNews"]  # web_quality label 0
PER_SOURCE = {"Wikipedia (en)": 41, "PubMed Abstracts": 30, "PubMed Central": 30, "USPTO Backgrounds": 20,
              "Pile-CC": 60, "OpenSubtitles": 40, "HackerNews": 20}
RATINGS = list(range(6))


# --- pool ------------------------------------------------------------------------------------

def build_pool(pile: Path, textbook_glob: str, out: Path, seed: int, retest_rows: int, max_textbooks: int) -> dict:
    """Each draw has its own seeded generator, so the Pile rows and their probes do not depend
    on how many textbook sections there are."""
    rng_pile, rng_tb, rng_probe, rng_retest = (np.random.default_rng([seed, k]) for k in range(4))
    docs: dict[str, list[str]] = {s: [] for s in PER_SOURCE}
    with open(pile, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            s = d["metadata"]["pile_set_name"]
            if s in docs and d["contents"].strip():
                docs[s].append(d["contents"])
    rows: list[dict] = []
    for s, n in PER_SOURCE.items():
        pick = np.sort(rng_pile.choice(len(docs[s]), size=min(n, len(docs[s])), replace=False))
        ref = 1 if s in REFERENCE else 0
        rows += [{"id": f"pile-{s}-{i}", "text": docs[s][i], "group": "reference" if ref else "web", "source": s,
                  "ref_label": ref} for i in pick]
    probes = []
    for r in rows:
        if r["source"] == "Wikipedia (en)":
            words = r["text"].split()
            rng_probe.shuffle(words)
            probes.append({"id": r["id"] + "-shuffled", "text": " ".join(words), "group": "shuffled",
                           "source": "Wikipedia (en), words shuffled", "ref_label": None, "original": r["id"]})
    retest = [rows[i] for i in np.sort(rng_retest.choice(len(rows), size=min(retest_rows, len(rows)), replace=False))]
    files = sorted(glob.glob(textbook_glob))
    textbooks = list(dict.fromkeys(t for p in files for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()
                                   if t and t.strip()))  # distinct sections, in file order
    if len(textbooks) > max_textbooks:
        textbooks = [textbooks[i] for i in np.sort(rng_tb.choice(len(textbooks), max_textbooks, replace=False))]
    rows += [{"id": f"textbook-{i}", "text": t, "group": "textbook", "source": "textbook (embedded teacher)",
              "ref_label": None} for i, t in enumerate(textbooks)]
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("pool", rows), ("probes", probes), ("retest", retest)):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
    info = {"pile": {"file": str(pile), "sha256": file_sha256(pile)},
            "textbooks": [{"file": p, "sha256": file_sha256(p)} for p in files],
            "rows": {"pool": len(rows), "probes": len(probes), "retest": len(retest)},
            "per_group": {g: sum(r["group"] == g for r in rows) for g in ("reference", "web", "textbook")},
            "seed": seed}
    (out / "pool.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# --- agreement statistics --------------------------------------------------------------------

def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None  # a constant rater: no rank correlation is defined
    return float(np.corrcoef(ra, rb)[0, 1])


def weighted_kappa(a: np.ndarray, b: np.ndarray, k: int = 6) -> float | None:
    """Cohen's kappa with quadratic weights over ratings 0..k-1 (1 = perfect, 0 = chance)."""
    obs = np.zeros((k, k))
    for x, y in zip(a, b):
        obs[int(x), int(y)] += 1
    obs /= obs.sum()
    exp = np.outer(obs.sum(1), obs.sum(0))
    i, j = np.indices((k, k))
    w = (i - j) ** 2 / (k - 1) ** 2
    den = (w * exp).sum()
    return None if den == 0 else float(1 - (w * obs).sum() / den)


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Exact and within-1 agreement, Spearman's rho and quadratic weighted kappa of two
    ratings of the same rows, with a 2,000-resample bootstrap interval for kappa (seed 0)."""
    rho, kappa = spearman(a, b), weighted_kappa(a, b)
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(2000):
        i = rng.integers(0, len(a), len(a))
        k = weighted_kappa(a[i], b[i])
        if k is not None:
            boot.append(k)
    return {"n": len(a), "exact": round(float((a == b).mean()), 4), "within_1": round(float((abs(a - b) <= 1).mean()), 4),
            "spearman": None if rho is None else round(rho, 4),
            "quadratic_weighted_kappa": None if kappa is None else round(kappa, 4),
            "kappa_ci95_bootstrap": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)]
            if boot else None}


def auc_block(pos: np.ndarray, neg: np.ndarray) -> dict:
    """ROC-AUC of the rating for telling ``pos`` from ``neg`` (ties count 1/2), with the
    Hanley-McNeil interval and a 2,000-resample bootstrap interval (seed 0)."""
    if not len(pos) or not len(neg):
        return {"n_pos": len(pos), "n_neg": len(neg), "roc_auc": None, "ci95_hanley_mcneil": None, "ci95_bootstrap": None}
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    s = np.r_[pos, neg].astype(float)
    auc = roc_auc(y, s)
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(2000):
        bp, bn = rng.choice(pos, len(pos)), rng.choice(neg, len(neg))
        boot.append(roc_auc(np.r_[np.ones(len(bp)), np.zeros(len(bn))], np.r_[bp, bn].astype(float)))
    return {"n_pos": len(pos), "n_neg": len(neg), "roc_auc": round(auc, 4),
            "ci95_hanley_mcneil": auc_ci95(auc, len(pos), len(neg)),
            "ci95_bootstrap": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)]}


def distribution(labels: np.ndarray) -> dict:
    counts = {str(r): int((labels == r).sum()) for r in RATINGS}
    p = np.array([c for c in counts.values()], float) / max(1, len(labels))
    nz = p[p > 0]
    return {"n": len(labels), "counts": counts, "mean": round(float(labels.mean()), 3) if len(labels) else None,
            "sd": round(float(labels.std()), 3) if len(labels) else None,
            "most_common_share": round(float(p.max()), 4) if len(labels) else None, "entropy_bits": round(float(-(nz * np.log2(nz)).sum()), 3)}


# --- measure ---------------------------------------------------------------------------------

def _rated(folder: Path) -> tuple[dict[str, dict], int]:
    kept = pq.read_table(folder / "kept.parquet").to_pylist()
    rejected = pq.read_table(folder / "rejected.parquet").num_rows
    return {r["id"]: r for r in kept}, rejected


def _failed_by_source(folder: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in pq.read_table(folder / "rejected.parquet").column("source").to_pylist():
        out[s] = out.get(s, 0) + 1
    return dict(sorted(out.items()))


def measure(labels: Path, probes: Path, retests: list[Path]) -> dict:
    rated, failed = _rated(labels)
    rows = list(rated.values())
    lab = lambda rs: np.array([r["label"] for r in rs], np.int64)  # noqa: E731
    by_group = {g: [r for r in rows if r["group"] == g] for g in ("reference", "web", "textbook")}
    by_source = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r["label"])
    out: dict = {
        "rated": len(rows), "failed": failed, "failed_by_source": _failed_by_source(labels),
        "distribution": {"all": distribution(lab(rows)), **{g: distribution(lab(rs)) for g, rs in by_group.items()}},
        "mean_by_source": {s: {"n": len(v), "mean": round(float(np.mean(v)), 3)} for s, v in sorted(by_source.items())},
        "auc_reference_vs_web": auc_block(lab(by_group["reference"]), lab(by_group["web"])),
        "auc_wikipedia_vs_opensubtitles": auc_block(
            np.array(by_source.get("Wikipedia (en)", [])), np.array(by_source.get("OpenSubtitles", []))),
        "auc_textbook_vs_web": auc_block(lab(by_group["textbook"]), lab(by_group["web"])),
    }
    shuffled, pfailed = _rated(probes)
    pairs = [(rated[p["original"]]["label"], p["label"]) for p in shuffled.values() if p["original"] in rated]
    orig, shuf = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    out["shuffled_probe"] = {
        "pairs": len(pairs), "failed": pfailed, "original_mean": round(float(orig.mean()), 3),
        "shuffled_mean": round(float(shuf.mean()), 3),
        "shuffled_lower": int((shuf < orig).sum()), "same": int((shuf == orig).sum()), "shuffled_higher": int((shuf > orig).sum()),
        "auc_original_vs_shuffled": auc_block(orig, shuf)}
    passes = [("greedy (the labels)", rated)]
    for p in retests:
        r, _ = _rated(p)
        passes.append((p.name, r))
    out["retest"] = []
    for i in range(len(passes)):
        for j in range(i + 1, len(passes)):
            ids = sorted(set(passes[i][1]) & set(passes[j][1]))
            a = np.array([passes[i][1][k]["label"] for k in ids])
            b = np.array([passes[j][1][k]["label"] for k in ids])
            out["retest"].append({"a": passes[i][0], "b": passes[j][0], **agreement(a, b)})
    out["retest_failed"] = {p.name: _rated(p)[1] for p in retests}
    out["retest_rows"] = sum(1 for _ in open(retests[0].parent / "pool" / "retest.jsonl")) if retests and (
        retests[0].parent / "pool" / "retest.jsonl").exists() else None
    return out


# --- card ------------------------------------------------------------------------------------

def model_vs_sources(model_path: Path, pile: Path, pool: Path) -> dict:
    """The trained model's own ROC-AUC against the web_quality source labels, on the Pile
    documents of those sources that were not rated (so neither teacher nor model saw them)."""
    from dataforge.curate.quality import load_quality_model, score_texts

    rated = {json.loads(line)["text"] for line in open(pool, encoding="utf-8")}
    texts, y = [], []
    with open(pile, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            s = d["metadata"]["pile_set_name"]
            if (s in REFERENCE or s in WEB) and d["contents"].strip() and d["contents"] not in rated:
                texts.append(d["contents"])
                y.append(1 if s in REFERENCE else 0)
    scores = score_texts(load_quality_model(model_path), texts)
    y_arr = np.array(y)
    out = auc_block(scores[y_arr == 1], scores[y_arr == 0])
    out["mean_score"] = {"reference": round(float(scores[y_arr == 1].mean()), 3),
                         "web": round(float(scores[y_arr == 0].mean()), 3)}
    return out


def verdict(m: dict) -> tuple[bool, list[str]]:
    """Whether the ratings carry signal (fit to train a filter on), and why not."""
    why = []
    auc = m["auc_reference_vs_web"]
    if auc["ci95_bootstrap"][0] <= 0.6:
        why.append(f"ROC-AUC of the rating against the source labels {auc['roc_auc']:.3f} "
                   f"(95% CI {auc['ci95_bootstrap'][0]:.2f}-{auc['ci95_bootstrap'][1]:.2f}): the lower bound is not above 0.6")
    kappas = [r["quadratic_weighted_kappa"] for r in m["retest"]]
    if any(k is None or k < 0.6 for k in kappas):
        why.append("test-retest quadratic weighted kappa " + ", ".join("n/a" if k is None else f"{k:.2f}" for k in kappas)
                   + " (below 0.6)")
    sp = m["shuffled_probe"]
    if sp["shuffled_lower"] <= sp["pairs"] / 2:
        why.append(f"shuffled words rated lower than their Wikipedia original in only {sp['shuffled_lower']} of "
                   f"{sp['pairs']} pairs")
    if m["distribution"]["all"]["most_common_share"] >= 0.6:
        d = m["distribution"]["all"]
        top = max(d["counts"], key=lambda k: d["counts"][k])
        why.append(f"{d['most_common_share']:.0%} of the ratings are {top}")
    return not why, why


def _fmt_auc(a: dict) -> str:
    if a["roc_auc"] is None:
        return "n/a"
    lo, hi = a["ci95_bootstrap"]
    return f"{a['roc_auc']:.3f} [{lo:.2f}, {hi:.2f}] (n = {a['n_pos']} vs {a['n_neg']})"


def rater_markdown(card: dict) -> str:
    rq = card["rater_quality"]
    m = rq["measurements"]
    d = m["distribution"]
    auc = m["auc_reference_vs_web"]
    kappas = "; ".join(f"{r['b']} vs {r['a']}: {r['quadratic_weighted_kappa']}" for r in m["retest"])
    sp = m["shuffled_probe"]
    retest_kappas = ", ".join(f"{r['quadratic_weighted_kappa']:.2f} (n = {r['n']})" for r in m["retest"])
    lines = [f"# {card['name']}", ""]
    if rq["fit"]:
        lines += [f"**The ratings of {rq['teacher']} pass the rater check below.**", ""]
    else:
        lines += [f"> **The labels come from a teacher that cannot rate ({rq['teacher']}, the embedded 135M model). "
                  f"ROC-AUC of its rating against the source labels {auc['roc_auc']:.3f} "
                  f"[{auc['ci95_bootstrap'][0]:.2f}, {auc['ci95_bootstrap'][1]:.2f}]; test-retest quadratic weighted "
                  f"kappa {retest_kappas}; "
                  f"shuffled words rated lower than the original in {sp['shuffled_lower']} of {sp['pairs']} pairs. "
                  "Do not use this model as a filter.** The model is not in `classifiers/models/`; rebuild it with "
                  "a strong teacher from the same recipe (below).", ""]
    lines += ["## Rater check (the teacher's ratings, before any training)", "",
              f"Teacher `{rq['teacher']}`, rubric `{rq['rubric']}`, each extract cut at {rq['max_chars']} characters, "
              f"greedy decoding (temperature 0). {m['rated']} rows rated, {m['failed']} failed "
              "(no valid `{reasoning, score}` reply after retries; by source: "
              + ", ".join(f"{k} {v}" for k, v in m["failed_by_source"].items()) + "). Rated text: "
              + ", ".join(f"`{Path(x['file']).name}` (sha256 `{x['sha256'][:16]}…`)"
                          for x in [rq["pool"]["pile"], *rq["pool"]["textbooks"]])
              + "; " + ", ".join(f"{v} {k}" for k, v in rq["pool"]["per_group"].items()) + f" rows, seed {rq['pool']['seed']}.", "",
              "| check | result | a rater that can rate |", "|---|---|---|",
              f"| ROC-AUC, reference-like (Wikipedia, PubMed, USPTO) vs web (Pile-CC, OpenSubtitles, HackerNews), "
              f"the web_quality recipe's labels | {_fmt_auc(auc)} | well above 0.5 (the fastText web model: 0.94) |",
              f"| ROC-AUC, Wikipedia vs OpenSubtitles dialogue | {_fmt_auc(m['auc_wikipedia_vs_opensubtitles'])} | near 1 |",
              f"| ROC-AUC, textbook sections vs web | {_fmt_auc(m['auc_textbook_vs_web'])} | above 0.5 |",
              f"| Wikipedia with its words shuffled vs the original ({sp['pairs']} pairs) | lower {sp['shuffled_lower']}, "
              f"same {sp['same']}, higher {sp['shuffled_higher']}; mean {sp['shuffled_mean']} vs {sp['original_mean']}; "
              f"AUC {_fmt_auc(sp['auc_original_vs_shuffled'])} | shuffled lower nearly always |"]
    for r in m["retest"]:
        lines.append(f"| test-retest, {r['b']} vs {r['a']} (n = {r['n']}) | exact {r['exact']:.2f}, within ±1 "
                     f"{r['within_1']:.2f}, Spearman {r['spearman']}, quadratic weighted kappa "
                     f"{r['quadratic_weighted_kappa']} {r['kappa_ci95_bootstrap']} | kappa ≥ 0.6 |")
    mv = rq["model_vs_source_labels"]
    lines += ["", f"The trained model (below) on the {mv['n_pos'] + mv['n_neg']} Pile documents of the same sources "
              f"that were not rated: ROC-AUC against the source labels {_fmt_auc(mv)}; mean expected rating "
              f"{mv['mean_score']['reference']} (reference-like) vs {mv['mean_score']['web']} (web). Its held-out "
              "metrics below measure how well it copies the teacher's ratings, not educational value."]
    never = [str(r) for r in RATINGS if d["all"]["counts"][str(r)] == 0]
    lines += ["", "Intervals: 2,000 bootstrap resamples (Hanley-McNeil in the JSON). Retest passes sample at "
              f"temperature {rq['retest_temperature']} with other seeds, on the same extracts and prompt "
              f"({m.get('retest_rows') or 'a subset of'} Pile rows; failed replies per pass: "
              + ", ".join(f"{k} {v}" for k, v in m.get("retest_failed", {}).items())
              + ", so each comparison covers the rows rated in both)."
              + (f" The rater never gave {' or '.join(never)}: an additive 0-5 rubric it does not apply." if never else ""),
              "",
              "Rating distribution (counts of 0..5):", "", "| rows | n | 0 | 1 | 2 | 3 | 4 | 5 | mean | share of the commonest |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for g in ("all", "reference", "web", "textbook"):
        x = d[g]
        lines.append(f"| {g} | {x['n']} | " + " | ".join(str(x["counts"][str(r)]) for r in RATINGS)
                     + f" | {x['mean']} | {'n/a' if x['most_common_share'] is None else format(x['most_common_share'], '.2f')} |")
    lines += ["", "Mean rating by source: " + ", ".join(f"{s} {v['mean']} (n {v['n']})" for s, v in m["mean_by_source"].items())
              + ".", ""]
    if not rq["fit"]:
        lines += ["Why the ratings are not usable: " + "; ".join(rq["why_not"]) + ".", ""]
    lines += ["## Rebuild", "", "```bash", *rq["commands"], "```", "",
              "With a strong teacher, only the `--config` changes: a pipeline YAML whose `teacher` section names it, "
              "e.g. `teacher: {provider: openai, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}` "
              "(FineWeb-Edu rated with Llama-3-70B-Instruct). Then run the rater check again and read it "
              "before shipping the model.", "",
              "# The training card (`dataforge classifier train`)", ""]
    body = card_markdown(card).split("\n", 2)[2]  # without its title
    if not rq["fit"]:
        body = body.replace("quantized (shipped)", "quantized (not shipped)").replace(" of the shipped model", " of the quantized model")
    return "\n".join(lines) + "\n" + body.replace("\n## ", "\n### ")


def write_card(train_card: Path, measures: Path, pool: Path, out_stem: Path, teacher: str, rubric: str,
               max_chars: int, retest_temperature: float, commands: list[str], pile: Path) -> dict:
    card = json.loads(train_card.read_text())
    m = json.loads(measures.read_text())
    fit, why = verdict(m)
    card["rater_quality"] = {"teacher": teacher, "rubric": rubric, "max_chars": max_chars,
                             "retest_temperature": retest_temperature, "fit": fit, "why_not": why,
                             "measurements": m, "pool": json.loads(pool.read_text()), "commands": commands,
                             "model_vs_source_labels": model_vs_sources(train_card.parent / card["model"]["file"], pile,
                                                                        pool.parent / "pool.jsonl")}
    pool_info = card["rater_quality"]["pool"]
    pg = pool_info["per_group"]
    card["sources"] += [
        {"source": "${DATAFORGE_SHARED_DATA}/web/pile_1k.jsonl:contents (rated: " + ", ".join(
            f"{k} {v}" for k, v in PER_SOURCE.items()) + ")", "file": pool_info["pile"]["file"],
         "sha256": pool_info["pile"]["sha256"], "rows_selected": pg["reference"] + pg["web"], "label": "rated text"},
        *({"source": f"{t['file']}:text (rated)", "file": t["file"], "sha256": t["sha256"],
           "rows_selected": pg["textbook"], "label": "rated text"} for t in pool_info["textbooks"])]
    card["model"]["shipped"] = fit
    if not fit:
        card["model"]["why_not_shipped"] = (
            f"the labels come from {teacher}, which cannot rate (" + "; ".join(why) + "): rebuild it with a strong "
            "teacher, `dataforge classifier label ... --config <teacher YAML>` then "
            "`dataforge classifier train --recipe classifiers/recipes/educational_value.yaml`")
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    out_stem.with_suffix(".json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    out_stem.with_suffix(".md").write_text(rater_markdown(card))
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pool")
    p.add_argument("--pile", type=Path, required=True)
    p.add_argument("--textbooks", required=True, help="glob of textbook Parquet parts (column text)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retest-rows", type=int, default=40)
    p.add_argument("--max-textbooks", type=int, default=80)
    m = sub.add_parser("measure")
    m.add_argument("--labels", type=Path, required=True)
    m.add_argument("--probes", type=Path, required=True)
    m.add_argument("--retest", type=Path, action="append", default=[])
    m.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("card")
    c.add_argument("--train-card", type=Path, required=True)
    c.add_argument("--measures", type=Path, required=True)
    c.add_argument("--pool", type=Path, required=True, help="pool.json written by `pool`")
    c.add_argument("--pile", type=Path, required=True, help="pile_1k.jsonl: the unrated documents the model is checked on")
    c.add_argument("--out", type=Path, required=True, help="card path without suffix")
    c.add_argument("--teacher", default="smollm2-135m-instruct")
    c.add_argument("--rubric", default="classifiers/rubrics/educational_value.md")
    c.add_argument("--max-chars", type=int, default=4000)
    c.add_argument("--retest-temperature", type=float, default=0.7)
    c.add_argument("--commands", type=Path, required=True, help="a text file: the rebuild commands, one a line")
    a = ap.parse_args(argv)
    if a.cmd == "pool":
        print(json.dumps(build_pool(a.pile, a.textbooks, a.out, a.seed, a.retest_rows, a.max_textbooks), indent=1))
    elif a.cmd == "measure":
        res = measure(a.labels, a.probes, a.retest)
        a.out.write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res, indent=1))
    else:
        card = write_card(a.train_card, a.measures, a.pool, a.out, a.teacher, a.rubric, a.max_chars,
                          a.retest_temperature, a.commands.read_text().strip().splitlines(), a.pile)
        print(f"fit: {card['rater_quality']['fit']}; {card['rater_quality']['why_not']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
