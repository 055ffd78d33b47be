"""Reading user files of records, and writing kept / rejected Parquet: shared by every command
that takes "any JSONL or Parquet file" (``dataforge cot verify``, ``filter``, ``classify``,
``dedup``, ``decontam``) and by the seed and passage loaders.

JSON lines: a line that is not valid JSON, or not a JSON object, is *quarantined* with file,
line, reason and the raw text, and the rest of the file loads. Parquet: a file Arrow cannot read
is an error for the whole input (:class:`InputError`). Nothing is dropped silently: callers
write what was quarantined (:func:`write_quarantine`) and report the count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataforge.errors import DataforgeError

log = logging.getLogger("dataforge.tabular")

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


# what reading a broken Parquet file can raise (a footer with invalid UTF-8 names: UnicodeDecodeError)
PARQUET_ERRORS = (pa.ArrowException, OSError, UnicodeDecodeError)
# a JSON escape of a UTF-16 surrogate: valid JSON, but alone (unpaired) it is not text
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def lone_surrogate(raw: str, obj: object) -> bool:
    """Whether JSON ``raw`` (decoded to ``obj``) holds an unpaired surrogate escape such as
    ``"\\udc00"``: Python decodes it, but it cannot be written as UTF-8 (Arrow, files, HTTP)."""
    if not _SURROGATE_ESCAPE.search(raw):
        return False
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def decode_field_names(schema: pa.Schema) -> None:
    """Read every (nested) field name: a Parquet footer with names that are not UTF-8 raises
    UnicodeDecodeError here, inside the caller's error handling, rather than at first use."""
    def visit(field: pa.Field) -> None:
        _ = field.name
        t = field.type
        if pa.types.is_struct(t):
            for i in range(t.num_fields):
                visit(t.field(i))
        elif pa.types.is_map(t):
            visit(t.key_field)
            visit(t.item_field)
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            visit(t.value_field)

    for f in schema:
        visit(f)


class InputError(DataforgeError, ValueError):
    """A problem with a whole input file (missing, unreadable, unknown format, missing column)."""


@dataclass(frozen=True)
class Quarantined:
    """A record that could not be used, with where it was and why."""

    file: str
    line: int
    reason: str
    raw: str
    record: int | None = None  # index in a JSON array; None for line formats

    def as_dict(self) -> dict:
        d: dict = {"file": self.file, "line": self.line, "reason": self.reason, "raw": self.raw}
        if self.record is not None:
            d["record"] = self.record
        return d


# characters that str.splitlines() (and some editors) take for line breaks, which JSON leaves raw
_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _one_line_json(obj: dict) -> str:
    """JSON that stays one line for any line splitter (raw text of a bad record can hold U+2028)."""
    text = json.dumps(obj, ensure_ascii=False)
    for ch, esc in _LINE_BREAKS.items():
        text = text.replace(ch, esc)
    return text


def write_quarantine(path: Path, rows: list[Quarantined]) -> None:
    """Append quarantined rows to a JSON-lines file (created only when there are rows)."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(_one_line_json(r.as_dict()) + "\n")


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its newline); a byte-order mark is not data."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, raw in enumerate(f, start=1):
            yield lineno, raw.rstrip("\n").rstrip("\r")


def iter_json_lines(path: Path) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line, object or None, error or None, raw line) for each non-blank line of a JSONL file."""
    for lineno, raw in iter_lines(path):
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield lineno, None, f"not valid JSON: {err.msg} at column {err.colno}", raw
            continue
        if not isinstance(obj, dict):
            yield lineno, None, f"expected a JSON object, got {type(obj).__name__}", raw
            continue
        if lone_surrogate(line, obj):
            yield lineno, None, "invalid Unicode: an unpaired surrogate escape (\\udXXX) is not text", raw
            continue
        yield lineno, obj, None, raw


def iter_records(path: Path, batch_size: int = 4096) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line or row number, record or None, error or None, raw text) for each record of a
    JSON-lines or Parquet file (Parquet rows are numbered from 1 and carry no raw text)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        yield from iter_json_lines(path)
    elif suffix == ".parquet":
        try:
            pf = pq.ParquetFile(path)
            decode_field_names(pf.schema_arrow)
        except PARQUET_ERRORS as err:
            raise InputError(f"{path}: not a readable Parquet file: {err}") from None
        n = 0
        batches = pf.iter_batches(batch_size=batch_size)
        while True:
            try:  # a file whose footer reads but whose pages are corrupt fails here, not above
                batch = next(batches)
                batch.validate(full=True)  # strings that are not UTF-8
            except StopIteration:
                break
            except PARQUET_ERRORS as err:
                raise InputError(f"{path}: not a readable Parquet file (after row {n}): {err}") from None
            for rec in batch.to_pylist():
                n += 1
                yield n, rec, None, ""
    else:
        raise InputError(f"{path}: unknown input format {suffix!r}; expected .jsonl or .parquet")


