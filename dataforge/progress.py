"""Progress bars for long work (teacher requests, shards), via rich."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(stderr=True)


def _enabled() -> bool:
    return os.environ.get("DATAFORGE_PROGRESS", "1") != "0"


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[], None]]:
    """Yields ``advance()``; thread-safe. On a terminal it draws a live bar; elsewhere (CI,
    logs) it prints one line per 10% so a long run still shows it is alive."""
    lock = threading.Lock()
    if not _enabled():
        yield lambda: None
        return
    if _console.is_terminal:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=_console, transient=False) as p:
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
                print(f"{description}: {done[0]}/{total}", file=sys.stderr, flush=True)
    yield advance_plain
