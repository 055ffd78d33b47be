"""The pipeline's stages: one module each, registered with :mod:`dataforge.stages.registry`.

A module here declares one stage (``register(Stage(...))`` at import). Built-in stages whose code
predates the registry keep their implementation in ``generate/``, ``curate/`` and ``select/`` and
declare it here; a new stage can live entirely in its module (``langid``, ``pii``). The runner
that executes stages is :mod:`dataforge.runner`.
"""

from dataforge.stages.registry import (CURATION, GENERATION, CliOption, Stage, StageConfig, all_stages, enabled,
                                       final_stage, get_stage, register)

__all__ = ["CURATION", "GENERATION", "CliOption", "Stage", "StageConfig", "all_stages", "enabled", "final_stage",
           "get_stage", "register"]
