"""The ``tokens`` export layout: token ids as flat binary shards a trainer memory-maps, an index
of document boundaries, and a metadata file naming the tokenizer — and its reader.

``<export>/tokens/`` holds, per split (``train``, ``validation``):

==============================  ====================================================================
``<split>-NNNNN.bin``           token ids, flat, little-endian ``uint16`` when the vocabulary has at
                                most 65,536 ids, else ``uint32`` (no header: ``np.memmap`` reads it)
``<split>.idx.npy``             uint64 offsets (a ``.npy`` file, docs + 1 entries): document ``i`` is
                                tokens ``offsets[i]:offsets[i+1]`` of the split's stream
``tokens.json``                 the format, dtype, EOS id, shard size, the tokenizer (path, sha256,
                                fingerprint, vocabulary size) and per split: docs, tokens, shards
``tokenizer/``                  a copy of the tokenizer (``tokenizer.json`` and
                                ``tokenizer_config.json``: ``AutoTokenizer`` loads it)
==============================  ====================================================================

Each document is its text's ids (no special token added by the tokenizer) followed by one EOS
token, as nanoGPT's ``prepare.py`` appends ``eot`` after every document, so the EOS is the last
token of every ``offsets[i]:offsets[i+1]`` span. The split's stream is the concatenation of its
shards in order; every shard but the last holds exactly ``shard_tokens`` tokens (a document may
continue from one shard into the next). Documents are in the order of the rows of the ``text``
layout's file of the same split.

This module only reads (numpy and json; no tokenizer library): :func:`read_tokens` gives a
:class:`TokenSplit` (the memmaps, the offsets, documents by number or in order);
:mod:`dataforge.export` writes the layout.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataforge.errors import DataforgeError

TOKENS_DIR = "tokens"
META = "tokens.json"
FORMAT = "dataforge-tokens"
VERSION = 1
TOKENIZER_COPY = "tokenizer"
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB a shard in uint16, 400 MB in uint32
UINT16_MAX_VOCAB = 65536  # ids 0..65535 fit in uint16
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>")


class TokensError(DataforgeError, ValueError):
    """A tokens export that cannot be read as its metadata says (a missing or short file)."""


def token_dtype(vocab_size: int) -> np.dtype:
    """The ids' dtype: little-endian uint16 when every id fits (``vocab_size <= 65536``), else uint32."""
    return np.dtype("<u2") if vocab_size <= UINT16_MAX_VOCAB else np.dtype("<u4")


def shard_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}.bin"


def index_name(split: str) -> str:
    return f"{split}.idx.npy"


def tokenizer_fingerprint(backend: Any) -> str:
    """What decides the ids of a text under a ``tokenizers.Tokenizer`` (its normalizer,
    pre-tokenizer, model — vocabulary and merges — and added tokens with their ids), hashed:
    the same for a ``tokenizer.json`` loaded with ``tokenizers`` and with ``AutoTokenizer``."""
    data = json.loads(backend.to_str())
    added = sorted((t["id"], t["content"], bool(t.get("special"))) for t in data.get("added_tokens") or [])
    key = {"normalizer": data.get("normalizer"), "pre_tokenizer": data.get("pre_tokenizer"),
           "model": data.get("model"), "added_tokens": added}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


# --- reading -------------------------------------------------------------------------------

def tokens_folder(path: str | Path) -> Path:
    """The tokens folder of ``path``: the folder itself (it has ``tokens.json``), or an export
    folder's ``tokens/``."""
    p = Path(path)
    if p.is_file() and p.name == META:
        return p.parent
    if (p / META).is_file():
        return p
    if (p / TOKENS_DIR / META).is_file():
        return p / TOKENS_DIR
    raise TokensError(f"{p}: not a tokens export (no {META} in it or in {TOKENS_DIR}/); "
                      "export one with `dataforge export --kinds tokens --tokenizer PATH`")


