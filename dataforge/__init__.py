"""dataforge: manufacture, curate and deliver training data for small language models."""

import os as _os

__version__ = "0.1.0"


def _no_hugepage_advice() -> None:
    """Ask for no transparent huge pages on large allocations (pyarrow's mimalloc and numpy both
    ``madvise(MADV_HUGEPAGE)`` them by default). With the kernel's common ``defrag = madvise`` a
    huge page is found by compacting memory in the allocating thread: right after a stage frees
    a lot, that took 12-374 ms per 112 MB touched, so the dedup kernel's CPU time varied 0.7-1.8 s
    on identical calls (median 1.57 s; 0.74 s without the advice) and the heuristics were 9%
    slower. ``DATAFORGE_HUGEPAGES=1`` keeps the libraries' defaults. mimalloc reads its option
    when pyarrow first allocates, so this holds when dataforge is imported before pyarrow is
    used (the CLI, the flows and the benchmarks do)."""
    if _os.environ.get("DATAFORGE_HUGEPAGES", "") == "1":
        return
    _os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")
    try:
        from numpy._core import multiarray

        multiarray._set_madvise_hugepage(False)
    except (ImportError, AttributeError):  # another numpy: its default stays
        pass


_no_hugepage_advice()
