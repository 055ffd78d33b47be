"""What every ``dataforge`` command shares: the consoles, failing in one line, loading a config,
the data root, picking a run, validating a config section from flags, printing a table."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import pyarrow as pa
import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dataforge.config import ConfigError, load_config, validate_section
from dataforge.errors import DataforgeError
from dataforge.store import Run, StoreError, is_local_data_root, latest_run

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = "configs/quickstart.yaml"
DATA_ROOT_HELP = "Data root holding runs/ and cache/ [env DATAFORGE_DATA_ROOT; default: ./dataforge-data]"
INPUT_HELP = "Records as JSON lines (.jsonl) or Parquet (.parquet)"
OUT_HELP = "Output folder: kept.parquet, rejected.parquet, quarantine.jsonl"


def default_config() -> Path:
    local = Path(DEFAULT_CONFIG)
    return local if local.exists() else REPO_ROOT / DEFAULT_CONFIG


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print ``error: msg`` on stderr, one line, and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def data_root(root: Optional[str]) -> str:
    return root or os.environ.get("DATAFORGE_DATA_ROOT") or "dataforge-data"


def load(config: Optional[Path], root: Optional[str] = None):
    """The pipeline config at ``config`` (default: the quickstart's), its data root overridden by
    ``root`` or ``$DATAFORGE_DATA_ROOT``; a bad config fails naming the file and the field."""
    try:
        cfg = load_config(config or default_config())
    except ConfigError as e:
        fail(str(e))
    root = root or os.environ.get("DATAFORGE_DATA_ROOT")
    if root:
        cfg.data_root = root
    return cfg


def section(model: type, base: dict, flags: dict, name: str, as_flags: bool = False) -> Any:
    """``model`` validated from a config section overridden by the flags given (None: not
    given); a bad value fails naming the field (``name.field``; the flag with ``as_flags``)."""
    try:
        return validate_section(model, {**base, **{k: v for k, v in flags.items() if v is not None}}, name, as_flags)
    except ConfigError as e:
        fail(str(e))


def pick_run(root: Optional[str], run_id: Optional[str]) -> Run:
    root = data_root(root)
    if not is_local_data_root(root):
        # sql, report and export read the run through DuckDB and write local files (store.py: an
        # object-store data root holds runs and shards only)
        fail(f"data root {root!r} is not a local path: sql, report and export need a local data root")
    try:
        if run_id:
            run = Run(root, run_id)
            if not run.exists():
                fail(f"no run {run_id!r} under {Path(root).resolve() / 'runs'}")
            return run
        return latest_run(root)
    except StoreError as e:
        fail(f"{e} (run `dataforge run` first, or pass --data-root)")


def print_table(table: pa.Table, title: str | None = None, max_rows: int = 200, max_width: int = 80) -> None:
    t = Table(title=title, show_lines=False, title_justify="left")
    for name in table.column_names:
        t.add_column(name, overflow="fold", max_width=max_width)
    for row in table.slice(0, max_rows).to_pylist():
        t.add_row(*["" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row.values()])
    console.print(t)
    if table.num_rows > max_rows:
        console.print(f"... {table.num_rows - max_rows} more rows (use --limit or --format)")


class DataforgeGroup(TyperGroup):
    """The app's command group: a :class:`~dataforge.errors.DataforgeError` that no command
    handled ends in one line (``error: ...``, exit 2) instead of a traceback — the one place the
    CLI catches them, for every command and subcommand (and under typer's test runner too)."""

    def invoke(self, ctx):  # noqa: ANN001 - click's signature
        try:
            return super().invoke(ctx)
        except DataforgeError as e:
            fail(str(e))
