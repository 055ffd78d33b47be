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

The data root goes through pyarrow's filesystem layer: a local path (or ``file://`` URI), any
URI ``pyarrow.fs.FileSystem.from_uri`` understands (``s3://bucket/prefix``, ``gs://...``,
``hdfs://...``), one only fsspec knows (``memory://``, ...), or a ``pyarrow.fs.FileSystem`` object (wrap it in ``SubTreeFileSystem`` to root
it at a prefix). A local root keeps the local code path above (temporary names, ``fsync``,
``os.replace``). On any other filesystem there is no atomic rename, so a shard is written once,
whole, under a key unique to its writer (``part-00000-00000.<attempt>.parquet``) and becomes
visible only when the manifest that lists it is written; the manifest (and ``run.json``) is
written under a temporary key and then moved over the final one. Readers trust only the
manifest, so a crash between the data and the manifest leaves no visible shard, and a stray
shard of a crashed attempt is removed when the stage begins again.
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
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dataforge.errors import DataforgeError
from dataforge.hashing import file_sha256

MANIFEST = "_manifest.json"
RUN_RECORD = "run.json"
TMP_PREFIX = ".tmp-"


class StoreError(DataforgeError, RuntimeError):
    """A run or stage output that cannot be used as asked (unknown run, no manifest, bad data root)."""


class StageNotCommitted(StoreError):
    """A stage's output was asked for but the stage has no manifest (never ran, or crashed)."""


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


# --- remote filesystems (None means the local one, through the local code path) -------------

def _fs_exists(fs: pafs.FileSystem, path: PurePosixPath | str) -> bool:
    return fs.get_file_info(str(path)).type != pafs.FileType.NotFound


def _fs_read_text(fs: pafs.FileSystem, path: PurePosixPath | str) -> str:
    with fs.open_input_stream(str(path)) as f:
        return f.read().decode("utf-8")


def _fs_put(fs: pafs.FileSystem, path: PurePosixPath | str, data: bytes) -> None:
    """One whole object: an object store shows it complete or not at all."""
    with fs.open_output_stream(str(path)) as f:
        f.write(data)


def _fs_atomic_put(fs: pafs.FileSystem, path: PurePosixPath, data: bytes) -> None:
    """Write under a temporary key, then move it over ``path`` (a server-side copy on object
    stores, a rename on HDFS): a reader of ``path`` sees the old or the new content, whole."""
    fs.create_dir(str(path.parent), recursive=True)
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}"
    _fs_put(fs, tmp, data)
    try:
        fs.move(str(tmp), str(path))
    except BaseException:
        if _fs_exists(fs, tmp):
            fs.delete_file(str(tmp))
        raise


def write_text(path: Path | PurePosixPath, text: str, filesystem: pafs.FileSystem | None = None) -> None:
    """:func:`atomic_write_text` on the local filesystem, else a temporary key moved into place."""
    if filesystem is None:
        atomic_write_text(Path(path), text)
    else:
        _fs_atomic_put(filesystem, PurePosixPath(path), text.encode("utf-8"))


