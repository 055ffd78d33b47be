"""``ingest``: named corpora (``ingest.sources``) streamed into the run's first shards, each row a
sample of its source's kind with its provenance (``source_name``, ``source_file``,
``source_row``); malformed records quarantined; resumable per input file. Sources and readers:
:mod:`dataforge.sources`; page: docs/stages/ingest.md.

A generation stage that asks no teacher: the curation stages read its shards as they read
generated ones, so a config whose only data is ``ingest.sources`` is a curation pipeline.

**Several files at once.** Up to ``runner.workers`` files (the threads runner's count: by default
the CPUs, at least 2) are read at the same time, each into its own shards and quarantine file, so
the output does not depend on how many: in a pool of processes started by ``spawn`` (never fork:
the process runs Prefect's threads) when the run and the files are on local disk, else of threads
(:data:`POOL`). The files of a source with ``max_rows`` are read one after another, in order
(each file's cap counts the rows the earlier ones kept); other files in any order. An error in one
file is the stage's error, as when one file is read at a time: the files being read beside it
stop at their next batch (their open shard, under a temporary name, removed).

**Per-file resume.** Each input file writes its own shards (``part-<file index>-<n>.parquet``)
and, once the file is finished, its line in ``<run>/ingest/_progress.jsonl`` (appended and
fsynced, in the order files finish; the record is rewritten atomically when an attempt starts,
and a line torn by a crash is not trusted): the file's identity (source, path, size,
modification time), the shards it wrote, its counts and the attempt that read it. A killed
ingest that runs again with the same settings keeps every recorded file whose index and identity
match the current file list, whatever the order they finished in (for a source with
``max_rows``, only those before its first unrecorded file), removes whatever else the stage
folders hold (what the files being read when it died had written), and reads only the other
files: finished files are not opened again. The kept manifest, written after the last file,
lists the shards in file order and is the stage's commit, as for every stage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from dataforge.sources import SourceConfig
from dataforge.stages.registry import GENERATION, Stage, StageConfig, register

if TYPE_CHECKING:
    import pyarrow as pa

    from dataforge.config import PipelineConfig
    from dataforge.runner.io import StageIO, StageResult
    from dataforge.sources import SourceFile
    from dataforge.store import Run
    from dataforge.tabular import Quarantined, ReadLimits

log = logging.getLogger("dataforge.ingest")

PROGRESS = "_progress.jsonl"
KILL_ENV = "DATAFORGE_INGEST_KILL_AT"
"""Test hook: ``<file index>:<records>`` makes the process SIGKILL itself once it has read that
many records of that file and written them (tests/test_ingest.py's kill -9 tests);
``<file index>:<records>:<i>,<j>,...`` waits first (up to a minute) until the progress record
lists files i, j, ... (read at the same time, on other workers)."""
BATCH_BYTES = 32 << 20  # text held before a batch is written, whatever ``batch_rows`` says
QUARANTINE_FLUSH = 1000
POOL = "process"
"""How files are read at once (``runner.workers`` of them; measured on 4 corpus files, see
docs/stages/ingest.md): ``process``, a pool of spawned processes, when the run and its files are on local
disk (else threads); ``thread``, a thread pool always."""


class IngestConfig(StageConfig):
    """The ``ingest`` section: the named sources (a mapping of name to source, or a list of
    sources with a ``name``; see :class:`dataforge.sources.SourceConfig`). ``enabled`` defaults
    to true when sources are given."""

    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    batch_rows: int = Field(1000, ge=1, le=100_000)
    """Records mapped and written at a time (with at most 32 MiB of text): the memory bound."""

    @field_validator("sources", mode="before")
    @classmethod
    def _named(cls, v: Any) -> Any:
        """A list of sources with names, or a mapping of name to source (or to a bare path),
        becomes the mapping of name to source (so errors read ``ingest.sources.<name>.<field>``)."""
        if isinstance(v, list):
            out: dict[str, Any] = {}
            for i, spec in enumerate(v):
                name = spec.get("name") if isinstance(spec, dict) else None
                if not isinstance(name, str) or not name:
                    raise ValueError(f"entry {i}: a listed source needs a name (or give a mapping of name to source)")
                if name in out:
                    raise ValueError(f"{name!r} is listed twice")
                out[name] = spec
            v = out
        if not isinstance(v, dict):
            return v
        norm: dict[str, Any] = {}
        for name, spec in v.items():
            if isinstance(spec, (str, list)):
                spec = {"path": spec}
            if isinstance(spec, dict):
                if spec.get("name", name) != name:
                    raise ValueError(f"{name}: its name field says {spec['name']!r}")
                spec = {**spec, "name": name}
            norm[name] = spec
        return norm

    @model_validator(mode="after")
    def _on_with_sources(self) -> "IngestConfig":
        if "enabled" not in self.model_fields_set and self.sources:
            self.enabled = True
        if self.enabled and not self.sources:
            raise ValueError("sources: name at least one source when ingest is enabled")
        return self


def _uses_seed(cfg: "PipelineConfig") -> bool:
    return any(s.weight < 1 for s in cfg.ingest.sources.values())


def input_files(cfg: "PipelineConfig") -> dict:
    """Every source file's identity (source, path or URI, size, modification time; no content
    hash, which would read every file) and the run seed when a source samples by ``weight``.
    Resolving them is the stage's preflight: a source that matches no readable file is a
    :class:`~dataforge.sources.SourceError` naming it, before any work."""
    if not cfg.ingest.enabled:
        return {"files": []}
    from dataforge.sources import resolve_sources

    files = resolve_sources(list(cfg.ingest.sources.values()), cfg.resolve_path)
    return {"files": [f.identity() for f in files], "seed": cfg.seed if _uses_seed(cfg) else None}


def ingest_schema() -> "pa.Schema":
    """The stage's rows: the sample schema, then where each row came from."""
    import pyarrow as pa

    from dataforge.records import SAMPLE_SCHEMA

    return (SAMPLE_SCHEMA.append(pa.field("source_name", pa.string()))
            .append(pa.field("source_file", pa.string())).append(pa.field("source_row", pa.int64())))


