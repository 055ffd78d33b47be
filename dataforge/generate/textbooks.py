"""Textbook sections from a table of (subject, topic, subtopic) x audience x style x format
(phi-1 "Textbooks Are All You Need", phi-1.5, Cosmopedia).

Diversity is engineered, not hoped for. Each sample is one cell of the table; the cells are
chosen by a seeded plan that spreads them evenly over every axis (:func:`plan_textbooks`),
and every axis of a cell is stored as a column, so coverage and diversity can be queried in
the warehouse (``textbook_coverage``, ``lexical_diversity``).

The first axis is a *unit*: a subtopic of a taxonomy (``taxonomy.py``), a topic of the
config's inline ``topics:`` list, or a seed passage (Cosmopedia's extract-based prompts).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from dataforge.config import ConfigError, TextbookConfig
from dataforge.curate.diversity_metrics import distinct_n
from dataforge.hashing import file_sha256
from dataforge.tabular import PARQUET_ERRORS, InputError, Quarantined, ReadLimits, iter_json_lines, read_parquet
from dataforge.generate.taxonomy import LoadedTaxonomy, TopicUnit, inline_units, load_taxonomies
from dataforge.generate.textbook_prompts import (
    PASSAGE_TEMPLATE,
    TOPIC_TEMPLATE,
    AxisSpec,
    passage_prompt,
    resolve_axis,
    stock_opener,
    topic_prompt,
)
from dataforge.records import make_sample
from dataforge.teacher import TeacherClient, TeacherError
from dataforge.teacher.client import answered_at
from dataforge.teacher.logprobs import completion_topk

log = logging.getLogger("dataforge.textbooks")


class PassageError(ConfigError):
    """A passage file that cannot be used at all (missing, unreadable, no usable passage)."""


# --- seed passages ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Passage:
    passage_id: str
    text: str  # already cut to max_passage_chars
    source: str
    line: int  # JSONL line or Parquet row (1-based)


def passage_hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]


def cut_extract(text: str, max_chars: int) -> str:
    """The first ``max_chars`` characters, cut back to the last whitespace so no word is split
    (Cosmopedia cuts its web extracts at a fixed length)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    space = head.rfind(" ")
    return head[:space] if space > max_chars // 2 else head


def load_passages(path: str | Path, text_field: str = "text", id_field: str | None = None,
                  max_chars: int = 1000, limits: ReadLimits | None = None) -> tuple[list[Passage], list[Quarantined]]:
    """Seed passages from JSON lines (``.jsonl``/``.json``) or Parquet (``.parquet``).

    A malformed line or row is quarantined with file, line and reason and the rest loads; a
    file that is missing, unreadable, or yields no passage at all is a :class:`PassageError`.
    """
    p = Path(path)
    if not p.is_file():
        raise PassageError(f"textbooks.passages: passage file not found: {p}")
    passages: list[Passage] = []
    bad: list[Quarantined] = []
    seen_ids: dict[str, int] = {}
    seen_text: dict[str, int] = {}

    def take(lineno: int, obj: Any, raw: str) -> None:
        def reject(reason: str) -> None:
            bad.append(Quarantined(str(p), lineno, reason, raw))  # raw cut by Quarantined
            log.warning("%s line %d: %s (quarantined)", p, lineno, reason)

        if not isinstance(obj, dict):
            return reject(f"expected a JSON object, got {type(obj).__name__}")
        text = obj.get(text_field)
        if not isinstance(text, str) or not text.strip():
            return reject(f"missing or empty string field {text_field!r}")
        if id_field:
            pid = obj.get(id_field)
            if isinstance(pid, bool) or not isinstance(pid, (str, int)) or not str(pid).strip():
                return reject(f"missing id field {id_field!r} (a string or integer)")
            pid = str(pid).strip()
            if pid in seen_ids:
                return reject(f"duplicate id {pid!r} (first on line {seen_ids[pid]})")
        else:
            pid = passage_hash(text)
        h = passage_hash(text)
        if h in seen_text:
            return reject(f"duplicate passage text (first on line {seen_text[h]})")
        seen_ids[pid] = lineno
        seen_text[h] = lineno
        passages.append(Passage(pid, cut_extract(text, max_chars), str(p), lineno))

    if p.suffix.lower() == ".parquet":
        try:
            names = pq.read_schema(p).names
        except PARQUET_ERRORS as err:
            raise PassageError(f"textbooks.passages: {p}: not a readable Parquet file ({err})") from None
        if text_field not in names:
            raise PassageError(f"textbooks.passages: {p}: no column {text_field!r} "
                               f"(columns: {', '.join(names)}); set textbooks.passage_field")
        if id_field and id_field not in names:
            raise PassageError(f"textbooks.passages: {p}: no column {id_field!r} for textbooks.passage_id_field")
        cols = [text_field] + ([id_field] if id_field else [])
        try:  # only the columns used, within the read limits (a row over the value limit: quarantined)
            table, numbers, rejected = read_parquet(p, limits, columns=cols)
        except InputError as err:
            raise PassageError(f"textbooks.passages: {err}") from None
        for r, why in rejected:
            bad.append(Quarantined(str(p), r, why, ""))
            log.warning("%s line %d: %s (quarantined)", p, r, why)
        for i, row in zip(numbers.to_pylist(), table.select(cols).to_pylist()):
            take(i, row, json.dumps(row, ensure_ascii=False, default=str))
    else:
        try:
            lines = list(iter_json_lines(p, limits))
        except InputError as err:
            raise PassageError(f"textbooks.passages: {err}") from None
        for lineno, obj, err, raw in lines:
            if obj is None:
                bad.append(Quarantined(str(p), lineno, err or "unreadable", raw))
                log.warning("%s line %d: %s (quarantined)", p, lineno, err)
                continue
            take(lineno, obj, raw)
    if not passages:
        first = "; ".join(f"line {q.line}: {q.reason}" for q in bad[:3])
        raise PassageError(f"textbooks.passages: {p}: no usable passage"
                           + (f" ({len(bad)} quarantined — {first})" if bad else " (the file is empty)"))
    return passages, bad


