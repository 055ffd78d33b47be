"""The ``dataforge`` command line: :data:`app` (typer) and :func:`main`.

- :mod:`~dataforge.cli.common` — what every command shares (fail in one line, load a config, ...)
- :mod:`~dataforge.cli.standalone` — the one path of every standalone stage command
- :mod:`~dataforge.cli.main` — the app: run, sql, report, runs, export, stages, teacher, service, ...
"""

from dataforge.cli.main import app, main

__all__ = ["app", "main"]
