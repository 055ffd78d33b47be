"""Topic taxonomies: subject -> topic -> subtopic, as YAML data files, validated on load.

A taxonomy is the first axis of the textbook table (phi-1.5 drew its 20k topics from a list;
Cosmopedia from curated outlines). It lives in a YAML file so it can be read, diffed and
extended without touching code::

    subject: Mathematics
    description: optional, for people reading the file
    topics:
      - name: Fractions
        subtopics:
          - name: Equivalent fractions
            covers: why 2/4 and 1/2 name the same amount; simplifying by common factors
          - Comparing fractions            # a bare name is fine; ``covers`` is optional

Each subtopic's ``covers`` line tells the teacher, when it writes a sibling subtopic, what the
neighbouring sections already say (so sections of one topic do not repeat each other).

Shipped taxonomies live in ``dataforge/generate/taxonomies/`` and are named by their file
stem (``mathematics``). A malformed file is an error that names the file, the line and the
entry (``mathematics.yaml line 12: topics[1] 'Algebra' > subtopics[0]: name: Field required``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dataforge.config import ConfigError

SHIPPED_DIR = Path(__file__).resolve().parent / "taxonomies"


class TaxonomyError(ConfigError):
    """A taxonomy file that cannot be used; the message names the file, line and entry."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Subtopic(_Model):
    name: str = Field(min_length=1)
    covers: str | None = Field(None, min_length=1)


class Topic(_Model):
    name: str = Field(min_length=1)
    subtopics: list[Subtopic] = Field(min_length=1)

    @field_validator("subtopics", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        # `- Comparing fractions` is short for `- {name: Comparing fractions}`
        if isinstance(v, list):
            return [{"name": s} if isinstance(s, str) else s for s in v]
        return v

    @model_validator(mode="after")
    def _unique_subtopics(self) -> Topic:
        _refuse_duplicates([s.name for s in self.subtopics], "subtopics")
        return self


class Taxonomy(_Model):
    subject: str = Field(min_length=1)
    description: str | None = None
    topics: list[Topic] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_topics(self) -> Taxonomy:
        _refuse_duplicates([t.name for t in self.topics], "topics")
        return self


def _refuse_duplicates(names: Sequence[str], what: str) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        key = name.casefold()
        if key in seen:
            raise ValueError(f"{what}[{i}] {name!r} repeats {what}[{seen[key]}] (names must be unique)")
        seen[key] = i


@dataclass(frozen=True)
class TopicUnit:
    """One leaf of a taxonomy — the thing a single textbook section is about — with what its
    sibling subtopics (same subject and topic) cover, for the prompt's sibling note."""

    subject: str | None
    topic: str
    subtopic: str | None
    covers: str | None
    siblings: tuple[tuple[str, str | None], ...]  # (name, covers) of the other subtopics
    source: str  # taxonomy name, or "topics" for the inline list


@dataclass(frozen=True)
class LoadedTaxonomy:
    name: str
    path: Path
    sha256: str
    taxonomy: Taxonomy

    def units(self) -> list[TopicUnit]:
        out = []
        subject = self.taxonomy.subject
        for topic in self.taxonomy.topics:
            for sub in topic.subtopics:
                siblings = tuple((s.name, s.covers) for s in topic.subtopics if s is not sub)
                out.append(TopicUnit(subject, topic.name, sub.name, sub.covers, siblings, self.name))
        return out


def shipped_taxonomies() -> list[str]:
    """Names of the taxonomies that ship with dataforge (file stems, sorted)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the YAML node at a pydantic error location (best effort: the deepest
    node that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1  # a field's line is the line of its key
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _entry_name(data: Any, loc: Sequence[int | str]) -> str:
    """``topics[1] 'Algebra' > subtopics[0] 'Slopes' > name`` for a pydantic error location."""
    parts: list[str] = []
    node = data
    i = 0
    while i < len(loc):
        key = loc[i]
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if isinstance(key, str) and isinstance(nxt, int) and isinstance(node, dict) and isinstance(node.get(key), list):
            items = node[key]
            item = items[nxt] if nxt < len(items) else None
            label = f"{key}[{nxt}]"
            name = item.get("name") if isinstance(item, dict) else item if isinstance(item, str) else None
            if isinstance(name, str):
                label += f" {name!r}"
            parts.append(label)
            node = item
            i += 2
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) and isinstance(key, str) else None
            i += 1
    return " > ".join(parts) or "<top level>"


def load_taxonomy(path: str | Path, name: str | None = None) -> LoadedTaxonomy:
    """Read and validate one taxonomy file; :class:`TaxonomyError` names file, line and entry."""
    p = Path(path)
    if not p.is_file():
        raise TaxonomyError(f"{p}: taxonomy file not found")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise TaxonomyError(f"{p}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TaxonomyError(f"{p}:{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise TaxonomyError(f"{p}: a taxonomy is a mapping with `subject` and `topics`, got {type(data).__name__}")
    try:
        taxonomy = Taxonomy.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = [x for x in e["loc"] if isinstance(x, (int, str))]
            line = _line_of(node, loc)
            msg = "unknown field (check the spelling)" if e["type"] == "extra_forbidden" else e["msg"]
            msg = msg.removeprefix("Value error, ")
            lines.append(f"{p}{f' line {line}' if line else ''}: {_entry_name(data, loc)}: {msg}")
        raise TaxonomyError("invalid taxonomy:\n  " + "\n  ".join(lines)) from None
    return LoadedTaxonomy(name or p.stem, p, hashlib.sha256(raw).hexdigest(), taxonomy)


def resolve_taxonomy(ref: str, resolve_path: Callable[[str], Path]) -> tuple[str, Path]:
    """A config entry -> (name, file). A bare name (no folder, no ``.yaml``) is a shipped
    taxonomy; anything else is a path, resolved like every path in the config file."""
    if "/" not in ref and "\\" not in ref and not ref.endswith((".yaml", ".yml")):
        shipped = SHIPPED_DIR / f"{ref}.yaml"
        if shipped.is_file():
            return ref, shipped
        raise TaxonomyError(f"textbooks.taxonomies: {ref!r} is not a shipped taxonomy "
                            f"(shipped: {', '.join(shipped_taxonomies())}); give a path to a YAML file for your own")
    path = resolve_path(ref)
    if not path.is_file():
        raise TaxonomyError(f"textbooks.taxonomies: taxonomy file {ref!r} not found (resolved to {path})")
    return path.stem, path


def load_taxonomies(refs: Sequence[str], resolve_path: Callable[[str], Path]) -> list[LoadedTaxonomy]:
    """Load every taxonomy a config names; two files may not define the same subject."""
    loaded: list[LoadedTaxonomy] = []
    subjects: dict[str, Path] = {}
    for ref in refs:
        name, path = resolve_taxonomy(ref, resolve_path)
        tax = load_taxonomy(path, name)
        key = tax.taxonomy.subject.casefold()
        if key in subjects:
            raise TaxonomyError(f"{path}: subject {tax.taxonomy.subject!r} is already defined by {subjects[key]} "
                                "(merge the two files or rename one subject)")
        subjects[key] = path
        loaded.append(tax)
    return loaded


def inline_units(topics: Sequence[str]) -> list[TopicUnit]:
    """The config's flat ``topics:`` list as units: no subject, no subtopic, no siblings (a flat
    list is a set of unrelated topics, so there is nothing to tell apart). The config has
    already refused empty and repeated entries."""
    return [TopicUnit(None, t.strip(), None, None, (), "topics") for t in topics]