def stream_limits() -> "ReadLimits":
    """The read limits of a record (``max_value_bytes``, ``max_depth``, from the environment and
    the config's ``inputs:``); a file's size and row count are not limited, since ingest never
    holds a file (a source's ``max_rows`` caps what it takes)."""
    from dataforge.tabular import ReadLimits

    base = ReadLimits.from_env()
    return ReadLimits(max_bytes=1 << 62, max_rows=1 << 62, max_value_bytes=base.max_value_bytes,
                      max_depth=base.max_depth)


# --- the progress record and the stage's folders -------------------------------------------------

def progress_path(run: "Run") -> Path:
    return run.stage_dir("ingest") / PROGRESS


def load_progress(run: "Run") -> dict | None:
    """The stage's progress record as ``{"settings", "attempts": [...], "files": [...]}``, or None
    (none, or no readable header: the stage starts over). The record is JSON lines — a header
    with the settings hash, then one line per attempt and per finished file — and a line torn by
    a crash ends it (what follows a torn line is not trusted)."""
    from dataforge.store import read_text

    text = read_text(progress_path(run), run.filesystem)
    if text is None:
        return None
    prog: dict | None = None
    for line in text.split("\n"):
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            break
        if prog is None:
            if not isinstance(item, dict) or "settings" not in item:
                break
            prog = {"settings": item["settings"], "attempts": [], "files": []}
        elif isinstance(item, dict) and "attempt" in item:
            prog["attempts"].append(item["attempt"])
        elif isinstance(item, dict) and "file" in item:
            prog["files"].append(item["file"])
        else:
            break
    if prog is None:
        log.warning("%s: unreadable; ingest starts over", progress_path(run))
    return prog


