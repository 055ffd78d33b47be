"""Named corpora (the ``ingest`` stage's ``sources``): where their files are, how to read them
in bounded memory, and how a record of each becomes a sample of the right ``kind``.

A source is a file, a glob (``*``, ``?``, ``[...]``, ``**`` for any number of folders), a
folder, or a URI on any pyarrow filesystem (``file://``, ``s3://``, ``gs://``, ``hdfs://``; a
scheme pyarrow does not know goes through fsspec), or a list of them. A folder means every file
below it with a known extension (names starting with ``.`` or ``_`` are skipped), unless it is a
dataset saved by ``datasets``' ``save_to_disk`` (``state.json``, or ``dataset_dict.json`` for a
DatasetDict), whose Arrow files are read directly. Files of a source are read in sorted order.

Formats, from the name (``format: auto``) or given: JSON lines (``.jsonl``, ``.ndjson``), a
``.json`` file (a JSON array of records, Alpaca's layout, else JSON lines), Parquet, CSV, TSV,
Arrow IPC streams or files (``.arrow``, a saved dataset's files); a ``.gz``, ``.zst``/``.zstd``,
``.bz2`` or ``.lz4`` suffix on a text format is decompressed while it streams (pyarrow's codecs:
no extra package). Every format is read through :mod:`dataforge.tabular` (JSON lines and CSV/TSV
line by line, a JSON array record by record, Parquet and Arrow in batches), so a record over
``max_value_bytes``, nested deeper than ``max_depth``, not valid UTF-8, not JSON or with the
wrong number of fields is quarantined with file, line (or row) and reason, and memory holds a
batch, never a file.

Records become samples by the source's ``kind`` and ``fields`` (:func:`map_record`):

* ``document``: ``text``;
* ``instruction``: ``instruction``, optional ``input`` and ``system``, ``output`` — or a
  ``messages`` list of ``{role, content}`` (ShareGPT's ``{from, value}`` too);
* ``cot``: ``question``, ``rationale``, optional ``answer``.

A field missing, null or of the wrong type quarantines the record; an empty one makes it a
rejected row (``empty_text:<field>``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dataforge.records import content_id
from dataforge.tabular import (PARQUET_ERRORS, InputError, ReadLimits, iter_checked_batches, iter_delimited_stream,
                               iter_json_array_stream, iter_json_stream, iter_parquet_batches, open_parquet)

SourceKind = Literal["document", "instruction", "cot"]
SourceFormat = Literal["auto", "jsonl", "json", "parquet", "csv", "tsv", "arrow"]

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".lz4": "lz4"}
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet",
              ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".arrow": "arrow"}
TEXT_FORMATS = ("jsonl", "json", "csv", "tsv")

# the fields of each kind: (required, optional); "messages" replaces instruction/input/output/system
KIND_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "document": (("text",), ()),
    "instruction": (("instruction", "output"), ("input", "system")),
    "cot": (("question", "rationale"), ("answer",)),
}
MESSAGE_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_GLOB = re.compile(r"[*?\[]")


class SourceError(InputError):
    """A source that cannot be read as configured: no file, an unreadable file, an unknown format."""


class SourceConfig(BaseModel):
    """One named corpus of the ``ingest.sources`` list (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    name: str = Field(min_length=1)
    """The source's name: the ``source_name`` of its rows."""
    path: str | list[str]
    """A file, glob, folder or URI, or a list of them (relative paths: against the YAML's folder)."""
    format: SourceFormat = "auto"
    """``auto``: from each file's extension (after a compression suffix)."""
    kind: SourceKind = "document"
    fields: dict[str, str] = Field(default_factory=dict)
    """Field of the record for each of the kind's fields (default: the same name); a dotted name
    (``meta.title``) reaches into nested objects."""
    max_rows: int | None = Field(None, ge=1)
    """Stop reading the source once it has given this many kept rows (after ``weight``)."""
    weight: float = Field(1.0, gt=0, le=1)
    """The fraction of the source's rows kept: a row is kept when a hash of the run seed and its
    content id falls below it (deterministic; the same rows on every run and resume)."""
    column_names: list[str] | None = Field(None, min_length=1)
    """CSV/TSV files without a header line: their columns' names."""
    quoting: bool | None = None
    """CSV/TSV: fields may be quoted with ``"``; default on for CSV, off for TSV."""
    splits: list[str] | None = Field(None, min_length=1)
    """A saved ``DatasetDict``: the splits to read (default: all, in the order it lists them)."""
    filesystem: dict[str, Any] = Field(default_factory=dict)
    """Options of the URI's filesystem (``pyarrow.fs.S3FileSystem(**options)`` for ``s3://``,
    ``GcsFileSystem`` for ``gs://``, fsspec's for other schemes): a region, an endpoint. Put no
    secret here (the config is stored in ``run.json``): credentials come from the environment."""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("a source name is letters, digits, '_', '.' and '-' (at most 64, not starting with '.')")
        return v

    @field_validator("path")
    @classmethod
    def _some_path(cls, v: str | list[str]) -> str | list[str]:
        paths = [v] if isinstance(v, str) else v
        if not paths or any(not p.strip() for p in paths):
            raise ValueError("name at least one file, glob, folder or URI (none may be empty)")
        return v

    @model_validator(mode="after")
    def _fields_of_kind(self) -> "SourceConfig":
        required, optional = KIND_FIELDS[self.kind]
        allowed = {*required, *optional, *(("messages",) if self.kind == "instruction" else ())}
        for key, value in self.fields.items():
            if key not in allowed:
                raise ValueError(f"fields.{key}: not a field of a {self.kind} source (choose from "
                                 f"{', '.join(sorted(allowed))})")
            if not value.strip():
                raise ValueError(f"fields.{key}: name the record's field")
        if "messages" in self.fields and set(self.fields) - {"messages"}:
            raise ValueError("fields: give messages, or instruction/input/output/system, not both")
        if self.column_names is not None and len(set(self.column_names)) != len(self.column_names):
            raise ValueError("column_names: a name is listed twice")
        return self

    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)

    def field_map(self) -> dict[str, str]:
        """The kind's fields to read, each with the record's field it comes from."""
        if "messages" in self.fields:
            return {"messages": self.fields["messages"]}
        required, optional = KIND_FIELDS[self.kind]
        out = {k: self.fields.get(k, k) for k in required}
        # optional fields are read under their own name unless mapped; cot's answer only when mapped
        out.update({k: self.fields.get(k, k) for k in optional if k in self.fields or self.kind != "cot"})
        return out

    def required_fields(self) -> set[str]:
        return {"messages"} if "messages" in self.fields else set(KIND_FIELDS[self.kind][0])


