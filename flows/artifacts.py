"""Prefect artifacts for a run: what the Prefect UI shows on the flow run's Artifacts tab.

Built from the warehouse (the run's DuckDB views over committed shards and ``run.json``), keyed
per pipeline name so the UI's Artifacts page keeps each pipeline's history under one key:

- ``dataforge-<name>-summary`` (markdown): status, funnel, teacher requests/tokens/cost, the top
  drop reasons, where the export is;
- ``dataforge-<name>-funnel`` (table): one row per stage, as ``dataforge sql "select * from funnel"``;
- ``dataforge-<name>-drop-reasons`` (table): rows dropped per stage and reason.
"""

from __future__ import annotations

import re
from uuid import UUID

import pyarrow as pa
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from dataforge.store import Run
from dataforge.warehouse import connect, fetch_arrow

# a dropped row's reason may end with the id of another row (near_duplicate_of:<id>): grouped
# without it, so the table counts reasons rather than listing every survivor
DROP_REASONS_SQL = r"""
select drop_stage, regexp_replace(drop_reason, ':[0-9a-f]{16,}$', '') as drop_reason, sum(rows)::bigint as rows
from drop_reasons group by all order by rows desc, drop_stage, drop_reason
"""
FUNNEL_SQL = "select stage, status, rows_in, rows_kept, rows_dropped, kept_pct, seconds, " \
             "teacher_requests, teacher_cache_hits from funnel"
TOP_REASONS = 10


def artifact_key(pipeline_name: str, what: str) -> str:
    """Prefect artifact keys take lower-case letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9]+", "-", pipeline_name.lower()).strip("-") or "pipeline"
    return f"dataforge-{slug}-{what}"


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    fmt = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)).replace("|", "\\|")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run_tables(run: Run) -> tuple[pa.Table, pa.Table]:
    """(funnel, drop reasons) of a run, from the warehouse (file sizes checked, not their sha256:
    published at the end of the run that has just written and hashed them)."""
    con = connect(run, verify="size")
    try:
        return fetch_arrow(con, FUNNEL_SQL), fetch_arrow(con, DROP_REASONS_SQL)
    finally:
        con.close()


def summary_markdown(run: Run, funnel: list[dict], reasons: list[dict], export_path: str | None) -> str:
    rec = run.load_record()
    t = rec.teacher or {}
    out = [f"# dataforge run `{run.run_id}`\n",
           f"pipeline **{rec.name}**, status **{rec.status}**"
           + (f", {rec.seconds:.1f} s" if rec.seconds is not None else "")
           + (f"\n\nerror: `{rec.error}`" if rec.error else "") + "\n",
           "## Funnel\n", _md_table(funnel),
           "## Teacher\n",
           _md_table([{"requests_sent": t.get("requests_sent", 0), "cache_hits": t.get("cache_hits", 0),
                       "retries": t.get("retries", 0), "failures": t.get("failures", 0),
                       "prompt_tokens": t.get("prompt_tokens", 0), "completion_tokens": t.get("completion_tokens", 0),
                       "cost_usd": float(t.get("cost_usd", 0.0))}]),
           f"## Top drop reasons (of {sum(r['rows'] for r in reasons)} dropped rows)\n",
           _md_table(reasons[:TOP_REASONS])]
    if export_path:
        out.append(f"\nexport: `{export_path}`\n")
    out.append(f"\nrun directory: `{run.dir}`\n")
    return "\n".join(out)


def publish_run_artifacts(run: Run, pipeline_name: str, export_path: str | None = None) -> dict[str, UUID]:
    """Create the run's three artifacts in the current flow run; returns their ids by key."""
    funnel_t, reasons_t = run_tables(run)
    funnel, reasons = funnel_t.to_pylist(), reasons_t.to_pylist()
    keys = {w: artifact_key(pipeline_name, w) for w in ("summary", "funnel", "drop-reasons")}
    return {
        keys["summary"]: create_markdown_artifact(
            summary_markdown(run, funnel, reasons, export_path), key=keys["summary"],
            description=f"dataforge run {run.run_id}: funnel, teacher cost, top drop reasons"),
        keys["funnel"]: create_table_artifact(
            funnel, key=keys["funnel"], description=f"dataforge run {run.run_id}: rows in/kept/dropped per stage"),
        keys["drop-reasons"]: create_table_artifact(
            reasons or [{"drop_stage": None, "drop_reason": None, "rows": 0}], key=keys["drop-reasons"],
            description=f"dataforge run {run.run_id}: dropped rows per stage and reason"),
    }