class _ProgressLog:
    """Writes the progress record: whole and atomically when an attempt starts, then one line
    appended (and fsynced) per finished file — on an object store, which cannot append, the
    whole record is put again each time."""

    def __init__(self, run: "Run", prog: dict):
        import threading

        self.run, self.prog = run, prog
        self._lock = threading.Lock()  # files finish in any order, on any thread
        self._rewrite()

    def _lines(self) -> list[str]:
        return [json.dumps({"settings": self.prog["settings"]}),
                *(json.dumps({"attempt": a}) for a in self.prog["attempts"]),
                *(json.dumps({"file": f}) for f in self.prog["files"])]

    def _rewrite(self) -> None:
        from dataforge.store import write_text

        write_text(progress_path(self.run), "\n".join(self._lines()) + "\n", self.run.filesystem)

    def add_file(self, entry: dict) -> None:
        with self._lock:
            self.prog["files"].append(entry)
            if self.run.filesystem is not None:
                self._rewrite()
                return
            with open(progress_path(self.run), "a", encoding="utf-8") as f:
                f.write(json.dumps({"file": entry}) + "\n")
                f.flush()
                os.fsync(f.fileno())


def _quarantine_dir(run: "Run") -> Path:
    return run.quarantine_dir() / "ingest"


def _names(run: "Run", folder: Path) -> list[str]:
    if run.filesystem is None:
        return sorted(os.listdir(folder)) if Path(folder).is_dir() else []
    import pyarrow.fs as pafs

    infos = run.filesystem.get_file_info(pafs.FileSelector(str(folder), allow_not_found=True))
    return sorted(Path(i.path).name for i in infos if i.type == pafs.FileType.File)


def _delete(run: "Run", path: Path) -> None:
    if run.filesystem is None:
        Path(path).unlink(missing_ok=True)
    else:
        run.filesystem.delete_file(str(path))


def _remove_unlisted(run: "Run", prog: dict) -> int:
    """Delete from the stage's folders every file the progress record does not list (what the
    files being read at a crash had written, shards and temporary files); returns how many."""
    keep = {
        run.stage_dir("ingest"): {PROGRESS, *(e["name"] for f in prog["files"] for e in f["kept_files"])},
        run.rejected_dir("ingest"): {e["name"] for f in prog["files"] for e in f["rejected_files"]},
        _quarantine_dir(run): {f["quarantine_file"] for f in prog["files"] if f.get("quarantine_file")},
    }
    removed = 0
    for folder, names in keep.items():
        for name in _names(run, folder):
            if name not in names:
                _delete(run, folder / name)
                removed += 1
    return removed


class _QuarantineFile:
    """The quarantined records of one input file: appended to a temporary file while it is read,
    moved into ``<run>/quarantine/ingest/<file index>-<source>.jsonl`` when it is done."""

    def __init__(self, run: "Run", sf: "SourceFile"):
        self.run = run
        self.name = f"{sf.index:05d}-{sf.source}.jsonl"
        self.final = _quarantine_dir(run) / self.name
        if run.filesystem is None:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = self.final.parent / f".tmp-{self.name}"
        else:
            fd, tmp = tempfile.mkstemp(prefix="dataforge-ingest-quarantine-", suffix=".jsonl")
            os.close(fd)
            self.tmp = Path(tmp)
        self.tmp.unlink(missing_ok=True)
        self.rows: list[Quarantined] = []
        self.count = 0
        self.reasons: Counter[str] = Counter()

    def add(self, q: "Quarantined") -> None:
        self.rows.append(q)
        self.count += 1
        self.reasons[q.reason.split(":")[0].split(" (")[0][:60]] += 1
        if len(self.rows) >= QUARANTINE_FLUSH:
            self.flush()

    def flush(self) -> None:
        from dataforge.tabular import write_quarantine

        write_quarantine(self.tmp, self.rows)
        self.rows = []

    def close(self) -> str | None:
        """The file's name under ``quarantine/ingest/`` (None: nothing was quarantined)."""
        self.flush()
        if not self.count:
            self.tmp.unlink(missing_ok=True)
            return None
        if self.run.filesystem is None:
            from dataforge.atomic import fsync_dir, fsync_file

            fsync_file(self.tmp)
            os.replace(self.tmp, self.final)
            fsync_dir(self.final.parent)
        else:
            fs = self.run.filesystem
            fs.create_dir(str(self.final.parent), recursive=True)
            with open(self.tmp, "rb") as src, fs.open_output_stream(str(self.final)) as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            self.tmp.unlink(missing_ok=True)
        return self.name

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