# --- files -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceFile:
    """One input file of a source, as resolved before any is read."""

    source: str
    index: int  # place among every source's files (config order, then sorted): its shards' prefix
    uri: str  # the file as a user names it: an absolute path, or a URI (provenance: ``source_file``)
    path: str  # its path on ``fs``
    format: str
    compression: str | None
    size: int
    mtime_ns: int | None
    fs: pafs.FileSystem = field(compare=False, repr=False)

    def identity(self) -> dict:
        """What says a file is the same one on resume: no content hash (that would read it)."""
        return {"source": self.source, "file": self.uri, "size": self.size, "mtime_ns": self.mtime_ns}

    def modified(self) -> datetime | None:
        return None if self.mtime_ns is None else datetime.fromtimestamp(self.mtime_ns / 1e9, timezone.utc)


def _format_of(name: str, given: str) -> tuple[str | None, str | None]:
    """(format, compression codec) of a file by its name (``given`` unless ``auto``)."""
    base = posixpath.basename(name).lower()
    stem, ext = posixpath.splitext(base)
    codec = COMPRESSIONS.get(ext)
    if codec:
        base, ext = stem, posixpath.splitext(stem)[1]
    fmt = given if given != "auto" else EXTENSIONS.get(ext)
    return fmt, codec


def _split_glob(path: str) -> tuple[str, str | None]:
    """(the folder before the first segment holding a wildcard, the rest as a pattern) or (path, None)."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if _GLOB.search(part):
            return "/".join(parts[:i]) or ("/" if path.startswith("/") else "."), "/".join(parts[i:])
    return path, None


def glob_match(pattern: str, rel: str) -> bool:
    """Whether the relative path ``rel`` matches ``pattern`` (``*`` and ``?`` stay within a
    folder, ``**`` is any number of folders)."""
    pat, parts = pattern.split("/"), rel.split("/")

    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(parts)
        if pat[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        return j < len(parts) and fnmatch.fnmatchcase(parts[j], pat[i]) and match(i + 1, j + 1)

    return match(0, 0)


def _listed(fs: pafs.FileSystem, folder: str, recursive: bool, where: str
            ) -> Iterator[tuple[pafs.FileInfo, str]]:
    """The files below ``folder`` that are not hidden, with their path relative to it."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=recursive))
    except (OSError, pa.ArrowException) as err:
        raise SourceError(f"{where}: cannot be listed ({err})") from None
    root = folder.rstrip("/")
    for i in infos:
        rel = i.path[len(root):].lstrip("/")
        if i.type == pafs.FileType.File and not _hidden(rel):
            yield i, rel


