"""``dataforge browse``: the sample browser, a local web app over one run (library:
:mod:`dataforge.browse`)."""

from __future__ import annotations

from pathlib import Path

import typer

from dataforge.cli.common import DATA_ROOT_HELP, console, fail, pick_run


def browse_command(
    run_id: str | None = typer.Argument(None, metavar="RUN", help="Run id (default: the latest run)"),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free port)"),
    data_root: str | None = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    user: str | None = typer.Option(None, "--user", help="Name written with each label "
                                                            "[env DATAFORGE_USER; default: the login name]"),
    teacher_cache: Path | None = typer.Option(None, "--teacher-cache", help="Request cache to show the teacher's "
                                                 "requests from [default: <data root>/cache/teacher.sqlite]"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check each shard's size and sha256 against its "
                                                                    "manifest before reading it"),
) -> None:
    """Browse a run's samples in a local web app on 127.0.0.1 (read-only towards the shards).

    A list of every sample -- the final stage's rows and every dropped row -- with paging,
    search and facets (kind, kept or dropped, drop stage and reason, topic, audience, style,
    source, label, score ranges); a sample's whole story (its teacher request and response from
    the cache, every stage's columns, why it was dropped, its dedup cluster with a diff against
    the survivor, the decontamination match, a CoT sample's votes and siblings); two runs side by
    side. Mark a sample good or bad with + / - (labels go to <run>/labels/, the `labels` view of
    `dataforge sql`; `dataforge classifier train --labels RUN` learns from them). Keys: j/k, /, g, ?.
    """
    from dataforge.browse.queries import SampleIndex
    from dataforge.browse.server import bind, create_app, serve

    run = pick_run(data_root, run_id)
    try:
        sock = bind(port)
    except OSError as e:
        fail(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e} (another server there? pick one with --port)")
    try:
        index = SampleIndex(run, verify=verify, user=user, teacher_cache=teacher_cache,
                            progress=lambda m: typer.echo(m, err=True))
    except BaseException:
        sock.close()
        raise
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        console.print(f"browse run {run.run_id}: {url}  (Ctrl-C to stop)", highlight=False, soft_wrap=True)
        serve(create_app(index), sock)
    finally:
        index.close()
        sock.close()