# --- sources: everything a plan and its prompts need -------------------------------------------

UnitKey = tuple[str | None, str | None, str | None, str | None]  # subject, topic, subtopic, passage_id


@dataclass
class TextbookSources:
    """The resolved axes of the textbook table: units (taxonomy leaves, inline topics,
    passages) and the audience, style and format values with their descriptions."""

    units: list[TopicUnit | Passage]
    audiences: list[AxisSpec]
    styles: list[AxisSpec]
    formats: list[AxisSpec]
    taxonomies: list[LoadedTaxonomy] = field(default_factory=list)
    passage_file: Path | None = None
    passage_sha256: str | None = None
    quarantined: list[Quarantined] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_key: dict[UnitKey, TopicUnit | Passage] = {}
        for u in self.units:
            k = unit_key(u)
            if k in self.by_key:
                raise ConfigError(f"textbooks: the unit {k} comes twice "
                                  f"({_unit_source(self.by_key[k])} and {_unit_source(u)})")
            self.by_key[k] = u
        if not self.units:
            raise ConfigError("textbooks: nothing to write about (no taxonomy, topic or passage)")
        self.axis = {"audience": {a.name: a for a in self.audiences}, "style": {s.name: s for s in self.styles},
                     "format": {f.name: f for f in self.formats}}

    def describe(self) -> dict:
        """What run.json records about the sources (names, files and their sha256)."""
        return {
            "taxonomies": [{"name": t.name, "subject": t.taxonomy.subject, "path": str(t.path), "sha256": t.sha256,
                            "units": len(t.units())} for t in self.taxonomies],
            "inline_topics": sum(1 for u in self.units if isinstance(u, TopicUnit) and u.source == "topics"),
            "passages": ({"path": str(self.passage_file), "sha256": self.passage_sha256,
                          "used": sum(1 for u in self.units if isinstance(u, Passage)),
                          "quarantined": len(self.quarantined)} if self.passage_file else None),
            "audiences": [a.name for a in self.audiences], "styles": [s.name for s in self.styles],
            "formats": [f.name for f in self.formats],
        }


def unit_key(u: TopicUnit | Passage) -> UnitKey:
    if isinstance(u, Passage):
        return (None, None, None, u.passage_id)
    return (u.subject, u.topic, u.subtopic, None)


