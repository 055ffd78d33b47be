"""What the benchmarks share: the median wall time of repeated calls (this machine is shared and
noisy, so every figure in RESULTS.md is a median, and ratios come from back-to-back runs)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """The median seconds of ``repeats`` calls of ``fn`` and the last call's result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out