def read_meta(path: str | Path) -> dict:
    """``tokens.json`` of the tokens folder at (or in the export folder at) ``path``."""
    folder = tokens_folder(path)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError) as err:
        raise TokensError(f"{folder / META}: not readable as JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("splits"), dict):
        raise TokensError(f"{folder / META}: not a {FORMAT} metadata file")
    if meta.get("version") != VERSION:
        raise TokensError(f"{folder / META}: format version {meta.get('version')!r}; this dataforge reads {VERSION}")
    return meta


@dataclass
class TokenSplit:
    """One split of a tokens export. ``shards`` are read-only memmaps of the ``.bin`` files in
    order (their concatenation is the split's stream), ``offsets`` the uint64 index (docs + 1
    entries, a memmap of the ``.npy``); ``eos_id`` ends every document."""

    folder: Path
    split: str
    meta: dict
    shards: list[np.memmap]
    offsets: np.ndarray

    @property
    def dtype(self) -> np.dtype:
        return token_dtype(int(self.meta["vocab_size"]))

    @property
    def eos_id(self) -> int:
        return int(self.meta["eos_id"])

    @property
    def docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.docs

    def _starts(self) -> np.ndarray:
        lengths = np.array([len(s) for s in self.shards], np.int64)
        return np.concatenate([[0], np.cumsum(lengths)])

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``start:stop`` of the split's stream (a view within one shard, else a copy)."""
        start, stop = max(0, int(start)), min(self.tokens, int(stop))
        if stop <= start:
            return np.empty(0, self.dtype)
        bounds = self._starts()
        first = int(np.searchsorted(bounds, start, side="right")) - 1
        last = int(np.searchsorted(bounds, stop, side="left")) - 1
        if first == last:
            return self.shards[first][start - bounds[first]: stop - bounds[first]]
        pieces = [self.shards[k][max(start, bounds[k]) - bounds[k]: min(stop, bounds[k + 1]) - bounds[k]]
                  for k in range(first, last + 1)]
        return np.concatenate(pieces)

    def document(self, i: int, eos: bool = True) -> np.ndarray:
        """The ids of document ``i`` (with its trailing EOS unless ``eos=False``)."""
        if not 0 <= i < self.docs:
            raise IndexError(f"document {i} of {self.docs}")
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.slice(lo, hi if eos else hi - 1)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.iter_documents()

    def iter_documents(self, eos: bool = False) -> Iterator[np.ndarray]:
        """Every document in order, without its trailing EOS unless ``eos=True``."""
        for i in range(self.docs):
            yield self.document(i, eos)


def read_tokens(path: str | Path, split: str = "train") -> TokenSplit:
    """Open ``split`` of the tokens export at ``path`` (the tokens folder or its export folder):
    memmaps of its shards and its offsets, each checked against ``tokens.json`` (size, counts)."""
    folder = tokens_folder(path)
    meta = read_meta(folder)
    info = meta["splits"].get(split)
    if info is None:
        raise TokensError(f"{folder}: no split {split!r} (splits: {', '.join(meta['splits']) or 'none'})")
    dtype = token_dtype(int(meta["vocab_size"]))
    shards = []
    for s in info["shards"]:
        p = folder / s["file"]
        want = int(s["tokens"]) * dtype.itemsize
        if not p.is_file() or p.stat().st_size != want:
            have = p.stat().st_size if p.is_file() else "no file"
            raise TokensError(f"{p}: expected {want} bytes ({s['tokens']} {dtype.name} tokens), found {have}")
        shards.append(np.memmap(p, dtype=dtype, mode="r"))
    idx = folder / info["index"]
    try:
        offsets = np.load(idx, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise TokensError(f"{idx}: not a readable .npy index: {err}") from None
    total = sum(int(s["tokens"]) for s in info["shards"])
    if (offsets.dtype != np.dtype("<u8") or offsets.ndim != 1 or len(offsets) != int(info["docs"]) + 1
            or int(offsets[0]) != 0 or int(offsets[-1]) != total or int(info["tokens"]) != total):
        raise TokensError(f"{idx}: not the index of {info['docs']} documents and {total} tokens "
                          f"(uint64 offsets from 0 to the token count)")
    return TokenSplit(folder=folder, split=split, meta=meta, shards=shards, offsets=offsets)
