"""Reading user files of records, and writing kept / rejected Parquet: shared by every command
that takes "any JSONL or Parquet file" (``dataforge cot verify``, ``filter``, ``classify``,
``dedup``, ``decontam``) and by the seed and passage loaders.

JSON lines: a line that is not valid JSON, or not a JSON object, is *quarantined* with file,
line, reason and the raw text, and the rest of the file loads. Parquet: a file Arrow cannot read
is an error for the whole input (:class:`InputError`). Nothing is dropped silently: callers
write what was quarantined (:func:`write_quarantine`) and report the count.

Read limits (:class:`ReadLimits`; defaults overridable by environment variables) keep one input
from taking the process down, and are checked before anything is materialized:

* ``max_bytes`` (``DATAFORGE_MAX_INPUT_BYTES``, 4 GiB): a file's data once decompressed. A JSONL
  file's size; a Parquet file's uncompressed column chunks from its footer, then, while it is
  read in batches, the decoded size of every batch (a dictionary-encoded string column is
  measured from its dictionary and indices *before* it is decoded: the footer does not see a
  1 KB dictionary bomb). 4 GiB: every reader here holds a whole file (Arrow table or Python
  objects, which cost several times the bytes) in memory, so a bigger file should be sharded
  or go through the run store, not one read. Over it: :class:`InputError` for the file.
* ``max_rows`` (``DATAFORGE_MAX_INPUT_ROWS``, 20 million): records of one file (a Parquet
  file of a billion RLE-encoded rows is a few KB). Over it: :class:`InputError`.
* ``max_value_bytes`` (``DATAFORGE_MAX_VALUE_BYTES``, 16 MiB): one JSON line, or one string
  value of a Parquet row. The line is read in bounded chunks, never whole. Over it: that
  record is quarantined, the rest loads.
* ``max_depth`` (``DATAFORGE_MAX_JSON_DEPTH``, 64): nesting of a JSON line, found by a linear
  scan before ``json.loads`` (which would recurse); deeper: quarantined.

A JSON line that is not valid UTF-8 is quarantined ("invalid UTF-8"); other text (TSV, a JSON
array) is decoded with replacement and the count of replaced sequences is logged per file.
The raw text kept with a quarantined record is cut to ``QUARANTINE_RAW_CHARS`` characters
with a marker and its original length.

**Streaming.** The same readers also take an open stream and hold one record (or one batch) at
a time, never the file: :func:`iter_stream_lines`, :func:`iter_json_stream` (JSON lines),
:func:`iter_json_array_stream` (a JSON array), :func:`iter_delimited_stream` (CSV/TSV),
:func:`iter_checked_batches` (Arrow record batches) and :func:`iter_parquet_batches` with a
pyarrow ``filesystem``. The ``ingest`` stage reads its sources through them
(:mod:`dataforge.sources`); a caller that never holds a file passes limits without the per-file
``max_bytes``/``max_rows``.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dataforge.errors import DataforgeError

log = logging.getLogger("dataforge.tabular")

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
QUARANTINE_RAW_CHARS = 4 * KiB  # raw text kept with a quarantined record; the rest is cut

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


# what reading a broken Parquet file can raise (a footer with invalid UTF-8 names: UnicodeDecodeError)
PARQUET_ERRORS = (pa.ArrowException, OSError, UnicodeDecodeError)
# a JSON escape of a UTF-16 surrogate: valid JSON, but alone (unpaired) it is not text
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def lone_surrogate(raw: str, obj: object) -> bool:
    """Whether JSON ``raw`` (decoded to ``obj``) holds an unpaired surrogate escape such as
    ``"\\udc00"``: Python decodes it, but it cannot be written as UTF-8 (Arrow, files, HTTP)."""
    if "\\ud" not in raw and "\\uD" not in raw:  # what the pattern starts with; str's search is C-fast
        return False
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


LIMIT_ENV = {"max_bytes": "DATAFORGE_MAX_INPUT_BYTES", "max_rows": "DATAFORGE_MAX_INPUT_ROWS",
              "max_value_bytes": "DATAFORGE_MAX_VALUE_BYTES", "max_depth": "DATAFORGE_MAX_JSON_DEPTH"}


@dataclass(frozen=True)
class ReadLimits:
    """What one input file may hold (see the module docstring for the reasons of the defaults)."""

    max_bytes: int = 4 * GiB  # decompressed data of one file
    max_rows: int = 20_000_000  # records of one file
    max_value_bytes: int = 16 * MiB  # one JSON line / one Parquet string value
    max_depth: int = 64  # nesting of one JSON line

    def __post_init__(self) -> None:
        for name in LIMIT_ENV:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ReadLimits.{name} must be a positive whole number, got {v!r}")

    @classmethod
    def from_env(cls) -> ReadLimits:
        """The defaults, each overridden by its environment variable when set
        (``DATAFORGE_MAX_INPUT_BYTES``, ``..._INPUT_ROWS``, ``..._VALUE_BYTES``, ``..._JSON_DEPTH``)."""
        values = {}
        for name, env in LIMIT_ENV.items():
            raw = os.environ.get(env, "").strip()
            if raw:
                try:
                    values[name] = int(raw.replace("_", ""))
                except ValueError:
                    raise InputError(f"{env}={raw!r}: expected a whole number") from None
        try:
            return cls(**values)
        except ValueError as err:
            raise InputError(f"read limits from the environment: {err}") from None

    def env_name(self, name: str) -> str:
        return LIMIT_ENV[name]


@contextlib.contextmanager
def limits_in_env(**values: int | None) -> Iterator[None]:
    """Within the block, the read limits given (``max_bytes=...``; None: not given) apply through
    their environment variables, unless the variable is already set (the environment and the
    CLI's flags win over a config's ``inputs:`` section); restored after the block."""
    old = {}
    for name, value in values.items():
        env = LIMIT_ENV[name]
        if value is not None and env not in os.environ:
            old[env] = None
            os.environ[env] = str(value)
    try:
        yield
    finally:
        for env in old:
            os.environ.pop(env, None)


def read_limits(limits: ReadLimits | None = None) -> ReadLimits:
    """``limits``, or the defaults with the environment's overrides."""
    return limits if limits is not None else ReadLimits.from_env()


