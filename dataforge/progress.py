"""Progress bars for long work (teacher requests, shards), via rich."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

_console = Console(stderr=True)

StatusFn = Callable[[], str]


def _enabled() -> bool:
    return os.environ.get("DATAFORGE_PROGRESS", "1") != "0"


class StatusColumn(ProgressColumn):
    """Renders ``status()`` (e.g. the teacher's tokens and cost so far) at every refresh."""

    def __init__(self, status: StatusFn) -> None:
        super().__init__()
        self._status = status

    def render(self, task: Task) -> Text:
        return Text(self._status(), style="progress.data.speed")


@contextlib.contextmanager
def progress_bar(description: str, total: int, status: StatusFn | None = None) -> Iterator[Callable[[], None]]:
    """Yields ``advance()``; thread-safe. On a terminal it draws a live bar; elsewhere (CI,
    logs) it prints one line per 10% so a long run still shows it is alive.

    ``status``, when given, is called at each refresh (terminal) or each printed line and its
    text shown next to the bar, e.g. ``"12,345 tok · $0.0123 · 4 cached"``; it runs on rich's
    refresh thread, so it must only read."""
    lock = threading.Lock()
    if not _enabled():
        yield lambda: None
        return
    if _console.is_terminal:
        columns: list[ProgressColumn] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TimeElapsedColumn(), TimeRemainingColumn()]
        if status is not None:
            columns.append(StatusColumn(status))
        with Progress(*columns, console=_console, transient=False) as p:
            task = p.add_task(description, total=total)

            def advance() -> None:
                with lock:
                    p.advance(task)
            yield advance
        return
    done = [0]
    step = max(1, total // 10)

    def advance_plain() -> None:
        with lock:
            done[0] += 1
            if done[0] % step == 0 or done[0] == total:
                suffix = f"  {status()}" if status is not None else ""
                print(f"{description}: {done[0]}/{total}{suffix}", file=sys.stderr, flush=True)
    yield advance_plain
