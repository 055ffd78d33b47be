"""The ``preference`` export layout: (prompt, chosen, rejected) pairs in TRL's DPO format.

Pairs are made by :mod:`dataforge.select.preference` from the run's rows: the final stage's kept
rows (the only responses that may be *chosen*) and the rows the run set aside on the way that a
pair can use as *rejected* (the cot stage's failed samples, the judge stage's low-scored rows).

**Memory.** A pair needs every response to its prompt, and those may be spread over any shard,
so the rows are grouped the way a hash join spills: each row's candidate (its group key, prompt,
response, label; nothing else) is appended to one of ``P`` partition files in a scratch folder
by a hash of its group key, ``P`` chosen so a partition holds about :data:`PARTITION_ROWS`
candidates; then each partition is read alone, grouped, paired and written. What is held is one
input batch, or one partition and its pairs, whatever the size of the run. A run with at most
:data:`PARTITION_ROWS` candidate rows is grouped in memory (no scratch file).

**Split.** A pair goes to ``validation`` by the hash of its group (the seed question, or the
prompt), with the export's salt and fraction: every pair of a question lands in the same split.
"""

from __future__ import annotations

import math
import shutil
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataforge.errors import DataforgeError
from dataforge.records import MESSAGE_TYPE
from dataforge.select.preference import (
    CANDIDATE_COLUMNS,
    Candidate,
    PairCounts,
    PairOptions,
    candidates_of,
    group_candidates,
    pairs_of_group,
)
from dataforge.store import (
    TMP_PREFIX,
    Run,
    manifest_entries,
    read_manifest,
    read_verified,
)

LAYOUT = "preference"
FOLDER = "preference/"  # the layout's files inside the export
SPLITS = ("train", "validation")
BATCH_ROWS = 16_384  # rows read at once (the export's batch)
PARTITION_ROWS = BATCH_ROWS  # candidates per scratch partition (what one partition holds)
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)
PAIR_BATCH = 4096  # pairs converted to Arrow at once

PROVENANCE_FIELDS = [
    ("id", pa.string()), ("kind", pa.string()), ("source", pa.string()), ("group_id", pa.string()),
    ("seed_id", pa.string()), ("question", pa.string()), ("gold_answer", pa.string()),
    ("chosen_id", pa.string()), ("rejected_id", pa.string()),
    ("chosen_answer", pa.string()), ("rejected_answer", pa.string()),
    ("chosen_verified", pa.bool_()), ("rejected_verified", pa.bool_()), ("rejected_reason", pa.string()),
    ("chosen_score", pa.float64()), ("rejected_score", pa.float64()), ("margin", pa.float64()),
    ("similarity", pa.float64()), ("teacher_model", pa.string()),
]
JSONL_COLUMNS = ["prompt", "chosen", "rejected", "id", "kind"]


def preference_schema(prompt_style: str) -> pa.Schema:
    """``prompt``, ``chosen``, ``rejected`` (lists of ``{role, content}``, or strings with
    ``prompt_style: standard``), then the provenance columns."""
    value = pa.string() if prompt_style == "standard" else MESSAGES_TYPE
    return pa.schema([("prompt", value), ("chosen", value), ("rejected", value), *PROVENANCE_FIELDS])


class PreferenceError(DataforgeError, ValueError):
    """A preference export that cannot be made as asked."""


class LayoutFile(Protocol):
    """One file of the export being written (export.py's writer): fed tables, closed into a
    manifest entry, or aborted."""

    def add(self, part: pa.Table) -> None: ...
    def close(self) -> Any: ...
    def abort(self) -> None: ...


def pairs_table(pairs: list[dict], prompt_style: str,
                render_standard: Callable[[list[dict], list[dict]], tuple[str, str]] | None = None) -> pa.Table:
    """Pairs (dicts from :mod:`dataforge.select.preference`) as the layout's table
    (``standard``: strings rendered by ``render_standard``, the export's prompt/completion
    rendering)."""
    if prompt_style == "standard":
        if render_standard is None:
            raise PreferenceError("prompt_style standard needs the export's render_standard")
        rows = []
        for p in pairs:
            prompt, chosen = render_standard(p["prompt"], p["chosen"])
            rows.append({**p, "prompt": prompt, "chosen": chosen, "rejected": render_standard(p["prompt"], p["rejected"])[1]})
        pairs = rows
    return pa.Table.from_pylist(pairs, schema=preference_schema(prompt_style))


