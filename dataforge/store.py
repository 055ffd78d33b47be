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

**Durability.** Locally every shard, manifest and ``run.json`` is fsynced before its rename and
its folder after (:func:`fsync_file`, :func:`fsync_dir`).

**One writer per run.** ``runs/<run id>/_lock.json`` is the run's lock (:meth:`Run.lock`): an
``fcntl.flock`` on a local root (the kernel drops it when the holder dies, so a killed run never
leaves a stale lock; over NFS it is as good as the server's lock manager), a lease object with an
expiry on an object store (:class:`LeaseLock`: renewed while held, taken over once expired;
check-after-write, since pyarrow's filesystems have no conditional write: see its docstring for
the race that leaves). ``dataforge run`` holds it for the whole run; :meth:`Run.begin_stage`,
:meth:`Run.commit_stage` and :meth:`Run.save_record` write only as its holder: when this process
does not hold it they take it for the stage (until its commit) or the write, and another process
holding it is refused with :class:`LockHeld` naming its host, pid and start time. A Run pickled to
a Dask worker carries the holder's id; the worker checks the lock is still the holder's.

**Manifests are checked on read.** A file name must be a plain name inside the stage folder (no
``/``, no ``..``, no absolute path), else :class:`ManifestError` naming the manifest; an
unreadable (truncated) manifest is a :class:`ManifestError` too and counts as not committed on
resume (:meth:`Run.committed` is None: the stage runs again). With ``verify`` the readers check
every file's size and sha256 against the manifest (:class:`ChecksumMismatch` naming the file):
export and the warehouse do by default.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dataforge.atomic import fsync_dir, fsync_file, write_bytes_atomic
from dataforge.errors import DataforgeError
from dataforge.hashing import file_sha256

MANIFEST = "_manifest.json"
RUN_RECORD = "run.json"
TMP_PREFIX = ".tmp-"
LOCK_FILE = "_lock.json"
LEASE_TTL_S = 60.0  # an object-store lease lives this long unless renewed (every third of it)
LEASE_SETTLE_S = 0.2  # after writing a lease, wait this long and read it back (check-after-write)

log = logging.getLogger(__name__)


class StoreError(DataforgeError, RuntimeError):
    """A run or stage output that cannot be used as asked (unknown run, no manifest, bad data root)."""


class StageNotCommitted(StoreError):
    """A stage's output was asked for but the stage has no manifest (never ran, or crashed)."""


class ManifestError(StoreError):
    """A ``_manifest.json`` that cannot be trusted: unreadable (truncated, not JSON), not shaped
    like a manifest, or naming a file outside its folder. On resume such a stage counts as not
    committed (:meth:`Run.committed` is None) and runs again."""


class ChecksumMismatch(StoreError):
    """A committed file whose size or sha256 is not what its manifest recorded."""


class LockHeld(StoreError):
    """Another writer holds the lock of a run or an export folder."""

    def __init__(self, what: str, holder: dict | None, hint: str = ""):
        self.holder = holder or {}
        super().__init__(f"{what} is locked by {describe_holder(holder)}{hint}")


class LockLost(StoreError):
    """A writer's lock (an object-store lease) is no longer its own, or was never taken."""


# --- durability ----------------------------------------------------------------------------

def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary sibling (``.tmp-``), fsync, rename over ``path``, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, text.encode("utf-8"), tmp_prefix=TMP_PREFIX, sync_folder=False)
    fsync_dir(path.parent)


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
        fsync_file(self._tmp)
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
        if self.filesystem is None and self.entries:
            fsync_dir(self.directory)  # the renamed shards' names, before a manifest lists them
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


def _plain_name(name: Any) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\x00" not in name)


def check_entry_name(name: Any, manifest: Any, *, nested: bool = False) -> str:
    """``name`` if it is a plain file name inside its folder (with ``nested``, a relative path of
    plain names, as an export's ``prompt_completion/train.jsonl``); else a :class:`ManifestError`
    naming ``manifest``. No ``/`` (unless nested), no ``..``, no absolute path."""
    ok = _plain_name(name) if not nested else (
        isinstance(name, str) and not name.startswith("/") and all(_plain_name(p) for p in name.split("/")))
    if not ok:
        raise ManifestError(f"{manifest}: file name {name!r} is not a plain file name inside the manifest's folder "
                            "(no '/', no '..', no absolute path): refusing to read it")
    return name


