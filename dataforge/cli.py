"""The ``dataforge`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import pyarrow as pa
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dataforge.config import ConfigError, load_config
from dataforge.store import Run, StoreError, latest_run, list_runs

app = typer.Typer(help="dataforge: manufacture, curate and deliver training data for small language models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
teacher_app = typer.Typer(help="The embedded local teacher (llama.cpp server with SmolLM2-135M-Instruct), "
                               "and the teacher's request cache (show).",
                          no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")
cot_app = typer.Typer(help="Chain-of-thought data: check the final answers of a file of solutions.",
                      no_args_is_help=True)
app.add_typer(cot_app, name="cot")

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "configs/quickstart.yaml"
DATA_ROOT_HELP = "Data root holding runs/ and cache/ [env DATAFORGE_DATA_ROOT; default: ./dataforge-data]"


def _default_config() -> Path:
    local = Path(DEFAULT_CONFIG)
    return local if local.exists() else REPO_ROOT / DEFAULT_CONFIG


def _fail(msg: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _data_root(data_root: Optional[str]) -> str:
    return data_root or os.environ.get("DATAFORGE_DATA_ROOT") or "dataforge-data"


def _load(config: Optional[Path], data_root: Optional[str] = None):
    try:
        cfg = load_config(config or _default_config())
    except ConfigError as e:
        _fail(str(e))
    root = data_root or os.environ.get("DATAFORGE_DATA_ROOT")
    if root:
        cfg.data_root = root
    return cfg


def _pick_run(data_root: Optional[str], run_id: Optional[str]) -> Run:
    root = _data_root(data_root)
    try:
        if run_id:
            run = Run(root, run_id)
            if not run.exists():
                _fail(f"no run {run_id!r} under {Path(root).resolve() / 'runs'}")
            return run
        return latest_run(root)
    except StoreError as e:
        _fail(f"{e} (run `dataforge run` first, or pass --data-root)")
    raise AssertionError("unreachable")


def print_table(table: pa.Table, title: str | None = None, max_rows: int = 200, max_width: int = 80) -> None:
    t = Table(title=title, show_lines=False, title_justify="left")
    for name in table.column_names:
        t.add_column(name, overflow="fold", max_width=max_width)
    for row in table.slice(0, max_rows).to_pylist():
        t.add_row(*["" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row.values()])
    console.print(t)
    if table.num_rows > max_rows:
        console.print(f"... {table.num_rows - max_rows} more rows (use --limit or --format)")


def print_report(run: Run) -> None:
    from dataforge.warehouse import connect, fetch_arrow, report_queries

    con = connect(run)
    try:
        rec = run.load_record()
        console.print(f"[bold]run[/] {run.run_id}  status={rec.status}  dir={run.dir}")
        for name, sql in report_queries().items():
            print_table(fetch_arrow(con, sql), title=name.replace("_", " "))
        t = rec.teacher or {}
        if t:
            console.print("teacher: " + ", ".join(f"{k}={v}" for k, v in t.items()))
    finally:
        con.close()


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help=f"Pipeline YAML [default: {DEFAULT_CONFIG}]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    resume: Optional[str] = typer.Option(None, "--resume", help="Resume this run id: committed stages are skipped."),
) -> None:
    """Run the pipeline: generate with the teacher, filter, deduplicate, export; print the funnel.

    With `teacher: local` the embedded llama.cpp teacher is started for the generation stages
    and stopped after. Every teacher request is cached under <data root>/cache, so running
    again sends nothing already answered.
    """
    from dataforge.teacher.local import LocalTeacherError

    cfg = _load(config, data_root)
    from flows.pipeline import pipeline  # Prefect is imported only here (the library never does)

    try:
        run_id = pipeline(str(Path(cfg.source_path or _default_config())), data_root=cfg.data_root, run_id=resume)
    except (ConfigError, LocalTeacherError, FileNotFoundError) as e:
        _fail(str(e), code=1)
    run_obj = Run(cfg.data_root, run_id)
    print_report(run_obj)
    console.print(f"export: {run_obj.export_dir(cfg.export.name)}")
    console.print(f'query it: dataforge sql "select kind, count(*) from final group by all" --run {run_id}')


@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL over the run's views: samples, final, rejections, funnel, drop_reasons, stages"),
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id [default: the latest run]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
    limit: int = typer.Option(200, "--limit", help="Rows to show in table format"),
) -> None:
    """Run a DuckDB query over a run (the latest by default)."""
    import duckdb

    from dataforge.warehouse import query as run_query

    r = _pick_run(data_root, run_id)
    try:
        result = run_query(r, query)
    except duckdb.Error as e:
        _fail(f"query failed: {e}")
    if fmt == "json":
        for row in result.to_pylist():
            sys.stdout.write(json.dumps(row, default=str) + "\n")
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(result, sys.stdout.buffer)
    elif fmt == "table":
        print_table(result, max_rows=limit)
    else:
        _fail(f"--format must be table, csv or json, got {fmt!r}")


@app.command()
def report(
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id [default: the latest run]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Print a run's funnel, drop reasons and output as tables."""
    print_report(_pick_run(data_root, run_id))


