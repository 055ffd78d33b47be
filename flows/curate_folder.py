"""The ``curate-folder`` deployment: curate the files that appeared in a folder since the last run.

Each flow run lists the folder (a path, glob or URI: see :mod:`dataforge.sources`; relative to
the data root), keeps the files it has not curated before, and runs the pipeline on them alone:
a new run whose ``ingest`` stage reads only those files, then the config's enabled curation
stages and export. Generation (textbooks, cot) is off: no teacher is started or asked. The files
a completed run curated are remembered in ``<data root>/folders/<pipeline name>-<source>.json``
(path or URI, size and modification time of each, written atomically after the run); a file that
changed since (another size or modification time) counts as new. A run that fails records
nothing, so its files are curated by the next one. Nothing new: no run.

The source's kind and fields come from the config's ``ingest.sources`` entry named ``source``
when it has one (its ``path`` is replaced by the folder's new files), else from the ``kind``,
``fields`` and ``format`` parameters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from prefect import flow, get_run_logger

from dataforge.config import ConfigError, PipelineConfig
from dataforge.records import now_utc
from dataforge.sources import SourceConfig, SourceFile, resolve_source
from dataforge.store import read_text, resolve_data_root, write_text
from flows.pipeline import flow_config, run_pipeline, select_stages
from flows.runners import task_runner

STATE_DIR = "folders"


def folder_location(cfg: PipelineConfig, folder: str) -> str:
    """``folder`` as a path or URI: absolute paths and URIs as they are, a relative one inside
    the data root."""
    if "://" in folder or Path(os.path.expanduser(folder)).is_absolute():
        return os.path.expanduser(folder) if "://" not in folder else folder
    fs, base = resolve_data_root(cfg.data_root)
    if fs is None:
        return str(Path(base) / folder)
    root = cfg.data_root.split("?", 1)
    return root[0].rstrip("/") + "/" + folder.lstrip("/") + (f"?{root[1]}" if len(root) > 1 else "")


def folder_source(cfg: PipelineConfig, folder: str, source: str, kind: str = "document",
                  fields: dict[str, str] | None = None, fmt: str = "auto") -> SourceConfig:
    """The watched source: the config's ``ingest.sources[source]`` with the folder as its path,
    else one built from the parameters."""
    path = folder_location(cfg, folder)
    spec = cfg.ingest.sources.get(source)
    if spec is not None:
        return spec.model_copy(update={"path": path})
    try:
        return SourceConfig.model_validate({"name": source, "path": path, "kind": kind, "fields": fields or {},
                                            "format": fmt})
    except ValueError as err:
        raise ConfigError(f"curate-folder: the source's parameters: {err}") from None


def state_path(cfg: PipelineConfig, source: str) -> tuple[Any, PurePosixPath | Path]:
    """(filesystem or None, path) of the record of the files already curated from ``source``."""
    fs, base = resolve_data_root(cfg.data_root)
    return fs, base / STATE_DIR / f"{cfg.name}-{source}.json"


def load_state(cfg: PipelineConfig, source: str) -> dict:
    fs, path = state_path(cfg, source)
    text = read_text(path, fs)
    if text is None:
        return {"files": {}, "runs": []}
    try:
        state = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not readable JSON ({err}); remove it to curate the whole folder again") from None
    state.setdefault("files", {})
    state.setdefault("runs", [])
    return state


def new_files(cfg: PipelineConfig, src: SourceConfig) -> list[SourceFile]:
    """The source's files not curated yet (new, or changed since: another size or modification time)."""
    done = load_state(cfg, src.name)["files"]
    files = resolve_source(src, cfg.resolve_path)
    return [f for f in files if done.get(f.uri) != {"size": f.size, "mtime_ns": f.mtime_ns}]


def remember(cfg: PipelineConfig, source: str, files: list[SourceFile], run_id: str) -> None:
    """Record ``files`` as curated by ``run_id`` (one atomic write of the state file)."""
    state = load_state(cfg, source)
    for f in files:
        state["files"][f.uri] = {"size": f.size, "mtime_ns": f.mtime_ns}
    state["runs"].append({"run_id": run_id, "files": len(files), "at": now_utc().isoformat()})
    fs, path = state_path(cfg, source)
    if fs is None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    else:
        fs.create_dir(str(PurePosixPath(path).parent), recursive=True)
    write_text(path, json.dumps(state, indent=1), fs)


def curation_config(cfg: PipelineConfig, src: SourceConfig, files: list[str]) -> PipelineConfig:
    """``cfg`` ingesting only ``files`` (as ``src``), with generation off."""
    sources = {src.name: src.model_copy(update={"path": list(files)})}
    ingest = cfg.ingest.model_copy(update={"enabled": True, "sources": sources})
    return cfg.model_copy(update={"ingest": ingest, "textbooks": cfg.textbooks.model_copy(update={"enabled": False}),
                                  "cot": cfg.cot.model_copy(update={"enabled": False})})


@flow(name="dataforge-curate-folder-tasks")
def curate_folder_tasks(config_path: str, folder: str, files: list[str], source: str = "folder",
                        kind: str = "document", fields: dict[str, str] | None = None, format: str = "auto",
                        data_root: str | None = None) -> str:
    """The curation run of ``files`` under the task runner the config chose (a subflow)."""
    cfg = flow_config(config_path, data_root)
    src = folder_source(cfg, folder, source, kind, fields, format)
    return run_pipeline(curation_config(cfg, src, files), None, select_stages(None)).run_id


@flow(name="dataforge-curate-folder")
def curate_folder(config_path: str, folder: str, source: str = "folder", kind: str = "document",
                  fields: dict[str, str] | None = None, format: str = "auto", data_root: str | None = None
                  ) -> str | None:
    """Curate the files of ``folder`` that no earlier run of this flow curated; returns the new
    run's id, or None when there was nothing new.

    ``folder``: a folder, glob or URI (relative: inside the data root). ``source``: the name of
    the rows' ``source_name`` and of the state file; when the config's ``ingest.sources`` has a
    source by that name its kind and fields are used, else ``kind``, ``fields`` and ``format``.
    ``data_root`` defaults to ``$DATAFORGE_DATA_ROOT``, then to the config's.
    """
    logger = get_run_logger()
    cfg = flow_config(config_path, data_root)
    src = folder_source(cfg, folder, source, kind, fields, format)
    todo = new_files(cfg, src)
    if not todo:
        logger.info("no new files in %s since the last run", src.path)
        return None
    logger.info("%d new file(s) in %s", len(todo), src.path)
    uris = [f.uri for f in todo]
    if cfg.runner.kind != "threads":
        on_runner = curate_folder_tasks.with_options(task_runner=task_runner(cfg.runner))
        run_id = on_runner(config_path, folder, uris, source, kind, fields, format, data_root)
    else:  # the flow's own thread pool; the pipeline submits at most runner.workers shard tasks at once
        run_id = run_pipeline(curation_config(cfg, src, uris), None, select_stages(None)).run_id
    remember(cfg, src.name, todo, run_id)
    return run_id
