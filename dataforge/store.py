"""Runs on disk: layout, shard writer and reader, manifests, atomic commit, ``run.json``.

Layout under a data root::

    runs/<run id>/run.json                        config snapshot, versions, stage status, counts
    runs/<run id>/<stage>/part-*.parquet          kept rows
    runs/<run id>/<stage>/_manifest.json          written last: the stage's commit
    runs/<run id>/rejected/<stage>/part-*.parquet dropped rows with drop_stage, drop_reason
    runs/<run id>/export/<name>/                  hand-off dataset
    cache/                                        teacher request cache
    quarantine/                                   (per run) malformed input rows

A shard is written under a temporary name (``.tmp-*``) and renamed when complete; the
manifest, which lists the files with rows, bytes and sha256, is written after all shards
and is itself renamed into place. Readers go through the manifest only, so a crash at any
moment leaves nothing half-written visible: a stage without a manifest is not done, and
its directory is cleared before the stage runs again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "_manifest.json"
RUN_RECORD = "run.json"
TMP_PREFIX = ".tmp-"


class StoreError(RuntimeError):
    pass


class StageNotCommitted(StoreError):
    """A stage's output was asked for but the stage has no manifest (never ran, or crashed)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary sibling, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def schema_to_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_b64(data: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(data)))


@dataclass
class FileEntry:
    name: str
    rows: int
    bytes: int
    sha256: str

    def as_dict(self) -> dict:
        return {"name": self.name, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256}


class ShardWriter:
    """Write a stream of tables as Parquet shards of at most ``max_rows`` rows (zstd).

    Each shard is written to ``.tmp-<name>`` and renamed to ``<prefix>-NNNNN.parquet`` once
    closed; :meth:`close` returns the entries for the manifest. Nothing this writer produces is
    visible to readers until the stage's manifest lists it.
    """

    def __init__(self, directory: Path, *, prefix: str = "part", max_rows: int = 100_000,
                 schema: pa.Schema | None = None, compression: str = "zstd"):
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_rows = max_rows
        self.schema = schema
        self.compression = compression
        self.entries: list[FileEntry] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._rows_in_shard = 0

    def _open(self) -> None:
        name = f"{self.prefix}-{len(self.entries):05d}.parquet"
        self._tmp = self.directory / f"{TMP_PREFIX}{name}"
        assert self.schema is not None
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression=self.compression)
        self._rows_in_shard = 0

    def _finish_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        assert self._tmp is not None
        final = self.directory / self._tmp.name[len(TMP_PREFIX):]
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, final)
        self.entries.append(FileEntry(final.name, self._rows_in_shard, final.stat().st_size, sha256_file(final)))
        self._writer = None
        self._tmp = None

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            table = table.select(self.schema.names).cast(self.schema)
        offset = 0
        while offset < table.num_rows:
            if self._writer is None:
                self._open()
            take = min(self.max_rows - self._rows_in_shard, table.num_rows - offset)
            assert self._writer is not None
            self._writer.write_table(table.slice(offset, take))
            self._rows_in_shard += take
            offset += take
            if self._rows_in_shard >= self.max_rows:
                self._finish_shard()

    def close(self) -> list[FileEntry]:
        self._finish_shard()
        return self.entries

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # leave nothing behind on error
            if self._writer is not None:
                self._writer.close()
            if self._tmp is not None and self._tmp.exists():
                self._tmp.unlink()


def write_manifest(directory: Path, entries: Sequence[FileEntry], schema: pa.Schema, **extra: Any) -> dict:
    """Commit a directory of shards: the manifest is written last, atomically."""
    manifest = {
        "files": [e.as_dict() for e in entries],
        "rows": sum(e.rows for e in entries),
        "bytes": sum(e.bytes for e in entries),
        "schema": [f"{f.name}: {f.type}" for f in schema],
        "schema_ipc": schema_to_b64(schema),
        "committed_at": datetime.now(timezone.utc).isoformat(),
        **extra,
    }
    atomic_write_text(Path(directory) / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def read_manifest(directory: Path) -> dict | None:
    p = Path(directory) / MANIFEST
    if not p.exists():
        return None
    return json.loads(p.read_text())


def clear_directory(directory: Path) -> None:
    """Remove a stage directory's previous, uncommitted or superseded content."""
    d = Path(directory)
    if d.exists():
        shutil.rmtree(d)


def manifest_files(directory: Path) -> list[Path]:
    m = read_manifest(directory)
    if m is None:
        raise StageNotCommitted(f"{directory}: no {MANIFEST} (the stage has not completed)")
    return [Path(directory) / f["name"] for f in m["files"]]


def manifest_schema(directory: Path) -> pa.Schema:
    m = read_manifest(directory)
    if m is None:
        raise StageNotCommitted(f"{directory}: no {MANIFEST} (the stage has not completed)")
    return schema_from_b64(m["schema_ipc"])


def iter_batches(directory: Path, columns: list[str] | None = None, batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
    """Stream the committed rows of a stage directory, shard by shard."""
    for path in manifest_files(directory):
        pf = pq.ParquetFile(path)
        yield from pf.iter_batches(batch_size=batch_size, columns=columns)


def read_table(directory: Path, columns: list[str] | None = None) -> pa.Table:
    """All committed rows of a stage directory as one table (empty stages keep their schema)."""
    schema = manifest_schema(directory)
    files = manifest_files(directory)
    if not files:
        t = schema.empty_table()
        return t.select(columns) if columns else t
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in files], promote_options="default")


