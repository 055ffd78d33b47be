"""The run report as one self-contained HTML page (``dataforge report --html``).

Everything is inline: CSS in a ``<style>`` block, every chart an ``<svg>`` drawn here from the
warehouse views (no JavaScript, no CDN, no fonts to fetch), so the file opens anywhere,
offline, and can be mailed or archived as it is. Sections: the funnel, drop reasons per
stage, the quality gates (rows per reason with one example row each), histograms of every ``*_score`` column (kept against dropped rows of the stage that
scored them), textbook coverage per axis (topic, audience, style, format), teacher tokens and
cost per stage, and the ablation (selection against random data) when ``<run>/ablation/``
holds a ``report.json`` of ``dataforge ablate``.

Each chart is an ``<svg class="chart" data-chart="<name>">`` with a ``<title>`` per mark, so a
test (or a person hovering) can read the numbers behind it.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from dataforge.store import Run

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac"]
KEPT, DROPPED, MUTED = "#4e79a7", "#e15759", "#bab0ac"

CSS = """
:root { --fg: #1f2933; --muted: #616e7c; --line: #e4e7eb; --bg: #f7f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
header { background: #243b53; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header .meta { color: #bcccdc; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 32px 48px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin: 0 0 20px; }
.kpi { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.kpi .v { font-size: 22px; font-weight: 600; }
.kpi .l { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin: 0 0 18px; }
section h2 { margin: 0 0 4px; font-size: 17px; }
section p.note { margin: 0 0 12px; color: var(--muted); }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; }
.card h3 { margin: 6px 0; font-size: 14px; font-weight: 600; }
svg.chart { display: block; max-width: 100%; height: auto; }
svg text { font-family: inherit; fill: #334e68; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: right; padding: 4px 8px; border-bottom: 1px solid var(--line); }
th:first-child, td:first-child { text-align: left; }
th { color: var(--muted); font-weight: 600; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; font-size: 12px; color: var(--muted); margin: 4px 0 8px; }
.legend span::before { content: ""; display: inline-block; width: 10px; height: 10px; border-radius: 2px;
                       margin-right: 5px; background: var(--c); vertical-align: -1px; }
.empty { color: var(--muted); font-style: italic; }
.big { font-size: 18px; font-weight: 600; }
.gate td.example { text-align: left; width: 70%; }
.gate .why { font-weight: 600; word-break: break-word; }
.gate pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0; font-size: 12px; max-height: 12em;
            overflow: auto; background: var(--bg); padding: 6px 8px; border-radius: 4px; }
.gate .id { color: var(--muted); font-size: 11px; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 24px; }
"""


# --- SVG primitives ----------------------------------------------------------------------------

def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1):
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _svg(name: str, width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg class="chart" data-chart="{_e(name)}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="{_e(label)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
            + "".join(body) + "</svg>")


def _clip(s: str, n: int = 28) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def hbar_chart(name: str, labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]],
               label: str, width: int = 540, value_fmt=_fmt) -> str:
    """Horizontal stacked bars: one bar per label, ``series`` = (name, colour, values)."""
    if not labels:
        return '<p class="empty">nothing to show</p>'
    row_h, left, right, top = 24, 190, 70, 6
    totals = [sum(s[2][i] or 0 for s in series) for i in range(len(labels))]
    vmax = _nice_max(max(totals) if totals else 1)
    plot_w = width - left - right
    height = top + row_h * len(labels) + 22
    body = []
    for t in range(5):  # grid
        x = left + plot_w * t / 4
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - 20}" stroke="#e4e7eb"/>')
        body.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="10" text-anchor="middle">{_e(value_fmt(vmax * t / 4))}</text>')
    for i, lab in enumerate(labels):
        y = top + i * row_h
        body.append(f'<text x="{left - 8}" y="{y + row_h / 2 + 4:.1f}" font-size="12" text-anchor="end">'
                    f'<title>{_e(lab)}</title>{_e(_clip(lab))}</text>')
        x = float(left)
        for sname, colour, values in series:
            v = values[i] or 0
            w = plot_w * v / vmax
            if w > 0:
                body.append(f'<rect class="mark" x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" rx="2" '
                            f'fill="{colour}"><title>{_e(lab)} · {_e(sname)}: {_e(value_fmt(v))}</title></rect>')
            x += w
        body.append(f'<text x="{x + 6:.1f}" y="{y + row_h / 2 + 4:.1f}" font-size="11">{_e(value_fmt(totals[i]))}</text>')
    return _svg(name, width, height, body, label)


def histogram(name: str, groups: Sequence[tuple[str, str, Sequence[float]]], label: str, bins: int = 20,
              width: int = 540, height: int = 220) -> str:
    """Overlaid histograms of the same bins: ``groups`` = (name, colour, values)."""
    values = [v for _, _, vs in groups for v in vs if v is not None and math.isfinite(v)]
    if not values:
        return '<p class="empty">no scores</p>'
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    step = (hi - lo) / bins
    counts = []
    for _, _, vs in groups:
        c = [0] * bins
        for v in vs:
            if v is None or not math.isfinite(v):
                continue
            c[min(bins - 1, int((v - lo) / step))] += 1
        counts.append(c)
    cmax = _nice_max(max(max(c) for c in counts))
    left, right, top, bottom = 44, 12, 8, 30
    pw, ph = width - left - right, height - top - bottom
    body = []
    for t in range(5):
        y = top + ph - ph * t / 4
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e4e7eb"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{_e(_fmt(cmax * t / 4))}</text>')
    bw = pw / bins
    for (gname, colour, _), c in zip(groups, counts):
        for b, n in enumerate(c):
            if n == 0:
                continue
            h = ph * n / cmax
            x = left + b * bw
            a, z = lo + b * step, lo + (b + 1) * step
            body.append(f'<rect class="mark" x="{x + 1:.1f}" y="{top + ph - h:.1f}" width="{max(bw - 2, 1):.1f}" '
                        f'height="{h:.1f}" fill="{colour}" fill-opacity="0.7"><title>{_e(gname)} [{a:.3g}, {z:.3g}): '
                        f'{n}</title></rect>')
    for t in range(5):
        x = left + pw * t / 4
        body.append(f'<text x="{x:.1f}" y="{height - 10}" font-size="10" text-anchor="middle">{_e(_fmt(lo + (hi - lo) * t / 4))}</text>')
    return _svg(name, width, height, body, label)


def line_chart(name: str, series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]], label: str,
               x_label: str, y_label: str, width: int = 540, height: int = 240, log_x: bool = False) -> str:
    """Lines with dots: ``series`` = (name, colour, [(x, y), ...])."""
    pts = [p for _, _, ps in series for p in ps]
    if not pts:
        return '<p class="empty">no points</p>'
    fx = (lambda v: math.log10(max(v, 1e-12))) if log_x else (lambda v: v)
    xs, ys = [fx(p[0]) for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.1 or 0.5
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 52, 14, 10, 38
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + pw * (fx(x) - x0) / (x1 - x0)

    def py(y: float) -> float:
        return top + ph - ph * (y - y0) / (y1 - y0)

    body = []
    for t in range(5):
        y = y0 + (y1 - y0) * t / 4
        body.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{width - right}" y2="{py(y):.1f}" stroke="#e4e7eb"/>')
        body.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" font-size="10" text-anchor="end">{y:.3g}</text>')
    for t in range(5):
        xv = x0 + (x1 - x0) * t / 4
        shown = 10 ** xv if log_x else xv
        body.append(f'<text x="{left + pw * t / 4:.1f}" y="{height - 22}" font-size="10" text-anchor="middle">'
                    f'{_e(_fmt(shown))}</text>')
    body.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" font-size="11" text-anchor="middle">{_e(x_label)}</text>')
    body.append(f'<text x="12" y="{top + ph / 2:.1f}" font-size="11" text-anchor="middle" '
                f'transform="rotate(-90 12 {top + ph / 2:.1f})">{_e(y_label)}</text>')
    for sname, colour, ps in series:
        ps = sorted(ps)
        if len(ps) > 1:
            d = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(ps))
            body.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in ps:
            body.append(f'<circle class="mark" cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{colour}">'
                        f'<title>{_e(sname)}: {_e(_fmt(x))}, {y:.4g}</title></circle>')
    return _svg(name, width, height, body, label)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(f'<span style="--c:{c}">{_e(n)}</span>' for n, c in items) + "</div>"


def _table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    if not rows:
        return '<p class="empty">no rows</p>'
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(r.get(c)) if isinstance(r.get(c), (int, float)) else (r.get(c) if r.get(c) is not None else '–'))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- data ----------------------------------------------------------------------------------------

def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    from dataforge.warehouse import fetch_arrow

    try:
        return fetch_arrow(con, sql).to_pylist()
    except duckdb.Error:
        return []


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    return {r["column_name"]: r["column_type"] for r in _rows(con, f"DESCRIBE {relation}")}


NUMERIC = ("DOUBLE", "FLOAT", "REAL", "DECIMAL", "INTEGER", "BIGINT", "SMALLINT", "HUGEINT", "TINYINT")


def score_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Numeric ``*_score`` columns of the kept or rejected rows."""
    cols = {**_columns(con, "rejected_rows"), **_columns(con, "kept_rows")}
    return sorted(c for c, t in cols.items() if c.endswith("_score") and t.upper().startswith(NUMERIC))


def find_ablation(run: Run) -> dict | None:
    """The newest ``report.json`` of ``dataforge ablate`` under ``<run>/ablation/``, if any."""
    base = run.dir / "ablation"
    if not base.is_dir():
        return None
    for p in sorted(base.rglob("report.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("arms"), dict):
            data["_path"] = str(p.relative_to(run.dir))
            return data
    return None


# --- sections ------------------------------------------------------------------------------------

def _section(title: str, note: str, inner: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2><p class="note">{note}</p>{inner}</section>'


def _funnel(stages_rows: list[dict]) -> str:
    rows = [r for r in stages_rows if r.get("rows_in") is not None]
    labels = [r["stage"] for r in rows]
    chart = hbar_chart("funnel", labels, [("kept", KEPT, [r["rows_kept"] or 0 for r in rows]),
                                          ("dropped", DROPPED, [r["rows_dropped"] or 0 for r in rows])],
                       "rows kept and dropped per stage", width=760)
    return _section("Funnel", "Rows in, kept and dropped at each stage, in pipeline order.",
                    _legend([("kept", KEPT), ("dropped", DROPPED)]) + chart
                    + _table(rows, ["stage", "status", "rows_in", "rows_kept", "rows_dropped", "kept_pct", "seconds"]),
                    "funnel")


def _drop_reasons(con: duckdb.DuckDBPyConnection) -> str:
    # reasons carry ids and numbers (the id a near-duplicate kept, a judge's score): fold them to '#'
    # the generation gates' reasons carry an excerpt of the text: group them by gate (gate_drops)
    rows = _rows(con, r"""
        SELECT drop_stage,
               CASE WHEN split_part(drop_reason, ':', 1) IN ('noncompliant', 'wrong_step', 'unsupported_answer',
                                                             'unsupported_quantity', 'off_topic', 'reading_grade')
                    THEN reason_key(drop_reason)
                    ELSE regexp_replace(drop_reason, '[0-9a-f]{8,}|[0-9]+(\.[0-9]+)?', '#', 'g') END AS reason,
               count(*) AS rows
        FROM rejected_rows GROUP BY ALL ORDER BY drop_stage, rows DESC""")
    if not rows:
        return _section("Drop reasons", "No row was dropped.", "", "drops")
    cards = []
    stages = list(dict.fromkeys(r["drop_stage"] for r in rows))
    for i, stage in enumerate(stages):
        rs = [r for r in rows if r["drop_stage"] == stage][:12]
        chart = hbar_chart(f"drop_reasons_{stage}", [r["reason"] or "(none)" for r in rs],
                           [("rows", PALETTE[i % len(PALETTE)], [r["rows"] for r in rs])], f"drop reasons of {stage}")
        cards.append(f'<div class="card"><h3>{_e(stage)}</h3>{chart}</div>')
    return _section("Drop reasons", "Why rows were dropped, per stage (ids and numbers in a reason folded to #, "
                    "the excerpt of a gate's reason left out).",
                    f'<div class="grid">{"".join(cards)}</div>', "drops")


def _gates(con: duckdb.DuckDBPyConnection) -> str:
    """What each gate dropped: per stage, the rows per reason and one example row of each reason
    (its full drop reason and the start of its text), so a reader can judge the gate itself."""
    from dataforge.stages.registry import stage_order

    rows = _rows(con, "SELECT * FROM gate_drops")
    if not rows:
        return _section("Quality gates", "No gate dropped a row.", "", "gates")
    order = stage_order()
    stages = sorted(dict.fromkeys(r["stage"] for r in rows),
                    key=lambda s: order.index(s) if s in order else len(order))
    parts = []
    for stage in stages:
        body = "".join(
            f'<tr><td>{_e(r["reason"] or "(none)")}</td><td>{_fmt(r["rows"])}</td>'
            f'<td class="example"><div class="why">{_e(r["example_reason"])}</div>'
            f'<pre>{_e((r["example_text"] or "").strip())}</pre><div class="id">{_e(r["example_kind"])} '
            f'{_e(r["example_id"])}</div></td></tr>'
            for r in rows if r["stage"] == stage)
        parts.append(f'<div class="card gate" data-stage="{_e(stage)}"><h3>{_e(stage)}</h3><table><thead><tr>'
                     f'<th>reason</th><th>rows</th><th>example</th></tr></thead><tbody>{body}</tbody></table></div>')
    return _section("Quality gates", "What each stage dropped, per reason, with one example row of each reason: its "
                    "full drop reason and the start of its text (the row with the smallest id).", "".join(parts),
                    "gates")


def _scores(con: duckdb.DuckDBPyConnection, stage_names: Sequence[str]) -> str:
    cols = score_columns(con)
    if not cols:
        return _section("Scores", "No <code>*_score</code> column in this run (quality, judge and CoLoR stages "
                        "add them).", "", "scores")
    kept_cols, rej_cols = _columns(con, "kept_rows"), _columns(con, "rejected_rows")
    cards = []
    for col in cols:
        stage = col.split("_")[0]
        q = duckdb.escape_identifier(col) if hasattr(duckdb, "escape_identifier") else f'"{col}"'
        if stage in stage_names:
            kept = [r["v"] for r in _rows(con, f"SELECT {q}::DOUBLE AS v FROM kept_rows WHERE stage = '{stage}' "
                                                 f"AND {q} IS NOT NULL")] if col in kept_cols else []
            dropped = [r["v"] for r in _rows(con, f"SELECT {q}::DOUBLE AS v FROM rejected_rows WHERE drop_stage = "
                                                    f"'{stage}' AND {q} IS NOT NULL")] if col in rej_cols else []
        else:
            kept = [r["v"] for r in _rows(con, f"SELECT {q}::DOUBLE AS v FROM final WHERE {q} IS NOT NULL")] \
                if col in kept_cols else []
            dropped = []
        chart = histogram(f"score_{col}", [("kept", KEPT, kept), ("dropped", DROPPED, dropped)],
                          f"histogram of {col}")
        cards.append(f'<div class="card"><h3>{_e(col)} <span class="note">({len(kept)} kept, {len(dropped)} '
                     f'dropped)</span></h3>{_legend([("kept", KEPT), ("dropped", DROPPED)])}{chart}</div>')
    return _section("Scores", "Distribution of every score column, over the rows of the stage that scored them.",
                    f'<div class="grid">{"".join(cards)}</div>', "scores")


def _coverage(con: duckdb.DuckDBPyConnection) -> str:
    rows = _rows(con, "SELECT axis, value, planned, produced, in_final, never_produced, dropped FROM textbook_coverage "
                      "WHERE axis IN ('subject', 'topic', 'audience', 'style', 'format') AND value IS NOT NULL")
    cards = []
    series = [("in output", KEPT), ("dropped later", DROPPED), ("never produced", MUTED)]
    for axis in ("topic", "audience", "style", "format", "subject"):
        rs = [r for r in rows if r["axis"] == axis][:16]
        if not rs:
            continue
        chart = hbar_chart(f"coverage_{axis}", [r["value"] for r in rs],
                           [("in output", KEPT, [r["in_final"] for r in rs]),
                            ("dropped later", DROPPED, [r["dropped"] for r in rs]),
                            ("never produced", MUTED, [r["never_produced"] for r in rs])], f"coverage by {axis}")
        cards.append(f'<div class="card"><h3>by {_e(axis)}</h3>{chart}</div>')
    cot = _rows(con, "SELECT coalesce(seed_source, '(unknown)') AS source, count(*) AS rows FROM final "
                     "WHERE kind = 'cot' GROUP BY ALL ORDER BY rows DESC LIMIT 16")
    if cot:
        cards.append('<div class="card"><h3>chain of thought by seed source</h3>'
                     + hbar_chart("coverage_seed_source", [r["source"] for r in cot],
                                  [("in output", KEPT, [r["rows"] for r in cot])], "CoT samples by seed source")
                     + "</div>")
    if not cards:
        return _section("Topic and style coverage", "No textbook or CoT rows in this run.", "", "coverage")
    return _section("Topic and style coverage", "Planned textbook cells per value of each axis and what became of "
                    "them (phi-1.5 / Cosmopedia diversity axes).", _legend(series) + f'<div class="grid">{"".join(cards)}</div>',
                    "coverage")


def _teacher(run: Run, con: duckdb.DuckDBPyConnection) -> tuple[str, dict]:
    rec = run.load_record()
    billed = [{"stage": s, **{k: (st.teacher or {}).get(k) for k in ("requests_sent", "cache_hits", "retries", "failures",
                                                                      "prompt_tokens", "completion_tokens", "cost_usd")}}
              for s, st in rec.stages.items() if st.teacher]
    cols = _columns(con, "kept_rows")
    produced: list[dict] = []
    if "prompt_tokens" in cols:
        produced = _rows(con, """
            WITH gen AS (
                SELECT stage, prompt_tokens, completion_tokens, cost_usd FROM kept_rows WHERE stage IN ('textbooks', 'cot')
                UNION ALL
                SELECT drop_stage, prompt_tokens, completion_tokens, cost_usd FROM rejected_rows
                WHERE drop_stage IN ('textbooks', 'cot'))
            SELECT stage, count(*) AS samples, coalesce(sum(prompt_tokens), 0)::BIGINT AS prompt_tokens,
                   coalesce(sum(completion_tokens), 0)::BIGINT AS completion_tokens,
                   coalesce(sum(cost_usd), 0)::DOUBLE AS cost_usd
            FROM gen GROUP BY ALL ORDER BY stage DESC""")
    charts = []
    if produced:
        charts.append('<div class="card"><h3>tokens of the generated samples</h3>'
                      + _legend([("prompt", PALETTE[0]), ("completion", PALETTE[1])])
                      + hbar_chart("teacher_tokens", [r["stage"] for r in produced],
                                   [("prompt", PALETTE[0], [r["prompt_tokens"] for r in produced]),
                                    ("completion", PALETTE[1], [r["completion_tokens"] for r in produced])],
                                   "teacher tokens per stage") + "</div>")
        charts.append('<div class="card"><h3>cost of the generated samples (USD)</h3>'
                      + hbar_chart("teacher_cost", [r["stage"] for r in produced],
                                   [("USD", PALETTE[2], [r["cost_usd"] for r in produced])], "teacher cost per stage",
                                   value_fmt=lambda v: f"${v:,.4f}") + "</div>")
    if billed:
        charts.append('<div class="card"><h3>requests this run sent and took from the cache</h3>'
                      + _legend([("sent", PALETTE[4]), ("cache hits", MUTED)])
                      + hbar_chart("teacher_requests", [r["stage"] for r in billed],
                                   [("sent", PALETTE[4], [r["requests_sent"] or 0 for r in billed]),
                                    ("cache hits", MUTED, [r["cache_hits"] or 0 for r in billed])],
                                   "teacher requests per stage") + "</div>")
    totals = rec.teacher or {}
    if not charts:
        return _section("Teacher tokens and cost", "This run asked no teacher.", "", "teacher"), totals
    inner = (f'<div class="grid">{"".join(charts)}</div>' + "<h3>billed in this run (cache hits cost nothing)</h3>"
             + _table(billed, ["stage", "requests_sent", "cache_hits", "retries", "failures", "prompt_tokens",
                               "completion_tokens", "cost_usd"]))
    return _section("Teacher tokens and cost", "Tokens and USD behind the generated samples (kept and dropped), and "
                    "what this run actually sent.", inner, "teacher"), totals


def _ablation(run: Run) -> str:
    rep = find_ablation(run)
    if rep is None:
        return _section("Ablation", "No ablation for this run (run <code>dataforge ablate … --out "
                        f"{_e(run.dir / 'ablation')}</code> to add one).", "", "ablation")
    arms = rep["arms"]
    targets = list(rep.get("targets") or next(iter(arms.values()), {}).get("heldout", {}))
    cards, lines = [], []
    for i, t in enumerate(targets):
        names = [a for a in arms if t in (arms[a].get("heldout") or {})]
        cards.append(f'<div class="card"><h3>held-out loss on {_e(t)} (lower is better)</h3>'
                     + hbar_chart(f"ablation_arms_{i}", names,
                                  [("loss", PALETTE[i % len(PALETTE)], [arms[a]["heldout"][t] for a in names])],
                                  f"held-out loss per arm on {t}", value_fmt=lambda v: f"{v:.3f}") + "</div>")
        tinfo = (rep.get("targets") or {}).get(t) or {}
        pts = [(p["tokens"], p["loss"]) for p in tinfo.get("points", []) if p.get("tokens")]
        series = [("random data (whole pool)", MUTED, pts)]
        if "selection" in arms and arms["selection"].get("tokens"):
            series.append(("selection", KEPT, [(arms["selection"]["tokens"], arms["selection"]["heldout"][t])]))
        if "random_subset" in arms and arms["random_subset"].get("tokens"):
            series.append(("random subset", DROPPED, [(arms["random_subset"]["tokens"],
                                                       arms["random_subset"]["heldout"][t])]))
        if pts:
            cards.append(f'<div class="card"><h3>loss against training tokens, {_e(t)}</h3>'
                         + _legend([(n, c) for n, c, _ in series])
                         + line_chart(f"ablation_curve_{i}", series, f"held-out loss against tokens on {t}",
                                      "training tokens (log)", "held-out loss", log_x=True) + "</div>")
        if tinfo.get("multiplier") is not None or tinfo.get("below_floor"):
            mult = "∞ (below the fitted floor)" if tinfo.get("below_floor") else f"{tinfo['multiplier']:.2f}×"
            lines.append(f'<p class="big">Effective data multiplier on {_e(t)}: {_e(mult)}</p>')
    note = (f"Selection against random data at an equal token budget ({_e(rep.get('token_budget'))} tokens), from "
            f"<code>{_e(rep['_path'])}</code>.")
    return _section("Ablation", note, "".join(lines) + f'<div class="grid">{"".join(cards)}</div>', "ablation")


# --- the page ------------------------------------------------------------------------------------

def render_report(run: Run) -> str:
    """The run's report as one self-contained HTML page."""
    from dataforge.stages.registry import stage_order
    from dataforge.warehouse import connect

    rec = run.load_record()
    con = connect(run)
    try:
        stages_rows = _rows(con, "SELECT * FROM funnel")
        final_rows = _rows(con, "SELECT count(*) AS n FROM final")
        teacher_html, totals = _teacher(run, con)
        body = [_funnel(stages_rows), _drop_reasons(con), _gates(con), _scores(con, stage_order()), _coverage(con), teacher_html,
                _ablation(run)]
    finally:
        con.close()
    n_final = final_rows[0]["n"] if final_rows else 0
    kpis = [("rows in the output", _fmt(n_final)),
            ("stages", _fmt(len(stages_rows))),
            ("teacher requests sent", _fmt(totals.get("requests_sent", 0))),
            ("cache hits", _fmt(totals.get("cache_hits", 0))),
            ("tokens billed", _fmt((totals.get("prompt_tokens") or 0) + (totals.get("completion_tokens") or 0))),
            ("cost billed", f"${(totals.get('cost_usd') or 0):,.4f}"),
            ("run time", f"{rec.seconds:,.1f} s" if rec.seconds else "–")]
    kpi_html = '<div class="kpis">' + "".join(f'<div class="kpi"><div class="v">{_e(v)}</div><div class="l">{_e(k)}'
                                             f'</div></div>' for k, v in kpis) + "</div>"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"dataforge run {rec.run_id}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{_e(title)}</h1><div class=\"meta\">pipeline "
            f"<b>{_e(rec.name)}</b> · status <b>{_e(rec.status)}</b> · created {_e(rec.created_at)} · teacher "
            f"{_e((rec.config.get('teacher') or {}).get('model', '–'))}</div></header><main>{kpi_html}"
            + "".join(body) + f"<footer>generated {generated} by dataforge · {_e(run.dir)}</footer></main></body></html>\n")


def write_report(run: Run, out: str | Path | None = None) -> Path:
    """Write the page (default ``<run>/report.html``) atomically; returns its path."""
    from dataforge.store import atomic_write_text

    path = Path(out) if out else run.dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_report(run))
    return path
