"""Export the kept samples of a run as a hand-off dataset a fine-tuning job reads as it is.

``<run>/export/<name>/`` holds, per *layout* (``export.kinds``) and split, one file per file
format (``export.formats``: ``jsonl``, ``parquet``):

=====================  ==========================================  ==================================
layout                 files                                       a row (TRL's dataset formats)
=====================  ==========================================  ==================================
``chat``               ``train.{jsonl,parquet}``,                  ``{"messages": [{role, content}, ...],
                       ``validation.{jsonl,parquet}``              "id", "kind"}`` (Parquet: plus the
                                                                   provenance columns)
``prompt_completion``  ``prompt_completion/train.*``, ...          conversational: ``{"prompt": [...],
                                                                   "completion": [{assistant}]}``;
                                                                   standard: two strings (below)
``text``               ``text/train.*``, ...                       ``{"text": ..., "id", "kind"}``
``tokens``             ``tokens/train-00000.bin``,                 no rows: the ``text`` layout's
                       ``tokens/train.idx.npy``, ``tokens.json``   documents as token ids (below)
=====================  ==========================================  ==================================

plus ``checksums.sha256`` (``sha256sum -c`` reads it), a dataset card ``README.md`` (Hub YAML
header with the licence and one config per layout, counts per split and layout, the run's
funnel, teacher, config and dataforge version) and ``_manifest.json``.

**Split.** A row goes to ``validation`` when ``sha256(salt + ":" + id)``, read as a number in
[0, 1), is below ``validation_fraction``: the same id lands in the same split in every run and
every re-export, whatever else is in the table. A split with no row has no file.

**Prompt/completion.** The prompt is every turn before the last assistant turn, the completion
that turn. A row with no turn before it (a pretraining document rendered as a lone assistant
turn) has no prompt and is left out of this layout (counted in the card and manifest as
``no_prompt``). With ``prompt_style: standard`` both are strings, rendered by
:data:`STANDARD_TURN`: each turn as ``"<Role>: <content>\\n\\n"``, the prompt ending in
``"Assistant:"`` and the completion starting with a space.

**Tokens.** The ``tokens`` layout (format and reader: :mod:`dataforge.tokens`) encodes each
document's text with the tokenizer named by ``export.tokenizer`` (a ``tokenizer.json`` or a
Hugging Face tokenizer folder on disk, never downloaded; loaded before any row is read) in
batches, appends its EOS, and writes each split's ids as flat little-endian ``uint16`` (a
vocabulary of at most 65,536 ids) or ``uint32`` shards of ``shard_tokens`` tokens, a uint64
offsets index, a copy of the tokenizer and ``tokens.json`` (tokenizer path, sha256 and
fingerprint, vocabulary size, dtype, EOS id, documents and tokens per split).

**Atomic.** The folder is built under a temporary name and renamed into place; a previous
export is moved aside first and removed only after the new one is in place, so a crash (even
``kill -9``) never leaves a half-written export under the final name. Every file is fsynced
before the rename and the folders after it.

**One writer per export.** An export holds a lock for its folder (``.lock-export-<name>`` next
to it: a ``flock``; a lease object on an object store) while it writes: a second export of the
same folder waits for the first (``lock_timeout``), then replaces it whole. Its temporary folder
is named for it alone and only it is removed on failure; the leftovers of killed exports are
cleared under the lock, when no other export of that folder can be writing.

**Streaming.** The rows are never all in memory: :func:`export_run` reads the stage's committed
shards one at a time (:class:`RowSource`), in batches of :data:`EXPORT_BATCH_ROWS` rows cast to
the shards' unified schema; each batch's layouts and split are computed and appended to the
open files of the export (:class:`_ExportFile`: Parquet row groups, JSON lines, and the tokens
layout's shards and offsets, :class:`TokensWriter`), and the counts for the card and manifest
are summed as they go. The output is the one the whole table would give (a Parquet file of more
than one batch has more row groups); a file of at most one batch is written whole, as before.

**Verified.** The rows are read with every shard's sha256 checked against its manifest
(``verify``, on by default): each shard is read once, checked, then parsed, so a shard changed
after its commit fails the export when it is reached, naming the file, and leaves nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import chain
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from dataforge.errors import DataforgeError
from dataforge.hashing import file_sha256
from dataforge.progress import progress_bar
from dataforge.records import MESSAGE_TYPE, render_messages
from dataforge.store import (
    TMP_PREFIX,
    FileEntry,
    Run,
    folder_lock,
    fsync_dir,
    fsync_file,
    manifest_entries,
    manifest_schema,
    read_parquet_schema,
    read_verified,
    verify_file,
    write_manifest,
)
from dataforge.tokens import (
    DEFAULT_SHARD_TOKENS,
    EOS_CANDIDATES,
    TOKENIZER_COPY,
    TOKENS_DIR,
    index_name,
    shard_name,
    token_dtype,
    tokenizer_fingerprint,
)
from dataforge.tokens import FORMAT as TOKENS_FORMAT
from dataforge.tokens import META as TOKENS_META
from dataforge.tokens import VERSION as TOKENS_VERSION

EXPORT_LOCK_TIMEOUT_S = 600.0  # a second export of the same folder waits this long for the first

PROVENANCE = ["id", "kind", "topic", "audience", "style", "teacher_model", "template", "seed_id",
              "question", "answer", "gold_answer", "votes", "agreement", "run_id"]
ROW_LAYOUTS = ("chat", "prompt_completion", "text")  # rows in JSONL/Parquet files
LAYOUTS = (*ROW_LAYOUTS, "tokens", "preference")  # tokens: token ids in binary shards (dataforge/tokens.py)
# preference: (prompt, chosen, rejected) pairs built across rows (dataforge/export_preference.py)
FORMATS = ("jsonl", "parquet")
SPLITS = ("train", "validation")
ROLES = ("system", "user", "assistant")
STANDARD_TURN = "{role}: {content}\n\n"
DEFAULT_SALT = "dataforge-split-v1"

MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)


class ExportError(DataforgeError, ValueError):
    """An export that cannot be made as asked (unknown layout or format, bad fraction)."""


# --- the split -----------------------------------------------------------------------------

def split_position(sample_id: str, salt: str = DEFAULT_SALT) -> float:
    """Where ``sample_id`` falls in [0, 1): the first 8 bytes of sha256(salt:id) over 2^64."""
    digest = hashlib.sha256(f"{salt}:{sample_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def validation_mask(ids: Sequence[str], fraction: float, salt: str = DEFAULT_SALT) -> list[bool]:
    """True for the ids that go to the validation split."""
    if not 0.0 <= fraction < 1.0:
        raise ExportError(f"validation_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return [False] * len(ids)
    return [split_position(i, salt) < fraction for i in ids]


# --- layouts -------------------------------------------------------------------------------

def _check_messages(sample_id: str, messages: list[dict[str, str]]) -> None:
    for m in messages:
        if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ExportError(f"sample {sample_id}: a message must have a role in {ROLES} and string content, "
                              f"got {str(m)[:120]}")


def split_prompt_completion(messages: list[dict[str, str]]) -> tuple[list[dict], list[dict]] | None:
    """(turns before the last assistant turn, [that turn]); None when there is no prompt."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or last == 0:
        return None
    return messages[:last], [messages[last]]