def _unit_source(u: TopicUnit | Passage) -> str:
    return u.source if isinstance(u, TopicUnit) else f"{u.source} line {u.line}"


def load_textbook_sources(cfg: TextbookConfig, resolve_path: Callable[[str], Path]) -> TextbookSources:
    """Resolve a textbook config: load its taxonomies and passages (paths resolved like every
    path in the config file) and the descriptions of its audiences, styles and formats."""
    taxonomies = load_taxonomies(cfg.taxonomies, resolve_path)
    units: list[TopicUnit | Passage] = [u for t in taxonomies for u in t.units()]
    units += inline_units(cfg.topics)
    passage_file = passage_sha = None
    quarantined: list[Quarantined] = []
    if cfg.passages:
        passage_file = resolve_path(cfg.passages)
        passages, quarantined = load_passages(passage_file, cfg.passage_field, cfg.passage_id_field,
                                              cfg.max_passage_chars)
        passage_sha = file_sha256(passage_file)
        units += passages
    return TextbookSources(
        units=units,
        audiences=[resolve_axis("audience", a.name, a.description) for a in cfg.audiences],
        styles=[resolve_axis("style", s.name, s.description) for s in cfg.styles],
        formats=[resolve_axis("format", f.name, f.description) for f in cfg.formats],
        taxonomies=taxonomies, passage_file=passage_file, passage_sha256=passage_sha, quarantined=quarantined)


# --- the sampling plan -----------------------------------------------------------------------

@dataclass(frozen=True)
class TextbookCell:
    """One cell of the table: what one textbook section is asked to be."""

    subject: str | None
    topic: str | None
    subtopic: str | None
    passage_id: str | None
    audience: str
    style: str
    format: str

    @property
    def unit(self) -> UnitKey:
        return (self.subject, self.topic, self.subtopic, self.passage_id)


class _Node:
    """A prefix of the unit hierarchy (subject > topic > subtopic > passage): its children and,
    per child, how many plan cells it holds and how many it can hold. ``unit_of`` is set when
    every child is a single unit (the level that picks a subtopic or a passage)."""

    __slots__ = ("capacity", "children", "count", "index", "unit_of")

    def __init__(self) -> None:
        self.children: list[Any] = []
        self.index: dict[Any, int] = {}
        self.count = np.zeros(0, np.int64)
        self.capacity = np.zeros(0, np.int64)
        self.unit_of: np.ndarray | None = None


