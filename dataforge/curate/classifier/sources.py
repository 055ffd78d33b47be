"""Sources: the rows of one file that a classifier learns from.

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
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, ValidationError, field_validator

from dataforge.curate.classifier.common import (
    SHARED_DATA_VAR,
    ClassifierError,
    Spec,
    default_shared_data,
    validation_message,
)
from dataforge.hashing import file_sha256
from dataforge.tabular import InputError, Quarantined, read_text_table


class SourceSpec(Spec):
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
        raise ClassifierError(f"source {spec!r}: " + validation_message(err)) from None


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