# --- where the candidates come from -------------------------------------------------------

@dataclass
class PreferenceInput:
    """The rows pairs are made from, never all at once: per part, whether its rows are the
    final stage's kept rows, the number of rows and a callable giving them in batches."""

    parts: list[tuple[bool, int, Callable[[], Iterator[pa.Table]]]]

    @property
    def rows(self) -> int:
        return sum(n for _, n, _ in self.parts)

    @classmethod
    def of_tables(cls, kept: pa.Table, rejected: pa.Table | None = None) -> PreferenceInput:
        """In-memory tables (``export_table``; tests)."""
        def batches(t: pa.Table) -> Iterator[pa.Table]:
            for lo in range(0, t.num_rows, BATCH_ROWS):
                yield t.slice(lo, BATCH_ROWS)
        parts = [(True, kept.num_rows, lambda: batches(kept))]
        if rejected is not None:
            parts.append((False, rejected.num_rows, lambda: batches(rejected)))
        return cls(parts)

    @classmethod
    def of_run(cls, run: Run, final_stage: str, opts: PairOptions, verify: bool = True) -> PreferenceInput:
        """The final stage's kept rows, and the kept and rejected rows of the stages that set
        candidates aside: ``cot`` (failed samples) for verification pairs, ``judge`` (rows
        below its threshold) for judge pairs. A stage the run did not commit is skipped."""
        fs = run.filesystem
        dirs: list[tuple[bool, Any]] = [(True, run.stage_dir(final_stage))]
        stages = (["cot"] if "verification" in opts.sources else []) + (["judge"] if "judge" in opts.sources else [])
        for s in stages:
            if s != final_stage:
                dirs.append((False, run.stage_dir(s)))
            dirs.append((False, run.rejected_dir(s)))
        parts = []
        for in_final, d in dirs:
            m = read_manifest(d, fs)
            if m is None:
                continue
            for path, entry in manifest_entries(d, fs):
                parts.append((in_final, int(entry.get("rows") or 0),
                              lambda p=path, e=entry: _shard_candidate_batches(p, e, fs, verify)))
        return cls(parts)


def _shard_candidate_batches(path: Path | PurePosixPath, entry: dict, fs: Any, verify: bool) -> Iterator[pa.Table]:
    """A committed shard's rows, only the columns a candidate reads (those it has)."""
    if verify:
        source: Any = pa.BufferReader(read_verified(path, entry, fs))
    elif fs is None:
        source = pa.OSFile(str(path))
    else:
        source = fs.open_input_file(str(path))
    with source, pq.ParquetFile(source) as pf:
        names = set(pf.schema_arrow.names)
        cols = [c for c in CANDIDATE_COLUMNS if c in names]
        yield from (pa.Table.from_batches([b]) for b in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols))


# --- grouping, bounded ---------------------------------------------------------------------

def _candidates(inp: PreferenceInput, opts: PairOptions, counts: PairCounts) -> Iterator[Candidate]:
    for in_final, _, batches in inp.parts:
        for batch in batches():
            for row in batch.to_pylist():
                got, no_prompt = candidates_of(row, in_final, opts)
                counts.no_prompt += no_prompt
                yield from got


def iter_groups(inp: PreferenceInput, opts: PairOptions, counts: PairCounts, scratch: Path,
                partition_rows: int | None = None) -> Iterator[list[Candidate]]:
    """Every group of candidates, one partition held at a time (see the module's doc)."""
    parts = max(1, math.ceil(inp.rows / max(1, partition_rows or PARTITION_ROWS)))
    if parts == 1:
        yield from group_candidates(_candidates(inp, opts, counts))
        return
    scratch.mkdir(parents=True, exist_ok=True)
    files = [open(scratch / f"part-{i:05d}.jsonl", "w", encoding="utf-8") for i in range(parts)]  # noqa: SIM115
    try:
        for c in _candidates(inp, opts, counts):
            files[zlib.crc32(c.group.encode("utf-8", "surrogatepass")) % parts].write(c.to_json() + "\n")
    finally:
        for f in files:
            f.close()
    for i in range(parts):
        path = scratch / f"part-{i:05d}.jsonl"
        with open(path, encoding="utf-8") as f:
            cands = [Candidate.from_json(line) for line in f]
        path.unlink()
        yield from group_candidates(cands)