def input_fingerprint(manifests: Iterable[dict | None]) -> str:
    """Fingerprint of a stage's inputs: the sha256 of every input shard, in order."""
    h = hashlib.sha256()
    for m in manifests:
        if m is None:
            h.update(b"<none>")
            continue
        for f in m["files"]:
            h.update(f["sha256"].encode())
        h.update(b"|")
    return h.hexdigest()[:16]


def package_versions() -> dict[str, str]:
    names = ["dataforge", "pyarrow", "duckdb", "polars", "prefect", "datasketch", "openai", "pydantic",
             "llama_cpp_python", "fasttext-numpy2"]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class StageStatus:
    status: str = "pending"  # pending | running | completed | skipped | failed
    rows_in: int | None = None
    rows_kept: int | None = None
    rows_dropped: int | None = None
    seconds: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    teacher: dict | None = None
    extra: dict | None = None


@dataclass
class RunRecord:
    """The contents of ``run.json``. Holds env-var names, never secret values."""

    run_id: str
    name: str
    created_at: str
    status: str = "running"
    config: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    stages: dict[str, StageStatus] = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)
    updated_at: str | None = None
    seconds: float | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        d = self.__dict__.copy()
        d["stages"] = {k: v.__dict__.copy() for k, v in self.stages.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        d = dict(d)
        d["stages"] = {k: StageStatus(**v) for k, v in d.get("stages", {}).items()}
        return cls(**d)


class Run:
    """One run directory under a data root."""

    def __init__(self, data_root: str | os.PathLike, run_id: str):
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"invalid run id {run_id!r}")
        self.data_root = Path(data_root).resolve()
        self.run_id = run_id
        self.dir = self.data_root / "runs" / run_id
        self._lock = threading.Lock()

    # --- layout -------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.dir / stage

    def rejected_dir(self, stage: str) -> Path:
        return self.dir / "rejected" / stage

    def quarantine_dir(self) -> Path:
        return self.dir / "quarantine"

    def export_dir(self, name: str) -> Path:
        return self.dir / "export" / name

    @property
    def cache_dir(self) -> Path:
        return self.data_root / "cache"

    @property
    def record_path(self) -> Path:
        return self.dir / RUN_RECORD

    # --- run.json -----------------------------------------------------------------------
    def exists(self) -> bool:
        return self.record_path.exists()

    def load_record(self) -> RunRecord:
        if not self.record_path.exists():
            raise StoreError(f"{self.record_path}: no such run")
        return RunRecord.from_dict(json.loads(self.record_path.read_text()))

    def save_record(self, rec: RunRecord) -> None:
        with self._lock:
            rec.updated_at = datetime.now(timezone.utc).isoformat()
            atomic_write_text(self.record_path, json.dumps(rec.as_dict(), indent=2, default=str))

    # --- stages -------------------------------------------------------------------------
    def committed(self, stage: str) -> dict | None:
        return read_manifest(self.stage_dir(stage))

    def committed_rejected(self, stage: str) -> dict | None:
        return read_manifest(self.rejected_dir(stage))

    def is_done(self, stage: str, fingerprint: str, config_hash: str) -> bool:
        """A stage is done when its manifest exists for the same input and config."""
        m = self.committed(stage)
        return bool(m and m.get("input_fingerprint") == fingerprint and m.get("config_hash") == config_hash)

    def begin_stage(self, stage: str) -> None:
        """Clear whatever a previous, interrupted attempt of this stage left behind."""
        clear_directory(self.stage_dir(stage))
        clear_directory(self.rejected_dir(stage))
        self.stage_dir(stage).mkdir(parents=True)
        self.rejected_dir(stage).mkdir(parents=True)

    def commit_stage(self, stage: str, kept: Sequence[FileEntry], rejected: Sequence[FileEntry],
                     kept_schema: pa.Schema, rejected_schema: pa.Schema, *, fingerprint: str,
                     config_hash: str, extra: dict | None = None) -> dict:
        """Write the rejected manifest, then the kept one: the kept manifest is the commit."""
        write_manifest(self.rejected_dir(stage), rejected, rejected_schema, stage=stage, kind="rejected",
                       input_fingerprint=fingerprint, config_hash=config_hash)
        return write_manifest(self.stage_dir(stage), kept, kept_schema, stage=stage, kind="kept",
                              input_fingerprint=fingerprint, config_hash=config_hash, **(extra or {}))

    def read(self, stage: str, columns: list[str] | None = None) -> pa.Table:
        return read_table(self.stage_dir(stage), columns)

    def read_rejected(self, stage: str) -> pa.Table:
        return read_table(self.rejected_dir(stage))


def list_runs(data_root: str | os.PathLike) -> list[Run]:
    """Runs under a data root, oldest first (by run.json's created_at)."""
    root = Path(data_root) / "runs"
    if not root.exists():
        return []
    runs = []
    for d in root.iterdir():
        rec = d / RUN_RECORD
        if rec.exists():
            try:
                created = json.loads(rec.read_text()).get("created_at", "")
            except json.JSONDecodeError:
                continue
            runs.append((created, d.name))
    return [Run(data_root, name) for _, name in sorted(runs)]


def latest_run(data_root: str | os.PathLike) -> Run:
    runs = list_runs(data_root)
    if not runs:
        raise StoreError(f"no runs under {Path(data_root).resolve() / 'runs'}")
    return runs[-1]


def new_run_id(name: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{name}-{stamp}-{uuid.uuid4().hex[:6]}"
