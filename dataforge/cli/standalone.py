"""The one path of every standalone stage command: read a JSONL or Parquet file with quarantine,
apply the stage, write ``kept.parquet`` and ``rejected.parquet`` (and ``quarantine.jsonl``), print
a summary. Custom commands (``filter``, ``dedup``, ``judge``, ...) call :func:`run_on_file` with
their own flags; a registered stage without one gets :func:`stage_command`, built from its
declaration (its ``cli_options`` become flags)."""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import typer

from dataforge.cli.common import INPUT_HELP, OUT_HELP, console, fail, load, section
from dataforge.errors import DataforgeError
from dataforge.stages.registry import Stage
from dataforge.tabular import (InputError, KeptRejectedWriter, Quarantined, iter_text_tables, read_text_table,
                               write_kept_rejected)

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


class StreamTotals:
    """What a streamed command counts as tables go by (for its summary)."""

    def __init__(self) -> None:
        self.kept = self.dropped = 0
        self.reasons: Counter = Counter()

    def add(self, kept: pa.Table, rejected: pa.Table) -> None:
        self.kept += kept.num_rows
        self.dropped += rejected.num_rows
        if rejected.num_rows and "drop_reason" in rejected.column_names:
            for r in rejected.column("drop_reason").to_pylist():
                self.reasons[str(r).split("(")[0]] += 1


def iter_input(input_file: Path, text_column: str, batch_rows: int | None = None,
               label: str = "read") -> Iterator[tuple[pa.Table, list[Quarantined]]]:
    """:func:`dataforge.tabular.iter_text_tables` with a progress bar over the file's bytes (an
    unreadable file fails in one line)."""
    from dataforge import tabular
    from dataforge.progress import progress_bar

    batch_rows = batch_rows or tabular.STREAM_BATCH_ROWS
    try:
        tables = iter_text_tables(input_file, text_column, batch_rows=batch_rows)
        first = next(tables)
        size = max(1, input_file.stat().st_size)
    except (DataforgeError, InputError, OSError) as e:
        fail(str(e))
    # steps of the bar: tables, estimated from the first table's share of the file
    text_bytes = max(1, int(pc.sum(pc.binary_length(first[0].column("text"))).as_py() or 0))
    steps = max(1, round(size / text_bytes)) if first[0].num_rows >= batch_rows else 1
    with progress_bar(f"{label} {input_file.name}", steps) as advance:
        yield first
        advance()
        try:
            for item in tables:
                yield item
                advance()
        except (DataforgeError, InputError) as e:
            fail(str(e))


def stream_on_file(input_file: Path, out: Path, text_column: str, apply: Apply, label: str = "apply",
                   on_tables: Callable[[pa.Table, pa.Table], None] | None = None,
                   batch_rows: int | None = None) -> tuple[StreamTotals, list[Quarantined]]:
    """:func:`run_on_file` for a stage that decides each row alone: the file read in tables of
    ``batch_rows`` rows (default ``dataforge.tabular.STREAM_BATCH_ROWS``), ``apply`` on each, kept and rejected rows written as they come
    (:class:`~dataforge.tabular.KeptRejectedWriter`): memory bounded by one table, whatever
    the file's size. ``on_tables(kept, rejected)`` sees each table's result (for a summary)."""
    writer = KeptRejectedWriter(out, text_column)
    totals, quarantined = StreamTotals(), []
    try:
        for table, q in iter_input(input_file, text_column, batch_rows, label):
            quarantined.extend(q)
            try:
                kept, rejected, *_ = apply(table)
            except (DataforgeError, ValueError, FileNotFoundError) as e:
                fail(str(e))
            writer.write(kept, rejected)
            totals.add(kept, rejected)
            if on_tables is not None:
                on_tables(kept, rejected)
    finally:
        writer.close(quarantined)
    return totals, quarantined


def read_back(out: Path, text_column: str = "text") -> tuple[pa.Table, pa.Table]:
    """The written kept and rejected rows without their text (for a stage's report lines)."""
    import pyarrow.parquet as pq

    def read(name: str) -> pa.Table:
        path = out / f"{name}.parquet"
        cols = [c for c in pq.read_schema(path).names if c not in (text_column, "text", "text_original")]
        return pq.read_table(path, columns=cols)

    return read("kept"), read("rejected")


def summary_line(kept: pa.Table, rejected: pa.Table, quarantined: list, out: Path) -> str:
    n = kept.num_rows + rejected.num_rows
    return (f"rows {n}, kept {kept.num_rows}, dropped {rejected.num_rows}, quarantined {len(quarantined)}; "
            f"written to {out}")


def drop_reason_lines(rejected: pa.Table, top: int = 10) -> list[str]:
    """The most common drop reasons, details after a ``(`` left out."""
    if not rejected.num_rows or "drop_reason" not in rejected.column_names:
        return []
    return reason_lines(Counter(str(r).split("(")[0] for r in rejected.column("drop_reason").to_pylist()), top)


def reason_lines(counts: Counter, top: int = 10) -> list[str]:
    if not counts:
        return []
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
        if stage.scope == "shard":  # each row decided alone: streamed, memory bounded by a table
            totals, quarantined = stream_on_file(input_file, out, kwargs["text_column"],
                                                 lambda table: stage.apply(table, cfg), label=stage.name)
            console.print(f"rows {totals.kept + totals.dropped}, kept {totals.kept}, dropped {totals.dropped}, "
                          f"quarantined {len(quarantined)}; written to {out}", highlight=False, soft_wrap=True)
            if stage.report:
                lines = stage.report(*read_back(out, kwargs["text_column"]))
            else:
                lines = reason_lines(totals.reasons)
            for line in lines:
                console.print(line, highlight=False, soft_wrap=True)
            return
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
