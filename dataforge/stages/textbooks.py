"""``textbooks``: synthetic textbook sections from the teacher, gated for compliance, topic and
audience (implementation: :mod:`dataforge.generate.textbooks`, :mod:`dataforge.generate.gates`;
runner: :func:`dataforge.runner.generation.run_textbooks`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataforge.config import TextbookConfig
from dataforge.hashing import file_sha256
from dataforge.stages.registry import GENERATION, Stage, register

if TYPE_CHECKING:
    from dataforge.config import PipelineConfig


def input_files(cfg: "PipelineConfig") -> list[str]:
    """The sha256 of the taxonomy and passage files the stage reads (missing files are left to
    the stage to report)."""
    from dataforge.generate.taxonomy import resolve_taxonomy

    try:
        files = [resolve_taxonomy(t, cfg.resolve_path)[1] for t in cfg.textbooks.taxonomies]
        if cfg.textbooks.passages:
            files.append(cfg.resolve_path(cfg.textbooks.passages))
    except (OSError, ValueError):
        return []
    return [file_sha256(f) for f in files if f.is_file()]


def _run(run, cfg, base_url=None, acquire=None):
    from dataforge.runner.generation import run_textbooks

    return run_textbooks(run, cfg, base_url, acquire)


STAGE = register(Stage(
    name="textbooks", order=10, kind=GENERATION, config_model=TextbookConfig, run=_run, teacher=True,
    input_files=input_files, extra_sections=("seed",), command="textbooks gate", column_prefix="gen_",
    columns=("subject", "topic", "subtopic", "audience", "style", "format", "passage_id", "gen_compliance",
             "gen_topic_similarity", "gen_reading_grade"),
    summary="Textbook sections written by the teacher over a taxonomy x audience x style grid, then gated",
    drop_reasons=("teacher_error:<why>", "empty_completion", "noncompliant:<reason>:<excerpt>", "off_topic:<similarity>",
                  "reading_grade:<grade> outside <audience> band [<lo>, <hi>]"),
    module=__name__,
))