def parse_manifest(text: str, where: Any) -> dict:
    """A manifest's JSON, checked for shape (a clear :class:`ManifestError` naming ``where``)."""
    try:
        m = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{where}: unreadable manifest ({err.msg} at character {err.pos} of {len(text)}; "
                            "truncated or corrupt): the stage counts as not committed and runs again on resume"
                            ) from None
    if not isinstance(m, dict) or not isinstance(m.get("files"), list):
        raise ManifestError(f"{where}: not a manifest (no 'files' list)")
    for f in m["files"]:
        if not isinstance(f, dict):
            raise ManifestError(f"{where}: a file entry that is not an object: {str(f)[:200]}")
        check_entry_name(f.get("name"), where, nested=True)
    return m


def read_manifest(directory: Path, filesystem: pafs.FileSystem | None = None) -> dict | None:
    """The manifest of ``directory``; None when there is none; :class:`ManifestError` when it
    is unreadable or names a file outside its folder."""
    path = _join(directory, MANIFEST, filesystem)
    text = read_text(path, filesystem)
    return None if text is None else parse_manifest(text, path)


def clear_directory(directory: Path, filesystem: pafs.FileSystem | None = None) -> None:
    """Remove a stage directory's previous, uncommitted or superseded content."""
    if filesystem is not None:
        if _fs_exists(filesystem, directory):
            filesystem.delete_dir(str(directory))
        return
    d = Path(directory)
    if d.exists():
        shutil.rmtree(d)


def manifest_entries(directory: Path, filesystem: pafs.FileSystem | None = None) -> list[tuple[Path, dict]]:
    """``(path, entry)`` of every committed file of a stage directory. Every name must be a
    plain file name in the directory (:func:`check_entry_name`)."""
    m = read_manifest(directory, filesystem)
    if m is None:
        raise StageNotCommitted(f"{directory}: no {MANIFEST} (the stage has not completed)")
    where = _join(directory, MANIFEST, filesystem)
    return [(_join(directory, check_entry_name(f["name"], where), filesystem), f)  # type: ignore[misc]
            for f in m["files"]]


def manifest_files(directory: Path, filesystem: pafs.FileSystem | None = None, *,
                   verify: bool | Literal["size"] = False) -> list[Path]:
    """The committed files of a stage directory; with ``verify``, each one's size and sha256
    checked against the manifest first (:class:`ChecksumMismatch`); ``verify="size"`` checks
    sizes only (a local data root; the end-of-run summary of the process that just wrote them)."""
    entries = manifest_entries(directory, filesystem)
    if verify:
        for path, entry in entries:
            verify_file(path, entry, filesystem, digest=verify != "size")
    return [p for p, _ in entries]


def _recorded(path: Any, entry: dict) -> None:
    if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("bytes"), int):
        raise ManifestError(f"{path}: its manifest entry records no bytes and sha256 to verify against: "
                            f"{str(entry)[:200]}")


def _mismatch(path: Any, entry: dict, size: int, digest: str | None) -> ChecksumMismatch:
    got = f"{size} bytes" + (f", sha256 {digest}" if digest else "")
    return ChecksumMismatch(f"{path}: does not match its manifest (recorded {entry['bytes']} bytes, sha256 "
                            f"{entry['sha256']}; found {got}): the file changed after the commit (another writer, "
                            "or corruption); re-run the stage")


def read_verified(path: Path | PurePosixPath, entry: dict, filesystem: pafs.FileSystem | None = None) -> bytes:
    """The bytes of a committed file, checked against its manifest entry (read once: what is
    checked is what is parsed)."""
    _recorded(path, entry)
    if filesystem is None:
        data = Path(path).read_bytes()
    else:
        with filesystem.open_input_stream(str(path)) as f:
            data = f.read()
    if len(data) != entry["bytes"]:
        raise _mismatch(path, entry, len(data), None)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise _mismatch(path, entry, len(data), digest)
    return data


