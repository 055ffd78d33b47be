"""Training, evaluating and quantizing a fastText classifier (``dataforge classifier train``).

**Training** (DCLM's defaults): supervised, softmax, word bigrams, lr 0.1, dim 100, 5 epochs,
min count 1, 2M hash buckets, on the normalised text of :mod:`dataforge.curate.quality`. One
thread with a fixed seed: fastText's Hogwild SGD is then deterministic (same data, same
model), which several threads are not; :func:`zeroed_allocations` removes the one other source
of run-to-run change (uninitialised memory in fastText's input matrix).

**Quantization**: ``model.quantize`` with a vocabulary cutoff, product quantization of the
input matrix (``dsub``), normalised vectors and retraining (the ``.ftz`` format); the card
records the size and the held-out metrics before and after.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from dataforge.curate.classifier.card import write_card
from dataforge.curate.classifier.common import ClassifierError, Spec
from dataforge.curate.classifier.labels import (
    Labelled,
    clean_labelled,
    label_kind,
    stratified_folds,
    stratified_split,
)
from dataforge.curate.classifier.metrics import evaluate
from dataforge.curate.quality import LABEL_PREFIX, QualityModel, kind_of_labels
from dataforge.hashing import file_sha256

log = logging.getLogger("dataforge.classifier")


class TrainParams(Spec):
    """fastText hyperparameters (DCLM's defaults) and the evaluation / quantization knobs."""

    lr: float = Field(0.1, gt=0, le=10)
    dim: int = Field(100, ge=2, le=1000)
    epoch: int = Field(5, ge=1, le=1000)
    word_ngrams: int = Field(2, ge=1, le=5)
    min_count: int = Field(1, ge=1)
    bucket: int = Field(2_000_000, ge=1000)
    loss: Literal["softmax", "ova", "hs", "ns"] = "softmax"
    thread: int = Field(1, ge=1, le=64)  # 1: deterministic for a seed
    seed: int = 0
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    folds: int = Field(0, ge=0, le=20)  # >= 2: also k-fold cross-validation (mean and sd of the metrics)
    quantize: bool = True
    cutoff: int = Field(100_000, ge=0)  # words and n-grams kept by quantization (0: all)
    dsub: int = Field(2, ge=1, le=100)
    qnorm: bool = True
    retrain: bool = True
    positive_from: int = Field(3, ge=1, le=5)  # rating models: ratings >= this count as positive

    @field_validator("folds")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v == 1:
            raise ValueError("folds: 0 (no cross-validation) or at least 2")
        return v


_M_PERTURB = -6  # glibc mallopt parameter


@contextlib.contextmanager
def zeroed_allocations() -> Iterator[None]:
    """Make glibc hand out zero-filled memory while fastText trains or quantizes.

    fastText initialises only the first ``thread``/10 of its input matrix with random values
    (``DenseMatrix::uniform`` fills one block of ten per thread) and, in the fasttext-numpy2
    build, leaves the rest of that allocation uninitialised: zeros in a fresh process (new
    pages), leftovers of an earlier model after that, so the second training in a process gave
    a different model from the first (seen here; 6 trainings of one file, 4 different models).
    With ``M_PERTURB`` set to 0xFF, glibc fills each new allocation with 0x00 (the complement),
    which reproduces the fresh-process model every time. Other C libraries: a warning, and
    only the first training of a process is reproducible."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.warning("no glibc mallopt: fastText trainings after the first in this process may not be reproducible")
        yield
        return
    mallopt(_M_PERTURB, 0xFF)
    try:
        yield
    finally:
        mallopt(_M_PERTURB, 0)


def _fasttext_train(lines_path: Path, p: TrainParams) -> Any:
    import fasttext

    try:
        with zeroed_allocations():
            return fasttext.train_supervised(input=str(lines_path), lr=p.lr, dim=p.dim, epoch=p.epoch,
                                             wordNgrams=p.word_ngrams, minCount=p.min_count, bucket=p.bucket,
                                             loss=p.loss, thread=p.thread, seed=p.seed, verbose=0)
    except RuntimeError as err:  # fastText's "Encountered NaN": the learning rate is too high
        raise ClassifierError(f"fastText training failed ({err}); try a lower lr than {p.lr}") from None


def _write_lines(path: Path, texts: Sequence[str], labels: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{LABEL_PREFIX}{int(y)} {t}\n" for t, y in zip(texts, labels))


def in_memory_model(ft: Any, name: str = "in-memory") -> QualityModel:
    labels = tuple(lab.removeprefix(LABEL_PREFIX) for lab in ft.get_labels())
    kind, values = kind_of_labels(labels, name)
    return QualityModel("", ft, kind, labels, values, name, "")


def _dataforge_version() -> str:
    from dataforge import __version__

    return __version__


def _fasttext_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fasttext-numpy2")
    except metadata.PackageNotFoundError:
        return "unknown"


def cross_validate(texts: list[str], labels: np.ndarray, p: TrainParams, work: Path) -> dict:
    """k-fold metrics of the unquantized model (each fold held out once)."""
    per_fold = []
    for j, valid in enumerate(stratified_folds(labels, p.folds, p.seed)):
        train = np.setdiff1d(np.arange(len(labels)), valid)
        path = work / f"fold{j}.txt"
        _write_lines(path, [texts[i] for i in train], labels[train])
        m = in_memory_model(_fasttext_train(path, p))
        per_fold.append(evaluate(m, [texts[i] for i in valid], labels[valid], p.positive_from))
        del m
    out: dict[str, Any] = {"folds": p.folds}
    for key in ("roc_auc", "precision", "recall", "f1", "accuracy"):
        vals = [f[key] for f in per_fold if f[key] is not None]
        if vals:
            out[key] = {"mean": round(float(np.mean(vals)), 4), "sd": round(float(np.std(vals, ddof=1)), 4)
                        if len(vals) > 1 else 0.0, "per_fold": vals}
    return out


def train_classifier(data: Labelled, params: TrainParams, out_dir: Path, name: str, description: str = "",
                     extra_card: dict | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Train, evaluate on a held-out split, quantize, and write ``model.ftz`` (or ``model.bin``
    with ``quantize: false``), ``card.json`` and ``card.md`` into ``out_dir``. Returns the card."""
    say = progress or (lambda msg: log.info("%s", msg))
    t0 = time.perf_counter()
    texts, labels, removed = clean_labelled(data)
    removed = {**data.removed, **removed}
    kind = label_kind(labels, data.kind, name) if len(labels) else data.kind
    train_idx, valid_idx = stratified_split(labels, params.valid_fraction, params.seed)
    if len(valid_idx) == 0 or len(train_idx) == 0:
        raise ClassifierError(f"{name}: too few rows ({len(labels)}) for a held-out split")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".train-", dir=out_dir) as tmp:
        work = Path(tmp)
        train_file = work / "train.txt"
        _write_lines(train_file, [texts[i] for i in train_idx], labels[train_idx])
        valid_texts, valid_labels = [texts[i] for i in valid_idx], labels[valid_idx]
        say(f"training on {len(train_idx)} rows, holding out {len(valid_idx)}")
        ft = _fasttext_train(train_file, params)
        seconds_train = time.perf_counter() - t0
        model = in_memory_model(ft, name)
        full_metrics = evaluate(model, valid_texts, valid_labels, params.positive_from)
        ft.save_model(str(work / "full.bin"))
        full_bytes = (work / "full.bin").stat().st_size
        quantized_metrics = None
        if params.quantize:
            say(f"quantizing (cutoff {params.cutoff}, dsub {params.dsub})")
            with zeroed_allocations():
                ft.quantize(input=str(train_file), retrain=params.retrain, cutoff=params.cutoff, dsub=params.dsub,
                            qnorm=params.qnorm, thread=params.thread, verbose=0)
            quantized_metrics = evaluate(in_memory_model(ft, name), valid_texts, valid_labels, params.positive_from)
            model_file = out_dir / "model.ftz"
            tmp_model = work / "model.ftz"
            ft.save_model(str(tmp_model))
        else:
            model_file = out_dir / "model.bin"
            tmp_model = work / "full.bin"
        del ft, model
        cv = None
        if params.folds >= 2:
            say(f"{params.folds}-fold cross-validation")
            cv = cross_validate(texts, labels, params, work)
        os.replace(tmp_model, model_file)
    counts = lambda idx: {str(k): int(v) for k, v in zip(*np.unique(labels[idx], return_counts=True))}
    card = {
        "name": name,
        "description": description,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataforge_version": _dataforge_version(),
        "fasttext_version": _fasttext_version(),
        "kind": kind,
        "score": ("quality_score = P(label 1), 0..1" if kind == "binary"
                  else "quality_score = expected rating sum_r r * p(r), 0..5"),
        "normalisation": "lowercase; punctuation and symbols split into tokens; whitespace and control "
                         "characters collapsed to one space (dataforge.curate.quality.normalize_texts)",
        "sources": data.sources,
        "data": {"rows_loaded": len(data.texts), "rows_used": len(labels), "removed": removed,
                 "label_counts": {"all": counts(np.arange(len(labels))), "train": counts(train_idx),
                                  "valid": counts(valid_idx)}},
        "split": {"valid_fraction": params.valid_fraction, "seed": params.seed, "stratified": True,
                  "train_rows": len(train_idx), "valid_rows": len(valid_idx)},
        "hyperparameters": params.model_dump(),
        "metrics": {"held_out": quantized_metrics or full_metrics, "held_out_unquantized": full_metrics,
                    **({"cross_validation": cv} if cv else {})},
        "model": {"file": model_file.name, "bytes": model_file.stat().st_size, "sha256": file_sha256(model_file),
                  "quantized": params.quantize, "unquantized_bytes": full_bytes},
        "train_seconds": round(seconds_train, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
        **(extra_card or {}),
    }
    write_card(out_dir, card)
    return card