def plan_textbooks(sources: TextbookSources, max_samples: int, seed: int) -> list[TextbookCell]:
    """A deterministic, seeded plan of ``min(max_samples, table size)`` distinct cells that
    spreads evenly over every axis.

    The plan is built one cell at a time. First the unit, walking down its hierarchy (subject,
    then topic within it, then subtopic, then passage): at each level the child used least so
    far wins, among children that still have an unused cell; among equally used subtopics (or
    passages), one that still has an unused combination of the least-used audience, style and
    format. Then audience, style and format together: among the combinations not yet used for
    this unit, those that keep every axis at its least-used values win; among them, the one
    whose values have appeared least often together — with each other and with this unit's
    subject, topic and subtopic — so pairs of axes spread too; remaining ties go to a seeded coin.

    Consequences: within a subject its topics, and within a topic its subtopics, differ by at
    most one use while they have unused cells; audience, style and format counts differ by at most one, and now and then by
    two when the chosen unit has used up the only combination that would keep them even (on the
    shipped taxonomies: never before 160 cells, and never more than two until three quarters
    of the table is used). A plain shuffle cut to ``max_samples`` can leave an audience out
    altogether. No cell repeats, and the plan for ``n`` samples is the first ``n`` cells of the
    plan for ``n + k``, so raising ``max_samples`` keeps the earlier cells and their cached
    teacher answers.
    """
    rng = random.Random(seed)
    flat_axes = [[a.name for a in sources.audiences], [s.name for s in sources.styles],
                 [f.name for f in sources.formats]]
    dims = tuple(len(a) for a in flat_axes)
    per_unit = int(np.prod(dims))
    keys = [unit_key(u) for u in sources.units]
    n = min(max_samples, len(keys) * per_unit)

    # the unit hierarchy, in source order, with the capacity (cells) below each child
    nodes: dict[tuple, _Node] = {(): _Node()}
    units_below: Counter[tuple] = Counter()
    for key in keys:
        for depth in range(4):
            prefix, child = key[:depth], key[depth]
            units_below[prefix + (child,)] += 1
            node = nodes[prefix]
            if child not in node.index:
                node.index[child] = len(node.children)
                node.children.append(child)
                nodes[prefix + (child,)] = _Node()
    unit_index = {k: i for i, k in enumerate(keys)}
    for prefix, node in nodes.items():
        below = [prefix + (c,) for c in node.children]
        node.count = np.zeros(len(below), np.int64)
        node.capacity = np.array([units_below[b] * per_unit for b in below], np.int64)
        if below and all(units_below[b] == 1 for b in below):
            node.unit_of = np.array([unit_index[next(k for k in keys if k[:len(b)] == b)] if len(b) < 4
                                     else unit_index[b] for b in below], np.int64)

    used = np.zeros((len(keys), per_unit), bool)  # which (audience, style, format) each unit has had
    marginal = [np.zeros(d, np.int64) for d in dims]
    flat_pairs = {(j, k): np.zeros((dims[j], dims[k]), np.int64) for j in range(3) for k in range(j + 1, 3)}
    unit_pairs: dict[tuple[tuple, int], np.ndarray] = {}  # (unit path prefix, flat axis) -> counts per value

    def pick(candidates: np.ndarray, *order: np.ndarray) -> int:
        """Index of the lexicographically smallest key among candidates; seeded tie-break."""
        idx = np.flatnonzero(candidates)
        for k in order:
            k = k.reshape(-1)
            idx = idx[k[idx] == k[idx].min()]
        return int(idx[rng.randrange(len(idx))]) if len(idx) > 1 else int(idx[0])

    def along(j: int, v: np.ndarray) -> np.ndarray:
        """``v`` (one number per value of flat axis j) broadcast over the combination grid."""
        shape = [1, 1, 1]
        shape[j] = dims[j]
        return v.reshape(shape)

    plan: list[TextbookCell] = []
    for _ in range(n):
        excess = np.broadcast_to(sum(along(j, marginal[j] - marginal[j].min()) for j in range(3)), dims).reshape(-1)
        balanced = np.flatnonzero(excess == 0)  # combinations that keep every axis even
        unit: tuple = ()
        for _depth in range(4):
            node = nodes[unit]
            open_ = node.count < node.capacity
            if node.unit_of is not None and len(node.children) > 1:
                blocked = used[node.unit_of[:, None], balanced[None, :]].all(axis=1)
                i = pick(open_, node.count, blocked)
            else:
                i = pick(open_, node.count)
            node.count[i] += 1
            unit += (node.children[i],)
        u = unit_index[unit]
        # the levels of this unit that name something (a flat topic has no subject or subtopic)
        paths = [unit[:lv + 1] for lv in range(4) if unit[lv] is not None]
        together = sum(along(j, unit_pairs.get((p, j), np.zeros(dims[j], np.int64))) for p in paths for j in range(3))
        together = together + flat_pairs[0, 1][:, :, None] + flat_pairs[0, 2][:, None, :] \
            + flat_pairs[1, 2][None, :, :]
        combo = pick(~used[u], excess, np.broadcast_to(together, dims))
        used[u, combo] = True
        a, s, f = np.unravel_index(combo, dims)
        for j, v in enumerate((a, s, f)):
            marginal[j][v] += 1
            for p in paths:
                unit_pairs.setdefault((p, j), np.zeros(dims[j], np.int64))[v] += 1
        flat_pairs[0, 1][a, s] += 1
        flat_pairs[0, 2][a, f] += 1
        flat_pairs[1, 2][s, f] += 1
        subject, topic, subtopic, passage_id = unit
        plan.append(TextbookCell(subject, topic, subtopic, passage_id, flat_axes[0][a], flat_axes[1][s],
                                 flat_axes[2][f]))
    return plan


# --- prompts and generation --------------------------------------------------------------------