def render_standard(prompt: list[dict], completion: list[dict]) -> tuple[str, str]:
    """The string form of a prompt/completion pair (:data:`STANDARD_TURN`)."""
    text = "".join(STANDARD_TURN.format(role=m["role"].capitalize(), content=m["content"]) for m in prompt)
    return text + "Assistant:", " " + completion[0]["content"]


def _layout_schema(layout: str, prompt_style: str) -> pa.Schema | None:
    if layout == "text":
        return pa.schema([("text", pa.string()), ("id", pa.string()), ("kind", pa.string())])
    if layout == "prompt_completion":
        value = pa.string() if prompt_style == "standard" else MESSAGES_TYPE
        return pa.schema([("prompt", value), ("completion", value), ("id", pa.string()), ("kind", pa.string())])
    return None


def jsonl_columns(layout: str) -> list[str]:
    """The fields of a layout's JSON lines (its Parquet file may carry provenance besides)."""
    return {"chat": ["messages", "id", "kind"], "text": ["text", "id", "kind"],
            "prompt_completion": ["prompt", "completion", "id", "kind"],
            "preference": ["prompt", "chosen", "rejected", "id", "kind"]}[layout]


def layout_reference(table: pa.Table, layout: str, prompt_style: str = "conversational"
                     ) -> tuple[pa.Table, np.ndarray]:
    """The readable reference: one layout's rows built row by row in Python. Returns the
    layout's table and, per input row, whether it is in it. :func:`layout_arrow` must give
    the same (tests/test_export.py)."""
    if layout not in ROW_LAYOUTS:
        raise ExportError(f"unknown row layout {layout!r}; choose from {', '.join(ROW_LAYOUTS)}")
    rows = table.to_pylist()
    messages = [render_messages(r) for r in rows]
    for r, m in zip(rows, messages):
        _check_messages(r["id"], m)
    if layout == "chat":
        out = table.select([c for c in PROVENANCE if c in table.column_names])
        return out.append_column("messages", pa.array(messages, type=MESSAGES_TYPE)), np.ones(len(rows), bool)
    if layout == "text":
        recs = [{"text": r["text"], "id": r["id"], "kind": r["kind"]} for r in rows]
        return pa.Table.from_pylist(recs, schema=_layout_schema(layout, prompt_style)), np.ones(len(rows), bool)
    recs, included = [], []
    for r, m in zip(rows, messages):
        pair = split_prompt_completion(m)
        included.append(pair is not None)
        if pair is None:
            continue
        prompt, completion = render_standard(*pair) if prompt_style == "standard" else pair
        recs.append({"prompt": prompt, "completion": completion, "id": r["id"], "kind": r["kind"]})
    return pa.Table.from_pylist(recs, schema=_layout_schema(layout, prompt_style)), np.array(included, bool)


# --- the same, in bulk on Arrow columns (what export_table runs) -------------------------------------

