"""The stage registry: one declaration per stage, and everything that lists stages derives from it.

A stage is a module in :mod:`dataforge.stages` that calls :func:`register` once at import with a
:class:`Stage`: its name (which is also its config section, its output folder and its
``drop_stage``), its place in the chain, its config model, the columns it adds, whether it works
shard by shard or on the whole table, whether it calls the teacher, which files' contents decide
its result, and its apply function. The chain order, the runner's dispatch, the warehouse's stage
order and final stage, resume hashes, the config sections of :class:`~dataforge.config.PipelineConfig`,
the standalone commands and ``dataforge stages`` are all read from here, so adding a stage is
adding one module (docs/stage-contract.md walks through it).

Discovery imports every module of the :mod:`dataforge.stages` package, then those named by the
``dataforge.stages`` entry-point group (a stage shipped in another package).
"""

from __future__ import annotations

import importlib
import pkgutil
import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import pyarrow as pa

    from dataforge.config import PipelineConfig

GENERATION = "generation"
CURATION = "curation"

ApplyFn = Callable[["pa.Table", "PipelineConfig"], tuple["pa.Table", "pa.Table"]]


class StageConfig(BaseModel):
    """Base of a stage's config section: unknown fields are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
    enabled: bool = False


@dataclass(frozen=True)
class CliOption:
    """One flag of a stage's generic standalone command: ``--<flag>`` (given with or without the
    dashes) sets ``field`` of the stage's config section (``parse`` turns the flag's text into
    the field's value)."""

    flag: str
    field: str
    help: str
    type: type = str
    parse: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Stage:
    """What a stage is, for everything that runs, lists, stores, documents or tests stages.

    ``order`` places it in the chain (generation stages below 100; curation stages read the kept
    rows of the enabled stage before them). ``scope`` is ``"shard"`` (each input shard is decided
    alone, so shards fan out to workers) or ``"whole"`` (the stage sees every input row at once:
    dedup compares rows, a top-fraction cut needs every score). ``apply(table, cfg)`` returns
    ``(kept, rejected)``, the rejected rows carrying ``drop_stage``/``drop_reason``; a whole stage
    may return a third item, ``{"teacher": stats}``. ``input_files(cfg)`` returns what besides
    config decides its result (a model file's hash, the benchmarks' fingerprint): it goes into the
    resume hash. ``extra_sections`` are other config sections it reads (their edits re-run it).
    """

    name: str
    order: int
    kind: Literal["generation", "curation"]
    config_model: type[BaseModel]
    summary: str
    column_prefix: str | None = None
    columns: tuple[str, ...] = ()
    drop_reasons: tuple[str, ...] = ()
    scope: Literal["shard", "whole"] = "whole"
    teacher: bool = False
    apply: ApplyFn | None = None
    run: Callable[..., Any] | None = None
    """A generation stage's runner: ``run(run, cfg, base_url, acquire) -> StageResult``."""
    run_whole: Callable[..., Any] | None = None
    """A whole stage's own runner, for bounded memory: ``run_whole(run, cfg) -> StageResult``
    (dedup: out of core). Without one the runner reads every input row and calls ``apply``."""
    input_files: Callable[["PipelineConfig"], Any] | None = None
    extra_sections: tuple[str, ...] = ()
    command: str | None = None
    """The standalone command's name (default: the stage's name); a custom command is a
    function in ``dataforge/cli/`` registered under this name, else the generic one is built."""
    cli_options: tuple[CliOption, ...] = ()
    report: Callable[["pa.Table", "pa.Table"], list[str]] | None = None
    """Lines the standalone command prints after its one-line summary (counts by type, ...)."""
    module: str = ""

    @property
    def command_name(self) -> str:
        return self.command or self.name

    @property
    def doc_page(self) -> str:
        return f"docs/stages/{self.name}.md"

    def config_of(self, cfg: "PipelineConfig") -> BaseModel:
        return getattr(cfg, self.name)

    def enabled_in(self, cfg: "PipelineConfig") -> bool:
        return bool(getattr(self.config_of(cfg), "enabled", False))

    def sections(self) -> list[str]:
        """The config sections whose edits re-run this stage."""
        return [self.name, *self.extra_sections]


_REGISTRY: dict[str, Stage] = {}
_LOCK = threading.RLock()
_DISCOVERED = False


class RegistryError(RuntimeError):
    """Two stages with one name or one place in the chain, or a stage declared wrongly."""


def register(stage: Stage) -> Stage:
    """Add ``stage`` to the registry (called once, at import, by the stage's module)."""
    with _LOCK:
        old = _REGISTRY.get(stage.name)
        if old is not None and old.module != stage.module:
            raise RegistryError(f"stage {stage.name!r} is declared twice ({old.module} and {stage.module})")
        clash = [s.name for s in _REGISTRY.values() if s.order == stage.order and s.name != stage.name]
        if clash:
            raise RegistryError(f"stage {stage.name!r} has the same order ({stage.order}) as {clash[0]!r}")
        if stage.kind == GENERATION and stage.order >= 100 or stage.kind == CURATION and stage.order < 100:
            raise RegistryError(f"stage {stage.name!r}: generation stages have order < 100, curation >= 100")
        if stage.kind == CURATION and stage.apply is None:
            raise RegistryError(f"curation stage {stage.name!r} has no apply function")
        if stage.kind == GENERATION and stage.run is None:
            raise RegistryError(f"generation stage {stage.name!r} has no run function")
        _REGISTRY[stage.name] = stage
    return stage


