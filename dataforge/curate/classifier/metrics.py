"""Held-out metrics of a classifier: ROC-AUC (with its Hanley-McNeil interval), precision,
recall, F1 and accuracy at a threshold, and for rating models the rating accuracy and error."""

from __future__ import annotations

import math

import numpy as np

from dataforge.curate.quality import LABEL_PREFIX, QualityModel


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties given their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve: the probability that a random positive outscores a random
    negative, ties counting one half (Mann-Whitney U with average ranks). None when one
    class is absent."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc_ci95(auc: float, n_pos: int, n_neg: int) -> list[float]:
    """A 95% interval for a ROC-AUC from its standard error (Hanley & McNeil 1982), clipped to
    0..1: how much a held-out AUC of a few hundred rows can be trusted."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    se = math.sqrt(max(var, 0.0))
    return [round(max(0.0, auc - 1.96 * se), 4), round(min(1.0, auc + 1.96 * se), 4)]


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Precision, recall, F1 and accuracy of ``score >= threshold``, and ROC-AUC."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auc = roc_auc(y, scores)
    out = {"n": len(y), "n_positive": int(y.sum()), "threshold": threshold, "tp": tp, "fp": fp, "fn": fn,
           "tn": tn, "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
           "accuracy": round((tp + tn) / len(y), 4) if len(y) else None,
           "roc_auc": None if auc is None else round(auc, 4),
           "roc_auc_ci95": None if auc is None else auc_ci95(auc, int(y.sum()), int((~y).sum()))}
    if y.any():
        # the operating point that predicts as many positives as there are (precision = recall
        # there): informative when 0.5 predicts none, as with rare positives
        k = int(y.sum())
        cut = float(np.sort(np.asarray(scores, np.float64))[::-1][k - 1])
        top = np.asarray(scores) >= cut
        out["at_positive_rate"] = {"threshold": round(cut, 4), "predicted": int(top.sum()),
                                   "precision": round(float((top & y).sum() / top.sum()), 4),
                                   "recall": round(float((top & y).sum() / k), 4)}
    return out


def evaluate(model: QualityModel, texts: list[str], labels: np.ndarray, positive_from: int = 3) -> dict:
    """Held-out metrics of a model on normalised ``texts``. Binary: at P(positive) >= 0.5.
    Rating: the rating is positive at ``>= positive_from`` and predicted positive when the
    expected rating rounds to it (FineWeb-Edu's int(round(score)) >= 3); plus the accuracy of
    the most probable rating and the mean absolute error of the expected rating."""
    scores = model.predict_lines(texts)
    if model.kind == "binary":
        return binary_metrics(labels, scores, 0.5)
    out = binary_metrics(labels >= positive_from, scores, positive_from - 0.5)
    top = np.asarray([int(lab[0].removeprefix(LABEL_PREFIX)) for lab in model.model.predict(texts, k=1)[0]])
    out.update({"positive_from": positive_from, "rating_accuracy": round(float((top == labels).mean()), 4),
                "mae": round(float(np.abs(scores - labels).mean()), 4)})
    return out