def verify_file(path: Path | PurePosixPath, entry: dict, filesystem: pafs.FileSystem | None = None, *,
                digest: bool = True) -> None:
    """Check a committed file's size and sha256 against its manifest entry (streamed); only its
    size without ``digest`` (on a local data root)."""
    if filesystem is not None:
        read_verified(path, entry, filesystem)
        return
    _recorded(path, entry)
    size = os.stat(path).st_size
    if size != entry["bytes"]:
        raise _mismatch(path, entry, size, None)
    if not digest:
        return
    found = file_sha256(path)
    if found != entry["sha256"]:
        raise _mismatch(path, entry, size, found)


def manifest_schema(directory: Path, filesystem: pafs.FileSystem | None = None) -> pa.Schema:
    m = read_manifest(directory, filesystem)
    if m is None:
        raise StageNotCommitted(f"{directory}: no {MANIFEST} (the stage has not completed)")
    try:
        return schema_from_b64(m["schema_ipc"])
    except (KeyError, TypeError, ValueError, pa.ArrowException) as err:
        raise ManifestError(f"{_join(directory, MANIFEST, filesystem)}: no readable schema ({err})") from None


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
                 filesystem: pafs.FileSystem | None = None, *, verify: bool = False) -> Iterator[pa.RecordBatch]:
    """Stream the committed rows of a stage directory, shard by shard (with ``verify``, each
    shard is read whole and checked against its manifest entry before it is parsed)."""
    for path, entry in manifest_entries(directory, filesystem):
        if verify:
            yield from pq.ParquetFile(pa.BufferReader(read_verified(path, entry, filesystem))).iter_batches(
                batch_size=batch_size, columns=columns)
        elif filesystem is None:
            pf = pq.ParquetFile(path)
            yield from pf.iter_batches(batch_size=batch_size, columns=columns)
        else:
            with filesystem.open_input_file(str(path)) as f:
                yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns)


def read_table(directory: Path, columns: list[str] | None = None,
               filesystem: pafs.FileSystem | None = None, *, verify: bool = False) -> pa.Table:
    """All committed rows of a stage directory as one table (empty stages keep their schema).
    With ``verify`` every shard's size and sha256 are checked against the manifest (each is
    read once, checked, then parsed from memory)."""
    schema = manifest_schema(directory, filesystem)
    entries = manifest_entries(directory, filesystem)
    if not entries:
        t = schema.empty_table()
        return t.select(columns) if columns else t
    if verify:
        tables = [pq.read_table(pa.BufferReader(read_verified(p, e, filesystem)), columns=columns)
                  for p, e in entries]
    else:
        tables = [read_parquet(p, columns, filesystem) for p, _ in entries]
    return pa.concat_tables(tables, promote_options="default")


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


# --- locks: one writer per run and per export folder ------------------------------------------

def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def describe_holder(holder: dict | None) -> str:
    """``pid 123 on host-a since 2026-...`` (what a refused writer is told)."""
    if not holder:
        return "another writer (its details are not readable)"
    out = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"
    if holder.get("expires") is not None:
        out += f" (lease until {_iso(float(holder['expires']))})"
    return out


def _holder_record(token: str, ttl: float | None = None) -> dict:
    now = time.time()
    rec = {"holder": token, "host": socket.gethostname(), "pid": os.getpid(), "since": _iso(now)}
    if ttl is not None:
        rec["expires"] = now + ttl
        rec["ttl_s"] = ttl
    return rec


def _parse_holder(text: str | None) -> dict | None:
    try:
        d = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return d if isinstance(d, dict) else None