def read_text(path: Path | PurePosixPath, filesystem: pafs.FileSystem | None = None) -> str | None:
    """The text of ``path``, or None when it does not exist."""
    if filesystem is None:
        p = Path(path)
        return p.read_text() if p.exists() else None
    if not _fs_exists(filesystem, path):
        return None
    return _fs_read_text(filesystem, path)


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
    visible to readers until the stage's manifest lists it. With a ``filesystem`` (a data root
    that is not local) a shard is built in memory and put whole as
    ``<prefix>-NNNNN.<attempt>.parquet``, its size and sha256 taken from the bytes sent.
    """

    def __init__(self, directory: Path, *, prefix: str = "part", max_rows: int = 100_000,
                 schema: pa.Schema | None = None, compression: str = "zstd",
                 filesystem: pafs.FileSystem | None = None):
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        self.filesystem = filesystem
        if filesystem is None:
            self.directory = Path(directory)
            self.directory.mkdir(parents=True, exist_ok=True)
        else:  # a shard is put whole under a name unique to this writer, never renamed
            self.directory = PurePosixPath(directory)
            filesystem.create_dir(str(self.directory), recursive=True)
            self._attempt = uuid.uuid4().hex[:8]
            self._sink: pa.BufferOutputStream | None = None
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
        assert self.schema is not None
        self._rows_in_shard = 0
        if self.filesystem is not None:
            self._sink = pa.BufferOutputStream()
            self._writer = pq.ParquetWriter(self._sink, self.schema, compression=self.compression)
            return
        self._tmp = self.directory / f"{TMP_PREFIX}{name}"
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression=self.compression)

    def _finish_remote_shard(self) -> None:
        assert self._writer is not None and self._sink is not None and self.filesystem is not None
        self._writer.close()
        data = self._sink.getvalue()
        name = f"{self.prefix}-{len(self.entries):05d}.{self._attempt}.parquet"
        _fs_put(self.filesystem, self.directory / name, data)
        self.entries.append(FileEntry(name, self._rows_in_shard, data.size, hashlib.sha256(data).hexdigest()))
        self._writer = None
        self._sink = None

    def _finish_shard(self) -> None:
        if self._writer is None:
            return
        if self.filesystem is not None:
            self._finish_remote_shard()
            return
        self._writer.close()
        assert self._tmp is not None
        final = self.directory / self._tmp.name[len(TMP_PREFIX):]
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, final)
        self.entries.append(FileEntry(final.name, self._rows_in_shard, final.stat().st_size, file_sha256(final)))
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
            if self.filesystem is not None:  # the shard never left memory
                self._writer = self._sink = None
                return
            if self._tmp is not None and self._tmp.exists():
                self._tmp.unlink()


def write_manifest(directory: Path, entries: Sequence[FileEntry], schema: pa.Schema, *,
                   filesystem: pafs.FileSystem | None = None, **extra: Any) -> dict:
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
    write_text(_join(directory, MANIFEST, filesystem), json.dumps(manifest, indent=2), filesystem)
    return manifest


def _join(directory: Path | PurePosixPath, name: str, filesystem: pafs.FileSystem | None) -> Path | PurePosixPath:
    return (Path(directory) if filesystem is None else PurePosixPath(directory)) / name


def read_manifest(directory: Path, filesystem: pafs.FileSystem | None = None) -> dict | None:
    text = read_text(_join(directory, MANIFEST, filesystem), filesystem)
    return None if text is None else json.loads(text)


def clear_directory(directory: Path, filesystem: pafs.FileSystem | None = None) -> None:
    """Remove a stage directory's previous, uncommitted or superseded content."""
    if filesystem is not None:
        if _fs_exists(filesystem, directory):
            filesystem.delete_dir(str(directory))
        return
    d = Path(directory)
    if d.exists():
        shutil.rmtree(d)


def manifest_files(directory: Path, filesystem: pafs.FileSystem | None = None) -> list[Path]:
    m = read_manifest(directory, filesystem)
    if m is None:
        raise StageNotCommitted(f"{directory}: no {MANIFEST} (the stage has not completed)")
    return [_join(directory, f["name"], filesystem) for f in m["files"]]  # type: ignore[misc]


def manifest_schema(directory: Path, filesystem: pafs.FileSystem | None = None) -> pa.Schema:
    m = read_manifest(directory, filesystem)
    if m is None:
        raise StageNotCommitted(f"{directory}: no {MANIFEST} (the stage has not completed)")
    return schema_from_b64(m["schema_ipc"])