# --- the layout ----------------------------------------------------------------------------

def write_preference(scratch_dir: Path, inp: PreferenceInput, formats: list[str] | tuple[str, ...], prompt_style: str,
                     opts: PairOptions, *, open_file: Callable[[str, str], LayoutFile],
                     is_validation: Callable[[list[str]], np.ndarray],
                     render_standard: Callable[[list[dict], list[dict]], tuple[str, str]] | None = None,
                     partition_rows: int | None = None) -> tuple[list, dict, dict[str, str]]:
    """Write ``preference/{train,validation}.{jsonl,parquet}`` through ``open_file(rel, fmt)``
    (the export's file writer); ``is_validation(group keys)`` is the export's split. Returns
    the manifest entries, the layout's counts (pairs per split, ``no_prompt`` and ``pairs``:
    :class:`PairCounts`) and its data files per split (for the card). A split with no pair has
    no file, except ``train``, which is written with the layout's columns even when empty.
    Scratch partitions go under ``scratch_dir`` and are removed."""
    if prompt_style not in ("conversational", "standard"):
        raise PreferenceError(f"prompt_style must be conversational or standard, got {prompt_style!r}")
    counts = PairCounts()
    split_rows = dict.fromkeys(SPLITS, 0)
    files: dict[tuple[str, str], LayoutFile] = {}
    scratch = scratch_dir / f"{TMP_PREFIX}preference-scratch"
    pending: list[dict] = []

    def flush() -> None:
        if not pending:
            return
        table = pairs_table(pending, prompt_style, render_standard)
        pending.clear()
        is_val = np.asarray(is_validation(table.column("group_id").to_pylist()), bool)
        for split in SPLITS:
            part = table.filter(pa.array(is_val if split == "validation" else ~is_val))
            split_rows[split] += part.num_rows
            if part.num_rows == 0:
                continue
            for fmt in formats:
                if (split, fmt) not in files:
                    files[(split, fmt)] = open_file(f"{FOLDER}{split}.{fmt}", fmt)
                files[(split, fmt)].add(part)

    try:
        for group in iter_groups(inp, opts, counts, scratch, partition_rows):
            pending += pairs_of_group(group, opts, counts)
            if len(pending) >= PAIR_BATCH:
                flush()
        flush()
        entries, data_files = [], {}
        for split in SPLITS:
            if split == "validation" and split_rows[split] == 0:
                continue
            for fmt in formats:
                f = files.pop((split, fmt), None)
                if f is None:  # no pair at all: the train file still exists, with the layout's columns
                    f = open_file(f"{FOLDER}{split}.{fmt}", fmt)
                    f.add(preference_schema(prompt_style).empty_table())
                entries.append(f.close())
            fmt = "parquet" if "parquet" in formats else "jsonl"
            data_files[split] = f"{FOLDER}{split}.{fmt}"
    except BaseException:
        for f in files.values():
            f.abort()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return entries, {**split_rows, "no_prompt": counts.no_prompt, "pairs": counts.as_dict()}, data_files


# --- the hooks export.py calls ---------------------------------------------------------------

def run_preference_input(run: Run, final_stage: str, cfg: Any, verify: bool = True) -> PreferenceInput:
    """The rows a run's preference layout pairs (:meth:`PreferenceInput.of_run`)."""
    return PreferenceInput.of_run(run, final_stage, PairOptions.of(cfg), verify)


def write_preference_layout(scratch_dir: Path, source: Any, preference: tuple[Any, Any], formats: Any,
                            prompt_style: str, **writers: Any) -> tuple[list, dict, dict[str, str]]:
    """:func:`write_preference` of ``preference`` (an input and the pairing config); without an
    input (an in-memory table's export) the exported rows themselves (export.py's
    ``RowSource``) are the candidates, all kept. ``writers``: ``open_file``,
    ``is_validation``, ``render_standard`` (export.py's)."""
    inp, cfg = preference
    if inp is None:
        inp = PreferenceInput([(True, source.rows, step) for step in source.steps])
    return write_preference(scratch_dir, inp, list(formats), prompt_style, PairOptions.of(cfg), **writers)
