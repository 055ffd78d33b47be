"""Training fastText quality classifiers: sources, labels, a held-out split, metrics,
quantization and the model card (``dataforge classifier train``).

**Labels.** Either named *positive* and *negative* sources (DCLM's recipe: Li et al. 2024,
"DataComp-LM", trained a binary fastText model on high- vs low-quality sources), or a file of
labelled rows: 0/1 (binary) or teacher ratings 0..5 (FineWeb-Edu's hybrid method, Penedo et
al. 2024: an LLM rates a sample on a rubric, a small classifier learns the ratings).

**A source** is a JSON-lines, Parquet or JSON-array file, the column(s) holding the text (several
are joined with newlines, empty parts skipped), and optional filters. On the command line::

    FILE[:COLUMN[+COLUMN...]][?FIELD=VALUE,VALUE&FIELD=VALUE&in=FILE&not_in=FILE&limit=N]

e.g. ``pile_1k.jsonl:contents?metadata.pile_set_name=Wikipedia (en),USPTO Backgrounds`` (a
dotted field reaches into a nested object; values are compared as text, so a value cannot
contain ``,`` or ``&`` there: use a recipe). ``in=FILE`` keeps rows whose text (same columns)
also appears in FILE, ``not_in=FILE`` those whose text does not (Alpaca rows labelled by
membership in the AlpaGasus-filtered set). In a recipe YAML the same fields are spelled out
(:class:`SourceSpec`), and ``${DATAFORGE_SHARED_DATA}`` (default ``../shared/data`` beside the
repository, the variable the tests read) or any other ``${VAR}`` of the environment may start a
path; relative paths resolve against the recipe's folder.

**Training** (DCLM's defaults): supervised, softmax, word bigrams, lr 0.1, dim 100, 5 epochs,
min count 1, 2M hash buckets, on the normalised text of :mod:`dataforge.curate.quality`. One
thread with a fixed seed: fastText's Hogwild SGD is then deterministic (same data, same
model), which several threads are not; :func:`zeroed_allocations` removes the one other source
of run-to-run change (uninitialised memory in fastText's input matrix). Exact duplicate texts (after normalisation) are removed
first (a duplicate across the split would inflate the held-out metrics), and texts seen with
two different labels are removed as conflicts; the split is stratified by label.

**Quantization**: ``model.quantize`` with a vocabulary cutoff, product quantization of the
input matrix (``dsub``), normalised vectors and retraining (the ``.ftz`` format); the card
records the size and the held-out metrics before and after.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dataforge.curate.quality import (
    LABEL_PREFIX,
    RATINGS,
    QualityModel,
    file_sha256,
    kind_of_labels,
    normalize_texts,
)
from dataforge.tabular import InputError, Quarantined, read_text_table

log = logging.getLogger("dataforge.classifier")

SHARED_DATA_VAR = "DATAFORGE_SHARED_DATA"
REPO = Path(__file__).resolve().parents[2]


class ClassifierError(ValueError):
    """A problem a user can fix: a source, a recipe field, labels."""


def default_shared_data() -> Path:
    """``$DATAFORGE_SHARED_DATA``, else ``../shared/data`` beside the repository (as the tests)."""
    return Path(os.environ.get(SHARED_DATA_VAR, REPO.parent / "shared" / "data"))


# --- sources -----------------------------------------------------------------------------------

class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SourceSpec(_Spec):
    """Rows of one file: the text column(s) and the filters that select them."""

    file: str
    text: str | list[str] = "text"
    where: dict[str, list[str | int | float | bool]] = Field(default_factory=dict)
    in_: str | None = Field(None, alias="in")
    not_in: str | None = None
    limit: int | None = Field(None, ge=1)

    @field_validator("text")
    @classmethod
    def _some_columns(cls, v: str | list[str]) -> str | list[str]:
        if (isinstance(v, str) and not v) or (isinstance(v, list) and (not v or not all(v))):
            raise ValueError("name the text column(s)")
        return v

    @property
    def columns(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)

    def describe(self) -> str:
        """The command-line form of this source."""
        q = [f"{k}={','.join(str(x) for x in v)}" for k, v in self.where.items()]
        q += [f"in={self.in_}"] if self.in_ else []
        q += [f"not_in={self.not_in}"] if self.not_in else []
        q += [f"limit={self.limit}"] if self.limit else []
        return f"{self.file}:{'+'.join(self.columns)}" + (f"?{'&'.join(q)}" if q else "")


def parse_source(spec: str, default_column: str = "text") -> SourceSpec:
    """``FILE[:COL+COL][?FIELD=V,V&in=FILE&not_in=FILE&limit=N]`` as a :class:`SourceSpec`."""
    head, _, query = spec.partition("?")
    path, sep, cols = head.rpartition(":")
    if not sep or not path or "/" in cols or "\\" in cols:
        path, cols = head, ""
    if not path:
        raise ClassifierError(f"source {spec!r}: no file named")
    data: dict[str, Any] = {"file": path, "text": cols.split("+") if cols else default_column, "where": {}}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ClassifierError(f"source {spec!r}: {part!r} should be FIELD=VALUE[,VALUE...]")
        if key in ("in", "not_in"):
            data[key] = value
        elif key == "limit":
            if not value.isdigit():
                raise ClassifierError(f"source {spec!r}: limit should be a number, got {value!r}")
            data["limit"] = int(value)
        else:
            data["where"][key] = value.split(",")
    try:
        return SourceSpec.model_validate(data)
    except ValidationError as err:
        raise ClassifierError(f"source {spec!r}: " + _errors(err)) from None


def _errors(err: ValidationError, prefix: str = "") -> str:
    return "; ".join(f"{prefix}{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())


PathResolver = Callable[[str], Path]
_VAR = re.compile(r"\$\{(\w+)\}")


def path_resolver(base_dir: Path | None = None, shared_data: Path | None = None) -> PathResolver:
    """Expands ``${DATAFORGE_SHARED_DATA}`` (``shared_data`` or the default) and other
    ``${VAR}`` of the environment, ``~``, and resolves a relative path against ``base_dir``."""

    def resolve(p: str) -> Path:
        def var(m: re.Match) -> str:
            name = m.group(1)
            if name == SHARED_DATA_VAR:
                return str(shared_data or default_shared_data())
            if name not in os.environ:
                raise ClassifierError(f"{p}: environment variable {name} is not set")
            return os.environ[name]

        path = Path(os.path.expanduser(_VAR.sub(var, p)))
        return path if path.is_absolute() or base_dir is None else (base_dir / path)

    return resolve


def _read_json_array(path: Path, first_column: str) -> tuple[pa.Table, list[Quarantined]]:
    """A JSON file holding an array of records (Alpaca's format), which the JSON-lines reader
    of :mod:`dataforge.tabular` does not read: records that are not objects or lack the text
    column are quarantined with their index."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of records or JSON lines, found {type(data).__name__}")
    rows, numbers, bad = [], [], []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or not isinstance(rec.get(first_column), str):
            why = (f"expected a JSON object, got {type(rec).__name__}" if not isinstance(rec, dict)
                   else f"{first_column!r} is missing or not a string")
            bad.append(Quarantined(str(path), 0, why, json.dumps(rec)[:2000], record=i))
            continue
        rows.append(rec)
        numbers.append(i + 1)
    table = pa.Table.from_pylist(rows) if rows else pa.table({first_column: pa.array([], pa.string())})
    return table.append_column("source_row", pa.array(numbers, pa.int64())), bad


