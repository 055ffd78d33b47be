"""The model card of a trained classifier: ``card.json`` and its Markdown rendering ``card.md``."""

from __future__ import annotations

import json
import os
from pathlib import Path


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def card_markdown(card: dict) -> str:
    m = card["metrics"]
    held, full = m["held_out"], m["held_out_unquantized"]
    mdl = card["model"]
    lines = [f"# {card['name']}", "", card.get("description") or "", "",
             f"- kind: **{card['kind']}** ({card['score']})",
             f"- model: `{mdl['file']}`, {mdl['bytes']:,} bytes"
             + (f" (quantized from {mdl['unquantized_bytes']:,} bytes)" if mdl["quantized"] else "")
             + f", sha256 `{mdl['sha256'][:16]}…`",
             f"- trained {card['created_at']} with dataforge {card['dataforge_version']}, "
             f"fasttext-numpy2 {card['fasttext_version']}, in {card['train_seconds']} s "
             f"({card['total_seconds']} s with quantization and cross-validation)", "",
             "## Held-out metrics", "",
             f"Stratified held-out split: {card['split']['valid_rows']} rows "
             f"({card['split']['valid_fraction']:.0%}, seed {card['split']['seed']}); "
             f"threshold {held['threshold']}.", "",
             "| model | ROC-AUC | precision | recall | F1 | accuracy | n (positive) |",
             "|---|---|---|---|---|---|---|"]
    rows = [("unquantized", full)] + ([("quantized (shipped)", held)] if mdl["quantized"] else [])
    for label, x in rows:
        lines.append(f"| {label} | {_pct(x['roc_auc'])} | {_pct(x['precision'])} | {_pct(x['recall'])} | "
                     f"{_pct(x['f1'])} | {_pct(x['accuracy'])} | {x['n']} ({x['n_positive']}) |")
    lines += ["", f"ROC-AUC 95% interval (Hanley-McNeil) of the shipped model: {held['roc_auc_ci95']}."]
    if held.get("at_positive_rate"):
        apr = held["at_positive_rate"]
        lines += [f"At the held-out positive rate (the top {apr['predicted']} scores, threshold {apr['threshold']}): "
                  f"precision {apr['precision']:.3f}, recall {apr['recall']:.3f}."]
    if mdl["quantized"] and card["hyperparameters"].get("retrain"):
        lines += ["Quantization retrains the pruned model for another `epoch` passes, so the shipped model may "
                  "score above the unquantized one."]
    if "rating_accuracy" in held:
        lines += ["", f"Rating accuracy {held['rating_accuracy']}, mean absolute error {held['mae']} "
                      f"(positive: rating >= {held['positive_from']})."]
    cv = m.get("cross_validation")
    if cv:
        lines += ["", f"{cv['folds']}-fold cross-validation (unquantized, every row held out once): "
                  + ", ".join(f"{k} {v['mean']:.3f} ± {v['sd']:.3f}" for k, v in cv.items() if isinstance(v, dict))
                  + "."]
    d = card["data"]
    lines += ["", "## Data", "", "| source | label | rows selected | sha256 |", "|---|---|---|---|"]
    for s in card["sources"]:
        lines.append(f"| `{s['source']}` | {s.get('label', 'column')} | {s['rows_selected']} | `{s['sha256'][:16]}…` |")
    lines += ["", f"Rows used {d['rows_used']} of {d['rows_loaded']} loaded; removed: "
              + ", ".join(f"{k} {v}" for k, v in d["removed"].items()) + ".",
              f"Label counts: all {d['label_counts']['all']}, train {d['label_counts']['train']}, "
              f"held out {d['label_counts']['valid']}.", "",
              "## Hyperparameters", "", "```json", json.dumps(card["hyperparameters"], indent=1), "```", "",
              f"Normalisation: {card['normalisation']}."]
    if card.get("licence"):
        lines += ["", f"Licence: {card['licence']}"]
    if card.get("recipe"):
        lines += ["", f"Recipe: `{card['recipe']}`"]
    return "\n".join(lines) + "\n"


def write_card(out_dir: Path, card: dict) -> None:
    for name, text in (("card.json", json.dumps(card, indent=2, ensure_ascii=False) + "\n"),
                       ("card.md", card_markdown(card))):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)