class FileLock:
    """An exclusive ``fcntl.flock`` on ``path`` (a local file, never deleted: deleting a lock
    file lets two writers lock two inodes). The kernel releases it when the holder's process
    dies, however it dies, so a killed writer never leaves a stale lock. While held, the file
    holds the holder's id, host, pid and start time (what a refused writer is told)."""

    def __init__(self, path: Path, what: str):
        self.path = Path(path)
        self.what = what
        self.token = uuid.uuid4().hex
        self._fd: int | None = None

    def holder(self) -> dict | None:
        try:
            return _parse_holder(self.path.read_text())
        except OSError:
            return None

    def acquire(self, timeout: float | None = 0.0, poll: float = 0.1) -> None:
        """Take the lock: at once, or waiting up to ``timeout`` seconds (None: for ever); else
        :class:`LockHeld` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        waited = f" (waited {timeout:g}s)" if timeout else ""
                        raise LockHeld(self.what, self.holder(), f"{waited}; wait for it to finish, or pass a lock "
                                       "timeout to wait") from None
                    time.sleep(poll)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_holder_record(self.token)).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def check(self) -> None:
        """Raise :class:`LockLost` when this object does not hold the lock."""
        if self._fd is None:
            raise LockLost(f"{self.what}: the lock is not held")

    @staticmethod
    def held_by(path: Path, token: str, what: str) -> None:
        """From another process (a Dask worker of the holder): the lock at ``path`` is held, and
        by the holder ``token``; else :class:`LockLost` / :class:`LockHeld`."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise LockLost(f"{what}: not locked (no {path})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _parse_holder(Path(path).read_text())
                if holder is None or holder.get("holder") != token:
                    raise LockHeld(what, holder, "; this writer's lock was given up or taken over") from None
                return
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise LockLost(f"{what}: the writer's lock is no longer held (its process ended?)")
        finally:
            os.close(fd)


class LeaseLock:
    """A lease object on a pyarrow filesystem (an object store): ``<key>`` holds the holder's
    id, host, pid, start time and an expiry, renewed by a thread every third of ``ttl`` while
    held; an expired lease (its holder was killed) is taken over.

    Object stores offer no conditional write through pyarrow's filesystem layer, so taking a
    lease is check-after-write: read (absent or expired), write ours, wait ``settle`` seconds,
    read again and compare the holder. Two writers that both saw the lease free and whose
    writes land more than ``settle`` apart are told apart (the later write wins, the earlier
    writer sees it and backs off); two whose write and read-back interleave within ``settle``
    can both believe they hold it. Expiry compares wall clocks across hosts: keep clocks in
    sync (skew eats into ``ttl``). A holder that cannot renew (paused longer than ``ttl``)
    loses the lease; the next check (:meth:`check`, at every stage begin and commit and every
    ``run.json`` write) then fails instead of writing on."""

    def __init__(self, fs: pafs.FileSystem, key: PurePosixPath, what: str, ttl: float = LEASE_TTL_S,
                 settle: float = LEASE_SETTLE_S):
        self.fs, self.key, self.what = fs, PurePosixPath(key), what
        self.ttl, self.settle = ttl, settle
        self.token = uuid.uuid4().hex
        self.lost: str | None = None
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict | None:
        try:
            return _parse_holder(read_text(self.key, self.fs))
        except (OSError, pa.ArrowException):
            return None

    def _write(self) -> None:
        _fs_atomic_put(self.fs, self.key, json.dumps(_holder_record(self.token, self.ttl)).encode())

    def acquire(self, timeout: float | None = 0.0, poll: float = 0.5) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            cur = self.holder()
            if cur is None or cur.get("holder") == self.token or float(cur.get("expires", 0)) <= time.time():
                self._write()
                time.sleep(self.settle)
                cur = self.holder()
                if cur is not None and cur.get("holder") == self.token:
                    break
            if deadline is not None and time.monotonic() >= deadline:
                raise LockHeld(self.what, cur, "; wait for it to finish or for its lease to expire, or pass a lock "
                               "timeout to wait")
            time.sleep(poll)
        self._held, self.lost = True, None
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, name=f"lease {self.key}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                cur = self.holder()
                if cur is None or cur.get("holder") != self.token:
                    self.lost = f"taken over by {describe_holder(cur)}" if cur else "removed"
                    log.warning("%s: lease lost (%s)", self.what, self.lost)
                    return
                self._write()
            except Exception as err:  # noqa: BLE001 - a failed renewal is retried; expiry decides
                log.warning("%s: could not renew the lease: %s", self.what, err)

    def check(self) -> None:
        """Raise :class:`LockLost` unless the lease on the store is still ours and unexpired."""
        if not self._held:
            raise LockLost(f"{self.what}: the lease is not held")
        cur = self.holder()
        if self.lost or cur is None or cur.get("holder") != self.token:
            raise LockLost(f"{self.what}: the lease was lost ({self.lost or describe_holder(cur)}); stopping "
                           "rather than writing on")
        if float(cur.get("expires", 0)) <= time.time():
            raise LockLost(f"{self.what}: the lease expired at {_iso(float(cur['expires']))} (not renewed)")

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError, pa.ArrowException):
            cur = self.holder()
            if cur is not None and cur.get("holder") == self.token:
                self.fs.delete_file(str(self.key))

    @staticmethod
    def held_by(fs: pafs.FileSystem, key: PurePosixPath, token: str, what: str) -> None:
        cur = _parse_holder(read_text(key, fs))
        if cur is None:
            raise LockLost(f"{what}: not locked (no lease at {key})")
        if cur.get("holder") != token:
            raise LockHeld(what, cur, "; this writer's lease was taken over")
        if float(cur.get("expires", 0)) <= time.time():
            raise LockLost(f"{what}: the writer's lease expired at {_iso(float(cur['expires']))}")


