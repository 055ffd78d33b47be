"""``dataforge filter``: the heuristic rule filters (the ``heuristics`` stage) on any JSONL or
Parquet file with a text column (library: :mod:`dataforge.curate.heuristics`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from dataforge.cli.common import console, fail, load
from dataforge.cli.standalone import stream_on_file

FAMILY_HELP = ("Rule families to run, comma-separated, in any of: gopher_quality, gopher_repetition, c4, "
               "fineweb_quality, or all [default: those the config enables; without --config: gopher_quality]")


def filter_command(
    input_file: Path = typer.Argument(..., metavar="INPUT", help="Records as JSON lines (.jsonl) or Parquet (.parquet)"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: kept.parquet, rejected.parquet, quarantine.jsonl"),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text to check"),
    config: Path | None = typer.Option(None, "--config", help="Pipeline YAML whose `heuristics:` section (families, "
                                                                 "thresholds) to use; --rules overrides its families"),
    rules: str | None = typer.Option(None, "--rules", help=FAMILY_HELP),
    no_metrics: bool = typer.Option(False, "--no-metrics", help="Leave out the heur_* metric columns"),
    batch_rows: int = typer.Option(5000, "--batch-rows", min=1, help="Rows checked at once"),
) -> None:
    """Drop rows of INPUT that fail heuristic rules: Gopher quality, Gopher repetition, C4, FineWeb.

    Every row is checked (the config's apply_to does not apply to a plain file). Dropped rows go
    to rejected.parquet with drop_stage heuristics and drop_reason <family>:<rule>, the first rule
    they failed (e.g. gopher_repetition:dup_line_frac, c4:min_sentences); both files carry the
    heur_* metrics of the families run. With c4 (and its clean_lines, the default) the kept rows'
    text is their kept lines, and heur_c4_lines_removed counts the lines removed. Malformed JSON
    lines and rows without a text go to quarantine.jsonl. Thresholds: configs/*.yaml
    `heuristics:`, defaults from the papers. Example: dataforge filter pile.jsonl --out
    filtered/ --text-column contents --rules all
    """
    import pyarrow as pa

    from dataforge.config import HeuristicsConfig
    from dataforge.curate.heuristics import FAMILY_NAMES, RULE_NAMES, apply_heuristics, heuristics_summary

    base = load(config).heuristics if config else HeuristicsConfig()
    data = base.model_dump()
    if rules:
        chosen = [r.strip() for r in rules.split(",") if r.strip()]
        if chosen == ["all"]:
            chosen = list(FAMILY_NAMES)
        unknown = [r for r in chosen if r not in FAMILY_NAMES]
        if unknown or not chosen:
            fail(f"--rules: unknown family {', '.join(unknown) or '(none)'}; choose from {', '.join(FAMILY_NAMES)} "
                  f"or all")
        for family in FAMILY_NAMES:
            data[family]["enabled"] = family in chosen
    data.update(enabled=True, apply_to=["document"], keep_metrics=not no_metrics)
    cfg = HeuristicsConfig.model_validate(data)
    if not any(getattr(cfg, f).enabled for f in FAMILY_NAMES):
        fail("no rule family enabled: name some with --rules")

    def apply(table: pa.Table) -> tuple[pa.Table, pa.Table]:
        # every row is checked as a "document"; a column of the file named kind comes back unchanged
        n = table.num_rows
        own_kind = table.column("kind") if "kind" in table.column_names else None
        if own_kind is not None:
            table = table.drop_columns(["kind"])
        table = table.append_column("_row", pa.array(range(n), pa.int64()))
        table = table.append_column("kind", pa.array(["document"] * n, pa.string()))
        kept, rejected = apply_heuristics(table, cfg, batch_rows=batch_rows)

        def restore(t: pa.Table) -> pa.Table:
            rows = t.column("_row")
            t = t.drop_columns(["_row", "kind", "heur_checked"])
            if own_kind is not None:
                t = t.append_column("kind", own_kind.take(rows))
            return t

        return restore(kept), restore(rejected)

    # streamed: the file is read, checked and written a table at a time (memory bounded by one)
    s = {"rows": 0, "kept": 0, "dropped": 0, "by_rule": Counter(), "c4_lines_removed": 0}

    def count(kept: pa.Table, rejected: pa.Table) -> None:
        part = heuristics_summary(kept, rejected)
        for key in ("rows", "kept", "dropped", "c4_lines_removed"):
            s[key] += part[key]
        s["by_rule"].update(part["by_rule"])

    _, quarantined = stream_on_file(input_file, out, text_column, apply, label="filter", on_tables=count)
    families = ", ".join(f for f in FAMILY_NAMES if getattr(cfg, f).enabled)
    console.print(f"rows {s['rows']}, kept {s['kept']}, dropped {s['dropped']} ({families}), quarantined "
                  f"{len(quarantined)}; written to {out}", highlight=False, soft_wrap=True)
    if s["c4_lines_removed"]:
        console.print(f"c4 line cleaning removed {s['c4_lines_removed']} lines from kept rows", highlight=False)
    if s["by_rule"]:
        width = max(len(r) for r in s["by_rule"])
        console.print("dropped by rule (first failed):", highlight=False)
        for rule, count in sorted(s["by_rule"].items(), key=lambda kv: (RULE_NAMES.index(kv[0])
                                                                         if kv[0] in RULE_NAMES else 999)):
            console.print(f"  {rule:<{width}}  {count}", highlight=False)
