"""The sample browser's data: one DuckDB table of a run's samples, filters, facets, pages, a
sample's whole story, two runs side by side, and labels.

**The samples.** Every row a run generated ends once: as a row of the final stage (kept) or as a
dropped row of the stage that dropped it. :class:`SampleIndex` reads exactly those files -- the
kept shards of the run's last committed curation stage (of every committed generation stage when
there is none) and every committed rejected shard, from their manifests (checked with ``verify``)
-- into one in-memory DuckDB table ``samples``, narrow: what the list, the facets and the story's
links need, not the text. A final row carries every earlier stage's columns, so a sample's
shard row is its whole path. The table holds ``_n`` (the row's place: file, then row in the file:
the final stage's rows first, then the dropped ones stage by stage), ``id``, the facet columns as
ENUMs (``kind``, ``_status`` kept/dropped, ``drop_stage``, ``_reason`` -- the drop reason without
its details, ``near_duplicate_of:<id>`` -> ``near_duplicate_of`` --, ``topic``, ``audience``,
``style``, ``_source`` -- seed source or ingest source --, ``_gen_stage``), every score column
(``*_score``, ``gen_topic_similarity``) with its histogram bin, ``dedup_cluster``, the CoT columns
that tie a question's samples together, and ``_snippet`` (the first 200 characters). A sample's
page reads its one row group from its shard. Embedding columns (lists of numbers) are left out.

**Read-only.** The shards, manifests and ``run.json`` are only read; the request cache is opened
read-only (SQLite ``mode=ro``). Labels are the one thing written: new files under
``<run>/labels/`` (:mod:`dataforge.browse.labels`).

**Filters** (:class:`Filters`, the page's URL query string): ``q`` (words that must all occur
in the text, case-insensitive; ``"a phrase"``; ``/regex/``; a sample id or its start, alone), one or more values
per facet (``kind``, ``status``, ``stage``, ``reason``, ``topic``, ``audience``, ``style``,
``source``, ``label``; ``(none)`` for a missing value) and score ranges
(``quality_score=0.5:0.9``, either side may be empty). A search scans the text column of the
shards once (DuckDB, both cores) and keeps the matching rows for the next pages and facet changes
(the last :data:`SEARCH_CACHE` searches). Facet counts are computed with every filter but the
facet's own (so a facet shows its alternatives): one grouping-sets query for the facets without a
filter, one query per facet or range that has one; those of no filter once.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from dataforge.browse.labels import (
    LABEL_VALUES,
    default_user,
    read_labels,
    write_labels,
)
from dataforge.errors import DataforgeError
from dataforge.records import CORE_COLUMNS, DROP_FIELDS, SAMPLE_SCHEMA
from dataforge.stages.registry import CURATION, GENERATION, all_stages
from dataforge.store import Run, list_runs, manifest_files
from dataforge.warehouse import committed_dirs, connect, fetch_arrow

ROWS_PER_FILE = 1_000_000_000  # _n = file index * this + row in the file
SEARCH_CACHE = 8  # searches whose matching rows are kept (a page, its facets and the next pages reuse them)
SEARCH_COPY_MAX = 200_000  # a search matching at most this many rows keeps a copy of them (else their _n)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
FACET_VALUES = 50  # values shown per facet (the most common; a selected value always shows)
SCORE_BINS = 20
NONE = "(none)"  # a facet value standing for a missing (null) value
# URL parameter -> column of `samples`; `label` is the sample's current label (not a column)
FACETS: dict[str, str | None] = {
    "kind": "kind", "status": "_status", "stage": "drop_stage", "reason": "_reason", "topic": "topic",
    "audience": "audience", "style": "style", "source": "_source", "label": None,
}
SCORE_ORDER = ("quality_score", "judge_score", "color_score", "gen_topic_similarity")
SOURCE_COLUMNS = ("seed_source", "source_name")
LIST_COLUMNS = ("_n", "id", "kind", "_status", "drop_stage", "drop_reason", "_reason", "_snippet", "topic",
                "audience", "style", "_source")
ENUM_COLUMNS = ("kind", "_status", "drop_stage", "_reason", "topic", "audience", "style", "_source", "_gen_stage")
# the drop reason without its details: `near_duplicate_of:<id>` -> near_duplicate_of,
# `noncompliant:meta_talk:<excerpt>` -> noncompliant:meta_talk, `c4:min_sentences` stays
REASON_KEY_SQL = ("CASE WHEN drop_reason IS NULL THEN NULL "
                  "WHEN regexp_full_match(split_part(drop_reason, ':', 2), '[a-z][a-z_]*') "
                  "THEN regexp_extract(drop_reason, '^[A-Za-z0-9_]+') || ':' || split_part(drop_reason, ':', 2) "
                  "ELSE coalesce(nullif(regexp_extract(drop_reason, '^[A-Za-z0-9_]+'), ''), drop_reason) END")
DIFF_MAX_TOKENS = 20_000
# where a sample came from: a CoT seed question, a textbook cell of the plan, an ingested file's row
SEED_COLUMNS = ("seed_source", "seed_id", "parent_seed_id", "gold_answer", "subject", "topic", "subtopic", "audience",
                "style", "format", "passage_id", "template", "system_prompt", "source_name", "source_file", "source_row")


class BrowseError(DataforgeError, ValueError):
    """A request the browser cannot answer as asked: a bad filter, an unknown run."""


class SampleNotFound(BrowseError):
    """No sample of the run has that id."""


# --- filters -------------------------------------------------------------------------------------

@dataclass
class Filters:
    """What the list shows: a text search, facet values, score ranges (see the module docstring)."""

    q: str = ""
    values: dict[str, list[str]] = field(default_factory=dict)
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]], scores: Sequence[str] = ()) -> Filters:
        """From a query string parsed into lists of values (``urllib.parse.parse_qs`` shape)."""
        f = cls(q=" ".join(v.strip() for v in params.get("q", []) if v.strip()))
        for name in FACETS:
            vals = [v for v in params.get(name, []) if v != ""]
            if vals:
                f.values[name] = list(dict.fromkeys(vals))
        for name in scores:
            for text in params.get(name, []):
                if text.strip():
                    f.ranges[name] = parse_range(name, text)
        return f

    def without(self, facet: str) -> Filters:
        return Filters(self.q, {k: v for k, v in self.values.items() if k != facet},
                       {k: v for k, v in self.ranges.items() if k != facet})

    @property
    def empty(self) -> bool:
        return not (self.q or self.values or self.ranges)


def parse_range(name: str, text: str) -> tuple[float | None, float | None]:
    """``lo:hi`` with either side empty (``0.5:``, ``:0.9``) into floats."""
    lo_text, sep, hi_text = text.partition(":")
    if not sep:
        raise BrowseError(f"{name}: a range is lo:hi (either may be empty), got {text!r}")
    try:
        lo = float(lo_text) if lo_text.strip() else None
        hi = float(hi_text) if hi_text.strip() else None
    except ValueError:
        raise BrowseError(f"{name}: a range is lo:hi of numbers, got {text!r}") from None
    if any(v is not None and not math.isfinite(v) for v in (lo, hi)):
        raise BrowseError(f"{name}: a range needs finite numbers, got {text!r}")
    return lo, hi


def search_terms(q: str) -> list[str]:
    """Words and ``"quoted phrases"`` of a search."""
    return [a or b for a, b in re.findall(r'"([^"]+)"|(\S+)', q)]


def re2_literal(term: str) -> str:
    """``term`` as an RE2 pattern matching it literally (every punctuation character escaped)."""
    return "".join("\\" + c if not c.isalnum() and not c.isspace() and c.isascii() else c for c in term)


# --- values for JSON ----------------------------------------------------------------------------

def jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


# --- the diff and the match excerpt --------------------------------------------------------------

def word_diff(a: str, b: str) -> list[dict]:
    """A word diff of ``a`` against ``b`` (difflib): ``{op, a, b}`` segments, ``op`` one of
    equal, replace, delete, insert (whitespace is kept, so each side reads as written)."""
    ta, tb = re.findall(r"\S+|\s+", a or ""), re.findall(r"\S+|\s+", b or "")
    if len(ta) + len(tb) > DIFF_MAX_TOKENS:  # quadratic in the worst case: cut very long texts
        ta, tb = ta[:DIFF_MAX_TOKENS // 2], tb[:DIFF_MAX_TOKENS // 2]
    sm = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    return [{"op": op, "a": "".join(ta[i1:i2]), "b": "".join(tb[j1:j2])} for op, i1, i2, j1, j2 in sm.get_opcodes()]


def match_segments(excerpt: str, text: str, context_words: int = 40) -> dict:
    """Where a benchmark excerpt meets a sample: both as ``{text, match}`` segments, the
    sample's cut to the matched region and ``context_words`` around it (case-insensitive words)."""
    ew, tw = re.findall(r"\S+", excerpt or ""), re.findall(r"\S+", text or "")
    norm = lambda ws: [re.sub(r"\W+", "", w.lower()) for w in ws]
    sm = difflib.SequenceMatcher(None, norm(ew), norm(tw), autojunk=False)
    blocks = [b for b in sm.get_matching_blocks() if b.size >= 2]
    e_mark, t_mark = [False] * len(ew), [False] * len(tw)
    for blk in blocks:
        for k in range(blk.size):
            e_mark[blk.a + k] = t_mark[blk.b + k] = True

    def segs(words: list[str], marks: list[bool], lo: int, hi: int) -> list[dict]:
        out: list[dict] = []
        for w, m in zip(words[lo:hi], marks[lo:hi]):
            if out and out[-1]["match"] == m:
                out[-1]["text"] += " " + w
            else:
                out.append({"text": w, "match": m})
        return out

    if blocks:
        lo = max(0, blocks[0].b - context_words)
        hi = min(len(tw), blocks[-1].b + blocks[-1].size + context_words)
    else:
        lo, hi = 0, min(len(tw), 2 * context_words)
    return {"excerpt": segs(ew, e_mark, 0, len(ew)), "sample": segs(tw, t_mark, lo, hi),
            "cut_before": lo > 0, "cut_after": hi < len(tw), "matched_words": sum(e_mark)}