@dataclass
class _Hold:
    lock: Any  # FileLock | LeaseLock
    explicit: int = 0  # Run.lock() blocks open in this process
    stages: set = field(default_factory=set)  # implicit holds: stages begun without Run.lock()


# The locks this process holds, by lock location: a run is locked per process (every Run object
# of that run in this process, and every thread, writes under the one lock).
_HELD: dict[str, _Hold] = {}
_HELD_GUARD = threading.RLock()
_KEY_LOCKS: dict[str, threading.Lock] = {}


def _key_lock(key: str) -> threading.Lock:
    with _HELD_GUARD:
        return _KEY_LOCKS.setdefault(key, threading.Lock())


def _new_lock(filesystem: pafs.FileSystem | None, path: Path | PurePosixPath, what: str,
              ttl: float = LEASE_TTL_S) -> Any:
    return FileLock(Path(path), what) if filesystem is None else LeaseLock(filesystem, PurePosixPath(path), what, ttl)


def _lock_key(filesystem: pafs.FileSystem | None, path: Path | PurePosixPath) -> str:
    return f"file:{path}" if filesystem is None else f"{filesystem.type_name}:{path}"


@contextlib.contextmanager
def folder_lock(path: Path | PurePosixPath, what: str, filesystem: pafs.FileSystem | None = None,
                timeout: float | None = 300.0) -> Iterator[Any]:
    """Hold the lock at ``path`` (a flock locally, a lease on an object store) for a block; wait up
    to ``timeout`` seconds for another holder (None: for ever), then :class:`LockHeld`. Used
    for an export folder (one writer per export)."""
    key = _lock_key(filesystem, path)
    kl = _key_lock(key)  # threads of this process queue here; other processes on the lock itself
    if not kl.acquire(timeout=-1 if timeout is None else timeout):
        raise LockHeld(what, _holder_record("this process"), " (another thread of this process)")
    try:
        lk = _new_lock(filesystem, path, what)
        lk.acquire(timeout)
        try:
            yield lk
        finally:
            lk.release()
    finally:
        kl.release()


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
        self._lock = threading.RLock()
        self._holder: str | None = None  # the run lock's holder id, when this Run's writer holds it

    # a Run travels to Dask workers (flows/runners.py): pickle the location and the holder id
    # (a worker checks the run lock is still held by that holder), not the thread lock
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_holder", None)
        self._lock = threading.RLock()

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

    @property
    def lock_path(self) -> Path:
        return self.dir / LOCK_FILE  # type: ignore[return-value]

    # --- the run lock -----------------------------------------------------------------------
    def _lock_key(self) -> str:
        return _lock_key(self.filesystem, self.lock_path)

    def _what(self) -> str:
        return f"run {self.run_id} ({self.dir})"

    def lock_holder(self) -> dict | None:
        """Who holds (or last held) this run's lock: holder id, host, pid, since (None: nobody
        recorded)."""
        return _new_lock(self.filesystem, self.lock_path, self._what()).holder()

    def acquire_lock(self, timeout: float | None = 0.0, *, ttl: float = LEASE_TTL_S) -> None:
        """Take the run lock for this process (re-entrant: every Run object of this run in this
        process shares it). ``timeout``: 0 fails at once with :class:`LockHeld` naming the holder,
        a number waits that many seconds, None waits for ever. Pair with :meth:`release_lock`;
        :meth:`lock` is the context manager."""
        key = self._lock_key()
        kl = _key_lock(key)
        if not kl.acquire(timeout=-1 if timeout is None else timeout):
            raise LockHeld(self._what(), _holder_record("this process"), " (another thread of this process)")
        try:
            with _HELD_GUARD:
                hold = _HELD.get(key)
            if hold is None:
                lk = _new_lock(self.filesystem, self.lock_path, self._what(), ttl)
                lk.acquire(timeout)
                hold = _Hold(lk)
                with _HELD_GUARD:
                    _HELD[key] = hold
            with _HELD_GUARD:
                hold.explicit += 1
            self._holder = hold.lock.token
        finally:
            kl.release()

    def release_lock(self) -> None:
        """Give back one :meth:`acquire_lock`; the lock is released when the last is given back
        (with the implicit holds of stages begun meanwhile: a stage that failed between its
        begin and its commit is not left locked)."""
        key = self._lock_key()
        with _HELD_GUARD:
            hold = _HELD.get(key)
            if hold is None or hold.explicit == 0:
                return
            hold.explicit -= 1
            if hold.explicit:
                return
            del _HELD[key]
        self._holder = None
        hold.lock.release()

    @contextlib.contextmanager
    def lock(self, timeout: float | None = 0.0, *, ttl: float = LEASE_TTL_S) -> Iterator["Run"]:
        """Hold the run lock for a block: one writer per run. A local data root locks
        ``<run>/_lock.json`` with ``fcntl.flock`` (released by the kernel when the process dies);
        an object store keeps a lease object there, renewed while held and taken over once
        expired (:class:`LeaseLock`). Another writer is refused with :class:`LockHeld` naming
        host, pid and start time, or waits up to ``timeout`` seconds (None: for ever)."""
        self.acquire_lock(timeout, ttl=ttl)
        try:
            yield self
        finally:
            self.release_lock()

    def holds_lock(self) -> bool:
        """Whether this process holds the run lock (explicitly or for a stage it began)."""
        with _HELD_GUARD:
            return self._lock_key() in _HELD

    def _writer(self, stage: str | None) -> bool:
        """Make sure this writer may write the run: this process holds the run lock, or this Run
        carries the id of the holder (a Dask worker of the holder) and the lock is still theirs.
        Otherwise take the run lock for ``stage`` (at once or :class:`LockHeld`) and return True:
        the caller releases it with :meth:`_release_stage` (a stage: at its commit)."""
        key = self._lock_key()
        with _HELD_GUARD:
            hold = _HELD.get(key)
        if hold is not None:
            hold.lock.check()
            if stage is not None and hold.explicit == 0:
                with _HELD_GUARD:
                    hold.stages.add(stage)
            return False
        if self._holder is not None:
            if self.filesystem is None:
                FileLock.held_by(Path(self.lock_path), self._holder, self._what())
            else:
                LeaseLock.held_by(self.filesystem, PurePosixPath(self.lock_path), self._holder, self._what())
            return False
        kl = _key_lock(key)
        with kl:
            with _HELD_GUARD:
                hold = _HELD.get(key)
            if hold is None:
                lk = _new_lock(self.filesystem, self.lock_path, self._what())
                lk.acquire(0.0)
                hold = _Hold(lk)
                with _HELD_GUARD:
                    _HELD[key] = hold
            with _HELD_GUARD:
                if hold.explicit == 0:
                    hold.stages.add(stage or "")
        return True

    def _release_stage(self, stage: str | None) -> None:
        """End an implicit hold taken by :meth:`_writer` (nothing when :meth:`lock` holds it)."""
        key = self._lock_key()
        with _HELD_GUARD:
            hold = _HELD.get(key)
            if hold is None or hold.explicit:
                return
            hold.stages.discard(stage or "")
            if hold.stages:
                return
            del _HELD[key]
        hold.lock.release()

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
        """Write ``run.json`` as the run's writer (under the run lock: taken for this write when
        this process does not hold it; :class:`LockHeld` when another does)."""
        with self._lock:
            took = self._writer(None)
            try:
                rec.updated_at = datetime.now(timezone.utc).isoformat()
                write_text(self.record_path, json.dumps(rec.as_dict(), indent=2, default=str), self.filesystem)
            finally:
                if took:
                    self._release_stage(None)

    def update_record(self, change: Any) -> RunRecord:
        """Read ``run.json``, apply ``change(record)`` and write it back, as one step under the
        run lock (and this object's thread lock): no update is lost to another thread's."""
        with self._lock:
            took = self._writer(None)
            try:
                rec = self.load_record()
                change(rec)
                self.save_record(rec)
                return rec
            finally:
                if took:
                    self._release_stage(None)

    # --- stages -------------------------------------------------------------------------
    def _committed(self, directory: Path) -> dict | None:
        try:
            return read_manifest(directory, self.filesystem)
        except ManifestError as err:  # a truncated or corrupt commit is no commit: the stage runs again
            log.warning("%s", err)
            return None

    def committed(self, stage: str) -> dict | None:
        """The stage's kept manifest; None when it has none or it is unreadable (then the stage
        is not done and runs again on resume; :meth:`read` says why)."""
        return self._committed(self.stage_dir(stage))

    def committed_rejected(self, stage: str) -> dict | None:
        return self._committed(self.rejected_dir(stage))

    def is_done(self, stage: str, fingerprint: str, config_hash: str) -> bool:
        """A stage is done when its manifest exists for the same input and config."""
        m = self.committed(stage)
        return bool(m and m.get("input_fingerprint") == fingerprint and m.get("config_hash") == config_hash)

    def begin_stage(self, stage: str) -> None:
        """Clear whatever a previous, interrupted attempt of this stage left behind. Only the run's
        writer may: this process holds the run lock (:meth:`lock`), or this Run carries the
        holder's id and the lock is still held (a Dask worker); else the run lock is taken here
        for this stage until its :meth:`commit_stage` (:class:`LockHeld` naming the holder when
        another process holds it)."""
        self._writer(stage)
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
        """Write the rejected manifest, then the kept one: the kept manifest is the commit. Only
        the run's writer may (see :meth:`begin_stage`); a stage's implicit lock ends here."""
        self._writer(stage)
        for e in (*kept, *rejected):
            check_entry_name(e.name, f"the commit of stage {stage} of run {self.run_id}")
        try:
            write_manifest(self.rejected_dir(stage), rejected, rejected_schema, filesystem=self.filesystem,
                           stage=stage, kind="rejected", input_fingerprint=fingerprint, config_hash=config_hash)
            return write_manifest(self.stage_dir(stage), kept, kept_schema, filesystem=self.filesystem, stage=stage,
                                  kind="kept", input_fingerprint=fingerprint, config_hash=config_hash,
                                  **(extra or {}))
        finally:
            self._release_stage(stage)

    def shard_writer(self, directory: Path, **kwargs: Any) -> ShardWriter:
        """A :class:`ShardWriter` on this run's filesystem."""
        return ShardWriter(directory, filesystem=self.filesystem, **kwargs)

    def read_file(self, path: Path, columns: list[str] | None = None) -> pa.Table:
        """One shard of this run (a path from :meth:`files`)."""
        return read_parquet(path, columns, self.filesystem)

    def file_schema(self, path: Path) -> pa.Schema:
        return read_parquet_schema(path, self.filesystem)

    def files(self, stage: str, *, verify: bool = False) -> list[Path]:
        """The committed kept shards of ``stage`` (``verify``: checked against the manifest)."""
        return manifest_files(self.stage_dir(stage), self.filesystem, verify=verify)

    def read(self, stage: str, columns: list[str] | None = None, *, verify: bool = False) -> pa.Table:
        """The committed kept rows of ``stage``; ``verify`` checks every shard's size and sha256
        against the manifest (:class:`ChecksumMismatch` naming the file)."""
        return read_table(self.stage_dir(stage), columns, self.filesystem, verify=verify)

    def read_rejected(self, stage: str, *, verify: bool = False) -> pa.Table:
        return read_table(self.rejected_dir(stage), filesystem=self.filesystem, verify=verify)

    def verify(self, stage: str) -> None:
        """Check every committed file of ``stage`` (kept, and rejected when committed) against
        its manifest."""
        manifest_files(self.stage_dir(stage), self.filesystem, verify=True)
        if read_manifest(self.rejected_dir(stage), self.filesystem) is not None:
            manifest_files(self.rejected_dir(stage), self.filesystem, verify=True)


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
