"""Text in, packed token blocks out.

Texts stream from Parquet shards (``ParquetFile.iter_batches`` on one column, so a shard never
has to fit in memory twice), from JSON lines (through :func:`dataforge.tabular.read_text_table`),
from an Arrow table column or from a plain list. They are tokenized a batch at a time by the
Rust encoder and packed into fixed-length blocks: every document is preceded by
``<|endoftext|>``, so the model sees where one ends and the next begins, and the stream is cut
into ``seq_len``-token blocks (the last partial block is dropped and counted).

A ``tokens`` export (:mod:`dataforge.tokens`) is one more source: its ids are already made, so
:func:`pack_tokens` only cuts them into blocks — the same blocks :func:`pack` makes from the
same texts with the same tokenizer (the export appends each document's EOS, packing puts it
before each: the stream is one EOS, then the export's tokens but the last).

Order is deterministic: blocks keep stream order, and training visits them in a permutation
per epoch drawn from ``seed`` and the epoch number (:meth:`PackedTokens.batch`), so the batch
of step ``s`` is a function of ``(seed, s)`` alone — which is what makes resume exact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataforge.slm.tokenizer import encode_batch
from dataforge.tabular import InputError, read_text_table
from dataforge.tokens import META, TokenSplit, read_meta, read_tokens, tokens_folder

def _column_batches(table: pa.Table, column: str, batch_rows: int) -> Iterator[list[str]]:
    if column not in table.column_names:
        raise InputError(f"no column {column!r} (columns: {', '.join(table.column_names)})")
    for b in table.select([column]).to_batches(max_chunksize=batch_rows):
        texts = [t for t in b.column(0).to_pylist() if t]
        if texts:
            yield texts


def iter_text_batches(source, column: str = "text", batch_rows: int = 1024) -> Iterator[list[str]]:
    """Batches of non-empty texts from ``source``: an Arrow table, a path (``str`` or ``Path``),
    a list of ``Path`` (``.parquet`` streamed a row group at a time; ``.jsonl`` via
    read_text_table), or a list of ``str`` — which are texts, not paths."""
    if isinstance(source, pa.Table):
        yield from _column_batches(source, column, batch_rows)
        return
    if isinstance(source, (str, Path)):
        source = [Path(source)]
    items = list(source)
    if not all(isinstance(x, Path) for x in items):
        if not all(isinstance(x, str) for x in items):
            raise TypeError("a text source is a table, a path, a list of Path or a list of str (texts)")
        for i in range(0, len(items), batch_rows):
            texts = [t for t in items[i:i + batch_rows] if t]
            if texts:
                yield texts
        return
    for item in items:
        path = Path(item)
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.suffix.lower() == ".parquet":
            try:
                pf = pq.ParquetFile(path)
            except (pa.ArrowInvalid, OSError) as err:
                raise InputError(f"{path}: not a readable Parquet file: {err}") from None
            if column not in pf.schema_arrow.names:
                raise InputError(f"{path}: no column {column!r} (columns: {', '.join(pf.schema_arrow.names)}); "
                                 f"name the text column with --text-column")
            for b in pf.iter_batches(batch_size=batch_rows, columns=[column]):
                texts = [t for t in b.column(0).to_pylist() if t]
                if texts:
                    yield texts
        else:
            table, _ = read_text_table(path, column, keep_columns=False)
            yield from _column_batches(table, "text", batch_rows)


def tokenize_stream(tokenizer, batches: Iterable[list[str]], eos_id: int,
                    max_tokens: int | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Per text batch: (the batch's tokens with EOS before each document, documents), in bulk;
    stops once ``max_tokens`` tokens have been produced (the last chunk is cut)."""
    produced = 0
    for texts in batches:
        ids = encode_batch(tokenizer, texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        chunk = np.insert(flat, starts, np.int32(eos_id))
        if max_tokens is not None and produced + len(chunk) >= max_tokens:
            chunk = chunk[: max_tokens - produced]
            yield chunk, int(np.count_nonzero(chunk == eos_id))
            return
        produced += len(chunk)
        yield chunk, len(texts)


@dataclass
class PackedTokens:
    """``blocks``: int32 [n_blocks, seq_len]; every training batch is a few of its rows."""

    blocks: np.ndarray
    docs: int
    dropped_tokens: int

    @property
    def seq_len(self) -> int:
        return int(self.blocks.shape[1])

    @property
    def tokens(self) -> int:
        return int(self.blocks.size)

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def fingerprint(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.blocks).tobytes()).hexdigest()[:16]

    def batch_indices(self, index: int, batch_size: int, seed: int) -> np.ndarray:
        """Rows of micro-batch number ``index``: positions ``index*B .. index*B+B-1`` of the
        endless sequence of per-epoch permutations (epoch e uses ``default_rng([seed, e])``)."""
        n = len(self)
        if n == 0:
            raise ValueError("no training blocks: the data has fewer tokens than one sequence")
        pos = np.arange(index * batch_size, (index + 1) * batch_size, dtype=np.int64)
        epochs, offsets = pos // n, pos % n
        out = np.empty(batch_size, dtype=np.int64)
        for e in np.unique(epochs):
            perm = np.random.default_rng([seed, int(e)]).permutation(n)
            sel = epochs == e
            out[sel] = perm[offsets[sel]]
        return out

    def batch(self, index: int, batch_size: int, seed: int) -> np.ndarray:
        return self.blocks[self.batch_indices(index, batch_size, seed)]


