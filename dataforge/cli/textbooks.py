"""``dataforge textbooks gate``: the textbooks stage's generation gates (prompt compliance, topic
faithfulness, reading grade for the audience) on any file of sections (library:
:mod:`dataforge.generate.gates`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pyarrow as pa
import typer

from dataforge.cli.common import INPUT_HELP, OUT_HELP, load, section
from dataforge.cli.standalone import print_summary, run_on_file

textbooks_app = typer.Typer(help="Textbook sections: check a file of them with the generation gates.",
                            no_args_is_help=True)


@textbooks_app.command("gate")
def gate(
    input_file: Path = typer.Argument(..., metavar="INPUT", help=INPUT_HELP),
    out: Path = typer.Option(..., "--out", "-o", help=OUT_HELP),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the section"),
    config: Optional[Path] = typer.Option(None, "--config", help="Pipeline YAML whose `textbooks.gates` section to "
                                                                 "use [default: the gates' defaults]"),
    no_topic: bool = typer.Option(False, "--no-topic", help="Skip the topic check (it embeds every section)"),
) -> None:
    """Check textbook sections with the generation gates and keep those that pass.

    Every row is checked for prompt compliance (meta talk, refusals, unfilled placeholders,
    truncation); rows with `topic` (and `subject`, `subtopic`) columns for topic faithfulness;
    rows with an `audience` column for the audience's reading-grade band. Rows gain
    gen_compliance, gen_topic_similarity and gen_reading_grade; dropped rows carry
    noncompliant:<reason>:<excerpt>, off_topic:<similarity> or reading_grade:<grade> outside
    <audience> band [lo, hi]. Example: dataforge textbooks gate sections.jsonl --out gated/
    """
    from dataforge.config import TextbookGatesConfig
    from dataforge.generate.gates import apply_textbook_gates
    from dataforge.records import with_drop
    from dataforge.stages.registry import get_stage

    base = load(config).textbooks.gates.model_dump() if config else {}
    cfg = section(TextbookGatesConfig, base, {"enabled": True, "topic": False if no_topic else None},
                  "textbooks.gates")

    def apply(table: pa.Table) -> tuple[pa.Table, pa.Table]:
        rows = table.to_pylist()
        kept, dropped = apply_textbook_gates(rows, cfg)
        reasons = [r.pop("drop_reason") for r in dropped]
        schema = pa.Table.from_pylist(rows).schema if rows else table.schema
        kept_t = pa.Table.from_pylist(kept, schema=schema)
        return kept_t, with_drop(pa.Table.from_pylist(dropped, schema=schema), "textbooks", reasons)

    kept, rejected, quarantined = run_on_file(input_file, out, text_column, apply)
    print_summary(get_stage("textbooks"), kept, rejected, quarantined, out)