def _hidden(rel: str) -> bool:
    return any(p.startswith((".", "_")) for p in rel.split("/"))


@dataclass
class _Location:
    fs: pafs.FileSystem
    path: str  # on fs
    prefix: str  # how a user names fs's paths: "" for local paths, "s3://" and the like for URIs


def _open_location(spec: str, options: dict[str, Any], resolve_path: Callable[[str], Path]) -> _Location:
    """The filesystem and path of a source path or URI (without its wildcard part)."""
    if "://" not in spec:
        return _Location(pafs.LocalFileSystem(), os.path.abspath(resolve_path(spec)), "")
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if scheme == "file":
        from urllib.parse import unquote

        return _Location(pafs.LocalFileSystem(), unquote(parts.path) or "/", "file://")
    try:
        if not options:
            fs, path = pafs.FileSystem.from_uri(spec)
            if isinstance(fs, pafs.LocalFileSystem):
                return _Location(fs, path, "file://")
            prefix = f"{scheme}://" if scheme in ("s3", "gs", "gcs") else urlunsplit((scheme, parts.netloc, "", "", ""))
            return _Location(fs, path, prefix)
        if scheme == "s3":
            return _Location(pafs.S3FileSystem(**options), parts.netloc + parts.path, "s3://")
        if scheme in ("gs", "gcs"):
            return _Location(pafs.GcsFileSystem(**options), parts.netloc + parts.path, f"{scheme}://")
    except (pa.ArrowException, OSError, ValueError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if options or "Unrecognized filesystem type" not in first:
            raise SourceError(f"{spec}: pyarrow's filesystem layer cannot open it ({first})") from None
    try:
        import fsspec

        ffs, fpath = fsspec.core.url_to_fs(spec, **options)
    except (ImportError, ValueError, TypeError) as err:
        raise SourceError(f"{spec}: no filesystem for the scheme {scheme!r} ({err})") from None
    return _Location(pafs.PyFileSystem(pafs.FSSpecHandler(ffs)), fpath, f"{scheme}://")


def _uri(loc: _Location, path: str) -> str:
    if not loc.prefix:
        return path
    if loc.prefix == "file://":
        return "file://" + path
    if loc.prefix.endswith("://"):
        return loc.prefix + path.lstrip("/")
    return loc.prefix + ("" if path.startswith("/") else "/") + path


def _dataset_files(fs: pafs.FileSystem, folder: str, splits: list[str] | None, where: str) -> list[str]:
    """The Arrow files of a dataset saved by ``datasets`` (``save_to_disk``), in order."""
    import json

    def read_json(path: str) -> Any:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read().decode("utf-8"))

    def info(path: str) -> pafs.FileInfo:
        return fs.get_file_info(path)

    try:
        if info(posixpath.join(folder, "dataset_dict.json")).type == pafs.FileType.File:
            names = read_json(posixpath.join(folder, "dataset_dict.json")).get("splits") or []
            if splits:
                missing = [s for s in splits if s not in names]
                if missing:
                    raise SourceError(f"{where}: the saved DatasetDict has no split {missing[0]!r} (splits: "
                                      f"{', '.join(names)})")
                names = list(splits)
            return [f for s in names for f in _dataset_files(fs, posixpath.join(folder, s), None, where)]
        state = read_json(posixpath.join(folder, "state.json"))
        files = [posixpath.join(folder, d["filename"]) for d in state.get("_data_files") or []]
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:
        raise SourceError(f"{where}: not a readable saved dataset ({err})") from None
    if splits:
        raise SourceError(f"{where}: splits are for a saved DatasetDict; this is one dataset")
    return files