def read_text_table(path: str | Path, text_column: str = "text",
                    keep_columns: bool = True) -> tuple[pa.Table, list[Quarantined]]:
    """A table with a ``text`` column (renamed from ``text_column``), ``source_file`` and
    ``source_row`` (line of a JSONL file, row from 1 of a Parquet file), and an ``id`` (the
    file's own ``id`` when it has a string one, else a content hash of the text) — the columns
    the curation functions need to run on any user file. Rows whose text is missing or not a
    string are quarantined, as are malformed JSON lines. Parquet is read in bulk; only JSONL is
    parsed line by line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    quarantined: list[Quarantined] = []
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            table = pq.read_table(path)
            decode_field_names(table.schema)
            table.validate(full=True)  # strings that are not UTF-8
        except PARQUET_ERRORS as err:
            raise InputError(f"{path}: not a readable Parquet file: {err}") from None
        if text_column not in table.column_names:
            raise InputError(f"{path}: no column {text_column!r} (columns: {', '.join(table.column_names)}); "
                             f"name the text column with --text-column")
        rows = pa.array(range(1, table.num_rows + 1), pa.int64())
        col = table.column(text_column)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise InputError(f"{path}: column {text_column!r} is {col.type}, expected a string column")
        table = table.append_column("source_row", rows)
        bad = pc.is_null(table.column(text_column))
        if pc.any(bad).as_py():
            for r in pc.filter(rows, bad).to_pylist():
                quarantined.append(Quarantined(str(path), r, f"{text_column!r} is null", ""))
            table = table.filter(pc.invert(bad))
    elif suffix in JSONL_SUFFIXES:
        recs: list[dict] = []
        lines: list[int] = []
        for lineno, obj, err, raw in iter_json_lines(path):
            if obj is None:
                quarantined.append(Quarantined(str(path), lineno, err or "unreadable", raw))
                continue
            if not isinstance(obj.get(text_column), str):
                what = "missing" if text_column not in obj else f"not a string ({type(obj[text_column]).__name__})"
                quarantined.append(Quarantined(str(path), lineno, f"{text_column!r} is {what}", raw))
                continue
            recs.append(obj)
            lines.append(lineno)
        try:
            table = pa.Table.from_pylist(recs) if recs else pa.table({text_column: pa.array([], pa.string())})
        except (pa.ArrowException, OverflowError):  # mixed types across rows, ints beyond int64: keep only the text
            table = pa.table({text_column: [r[text_column] for r in recs]})
        table = table.append_column("source_row", pa.array(lines, pa.int64()))
    else:
        raise InputError(f"{path}: unknown input format {suffix!r}; expected .jsonl or .parquet")
    for q in quarantined:
        log.warning("%s line %d: %s (quarantined)", q.file, q.line, q.reason)
    if not keep_columns:
        table = table.select([text_column, "source_row"] + (["id"] if "id" in table.column_names else []))
    if text_column != "text":
        if "text" in table.column_names:
            table = table.rename_columns(["text_original" if n == "text" else n for n in table.column_names])
        table = table.rename_columns(["text" if n == text_column else n for n in table.column_names])
    table = table.append_column("source_file", pa.array([str(path)] * table.num_rows, pa.string()))
    def content_ids(texts: list[str]) -> list[str]:
        return [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest() for t in texts]

    if "id" not in table.column_names or not pa.types.is_string(table.schema.field("id").type):
        if "id" in table.column_names:
            table = table.rename_columns(["source_id" if n == "id" else n for n in table.column_names])
        table = table.append_column("id", pa.array(content_ids(table.column("text").to_pylist()), pa.string()))
    elif table.column("id").null_count:
        # some rows have their own id, some none: those get the content hash (every row has an id)
        own = table.column("id").to_pylist()
        missing = [i for i, v in enumerate(own) if v is None]
        texts = table.column("text").take(pa.array(missing)).to_pylist()
        for i, h in zip(missing, content_ids(texts)):
            own[i] = h
        table = table.set_column(table.column_names.index("id"), "id", pa.array(own, pa.string()))
    return table, quarantined


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` via a temporary file in the same folder and a rename, so a
    crash never leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_kept_rejected(out_dir: str | Path, kept: pa.Table, rejected: pa.Table,
                        quarantined: list[Quarantined] = (), text_column: str = "text") -> dict:
    """``<out>/kept.parquet``, ``<out>/rejected.parquet`` (with ``drop_stage``/``drop_reason``)
    and, when there were malformed rows, ``<out>/quarantine.jsonl``. The text column gets its
    original name back. Returns a summary with the counts and paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def restore(t: pa.Table) -> pa.Table:
        if text_column == "text":
            return t
        names = [text_column if n == "text" else n for n in t.column_names]
        return t.rename_columns(["text" if n == "text_original" else n for n in names])

    write_parquet_atomic(restore(kept), out / "kept.parquet")
    write_parquet_atomic(restore(rejected), out / "rejected.parquet")
    qpath = out / "quarantine.jsonl"
    qpath.unlink(missing_ok=True)
    write_quarantine(qpath, list(quarantined))
    return {"kept": kept.num_rows, "rejected": rejected.num_rows, "quarantined": len(quarantined),
            "kept_file": str(out / "kept.parquet"), "rejected_file": str(out / "rejected.parquet"),
            "quarantine_file": str(qpath) if quarantined else None}