def _discover() -> None:
    global _DISCOVERED
    with _LOCK:
        if _DISCOVERED:
            return
        _DISCOVERED = True  # set first: a stage module importing the registry does not recurse
        package = importlib.import_module("dataforge.stages")
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if info.name != "registry" and not info.name.startswith("_"):
                importlib.import_module(f"dataforge.stages.{info.name}")
        from importlib.metadata import entry_points

        for ep in entry_points(group="dataforge.stages"):
            ep.load()


@contextmanager
def replaced(name: str, **changes: Any) -> Iterator[Stage]:
    """Stage ``name`` with ``changes`` for the duration (a test swaps a stage's ``apply`` for one
    that fails); the registered stage is put back after."""
    original = get_stage(name)
    with _LOCK:
        _REGISTRY[name] = dataclasses.replace(original, **changes)
    try:
        yield _REGISTRY[name]
    finally:
        with _LOCK:
            _REGISTRY[name] = original


def all_stages() -> list[Stage]:
    """Every registered stage, in chain order."""
    _discover()
    return sorted(_REGISTRY.values(), key=lambda s: s.order)


def get_stage(name: str) -> Stage:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no stage named {name!r}; the stages are {', '.join(stage_names())}") from None


def stage_names(kind: str | None = None) -> list[str]:
    return [s.name for s in all_stages() if kind is None or s.kind == kind]


def generation_stages() -> list[Stage]:
    return [s for s in all_stages() if s.kind == GENERATION]


def curation_stages() -> list[Stage]:
    return [s for s in all_stages() if s.kind == CURATION]


def enabled(cfg: "PipelineConfig", kind: str | None = None) -> list[Stage]:
    """The stages ``cfg`` runs, in chain order."""
    return [s for s in all_stages() if (kind is None or s.kind == kind) and s.enabled_in(cfg)]


def final_stage(cfg: "PipelineConfig") -> str:
    """The stage whose kept rows are the run's output: the last enabled curation stage, else
    the last enabled generation stage (the first curation stage when nothing is enabled)."""
    return final_among([s.name for s in enabled(cfg)]) or curation_stages()[0].name


def final_among(names: Sequence[str]) -> str | None:
    """The final stage among ``names`` (a config's enabled stages, or those a run recorded): the
    last curation stage in chain order, else the last generation stage; None for none. The one
    rule that export, the warehouse's ``is_final`` and ``dataforge export`` share."""
    known = {s.name: s for s in all_stages()}
    mine = sorted((known[n] for n in set(names) if n in known), key=lambda s: s.order)
    curation = [s for s in mine if s.kind == CURATION]
    return (curation or mine)[-1].name if mine else None


def stage_order() -> list[str]:
    """Every stage name in chain order, then ``export``: the warehouse's stage order."""
    return [*(s.name for s in all_stages()), "export"]


def describe(stage: Stage) -> dict[str, Any]:
    """One row of ``dataforge stages``."""
    return {"order": stage.order, "name": stage.name, "kind": stage.kind, "scope": stage.scope,
            "teacher": stage.teacher, "command": stage.command_name,
            "columns": list(stage.columns) or ([f"{stage.column_prefix}*"] if stage.column_prefix else []),
            "drop_reasons": list(stage.drop_reasons), "summary": stage.summary}


FACTS_BEGIN = "<!-- registry facts: generated by `dataforge stages --facts NAME`; a test keeps it true -->"
FACTS_END = "<!-- end of registry facts -->"


def facts_markdown(stage: Stage) -> str:
    """The block every stage's doc page starts with: its registry row, as Markdown."""
    cols = ", ".join(f"`{c}`" for c in stage.columns) or (f"`{stage.column_prefix}*`" if stage.column_prefix else "-")
    reasons = "; ".join(f"`{r}`" for r in stage.drop_reasons) or "-"
    extra = "; also reads " + ", ".join(f"`{s}:`" for s in stage.extra_sections) if stage.extra_sections else ""
    rows = [("order in the chain", str(stage.order)), ("kind", stage.kind),
            ("scope", "per shard" if stage.scope == "shard" else "whole table"),
            ("calls the teacher", "yes" if stage.teacher else "no"),
            ("config section", f"`{stage.name}:` ({stage.config_model.__name__}){extra}"),
            ("standalone command", f"`dataforge {stage.command_name}`"),
            ("columns added", cols), ("drop reasons", reasons)]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"{FACTS_BEGIN}\n| | |\n|---|---|\n{body}\n{FACTS_END}"


__all__ = ["CURATION", "GENERATION", "CliOption", "RegistryError", "Stage", "StageConfig", "all_stages",
           "curation_stages", "describe", "facts_markdown", "enabled", "final_among", "final_stage", "generation_stages",
           "get_stage", "register", "replaced", "stage_names", "stage_order"]

