"""What importing dataforge sets for its process: no transparent-huge-page advice from pyarrow's
mimalloc or numpy (dataforge/__init__.py says why), unless ``DATAFORGE_HUGEPAGES=1``."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import os, dataforge; from numpy._core import multiarray as m; "
         "print(os.environ.get('MIMALLOC_ALLOW_THP'), m._set_madvise_hugepage(True))")


def probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("MIMALLOC_ALLOW_THP", "DATAFORGE_HUGEPAGES")}
    return subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.split()


def test_import_turns_off_hugepage_advice() -> None:
    assert probe() == ["0", "False"]  # numpy's flag was off: the call returns the previous value


def test_hugepages_kept_on_request_and_a_users_setting_wins() -> None:
    assert probe(DATAFORGE_HUGEPAGES="1") == ["None", "True"]
    assert probe(MIMALLOC_ALLOW_THP="1")[0] == "1"
