"""A whole pipeline run through the library's stage runners (no Prefect), for tests that need a
run on disk: seeds "What is i + k?", a config pointing at a fake teacher, every enabled stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def write_add_seeds(path: Path, n: int, k: int = 2) -> Path:
    """GSM8K-style seeds ``What is i + k?`` with their ``#### i + k``."""
    path.write_text("".join(json.dumps({"question": f"What is {i} + {k}?", "answer": f"#### {i + k}"}) + "\n"
                            for i in range(n)))
    return path


def write_config(path: Path, base_url: str, data_root: Path, teacher: dict | None = None, **sections) -> Path:
    """A pipeline YAML for the fake teacher at ``base_url``; ``sections`` are top-level fields."""
    cfg = {"name": sections.pop("name", "test"), "data_root": str(data_root),
           "teacher": {"provider": "openai", "base_url": base_url, "model": "fake-teacher", **(teacher or {})},
           **sections}
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_pipeline(config: str | Path, run_id: str, announce: bool = False):
    """Run every enabled stage in order (generation, curation, export) and finish the run;
    with ``announce`` print ``STAGE <name>`` as each starts (for a parent that kills it)."""
    from dataforge import runner
    from dataforge.config import load_config
    from dataforge.runner.runs import locked_run
    from dataforge.stages.registry import get_stage

    cfg = load_config(config)
    with locked_run(cfg, run_id) as run:
        results = []

        def step(name: str, fn) -> None:
            if announce:
                print("STAGE", name, flush=True)
            result = fn()
            runner.record_result(run, result)
            results.append(result)

        for s in runner.enabled_generation(cfg):
            step(s, lambda s=s: get_stage(s).run(run, cfg))
        for s in runner.enabled_curation(cfg):
            step(s, lambda s=s: runner.run_curation_stage(run, cfg, s))
        step("export", lambda: runner.run_export(run, cfg))
        if announce:
            print("STAGE end", flush=True)
        runner.finish_run(run, results, 0.0)
    return run