@app.command()
def runs(data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP)) -> None:
    """List the runs under the data root, oldest first."""
    rows = []
    for r in list_runs(_data_root(data_root)):
        rec = r.load_record()
        rows.append({"run": r.run_id, "status": rec.status, "created_at": rec.created_at, "seconds": rec.seconds})
    print_table(pa.Table.from_pylist(rows) if rows else pa.table({"run": pa.array([], pa.string())}))


def _final_stage_of(r: Run) -> str:
    """The last curation stage the run committed (else its last generation stage)."""
    from dataforge.warehouse import CURATION_ORDER

    stages = r.load_record().stages
    for s in [*reversed(CURATION_ORDER), "cot", "textbooks"]:
        if s in stages and stages[s].status in ("completed", "skipped"):
            return s
    return "dedup"


@app.command()
def export(
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id [default: the latest run]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    name: str = typer.Option("default", "--name", help="Export folder name under <run>/export/"),
    formats: str = typer.Option("jsonl,parquet", "--formats", help="Comma-separated: jsonl, parquet"),
    stage: Optional[str] = typer.Option(None, "--stage", help="Stage whose kept rows to export [default: the final one]"),
) -> None:
    """Export a run's kept samples as chat-format JSONL (`messages`) and Parquet."""
    from dataforge.export import export_run
    from dataforge.store import StageNotCommitted

    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in fmts if f not in ("jsonl", "parquet")]
    if bad or not fmts:
        _fail(f"--formats: unknown format(s) {bad}; choose from jsonl, parquet")
    r = _pick_run(data_root, run_id)
    try:
        out, manifest = export_run(r, stage or _final_stage_of(r), name, fmts)
    except StageNotCommitted as e:
        _fail(str(e))
    console.print(f"exported {manifest['rows']} rows to {out}")


