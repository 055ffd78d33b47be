"""Shared fixtures: the shared data folder, an isolated Prefect home, a teacher responder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Prefect keeps its database under PREFECT_HOME; tests use their own so they never touch
# (or depend on) a developer's ~/.prefect. Set before anything imports prefect.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="dataforge-prefect-"))
os.environ.setdefault("DATAFORGE_PROGRESS", "0")
# Prefect logs "Stopping temporary server" at INFO after pytest has closed its captured
# streams, which prints a logging traceback at exit; warnings and errors still show.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def shared_data_dir() -> Path:
    return Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    d = shared_data_dir()
    if not d.exists():
        pytest.skip(f"shared data folder {d} is absent (set DATAFORGE_SHARED_DATA)")
    return d




@pytest.fixture(scope="session")
def pile_docs() -> list[dict]:
    """The 1,000 Pile documents of the shared data (``contents``, ``metadata.pile_set_name``)."""
    import json

    path = shared_data_dir() / "web" / "pile_1k.jsonl"
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set DATAFORGE_SHARED_DATA)")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