def pack(tokenizer, source, seq_len: int, column: str = "text", max_tokens: int | None = None,
         batch_rows: int = 1024) -> PackedTokens:
    """Stream ``source`` (see :func:`iter_text_batches`), tokenize and pack into blocks of
    ``seq_len`` tokens; ``max_tokens`` caps how much of the stream is read (a token budget)."""
    eos = tokenizer.eos_token_id
    chunks, docs = [], 0
    for chunk, n_docs in tokenize_stream(tokenizer, iter_text_batches(source, column, batch_rows), eos, max_tokens):
        chunks.append(chunk)
        docs += n_docs
    stream = np.concatenate(chunks) if chunks else np.empty(0, np.int32)
    n_blocks = len(stream) // seq_len
    blocks = stream[: n_blocks * seq_len].reshape(n_blocks, seq_len)
    return PackedTokens(blocks=blocks, docs=docs, dropped_tokens=int(len(stream) - blocks.size))


def tokens_source(source) -> tuple[Path, str] | None:
    """(tokens folder, split) when ``source`` names a ``tokens`` export, else None: a tokens
    folder or its ``tokens.json`` (the ``train`` split), an export folder holding ``tokens/``,
    or ``<tokens folder>/<split>`` (``export/default/tokens/validation``) — a path that is not a
    file of its own."""
    if isinstance(source, list) and len(source) == 1 and isinstance(source[0], Path):
        source = source[0]
    if not isinstance(source, (str, Path)):
        return None
    p = Path(source)
    if p.is_dir() or p.name == META:
        try:
            return tokens_folder(p), "train"
        except ValueError:
            return None
    if not p.exists() and (p.parent / META).is_file():
        splits = read_meta(p.parent)["splits"]
        if p.name not in splits:
            raise InputError(f"{p}: {p.parent} has no split {p.name!r} (splits: {', '.join(splits)})")
        return p.parent, p.name
    return None


def pack_tokens(split: TokenSplit, seq_len: int, max_tokens: int | None = None) -> PackedTokens:
    """Blocks of ``seq_len`` tokens from a tokens export split (:func:`~dataforge.tokens.read_tokens`):
    the stream :func:`pack` makes of the same texts with the same tokenizer — one EOS, then the
    export's ids but the last (its documents end in EOS, packing starts each with one) — cut
    at ``max_tokens``; only that much is read from the memmaps."""
    n = split.tokens if max_tokens is None else min(split.tokens, max_tokens)
    stream = np.empty(n, np.int32)
    if n:
        stream[0] = split.eos_id
        stream[1:] = split.slice(0, n - 1)
    docs = int(np.searchsorted(split.offsets[:-1], np.uint64(n), side="left"))  # documents begun
    n_blocks = n // seq_len
    blocks = stream[: n_blocks * seq_len].reshape(n_blocks, seq_len)
    return PackedTokens(blocks=blocks, docs=docs, dropped_tokens=int(n - blocks.size))


def open_tokens(source) -> TokenSplit | None:
    """The :class:`~dataforge.tokens.TokenSplit` ``source`` names (:func:`tokens_source`), else None."""
    where = tokens_source(source)
    return read_tokens(*where) if where is not None else None