def _gather(values: pa.Array, starts: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    """A list array whose row i is ``values[starts[i] : starts[i] + lengths[i]]``."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    row = np.repeat(np.arange(len(lengths)), lengths)
    idx = starts[row] + (np.arange(offsets[-1]) - offsets[:-1][row])
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32) if offsets[-1] < 2**31 else offsets),
                                    values.take(pa.array(idx, pa.int64())))


def messages_column(table: pa.Table) -> pa.ListArray:
    """:func:`~dataforge.records.render_messages` of every row at once: the ``messages`` list
    where it has turns, else the text as one assistant turn. Checks roles and contents."""
    n = table.num_rows
    text = table.column("text").combine_chunks()
    if "messages" in table.column_names:
        msgs = table.column("messages").combine_chunks().cast(MESSAGES_TYPE)
        lens = pc.list_value_length(msgs).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = pc.list_flatten(msgs)
    else:
        lens, flat = np.zeros(n, np.int64), pa.array([], MESSAGE_TYPE)
    fallback = lens == 0
    fb_text = text.filter(pa.array(fallback))
    fb_vals = pa.StructArray.from_arrays([pa.array(["assistant"] * len(fb_text), pa.string()), fb_text.cast(pa.string())],
                                         fields=list(MESSAGE_TYPE))
    values = pa.concat_arrays([flat.cast(MESSAGE_TYPE), fb_vals])
    starts = np.cumsum(lens) - lens
    starts[fallback] = len(flat) + np.arange(int(fallback.sum()))
    out = _gather(values, starts, np.where(fallback, 1, lens))
    roles, contents = pc.struct_field(out.values, "role"), pc.struct_field(out.values, "content")
    bad = pc.or_kleene(pc.invert(pc.is_in(roles, pa.array(ROLES))).fill_null(True), pc.is_null(contents))
    if pc.any(bad).as_py():
        i = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
        row = int(np.searchsorted(out.offsets.to_numpy(), i, side="right") - 1)
        raise ExportError(f"sample {table.column('id')[row].as_py()}: a message must have a role in {ROLES} and string "
                          f"content, got {out.values[i].as_py()}")
    return out


def layout_arrow(table: pa.Table, messages: pa.ListArray, layout: str, prompt_style: str = "conversational"
                 ) -> tuple[pa.Table, np.ndarray]:
    """:func:`layout_reference` on whole columns (numpy for the turn arithmetic)."""
    n = table.num_rows
    ids, kinds = table.column("id").combine_chunks(), table.column("kind").combine_chunks()
    if layout == "chat":
        out = table.select([c for c in PROVENANCE if c in table.column_names])
        return out.append_column("messages", messages), np.ones(n, bool)
    if layout == "text":
        return pa.Table.from_arrays([table.column("text").cast(pa.string()), ids, kinds],
                                    schema=_layout_schema(layout, prompt_style)), np.ones(n, bool)
    if layout != "prompt_completion":
        raise ExportError(f"unknown row layout {layout!r}; choose from {', '.join(ROW_LAYOUTS)}")
    offsets = messages.offsets.to_numpy().astype(np.int64)
    is_asst = pc.equal(pc.struct_field(messages.values, "role"), "assistant").to_numpy(zero_copy_only=False)
    pos = np.where(is_asst, np.arange(len(is_asst)), -1)
    last = np.maximum.reduceat(pos, offsets[:-1]) if n and len(pos) else np.full(n, -1)  # every row has >= 1 turn
    included = (last >= 0) & (last > offsets[:-1])
    rows = np.flatnonzero(included)
    prompt = _gather(messages.values, offsets[:-1][rows], (last - offsets[:-1])[rows])
    completion = _gather(messages.values, last[rows], np.ones(len(rows), np.int64))
    if prompt_style == "standard":
        def turns(lists: pa.ListArray) -> pa.Array:
            role = pc.utf8_capitalize(pc.struct_field(lists.values, "role"))
            each = pc.binary_join_element_wise(role, ": ", pc.struct_field(lists.values, "content"), "\n\n", "")
            return pc.binary_join(pa.ListArray.from_arrays(lists.offsets, each), "")
        prompt = pc.binary_join_element_wise(turns(prompt), "Assistant:", "")
        completion = pc.binary_join_element_wise(" ", pc.struct_field(completion.values, "content"), "")
    sel = pa.array(rows, pa.int64())
    return pa.Table.from_arrays([prompt, completion, ids.take(sel), kinds.take(sel)],
                                schema=_layout_schema(layout, prompt_style)), included


def layout_dir(layout: str) -> str:
    """Where a layout's files go inside the export ("" = the top level, as chat always has)."""
    return "" if layout == "chat" else layout + "/"


# --- the card ------------------------------------------------------------------------------

def _card(title: str, license_id: str, table_rows: int, kinds: Mapping[str, int], layouts: Mapping[str, dict],
          entries: Sequence[FileEntry], data_files: Mapping[str, dict[str, str]], info: Mapping[str, Any]) -> str:
    configs = []
    for i, (layout, files) in enumerate(data_files.items()):
        cfg: dict[str, Any] = {"config_name": layout, "data_files": [{"split": s, "path": p} for s, p in files.items()]}
        if i == 0:
            cfg["default"] = True
        configs.append(cfg)
    header = {"license": license_id, "pretty_name": title, "tags": ["synthetic", "dataforge"], "configs": configs}
    lines = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "", f"# {title}", "",
             f"Rows: {table_rows}", "", f"Licence: {license_id}", "",
             "| kind | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(kinds.items())]
    lines += ["", "## Splits and layouts", "",
              ("Each row is in `train` or `validation` by a hash of its id (the same id always lands in the same "
               "split)."), "", "| layout | train | validation | left out (no prompt) |", "|---|---|---|---|"]
    for layout, c in layouts.items():
        lines.append(f"| {layout} | {c['train']} | {c['validation']} | {c.get('no_prompt', 0)} |")
    lines += ["", ("- `chat`: `messages`, a list of `{role, content}` (roles system/user/assistant): the "
                   "conversational language-modeling format TRL's SFTTrainer reads."),
              ("- `prompt_completion`: `prompt` and `completion` (TRL's prompt-completion type); the completion is "
               "the last assistant turn."), "- `text`: `text`, for pretraining."]
    if "preference" in layouts:
        lines.append("- `preference`: `prompt`, `chosen`, `rejected` (TRL's preference type, DPOTrainer): pairs from "
                     "CoT verification and judge scores, every pair of a question in one split.")
    if "tokens" in layouts:
        t = layouts["tokens"]
        lines.append(f"- `tokens` (counted in documents): the `text` layout's documents as {t['dtype']} token ids "
                     f"in `tokens/<split>-NNNNN.bin` with an EOS (id {t['eos_id']}) after each, document offsets in "
                     f"`tokens/<split>.idx.npy`, the tokenizer named in `tokens/tokens.json` (a copy in "
                     f"`tokens/tokenizer/`): {t['train_tokens']} train "
                     f"and {t['validation_tokens']} validation tokens.")
    lines.append("")
    if data_files:
        first = next(iter(data_files.values()))["train"]
        builder = "parquet" if first.endswith(".parquet") else "json"
        lines += ["```python", "from datasets import load_dataset",
                  f'ds = load_dataset("{builder}", data_files={{"train": "{first}"}})', "```", ""]
    if "tokens" in layouts:
        lines += ["```python", "from dataforge.tokens import read_tokens",
                  'train = read_tokens("tokens", "train")  # train.shards: np.memmap, train.offsets: uint64', "```", ""]
    if info.get("teacher_models"):
        lines += ["## Teacher", "", ", ".join(f"`{m}`" for m in info["teacher_models"]), ""]
    funnel = info.get("funnel")
    if funnel:
        lines += ["## Funnel", "", "| stage | rows in | kept | dropped |", "|---|---|---|---|"]
        lines += [f"| {f['stage']} | {f.get('rows_in')} | {f.get('rows_kept')} | {f.get('rows_dropped')} |"
                  for f in funnel]
        lines.append("")
    lines += ["## Files", "", "| file | rows | bytes | sha256 |", "|---|---|---|---|"]
    lines += [f"| {e.name} | {e.rows} | {e.bytes} | `{e.sha256}` |" for e in entries]
    lines += ["", "Check them with `sha256sum -c checksums.sha256`.", ""]
    prov = {k: v for k, v in info.items() if k not in ("funnel", "teacher_models", "config")}
    prov["created_at"] = datetime.now(UTC).isoformat()
    lines += ["## Provenance", "", "```json", json.dumps(prov, indent=2, default=str), "```", ""]
    if info.get("config"):
        lines += ["## Configuration", "", "```yaml", yaml.safe_dump(info["config"], sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


# --- writing -------------------------------------------------------------------------------

def write_jsonl(path: Path | BinaryIO, table: pa.Table) -> None:
    """JSON lines of ``table`` in bulk (polars; UTF-8, compact separators) to a path, or
    appended to a file open for binary writing."""
    pl.from_arrow(table).write_ndjson(path)


def write_jsonl_reference(path: Path | BinaryIO, table: pa.Table) -> None:
    """The same, a ``json.dumps`` per row (the reference :func:`write_jsonl` is tested against)."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in table.to_pylist()).encode("utf-8")
    if isinstance(path, (str, os.PathLike)):
        Path(path).write_bytes(data)
    else:
        path.write(data)


def write_file(tmp: Path, rel: str, fmt: str, layout: str, table: pa.Table, engine: str) -> FileEntry:
    """One export file ``tmp/rel`` (JSONL or Parquet) and its manifest entry (tests inject a full disk here)."""
    p = tmp / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        (write_jsonl if engine == "arrow" else write_jsonl_reference)(p, table.select(jsonl_columns(layout)))
    else:
        pq.write_table(table, p, compression="zstd")
    fsync_file(p)
    return FileEntry(rel, table.num_rows, p.stat().st_size, file_sha256(p))


def _tmp_name(out_dir: Path, old: bool = False) -> Path:
    """A temporary folder name of this writer alone (its pid and a random part)."""
    return (out_dir.parent / f"{TMP_PREFIX}export-{out_dir.name}-{'old-' if old else ''}"
                             f"{os.getpid()}-{uuid.uuid4().hex[:8]}")


def export_lock_path(out_dir: Path) -> Path:
    return Path(out_dir).parent / f".lock-export-{Path(out_dir).name}"


def _remove_stale(out_dir: Path) -> None:
    """Temporary folders of this export left by a killed process (never visible as the export).
    Called under the export's lock: no other export of this folder is writing one."""
    pattern = re.compile(rf"{re.escape(TMP_PREFIX)}export-{re.escape(out_dir.name)}-(old-)?([0-9]+-)?[0-9a-f]{{8}}")
    for p in out_dir.parent.iterdir():
        if pattern.fullmatch(p.name):
            shutil.rmtree(p, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for d in sorted({p.parent for p in root.rglob("*")} | {root}, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(d)


class _ExportFile:
    """One file of the export (a layout's split in one format), fed part by part as the rows
    stream (a part: the rows of one batch's layout in that split). Parts are gathered until
    they hold :data:`EXPORT_BATCH_ROWS` rows, then written together: a Parquet row group
    (``pq.ParquetWriter``, the settings of ``pq.write_table``) or JSON lines appended (the same
    bytes as one whole write). A file that never gathers that many rows is written whole by
    :func:`write_file` when it is closed, so it is the same bytes as ever (one row group)."""

    def __init__(self, tmp: Path, rel: str, fmt: str, layout: str, engine: str) -> None:
        self.tmp, self.rel, self.fmt, self.layout, self.engine = tmp, rel, fmt, layout, engine
        self._parts: list[pa.Table] = []
        self._pending = 0
        self._sink: Any = None  # a pq.ParquetWriter or a binary file, once streaming
        self._rows = 0

    def add(self, part: pa.Table) -> None:
        self._parts.append(part)
        self._pending += part.num_rows
        if self._pending >= EXPORT_BATCH_ROWS:
            self._flush()

    def _gathered(self) -> pa.Table:
        table = pa.concat_tables(self._parts) if len(self._parts) > 1 else self._parts[0]
        self._parts, self._pending = [], 0
        return table

    def _flush(self) -> None:
        table = self._gathered()  # one row group of the parts (chunked: written in turn, not copied)
        if self._sink is None:
            path = self.tmp / self.rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if self.fmt == "parquet":
                self._sink = pq.ParquetWriter(path, table.schema, compression="zstd")
            else:
                self._sink = open(path, "wb")  # noqa: SIM115 — closed by close() or abort()
        if self.fmt == "parquet":
            self._sink.write_table(table)
        else:
            (write_jsonl if self.engine == "arrow" else write_jsonl_reference)(
                self._sink, table.select(jsonl_columns(self.layout)))
        self._rows += table.num_rows

    def close(self) -> FileEntry:
        if self._sink is None:  # whole, as one table in memory is written (the same bytes)
            return write_file(self.tmp, self.rel, self.fmt, self.layout, self._gathered().combine_chunks(),
                              self.engine)
        if self._parts:
            self._flush()
        self._sink.close()
        self._sink = None
        path = self.tmp / self.rel
        fsync_file(path)
        return FileEntry(self.rel, self._rows, path.stat().st_size, file_sha256(path))

    def abort(self) -> None:
        if self._sink is not None:
            with contextlib.suppress(Exception):
                self._sink.close()
            self._sink = None
        self._parts = []


# --- the tokens layout ---------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model")
TOKENS_BATCH_ROWS = 1024  # rows per encode_batch call


@dataclass
class ExportTokenizer:
    """The tokenizer of a ``tokens`` export, loaded (and checked) before any row is read."""

    path: Path
    kind: str  # "tokenizer.json" (a tokenizers file) or "hf_folder" (AutoTokenizer's folder)
    backend: Any  # the tokenizers.Tokenizer that encodes
    vocab_size: int  # the largest id + 1
    eos_token: str
    eos_id: int
    sha256: str
    fingerprint: str

    def info(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "sha256": self.sha256, "fingerprint": self.fingerprint,
                "vocab_size": self.vocab_size, "eos_token": self.eos_token, "eos_id": self.eos_id,
                "copy": f"{TOKENIZER_COPY}/"}


def tokenizer_sha256(path: str | Path) -> str:
    """The sha256 of a ``tokenizer.json`` file; of an HF folder, the sha256 of the lines
    ``<sha256>  <name>`` of its tokenizer files (:data:`TOKENIZER_FILES`, sorted by name) —
    its weights, if any, are not read."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ExportError(f"{p}: no such tokenizer (export.tokenizer / --tokenizer names a tokenizer.json file or a "
                          "Hugging Face tokenizer folder)")
    if p.is_file():
        return file_sha256(p)
    lines = "".join(f"{file_sha256(p / n)}  {n}\n" for n in sorted(TOKENIZER_FILES) if (p / n).is_file())
    return hashlib.sha256(lines.encode()).hexdigest()


def _hf_backend(path: Path) -> tuple[Any, str | None]:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"{path}: a slow (Python) tokenizer; the tokens layout needs a fast one (a tokenizer.json)")
    return backend, tok.eos_token


def load_export_tokenizer(path: str | Path, eos_token: str | None = None) -> ExportTokenizer:
    """Load the tokenizer at ``path`` — a ``tokenizer.json`` (``tokenizers``) or a Hugging Face
    tokenizer folder (``AutoTokenizer``, local files only: nothing is downloaded) — and find its
    EOS: ``eos_token``, else the folder's ``eos_token``, else the first of
    :data:`~dataforge.tokens.EOS_CANDIDATES` in the vocabulary. Any problem is one
    :class:`ExportError` line naming the path."""
    p = Path(path).expanduser().resolve()
    sha = tokenizer_sha256(p)  # also: a missing path is an error naming it
    kind = "hf_folder" if p.is_dir() else "tokenizer.json"
    try:
        if p.is_dir():
            backend, own_eos = _hf_backend(p)
        else:
            from tokenizers import Tokenizer

            backend, own_eos = Tokenizer.from_file(str(p)), None
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 — tokenizers raises bare Exception on a bad file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ExportError(f"{p}: not a readable tokenizer ({'an HF tokenizer folder' if p.is_dir() else 'a tokenizer.json'}"
                          f" was expected): {first}") from None
    vocab = backend.get_vocab(with_added_tokens=True)
    if not vocab:
        raise ExportError(f"{p}: the tokenizer has an empty vocabulary")
    eos = eos_token or own_eos or next((c for c in EOS_CANDIDATES if c in vocab), None)
    if eos is None:
        raise ExportError(f"{p}: no end-of-text token found (tried {', '.join(EOS_CANDIDATES)}); name the one to "
                          "append after each document with export.eos_token / --eos-token")
    if eos not in vocab:
        raise ExportError(f"{p}: the EOS token {eos!r} is not in the tokenizer's vocabulary")
    return ExportTokenizer(path=p, kind=kind, backend=backend, vocab_size=max(vocab.values()) + 1, eos_token=eos,
                           eos_id=int(vocab[eos]), sha256=sha, fingerprint=tokenizer_fingerprint(backend))


def encode_documents(backend: Any, texts: list[str], eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(the ids of ``texts``, each followed by ``eos_id``, flat int64; each document's length
    with its EOS), one Rust batch call (no special tokens added by the tokenizer)."""
    enc = getattr(backend, "encode_batch_fast", backend.encode_batch)
    ids = [e.ids for e in enc(texts, add_special_tokens=False)]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return np.insert(flat, np.cumsum(lengths), eos_id), lengths + 1


class TokenShards:
    """One split's ``.bin`` shards: a stream of ids cut every ``cap`` tokens into
    ``<split>-NNNNN.bin``, each hashed as written and fsynced when closed."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, cap: int) -> None:
        self.folder, self.split, self.dtype, self.cap = folder, split, dtype, cap
        self.entries: list[FileEntry] = []
        self._f = None
        self._hash = None
        self._filled = 0

    def write(self, ids: np.ndarray) -> None:
        data = np.ascontiguousarray(ids, dtype=self.dtype)
        while len(data):
            if self._f is None:
                name = shard_name(self.split, len(self.entries))
                self._f, self._hash, self._filled = open(self.folder / name, "wb"), hashlib.sha256(), 0  # noqa: SIM115
            part = data[: self.cap - self._filled]
            buf = part.tobytes()
            self._f.write(buf)
            self._hash.update(buf)
            self._filled += len(part)
            data = data[len(part):]
            if self._filled == self.cap:
                self._close_shard()

    def _close_shard(self) -> None:
        path = Path(self._f.name)
        self._f.close()
        fsync_file(path)
        self.entries.append(FileEntry(f"{TOKENS_DIR}/{path.name}", self._filled, path.stat().st_size,
                                      self._hash.hexdigest()))
        self._f = None

    def close(self) -> list[FileEntry]:
        if self._f is not None:
            self._close_shard()
        return self.entries

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def write_tokenizer_copy(tok: ExportTokenizer, folder: Path) -> list[FileEntry]:
    """``folder/tokenizer.json`` (the backend that encoded) and a ``tokenizer_config.json``
    naming the EOS: ``AutoTokenizer.from_pretrained(folder)`` loads it as it is."""
    folder.mkdir(parents=True, exist_ok=True)
    tok.backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": tok.eos_token,
         "clean_up_tokenization_spaces": False}, indent=2) + "\n")
    out = []
    for name in ("tokenizer.json", "tokenizer_config.json"):
        p = folder / name
        fsync_file(p)
        out.append(FileEntry(f"{TOKENS_DIR}/{TOKENIZER_COPY}/{name}", 0, p.stat().st_size, file_sha256(p)))
    return out


def _write_index(path: Path, raw: Path, docs: int) -> None:
    """``path``: the ``.npy`` of the uint64 offsets ``[0, *ends]`` whose ends (``docs`` of them,
    raw little-endian) are in ``raw`` — the same bytes as ``np.save`` of the whole array, copied
    from the file in pieces, never all in memory."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(np.dtype("<u8")),
                                                  "fortran_order": False, "shape": (docs + 1,)})
    with open(path, "wb") as out, open(raw, "rb") as ends:
        out.write(header.getvalue())
        out.write(np.zeros(1, "<u8").tobytes())
        shutil.copyfileobj(ends, out, 1 << 20)


class TokensWriter:
    """The ``tokens`` layout under ``tmp/tokens/`` (format: :mod:`dataforge.tokens`), written as
    the rows stream: :meth:`add` encodes a batch's texts :data:`TOKENS_BATCH_ROWS` rows at a
    time into each split's ``.bin`` shards and appends the documents' end offsets to a raw file
    (nothing per row is kept in memory); :meth:`finish` writes the indexes, the tokenizer copy
    and ``tokens.json`` and returns the manifest entries and the counts."""

    def __init__(self, tmp: Path, tok: ExportTokenizer, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                 batch_rows: int | None = None) -> None:
        if shard_tokens < 1:
            raise ExportError(f"shard_tokens must be at least 1, got {shard_tokens}")
        self.tok, self.shard_tokens, self.batch_rows = tok, shard_tokens, batch_rows
        self.folder = tmp / TOKENS_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = token_dtype(tok.vocab_size)
        self._shards = {s: TokenShards(self.folder, s, self.dtype, shard_tokens) for s in SPLITS}
        self._ends = {s: open(self._raw(s), "wb") for s in SPLITS}  # noqa: SIM115 — closed by finish/abort
        self.docs = dict.fromkeys(SPLITS, 0)
        self.tokens = dict.fromkeys(SPLITS, 0)

    def _raw(self, split: str) -> Path:
        return self.folder / f"{TMP_PREFIX}{split}.offsets"

    def add(self, texts: pa.ChunkedArray | pa.Array, is_val: np.ndarray) -> None:
        """Encode ``texts`` (a batch of the ``text`` column, in row order; ``is_val``: which go
        to validation) and append them to their splits."""
        batch_rows = self.batch_rows or TOKENS_BATCH_ROWS
        tok = self.tok
        for lo in range(0, len(texts), batch_rows):
            batch = [t or "" for t in texts.slice(lo, batch_rows).to_pylist()]
            flat, lens = encode_documents(tok.backend, batch, tok.eos_id)
            if len(flat) and int(flat.max()) >= tok.vocab_size:
                raise ExportError(f"{tok.path}: the tokenizer produced id {int(flat.max())} beyond its vocabulary "
                                  f"of {tok.vocab_size}")
            val = is_val[lo:lo + len(batch)]
            for split, docs in (("train", ~val), ("validation", val)):
                if docs.all():
                    self._append(split, flat, lens)
                elif docs.any():
                    self._append(split, flat[np.repeat(docs, lens)], lens[docs])

    def _append(self, split: str, ids: np.ndarray, lens: np.ndarray) -> None:
        self._shards[split].write(ids)
        ends = self.tokens[split] + np.cumsum(lens)
        self._ends[split].write(ends.astype("<u8").tobytes())
        self.docs[split] += len(lens)
        self.tokens[split] += int(lens.sum())

    def finish(self) -> tuple[list[FileEntry], dict]:
        entries: list[FileEntry] = []
        splits: dict[str, dict] = {}
        for split in SPLITS:
            self._ends[split].close()
            raw = self._raw(split)
            if split == "validation" and self.docs[split] == 0:
                raw.unlink()
                continue  # a split with no row has no file
            idx = self.folder / index_name(split)
            _write_index(idx, raw, self.docs[split])
            raw.unlink()
            fsync_file(idx)
            shards = self._shards[split].close()
            entries += [FileEntry(f"{TOKENS_DIR}/{idx.name}", self.docs[split], idx.stat().st_size, file_sha256(idx)),
                        *shards]
            splits[split] = {"docs": self.docs[split], "tokens": self.tokens[split], "index": idx.name,
                             "shards": [{"file": PurePosixPath(e.name).name, "tokens": e.rows} for e in shards]}
        tok = self.tok
        entries += write_tokenizer_copy(tok, self.folder / TOKENIZER_COPY)
        meta = {"format": TOKENS_FORMAT, "version": TOKENS_VERSION, "dtype": self.dtype.name, "byte_order": "little",
                "vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "eos_token": tok.eos_token,
                "eos": "appended after every document (the last token of offsets[i]:offsets[i+1])",
                "source": "the text column, in the order of the text layout's rows",
                "shard_tokens": self.shard_tokens, "tokenizer": tok.info(), "splits": splits}
        meta_path = self.folder / TOKENS_META
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        fsync_file(meta_path)
        entries.append(FileEntry(f"{TOKENS_DIR}/{TOKENS_META}", 0, meta_path.stat().st_size, file_sha256(meta_path)))
        counts = {s: splits.get(s, {}).get("docs", 0) for s in SPLITS}
        counts.update({f"{s}_tokens": splits.get(s, {}).get("tokens", 0) for s in SPLITS})
        counts.update({"dtype": self.dtype.name, "eos_id": tok.eos_id,
                       "shards": sum(len(v["shards"]) for v in splits.values())})
        return entries, counts

    def abort(self) -> None:
        for f in self._ends.values():
            f.close()
        for w in self._shards.values():
            w.abort()


def write_tokens(tmp: Path, texts: pa.ChunkedArray | pa.Array, is_val: np.ndarray, tok: ExportTokenizer,
                 shard_tokens: int = DEFAULT_SHARD_TOKENS, batch_rows: int | None = None
                 ) -> tuple[list[FileEntry], dict]:
    """The ``tokens`` layout of in-memory ``texts`` (the ``text`` column, in row order) under
    ``tmp/tokens/`` in one call (:class:`TokensWriter`); returns its manifest entries and counts."""
    writer = TokensWriter(tmp, tok, shard_tokens, batch_rows)
    try:
        writer.add(texts, is_val)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


# --- reading the rows ----------------------------------------------------------------------

EXPORT_BATCH_ROWS = 16_384  # rows handled at once: a batch and its layouts are what the export holds in memory


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``: its columns in that order, cast to those types, a
    missing one all null (a shard whose column was all null, or absent, in a stage whose other
    shards have it)."""
    if table.schema.equals(schema, check_metadata=True):
        return table
    names = set(table.column_names)
    cols = [table.column(f.name).cast(f.type) if f.name in names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _shard_schema(path: Path | PurePosixPath, entry: dict, fs: Any, verify: bool) -> pa.Schema:
    """A committed shard's schema from its footer; with ``verify``, a footer that cannot be read
    is checked against the manifest first (a changed file is a ChecksumMismatch naming it)."""
    try:
        return read_parquet_schema(path, fs)
    except (OSError, pa.ArrowException):
        if verify:
            verify_file(path, entry, fs)
        raise


def _shard_batches(path: Path | PurePosixPath, entry: dict, fs: Any, verify: bool, schema: pa.Schema
                   ) -> Iterator[pa.Table]:
    """One committed shard's rows, :data:`EXPORT_BATCH_ROWS` at a time, each cast to ``schema``.
    With ``verify`` the shard's bytes are read once and checked against its manifest entry
    before any row is parsed (what is checked is what is exported)."""
    if verify:
        source = pa.BufferReader(read_verified(path, entry, fs))
    elif fs is None:
        source = pa.OSFile(str(path))
    else:
        source = fs.open_input_file(str(path))
    with source, pq.ParquetFile(source) as pf:
        for batch in pf.iter_batches(batch_size=EXPORT_BATCH_ROWS):
            yield conform(pa.Table.from_batches([batch]), schema)


def _table_slice(table: pa.Table, lo: int, size: int) -> Iterator[pa.Table]:
    yield table.slice(lo, size).combine_chunks()


@dataclass
class RowSource:
    """The rows an export reads, in order, never all at once: their schema and, per step of the
    progress bar (a stage's shard, or a slice of an in-memory table), a callable giving that
    step's rows in batches of at most :data:`EXPORT_BATCH_ROWS`, each with that schema."""

    schema: pa.Schema
    rows: int  # as known before reading (a stage's manifest): for the progress bar
    steps: list[Callable[[], Iterator[pa.Table]]]
    step_name: tuple[str, str]  # singular and plural: ("shard", "shards") or ("batch", "batches")

    @classmethod
    def of_table(cls, table: pa.Table) -> RowSource:
        """An in-memory table, in slices of :data:`EXPORT_BATCH_ROWS` rows."""
        n, size = table.num_rows, EXPORT_BATCH_ROWS
        return cls(table.schema, n, [partial(_table_slice, table, lo, size) for lo in range(0, n, size)],
                   ("batch", "batches"))

    @classmethod
    def of_stage(cls, run: Run, stage: str, verify: bool = True) -> RowSource:
        """The committed kept rows of ``stage``, shard by shard (``verify``: each shard's size
        and sha256 checked against the manifest as it is read). The schema is the shards'
        schemas unified (``permissive``: a column all null in one shard takes the others' type);
        an empty stage has its manifest's."""
        directory, fs = run.stage_dir(stage), run.filesystem
        entries = manifest_entries(directory, fs)
        if not entries:
            schema = manifest_schema(directory, fs)
        else:
            try:
                schema = pa.unify_schemas([_shard_schema(p, e, fs, verify) for p, e in entries],
                                          promote_options="permissive")
            except (pa.ArrowTypeError, pa.ArrowInvalid) as err:
                raise ExportError(f"{directory}: the shards of stage {stage} have schemas that do not unify: "
                                  f"{err}") from None
        rows = sum(e["rows"] for _, e in entries if isinstance(e.get("rows"), int))
        return cls(schema, rows, [partial(_shard_batches, p, e, fs, verify, schema) for p, e in entries],
                   ("shard", "shards"))


def export_table(table: pa.Table, out_dir: Path, formats: Sequence[str], **options: Any) -> dict:
    """Write ``table`` (sample rows) as a hand-off dataset at ``out_dir``; returns its manifest.
    :func:`export_rows` of the table in slices of :data:`EXPORT_BATCH_ROWS` rows (the same
    options)."""
    return export_rows(RowSource.of_table(table), out_dir, formats, **options)


def export_rows(source: RowSource, out_dir: Path, formats: Sequence[str], *, kinds: Sequence[str] = ("chat",),
                validation_fraction: float = 0.0, split_salt: str = DEFAULT_SALT,
                prompt_style: str = "conversational", license_id: str = "unknown",
                title: str = "dataforge export", card_info: Mapping[str, Any] | None = None,
                card_extra: dict | None = None, extra: dict | None = None, engine: str = "arrow",
                lock_timeout: float | None = EXPORT_LOCK_TIMEOUT_S,
                tokenizer: str | Path | ExportTokenizer | None = None, eos_token: str | None = None,
                shard_tokens: int = DEFAULT_SHARD_TOKENS, teacher_models_from_rows: bool = False,
                distill: bool = False, preference_input: Any = None, preference_options: Any = None) -> dict:
    """Write the rows of ``source`` as a hand-off dataset at ``out_dir``; returns its manifest.
    ``distill``: the row layouts' Parquet files carry ``teacher_topk`` (:data:`DISTILL_COLUMN`).

    The rows stream: batch by batch, each layout's rows and split are computed and appended to
    the open files (:class:`_ExportFile`, :class:`TokensWriter`), and the counts for the card
    and manifest are summed as they go, so the export holds one batch (and one shard's bytes
    when verifying) whatever the size of the data.

    ``kinds`` are layouts (:data:`LAYOUTS`), ``formats`` file formats (:data:`FORMATS`) of the
    row layouts; ``card_info`` (funnel, teacher_models, config, run_id, ...) goes into the
    dataset card (with ``teacher_models_from_rows``, the rows' ``teacher_model`` values, when
    there are any, replace its ``teacher_models``). ``engine``: ``arrow`` (bulk, the default)
    or ``reference`` (row by row in Python). The ``tokens`` layout needs ``tokenizer`` (a path,
    loaded and checked here before anything else, or an :class:`ExportTokenizer`);
    ``eos_token`` overrides its EOS and ``shard_tokens`` caps a ``.bin`` shard. Holds the export
    folder's lock while it writes, waiting up to ``lock_timeout`` seconds for another export of
    the same folder (None: for ever), then :class:`~dataforge.store.LockHeld` naming it."""
    bad = [f for f in formats if f not in FORMATS] + [k for k in kinds if k not in LAYOUTS]
    if bad or not formats or not kinds:
        raise ExportError(f"unknown or missing export format/layout {bad}; formats: {', '.join(FORMATS)}; "
                          f"layouts: {', '.join(LAYOUTS)}")
    if prompt_style not in ("conversational", "standard"):
        raise ExportError(f"prompt_style must be conversational or standard, got {prompt_style!r}")
    if engine not in ("arrow", "reference"):
        raise ExportError(f"engine must be arrow or reference, got {engine!r}")
    validation_mask([], validation_fraction)  # a fraction out of [0, 1) fails here, before any work
    tokens = None
    if "tokens" in kinds:
        if int(shard_tokens) < 1:
            raise ExportError(f"shard_tokens must be at least 1, got {shard_tokens}")
        if tokenizer is None:
            raise ExportError("the tokens layout needs a tokenizer: export.tokenizer / --tokenizer (a tokenizer.json "
                              "file or a Hugging Face tokenizer folder)")
        if not isinstance(tokenizer, ExportTokenizer):
            tokenizer = load_export_tokenizer(tokenizer, eos_token)
        tokens = (tokenizer, int(shard_tokens))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(export_lock_path(out_dir), f"export {out_dir}", timeout=lock_timeout):
        _remove_stale(out_dir)
        return _export_locked(source, out_dir, formats, kinds, validation_fraction, split_salt, prompt_style,
                              license_id, title, card_info, card_extra, extra, engine, tokens,
                              teacher_models_from_rows, distill=distill,
                              preference=(preference_input, preference_options) if "preference" in kinds else None)


@dataclass
class _Tally:
    """What the card and the manifest count, summed batch by batch (no per-row state)."""

    rows: int = 0
    kinds: dict = field(default_factory=dict)  # kind -> rows, in order of first appearance
    teacher_models: set = field(default_factory=set)
    layouts: dict = field(default_factory=dict)  # layout -> {train, validation[, no_prompt]}

    def add(self, batch: pa.Table) -> None:
        self.rows += batch.num_rows
        for r in pc.value_counts(batch.column("kind")).to_pylist():
            self.kinds[r["values"]] = self.kinds.get(r["values"], 0) + r["counts"]
        if "teacher_model" in batch.column_names:
            self.teacher_models.update(m for m in pc.unique(batch.column("teacher_model")).to_pylist() if m)


def _layout(batch: pa.Table, messages: pa.ListArray | None, layout: str, prompt_style: str, engine: str,
            distill: bool = False) -> tuple[pa.Table, np.ndarray]:
    if engine == "arrow":
        out, included = layout_arrow(batch, messages, layout, prompt_style)
    else:
        out, included = layout_reference(batch, layout, prompt_style)
    return (with_distill(out, batch, included) if distill else out), included


# the distillation signals (dataforge/teacher/logprobs.py), carried beside the text with ``export.distill``
DISTILL_COLUMN = "teacher_topk"


def with_distill(out: pa.Table, batch: pa.Table, included: np.ndarray) -> pa.Table:
    """A layout's rows with the ``teacher_topk`` of the rows they came from (Parquet only: the
    JSON lines keep :func:`jsonl_columns`); a table without the column is returned as it is."""
    if DISTILL_COLUMN not in batch.column_names or DISTILL_COLUMN in out.column_names:
        return out
    col = batch.column(DISTILL_COLUMN)
    if not bool(np.all(included)):
        col = col.filter(pa.array(included, pa.bool_()))
    return out.append_column(DISTILL_COLUMN, col)


def _empty_layout(schema: pa.Schema, layout: str, prompt_style: str, engine: str, distill: bool = False) -> pa.Table:
    """A layout's table of no row (its columns, for a split file with no row)."""
    empty = schema.empty_table()
    return _layout(empty, messages_column(empty) if engine == "arrow" else None, layout, prompt_style, engine,
                   distill)[0]


def _export_locked(source: RowSource, out_dir: Path, formats: Sequence[str], kinds: Sequence[str],
                   validation_fraction: float, split_salt: str, prompt_style: str, license_id: str, title: str,
                   card_info: Mapping[str, Any] | None, card_extra: dict | None, extra: dict | None,
                   engine: str, tokens: tuple[ExportTokenizer, int] | None = None,
                   teacher_models_from_rows: bool = False, distill: bool = False,
                   preference: tuple[Any, Any] | None = None) -> dict:
    tmp = _tmp_name(out_dir)
    tmp.mkdir()
    files: dict[tuple[str, str, str], _ExportFile] = {}
    tok_writer: TokensWriter | None = None
    try:
        row_kinds = [k for k in kinds if k in ROW_LAYOUTS]
        tally = _Tally(layouts={k: {s: 0 for s in SPLITS} | ({"no_prompt": 0} if k == "prompt_completion" else {})
                                for k in row_kinds})
        if tokens is not None:
            tok_writer = TokensWriter(tmp, *tokens)

        def status() -> str:
            done = f"{tally.rows:,} rows"
            return done + (f" · {sum(tok_writer.tokens.values()):,} tokens" if tok_writer is not None else "")

        steps = len(source.steps)
        label = f"export ({source.rows:,} rows, {steps} {source.step_name[steps != 1]})"
        with progress_bar(label, steps, status=status) as advance:
            for step in source.steps:
                for batch in step():
                    tally.add(batch)
                    is_val = np.array(validation_mask(batch.column("id").to_pylist(), validation_fraction, split_salt),
                                      bool)
                    messages = messages_column(batch) if engine == "arrow" and row_kinds else None
                    for layout in row_kinds:
                        full, included = _layout(batch, messages, layout, prompt_style, engine, distill)
                        counts = tally.layouts[layout]
                        if "no_prompt" in counts:
                            counts["no_prompt"] += int((~included).sum())
                        val = is_val[included]
                        for split in SPLITS:
                            part = full.filter(pa.array(val if split == "validation" else ~val))
                            counts[split] += part.num_rows
                            if part.num_rows == 0:
                                continue
                            for fmt in formats:
                                key = (layout, split, fmt)
                                if key not in files:
                                    files[key] = _ExportFile(tmp, f"{layout_dir(layout)}{split}.{fmt}", fmt, layout,
                                                             engine)
                                files[key].add(part)
                    if tok_writer is not None:
                        tok_writer.add(batch.column("text"), is_val)
                advance()
        entries: list[FileEntry] = []
        data_files: dict[str, dict[str, str]] = {}
        for layout in row_kinds:
            for split in SPLITS:
                if split == "validation" and tally.layouts[layout][split] == 0:
                    continue  # a split with no row has no file
                for fmt in formats:
                    f = files.pop((layout, split, fmt), None)
                    if f is None:  # no row at all: the file still exists, with the layout's columns
                        f = _ExportFile(tmp, f"{layout_dir(layout)}{split}.{fmt}", fmt, layout, engine)
                        f.add(_empty_layout(source.schema, layout, prompt_style, engine, distill))
                    entries.append(f.close())
                # the Hub card points at the Parquet file when there is one
                fmt = "parquet" if "parquet" in formats else "jsonl"
                data_files.setdefault(layout, {})[split] = f"{layout_dir(layout)}{split}.{fmt}"
        layouts: dict[str, dict] = dict(tally.layouts)
        if preference is not None:  # pairs across rows: dataforge/export_preference.py
            from dataforge.export_preference import write_preference_layout
            pref_entries, layouts["preference"], data_files["preference"] = write_preference_layout(
                tmp, source, preference, formats, prompt_style, render_standard=render_standard,
                open_file=lambda rel, fmt: _ExportFile(tmp, rel, fmt, "preference", engine),
                is_validation=lambda keys: validation_mask(keys, validation_fraction, split_salt))
            entries += pref_entries
        if tok_writer is not None:
            tok_entries, layouts["tokens"] = tok_writer.finish()
            tok_writer = None
            entries += tok_entries
        (tmp / "checksums.sha256").write_text("".join(f"{e.sha256}  {e.name}\n" for e in entries))
        fsync_file(tmp / "checksums.sha256")
        info = dict(card_info or {})
        if teacher_models_from_rows and tally.teacher_models:
            info["teacher_models"] = sorted(tally.teacher_models)
        if card_extra:
            info.update(card_extra)
        info.setdefault("dataforge_version", _version())
        (tmp / "README.md").write_text(_card(title, license_id, tally.rows, tally.kinds, layouts, entries,
                                             data_files, info))
        fsync_file(tmp / "README.md")
        _fsync_tree(tmp)
        manifest = write_manifest(tmp, entries, source.schema, kind="export", counts=tally.kinds,
                                  **{**(extra or {}), "rows": tally.rows, "layouts": layouts,
                                     "validation_fraction": validation_fraction, "split_salt": split_salt,
                                     "license": license_id})
        _swap_into_place(tmp, out_dir)
        return manifest
    except BaseException:
        for f in files.values():
            f.abort()
        if tok_writer is not None:
            tok_writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished folder into place; the previous export is removed only after."""
    old = None
    if out_dir.exists():
        old = _tmp_name(out_dir, old=True)
        out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except BaseException:
        if old is not None:
            old.rename(out_dir)
        raise
    fsync_dir(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _version() -> str:
    from dataforge import __version__

    return __version__


def run_card_info(run: Run, stage: str) -> dict:
    """What the dataset card says about the run: funnel, teacher, config, versions."""
    info: dict[str, Any] = {"run_id": run.run_id, "source_stage": stage}
    try:
        rec = run.load_record()
    except (OSError, ValueError):
        return info
    info["funnel"] = [{"stage": s, "rows_in": st.rows_in, "rows_kept": st.rows_kept, "rows_dropped": st.rows_dropped}
                      for s, st in rec.stages.items() if st.rows_in is not None]
    teacher = (rec.config or {}).get("teacher") or {}
    info["teacher_models"] = [teacher["model"]] if teacher.get("model") else []
    info["teacher"] = {k: v for k, v in (rec.teacher or {}).items()
                       if k in ("requests_sent", "cache_hits", "prompt_tokens", "completion_tokens", "cost_usd")}
    info["versions"] = rec.versions
    from dataforge.config import redact_teacher_url

    info["config"] = redact_teacher_url(rec.config)  # a run.json written before snapshots were redacted
    return info


def export_run(run: Run, stage: str, name: str, formats: Sequence[str], extra: dict | None = None,
               export_cfg: Any = None, *, verify: bool = True,
               lock_timeout: float | None = EXPORT_LOCK_TIMEOUT_S) -> tuple[Path, dict]:
    """Export the committed rows of ``stage`` in ``run`` as ``<run>/export/<name>``.

    ``export_cfg`` (an :class:`~dataforge.config.ExportConfig`) sets layouts, split and
    licence; without it: chat only, no validation split, licence unknown. ``verify`` (on by
    default) checks every shard's size and sha256 against the stage's manifest as it is read
    (:class:`~dataforge.store.ChecksumMismatch` naming the file). On a data root that is not
    local (an object store) the export is made in a local temporary folder and then published
    there (:func:`publish_export`) under a lease on the export folder. The ``tokens`` layout's
    tokenizer (``export_cfg.tokenizer``) is loaded first: a missing or unreadable one fails
    before any row is read."""
    tokenizer = export_tokenizer_of(export_cfg)
    if not run.is_local:
        dest = PurePosixPath(run.export_dir(name))
        with (folder_lock(dest.parent / f".lock-export-{name}", f"export {dest}", run.filesystem, timeout=lock_timeout),
              tempfile.TemporaryDirectory(prefix="dataforge-export-") as tmp):
            local = Path(tmp) / name
            _, manifest = _export_run_to(run, stage, name, formats, local, extra, export_cfg, verify,
                                         tokenizer=tokenizer)
            publish_export(local, run.filesystem, dest)
        return run.export_dir(name), manifest
    return _export_run_to(run, stage, name, formats, run.export_dir(name), extra, export_cfg, verify, lock_timeout,
                          tokenizer=tokenizer)


def export_tokenizer_of(export_cfg: Any) -> ExportTokenizer | None:
    """The loaded tokenizer of an export config whose layouts include ``tokens`` (else None);
    an :class:`ExportError` naming the path when it is missing or unreadable."""
    if export_cfg is None or "tokens" not in export_cfg.kinds:
        return None
    if not export_cfg.tokenizer:
        raise ExportError("the tokens layout needs a tokenizer: export.tokenizer / --tokenizer (a tokenizer.json "
                          "file or a Hugging Face tokenizer folder)")
    return load_export_tokenizer(export_cfg.tokenizer, export_cfg.eos_token)


def publish_export(local_dir: Path, fs: Any, dest: PurePosixPath) -> None:
    """Upload the export in ``local_dir`` to ``dest`` on the pyarrow filesystem ``fs``. Readers
    trust only the manifest, so it is removed first (the old export disappears as a whole), the
    old files are deleted, every new file is written whole, and the new manifest goes last: a
    crash anywhere leaves the complete old export, no export, or the complete new one."""
    import pyarrow.fs as pafs

    from dataforge.store import MANIFEST

    old = fs.get_file_info(pafs.FileSelector(str(dest), allow_not_found=True, recursive=True))
    manifest_key = str(dest / MANIFEST)
    if fs.get_file_info(manifest_key).type == pafs.FileType.File:
        fs.delete_file(manifest_key)
    for info in old:
        if info.type == pafs.FileType.File and info.path != manifest_key:
            fs.delete_file(info.path)
    fs.create_dir(str(dest), recursive=True)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
    for path in [*files, local_dir / MANIFEST]:
        key = dest / path.relative_to(local_dir).as_posix()
        fs.create_dir(str(key.parent), recursive=True)
        with fs.open_output_stream(str(key)) as f:
            f.write(path.read_bytes())


def _export_run_to(run: Run, stage: str, name: str, formats: Sequence[str], out: Path, extra: dict | None,
                   export_cfg: Any, verify: bool = True,
                   lock_timeout: float | None = EXPORT_LOCK_TIMEOUT_S, *,
                   tokenizer: ExportTokenizer | None = None) -> tuple[Path, dict]:
    source = RowSource.of_stage(run, stage, verify)  # the manifest and the shards' schemas; no row yet
    info = run_card_info(run, stage)
    opts: dict[str, Any] = {}
    if export_cfg is not None:
        opts = {"kinds": list(export_cfg.kinds), "validation_fraction": export_cfg.validation_fraction,
                "split_salt": export_cfg.split_salt, "prompt_style": export_cfg.prompt_style,
                "license_id": export_cfg.license, "distill": bool(getattr(export_cfg, "distill", False))}
        if "preference" in export_cfg.kinds:  # pairs also read the rows the run set aside
            from dataforge.export_preference import run_preference_input
            opts.update(preference_input=run_preference_input(run, stage, export_cfg.preference, verify),
                        preference_options=export_cfg.preference)
        if tokenizer is not None:
            opts.update(tokenizer=tokenizer, shard_tokens=export_cfg.shard_tokens)
    manifest = export_rows(source, out, formats, title=f"dataforge export {name} of run {run.run_id}",
                           card_info=info, extra=extra, lock_timeout=lock_timeout, teacher_models_from_rows=True,
                           **opts)
    return out, manifest
