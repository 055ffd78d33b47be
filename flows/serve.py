"""Serve the deployments of ``prefect.yaml`` from this process: ``python -m flows.serve``.

Reads the ``deployments:`` of a ``prefect.yaml`` (the same file ``prefect deploy`` reads), and
registers each with the Prefect API named by ``PREFECT_API_URL`` through ``prefect.serve``: its
flow, parameters, cron schedules, tags, description and concurrency limit. The process then
polls for scheduled or triggered runs and executes each in a subprocess: no work pool, no
worker, nothing fetched from the network. ``dataforge service start`` starts it beside a
Prefect server; run it by hand to serve against any server.

Relative ``config_path`` parameters are resolved against the folder of ``prefect.yaml``, and
the teacher rate limit of each deployment's config is created before the first run, so the UI
shows it under Concurrency at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import yaml

from dataforge.config import ConfigError, load_config

DEFAULT_PREFECT_FILE = Path(__file__).resolve().parents[1] / "prefect.yaml"
DEPLOYMENT_FIELDS = {"name", "entrypoint", "parameters", "schedules", "schedule", "tags", "description",
                     "concurrency_limit", "version", "work_pool", "enforce_parameter_schema", "paused"}


class DeploymentSpecError(ValueError):
    """``prefect.yaml`` does not describe deployments this command can serve; names the entry."""


def read_deployment_specs(prefect_file: Path, only: list[str] | None = None) -> list[dict[str, Any]]:
    """The deployment entries of ``prefect_file`` (all, or those named in ``only``), with
    relative ``config_path`` parameters made absolute and checked to exist."""
    try:
        spec = yaml.safe_load(prefect_file.read_text())
    except OSError as err:
        raise DeploymentSpecError(f"{prefect_file}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise DeploymentSpecError(f"{prefect_file}: not valid YAML: {err}") from None
    entries = (spec or {}).get("deployments") if isinstance(spec, dict) else None
    if not entries or not isinstance(entries, list):
        raise DeploymentSpecError(f"{prefect_file}: no `deployments:` list")
    out = []
    for i, d in enumerate(entries):
        where = f"{prefect_file}: deployments[{i}]"
        if not isinstance(d, dict) or not d.get("name") or not d.get("entrypoint"):
            raise DeploymentSpecError(f"{where}: needs a name and an entrypoint")
        unknown = set(d) - DEPLOYMENT_FIELDS
        if unknown:
            raise DeploymentSpecError(f"{where} ({d['name']}): unknown field(s) {sorted(unknown)}")
        if only and d["name"] not in only:
            continue
        d = dict(d)
        params = dict(d.get("parameters") or {})
        if params.get("config_path"):
            path = Path(params["config_path"])
            path = path if path.is_absolute() else (prefect_file.parent / path).resolve()
            if not path.is_file():
                raise DeploymentSpecError(f"{where} ({d['name']}): parameters.config_path: {path} does not exist")
            params["config_path"] = str(path)
        d["parameters"] = params
        out.append(d)
    missing = set(only or ()) - {d["name"] for d in out}
    if missing:
        raise DeploymentSpecError(f"{prefect_file}: no deployment named {sorted(missing)}")
    return out


def load_entrypoint(entrypoint: str):
    """The flow object of ``flows/pipeline.py:pipeline`` (a path inside the repository) or
    ``flows.pipeline:pipeline``, imported as a module so served runs find it by module path."""
    path, _, attr = entrypoint.partition(":")
    if not attr:
        raise DeploymentSpecError(f"entrypoint {entrypoint!r}: expected path/to/file.py:flow_function")
    module = path[:-3].replace("/", ".") if path.endswith(".py") else path
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise DeploymentSpecError(f"entrypoint {entrypoint!r}: {err}") from None


def build_deployments(specs: list[dict[str, Any]]):
    """``RunnerDeployment`` objects for ``prefect.serve``."""
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    deployments = []
    for d in specs:
        schedules = [Cron(s["cron"], timezone=s.get("timezone"), day_or=s.get("day_or", True),
                          active=s.get("active", True)) for s in d.get("schedules") or []]
        flow = load_entrypoint(d["entrypoint"])
        deployments.append(flow.to_deployment(
            name=d["name"], parameters=d["parameters"], schedules=schedules, tags=d.get("tags"),
            description=d.get("description"), concurrency_limit=d.get("concurrency_limit"),
            version=d.get("version"), paused=d.get("paused"), entrypoint_type=EntrypointType.MODULE_PATH))
    return deployments


def ensure_limits(specs: list[dict[str, Any]]) -> list[str]:
    """Create the teacher rate limits of the deployments' configs; returns their names."""
    from flows.limits import ensure_teacher_limit

    names = []
    for d in specs:
        path = d["parameters"].get("config_path")
        if path:
            name = ensure_teacher_limit(load_config(path))
            if name:
                names.append(name)
    return sorted(set(names))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefect-file", type=Path, default=DEFAULT_PREFECT_FILE, help="the prefect.yaml to serve")
    ap.add_argument("--only", action="append", help="serve only this deployment (repeatable)")
    ap.add_argument("--limit", type=int, default=None, help="flow runs at once (default: no limit)")
    args = ap.parse_args(argv)
    try:
        specs = read_deployment_specs(args.prefect_file.resolve(), args.only)
        limits = ensure_limits(specs)
        deployments = build_deployments(specs)
    except (DeploymentSpecError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from prefect import serve

    print(f"serving {', '.join(d['name'] for d in specs)} from {args.prefect_file}"
          + (f"; teacher rate limits {', '.join(limits)}" if limits else ""), flush=True)
    # schedules stay active while the service is stopped: runs due meanwhile wait (Late) until it is back
    serve(*deployments, limit=args.limit, print_starting_message=False, pause_on_shutdown=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