@teacher_app.command("serve")
def teacher_serve(
    config: Optional[Path] = typer.Option(None, "--config", help=f"Pipeline YAML [default: {DEFAULT_CONFIG}]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Start the embedded teacher in the background on 127.0.0.1 and wait until it answers."""
    from dataforge.teacher.local import LocalTeacher, LocalTeacherError

    cfg = _load(config, data_root)
    lt = LocalTeacher(cfg.teacher, Path(cfg.data_root) / "teacher")
    try:
        with console.status("starting the local teacher ..."):
            st = lt.serve()
    except LocalTeacherError as e:
        _fail(str(e))
    console.print(f"serving {cfg.teacher.model} at {lt.base_url} (pid {st.pid}, log {st.log})")


@teacher_app.command("status")
def teacher_status(
    config: Optional[Path] = typer.Option(None, "--config", help=f"Pipeline YAML [default: {DEFAULT_CONFIG}]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Say whether the embedded teacher is running and answering. Exit code 0 when it answers."""
    from dataforge.teacher.local import LocalTeacher

    cfg = _load(config, data_root)
    st = LocalTeacher(cfg.teacher, Path(cfg.data_root) / "teacher").status()
    console.print(json.dumps(st))
    raise typer.Exit(0 if st["state"] in ("running", "foreign") else 1)


@teacher_app.command("stop")
def teacher_stop(
    config: Optional[Path] = typer.Option(None, "--config", help=f"Pipeline YAML [default: {DEFAULT_CONFIG}]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Stop the embedded teacher started by `dataforge teacher serve`."""
    from dataforge.teacher.local import LocalTeacher

    cfg = _load(config, data_root)
    stopped = LocalTeacher(cfg.teacher, Path(cfg.data_root) / "teacher").stop()
    console.print("stopped" if stopped else "no local teacher was running")


@teacher_app.command("show")
def teacher_show(
    request_hash: str = typer.Argument(..., help="A sample row's request_hash (or a unique prefix of it, 8+ characters)"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Print the cached teacher request and raw response of a request hash, as JSON.

    The request holds the model, messages, parameters as asked (and as sent, when a retry grew
    max_tokens or the wire format changed), the endpoint, attempts and cost; never a key.
    """
    from dataforge.teacher.cache import RequestCache

    wanted = request_hash.strip().lower()
    if len(wanted) < 8 or any(c not in "0123456789abcdef" for c in wanted):
        _fail(f"{request_hash!r} is not a request hash: expected 8 to 64 hex characters "
              "(the request_hash column of a sample row)")
    path = Path(_data_root(data_root)) / "cache" / "teacher.sqlite"
    if not path.exists():
        _fail(f"no teacher cache at {path.resolve()} (pass the run's --data-root)")
    with RequestCache(path) as cache:
        keys = cache.keys_with_prefix(wanted, limit=6)
        if not keys:
            _fail(f"no cached request with hash {wanted} in {path.resolve()}")
        if len(keys) > 1:
            _fail(f"hash prefix {wanted} matches {'5+' if len(keys) > 5 else len(keys)} cached requests "
                  f"({', '.join(k[:16] for k in keys[:5])}); give more characters")
        entry = cache.get_entry(keys[0])
    assert entry is not None  # the key was just listed; entries are never deleted
    out = {"request_hash": entry.key, "created_at": entry.created_at, "request": entry.request,
           "response": entry.response}
    sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


@cot_app.command("verify")
def cot_verify(
    file: Path = typer.Argument(..., help="Solutions as JSON lines (.jsonl) or Parquet (.parquet)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output .parquet or .jsonl [default: ./<name>.verified.parquet]"),
    question_field: str = typer.Option("question", "--question-field", help="Field holding the question"),
    solution_field: str = typer.Option("solution", "--solution-field", help="Field holding the solution text"),
    gold_field: str = typer.Option("answer", "--gold-field",
                                   help="Field holding the gold answer ('####' solutions work); '' for none"),
    answer_type: str = typer.Option("auto", "--answer-type",
                                    help="numeric | option | yesno | text | auto (per record, from the gold answer)"),
    options_field: Optional[str] = typer.Option(None, "--options-field",
                                                help="Field holding the options [default: read them from the question]"),
    quarantine: Optional[Path] = typer.Option(None, "--quarantine",
                                              help="Where malformed records go [default: <out>.quarantine.jsonl]"),
    fmt: str = typer.Option("table", "--format", help="Summary as table | json"),
) -> None:
    """Extract and check the final answer of every solution in FILE.

    Writes one row per record (extracted answer, gold answer, verdict: correct, incorrect,
    no_answer, no_gold) and prints rows, extracted, correct and accuracy. Malformed records are
    quarantined with file, line and reason. Example, GSM8K's own solutions against their
    `#### N`: dataforge cot verify train.jsonl --solution-field answer --gold-field answer
    """
    from dataforge.generate.verify import Fields, VerifyError, verify_file

    if fmt not in ("table", "json"):
        _fail(f"--format must be table or json, got {fmt!r}")
    fields = Fields(question=question_field, solution=solution_field, gold=gold_field or None, options=options_field)
    try:
        summary = verify_file(file, out, fields, answer_type, quarantine)
    except VerifyError as e:
        _fail(str(e))
    if fmt == "json":
        sys.stdout.write(json.dumps(summary.as_dict()) + "\n")
        return
    acc = summary.accuracy
    row = {"rows": summary.rows, "extracted": summary.extracted, "with_gold": summary.with_gold,
           "correct": summary.correct, "accuracy": "" if acc is None else f"{acc:.4f}",
           "quarantined": summary.quarantined}
    print_table(pa.Table.from_pylist([row]), title=f"verified {file}")
    console.print("verdicts: " + ", ".join(f"{k}={v}" for k, v in summary.verdicts.items()))
    console.print(f"rows: {summary.output}")
    if summary.quarantine_file:
        console.print(f"quarantined records (file, line, reason): {summary.quarantine_file}")


def main() -> None:
    logging.basicConfig(level=os.environ.get("DATAFORGE_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
