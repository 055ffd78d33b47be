"""The one path of every standalone stage command: read a JSONL or Parquet file with quarantine,
apply the stage, write ``kept.parquet`` and ``rejected.parquet`` (and ``quarantine.jsonl``), print
a summary. Custom commands (``filter``, ``dedup``, ``judge``, ...) call :func:`run_on_file` with
their own flags; a registered stage without one gets :func:`stage_command`, built from its
declaration (its ``cli_options`` become flags)."""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import pyarrow as pa
import typer

from dataforge.cli.common import INPUT_HELP, OUT_HELP, console, fail, load, section
from dataforge.errors import DataforgeError
from dataforge.stages.registry import Stage
from dataforge.tabular import InputError, Quarantined, read_text_table, write_kept_rejected

Apply = Callable[[pa.Table], tuple]


def read_input(input_file: Path, text_column: str = "text", keep_columns: bool = True
               ) -> tuple[pa.Table, list[Quarantined]]:
    """The rows of ``input_file`` (``text``, ``id``, ``source_file``, ``source_row`` and its own
    columns) and the quarantined ones; an unreadable file fails in one line."""
    try:
        return read_text_table(input_file, text_column, keep_columns=keep_columns)
    except (DataforgeError, InputError) as e:
        fail(str(e))


def run_on_file(input_file: Path, out: Path, text_column: str, apply: Apply,
                rows: tuple[pa.Table, list[Quarantined]] | None = None
                ) -> tuple[pa.Table, pa.Table, list[Quarantined]]:
    """Read ``input_file`` (or take ``rows``, what :func:`read_input` returned for it),
    ``apply(table) -> (kept, rejected, ...)``, write kept, rejected and quarantined rows under
    ``out`` (the text column keeps its name). A user-fixable error from the stage (a bad
    setting, a missing model) fails in one line."""
    table, quarantined = rows if rows is not None else read_input(input_file, text_column)
    try:
        kept, rejected, *_ = apply(table)
    except (DataforgeError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    write_kept_rejected(out, kept, rejected, quarantined, text_column)
    return kept, rejected, quarantined


def summary_line(kept: pa.Table, rejected: pa.Table, quarantined: list, out: Path) -> str:
    n = kept.num_rows + rejected.num_rows
    return (f"rows {n}, kept {kept.num_rows}, dropped {rejected.num_rows}, quarantined {len(quarantined)}; "
            f"written to {out}")


def drop_reason_lines(rejected: pa.Table, top: int = 10) -> list[str]:
    """The most common drop reasons, details after a ``(`` left out."""
    if not rejected.num_rows or "drop_reason" not in rejected.column_names:
        return []
    counts = Counter(str(r).split("(")[0] for r in rejected.column("drop_reason").to_pylist())
    width = max(len(r) for r, _ in counts.most_common(top))
    return ["dropped by reason:", *(f"  {r:<{width}}  {c}" for r, c in counts.most_common(top))]


def print_summary(stage: Stage, kept: pa.Table, rejected: pa.Table, quarantined: list, out: Path) -> None:
    console.print(summary_line(kept, rejected, quarantined, out), highlight=False, soft_wrap=True)
    for line in (stage.report(kept, rejected) if stage.report else drop_reason_lines(rejected)):
        console.print(line, highlight=False, soft_wrap=True)


def _flag_param(flag: str) -> str:
    return "opt_" + flag.lstrip("-").replace("-", "_")


def stage_command(stage: Stage) -> Callable[..., None]:
    """The generic standalone command of ``stage``: ``dataforge <name> INPUT --out DIR
    [--text-column C] [--config YAML] [its cli_options]``. The stage's config section comes from
    ``--config`` (default: the model's defaults), the flags override it, and the stage is on."""

    def command(**kwargs) -> None:
        from dataforge.config import PipelineConfig

        input_file, out = kwargs["input_file"], kwargs["out"]
        pcfg = load(kwargs["config"]) if kwargs["config"] else PipelineConfig()
        flags = {}
        for opt in stage.cli_options:
            value = kwargs.get(_flag_param(opt.flag))
            if value is not None:
                flags[opt.field] = opt.parse(value) if opt.parse else value
        cfg_section = section(stage.config_model, {**stage.config_of(pcfg).model_dump(), "enabled": True}, flags,
                              stage.name)
        cfg = pcfg.model_copy(update={stage.name: cfg_section})
        kept, rejected, quarantined = run_on_file(input_file, out, kwargs["text_column"],
                                                  lambda table: stage.apply(table, cfg))
        print_summary(stage, kept, rejected, quarantined, out)

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("input_file", kw, annotation=Path,
                          default=typer.Argument(..., metavar="INPUT", help=INPUT_HELP)),
        inspect.Parameter("out", kw, annotation=Path, default=typer.Option(..., "--out", "-o", help=OUT_HELP)),
        inspect.Parameter("text_column", kw, annotation=str,
                          default=typer.Option("text", "--text-column", help="Column holding the text")),
        inspect.Parameter("config", kw, annotation=Optional[Path],
                          default=typer.Option(None, "--config", help=f"Pipeline YAML whose `{stage.name}:` section "
                                                                      "to use; the flags below override it")),
        *(inspect.Parameter(_flag_param(o.flag), kw, annotation=Optional[o.type],
                            default=typer.Option(None, "--" + o.flag.lstrip("-"), help=o.help)) for o in stage.cli_options),
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = stage.name.replace("-", "_")
    reasons = "; ".join(stage.drop_reasons) or "none"
    columns = ", ".join(stage.columns) or (f"{stage.column_prefix}*" if stage.column_prefix else "none")
    command.__doc__ = (f"{stage.summary} (the `{stage.name}` stage on any file).\n\n"
                       f"Rows of INPUT go to kept.parquet or rejected.parquet (drop_stage {stage.name}); malformed "
                       f"rows to quarantine.jsonl. Columns added: {columns}. Drop reasons: {reasons}. Page: "
                       f"{stage.doc_page}.")
    return command