def textbook_messages(cell: TextbookCell, sources: TextbookSources) -> tuple[str, list[dict[str, str]]]:
    """(template name, chat messages) for one cell."""
    unit = sources.by_key[cell.unit]
    audience = sources.axis["audience"][cell.audience]
    style = sources.axis["style"][cell.style]
    fmt = sources.axis["format"][cell.format]
    if isinstance(unit, Passage):
        return PASSAGE_TEMPLATE, [{"role": "user", "content": passage_prompt(
            extract=unit.text, audience=audience, style=style, fmt=fmt)}]
    return TOPIC_TEMPLATE, [{"role": "user", "content": topic_prompt(
        subject=unit.subject, topic=unit.topic, subtopic=unit.subtopic, covers=unit.covers, siblings=unit.siblings,
        audience=audience, style=style, fmt=fmt)}]


async def generate_textbooks(client: TeacherClient, cells: Sequence[TextbookCell], sources: TextbookSources,
                             cfg: TextbookConfig, *, run_id: str, seed: int,
                             on_done: Callable[[], None] | None = None) -> tuple[list[dict], list[dict]]:
    """Ask the teacher for ``cfg.responses_per_cell`` sections per cell (one by default).
    Returns (samples, failures); a failure is a record with empty text whose ``drop_reason``
    says why the request failed. Both carry every axis of their cell, so a cell that was planned
    but never produced can be found."""
    params = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}

    async def one(i: int, cell: TextbookCell, k: int) -> tuple[dict | None, dict | None]:
        template, messages = textbook_messages(cell, sources)
        unit = sources.by_key[cell.unit]
        s = response_seed(seed, i, k, len(cells))
        common = {"teacher_model": client.cfg.model, "template": template, "subject": cell.subject,
                  "topic": cell.topic, "subtopic": cell.subtopic, "audience": cell.audience, "style": cell.style,
                  "format": cell.format, "passage_id": cell.passage_id, "seed_source": _unit_source_name(unit),
                  "sample_index": k, "gen_params": {**params, "seed": s}, "run_id": run_id}
        try:
            c = await client.complete(messages, seed=s, sample_index=k, **params)
        except TeacherError as err:
            row = make_sample("textbook", "", None, **common)
            row["drop_reason"] = f"teacher_error:{err.reason}"
            return None, row
        finally:
            if on_done:
                on_done()
        text = c.text.strip()
        row = make_sample("textbook", text, messages + [{"role": "assistant", "content": text}], **common,
                          request_hash=c.request_hash, finish_reason=c.finish_reason, created_at=answered_at(c),
                          prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, cost_usd=c.cost_usd,
                          teacher_topk=completion_topk(client.cfg, c))
        return row, None

    results = await asyncio.gather(*(one(i, cell, k) for k in range(cfg.responses_per_cell)
                                     for i, cell in enumerate(cells)))
    return [r for r, _ in results if r], [f for _, f in results if f]


def response_seed(seed: int, cell: int, k: int, n_cells: int) -> int:
    """The sampling seed of response ``k`` of cell ``cell``: ``seed + cell`` for the first (the
    request a one-response run sends, so raising ``responses_per_cell`` reuses the cache), then
    past every cell's first."""
    return seed + cell + k * n_cells


def _unit_source_name(u: TopicUnit | Passage) -> str:
    return u.source if isinstance(u, TopicUnit) else Path(u.source).name


def summarize_textbooks(cells: Sequence[TextbookCell], rows: Sequence[dict], sources: TextbookSources) -> dict:
    """What run.json records about a textbook stage: the sources, the plan's reach, how many
    replies opened with a stock phrase, and the distinct-n of the replies."""
    openers = Counter(o for o in (stock_opener(r["text"]) for r in rows if r["text"]) if o)
    texts = [r["text"] for r in rows if r["text"]]
    dn = distinct_n(texts, (1, 2, 3)) if texts else {}
    per_unit = len(sources.audiences) * len(sources.styles) * len(sources.formats)
    return {
        "sources": sources.describe(),
        "plan": {"cells": len(cells), "table_cells": len(sources.units) * per_unit, "units": len(sources.units),
                 "units_planned": len({c.unit for c in cells}),
                 "audiences": dict(Counter(c.audience for c in cells)), "styles": dict(Counter(c.style for c in cells)),
                 "formats": dict(Counter(c.format for c in cells))},
        "stock_openers": dict(openers.most_common()),
        "distinct_n": {f"distinct_{k}": round(v, 4) for k, v in dn.items()},
    }