def read_records(path: Path, first_column: str) -> tuple[pa.Table, list[Quarantined]]:
    """Every record of a JSON-lines, Parquet or JSON-array file, with its own column names
    (JSON lines and Parquet through :func:`dataforge.tabular.read_text_table`)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        with open(path, encoding="utf-8-sig") as f:
            start = f.read(4096).lstrip()[:1]
        if start == "[":
            return _read_json_array(path, first_column)
    table, bad = read_text_table(path, first_column)
    names = {"text": first_column, "text_original": "text"} if first_column != "text" else {}
    return table.rename_columns([names.get(n, n) for n in table.column_names]), bad


def column_values(table: pa.Table, dotted: str, where: str) -> pa.ChunkedArray | pa.Array:
    """The values of a column, or of a field inside a struct column (``metadata.pile_set_name``)."""
    first, *rest = dotted.split(".")
    if first not in table.column_names:
        raise ClassifierError(f"{where}: no field {first!r} (fields: {', '.join(table.column_names)})")
    col: Any = table.column(first)
    for i, name in enumerate(rest):
        if not pa.types.is_struct(col.type):
            raise ClassifierError(f"{where}: {'.'.join([first, *rest[:i]])!r} is not an object, cannot take {name!r}")
        names = [col.type.field(j).name for j in range(col.type.num_fields)]
        if name not in names:
            raise ClassifierError(f"{where}: no field {name!r} in {'.'.join([first, *rest[:i]])!r} "
                                  f"(fields: {', '.join(names)})")
        col = pc.struct_field(col, name)
    return col


def joined_text(table: pa.Table, columns: Sequence[str], where: str) -> pa.Array:
    """The text of each row: the columns joined with newlines, empty or null parts skipped
    (a row with no text at all is null)."""
    parts = []
    for c in columns:
        col = column_values(table, c, where)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_null(col.type)):
            raise ClassifierError(f"{where}: text column {c!r} holds {col.type}, expected text")
        col = col.cast(pa.string())
        parts.append(pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col))
    joined = pc.binary_join_element_wise(*parts, "\n", null_handling="skip") if len(parts) > 1 else parts[0]
    joined = pc.if_else(pc.equal(joined, ""), pa.scalar(None, pa.string()), joined)
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


@dataclass
class SourceRows:
    texts: list[str]
    info: dict
    quarantined: list[Quarantined] = field(default_factory=list)


def _texts_of_file(path: Path, columns: Sequence[str], where: str) -> pa.Array:
    table, _ = read_records(path, columns[0])
    return pc.drop_null(joined_text(table, columns, where))


def load_source(spec: SourceSpec, resolve: PathResolver) -> SourceRows:
    """The texts a source selects, and what to say about it in a card (file, sha256, counts)."""
    where = spec.describe()
    path = resolve(spec.file)
    try:
        table, bad = read_records(path, spec.columns[0])
    except InputError as err:
        raise ClassifierError(str(err)) from None
    n_read = table.num_rows
    texts = joined_text(table, spec.columns, where)
    keep = pc.is_valid(texts)
    for fld, values in spec.where.items():
        col = column_values(table, fld, where).cast(pa.string())
        keep = pc.and_(keep, pc.fill_null(pc.is_in(col, value_set=pa.array([str(v) for v in values])), False))
    for other, wanted in ((spec.in_, True), (spec.not_in, False)):
        if other:
            try:
                others = _texts_of_file(resolve(other), spec.columns, f"{where} ({other})")
            except InputError as err:
                raise ClassifierError(str(err)) from None
            member = pc.fill_null(pc.is_in(texts, value_set=pc.unique(others)), False)
            keep = pc.and_(keep, member if wanted else pc.invert(member))
    selected = pc.filter(texts, keep).to_pylist()
    if spec.limit:
        selected = selected[: spec.limit]
    info = {"source": where, "file": str(path), "sha256": file_sha256(path), "rows_read": n_read,
            "rows_selected": len(selected), "quarantined": len(bad)}
    for other in filter(None, (spec.in_, spec.not_in)):
        info.setdefault("membership_files", []).append({"file": str(resolve(other)), "sha256": file_sha256(resolve(other))})
    if not selected:
        raise ClassifierError(f"source {where}: selects no rows of {path} ({n_read} read)")
    return SourceRows(selected, info, bad)


# --- labelled data ---------------------------------------------------------------------------

Kind = Literal["auto", "binary", "rating"]


@dataclass
class Labelled:
    """Texts with integer labels (0/1, or ratings 0..5) and where they came from."""

    texts: list[str]
    labels: np.ndarray
    kind: str
    sources: list[dict]
    removed: dict[str, int] = field(default_factory=dict)


def _kind_for(labels: np.ndarray, kind: Kind, where: str) -> str:
    values = set(np.unique(labels).tolist())
    if kind == "auto":
        kind = "binary" if values <= {0, 1} else "rating"
    allowed = {0, 1} if kind == "binary" else set(RATINGS)
    if not values <= allowed:
        raise ClassifierError(f"{where}: labels {sorted(values)} are not all in {sorted(allowed)} ({kind} labels)")
    if len(values) < 2:
        raise ClassifierError(f"{where}: every row has label {values.pop() if values else None}; "
                              "a classifier needs at least two labels")
    return kind


def labelled_from_sources(positive: Sequence[SourceSpec], negative: Sequence[SourceSpec],
                          resolve: PathResolver) -> Labelled:
    """Label 1 for every text of the positive sources, 0 for the negative ones."""
    if not positive or not negative:
        raise ClassifierError("name at least one positive and one negative source")
    texts: list[str] = []
    labels: list[int] = []
    infos = []
    for label, specs in ((1, positive), (0, negative)):
        for spec in specs:
            rows = load_source(spec, resolve)
            texts += rows.texts
            labels += [label] * len(rows.texts)
            infos.append({**rows.info, "label": label})
    return Labelled(texts, np.array(labels, np.int64), "binary", infos)


def labelled_from_file(path: Path, text: str | Sequence[str] = "text", label_column: str = "label",
                       kind: Kind = "auto") -> Labelled:
    """Rows of a file with a label column: 0/1 or bool (binary) or integer ratings 0..5.
    Rows without a label (null, e.g. a teacher failure) are skipped and counted."""
    columns = [text] if isinstance(text, str) else list(text)
    try:
        table, bad = read_records(path, columns[0])
    except InputError as err:
        raise ClassifierError(str(err)) from None
    where = f"{path}"
    texts = joined_text(table, columns, where)
    lab = column_values(table, label_column, where)
    if pa.types.is_boolean(lab.type):
        lab = lab.cast(pa.int64())
    if pa.types.is_floating(lab.type):
        whole = pc.fill_null(pc.equal(pc.floor(lab), lab), True)
        if not pc.all(whole).as_py():
            raise ClassifierError(f"{where}: column {label_column!r} holds fractional labels; expected integers")
        lab = lab.cast(pa.int64())
    if not pa.types.is_integer(lab.type):
        raise ClassifierError(f"{where}: column {label_column!r} is {lab.type}; expected integer or boolean labels")
    ok = pc.and_(pc.is_valid(texts), pc.is_valid(lab))
    n_unlabelled = int(pc.sum(pc.invert(pc.is_valid(lab))).as_py() or 0)
    labels = pc.filter(lab, ok).to_numpy(zero_copy_only=False).astype(np.int64)
    kind = _kind_for(labels, kind, where)
    info = {"source": f"{path}:{'+'.join(columns)} (labels: {label_column})", "file": str(path),
            "sha256": file_sha256(path), "rows_read": table.num_rows, "rows_selected": len(labels),
            "quarantined": len(bad), "unlabelled": n_unlabelled}
    return Labelled(pc.filter(texts, ok).to_pylist(), labels, kind, [info], {"unlabelled": n_unlabelled})


def clean_labelled(data: Labelled) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """Normalised texts and labels without empty texts, exact duplicates (first kept) or
    texts seen with two labels (all copies removed), and the counts removed."""
    norm = normalize_texts(pa.array(data.texts, pa.string())).to_pylist()
    first: dict[str, int] = {}
    seen: dict[str, set[int]] = {}
    n_empty = 0
    for i, t in enumerate(norm):
        if not t:
            n_empty += 1
            continue
        seen.setdefault(t, set()).add(int(data.labels[i]))
        first.setdefault(t, i)
    conflicted = {t for t, labs in seen.items() if len(labs) > 1}
    n_conflicts = sum(1 for t in norm if t in conflicted)  # every copy of a conflicting text
    removed = {"empty": n_empty, "conflicts": n_conflicts,
               "duplicates": len(norm) - n_empty - len(first) - (n_conflicts - len(conflicted))}
    keep = [i for t, i in first.items() if t not in conflicted]
    keep.sort()
    return [norm[i] for i in keep], data.labels[keep], removed


def stratified_split(labels: np.ndarray, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) row indices, each label split in the same proportion (at least one
    valid row for a label with two or more rows), seeded."""
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_valid = min(len(idx) - 1, max(1, round(valid_fraction * len(idx)))) if len(idx) > 1 else 0
        valid.append(idx[:n_valid])
        train.append(idx[n_valid:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(valid))


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint folds of row indices covering every row, each label spread evenly."""
    rng = np.random.default_rng(seed)
    folds: list[list[np.ndarray]] = [[] for _ in range(k)]
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        for j, part in enumerate(np.array_split(idx, k)):
            folds[j].append(part)
    return [np.sort(np.concatenate(f)) for f in folds]


# --- metrics ---------------------------------------------------------------------------------

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


# --- training --------------------------------------------------------------------------------

class TrainParams(_Spec):
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
    kind = _kind_for(labels, data.kind, name) if len(labels) else data.kind
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


# --- model cards -----------------------------------------------------------------------------

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


# --- recipes ---------------------------------------------------------------------------------

class LabelledSpec(_Spec):
    file: str
    text: str | list[str] = "text"
    label_column: str = "label"
    kind: Kind = "auto"


class Recipe(_Spec):
    """``classifiers/recipes/*.yaml``: which data, which labels, which hyperparameters."""

    name: str
    description: str = ""
    licence: str | None = None
    positive: list[SourceSpec] = Field(default_factory=list)
    negative: list[SourceSpec] = Field(default_factory=list)
    labelled: LabelledSpec | None = None
    params: TrainParams = TrainParams()

    @field_validator("name")
    @classmethod
    def _plain(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("a plain name: letters, digits, '_', '-', '.'")
        return v

    @model_validator(mode="after")
    def _labels(self) -> Recipe:
        if self.labelled is not None and (self.positive or self.negative):
            raise ValueError("give labelled, or positive and negative sources, not both")
        if self.labelled is None and not (self.positive and self.negative):
            raise ValueError("give positive and negative sources (or labelled)")
        return self


def load_recipe(path: Path) -> Recipe:
    if not path.exists():
        raise ClassifierError(f"{path}: recipe not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ClassifierError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ClassifierError(f"{path}: a recipe is a mapping of fields")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise ClassifierError(f"{path}: " + _errors(err)) from None


def labelled_from_recipe(recipe: Recipe, resolve: PathResolver) -> Labelled:
    if recipe.labelled is not None:
        lab = recipe.labelled
        return labelled_from_file(resolve(lab.file), lab.text, lab.label_column, lab.kind)
    return labelled_from_sources(recipe.positive, recipe.negative, resolve)