# --- building the table -----------------------------------------------------------------------------

def leaf_stages(committed: Sequence[str]) -> list[str]:
    """The committed stages whose kept rows no later stage read: the last curation stage, or
    every generation stage when the run has no committed curation stage."""
    known = {s.name: s for s in all_stages()}
    mine = sorted((known[n] for n in committed if n in known), key=lambda s: s.order)
    curation = [s for s in mine if s.kind == CURATION]
    return [curation[-1].name] if curation else [s.name for s in mine]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_list(paths: Sequence[Path | str]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _chain_key(name: str) -> tuple[int, str]:
    known = {s.name: s.order for s in all_stages()}
    return known.get(name, 10_000), name


@dataclass
class RunFiles:
    """The committed files a run's samples are read from (kept shards of the leaf stages, then
    the rejected shards stage by stage in chain order), and the generation stages' kept shards
    (to tell which one wrote a row, when a run has several)."""

    paths: list[Path]
    generation: dict[str, list[Path]]
    committed: list[str]
    leaves: list[str]


def run_files(run: Run, verify: bool = True) -> RunFiles:
    if not run.is_local:
        raise BrowseError(f"the browser reads local shards; run {run.run_id} is on {run.data_root}")
    committed = sorted((d.name for d in committed_dirs(run, rejected=False)), key=_chain_key)
    leaves = leaf_stages(committed)
    known = {s.name: s for s in all_stages()}
    gen = [n for n in committed if n in known and known[n].kind == GENERATION]
    paths: list[Path] = []
    for s in leaves:
        paths += manifest_files(run.stage_dir(s), verify=verify)
    for d in sorted(committed_dirs(run, rejected=True), key=lambda d: _chain_key(d.name)):
        paths += manifest_files(d, verify=verify)
    generation: dict[str, list[Path]] = {}
    for s in gen:  # which generation stage wrote a row: asked of their kept shards when there are several
        generation[s] = manifest_files(run.stage_dir(s), verify=False) if len(gen) > 1 else []
    return RunFiles(paths, generation, committed, leaves)


def _source_sql(paths: Sequence[Path]) -> str:
    """Every row of ``paths`` with ``_n`` (its place: file index, then row in the file)."""
    return (f"(SELECT file_index::BIGINT * {ROWS_PER_FILE} + file_row_number AS _n, * FROM "
            f"read_parquet({_sql_list(paths)}, union_by_name = true, file_row_number = true))")


def build_samples(con: duckdb.DuckDBPyConnection, files: RunFiles) -> dict:
    """Create the table ``samples`` in ``con`` from ``files``; returns what the index knows of it."""
    t0 = time.perf_counter()
    if files.paths:
        con.execute(f"CREATE TEMP VIEW raw AS SELECT * FROM {_source_sql(files.paths)}")
    else:  # nothing committed yet: an empty table of the record's columns
        empty = pa.schema([pa.field("_n", pa.int64()), *SAMPLE_SCHEMA, *DROP_FIELDS, pa.field("file_row_number", pa.int64())])
        con.register("empty_rows", empty.empty_table())
        con.execute("CREATE TEMP VIEW raw AS SELECT * FROM empty_rows")
    types = {r[0]: r[1] for r in con.execute("DESCRIBE raw").fetchall()}

    def col(name: str, sql_type: str = "VARCHAR", expr: str | None = None) -> str:
        return f"{expr or 'r.' + _quote(name)} AS {_quote(name)}" if name in types else f"NULL::{sql_type} AS {_quote(name)}"

    numeric = ("FLOAT", "DOUBLE", "REAL", "DECIMAL", "INTEGER", "BIGINT", "SMALLINT", "TINYINT")
    scores = [c for c in types if (c.endswith("_score") or c == "gen_topic_similarity")
              and types[c].upper().startswith(numeric)]
    scores.sort(key=lambda c: (SCORE_ORDER.index(c) if c in SCORE_ORDER else len(SCORE_ORDER), c))
    sources = [f"r.{s}" for s in SOURCE_COLUMNS if s in types]
    reason = REASON_KEY_SQL.replace("drop_reason", "r.drop_reason") if "drop_reason" in types else "NULL::VARCHAR"
    gen_names = list(files.generation)
    params: list = []
    if len(gen_names) > 1 and any(files.generation.values()):
        parts = " UNION ALL ".join(f"SELECT id, '{s}' AS stage FROM read_parquet({_sql_list(p)})"
                                   for s, p in files.generation.items() if p)
        con.execute(f"CREATE TEMP TABLE gen_ids AS SELECT id, min(stage) AS stage FROM ({parts}) GROUP BY id")
        gen_sql = "coalesce(CASE WHEN r.drop_stage IN (SELECT unnest(?)) THEN r.drop_stage END, g.stage)"
        join = "LEFT JOIN gen_ids g ON g.id = r.id"
        params.append(gen_names)
    else:
        gen_sql = f"'{gen_names[0]}'" if gen_names else "NULL::VARCHAR"
        join = ""
    status = "CASE WHEN r.drop_stage IS NULL THEN 'kept' ELSE 'dropped' END" if "drop_stage" in types else "'kept'"
    select = [
        "r._n", f"(r._n // {ROWS_PER_FILE})::INTEGER AS _file", "r.file_row_number AS _row", "r.id", "r.kind",
        col("drop_stage"), col("drop_reason"), f"{status} AS _status", f"{reason} AS _reason",
        f"{'coalesce(' + ', '.join(sources) + ')' if sources else 'NULL::VARCHAR'} AS _source",
        f"{gen_sql} AS _gen_stage", col("topic"), col("audience"), col("style"), col("dedup_cluster"),
        "hash(r.question) AS _qkey" if "question" in types else "NULL::UBIGINT AS _qkey",
        col("sample_index", "INTEGER"), col("answer"), col("answer_correct", "BOOLEAN"), col("votes", "INTEGER"),
        col("agreement", "FLOAT"),
        *(f"r.{_quote(c)}" for c in scores),
        "translate(left(r.text, 200), chr(10) || chr(13) || chr(9), '   ') AS _snippet",
    ]
    con.execute(f"CREATE TABLE samples AS SELECT {', '.join(select)} FROM raw r {join} ORDER BY r._n", params)
    con.execute("DROP VIEW raw")
    # facet columns as ENUMs: counting and filtering small integers, not strings
    for c in ENUM_COLUMNS:
        values = [r[0] for r in con.execute(f"SELECT DISTINCT {c}::VARCHAR FROM samples WHERE {c} IS NOT NULL "
                                            "ORDER BY 1").fetchall()]
        if values:
            con.execute(f"CREATE TYPE enum{c} AS ENUM (SELECT unnest(?))", [values])
            con.execute(f"ALTER TABLE samples ALTER {c} SET DATA TYPE enum{c}")
    con.execute("CREATE INDEX samples_id ON samples (id)")
    score_ranges = {}
    for c in scores:
        lo, hi, n = con.execute(f"SELECT min({_quote(c)}), max({_quote(c)}), count({_quote(c)}) FROM samples "
                                f"WHERE isfinite({_quote(c)}::DOUBLE)").fetchone()
        if n:
            score_ranges[c] = {"lo": float(lo), "hi": float(hi), "rows": int(n)}
            # its histogram bin, stored: counting a small integer column is ten times cheaper than
            # computing the bin in every facet query
            width = (hi - lo) / SCORE_BINS or 1.0
            con.execute(f"ALTER TABLE samples ADD COLUMN {_quote('_bin_' + c)} UTINYINT")
            con.execute(f"UPDATE samples SET {_quote('_bin_' + c)} = least(greatest(floor(({_quote(c)} - ?) / ?), 0), "
                        f"{SCORE_BINS - 1})::UTINYINT WHERE isfinite({_quote(c)}::DOUBLE)", [float(lo), float(width)])
    total, kept = con.execute("SELECT count(*), count(*) FILTER (WHERE _status = 'kept') FROM samples").fetchone()
    return {"rows": int(total), "kept": int(kept), "scores": score_ranges, "enums": [
                c for c in ENUM_COLUMNS if con.execute(
                    "SELECT count(*) FROM duckdb_types() WHERE type_name = ?", [f"enum{c}"]).fetchone()[0]],
            "left_out": [c for c, t in types.items() if _is_embedding(t)], "leaves": files.leaves,
            "committed": files.committed, "seconds": round(time.perf_counter() - t0, 3)}


def _is_embedding(type_name: str) -> bool:
    return bool(re.fullmatch(r"(FLOAT|DOUBLE|REAL|INTEGER|BIGINT|SMALLINT|TINYINT|HUGEINT|DECIMAL\(.*\))\[\d*\]",
                             type_name.upper()))


# --- the index ---------------------------------------------------------------------------------------

class SampleIndex:
    """One run's samples, ready to browse (see the module docstring). Thread-safe: each call
    works on its own DuckDB cursor; label writes are serialised."""

    def __init__(self, run: Run, *, verify: bool = True, user: str | None = None,
                 teacher_cache: Path | None = None, progress: Callable[[str], None] | None = None):
        say = progress or (lambda _m: None)
        self.run = run
        self.user = user or default_user()
        self.record = run.load_record()
        say(f"reading the manifests of run {run.run_id}" + (" (checking every shard's sha256)" if verify else ""))
        self.files = run_files(run, verify)
        self.paths = self.files.paths
        say(f"indexing {len(self.paths):,} files")
        self.con = duckdb.connect()
        self.con.execute("SET enable_progress_bar = false")
        self.meta = build_samples(self.con, self.files)
        say(f"indexed {self.meta['rows']:,} samples ({self.meta['kept']:,} kept) in {self.meta['seconds']:.1f} s")
        self.scores: dict[str, dict] = self.meta["scores"]
        self.enums = set(self.meta["enums"])
        self.teacher_cache = teacher_cache or self._default_teacher_cache()
        self._lock = threading.Lock()
        self._compare_cache: dict[str, dict] = {}
        self._hits: OrderedDict[str, tuple[str, bool]] = OrderedDict()
        self._all_facets: dict | None = None
        self._searching: dict[str, Future] = {}  # searches being scanned
        self._events: list[dict] = []
        self.current: dict[str, dict] = {}
        self._load_labels()

    # -- set-up --
    def _default_teacher_cache(self) -> Path:
        local = (self.record.config or {}).get("local_dir")
        if local and (Path(local) / "cache" / "teacher.sqlite").exists():
            return Path(local) / "cache" / "teacher.sqlite"
        return Path(self.run.data_root) / "cache" / "teacher.sqlite"

    def _load_labels(self) -> None:
        rows = read_labels(self.run).to_pylist()
        rows.sort(key=lambda r: (r["labelled_at"], r["label_id"]))
        self._events = rows
        self.current = {}
        for r in rows:
            self._apply(r)
        self._sync_labels()

    def _apply(self, event: dict) -> None:
        if event["label"] == "clear":
            self.current.pop(event["id"], None)
        else:
            self.current[event["id"]] = {"label": event["label"], "labelled_at": event["labelled_at"],
                                         "user": event["user"]}

    def _sync_labels(self) -> None:
        table = pa.table({"id": list(self.current), "label": [v["label"] for v in self.current.values()]},
                         schema=pa.schema([("id", pa.string()), ("label", pa.string())]))
        cur = self.con.cursor()
        try:
            cur.register("new_labels", table)
            cur.execute("CREATE OR REPLACE TABLE cur_labels AS SELECT * FROM new_labels")
        finally:
            cur.close()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> SampleIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- queries --
    def _search(self, q: str) -> tuple[str, bool]:
        """The search ``q`` as a table of the index: ``(name, True)`` when it holds the matching
        rows of ``samples`` (every later query of this search reads only them), ``(name, False)``
        when it holds only their ``_n`` (more than :data:`SEARCH_COPY_MAX` matches). The text of the
        shards is scanned once per distinct search: the last few are kept, and a request asking
        for a search another request is running waits for its result (the page asks for the list
        and the facets at once)."""
        with self._lock:
            if q in self._hits:
                self._hits.move_to_end(q)
                return self._hits[q]
            running = self._searching.get(q)
            if running is None:
                running = self._searching[q] = Future()
                mine = True
            else:
                mine = False
        if not mine:
            return running.result()
        try:
            found = self._scan(q)
            name = f"search_{len(self._hits)}_{hashlib.sha256(q.encode()).hexdigest()[:12]}"
            subset = found.num_rows <= SEARCH_COPY_MAX
            cur = self.con.cursor()
            try:
                cur.register("found", found)
                if subset:
                    cur.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM samples "
                                "WHERE _n IN (SELECT _n FROM found) ORDER BY _n")
                else:
                    cur.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT _n FROM found")
            finally:
                cur.close()
            result = (name, subset)
        except BaseException as e:
            running.set_exception(e)
            raise
        finally:
            with self._lock:
                self._searching.pop(q, None)
        running.set_result(result)
        with self._lock:
            self._hits[q] = result
            while len(self._hits) > SEARCH_CACHE:
                _, (old, _) = self._hits.popitem(last=False)
                self._run(f"DROP TABLE IF EXISTS {old}")
        return result

    def _scan(self, q: str) -> pa.Table:
        if len(q) > 2 and q.startswith("/") and q.endswith("/"):
            pattern = q[1:-1]
            try:
                re.compile(pattern)
            except re.error as e:
                raise BrowseError(f"invalid regular expression {pattern!r}: {e}") from None
            patterns = [pattern]
        else:  # a literal as an RE2 pattern: case-insensitive matching is cheaper there than with ILIKE
            patterns = [re2_literal(term) for term in search_terms(q)]
        if not self.paths or not patterns:
            return pa.table({"_n": pa.array([], pa.int64())})
        sql = (f"SELECT file_index::BIGINT * {ROWS_PER_FILE} + file_row_number AS _n FROM "
               f"read_parquet({_sql_list(self.paths)}, union_by_name = true, file_row_number = true) "
               f"WHERE {' AND '.join(['regexp_matches(text, ?, ?)'] * len(patterns))}")
        params: list = [x for p in patterns for x in (p, "i")]
        if re.fullmatch(r"[0-9a-f]{6,64}", q):  # an id (prefix) on its own: that sample too
            sql += " UNION SELECT _n FROM samples WHERE starts_with(id, ?)"
            params.append(q)
        cur = self.con.cursor()
        try:
            return cur.sql(sql, params=params).to_arrow_table()
        except duckdb.Error as e:
            raise BrowseError(f"the search failed: {str(e).splitlines()[0]}") from None
        finally:
            cur.close()

    def _where(self, f: Filters) -> tuple[str, str, list]:
        """The relation ``f`` reads (``samples``, or the rows of its search), its WHERE clause
        and the clause's parameters."""
        clauses: list[str] = []
        params: list = []
        source = "samples"
        if f.q.strip():
            name, subset = self._search(f.q.strip())
            if subset:
                source = name
            else:
                clauses.append(f"_n IN (SELECT _n FROM {name})")
        for name, vals in f.values.items():
            column = FACETS.get(name)
            if name == "label":
                wanted = [v for v in vals if v in ("good", "bad")]
                parts = []
                if wanted:
                    parts.append(f"id IN (SELECT id FROM cur_labels WHERE label IN ({', '.join('?' * len(wanted))}))")
                    params += wanted
                if NONE in vals:
                    parts.append("id NOT IN (SELECT id FROM cur_labels)")
                clauses.append("(" + " OR ".join(parts or ["false"]) + ")")
                continue
            if column is None:
                continue
            real = [v for v in vals if v != NONE]
            parts = []
            if real:
                value = f"TRY_CAST(? AS enum{column})" if column in self.enums else "?"
                parts.append(f"{column} IN ({', '.join([value] * len(real))})")
                params += real
            if NONE in vals:
                parts.append(f"{column} IS NULL")
            clauses.append("(" + " OR ".join(parts) + ")")
        for name, (lo, hi) in f.ranges.items():
            if name not in self.scores:
                raise BrowseError(f"no score column {name!r} in this run (have: {', '.join(self.scores) or 'none'})")
            if lo is not None:
                clauses.append(f"{_quote(name)} >= ?")
                params.append(lo)
            if hi is not None:
                clauses.append(f"{_quote(name)} <= ?")
                params.append(hi)
        return source, (" AND ".join(clauses) or "true"), params

    def _run(self, sql: str, params: Sequence = ()) -> list[tuple]:
        cur = self.con.cursor()
        try:
            return cur.execute(sql, list(params)).fetchall()
        except (duckdb.InvalidInputException, duckdb.ConversionException) as e:
            raise BrowseError(f"the query failed: {str(e).splitlines()[0]}") from None
        finally:
            cur.close()

    def count(self, f: Filters) -> int:
        if f.empty:
            return self.meta["rows"]
        source, where, params = self._where(f)
        return int(self._run(f"SELECT count(*) FROM {source} WHERE {where}", params)[0][0])

    def page(self, f: Filters, offset: int = 0, limit: int = PAGE_SIZE) -> dict:
        """One page of the list: ``rows`` (the list's columns, scores, label), ``total`` matching."""
        offset, limit = max(0, int(offset)), max(1, min(int(limit), MAX_PAGE_SIZE))
        source, where, params = self._where(f)
        names = [*LIST_COLUMNS, *self.scores]
        cols = ", ".join(_quote(c) for c in names)
        # the page's rows first (narrow: the sort key only), then their columns
        rows = self._run(f"WITH page AS (SELECT _n FROM {source} WHERE {where} ORDER BY _n LIMIT ? OFFSET ?) "
                         f"SELECT {cols} FROM {source} WHERE _n IN (SELECT _n FROM page) ORDER BY _n",
                         [*params, limit, offset])
        out = []
        for i, r in enumerate(rows):
            d = dict(zip(names, r))
            out.append({"pos": offset + i + 1, "n": d["_n"], "id": d["id"], "kind": d["kind"], "status": d["_status"],
                        "stage": d["drop_stage"], "reason": d["_reason"], "drop_reason": d["drop_reason"],
                        "snippet": d["_snippet"], "topic": d["topic"], "audience": d["audience"],
                        "style": d["style"], "source": d["_source"],
                        "scores": {s: jsonable(d[s]) for s in self.scores if d[s] is not None},
                        "label": (self.current.get(d["id"]) or {}).get("label")})
        return {"offset": offset, "limit": limit, "total": self.count(f), "rows": out}

    def facets(self, f: Filters) -> dict:
        """Counts per facet value and a histogram per score column, each under every filter but
        its own (those of no filter are computed once)."""
        if f.empty and self._all_facets is not None:
            return {"facets": {**self._all_facets["facets"], "label": self._label_counts(f)},
                    "scores": self._all_facets["scores"]}
        facets: dict[str, list[dict]] = {}
        hists: dict[str, dict] = {}
        plain = [name for name, col in FACETS.items() if col is not None]
        shared = [name for name in plain if name not in f.values]
        shared_scores = [s for s in self.scores if s not in f.ranges]
        if shared or shared_scores:
            self._grouped(f, shared, shared_scores, facets, hists)
        for name in plain:
            if name in f.values:
                self._grouped(f.without(name), [name], [], facets, hists)
        for s in self.scores:
            if s in f.ranges:
                self._grouped(f.without(s), [], [s], facets, hists)
        if f.empty:
            self._all_facets = {"facets": dict(facets), "scores": hists}
        facets["label"] = self._label_counts(f.without("label"))
        for name, vals in facets.items():  # a selected value always shows, with its count
            have = {v["value"] for v in vals}
            vals += [{"value": s, "count": 0} for s in f.values.get(name, []) if s not in have]
        return {"facets": facets, "scores": hists}

    def _bin_sql(self, s: str) -> str:
        return _quote("_bin_" + s)

    def _grouped(self, f: Filters, names: list[str], scores: list[str], facets: dict, hists: dict) -> None:
        source, where, params = self._where(f)
        exprs = [str(FACETS[n]) for n in names] + [self._bin_sql(s) for s in scores]
        keys = names + scores
        if not exprs:
            return
        if len(exprs) == 1:
            sql = f"SELECT {exprs[0]}, count(*) AS c, 0 AS g FROM {source} WHERE {where} GROUP BY 1"
        else:
            grouping = ", ".join(exprs)
            sql = (f"SELECT {grouping}, count(*) AS c, grouping_id({grouping}) AS g FROM {source} WHERE {where} "
                   f"GROUP BY GROUPING SETS ({', '.join(f'({e})' for e in exprs)})")
        rows = self._run(sql, params)
        k = len(exprs)
        counts: dict[str, dict] = {key: {} for key in keys}
        for r in rows:
            g = r[k + 1]
            for i, key in enumerate(keys):
                if not (g >> (k - 1 - i)) & 1:  # this row groups by expression i
                    counts[key][r[i]] = r[k]
                    break
        for name in names:
            vals = sorted(counts[name].items(), key=lambda kv: (-kv[1], str(kv[0])))
            facets[name] = [{"value": NONE if v is None else str(v), "count": int(c)} for v, c in vals[:FACET_VALUES]]
        for s in scores:
            bins = [0] * SCORE_BINS
            for b, c in counts[s].items():
                if b is not None:
                    bins[int(b)] = int(c)
            hists[s] = {"lo": self.scores[s]["lo"], "hi": self.scores[s]["hi"], "bins": bins,
                        "missing": int(counts[s].get(None, 0))}

    def _label_counts(self, f: Filters) -> list[dict]:
        source, where, params = self._where(f)
        rows = self._run(f"SELECT l.label, count(*) FROM (SELECT id FROM {source} WHERE {where}) s "
                         "JOIN cur_labels l ON l.id = s.id GROUP BY 1", params) if self.current else []
        labelled = sum(int(c) for _, c in rows)
        out = [{"value": v, "count": int(c)} for v, c in sorted(rows, key=lambda r: -r[1])]
        return out + [{"value": NONE, "count": self.count(f) - labelled}]

    # -- one sample --
    def full_row(self, n: int) -> dict:
        """Every column of the row ``_n`` as its shard holds it (one row group read); embedding
        columns (lists of numbers) left out."""
        file_index, row_index = divmod(int(n), ROWS_PER_FILE)
        pf = pq.ParquetFile(self.paths[file_index])
        start = 0
        for g in range(pf.num_row_groups):
            size = pf.metadata.row_group(g).num_rows
            if row_index < start + size:
                table = pf.read_row_group(g).slice(row_index - start, 1)
                break
            start += size
        else:
            raise SampleNotFound(f"row {row_index} is not in {self.paths[file_index]}")
        keep = [f.name for f in table.schema if not (pa.types.is_list(f.type) and (
            pa.types.is_floating(f.type.value_type) or pa.types.is_integer(f.type.value_type)))]
        return table.select(keep).to_pylist()[0]

    def sample(self, sample_id: str) -> dict:
        """A sample's whole story: its row(s), its path through the stages with each stage's
        columns, the teacher request and response, its dedup cluster with a diff against the
        survivor, the decontamination match, for CoT the other samples of its question, labels."""
        found = self._run("SELECT _n, _status, _reason, _gen_stage, drop_stage, drop_reason FROM samples "
                          "WHERE id = ? ORDER BY _n", [sample_id])
        if not found:
            raise SampleNotFound(f"no sample with id {sample_id!r} in run {self.run.run_id}")
        n, status, reason, gen_stage = found[0][:4]
        row = self.full_row(n)
        row.update({"_n": n, "_status": status, "_reason": reason, "_gen_stage": gen_stage})
        return {"id": sample_id, "n": n, "kind": row.get("kind"), "status": status,
                "drop_stage": row.get("drop_stage"), "drop_reason": row.get("drop_reason"), "reason": reason,
                "text": row.get("text"), "messages": jsonable(row.get("messages")),
                "copies": [{"n": r[0], "status": r[1], "drop_stage": r[4], "drop_reason": r[5]} for r in found],
                "seed": {c: jsonable(row[c]) for c in SEED_COLUMNS if row.get(c) is not None},
                "path": self._path(row), "groups": self._groups(row),
                "teacher": self.teacher_exchange(row.get("request_hash")),
                "dedup": self._dedup(row), "decontam": self._decontam(row), "cot": self._cot(row),
                "label": jsonable(self.current.get(sample_id)),
                "label_history": [jsonable(e) for e in self._events if e["id"] == sample_id],
                "left_out": self.meta["left_out"]}

    def _path(self, row: dict) -> list[dict]:
        known = {s.name: s for s in all_stages()}
        recorded = sorted((n for n in self.record.stages if n in known), key=lambda n: known[n].order)
        committed = set(self.files.committed)
        out, gone = [], False
        for name in recorded:
            stage = known[name]
            if stage.kind == GENERATION and name != row.get("_gen_stage"):
                continue
            if gone:
                status = "not reached"
            elif row.get("drop_stage") == name:
                status, gone = "dropped", True
            elif name in committed:
                status = "passed" if stage.kind == CURATION else "written"
            else:
                status = self.record.stages[name].status
            out.append({"stage": name, "kind": stage.kind, "status": status,
                        "reason": row.get("drop_reason") if status == "dropped" else None})
        return out

    def _groups(self, row: dict) -> list[dict]:
        """The row's non-empty columns by the stage that wrote them (the registry's columns and
        prefixes), then the record's own, then any other."""
        hidden = {"text", "messages", "drop_stage", "drop_reason"}
        taken: set[str] = set(hidden)
        groups = []
        for stage in all_stages():
            cols = [c for c in row if not c.startswith("_") and c not in taken and
                    (c in stage.columns or (stage.column_prefix and c.startswith(stage.column_prefix)
                                            and c not in CORE_COLUMNS))]
            taken.update(cols)
            vals = {c: jsonable(row[c]) for c in cols if row.get(c) is not None}
            if vals:
                groups.append({"group": stage.name, "columns": vals})
        core = {c: jsonable(row[c]) for c in row if c in CORE_COLUMNS and c not in taken and row.get(c) is not None}
        taken.update(CORE_COLUMNS)
        other = {c: jsonable(row[c]) for c in row if c not in taken and not c.startswith("_")
                 and c != "file_row_number" and row.get(c) is not None}
        return [{"group": "record", "columns": core}, *groups] + ([{"group": "other", "columns": other}] if other else [])

    def teacher_exchange(self, request_hash: str | None) -> dict:
        """The cached teacher request and response of a request hash, read-only."""
        path = self.teacher_cache
        if not request_hash:
            return {"status": "none", "message": "this sample has no request_hash: the teacher did not write it "
                                                 "(ingested or imported rows)"}
        if not path.exists():
            return {"status": "no_cache", "request_hash": request_hash,
                    "message": f"no teacher request cache at {path}"}
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                # the table of dataforge.teacher.cache.RequestCache: key, request, response, created_at
                found = db.execute("SELECT request, response, created_at FROM requests WHERE key = ?",
                                   (request_hash,)).fetchone()
            finally:
                db.close()
        except sqlite3.Error as e:
            return {"status": "error", "request_hash": request_hash, "message": f"cannot read {path}: {e}"}
        if found is None:
            return {"status": "missing", "request_hash": request_hash,
                    "message": f"request {request_hash[:16]} is not in {path} (another data root's cache?)"}
        request, response = json.loads(found[0]), json.loads(found[1])
        choice = (response.get("choices") or [{}])[0] if isinstance(response, dict) else {}
        return {"status": "ok", "request_hash": request_hash, "cached_at": found[2], "request": request,
                "response": response, "reply": ((choice.get("message") or {}).get("content")),
                "finish_reason": choice.get("finish_reason"), "usage": response.get("usage")
                if isinstance(response, dict) else None}

    def _brief(self, sql: str, params: Sequence) -> list[dict]:
        cols = ["_n", "id", "_status", "drop_stage", "drop_reason", "_snippet"]
        rows = self._run(f"SELECT {', '.join(cols)} FROM samples WHERE {sql} ORDER BY _n LIMIT 50", params)
        return [{"n": r[0], "id": r[1], "status": r[2], "stage": r[3], "drop_reason": r[4], "snippet": r[5]}
                for r in rows]

    def _dedup(self, row: dict) -> dict | None:
        cluster = row.get("dedup_cluster")
        reason = row.get("drop_reason") or ""
        m = re.match(r"(?:exact|near)_duplicate_of:(\S+)", reason)
        if cluster is None and m:
            cluster = m.group(1)
        if cluster is None:
            return None
        out: dict[str, Any] = {"cluster": cluster, "size": row.get("dedup_size"),
                               "similarity": jsonable(row.get("dedup_similarity")), "is_survivor": cluster == row["id"],
                               "members": self._brief("dedup_cluster = ? AND id <> ?", [cluster, row["id"]])}
        if cluster != row["id"]:
            found = self._run("SELECT _n, _status, drop_reason FROM samples WHERE id = ? ORDER BY _n LIMIT 1", [cluster])
            if found:
                n, status, why = found[0]
                text = self.full_row(n).get("text")
                out["survivor"] = {"n": n, "id": cluster, "status": status, "drop_reason": why, "text": text}
                out["diff"] = word_diff(row.get("text") or "", text or "")
            else:
                out["survivor"] = None
        return out

    def _decontam(self, row: dict) -> dict | None:
        if row.get("contam_benchmark") is None and row.get("contam_excerpt") is None:
            if row.get("contam_max_fraction") is None:
                return None
            return {"max_fraction": jsonable(row.get("contam_max_fraction")), "matched": False}
        return {"matched": True, "benchmark": row.get("contam_benchmark"), "item": row.get("contam_item"),
                "fraction": jsonable(row.get("contam_fraction")), "max_fraction": jsonable(row.get("contam_max_fraction")),
                "excerpt": row.get("contam_excerpt"),
                "match": match_segments(row.get("contam_excerpt") or "", row.get("question") or row.get("text") or "")}

    def _cot(self, row: dict) -> dict | None:
        if row.get("kind") != "cot" or not row.get("question"):
            return None
        cols = ["_n", "id", "sample_index", "answer", "answer_correct", "votes", "agreement", "_status",
                "drop_stage", "drop_reason"]
        rows = self._run(f"SELECT {', '.join(cols)} FROM samples WHERE _qkey = hash(?::VARCHAR) "
                         "ORDER BY sample_index, _n LIMIT 64", [row["question"]])
        have = cols
        siblings = [jsonable(dict(zip(have, r))) for r in rows]
        tally: dict[str, int] = {}
        for s in siblings:
            tally[str(s.get("answer"))] = tally.get(str(s.get("answer")), 0) + 1
        return {"question": row.get("question"), "rationale": row.get("rationale"), "answer": row.get("answer"),
                "gold_answer": row.get("gold_answer"), "answer_correct": row.get("answer_correct"),
                "votes": row.get("votes"), "agreement": jsonable(row.get("agreement")),
                "samples": siblings, "answers": sorted(tally.items(), key=lambda kv: -kv[1])}

    # -- labels --
    def label(self, sample_id: str, label: str) -> dict:
        """Append one label (good, bad, clear) for a sample of this run; returns its record."""
        if label not in LABEL_VALUES:
            raise BrowseError(f"label must be one of {', '.join(LABEL_VALUES)}, got {label!r}")
        if not self._run("SELECT 1 FROM samples WHERE id = ? LIMIT 1", [sample_id]):
            raise SampleNotFound(f"no sample with id {sample_id!r} in run {self.run.run_id}")
        with self._lock:
            path = write_labels(self.run, [(sample_id, label)], self.user)
            event = pq.read_table(path).to_pylist()[0]
            self._events.append(event)
            self._apply(event)
            self._sync_labels()
        return {"id": sample_id, "label": None if label == "clear" else label, "file": path.name,
                "user": self.user, "labelled_at": jsonable(event["labelled_at"])}

    # -- the run beside another --
    def runs(self) -> list[str]:
        return [r.run_id for r in list_runs(self.run.data_root)]

    def compare(self, other_id: str) -> dict:
        """Funnels and drop reasons of this run and ``other_id`` side by side."""
        if other_id not in self.runs():
            raise BrowseError(f"no run {other_id!r} under {Path(self.run.data_root) / 'runs'}")
        sides = [self._run_summary(self.run), self._run_summary(Run(self.run.data_root, other_id))]
        stages = []
        for s in sides:
            for row in s["funnel"]:
                if row["stage"] not in stages:
                    stages.append(row["stage"])
        reasons: dict[tuple[str, str], list[int]] = {}
        for i, s in enumerate(sides):
            for r in s["drop_reasons"]:
                reasons.setdefault((r["stage"], r["reason"]), [0, 0])[i] = r["rows"]
        return {"runs": [s["run_id"] for s in sides], "sides": sides, "stages": stages,
                "reasons": [{"stage": k[0], "reason": k[1], "a": v[0], "b": v[1]}
                            for k, v in sorted(reasons.items(), key=lambda kv: (-max(kv[1]), kv[0]))]}

    def _run_summary(self, run: Run) -> dict:
        key = run.run_id
        record = (run.dir / "run.json").stat().st_mtime_ns if run.is_local else 0
        cached = self._compare_cache.get(key)
        if cached and cached["_mtime"] == record:
            return cached
        con = connect(run, verify=False)
        try:
            funnel = fetch_arrow(con, "SELECT stage, status, rows_in, rows_kept, rows_dropped, kept_pct, seconds "
                                      "FROM funnel WHERE stage <> 'export'").to_pylist()
            reasons = fetch_arrow(con, f"SELECT drop_stage AS stage, {REASON_KEY_SQL} AS reason, count(*) AS rows "
                                       "FROM rejected_rows GROUP BY ALL ORDER BY rows DESC").to_pylist()
        finally:
            con.close()
        rec = run.load_record()
        out = {"run_id": run.run_id, "status": rec.status, "created_at": rec.created_at,
               "funnel": jsonable(funnel), "drop_reasons": reasons, "_mtime": record}
        self._compare_cache[key] = out
        return out

    def info(self) -> dict:
        return {"run_id": self.run.run_id, "status": self.record.status, "rows": self.meta["rows"],
                "kept": self.meta["kept"], "scores": self.scores, "facets": list(FACETS), "user": self.user,
                "leaves": self.meta["leaves"], "stages": self.files.committed, "runs": self.runs(),
                "teacher_cache": str(self.teacher_cache), "labels": len(self.current),
                "label_values": list(LABEL_VALUES), "page_size": PAGE_SIZE}
