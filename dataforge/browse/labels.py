"""Human labels of samples: good or bad, appended as small Parquet files under the run.

A label is one row (``id`` of the sample, ``label``, ``labelled_at``, ``user``, ``run_id``,
``label_id``); each batch of labels is a new file ``<run>/labels/labels-<UTC time>-<random>.parquet``
written whole or not at all (:func:`dataforge.atomic.write_bytes_atomic`: a temporary name,
fsync, rename), so nothing is ever rewritten and two writers never collide. The files of the
folder are read as one table: the warehouse's ``labels`` view (``dataforge sql "select * from
labels"``), the sample browser, and ``dataforge classifier train --labels RUN``.

Labels are events: the latest label of a sample is its label (:data:`CURRENT_LABELS_SQL`), and a
``clear`` label takes a sample's label back. The shards are never touched.
"""

from __future__ import annotations

import getpass
import os
import secrets
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataforge.atomic import write_bytes_atomic
from dataforge.errors import DataforgeError
from dataforge.store import Run

LABELS_DIR = "labels"
LABEL_VALUES = ("good", "bad", "clear")  # "clear" takes a sample's label back
LABEL_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=False),
    pa.field("labelled_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("user", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("label_id", pa.string(), nullable=False),
])

# The label of each sample now: its latest label event, samples whose latest is "clear" left out.
# `{labels}` is a relation with LABEL_SCHEMA's columns (the warehouse's `labels` view).
CURRENT_LABELS_SQL = """
SELECT id, label, labelled_at, "user" FROM (
    SELECT id, arg_max(label, (labelled_at, label_id)) AS label, max(labelled_at) AS labelled_at,
           arg_max("user", (labelled_at, label_id)) AS "user"
    FROM {labels} GROUP BY id)
WHERE label <> 'clear'
"""


class LabelError(DataforgeError, ValueError):
    """A label that cannot be written as asked (an unknown value, an empty id, a remote run)."""


def default_user() -> str:
    """``$DATAFORGE_USER``, else the login name."""
    try:
        return os.environ.get("DATAFORGE_USER") or getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"


def labels_dir(run: Run) -> Path:
    return Path(run.dir) / LABELS_DIR


def label_files(run: Run) -> list[Path]:
    """The run's label files, oldest first (their names start with the time they were written)."""
    if not run.is_local:
        return []
    folder = labels_dir(run)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("labels-*.parquet") if p.is_file())


def write_labels(run: Run, labels: Iterable[tuple[str, str]], user: str | None = None,
                 now: datetime | None = None) -> Path:
    """Append ``(sample id, label)`` pairs as one new label file; returns its path."""
    run.require_local("labels")
    pairs = list(labels)
    if not pairs:
        raise LabelError("no labels to write")
    for sample_id, label in pairs:
        if label not in LABEL_VALUES:
            raise LabelError(f"label must be one of {', '.join(LABEL_VALUES)}, got {label!r}")
        if not isinstance(sample_id, str) or not sample_id.strip():
            raise LabelError("a label needs the sample's id")
    at = now or datetime.now(UTC)
    who = user or default_user()
    table = pa.table({"id": [p[0] for p in pairs], "label": [p[1] for p in pairs], "labelled_at": [at] * len(pairs),
                      "user": [who] * len(pairs), "run_id": [run.run_id] * len(pairs),
                      "label_id": [uuid.uuid4().hex for _ in pairs]}, schema=LABEL_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    folder = labels_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"labels-{at.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(4)}.parquet"
    write_bytes_atomic(path, sink.getvalue().to_pybytes())
    return path


def read_labels(run: Run) -> pa.Table:
    """Every label event of the run, oldest file first (an empty table when there is none)."""
    tables = [pq.read_table(p).select(LABEL_SCHEMA.names).cast(LABEL_SCHEMA) for p in label_files(run)]
    return pa.concat_tables(tables) if tables else LABEL_SCHEMA.empty_table()