def read_parquet(path: Path | PurePosixPath, columns: list[str] | None = None,
                 filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """One shard, from the local filesystem or ``filesystem``."""
    if filesystem is None:
        return pq.read_table(path, columns=columns)
    return pq.read_table(str(path), columns=columns, filesystem=filesystem)


def read_parquet_schema(path: Path | PurePosixPath, filesystem: pafs.FileSystem | None = None) -> pa.Schema:
    if filesystem is None:
        return pq.read_schema(path)
    return pq.read_schema(str(path), filesystem=filesystem)


def iter_batches(directory: Path, columns: list[str] | None = None, batch_size: int = 8192,
                 filesystem: pafs.FileSystem | None = None) -> Iterator[pa.RecordBatch]:
    """Stream the committed rows of a stage directory, shard by shard."""
    for path in manifest_files(directory, filesystem):
        if filesystem is None:
            pf = pq.ParquetFile(path)
            yield from pf.iter_batches(batch_size=batch_size, columns=columns)
        else:
            with filesystem.open_input_file(str(path)) as f:
                yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns)


def read_table(directory: Path, columns: list[str] | None = None,
               filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """All committed rows of a stage directory as one table (empty stages keep their schema)."""
    schema = manifest_schema(directory, filesystem)
    files = manifest_files(directory, filesystem)
    if not files:
        t = schema.empty_table()
        return t.select(columns) if columns else t
    return pa.concat_tables([read_parquet(p, columns, filesystem) for p in files], promote_options="default")


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


def resolve_data_root(data_root: Any) -> tuple[pafs.FileSystem | None, Path | PurePosixPath]:
    """``(filesystem, base path)`` of a data root; the filesystem is None for a local one.

    Accepted: a local path; a ``file://`` URI; any URI ``pyarrow.fs.FileSystem.from_uri``
    understands (``s3://bucket/prefix?region=...``, ``gs://bucket/prefix``, ``hdfs://host/path``),
    else one fsspec knows (``memory://``, ``az://``, ...; through ``pyarrow.fs.FSSpecHandler``);
    a ``pyarrow.fs.FileSystem`` (its root is the data root: wrap it in ``SubTreeFileSystem`` for a
    prefix); or a ``(FileSystem, path)`` pair. A local filesystem given in any of these forms
    takes the local code path (atomic renames)."""
    if isinstance(data_root, tuple) and len(data_root) == 2 and isinstance(data_root[0], pafs.FileSystem):
        fs, base = data_root
        if isinstance(fs, pafs.LocalFileSystem):
            return None, Path(base).expanduser().resolve()
        return fs, PurePosixPath(str(base).rstrip("/") or ".")
    if isinstance(data_root, pafs.FileSystem):
        if isinstance(data_root, pafs.SubTreeFileSystem) and isinstance(data_root.base_fs, pafs.LocalFileSystem):
            return None, Path(data_root.base_path).resolve()
        if isinstance(data_root, pafs.LocalFileSystem):
            raise StoreError("data root: a bare LocalFileSystem has no folder; pass a path instead")
        return data_root, PurePosixPath(".")
    from urllib.parse import urlsplit

    text = os.fspath(data_root)
    scheme = urlsplit(text).scheme if "://" in text else ""
    if not scheme:
        return None, Path(text).expanduser().resolve()
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Unrecognized filesystem type" not in first:
            raise StoreError(f"data root {text!r}: pyarrow's filesystem layer cannot open it ({first})") from err
        return _fsspec_root(text, first)
    if isinstance(fs, pafs.LocalFileSystem):
        return None, Path(path).resolve()
    return fs, PurePosixPath(path.rstrip("/") or ".")


class _WholeObjectHandler(pafs.FSSpecHandler):
    """fsspec behind pyarrow, reading each object whole (``cat_file``): a reader never shares a
    file handle with another (fsspec's memory filesystem hands every reader of a key the same
    file object, so concurrent task threads would read each other's positions)."""

    def open_input_stream(self, path):
        if not self.fs.isfile(path):
            raise FileNotFoundError(path)
        return pa.BufferReader(self.fs.cat_file(path))

    def open_input_file(self, path):
        return self.open_input_stream(path)


def _fsspec_root(uri: str, arrow_error: str) -> tuple[pafs.FileSystem, PurePosixPath]:
    """A scheme pyarrow has no filesystem for (``memory://``, ``az://``, ...) through fsspec,
    behind pyarrow's ``PyFileSystem``. ``memory://`` lives in one process: use it with the
    threads runner only."""
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as err:
        raise StoreError(f"data root {uri!r}: pyarrow's filesystem layer cannot open it ({arrow_error}; fsspec: "
                         f"{err})") from err
    return pafs.PyFileSystem(_WholeObjectHandler(fs)), PurePosixPath(path.rstrip("/") or "/")


def is_local_data_root(data_root: Any) -> bool:
    """Whether a data root is on the local filesystem, without opening a remote one (a
    ``from_uri`` may go to the network to find a bucket's region)."""
    if isinstance(data_root, (pafs.FileSystem, tuple)):
        return resolve_data_root(data_root)[0] is None
    text = os.fspath(data_root)
    return "://" not in text or text.lower().startswith("file://")


def local_data_root(data_root: Any) -> Path:
    """The local directory of a data root; a clear error for one on another filesystem."""
    fs, base = resolve_data_root(data_root)
    if fs is not None:
        raise StoreError(f"data root {describe_data_root(data_root)}: this needs a local data root (it is on "
                         f"{fs.type_name})")
    return Path(base)


def describe_data_root(data_root: Any) -> str:
    if isinstance(data_root, tuple):
        return f"{data_root[0].type_name}:{data_root[1]}"
    if isinstance(data_root, pafs.FileSystem):
        return data_root.type_name
    return repr(os.fspath(data_root))


class Run:
    """One run directory under a data root (local, or on a pyarrow filesystem: see the module
    docstring). ``filesystem`` is None for a local root, where ``dir`` and the other locations
    are :class:`~pathlib.Path`; otherwise they are ``PurePosixPath`` keys on ``filesystem``."""

    def __init__(self, data_root: Any, run_id: str):
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"invalid run id {run_id!r}")
        self.filesystem, self.data_root = resolve_data_root(data_root)
        self.run_id = run_id
        self.dir = self.data_root / "runs" / run_id
        self._lock = threading.Lock()

    # a Run travels to Dask workers (flows/runners.py): pickle the location, not the lock
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def is_local(self) -> bool:
        return self.filesystem is None

    def require_local(self, what: str) -> None:
        """A clear error when ``what`` (a part that writes local files) meets a remote root."""
        if self.filesystem is not None:
            raise StoreError(f"{what} needs a local data root; run {self.run_id} is on {self.filesystem.type_name} "
                             f"({self.data_root})")

    # --- layout -------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.dir / stage  # type: ignore[return-value]

    def rejected_dir(self, stage: str) -> Path:
        return self.dir / "rejected" / stage  # type: ignore[return-value]

    def quarantine_dir(self) -> Path:
        return self.dir / "quarantine"  # type: ignore[return-value]

    def export_dir(self, name: str) -> Path:
        return self.dir / "export" / name  # type: ignore[return-value]

    @property
    def record_path(self) -> Path:
        return self.dir / RUN_RECORD  # type: ignore[return-value]

    # --- run.json -----------------------------------------------------------------------
    def exists(self) -> bool:
        if self.filesystem is not None:
            return _fs_exists(self.filesystem, self.record_path)
        return self.record_path.exists()

    def load_record(self) -> RunRecord:
        text = read_text(self.record_path, self.filesystem)
        if text is None:
            raise StoreError(f"{self.record_path}: no such run")
        return RunRecord.from_dict(json.loads(text))

    def save_record(self, rec: RunRecord) -> None:
        with self._lock:
            rec.updated_at = datetime.now(timezone.utc).isoformat()
            write_text(self.record_path, json.dumps(rec.as_dict(), indent=2, default=str), self.filesystem)

    # --- stages -------------------------------------------------------------------------
    def committed(self, stage: str) -> dict | None:
        return read_manifest(self.stage_dir(stage), self.filesystem)

    def committed_rejected(self, stage: str) -> dict | None:
        return read_manifest(self.rejected_dir(stage), self.filesystem)

    def is_done(self, stage: str, fingerprint: str, config_hash: str) -> bool:
        """A stage is done when its manifest exists for the same input and config."""
        m = self.committed(stage)
        return bool(m and m.get("input_fingerprint") == fingerprint and m.get("config_hash") == config_hash)

    def begin_stage(self, stage: str) -> None:
        """Clear whatever a previous, interrupted attempt of this stage left behind."""
        clear_directory(self.stage_dir(stage), self.filesystem)
        clear_directory(self.rejected_dir(stage), self.filesystem)
        if self.filesystem is not None:
            self.filesystem.create_dir(str(self.stage_dir(stage)), recursive=True)
            self.filesystem.create_dir(str(self.rejected_dir(stage)), recursive=True)
            return
        self.stage_dir(stage).mkdir(parents=True)
        self.rejected_dir(stage).mkdir(parents=True)

    def commit_stage(self, stage: str, kept: Sequence[FileEntry], rejected: Sequence[FileEntry],
                     kept_schema: pa.Schema, rejected_schema: pa.Schema, *, fingerprint: str,
                     config_hash: str, extra: dict | None = None) -> dict:
        """Write the rejected manifest, then the kept one: the kept manifest is the commit."""
        write_manifest(self.rejected_dir(stage), rejected, rejected_schema, filesystem=self.filesystem,
                       stage=stage, kind="rejected", input_fingerprint=fingerprint, config_hash=config_hash)
        return write_manifest(self.stage_dir(stage), kept, kept_schema, filesystem=self.filesystem, stage=stage,
                              kind="kept", input_fingerprint=fingerprint, config_hash=config_hash, **(extra or {}))

    def shard_writer(self, directory: Path, **kwargs: Any) -> ShardWriter:
        """A :class:`ShardWriter` on this run's filesystem."""
        return ShardWriter(directory, filesystem=self.filesystem, **kwargs)

    def read_file(self, path: Path, columns: list[str] | None = None) -> pa.Table:
        """One shard of this run (a path from :meth:`files`)."""
        return read_parquet(path, columns, self.filesystem)

    def file_schema(self, path: Path) -> pa.Schema:
        return read_parquet_schema(path, self.filesystem)

    def files(self, stage: str) -> list[Path]:
        """The committed kept shards of ``stage``."""
        return manifest_files(self.stage_dir(stage), self.filesystem)

    def read(self, stage: str, columns: list[str] | None = None) -> pa.Table:
        return read_table(self.stage_dir(stage), columns, self.filesystem)

    def read_rejected(self, stage: str) -> pa.Table:
        return read_table(self.rejected_dir(stage), filesystem=self.filesystem)