def resolve_source(src: SourceConfig, resolve_path: Callable[[str], Path], start: int = 0) -> list[SourceFile]:
    """The files of ``src`` (indices from ``start``); :class:`SourceError` naming the source
    when a path matches no file, a file cannot be read or its format cannot be told."""
    out: list[SourceFile] = []
    seen: set[tuple[str, str]] = set()
    for spec in src.paths():
        where = f"ingest.sources.{src.name}: {spec}"
        query = ""
        if "://" in spec:
            parts = urlsplit(spec)
            base, pattern = _split_glob(parts.path)
            query = parts.query
            loc = _open_location(urlunsplit((parts.scheme, parts.netloc, base, query, "")), src.filesystem,
                                 resolve_path)
        else:
            base, pattern = _split_glob(spec)
            loc = _open_location(base, src.filesystem, resolve_path)
        fs = loc.fs
        try:
            top = fs.get_file_info(loc.path)
        except (OSError, pa.ArrowException) as err:
            raise SourceError(f"{where}: cannot be read ({err})") from None
        # (path on fs, format forced for a saved dataset's files, its FileInfo when the listing gave it)
        found: list[tuple[str, str | None, pafs.FileInfo | None]] = []
        if pattern is not None:
            if top.type != pafs.FileType.Directory:
                raise SourceError(f"{where}: matches no file ({loc.path} is not a folder)")
            for i, rel in _listed(fs, loc.path, "**" in pattern or "/" in pattern, where):
                if glob_match(pattern, rel):
                    found.append((i.path, None, i))
        elif top.type == pafs.FileType.File:
            found.append((loc.path, None, top))
        elif top.type == pafs.FileType.Directory:
            marker = [fs.get_file_info(posixpath.join(loc.path, n)).type == pafs.FileType.File
                      for n in ("state.json", "dataset_dict.json")]
            if any(marker):
                found += [(p, "arrow", None) for p in _dataset_files(fs, loc.path, src.splits, where)]
            else:
                for i, rel in _listed(fs, loc.path, True, where):
                    if _format_of(i.path, src.format)[0]:
                        found.append((i.path, None, i))
        else:
            raise SourceError(f"{where}: no such file or folder")
        if not found:
            raise SourceError(f"{where}: matches no file" + (" with a known extension (set format)"
                                                             if pattern is None else ""))
        for path, forced, info in sorted(found, key=lambda x: x[0]):
            fmt, codec = (forced, None) if forced else _format_of(path, src.format)
            if fmt is None:
                raise SourceError(f"{where}: cannot tell the format of {_uri(loc, path)} from its name; set format "
                                  f"(jsonl, json, parquet, csv, tsv, arrow)")
            if codec and fmt not in TEXT_FORMATS:
                raise SourceError(f"{where}: {_uri(loc, path)}: a compressed {fmt} file cannot be streamed (only "
                                  f"JSON lines, JSON, CSV and TSV are decompressed on the fly)")
            info = info if info is not None else fs.get_file_info(path)
            if info.type != pafs.FileType.File:
                raise SourceError(f"{where}: {_uri(loc, path)} is not a file")
            if isinstance(fs, pafs.LocalFileSystem) and not os.access(path, os.R_OK):
                raise SourceError(f"{where}: {path} cannot be read (permission denied)")
            key = (fs.type_name, path)
            if key in seen:
                continue
            seen.add(key)
            out.append(SourceFile(source=src.name, index=start + len(out), uri=_uri(loc, path), path=path, format=fmt,
                                  compression=codec, size=info.size or 0, mtime_ns=info.mtime_ns, fs=fs))
    return out


def resolve_sources(sources: list[SourceConfig], resolve_path: Callable[[str], Path]) -> list[SourceFile]:
    """Every file of every source, in config order (sorted within a source): the preflight. All
    problems are reported together, in one line (:class:`SourceError`)."""
    files: list[SourceFile] = []
    problems: list[str] = []
    for src in sources:
        try:
            files += resolve_source(src, resolve_path, len(files))
        except SourceError as err:
            problems.append(str(err))
    if problems:
        raise SourceError("; ".join(problems))
    return files


# --- reading -----------------------------------------------------------------------------------

class _Raw(io.RawIOBase):
    """A pyarrow input stream as a raw Python stream, so ``io.BufferedReader`` can buffer it."""

    def __init__(self, stream: Any):
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.stream.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self.stream.close()
        super().close()


def open_stream(sf: SourceFile, buffer_bytes: int = 1 << 20) -> io.BufferedReader:
    """The file's bytes as a buffered stream, decompressed on the fly when it has a compression suffix."""
    raw = sf.fs.open_input_stream(sf.path, compression=None)  # decompressed below, by the name's suffix only
    if sf.compression:
        raw = pa.CompressedInputStream(raw, sf.compression)
    return io.BufferedReader(_Raw(raw), buffer_bytes)


@dataclass
class Record:
    """One record of an input file: its row (JSON-lines or CSV line, record of a JSON array,
    Parquet or Arrow row, from 1), the object (None when it could not be read) and why not."""

    row: int
    obj: dict | None
    error: str | None = None
    raw: str = ""
    line: int | None = None  # where a JSON array record starts (its row is its record number)


