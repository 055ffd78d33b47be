"""Labelled data: texts with integer labels, from positive and negative sources or from a
labelled file; cleaning (empty texts, duplicates, conflicting labels) and stratified splits.

Labels are 0/1 (binary) or teacher ratings 0..5 (FineWeb-Edu's hybrid method, Penedo et al.
2024: an LLM rates a sample on a rubric, a small classifier learns the ratings). Exact duplicate
texts (after normalisation) are removed (a duplicate across the split would inflate the held-out
metrics), and texts seen with two different labels are removed as conflicts; the split is
stratified by label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataforge.curate.classifier.common import ClassifierError
from dataforge.curate.classifier.sources import (
    PathResolver,
    SourceSpec,
    column_values,
    joined_text,
    load_source,
    read_records,
)
from dataforge.curate.quality import RATINGS, normalize_texts
from dataforge.hashing import file_sha256
from dataforge.tabular import InputError


Kind = Literal["auto", "binary", "rating"]


@dataclass
class Labelled:
    """Texts with integer labels (0/1, or ratings 0..5) and where they came from."""

    texts: list[str]
    labels: np.ndarray
    kind: str
    sources: list[dict]
    removed: dict[str, int] = field(default_factory=dict)


def label_kind(labels: np.ndarray, kind: Kind, where: str) -> str:
    """The kind of ``labels``, ``"binary"`` or ``"rating"`` (``kind="auto"``: binary when every
    label is 0 or 1), checked: every label allowed for that kind, and at least two labels."""
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
    kind = label_kind(labels, kind, where)
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


MIN_RUN_LABELS = 5  # of each label: a held-out split and a model need a few of both


def labelled_from_run(run) -> Labelled:
    """The human labels of a run (``dataforge browse``: ``<run>/labels/``): each sample's latest
    label, good as 1 and bad as 0, its text joined from the run's rows by id (kept or dropped,
    any stage). Refused with fewer than :data:`MIN_RUN_LABELS` of either label."""
    import hashlib

    from dataforge.browse.labels import CURRENT_LABELS_SQL, label_files
    from dataforge.warehouse import connect, fetch_arrow

    files = label_files(run)
    hint = f"label samples with `dataforge browse {run.run_id}` (+ good, - bad)"
    if not files:
        raise ClassifierError(f"run {run.run_id} has no labels ({run.dir / 'labels'} holds no label file): {hint}")
    con = connect(run)
    try:
        rows = fetch_arrow(con, f"""
            WITH cur AS ({CURRENT_LABELS_SQL.format(labels='labels')}),
                 texts AS (SELECT id, min(text) AS text FROM (
                               SELECT id, text FROM kept_rows WHERE id IN (SELECT id FROM cur)
                               UNION ALL SELECT id, text FROM rejected_rows WHERE id IN (SELECT id FROM cur))
                           GROUP BY id)
            SELECT cur.id, cur.label, texts.text FROM cur LEFT JOIN texts USING (id) ORDER BY cur.id""").to_pylist()
    finally:
        con.close()
    matched = [r for r in rows if r["text"] is not None]
    good = sum(1 for r in matched if r["label"] == "good")
    bad = sum(1 for r in matched if r["label"] == "bad")
    if good < MIN_RUN_LABELS or bad < MIN_RUN_LABELS:
        raise ClassifierError(f"run {run.run_id} has {good} good and {bad} bad labelled samples; training needs at "
                              f"least {MIN_RUN_LABELS} of each: {hint}")
    digest = hashlib.sha256()
    for p in files:
        digest.update(file_sha256(p).encode())
    unmatched = len(rows) - len(matched)
    info = {"source": f"labels of run {run.run_id} ({len(files)} label files)", "run": run.run_id,
            "sha256": digest.hexdigest(), "rows_read": len(rows), "rows_selected": len(matched), "good": good,
            "bad": bad, "unmatched": unmatched, "label": "good=1, bad=0"}
    return Labelled([r["text"] for r in matched], np.array([1 if r["label"] == "good" else 0 for r in matched], np.int64),
                    "binary", [info], {"unmatched": unmatched} if unmatched else {})