def _over(path: str | Path, what: str, value: int, limits: ReadLimits, name: str) -> InputError:
    return InputError(f"{path}: {what} {value:,}, over the limit of {getattr(limits, name):,} "
                      f"({limits.env_name(name)})")


_STRUCTURE = re.compile(r'["\[\]{}]')  # outside a JSON string: what opens a string or nests
_STRING_END = re.compile(r'(?:\\.|[^"\\])*"', re.S)  # inside one: up to its closing quote
_JSON_TOKEN_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def json_depth_over(line: str, max_depth: int) -> int | None:
    """The nesting depth reached by JSON text ``line`` when it exceeds ``max_depth``, else None;
    one linear pass over its brackets outside strings (``json.loads`` recurses per level)."""
    if line.count("[") + line.count("{") <= max_depth:
        return None
    depth = 0
    for m in _JSON_TOKEN_RE.finditer(line):
        ch = m.group()
        if ch == "[" or ch == "{":
            depth += 1
            if depth > max_depth:
                return depth
        elif ch == "]" or ch == "}":
            depth -= 1
    return None


def _nested_over(value: object, max_depth: int) -> bool:
    """Whether a parsed JSON value nests objects and arrays deeper than ``max_depth`` (a scalar:
    depth 0): the depth :func:`json_depth_over` finds in its text, when no object had a key twice
    (a repeated key's earlier value is not in the parsed value)."""
    todo = [(value, 1)]
    while todo:
        v, d = todo.pop()
        if type(v) is dict:
            children = v.values()
        elif type(v) is list:
            children = v
        else:
            continue
        if d > max_depth:
            return True
        for c in children:
            if type(c) is dict or type(c) is list:
                todo.append((c, d + 1))
    return False


class _LineDecoder:
    """``json.loads`` of a line with the depth check of :func:`json_depth_over` and the same
    results, without its pass over every line: the line is parsed first, and its depth read from
    the parsed value; only a line that does not parse, or has an object with a repeated key, is
    scanned. One per stream (it keeps a flag between calls: not shared by threads)."""

    def __init__(self, max_depth: int):
        self.max_depth = max_depth
        self.repeated = False
        self.decoder = json.JSONDecoder(object_pairs_hook=self._object)

    def _object(self, pairs: list) -> dict:
        d = dict(pairs)  # what the default decoder builds: the last value of a repeated key, in first place
        if len(d) != len(pairs):
            self.repeated = True
        return d

    def too_deep(self, line: str) -> bool:
        return json_depth_over(line, self.max_depth) is not None

    def loads(self, line: str) -> tuple[bool, object]:
        """(nested too deep, the value); the parse errors of ``json.loads`` (raised only when the
        line is not too deep, which is reported first)."""
        self.repeated = False
        try:
            if line.startswith("\ufeff"):  # as json.loads says it
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", line, 0)
            obj = self.decoder.decode(line)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            if self.too_deep(line):
                return True, None
            raise
        if self.repeated:
            return self.too_deep(line), obj
        return _nested_over(obj, self.max_depth), obj


@dataclass(frozen=True)
class Quarantined:
    """A record that could not be used, with where it was and why."""

    file: str
    line: int
    reason: str
    raw: str  # cut to QUARANTINE_RAW_CHARS characters, with a marker
    record: int | None = None  # index in a JSON array; None for line formats
    raw_length: int | None = None  # the raw text's length in characters when it was cut

    def __post_init__(self) -> None:
        if len(self.raw) > QUARANTINE_RAW_CHARS:
            n = self.raw_length if self.raw_length is not None else len(self.raw)
            object.__setattr__(self, "raw_length", n)
            object.__setattr__(self, "raw", f"{self.raw[:QUARANTINE_RAW_CHARS]}… [cut: {n:,} characters in all]")

    def as_dict(self) -> dict:
        d: dict = {"file": self.file, "line": self.line, "reason": self.reason, "raw": self.raw}
        if self.record is not None:
            d["record"] = self.record
        if self.raw_length is not None:
            d["raw_length"] = self.raw_length
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


_BOM = b"\xef\xbb\xbf"
_REPLACEMENT = "\ufffd"