def _run_created(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return json.loads(text).get("created_at", "")
    except json.JSONDecodeError:
        return None


def list_runs(data_root: Any) -> list[Run]:
    """Runs under a data root, oldest first (by run.json's created_at)."""
    fs, base = resolve_data_root(data_root)
    runs = []
    if fs is None:
        root = Path(base) / "runs"
        if not root.exists():
            return []
        for d in root.iterdir():
            rec = d / RUN_RECORD
            if rec.exists() and (created := _run_created(rec.read_text())) is not None:
                runs.append((created, d.name))
    else:
        selector = pafs.FileSelector(str(base / "runs"), allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type != pafs.FileType.Directory:
                continue
            created = _run_created(read_text(PurePosixPath(info.path) / RUN_RECORD, fs))
            if created is not None:
                runs.append((created, PurePosixPath(info.path).name))
    return [Run(data_root, name) for _, name in sorted(runs)]


def latest_run(data_root: Any) -> Run:
    runs = list_runs(data_root)
    if not runs:
        fs, base = resolve_data_root(data_root)
        raise StoreError(f"no runs under {base / 'runs'}" + (f" on {fs.type_name}" if fs is not None else ""))
    return runs[-1]


def new_run_id(name: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{name}-{stamp}-{uuid.uuid4().hex[:6]}"