# --- one input file ------------------------------------------------------------------------------

_BATCH_COLUMNS = ("id", "text", "messages", "question", "rationale", "answer", "source_row")


class _Batch:
    """Rows of one input file waiting to be written (kept, or rejected with a reason)."""

    def __init__(self) -> None:
        self.kept = {c: [] for c in _BATCH_COLUMNS}
        self.rejected = {c: [] for c in _BATCH_COLUMNS}
        self.reasons: list[str] = []
        self.chars = 0

    def add(self, row_id: str, mapped: Any, row: int, reason: str | None) -> None:
        cols = self.kept if reason is None else self.rejected
        if reason is not None:
            self.reasons.append(reason)
        cols["id"].append(row_id)
        cols["text"].append(mapped.text)
        cols["messages"].append(mapped.messages)
        for c in ("question", "rationale", "answer"):
            cols[c].append(mapped.columns.get(c))
        cols["source_row"].append(row)
        self.chars += len(mapped.text)

    def __len__(self) -> int:
        return len(self.kept["id"]) + len(self.rejected["id"])


def _table(cols: dict[str, list], schema: "pa.Schema", constants: dict[str, Any]) -> "pa.Table":
    import pyarrow as pa

    n = len(cols["id"])
    arrays = []
    for f in schema:
        if f.name in cols:
            arrays.append(pa.array(cols[f.name], f.type))
        elif f.name in constants:
            arrays.append(pa.array([constants[f.name]] * n, f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _kill_at() -> tuple[int, int, set[int]] | None:
    text = os.environ.get(KILL_ENV, "").strip()
    if not text:
        return None
    index, records, after = (text.split(":") + ["", ""])[:3]
    return int(index), int(records or 0), {int(i) for i in after.split(",") if i.strip()}


def _await_recorded(run: "Run", indexes: set[int]) -> None:
    """The kill hook's wait: until the progress record lists ``indexes`` (at most a minute)."""
    deadline = time.monotonic() + 60
    while indexes and time.monotonic() < deadline:
        prog = load_progress(run)
        if prog is not None and indexes <= {f["index"] for f in prog["files"]}:
            return
        time.sleep(0.05)


def _raw_of(rec: Any) -> str:
    if rec.raw:
        return rec.raw
    if rec.obj is None:
        return ""
    return json.dumps(rec.obj, ensure_ascii=False, default=str)


def _writers(run: "Run", cfg: "PipelineConfig", index: int, schema: "pa.Schema") -> tuple[Any, Any]:
    """What ``StageIO.writers`` gives, without importing :mod:`dataforge.runner` (a worker
    process's start-up: the runner package imports every stage's machinery)."""
    from dataforge.records import DROP_FIELDS

    rejected = schema
    for f in DROP_FIELDS:
        if f.name not in rejected.names:
            rejected = rejected.append(f)
    prefix = f"part-{index:05d}"
    return (run.shard_writer(run.stage_dir("ingest"), prefix=prefix, max_rows=cfg.shard_rows, schema=schema),
            run.shard_writer(run.rejected_dir("ingest"), prefix=prefix, max_rows=cfg.shard_rows, schema=rejected))


def ingest_file(run: "Run", io: "StageIO | None", cfg: "PipelineConfig", src: SourceConfig, sf: "SourceFile",
                kept_before: int, attempt: int, limits: "ReadLimits", *, stop: Callable[[], bool] | None = None,
                warn: Callable[[str], None] | None = None, kill_pid: int | None = None) -> dict:
    """Read one input file into its shards (kept and rejected) and its quarantine file; returns
    its progress entry. ``kept_before``: rows the source kept in earlier files (``max_rows``).
    ``stop``: asked after each batch; true, the file is abandoned (:class:`Stopped`, its temporary
    files removed: another file failed). ``warn``: where its warnings go (default: the log).
    ``kill_pid``: the process the test hook (``KILL_ENV``) kills (default: this one). ``io``: the
    stage's writers (None: the same writers, made here; a worker process)."""
    from dataforge.records import with_drop
    from dataforge.sources import READ_ERRORS, RecordMapper, Unusable, iter_source_records, kept_by_weight, sample_id
    from dataforge.tabular import Quarantined

    t0 = time.perf_counter()
    schema = ingest_schema()
    constants = {"kind": src.kind, "run_id": run.run_id, "created_at": sf.modified(), "source_name": src.name,
                 "source_file": sf.uri}
    kept_w, rej_w = io.writers(sf.index, schema) if io is not None else _writers(run, cfg, sf.index, schema)
    quarantine = _QuarantineFile(run, sf)
    counts: Counter[str] = Counter()
    batch = _Batch()
    stopped: str | None = None
    cap = src.max_rows - kept_before if src.max_rows else None
    kill = _kill_at()
    last_row = 0
    mapper = RecordMapper(src)
    say = warn if warn is not None else (lambda msg: log.warning("%s", msg))

    def write() -> None:
        nonlocal batch
        if batch.kept["id"]:
            kept_w.write(_table(batch.kept, schema, constants))
        if batch.rejected["id"]:
            rej_w.write(with_drop(_table(batch.rejected, schema, constants), "ingest", batch.reasons))
        quarantine.flush()
        batch = _Batch()
        if kill and kill[0] == sf.index and counts["records"] >= kill[1]:
            _await_recorded(run, kill[2])
            os.kill(kill_pid or os.getpid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        if stop is not None and stop():
            raise Stopped(sf.uri)

    def records() -> Iterator[Any]:
        nonlocal stopped
        try:
            yield from iter_source_records(sf, src, limits, cfg.ingest.batch_rows)
        except READ_ERRORS as err:  # the file cannot be read on (or at all): quarantined from here
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            why = f"the file cannot be read after row {last_row}: {first}; the rest of it is not read"
            say(f"{sf.uri}: {why}")
            quarantine.add(Quarantined(sf.uri, last_row + 1, why, ""))
            counts["quarantined"] += 1
            stopped = "unreadable"

    try:
        for rec in records():
            counts["records"] += 1
            last_row = rec.row
            where = rec.line if rec.line is not None else rec.row
            number = rec.row if rec.line is not None else None
            if rec.obj is None:
                quarantine.add(Quarantined(sf.uri, where, rec.error or "unreadable", rec.raw, number))
                counts["quarantined"] += 1
                continue
            try:
                mapped, empty = mapper(rec.obj)
            except Unusable as err:
                quarantine.add(Quarantined(sf.uri, where, err.reason, _raw_of(rec), number))
                counts["quarantined"] += 1
                continue
            row_id = sample_id(src.kind, mapped)
            if not kept_by_weight(row_id, src.weight, cfg.seed):
                counts["sampled_out"] += 1
                continue
            batch.add(row_id, mapped, rec.row, empty)
            counts["empty" if empty else "kept"] += 1
            if len(batch) >= cfg.ingest.batch_rows or batch.chars >= BATCH_BYTES:
                write()
            if cap is not None and counts["kept"] >= cap:
                stopped = "max_rows"
                break
        write()
        kept_files, rej_files = kept_w.close(), rej_w.close()
        qname = quarantine.close()
    except BaseException as err:
        quarantine.discard()
        for w in (kept_w, rej_w):  # a shard being written is removed (its temporary name), never left half
            w.__exit__(type(err), err, None)
        raise
    if counts["quarantined"]:
        top = ", ".join(f"{r} ({n})" for r, n in quarantine.reasons.most_common(3))
        say(f"{sf.uri}: {counts['quarantined']} record{'s' if counts['quarantined'] != 1 else ''} quarantined "
            f"({top})")
    return {"index": sf.index, "identity": sf.identity(), "format": sf.format, "attempt": attempt,
            "records": counts["records"], "kept": counts["kept"], "empty": counts["empty"],
            "sampled_out": counts["sampled_out"], "quarantined": counts["quarantined"], "stopped": stopped,
            "kept_files": [e.as_dict() for e in kept_files], "rejected_files": [e.as_dict() for e in rej_files],
            "quarantine_file": qname, "seconds": round(time.perf_counter() - t0, 3)}


# --- the stage -----------------------------------------------------------------------------------

def _summary(prog: dict, names: list[str]) -> dict:
    per: dict[str, Counter] = {n: Counter() for n in names}
    capped: set[str] = set()
    for f in prog["files"]:
        c = per.setdefault(f["identity"]["source"], Counter())
        c["files"] += 1
        if f.get("skipped"):
            c["files_not_read"] += 1
        for k in ("records", "kept", "empty", "sampled_out", "quarantined"):
            c[k] += f.get(k, 0)
        if f.get("stopped") == "max_rows" or f.get("skipped") == "max_rows":
            capped.add(f["identity"]["source"])
    return {n: {**{k: c.get(k, 0) for k in ("files", "files_not_read", "records", "kept", "empty", "sampled_out",
                                             "quarantined")}, "capped": n in capped} for n, c in per.items()}


def _resumable(prog: dict | None, settings: str, files: list["SourceFile"], section: IngestConfig) -> list[dict]:
    """The recorded files a new attempt keeps, in file order: every one whose index and identity
    match the current file list (they may have finished in any order), except that a source with
    ``max_rows`` keeps only the prefix of its files recorded without a gap (a later file's cap
    counted the rows of the earlier ones)."""
    if prog is None or prog.get("settings") != settings:
        return []
    by_index: dict[int, dict] = {}
    for entry in prog["files"]:
        i = entry.get("index")
        if isinstance(i, int) and 0 <= i < len(files) and i not in by_index \
                and entry.get("identity") == files[i].identity():
            by_index[i] = entry
    gap: set[str] = set()
    for sf in files:
        if section.sources[sf.source].max_rows is None:
            continue
        if sf.index not in by_index:
            gap.add(sf.source)
        elif sf.source in gap:
            del by_index[sf.index]
    return [by_index[i] for i in sorted(by_index)]


class Stopped(Exception):
    """A file abandoned because the attempt is stopping (another file failed); never recorded."""


# --- reading several files at once ---------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # in a worker process: the attempt's stop event and the parent's pid


def _init_worker(stop: Any, parent: int) -> None:
    _WORKER.update(stop=stop, parent=parent)
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel SIGKILLs this worker when the process that started it dies (kill -9
    too), so no orphan writes on, or holds its parent's pipes open, after it; elsewhere the
    per-batch check of :func:`_worker_stop` is what stops it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the call
        os._exit(1)


def _worker_stop() -> bool:
    """In a worker process: stop when the attempt stops, or when the process that started the
    pool is gone (the orphan must not write on while a new attempt cleans up)."""
    return _WORKER["stop"].is_set() or os.getppid() != _WORKER["parent"]


def _read_in_worker(run: "Run", cfg: "PipelineConfig", sf: "SourceFile", kept_before: int,
                    attempt: int, limits: "ReadLimits") -> tuple[dict, list[str]]:
    """:func:`ingest_file` in a worker process: its entry and its warnings (logged by the parent)."""
    warnings: list[str] = []
    entry = ingest_file(run, None, cfg, cfg.ingest.sources[sf.source], sf, kept_before, attempt, limits,
                        stop=_worker_stop, warn=warnings.append, kill_pid=_WORKER["parent"])
    return entry, warnings


def _pool_kind(run: "Run", files: list["SourceFile"]) -> str:
    """``process`` (a pool of processes started by ``spawn``: never fork, the process runs Prefect's
    threads; a spawned worker's parent is this process, which it dies with) when the run and the
    files are on local disk; ``thread`` otherwise (a filesystem object such as fsspec's memory
    filesystem is not the same in another process)."""
    import multiprocessing

    import pyarrow.fs as pafs

    if POOL != "process" or run.filesystem is not None or multiprocessing.current_process().daemon:
        return "thread"  # (a daemonic process, such as a Dask worker's, may not start processes)
    return "process" if all(isinstance(sf.fs, pafs.LocalFileSystem) for sf in files) else "thread"


class _Reader:
    """Reads the attempt's files, up to ``workers`` at once, and records each in the progress log
    as it finishes. A source with ``max_rows`` is a chain read in file order, one file at a time
    (each file's cap counts the rows the earlier ones kept); every other file is a chain of its own."""

    def __init__(self, run: "Run", io: "StageIO", cfg: "PipelineConfig", progress: "_ProgressLog", attempt: int,
                 limits: "ReadLimits", kept_by_source: Counter):
        self.run, self.io, self.cfg, self.progress = run, io, cfg, progress
        self.attempt, self.limits, self.kept_by_source = attempt, limits, kept_by_source
        self.opened = 0

    def chains(self, pending: list["SourceFile"]) -> list[list["SourceFile"]]:
        out: list[list[SourceFile]] = []
        capped: dict[str, list[SourceFile]] = {}
        for sf in pending:
            if self.cfg.ingest.sources[sf.source].max_rows is None:
                out.append([sf])
            elif sf.source in capped:
                capped[sf.source].append(sf)
            else:
                capped[sf.source] = [sf]
                out.append(capped[sf.source])
        return out

    def _next(self, chain: list["SourceFile"]) -> tuple["SourceFile", int] | None:
        """The chain's next file to read and the source's rows kept before it; the files after a
        source's cap are recorded as skipped, not read."""
        while chain:
            sf = chain.pop(0)
            src = self.cfg.ingest.sources[sf.source]
            if src.max_rows is not None and self.kept_by_source[sf.source] >= src.max_rows:
                self.progress.add_file({"index": sf.index, "identity": sf.identity(), "format": sf.format,
                                        "attempt": self.attempt, "skipped": "max_rows", "kept_files": [],
                                        "rejected_files": [], "quarantine_file": None})
                continue
            self.opened += 1
            return sf, self.kept_by_source[sf.source]
        return None

    def _done(self, entry: dict) -> None:
        self.kept_by_source[entry["identity"]["source"]] += entry["kept"]
        self.progress.add_file(entry)

    def read(self, pending: list["SourceFile"]) -> None:
        chains = self.chains(pending)
        workers = min(self.cfg.runner.thread_workers(), len(chains))
        if workers <= 1:  # one file at a time, in file order, in this process
            for chain in chains:
                while (job := self._next(chain)) is not None:
                    sf, before = job
                    self._done(ingest_file(self.run, self.io, self.cfg, self.cfg.ingest.sources[sf.source], sf,
                                           before, self.attempt, self.limits))
            return
        self._pooled(chains, workers, _pool_kind(self.run, pending))

    def _pooled(self, chains: list[list["SourceFile"]], workers: int, kind: str) -> None:
        import threading
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait

        if kind == "process":
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            stop: Any = ctx.Event()
            pool: Any = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                            initargs=(stop, os.getpid()))
        else:
            stop = threading.Event()
            pool = ThreadPoolExecutor(workers, thread_name_prefix="dataforge-ingest")
        log.info("ingest reads %d files, up to %d at a time (%s pool)", sum(len(c) for c in chains), workers, kind)
        queue = list(chains)
        running: dict[Future, tuple[SourceFile, list[SourceFile]]] = {}

        def start(chain: list["SourceFile"]) -> None:
            job = self._next(chain)
            if job is None:
                return
            sf, before = job
            if kind == "process":
                fut = pool.submit(_read_in_worker, self.run, self.cfg, sf, before, self.attempt, self.limits)
            else:
                fut = pool.submit(ingest_file, self.run, self.io, self.cfg, self.cfg.ingest.sources[sf.source], sf,
                                  before, self.attempt, self.limits, stop=stop.is_set)
            running[fut] = (sf, chain)

        def finished(fut: Future) -> None:
            result = fut.result()
            entry, warnings = result if kind == "process" else (result, [])
            for msg in warnings:
                log.warning("%s", msg)
            self._done(entry)

        try:
            while queue or running:
                while queue and len(running) < workers:
                    start(queue.pop(0))
                if not running:
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: running[f][0].index):
                    _, chain = running.pop(fut)
                    finished(fut)
                    if chain:
                        queue.insert(0, chain)
        except BaseException:
            # the first error is the attempt's: the other files stop at their next batch (their
            # temporary shards removed), those that finish meanwhile are still recorded
            stop.set()
            for fut in sorted(running, key=lambda f: running[f][0].index):
                with contextlib.suppress(Exception):  # the first error is the one raised
                    if fut.exception() is None:  # waits for the file: it stops at its next batch
                        finished(fut)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def run_ingest(run: "Run", cfg: "PipelineConfig") -> "StageResult":
    """The stage's runner: every source file, up to ``runner`` thread-workers' count at a time,
    resuming with the files a killed attempt did not finish (see the module docstring); commits
    the kept shards of every file, in file order."""
    from dataforge.runner.generation import generation_io
    from dataforge.runner.io import StageResult
    from dataforge.sources import resolve_sources
    from dataforge.store import FileEntry, clear_directory

    t0 = time.perf_counter()
    section = cfg.ingest
    files = resolve_sources(list(section.sources.values()), cfg.resolve_path)
    identity = {"files": [f.identity() for f in files], "seed": cfg.seed if _uses_seed(cfg) else None}
    io = generation_io(run, cfg, "ingest", files=identity)
    if io.done():
        return io.previous_result()
    settings = cfg.stage_hash(*io_sections(), extra={"seed": identity["seed"]})
    prog = load_progress(run)
    kept_entries = _resumable(prog, settings, files, section)
    reuse = len(kept_entries)
    if reuse == 0:
        io.begin()
        clear_directory(_quarantine_dir(run), run.filesystem)
        prog = {"settings": settings, "attempts": [], "files": []}
    else:
        assert prog is not None
        prog["files"] = kept_entries
        removed = _remove_unlisted(run, prog)
        log.info("ingest resumes: %d of %d files finished and kept, %d partial files removed, %d to read", reuse,
                 len(files), removed, len(files) - reuse)
    attempt = len(prog["attempts"]) + 1
    prog["attempts"].append({"attempt": attempt, "started_at": _now(), "files_done": reuse})
    progress = _ProgressLog(run, prog)
    kept_by_source: Counter[str] = Counter()
    for f in prog["files"]:
        kept_by_source[f["identity"]["source"]] += f.get("kept", 0)
    recorded = {f["index"] for f in prog["files"]}
    reader = _Reader(run, io, cfg, progress, attempt, stream_limits(), kept_by_source)
    reader.read([sf for sf in files if sf.index not in recorded])
    entries = sorted(prog["files"], key=lambda f: f["index"])  # file order, whatever order they finished in
    kept = [FileEntry(**e) for f in entries for e in f["kept_files"]]
    rejected = [FileEntry(**e) for f in entries for e in f["rejected_files"]]
    sources = _summary(prog, list(section.sources))
    extra = {"sources": sources, "input_files": len(files), "files_reused": reuse, "files_read": reader.opened,
             "attempt": attempt, "quarantined": sum(s["quarantined"] for s in sources.values()),
             "sampled_out": sum(s["sampled_out"] for s in sources.values()),
             "quarantine_dir": str(_quarantine_dir(run)) if any(f.get("quarantine_file") for f in prog["files"])
             else None}
    io.commit(kept, rejected, ingest_schema(), extra=extra)
    rows_kept, rows_dropped = sum(e.rows for e in kept), sum(e.rows for e in rejected)
    return StageResult("ingest", rows_in=rows_kept + rows_dropped, rows_kept=rows_kept, rows_dropped=rows_dropped,
                       seconds=time.perf_counter() - t0, extra=extra)


def io_sections() -> list[str]:
    return STAGE.sections()


def _now() -> str:
    from dataforge.records import now_utc

    return now_utc().isoformat()


def _run(run, cfg, base_url=None, acquire=None):
    return run_ingest(run, cfg)


STAGE = register(Stage(
    name="ingest", order=5, kind=GENERATION, config_model=IngestConfig, run=_run, teacher=False,
    input_files=input_files, command="run", column_prefix="source_",
    columns=("source_name", "source_file", "source_row"),
    summary="Named corpora (JSON lines, JSON, Parquet, CSV/TSV, saved datasets; local or any pyarrow filesystem) "
            "streamed into shards with provenance, resumed per input file",
    drop_reasons=("empty_text:<field>",),
    module=__name__,
))