def _decode(data: bytes) -> tuple[str, int]:
    """(text, number of invalid UTF-8 sequences replaced by U+FFFD)."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        return text, text.count(_REPLACEMENT) - data.count(_REPLACEMENT.encode("utf-8"))


def check_file_size(path: Path, limits: ReadLimits | None = None) -> None:
    """:class:`InputError` when a (not compressed) text file is bigger than ``max_bytes``."""
    lim = read_limits(limits)
    size = os.path.getsize(path)
    if size > lim.max_bytes:
        raise _over(path, "size in bytes", size, lim, "max_bytes")


def iter_text_lines(path: Path, limits: ReadLimits | None = None) -> Iterator[tuple[int, str, str | None]]:
    """(line number from 1, line without its line break, problem or None) for each line, read
    in chunks of at most ``max_value_bytes`` (a line longer than that is never held whole: it
    comes with a problem and its head only). Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` (as
    Python's text mode reads them); a byte-order mark is not data. A line that is not valid
    UTF-8 comes decoded with replacement and the problem "invalid UTF-8 (...)"."""
    with open(path, "rb") as f:
        yield from iter_stream_lines(f, limits)


def iter_stream_lines(f: BinaryIO, limits: ReadLimits | None = None) -> Iterator[tuple[int, str, str | None]]:
    """:func:`iter_text_lines` over an open binary stream (anything with ``readline(size)``: a
    file, a decompressing stream, an object on a pyarrow filesystem in an ``io.BufferedReader``:
    :func:`dataforge.sources.open_stream`); the same lines, numbers and problems, in bounded memory."""
    lim = read_limits(limits)
    cap = lim.max_value_bytes
    lineno = 0
    first = True
    while True:
        chunk = f.readline(cap + 1)
        if not chunk:
            break
        if first:
            first = False
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM):]
        if len(chunk) > cap and not chunk.endswith(b"\n"):  # over-long: skip the rest unkept
            size, head = len(chunk), chunk[:QUARANTINE_RAW_CHARS * 4]
            while True:
                more = f.readline(MiB)
                if not more:
                    break
                size += len(more)
                if more.endswith(b"\n"):
                    break
            lineno += 1
            text, _ = _decode(head)
            yield lineno, text, (f"line of {size:,} bytes, over the limit of {cap:,} bytes for one record "
                                 f"({lim.env_name('max_value_bytes')})")
            continue
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        parts = chunk.split(b"\n")
        if chunk.endswith(b"\n"):
            parts.pop()
        for part in parts:
            lineno += 1
            text, bad = _decode(part)
            yield lineno, text, (f"invalid UTF-8 ({bad} byte sequence{'s that are' if bad != 1 else ' that is'} not UTF-8)"
                                 if bad else None)


def iter_lines(path: Path, limits: ReadLimits | None = None) -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its newline) of a text file; a byte-order mark is not
    data. Invalid UTF-8 is replaced (U+FFFD) and the lines that held some are counted and
    logged once for the file; a line over ``max_value_bytes`` comes cut to its head, logged."""
    path = Path(path)
    check_file_size(path, limits)
    invalid = 0
    for lineno, text, problem in iter_text_lines(path, limits):
        if problem is not None:
            if problem.startswith("invalid UTF-8"):
                invalid += 1
            else:
                log.warning("%s line %d: %s (cut)", path, lineno, problem)
        yield lineno, text
    if invalid:
        log.warning("%s: %d line%s with invalid UTF-8 (read with U+FFFD in place of the bad bytes)",
                    path, invalid, "s" if invalid != 1 else "")


def iter_json_lines(path: Path, limits: ReadLimits | None = None
                    ) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line, object or None, error or None, raw line) for each non-blank line of a JSONL file.
    A line over ``max_value_bytes``, nested deeper than ``max_depth``, or not valid UTF-8 is an
    error for that line; more than ``max_rows`` lines, or a file over ``max_bytes``, is an
    :class:`InputError`."""
    path = Path(path)
    lim = read_limits(limits)
    check_file_size(path, lim)
    with open(path, "rb") as f:
        yield from iter_json_stream(f, path, lim)


def iter_json_stream(f: BinaryIO, name: str | Path, limits: ReadLimits | None = None
                     ) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """:func:`iter_json_lines` over an open binary stream (``name`` for messages): the same
    records and errors, ``max_rows`` included; the size of a stream is not known up front, so
    ``max_bytes`` is the caller's to check."""
    path = name
    lim = read_limits(limits)
    rows = 0
    decoder = _LineDecoder(lim.max_depth)
    for lineno, raw, problem in iter_stream_lines(f, lim):
        line = raw.strip()
        if not line and problem is None:
            continue
        rows += 1
        if rows > lim.max_rows:
            raise InputError(f"{path}: more than {lim.max_rows:,} records (line {lineno:,}), over the limit of "
                             f"{lim.max_rows:,} rows ({lim.env_name('max_rows')})")
        if problem is not None:
            yield lineno, None, problem, raw
            continue
        try:
            deep, obj = decoder.loads(line)
        except json.JSONDecodeError as err:
            yield lineno, None, f"not valid JSON: {err.msg} at column {err.colno}", raw
            continue
        except RecursionError:
            yield lineno, None, "JSON nested too deeply to read", raw
            continue
        except ValueError as err:  # an integer of more than 4300 digits
            yield lineno, None, f"not readable JSON: {err}", raw
            continue
        if deep:
            yield lineno, None, (f"JSON nested deeper than {lim.max_depth} levels ({lim.env_name('max_depth')})"), raw
            continue
        if not isinstance(obj, dict):
            yield lineno, None, f"expected a JSON object, got {type(obj).__name__}", raw
            continue
        if lone_surrogate(line, obj):
            yield lineno, None, "invalid Unicode: an unpaired surrogate escape (\\udXXX) is not text", raw
            continue
        yield lineno, obj, None, raw


def iter_json_array_stream(f: BinaryIO, name: str | Path, limits: ReadLimits | None = None,
                           chunk_bytes: int = MiB) -> Iterator[tuple[int, int, dict | None, str | None, str]]:
    """(record number from 1, line where it starts, object or None, error or None, raw text) for
    each record of a JSON array (``[{...}, {...}]``, the layout of Alpaca-style ``.json`` files),
    decoded one record at a time from an open binary stream: memory holds one record and a read
    chunk, never the file. A record over ``max_value_bytes`` (skipped without being held: its
    brackets are counted outside strings) or nested deeper than ``max_depth`` is an error for
    that record; text that is not JSON is one error for the rest of the file (an array cannot be
    re-synchronised). Invalid UTF-8 is read with U+FFFD and counted in the log."""
    lim = read_limits(limits)
    cap = lim.max_value_bytes
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    dec = json.JSONDecoder()
    buf, pos, line, eof = "", 0, 1, False
    replaced = 0

    def more(n: int) -> bool:
        nonlocal buf, pos, eof, replaced
        if eof:
            return False
        data = f.read(n)
        if not data:
            eof = True
            buf = buf[pos:] + decoder.decode(b"", final=True)
        else:
            text = decoder.decode(data)
            replaced += text.count(_REPLACEMENT) - data.count(_REPLACEMENT.encode("utf-8"))
            buf = buf[pos:] + text
        pos = 0
        return True

    def skip_ws() -> bool:
        """Move past whitespace (counting lines); False at the end of the stream."""
        nonlocal pos, line
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                if buf[pos] == "\n":
                    line += 1
                pos += 1
            if pos < len(buf):
                return True
            if not more(chunk_bytes):
                return False

    def skip_value() -> int | None:
        """Move past the object, array or string at ``pos`` without keeping it (one too long to
        decode): brackets are counted outside strings. Its length in characters; None when the
        stream ends first."""
        nonlocal pos, line
        depth, in_string, size = 0, False, 0
        if buf[pos] not in "{[\"":
            return None
        while True:
            while True:
                m = _STRING_END.match(buf, pos) if in_string else _STRUCTURE.search(buf, pos)
                if m is None:  # the rest of the buffer is inside the value; an unpaired "\\" at its end waits
                    tail = len(buf) - len(buf.rstrip("\\"))
                    stop = max(pos, len(buf) - (tail % 2 if in_string else 0))
                    size += stop - pos
                    line += buf.count("\n", pos, stop)
                    pos = stop
                    break
                line += buf.count("\n", pos, m.end())
                size += m.end() - pos
                pos = m.end()
                ch = m.group()[-1]
                if in_string:
                    in_string = False  # the closing quote (escapes are matched with what they escape)
                    if depth == 0:
                        return size
                elif ch == '"':
                    in_string = True
                elif ch in "[{":
                    depth += 1
                else:
                    depth -= 1
                    if depth == 0:
                        return size
            if not more(chunk_bytes):
                return None

    def rest_error(why: str, record: int) -> tuple[int, int, None, str, str]:
        return record, line, None, f"{why}; the rest of the file cannot be read", buf[pos: pos + 200]

    if not skip_ws():
        return
    if buf[pos] != "[":
        what = "an object" if buf[pos] == "{" else "something else"
        yield rest_error(f"expected a JSON array of records, found {what}", 1)
        return
    pos += 1
    record = 0
    rows = 0
    while True:
        if not skip_ws():
            yield rest_error("the JSON array is not closed (truncated file?)", record + 1)
            break
        if buf[pos] == "]":
            break
        if record and buf[pos] == ",":
            pos += 1
            if not skip_ws():
                yield rest_error("the JSON array is not closed (truncated file?)", record + 1)
                break
        elif record:
            yield rest_error(f"expected ',' or ']' after record {record}", record + 1)
            break
        record += 1
        rows += 1
        if rows > lim.max_rows:
            raise InputError(f"{name}: more than {lim.max_rows:,} records (record {record:,}), over the limit of "
                             f"{lim.max_rows:,} rows ({lim.env_name('max_rows')})")
        want = chunk_bytes
        too_long = False
        while True:
            try:
                obj, end = dec.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as err:
                if len(buf) - pos > cap + 1:  # no end within the limit: skipped below, unkept
                    too_long = True
                    break
                if not more(want):  # the whole stream is here: the record is wrong, not cut
                    yield rest_error(f"not valid JSON: {err.msg} at line {line + buf.count(chr(10), pos, err.pos)}",
                                     record)
                    return
                want = min(2 * want, cap + 2)
            except (RecursionError, ValueError) as err:  # nested too deep; an integer of > 4300 digits
                why = ("JSON nested too deeply to read" if isinstance(err, RecursionError)
                       else f"not readable JSON: {err}")
                yield rest_error(why, record)
                return
        if too_long:
            start, head = line, buf[pos: pos + QUARANTINE_RAW_CHARS]
            size = skip_value()
            if size is None:
                yield rest_error("the JSON array is not closed (truncated file?)", record)
                return
            yield record, start, None, (f"record of {size:,} characters, over the limit of {cap:,} bytes for one "
                                        f"record ({lim.env_name('max_value_bytes')})"), head
            continue
        raw = buf[pos:end]
        start = line
        line += raw.count("\n")
        pos = end
        if len(raw.encode("utf-8", "surrogatepass")) > cap:
            yield record, start, None, (f"record of {len(raw):,} characters, over the limit of {cap:,} bytes for one "
                                        f"record ({lim.env_name('max_value_bytes')})"), raw
        elif json_depth_over(raw, lim.max_depth) is not None:
            yield record, start, None, (f"JSON nested deeper than {lim.max_depth} levels "
                                        f"({lim.env_name('max_depth')})"), raw
        elif not isinstance(obj, dict):
            yield record, start, None, f"expected a JSON object, got {type(obj).__name__}", raw
        elif lone_surrogate(raw, obj):
            yield record, start, None, "invalid Unicode: an unpaired surrogate escape (\\udXXX) is not text", raw
        else:
            yield record, start, obj, None, raw
    if replaced:
        log.warning("%s: %d byte sequence%s that are not UTF-8 (read as U+FFFD)", name, replaced,
                    "s" if replaced != 1 else "")


# --- Parquet -----------------------------------------------------------------------------------

def _is_bytes_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def open_parquet(path: Path, limits: ReadLimits | None = None, columns: list[str] | None = None,
                 filesystem: pafs.FileSystem | None = None) -> pq.ParquetFile:
    """The file, its footer checked against the limits: rows and the uncompressed size of its
    column chunks (of ``columns``, or all). String and binary columns are read as dictionaries
    (see :func:`iter_parquet_batches`). :class:`InputError` when unreadable or over a limit.
    With ``filesystem`` (a pyarrow filesystem), ``path`` is a path on it."""
    path = Path(path) if filesystem is None else path
    lim = read_limits(limits)

    def source():
        return path if filesystem is None else filesystem.open_input_file(str(path))

    try:
        pf = pq.ParquetFile(source())
        decode_field_names(pf.schema_arrow)
        md = pf.metadata
        wanted = None if columns is None else set(columns)
        size = 0
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                cc = rg.column(c)
                if wanted is None or cc.path_in_schema.split(".")[0] in wanted:
                    size += cc.total_uncompressed_size
        dict_cols = [f.name for f in pf.schema_arrow if _is_bytes_type(f.type)
                     and (wanted is None or f.name in wanted)]
    except PARQUET_ERRORS as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None
    if md.num_rows > lim.max_rows:
        raise _over(path, "rows", md.num_rows, lim, "max_rows")
    if size > lim.max_bytes:
        raise _over(path, "uncompressed size in bytes", size, lim, "max_bytes")
    if not dict_cols:
        return pf
    try:
        return pq.ParquetFile(source(), read_dictionary=dict_cols)
    except PARQUET_ERRORS as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None


def _dense_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema],
                     metadata=schema.metadata)


def measure_batch(batch: pa.RecordBatch, limits: ReadLimits | None = None
                  ) -> tuple[int, pa.Array | None, dict[int, str]]:
    """(decoded size in bytes, mask of the rows holding a string or binary value over
    ``max_value_bytes`` or None, reason per such row index) of one batch, measured before a
    dictionary-encoded string column is decoded (its values' lengths taken by the indices)."""
    lim = read_limits(limits)
    rows = batch.num_rows
    size = 0
    over = None
    reasons: dict[int, str] = {}
    for i, f in enumerate(batch.schema):
        col = batch.column(i)
        if pa.types.is_dictionary(col.type) and _is_bytes_type(col.type.value_type):
            lengths = pc.take(pc.binary_length(col.dictionary), col.indices)
        elif _is_bytes_type(col.type):
            lengths = pc.binary_length(col)
        else:
            size += col.nbytes
            continue
        size += (pc.sum(lengths).as_py() or 0) + 8 * rows
        big = pc.fill_null(pc.greater(lengths, lim.max_value_bytes), False)
        if pc.any(big).as_py():
            for r, ln in zip(pc.indices_nonzero(big).to_pylist(), pc.filter(lengths, big).to_pylist()):
                reasons.setdefault(r, f"value of column {f.name!r} is {ln:,} bytes, over the limit of "
                                      f"{lim.max_value_bytes:,} ({lim.env_name('max_value_bytes')})")
            over = big if over is None else pc.or_(over, big)
    return size, over, reasons


def iter_parquet_batches(path: Path, limits: ReadLimits | None = None, batch_size: int = 4096,
                         columns: list[str] | None = None, filesystem: pafs.FileSystem | None = None
                         ) -> Iterator[tuple[int, pa.RecordBatch, pa.Array, list[tuple[int, str]]]]:
    """(rows read so far, batch, row numbers of the batch's rows from 1 (int64), rejected rows) for a
    Parquet file read in batches. Before a batch is decoded its size is known (a string column
    arrives as a dictionary: its values' lengths taken by the indices give the decoded size
    without decoding); the file's total over ``max_bytes`` is an :class:`InputError`, and a row
    with a string value over ``max_value_bytes`` is left out of the batch and returned as
    (row, reason). Batches are dense (dictionaries decoded) and valid UTF-8."""
    path = Path(path) if filesystem is None else path
    lim = read_limits(limits)
    pf = open_parquet(path, lim, columns, filesystem)
    yield from _checked(pf.iter_batches(batch_size=batch_size, columns=columns), path, lim, "Parquet file")


def read_parquet(path: Path, limits: ReadLimits | None = None, columns: list[str] | None = None
                 ) -> tuple[pa.Table, pa.Array, list[tuple[int, str]]]:
    """(table, row number from 1 of each of its rows, rejected (row, reason)) of a Parquet file
    read within the limits (:func:`iter_parquet_batches`)."""
    path = Path(path)
    batches: list[pa.RecordBatch] = []
    numbers: list[pa.Array] = []
    rejected: list[tuple[int, str]] = []
    schema = None
    for _, batch, nums, bad in iter_parquet_batches(path, limits, columns=columns):
        schema = batch.schema
        batches.append(batch)
        numbers.append(nums)
        rejected.extend(bad)
    if schema is None:
        try:
            full = pq.read_schema(path)
        except PARQUET_ERRORS as err:
            raise InputError(f"{path}: not a readable Parquet file: {err}") from None
        schema = _dense_schema(pa.schema([full.field(c) for c in columns]) if columns else full)
    try:
        rows = pa.concat_arrays(numbers) if numbers else pa.array([], pa.int64())
        return pa.Table.from_batches(batches, schema=schema), rows, rejected
    except PARQUET_ERRORS as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None


def iter_checked_batches(batches: Iterable[pa.RecordBatch], name: str | Path, limits: ReadLimits | None = None
                         ) -> Iterator[tuple[int, pa.RecordBatch, pa.Array, list[tuple[int, str]]]]:
    """:func:`iter_parquet_batches`' checks over any stream of record batches (an Arrow IPC
    stream, a saved ``datasets`` dataset): (rows read so far, batch, row numbers from 1, rows
    left out with their reason). A row with a string value over ``max_value_bytes`` is left out;
    ``max_rows`` and ``max_bytes`` over the whole stream, and strings that are not UTF-8, are an
    :class:`InputError` naming ``name``."""
    yield from _checked(batches, name, read_limits(limits), "Arrow stream", count_rows=True)


def _checked(batches: Iterable[pa.RecordBatch], name: str | Path, lim: ReadLimits, what: str,
             count_rows: bool = False) -> Iterator[tuple[int, pa.RecordBatch, pa.Array, list[tuple[int, str]]]]:
    """The checks of :func:`iter_parquet_batches` and :func:`iter_checked_batches` over a stream
    of batches (``what`` names it in errors; ``count_rows``: ``max_rows`` is checked here, a
    Parquet file's being checked from its footer first)."""
    n = total = 0
    it = iter(batches)
    while True:
        try:  # a file whose footer reads but whose pages are corrupt fails here, not above
            batch = next(it)
        except StopIteration:
            break
        except PARQUET_ERRORS as err:
            raise InputError(f"{name}: not a readable {what} (after row {n}): {err}") from None
        rows = batch.num_rows
        if count_rows and n + rows > lim.max_rows:
            raise InputError(f"{name}: more than {lim.max_rows:,} rows, over the limit of {lim.max_rows:,} rows "
                             f"({lim.env_name('max_rows')})")
        size, over, reasons = measure_batch(batch, lim)
        total += size
        if total > lim.max_bytes:
            raise _over(name, f"decoded size in bytes (by row {n + rows:,})", total, lim, "max_bytes")
        numbers = pa.array(range(n + 1, n + rows + 1), pa.int64())
        rejected = [(n + 1 + r, why) for r, why in sorted(reasons.items())]
        if over is not None:
            keep = pc.invert(over)
            batch = batch.filter(keep)
            numbers = numbers.filter(keep)
        arrays = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
        try:
            batch = pa.RecordBatch.from_arrays(arrays, schema=_dense_schema(batch.schema))
            batch.validate(full=True)  # strings that are not UTF-8
        except PARQUET_ERRORS as err:
            raise InputError(f"{name}: not a readable {what} (after row {n}): {err}") from None
        n += rows
        yield n, batch, numbers, rejected


def iter_delimited_stream(f: BinaryIO, name: str | Path, limits: ReadLimits | None = None, delimiter: str = ",",
                          column_names: list[str] | None = None, quoting: bool = True
                          ) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line where the record starts, record or None, error or None, raw text) for each record
    of a CSV or TSV stream, read line by line (:func:`iter_stream_lines`, so memory holds one
    record). The first line names the columns unless ``column_names`` are given (a file without
    a header). ``quoting``: fields may be quoted with ``"`` (and then hold the delimiter or line
    breaks); off, every line is one record and quotes are text (TSV as most tools write it). A
    record with more or fewer fields than there are columns, one holding invalid UTF-8, or one
    over ``max_value_bytes`` is an error for that record; more than ``max_rows`` records is an
    :class:`InputError`."""
    import csv

    lim = read_limits(limits)
    # a field may be as long as a record may be (the module default is 128 KiB); process-wide,
    # so only ever raised
    csv.field_size_limit(max(csv.field_size_limit(), lim.max_value_bytes))
    problems: dict[int, str] = {}
    raws: list[str] = []

    def lines() -> Iterator[str]:
        for lineno, text, problem in iter_stream_lines(f, lim):
            if problem is not None:
                problems[lineno] = problem
            raws.append(text)
            yield text + "\n"

    reader = csv.reader(lines(), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
                        strict=False)
    names = list(column_names) if column_names else None
    last = 0
    rows = 0
    while True:
        raws.clear()
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            start, last = last + 1, reader.line_num
            kind = "TSV" if delimiter == "\t" else "CSV"
            yield start, None, f"not a readable {kind} record: {err}", "\n".join(raws)
            continue
        start, last = last + 1, reader.line_num
        raw = "\n".join(raws)
        if not fields or fields == [""]:
            continue  # a blank line
        bad = [problems.pop(i) for i in range(start, last + 1) if i in problems]
        if names is None:
            if bad:
                raise InputError(f"{name} line {start}: the header line cannot be read: {bad[0]}")
            names = fields
            if len(set(names)) != len(names):
                raise InputError(f"{name} line {start}: the header names a column twice ({', '.join(names)})")
            continue
        rows += 1
        if rows > lim.max_rows:
            raise InputError(f"{name}: more than {lim.max_rows:,} records (line {start:,}), over the limit of "
                             f"{lim.max_rows:,} rows ({lim.env_name('max_rows')})")
        if bad:
            yield start, None, bad[0], raw
        elif len(fields) != len(names):
            yield start, None, f"{len(fields)} fields where the header has {len(names)}", raw
        elif len(raw.encode("utf-8", "surrogatepass")) > lim.max_value_bytes:
            yield start, None, (f"record of {len(raw):,} characters, over the limit of {lim.max_value_bytes:,} "
                                f"bytes for one record ({lim.env_name('max_value_bytes')})"), raw
        else:
            yield start, dict(zip(names, fields)), None, raw


def iter_records(path: Path, batch_size: int = 4096, limits: ReadLimits | None = None
                 ) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line or row number, record or None, error or None, raw text) for each record of a
    JSON-lines or Parquet file (Parquet rows are numbered from 1 and carry no raw text), within
    the read limits (:class:`ReadLimits`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        yield from iter_json_lines(path, limits)
    elif suffix == ".parquet":
        for _, batch, numbers, rejected in iter_parquet_batches(path, limits, batch_size):
            bad = dict(rejected)
            recs = iter(batch.to_pylist())
            for num in sorted([*numbers.to_pylist(), *bad]):
                if num in bad:
                    yield num, None, bad[num], ""
                else:
                    yield num, next(recs), None, ""
    else:
        raise InputError(f"{path}: unknown input format {suffix!r}; expected .jsonl or .parquet")


#: rows per table of :func:`iter_text_tables` (the standalone commands' unit of memory)
STREAM_BATCH_ROWS = 20_000


def read_text_table(path: str | Path, text_column: str = "text", keep_columns: bool = True,
                    limits: ReadLimits | None = None) -> tuple[pa.Table, list[Quarantined]]:
    """A table with a ``text`` column (renamed from ``text_column``), ``source_file`` and
    ``source_row`` (line of a JSONL file, row from 1 of a Parquet file), and an ``id`` (the
    file's own ``id`` when it has a string one, else a content hash of the text) — the columns
    the curation functions need to run on any user file. Rows whose text is missing or not a
    string are quarantined, as are malformed JSON lines and records over a read limit
    (:class:`ReadLimits`). The whole file: :func:`iter_text_tables` gives it in batches."""
    tables, quarantined = [], []
    for table, q in iter_text_tables(path, text_column, keep_columns, limits, batch_rows=1 << 62):
        tables.append(table)
        quarantined.extend(q)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    return table, quarantined


def iter_text_tables(path: str | Path, text_column: str = "text", keep_columns: bool = True,
                     limits: ReadLimits | None = None, batch_rows: int = STREAM_BATCH_ROWS
                     ) -> Iterator[tuple[pa.Table, list[Quarantined]]]:
    """:func:`read_text_table` in tables of at most ``batch_rows`` rows, with each table's
    quarantined records: memory bounded by one table, whatever the file's size. At least one
    table (maybe empty) comes. A JSON-lines file's column types are inferred per table (a
    column whose values mix types across tables is unified when written:
    :class:`KeptRejectedWriter`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    yielded = False
    if suffix == ".parquet":
        try:
            schema = pq.read_schema(path)
        except PARQUET_ERRORS as err:
            raise InputError(f"{path}: not a readable Parquet file: {err}") from None
        if text_column not in schema.names:
            raise InputError(f"{path}: no column {text_column!r} (columns: {', '.join(schema.names)}); "
                             f"name the text column with --text-column")
        t = schema.field(text_column).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)):
            raise InputError(f"{path}: column {text_column!r} is {t}, expected a string column")
        for _, batch, numbers, rejected in iter_parquet_batches(path, limits, min(batch_rows, 1 << 20)):
            quarantined = [Quarantined(str(path), r, why, "") for r, why in rejected]
            table = pa.Table.from_batches([batch]).append_column("source_row", numbers)
            col = table.column(text_column)
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                raise InputError(f"{path}: column {text_column!r} is {col.type}, expected a string column")
            bad = pc.is_null(col)
            if pc.any(bad).as_py():
                for r in pc.filter(numbers, bad).to_pylist():
                    quarantined.append(Quarantined(str(path), r, f"{text_column!r} is null", ""))
                table = table.filter(pc.invert(bad))
            yielded = True
            yield _finish_text_table(table, path, text_column, keep_columns, quarantined)
        if not yielded:
            empty = schema.empty_table().append_column("source_row", pa.array([], pa.int64()))
            yield _finish_text_table(empty, path, text_column, keep_columns, [])
        return
    if suffix not in JSONL_SUFFIXES:
        raise InputError(f"{path}: unknown input format {suffix!r}; expected .jsonl or .parquet")
    recs: list[dict] = []
    lines: list[int] = []
    quarantined: list[Quarantined] = []

    def table_of() -> pa.Table:
        table = records_table(recs) if recs else pa.table({text_column: pa.array([], pa.string())})
        return table.append_column("source_row", pa.array(lines, pa.int64()))

    for lineno, obj, err, raw in iter_json_lines(path, limits):
        if obj is None:
            quarantined.append(Quarantined(str(path), lineno, err or "unreadable", raw))
            continue
        if not isinstance(obj.get(text_column), str):
            what = "missing" if text_column not in obj else f"not a string ({type(obj[text_column]).__name__})"
            quarantined.append(Quarantined(str(path), lineno, f"{text_column!r} is {what}", raw))
            continue
        recs.append(obj)
        lines.append(lineno)
        if len(recs) >= batch_rows:
            yield _finish_text_table(table_of(), path, text_column, keep_columns, quarantined)
            yielded = True
            recs, lines, quarantined = [], [], []
    if recs or quarantined or not yielded:
        yield _finish_text_table(table_of(), path, text_column, keep_columns, quarantined)


def as_text(values: list) -> pa.Array:
    """A string array of ``values``: strings as they are, anything else as its JSON text."""
    return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
                     for v in values], pa.string())


def records_table(recs: list[dict]) -> pa.Table:
    """A table of JSON records; a field whose values Arrow cannot hold in one column (mixed
    types across rows, integers beyond int64) becomes a string column of their text (JSON for
    what is not a string) instead of failing the table."""
    try:
        return pa.Table.from_pylist(recs)
    except (pa.ArrowException, OverflowError):
        pass
    cols = {}
    for key in dict.fromkeys(k for r in recs for k in r):
        values = [r.get(key) for r in recs]
        try:
            cols[key] = pa.array(values)
        except (pa.ArrowException, OverflowError):
            cols[key] = as_text(values)
    return pa.table(cols)


def _content_ids(texts: list[str]) -> list[str]:
    return [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest() for t in texts]


def _finish_text_table(table: pa.Table, path: Path, text_column: str, keep_columns: bool,
                       quarantined: list[Quarantined]) -> tuple[pa.Table, list[Quarantined]]:
    """The columns every standalone command's rows have: ``text``, ``source_row``,
    ``source_file``, ``id`` (see :func:`read_text_table`)."""
    for q in quarantined:
        log.warning("%s line %d: %s (quarantined)", q.file, q.line, q.reason)
    if not keep_columns:
        table = table.select([text_column, "source_row"] + (["id"] if "id" in table.column_names else []))
    if text_column != "text":
        if "text" in table.column_names:
            table = table.rename_columns(["text_original" if n == "text" else n for n in table.column_names])
        table = table.rename_columns(["text" if n == text_column else n for n in table.column_names])
    table = table.append_column("source_file", pa.array([str(path)] * table.num_rows, pa.string()))
    if "id" not in table.column_names or not pa.types.is_string(table.schema.field("id").type):
        if "id" in table.column_names:
            table = table.rename_columns(["source_id" if n == "id" else n for n in table.column_names])
        table = table.append_column("id", pa.array(_content_ids(table.column("text").to_pylist()), pa.string()))
    elif table.column("id").null_count:
        # some rows have their own id, some none: those get the content hash (every row has an id)
        own = table.column("id").to_pylist()
        missing = [i for i, v in enumerate(own) if v is None]
        texts = table.column("text").take(pa.array(missing)).to_pylist()
        for i, h in zip(missing, _content_ids(texts)):
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


class KeptRejectedWriter:
    """:func:`write_kept_rejected` for a stream of tables: ``kept.parquet`` and
    ``rejected.parquet`` (and ``quarantine.jsonl``) under ``out_dir``, written as the tables
    come, in bounded memory. Each table goes to a part file in a hidden folder; :meth:`close`
    unifies the parts' schemas (a JSON-lines column whose type differs between tables: null
    and a type become that type, numbers widen; types that do not unify become their text)
    and streams the parts, in order, into each file under a temporary name, renamed into place
    at the end (a crash leaves no half-written file under the final name)."""

    def __init__(self, out_dir: str | Path, text_column: str = "text"):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.text_column = text_column
        self.parts = Path(tempfile.mkdtemp(prefix=".parts-", dir=self.out))
        self.files: dict[str, list[Path]] = {"kept": [], "rejected": []}
        self.rows = {"kept": 0, "rejected": 0}
        self.empty: dict[str, pa.Schema] = {}

    def _restore(self, t: pa.Table) -> pa.Table:
        if self.text_column == "text":
            return t
        names = [self.text_column if n == "text" else n for n in t.column_names]
        return t.rename_columns(["text" if n == "text_original" else n for n in names])

    def write(self, kept: pa.Table, rejected: pa.Table) -> None:
        for name, table in (("kept", kept), ("rejected", rejected)):
            table = self._restore(table)
            self.empty.setdefault(name, table.schema)
            if table.num_rows == 0:
                continue
            part = self.parts / f"{name}-{len(self.files[name]):06d}.parquet"
            pq.write_table(table, part, compression="zstd")
            self.files[name].append(part)
            self.rows[name] += table.num_rows

    def close(self, quarantined: list[Quarantined] = ()) -> dict:
        try:
            for name in ("kept", "rejected"):
                self._merge(name)
        finally:
            import shutil

            shutil.rmtree(self.parts, ignore_errors=True)
        qpath = self.out / "quarantine.jsonl"
        qpath.unlink(missing_ok=True)
        write_quarantine(qpath, list(quarantined))
        return {"kept": self.rows["kept"], "rejected": self.rows["rejected"], "quarantined": len(quarantined),
                "kept_file": str(self.out / "kept.parquet"), "rejected_file": str(self.out / "rejected.parquet"),
                "quarantine_file": str(qpath) if quarantined else None}

    def _merge(self, name: str) -> None:
        parts = self.files[name]
        path = self.out / f"{name}.parquet"
        if not parts:
            write_parquet_atomic(self.empty.get(name, pa.schema([])).empty_table(), path)
            return
        schemas = [pq.read_schema(p) for p in parts]
        schema = unify_loosely(schemas)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=self.out)
        os.close(fd)
        try:
            with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
                for p in parts:
                    w.write_table(conform(pq.read_table(p), schema))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def unify_loosely(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for tables of the same file read in parts: ``pa.unify_schemas`` (permissive:
    null and a type give the type, numbers widen); a field whose types still conflict becomes
    a string (its values' text)."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    names: list[str] = []
    types: dict[str, list[pa.DataType]] = {}
    for sch in schemas:
        for f in sch:
            if f.name not in types:
                names.append(f.name)
                types[f.name] = []
            types[f.name].append(f.type)
    fields = []
    for n in names:
        try:
            fields.append(pa.unify_schemas([pa.schema([(n, t)]) for t in types[n]], promote_options="permissive")[0])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            fields.append(pa.field(n, pa.string()))
    return pa.schema(fields)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order and types (missing columns as nulls; a
    column that cannot be cast becomes the JSON text of its values)."""
    cols = []
    for f in schema:
        if f.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        if col.type == f.type:
            cols.append(col)
            continue
        try:
            cols.append(pc.cast(col, f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            cols.append(as_text(col.to_pylist()).cast(f.type))
    return pa.Table.from_arrays(cols, schema=schema)
