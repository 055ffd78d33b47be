"""What every part of classifier training shares: the error a user can fix, the base of the
recipe models, the message of a validation error, and where the shared data folder is."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from dataforge.errors import DataforgeError

SHARED_DATA_VAR = "DATAFORGE_SHARED_DATA"
REPO = Path(__file__).resolve().parents[3]


class ClassifierError(DataforgeError, ValueError):
    """A problem a user can fix: a source, a recipe field, labels."""


def default_shared_data() -> Path:
    """``$DATAFORGE_SHARED_DATA``, else ``../shared/data`` beside the repository (as the tests)."""
    return Path(os.environ.get(SHARED_DATA_VAR, REPO.parent / "shared" / "data"))


class Spec(BaseModel):
    """Base of the recipe's models: unknown fields are errors; fields may be given by alias."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def validation_message(err: ValidationError, prefix: str = "") -> str:
    """The errors of ``err`` on one line: ``<prefix>field.path: message; ...``."""
    from dataforge.config import format_validation_error

    return "; ".join(format_validation_error(err, prefix=prefix.rstrip(".")))