def _columns_needed(src: SourceConfig) -> list[str]:
    return sorted({v.split(".")[0] for v in src.field_map().values()} | set(src.field_map().values()))


def _batch_records(batches: Iterator[tuple[int, pa.RecordBatch, pa.Array, list[tuple[int, str]]]]
                   ) -> Iterator[Record]:
    for _, batch, numbers, rejected in batches:
        bad = dict(rejected)
        recs = iter(batch.to_pylist())
        for num in sorted([*numbers.to_pylist(), *bad]):
            yield Record(num, None, bad[num]) if num in bad else Record(num, next(recs))


def _present(names: list[str], src: SourceConfig, where: str) -> list[str]:
    """The needed columns a columnar file has; :class:`InputError` when a required one is missing."""
    have = set(names)
    fm = src.field_map()
    for key in sorted(src.required_fields()):
        col = fm[key]
        if col not in have and col.split(".")[0] not in have:
            raise InputError(f"{where}: no column {col!r} for the {src.kind} field {key!r} (columns: "
                             f"{', '.join(names)}); map it with fields")
    return [c for c in _columns_needed(src) if c in have]


def _arrow_batches(sf: SourceFile, src: SourceConfig, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC stream (a saved dataset's files) or IPC file, with
    only the columns the source maps, re-cut to at most ``batch_rows`` rows."""
    try:
        reader = pa.ipc.open_stream(sf.fs.open_input_stream(sf.path, compression=None))
        batches = iter(reader)
        schema = reader.schema
    except pa.ArrowInvalid:
        f = pa.ipc.open_file(sf.fs.open_input_file(sf.path))
        batches = (f.get_batch(i) for i in range(f.num_record_batches))
        schema = f.schema
    cols = _present(schema.names, src, sf.uri)
    for b in batches:
        b = b.select(cols)
        for off in range(0, b.num_rows, batch_rows):
            yield b.slice(off, batch_rows)


def iter_source_records(sf: SourceFile, src: SourceConfig, limits: ReadLimits, batch_rows: int = 1000
                        ) -> Iterator[Record]:
    """Every record of ``sf`` in file order, in bounded memory. :class:`InputError` (or an
    ``OSError``/Arrow error) when the file cannot be read at all; records that cannot be read
    come with their error."""
    if sf.format == "parquet":
        local = isinstance(sf.fs, pafs.LocalFileSystem)
        pf = open_parquet(Path(sf.path) if local else sf.path, limits, filesystem=None if local else sf.fs)
        cols = _present(pf.schema_arrow.names, src, sf.uri)
        yield from _batch_records(iter_parquet_batches(Path(sf.path) if local else sf.path, limits, batch_rows, cols,
                                                       filesystem=None if local else sf.fs))
        return
    if sf.format == "arrow":
        yield from _batch_records(iter_checked_batches(_arrow_batches(sf, src, batch_rows), sf.uri, limits))
        return
    with open_stream(sf) as f:
        fmt = sf.format
        if fmt == "json":
            head = f.peek(64).lstrip(b"\xef\xbb\xbf \t\r\n")
            fmt = "json_array" if head.startswith(b"[") else "jsonl"
        if fmt == "jsonl":
            for line, obj, err, raw in iter_json_stream(f, sf.uri, limits):
                yield Record(line, obj, err, raw)
        elif fmt == "json_array":
            for rec, line, obj, err, raw in iter_json_array_stream(f, sf.uri, limits):
                yield Record(rec, obj, err, raw, line)
        else:
            quoting = src.quoting if src.quoting is not None else fmt == "csv"
            for line, obj, err, raw in iter_delimited_stream(f, sf.uri, limits, "," if fmt == "csv" else "\t",
                                                             src.column_names, quoting):
                yield Record(line, obj, err, raw)


READ_ERRORS = (InputError, OSError, EOFError, UnicodeDecodeError, *PARQUET_ERRORS)


# --- records to samples ------------------------------------------------------------------------

@dataclass
class Mapped:
    """A record as a sample: text, messages, and other core columns (a CoT's question, ...)."""

    text: str
    messages: list[dict] | None = None
    columns: dict[str, Any] = field(default_factory=dict)


class Unusable(Exception):
    """A record that cannot become a sample (malformed for its source's kind): quarantined."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_MISSING = object()


def get_field(obj: dict, name: str) -> Any:
    """``obj[name]``, else the dotted path (``meta.title``) into nested objects; a sentinel when absent."""
    if name in obj:
        return obj[name]
    cur: Any = obj
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _string(obj: dict, key: str, column: str, required: bool) -> str:
    v = get_field(obj, column)
    if v is _MISSING or v is None:
        if required:
            raise Unusable(f"field {column!r} ({key}) is {'missing' if v is _MISSING else 'null'}")
        return ""
    if isinstance(v, str):
        return v
    if key == "answer" and isinstance(v, (int, float)) and not isinstance(v, bool):  # a final answer may be a number
        return str(v)
    raise Unusable(f"field {column!r} ({key}) is not a string ({type(v).__name__})")


def _messages(obj: dict, column: str) -> list[dict]:
    v = get_field(obj, column)
    if v is _MISSING or v is None:
        raise Unusable(f"field {column!r} (messages) is {'missing' if v is _MISSING else 'null'}")
    if not isinstance(v, list) or not v:
        raise Unusable(f"field {column!r} (messages) is not a non-empty list of turns")
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise Unusable(f"messages[{i}] is not an object")
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if not isinstance(role, str) or role.lower() not in MESSAGE_ROLES:
            raise Unusable(f"messages[{i}]: role {role!r} is not system, user or assistant "
                                         "(or ShareGPT's human, gpt)")
        if not isinstance(content, str):
            raise Unusable(f"messages[{i}]: content is not a string ({type(content).__name__})")
        out.append({"role": MESSAGE_ROLES[role.lower()], "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise Unusable("messages: no assistant turn")
    return out


class RecordMapper:
    """:func:`map_record` for one source, its field mapping worked out once (it runs per record)."""

    def __init__(self, src: SourceConfig):
        self.kind = src.kind
        self.fields = src.field_map()
        self.required = src.required_fields()
        self.empty_checked = KIND_FIELDS[src.kind][0]
        self.messages = self.fields.get("messages")

    def __call__(self, obj: dict) -> tuple[Mapped, str | None]:
        if self.messages is not None:
            msgs = _messages(obj, self.messages)
            answered = any(m["content"].strip() for m in msgs if m["role"] == "assistant")
            empty = None if answered else "empty_text:messages"
            return Mapped("\n\n".join(m["content"] for m in msgs), msgs), empty
        vals = {k: _string(obj, k, col, k in self.required) for k, col in self.fields.items()}
        empty = next((f"empty_text:{k}" for k in self.empty_checked if not vals[k].strip()), None)
        if self.kind == "document":
            return Mapped(vals["text"]), empty
        if self.kind == "instruction":
            prompt = vals["instruction"] + (f"\n\n{vals['input']}" if vals.get("input", "").strip() else "")
            msgs = ([{"role": "system", "content": vals["system"]}] if vals.get("system", "").strip() else [])
            msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": vals["output"]}]
            return Mapped(f"{prompt}\n\n{vals['output']}", msgs), empty
        q, r = vals["question"], vals["rationale"]
        cols = {"question": q, "rationale": r, "answer": vals.get("answer") or None}
        return Mapped(f"Question: {q}\nAnswer: {r}",
                      [{"role": "user", "content": q}, {"role": "assistant", "content": r}], cols), empty


def map_record(obj: dict, src: SourceConfig) -> tuple[Mapped, str | None]:
    """The sample a record of ``src`` makes (see the module docstring) and, when a field it
    needs is empty, the drop reason of the row (``empty_text:<field>``); :class:`Unusable` when
    the record is malformed for the kind (quarantined)."""
    return RecordMapper(src)(obj)


def sample_id(kind: str, m: Mapped) -> str:
    return content_id(kind, m.text, m.messages)


def kept_by_weight(row_id: str, weight: float, seed: int) -> bool:
    """Whether a row is in a source's ``weight`` sample: a hash of the run seed and the row's
    content id, read as a number in [0, 1), is below the weight. Deterministic: the same rows on
    every run, resume and file order; independent of other rows, so it streams."""
    if weight >= 1.0:
        return True
    h = hashlib.blake2b(f"{seed}:{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0 ** 64 < weight


__all__ = ["COMPRESSIONS", "EXTENSIONS", "KIND_FIELDS", "Mapped", "READ_ERRORS", "Record", "RecordMapper",
           "SourceConfig", "SourceError", "SourceFile", "Unusable", "get_field", "glob_match", "iter_source_records",
           "kept_by_weight", "map_record", "open_stream", "resolve_source", "resolve_sources", "sample_id"]
