"""Distillation signals: the teacher's per-token top-k log-probabilities, kept as a compact column.

With ``teacher.logprobs: k`` generation requests carry ``logprobs: true`` and
``top_logprobs: k``. Two reply shapes are read:

* chat completions (OpenAI, vLLM, llama-cpp-python's server):
  ``choices[0].logprobs.content[i] = {token, logprob, top_logprobs: [{token, logprob}, ...]}``.
  llama-cpp-python's server (0.3.x) lists k alternatives plus the sampled token when it is
  not among them (k + 1 entries), and ``bytes`` is null: we keep the k most likely.
* the legacy completions shape some servers put in chat replies too:
  ``{tokens: [...], token_logprobs: [...], top_logprobs: [{token: logprob, ...}, ...]}``.

Token strings become ids when the teacher's vocabulary is known here: the embedded teacher's
GGUF (read with llama.cpp, ``vocab_only``) or a ``tokenizer.json`` named by ``teacher.tokenizer``.
A token string maps to the id whose bytes decode (strict UTF-8) to it; a piece that is not
valid UTF-8 on its own (a byte fallback, half a character) has no id: -1. The column names
the vocabulary by a fingerprint (sha256 of every id's bytes), which the distillation trainer
compares with the student's.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataforge.errors import DataforgeError

__all__ = [
    "TeacherVocab",
    "TokenLogprobs",
    "f16_bits",
    "f16_values",
    "parse_logprobs",
    "request_params",
    "teacher_vocab",
    "topk_column",
    "vocab_fingerprint",
]


class LogprobsError(DataforgeError, ValueError):
    """A teacher vocabulary that cannot be read, or a reply whose logprobs are unusable."""


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token: its string, log-probability and the top alternatives (best first)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


def request_params(k: int | None) -> dict:
    """The request fields that ask for top-``k`` log-probabilities (none when off)."""
    return {"logprobs": True, "top_logprobs": int(k)} if k else {}


def _num(x: Any) -> float:
    v = float(x)
    return v if math.isfinite(v) else -1e4  # -inf (a token with no mass) as a very small number


def parse_logprobs(choice: dict, k: int | None = None) -> list[TokenLogprobs] | None:
    """The per-token log-probabilities of one reply choice, in either shape; None when the
    choice carries none. Alternatives are de-duplicated, sorted best first and cut to ``k``."""
    lp = choice.get("logprobs") if isinstance(choice, dict) else None
    if not isinstance(lp, dict):
        return None
    out: list[TokenLogprobs] = []
    if isinstance(lp.get("content"), list):
        for e in lp["content"]:
            alts = [(a["token"], _num(a["logprob"])) for a in (e.get("top_logprobs") or [])]
            out.append(TokenLogprobs(e["token"], _num(e["logprob"]), _best(alts, k)))
        return out
    if isinstance(lp.get("tokens"), list):
        tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
        for tok, lpv, top in zip(lp["tokens"], lp.get("token_logprobs") or [], tops):
            alts = [(t, _num(v)) for t, v in (top or {}).items()]
            out.append(TokenLogprobs(tok, _num(lpv) if lpv is not None else 0.0, _best(alts, k)))
        return out
    return None


def _best(alts: list[tuple[str, float]], k: int | None) -> tuple[tuple[str, float], ...]:
    seen: dict[str, float] = {}
    for t, v in alts:
        if t not in seen or v > seen[t]:
            seen[t] = v
    ranked = sorted(seen.items(), key=lambda tv: -tv[1])
    return tuple(ranked[:k] if k else ranked)


# --------------------------------------------------------------------------- vocabularies


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: vocabulary character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _fingerprint(pieces: Sequence[bytes]) -> str:
    h = hashlib.sha256(str(len(pieces)).encode())
    for p in pieces:
        h.update(b"\x00" + p)
    return h.hexdigest()[:32]


class TeacherVocab:
    """A vocabulary as the bytes of each id: maps token strings to ids, encodes text, and
    fingerprints itself. Also the student's tokenizer when student and teacher share one."""

    def __init__(self, pieces: list[bytes], eos_id: int, encoder: Any, source: str) -> None:
        self.pieces = pieces
        self.eos_id = eos_id
        self.eos_token_id = eos_id
        self._encoder = encoder  # text -> ids
        self.source = source
        self.fingerprint = _fingerprint(pieces)
        ids: dict[str, int] = {}
        for i, p in enumerate(pieces):
            try:
                s = p.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if s and s not in ids:
                ids[s] = i
        self._ids = ids

    def __len__(self) -> int:
        return len(self.pieces)

    def id_of(self, token: str) -> int:
        """The id of a token string, -1 when none decodes to it."""
        return self._ids.get(token, -1)

    def encode(self, text: str) -> list[int]:
        return list(self._encoder(text)) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.pieces[i] for i in ids if 0 <= i < len(self.pieces)).decode("utf-8", errors="replace")

    @classmethod
    def from_gguf(cls, path: str | Path) -> TeacherVocab:
        """The vocabulary of a GGUF file, read by llama.cpp without loading the weights."""
        try:
            from llama_cpp import Llama
        except ImportError:
            raise LogprobsError("reading a GGUF vocabulary needs llama-cpp-python (the `local` extra)") from None
        m = Llama(model_path=str(path), vocab_only=True, verbose=False)
        pieces = [m.detokenize([i]) for i in range(m.n_vocab())]
        return cls(pieces, int(m.token_eos()), lambda t: m.tokenize(t.encode("utf-8"), add_bos=False, special=False),
                   f"gguf:{Path(path).name}")

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> TeacherVocab:
        """The vocabulary of a Hugging Face ``tokenizer.json`` (byte-level BPE read byte-exact)."""
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as err:  # noqa: BLE001 - the Rust error types are not exported
            raise LogprobsError(f"teacher.tokenizer: {path} is not a readable tokenizer.json: {err}") from None
        return cls.from_tokenizers(tok, f"tokenizer:{Path(path).name}")

    @classmethod
    def from_tokenizers(cls, tok: Any, source: str) -> TeacherVocab:
        dec = _byte_decoder()
        n = tok.get_vocab_size(with_added_tokens=True)
        special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
        pieces: list[bytes] = []
        for i in range(n):
            s = tok.id_to_token(i)
            if s is None or s in special:
                pieces.append(b"")
            elif all(c in dec for c in s):
                pieces.append(bytes(dec[c] for c in s))
            else:
                pieces.append(tok.decode([i], skip_special_tokens=False).encode("utf-8"))
        eos = next((tok.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>", "</s>") if tok.token_to_id(t) is not None), 0)
        return cls(pieces, int(eos), lambda t: tok.encode(t, add_special_tokens=False).ids, source)


@functools.lru_cache(maxsize=4)
def _load(kind: str, path: str) -> TeacherVocab:
    return TeacherVocab.from_gguf(path) if kind == "gguf" else TeacherVocab.from_tokenizer_json(path)


def teacher_vocab(cfg: Any) -> TeacherVocab | None:
    """The teacher's vocabulary when known here: ``teacher.tokenizer``, else the embedded
    teacher's GGUF (``provider: local``); None otherwise (the column then keeps strings)."""
    if cfg.tokenizer:
        return _load("json", str(Path(cfg.tokenizer).expanduser()))
    if cfg.provider == "local":
        from dataforge.teacher.local import find_gguf

        path = cfg.local.model_path or str(find_gguf())
        return _load("gguf", str(path))
    return None


def vocab_fingerprint(tokenizer: Any) -> str:
    """The fingerprint of a student tokenizer, comparable with a column's ``vocab``: a
    :class:`TeacherVocab`, or a transformers fast tokenizer / ``tokenizers.Tokenizer``."""
    if isinstance(tokenizer, TeacherVocab):
        return tokenizer.fingerprint
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return TeacherVocab.from_tokenizers(backend, "student").fingerprint


def f16_bits(values: Sequence[float]) -> list[int]:
    """Log-probabilities as the uint16 bits of their float16 (the column's storage)."""
    return np.asarray(values, np.float32).astype(np.float16).view(np.uint16).tolist()


def f16_values(bits: Sequence[int]) -> np.ndarray:
    """The float16 view of stored bits: ``np.asarray(bits, np.uint16).view(np.float16)``."""
    return np.asarray(bits, np.uint16).view(np.float16)


def topk_column(entries: Sequence[TokenLogprobs] | None, k: int, vocab: TeacherVocab | None) -> dict | None:
    """The ``teacher_topk`` value of one reply (see :data:`dataforge.records.TOPK_TYPE`)."""
    if entries is None:
        return None
    tokens = [e.token for e in entries]
    col: dict[str, Any] = {"vocab": None, "k": int(k), "tokens": tokens, "ids": None,
                           "logprob_f16": f16_bits([e.logprob for e in entries]), "top_ids": None,
                           "top_tokens": None, "top_logprobs_f16": [f16_bits([v for _, v in e.top]) for e in entries]}
    if vocab is not None:
        col["vocab"] = vocab.fingerprint
        col["ids"] = [vocab.id_of(t) for t in tokens]
        col["top_ids"] = [[vocab.id_of(t) for t, _ in e.top] for e in entries]
    else:
        col["top_tokens"] = [[t for t, _ in e.top] for e in entries]
    return col


def completion_topk(cfg: Any, completion: Any) -> dict | None:
    """The ``teacher_topk`` value of a :class:`~dataforge.teacher.client.Completion` under the
    teacher config ``cfg`` (None when ``logprobs`` is off or the reply carried none)."""
    if not cfg.logprobs or getattr(completion, "logprobs", None) is None:
        return None
    return topk_column(completion.logprobs, cfg.logprobs, teacher_vocab(cfg))
