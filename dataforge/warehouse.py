"""DuckDB over a run's shards: base relations from the manifests, then ``warehouse/views.sql``.

Only files listed in committed manifests are read, so an interrupted stage never shows up. A
manifest's file names must be plain names inside its stage folder (a name such as
``../../outside.parquet`` is refused, :class:`~dataforge.store.ManifestError`), and with
``verify`` (on by default) every file's size and sha256 are checked against its manifest before
DuckDB is pointed at it (:class:`~dataforge.store.ChecksumMismatch` naming the file). DuckDB
then reads the files by path: a file replaced between the check and the query is not seen by
the check (the check is against a wrong or damaged commit, not against a writer racing it).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa

from dataforge.browse.labels import LABEL_SCHEMA, label_files
from dataforge.records import DROP_FIELDS, SAMPLE_SCHEMA
from dataforge.stages.registry import final_among, stage_order
from dataforge.store import MANIFEST, Run, manifest_files

WAREHOUSE_DIR = Path(__file__).resolve().parents[1] / "warehouse"



def committed_dirs(run: Run, rejected: bool) -> list[Path]:
    base = run.dir / "rejected" if rejected else run.dir
    if not base.exists():
        return []
    skip = {"rejected", "export", "quarantine"}
    # a stage is committed by its kept manifest (written after the rejected one): rejected rows
    # count only when the stage's kept manifest exists too
    return sorted(d for d in base.iterdir() if d.is_dir() and d.name not in skip and (d / MANIFEST).exists()
                  and (run.dir / d.name / MANIFEST).exists())


def _files(dirs: list[Path], verify: bool | Literal["size"] = True) -> list[str]:
    """The committed files of ``dirs`` (names checked to be plain; ``verify``: sha256 checked)."""
    out = []
    for d in dirs:
        out += [str(p) for p in manifest_files(d, verify=verify)]
    return out


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _register_rows(con: duckdb.DuckDBPyConnection, name: str, files: list[str], empty_schema: pa.Schema) -> None:
    """The view ``name``: every row of ``files`` with its stage (the folder's name).

    One ``read_parquet`` per stage and schema, joined ``UNION ALL BY NAME``, not one
    ``read_parquet(..., union_by_name = true)`` over every file: DuckDB binds a view each time a
    query names it, and the reports' views name these a dozen times over, so a union by name
    read every file's footer each time (6 s and 1.4 GB for the views of a 5 GB run of 400 shards);
    files of one schema bind from the first."""
    if files:
        import pyarrow.parquet as pq

        groups: dict[tuple[str, pa.Schema], list[str]] = {}
        for f in files:
            schema = pq.read_schema(f).remove_metadata()
            groups.setdefault((Path(f).parent.name, schema), []).append(f)
        parts = [f"SELECT '{stage}' AS stage, * FROM read_parquet({_sql_list(group)})"
                 for (stage, _), group in groups.items()]
        con.execute(f"CREATE OR REPLACE VIEW {name} AS " + "\nUNION ALL BY NAME\n".join(parts))
    else:
        empty = empty_schema.empty_table()
        con.register(f"_{name}_empty", empty)
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT NULL::VARCHAR AS stage, * FROM _{name}_empty")


def _register_labels(con: duckdb.DuckDBPyConnection, run: Run) -> None:
    """The ``labels`` view: every label file under ``<run>/labels/`` (``dataforge browse``), one table."""
    files = [str(p) for p in label_files(run)]
    if files:
        con.execute(f"CREATE OR REPLACE VIEW labels AS SELECT * FROM read_parquet({_sql_list(files)}, "
                    "union_by_name = true)")
    else:
        con.register("_labels_empty", LABEL_SCHEMA.empty_table())
        con.execute("CREATE OR REPLACE VIEW labels AS SELECT * FROM _labels_empty")


def _stages_table(run: Run) -> pa.Table:
    rec = run.load_record()
    names = list(rec.stages)
    order = stage_order()
    names.sort(key=lambda s: order.index(s) if s in order else len(order))
    final = final_among(names)
    rows = []
    for i, s in enumerate(names):
        st = rec.stages[s]
        t = st.teacher or {}
        rows.append({"position": i, "stage": s, "status": st.status, "rows_in": st.rows_in,
                     "rows_kept": st.rows_kept, "rows_dropped": st.rows_dropped, "seconds": st.seconds,
                     "teacher_requests": t.get("requests_sent"), "teacher_cache_hits": t.get("cache_hits"),
                     "is_final": s == final})
    schema = pa.schema([("position", pa.int32()), ("stage", pa.string()), ("status", pa.string()),
                        ("rows_in", pa.int64()), ("rows_kept", pa.int64()), ("rows_dropped", pa.int64()),
                        ("seconds", pa.float64()), ("teacher_requests", pa.int64()),
                        ("teacher_cache_hits", pa.int64()), ("is_final", pa.bool_())])
    return pa.Table.from_pylist(rows, schema=schema)


def connect(run: Run, views_sql: Path | None = None, *,
            verify: bool | Literal["size"] = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the run's views defined; ``verify`` (the default)
    checks every committed file against its manifest's size and sha256 first (``"size"``: sizes
    only, for the summary a run prints of the files it has just written and hashed)."""
    kept = _files(committed_dirs(run, rejected=False), verify)
    rejected = _files(committed_dirs(run, rejected=True), verify)
    # bounded: a query over a large run (distinct n-grams of every output row) spills to a
    # temporary folder instead of growing to most of the machine's memory
    con = duckdb.connect(config={"memory_limit": os.environ.get("DATAFORGE_DUCKDB_MEMORY", "1GB"),
                                 "temp_directory": os.path.join(tempfile.gettempdir(), "dataforge-duckdb")})
    _register_rows(con, "kept_rows", kept, SAMPLE_SCHEMA)
    # the final stage's rows on their own: a filter on kept_rows' stage by a subquery reads every
    # stage's files (the output report of a 5 GB run read 13 GB of text for 2)
    stages = _stages_table(run)
    final = [s for s, f in zip(stages.column("stage").to_pylist(), stages.column("is_final").to_pylist()) if f]
    _register_rows(con, "final_rows", [f for f in kept if final and Path(f).parent.name == final[0]], SAMPLE_SCHEMA)
    rejected_schema = pa.schema(list(SAMPLE_SCHEMA) + DROP_FIELDS)
    _register_rows(con, "rejected_rows", rejected, rejected_schema)
    con.register("_stages", stages)
    con.execute("CREATE OR REPLACE TABLE stages AS SELECT * FROM _stages")
    con.unregister("_stages")
    _register_labels(con, run)
    con.execute((views_sql or WAREHOUSE_DIR / "views.sql").read_text())
    return con


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run one query and return its rows as an Arrow table (an empty table for statements
    that return nothing). DuckDB 2 renamed ``arrow()``/``fetch_arrow_table()``."""
    rel = con.sql(sql)
    if rel is None:
        return pa.table({})
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    result = fetch()
    return result if isinstance(result, pa.Table) else result.read_all()


def report_queries() -> dict[str, str]:
    """Named reports shipped in ``warehouse/reports/*.sql`` (title from the first comment)."""
    out = {}
    for p in sorted((WAREHOUSE_DIR / "reports").glob("*.sql")):
        out[p.stem] = p.read_text()
    return out


def query(run: Run, sql: str, *, verify: bool = True) -> pa.Table:
    con = connect(run, verify=verify)
    try:
        return fetch_arrow(con, sql)
    finally:
        con.close()
