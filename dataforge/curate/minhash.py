"""Fast MinHash: compiled kernels over Arrow string buffers, banding, candidate pairs, clustering.

This is the fast path of :mod:`dataforge.curate.dedup`; the readable reference is the
datasketch path there (:func:`dataforge.curate.dedup.minhash`), and ``tests/test_dedup.py``
checks that both give bit-identical signatures.

Pipeline, shaped so that each step can later run on its own worker:

1. :func:`signatures` (per shard; releases the GIL, so shards sign in parallel threads): one
   numba pass over the Arrow UTF-8 data buffer and offsets per document does the normalization
   (lowercasing and NFKC per character from tables built from Python's ``unicodedata``;
   Unicode punctuation and whitespace break words; the rare rows holding a character whose
   normalization depends on its neighbours are normalized by Python first, as the reference
   does), word tokenisation, word ``n``-gram shingle hashing (xxh32, seed 0, of the utf-8
   shingle "w1 w2 ... wn") and the datasketch "affine32" permutation minimum. It also returns a
   64-bit hash and the length of the whole normalized text: the key of exact deduplication.
2. :func:`band_keys` / :func:`candidate_pairs` (per band): a band's ``r`` slots fold into one
   uint64 key; rows with equal keys are grouped by a sort (numpy), and pairs inside a group are
   emitted (all pairs in small groups, a sliding window in big ones, see :data:`DEFAULT_WINDOW`).
3. :func:`verify_pairs`: a candidate pair is kept only when its estimated Jaccard (equal slots /
   ``num_perm``) reaches the threshold.
4. :func:`star_clusters` (the default) or :func:`connected_components` (union-find over int
   arrays) turns verified pairs into clusters with one survivor each.

Why xxh32 rather than datasketch's default sha1: SHA-1 of every shingle alone costs more than
the whole budget of 100 MB/s per core (one 64-byte compression per ~6 input bytes). datasketch
takes any 32-bit ``hashfunc``; the reference path passes ``xxhash.xxh32_intdigest`` (C), so the
reference, the benchmark's baseline and this kernel all hash the same way (datasketch then mixes
the hash with the MurmurHash3 finalizer before permuting, as the kernel does).
"""

from __future__ import annotations

import functools
import math
import sys
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

if sys.byteorder != "little":  # _read32 reads utf-8 bytes as little-endian words, as xxh32 specifies
    raise ImportError("dataforge.curate.minhash needs a little-endian machine")


# In a band group with more rows than this, each row is paired only with the DEFAULT_WINDOW rows
# sorted just before it (rows are sorted by the next band's key inside a group, so rows that agree
# on more bands sit together). Small groups give all their pairs. This bounds the pairs of a huge
# group (templated text: thousands of rows sharing a band) at window x rows instead of rows^2/2.
DEFAULT_WINDOW = 64


# --- the permutations and the separator table ---------------------------------------------------

def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``a`` (odd) and ``b`` parameters of datasketch 2.0.0's "affine32" scheme
    (``MinHash._init_permutations``): ``np.random.RandomState(seed)``, then ``a`` and ``b``."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


# Code points at or above this are left as they are and never break words: nothing there is
# punctuation, whitespace, cased, combining or changed by NFKC (planes 3-16: CJK extensions, tags,
# variation selectors, private use; tests/test_dedup.py checks it against unicodedata).
TABLE_LIMIT = 0x30000

IDENTITY, MAPPED, COMPLEX = 0, 1, 2


@functools.cache
def char_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per code point below :data:`TABLE_LIMIT`, what the reference normalization
    (``unicodedata.normalize("NFKC", text).lower()``, then punctuation and whitespace break words)
    does to it, when that does not depend on its neighbours:

    - ``sep``: uint8, 1 for a word break (Unicode punctuation, category P*, or ``str.isspace``);
    - ``kind``: IDENTITY (kept as is), MAPPED (replaced by ``lower(NFKC(ch))``, context-free
      because every resulting character is a starter that composes with nothing before it), or
      COMPLEX (combining marks, characters that compose with a preceding one, Hangul vowel and
      final jamo, capital sigma, whose lowercase depends on the next letter): a row holding one
      is normalized by Python as in the reference;
    - ``repl_off``/``repl``: the replacement code points of MAPPED characters.
    Built from Python's own ``unicodedata`` (so it follows the reference's Unicode version) in
    about 0.2 s, once per process."""
    composes_after: set[int] = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V, T
    for cp in range(TABLE_LIMIT):
        dec = unicodedata.decomposition(chr(cp)) if not 0xD800 <= cp <= 0xDFFF else ""
        if dec and not dec.startswith("<"):
            composes_after.update(int(x, 16) for x in dec.split()[1:])

    def simple(ch: str) -> bool:
        o = ord(ch)
        return (unicodedata.combining(ch) == 0 and o not in composes_after and o < TABLE_LIMIT
                and o != 0x03A3 and not 0xD800 <= o <= 0xDFFF)

    sep = np.zeros(TABLE_LIMIT, dtype=np.uint8)
    kind = np.zeros(TABLE_LIMIT, dtype=np.uint8)
    repl_off = np.zeros(TABLE_LIMIT + 1, dtype=np.int64)
    repl: list[int] = []
    for cp in range(TABLE_LIMIT):
        repl_off[cp] = len(repl)
        if 0xD800 <= cp <= 0xDFFF:
            kind[cp] = COMPLEX
            continue
        ch = chr(cp)
        if ch.isspace() or unicodedata.category(ch)[0] == "P":
            sep[cp] = 1
        if cp < 0x80:
            continue
        if not simple(ch):
            kind[cp] = COMPLEX
            continue
        norm = unicodedata.normalize("NFKC", ch)
        if norm == ch and ch.lower() == ch:
            continue
        lowered = norm.lower()
        if all(simple(c) for c in norm) and "\u03a3" not in norm and all(ord(c) < TABLE_LIMIT for c in lowered):
            kind[cp] = MAPPED
            repl.extend(ord(c) for c in lowered)
        else:
            kind[cp] = COMPLEX
    repl_off[TABLE_LIMIT] = len(repl)
    return sep, kind, repl_off, np.array(repl, dtype=np.int64)


# --- kernels -----------------------------------------------------------------------------------

@njit(inline="always")
def _rotl32(x, r):
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & np.uint64(0xFFFFFFFF)


@intrinsic
def _read32(typingctx, buf, i):
    """``buf[i:i+4]`` as a little-endian uint32 (widened to uint64): one unaligned 32-bit load,
    which LLVM does not make of four byte loads by itself (x86 is little-endian)."""
    sig = types.uint64(buf, types.int64)

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(arr.data, [args[1]]), ir.IntType(32).as_pointer())
        return builder.zext(builder.load(ptr, align=1), ir.IntType(64))
    return sig, codegen


@njit(nogil=True, cache=True)
def xxh32(buf, start, end, seed):
    """xxHash32 of ``buf[start:end]`` (the reference algorithm, Collet), as a uint64 < 2**32."""
    p1 = np.uint64(0x9E3779B1)
    p2 = np.uint64(0x85EBCA77)
    p3 = np.uint64(0xC2B2AE3D)
    p4 = np.uint64(0x27D4EB2F)
    p5 = np.uint64(0x165667B1)
    m = np.uint64(0xFFFFFFFF)
    s = np.uint64(seed) & m
    n = end - start
    i = start
    if n >= 16:
        v1 = (s + p1 + p2) & m
        v2 = (s + p2) & m
        v3 = s
        v4 = (s - p1) & m
        limit = end - 16
        while i <= limit:
            v1 = (_rotl32((v1 + _read32(buf, i) * p2) & m, 13) * p1) & m
            v2 = (_rotl32((v2 + _read32(buf, i + 4) * p2) & m, 13) * p1) & m
            v3 = (_rotl32((v3 + _read32(buf, i + 8) * p2) & m, 13) * p1) & m
            v4 = (_rotl32((v4 + _read32(buf, i + 12) * p2) & m, 13) * p1) & m
            i += 16
        h = (_rotl32(v1, 1) + _rotl32(v2, 7) + _rotl32(v3, 12) + _rotl32(v4, 18)) & m
    else:
        h = (s + p5) & m
    h = (h + np.uint64(n)) & m
    while i + 4 <= end:
        h = (_rotl32((h + _read32(buf, i) * p3) & m, 17) * p4) & m
        i += 4
    while i < end:
        h = (_rotl32((h + np.uint64(buf[i]) * p5) & m, 11) * p1) & m
        i += 1
    h ^= h >> np.uint64(15)
    h = (h * p2) & m
    h ^= h >> np.uint64(13)
    h = (h * p3) & m
    h ^= h >> np.uint64(16)
    return h


@njit(inline="always")
def _fmix32(h):
    """MurmurHash3's 32-bit finalizer: datasketch's pre-mix of every input hash (affine32)."""
    m = np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & m
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & m
    h ^= h >> np.uint64(16)
    return h


@njit(nogil=True, cache=True)
def _sign_kernel(data, offsets, ngram, a, b, ascii_map, sep, kind, repl_off, repl, raw,
                 sig, exact_hash, norm_len, complex_rows):
    """For each document ``data[offsets[d]:offsets[d+1]]`` (utf-8): ``sig[d]`` (uint32 MinHash),
    ``exact_hash[d]``, ``norm_len[d]``; or ``complex_rows[d] = 1`` (and nothing else) when it holds
    a character whose normalization depends on its neighbours (see :func:`char_tables`). With
    ``raw``, the text is taken as already NFKC-normalized and lowercased (by Python) and only
    ASCII is lowercased (a no-op then) and words split."""
    n_docs = offsets.shape[0] - 1
    num_perm = a.shape[0]
    max_len = 0
    for i in range(n_docs):
        ln = offsets[i + 1] - offsets[i]
        if ln > max_len:
            max_len = ln
    # a mapped character can grow (U+FDFA is 18 characters after NFKC): room for 18x
    cap = 18 * max_len + 8
    norm = np.empty(cap, dtype=np.uint8)
    word_start = np.empty(cap // 2 + 2, dtype=np.int64)
    word_end = np.empty(cap // 2 + 2, dtype=np.int64)
    hashes = np.empty(cap // 2 + 2, dtype=np.uint32)
    a32 = a.astype(np.uint32)
    b32 = b.astype(np.uint32)
    maxv = np.uint32(0xFFFFFFFF)
    limit = sep.shape[0]
    m32 = np.uint64(0xFFFFFFFF)
    for d in range(n_docs):
        # 1. normalize: words (lowercased) joined by one space. One code point at a time; a MAPPED
        # character is replaced by its code points (r_pos..r_end in repl).
        pos = offsets[d]
        end = offsets[d + 1]
        out = 0
        n_words = 0
        in_word = False
        is_complex = False
        r_pos = 0
        r_end = 0
        while True:
            if r_pos < r_end:
                cp = repl[r_pos]
                r_pos += 1
                is_sep = sep[cp] != 0
            else:
                # fast path: a run of ASCII bytes (ascii_map: 0 word break, else the lowercased byte)
                while pos < end:
                    c = data[pos]
                    if c >= 0x80:
                        break
                    m = ascii_map[c]
                    if m == 0:
                        if in_word:
                            word_end[n_words] = out
                            n_words += 1
                            in_word = False
                    else:
                        if not in_word:
                            if n_words > 0:
                                norm[out] = 0x20
                                out += 1
                            word_start[n_words] = out
                            in_word = True
                        norm[out] = m
                        out += 1
                    pos += 1
                if pos >= end:
                    break
                c = data[pos]
                if c >= 0xF0 and pos + 3 < end:
                    cp = ((np.int64(c) & 0x07) << 18) | ((np.int64(data[pos + 1]) & 0x3F) << 12) \
                        | ((np.int64(data[pos + 2]) & 0x3F) << 6) | (np.int64(data[pos + 3]) & 0x3F)
                    pos += 4
                elif c >= 0xE0 and pos + 2 < end:
                    cp = ((np.int64(c) & 0x0F) << 12) | ((np.int64(data[pos + 1]) & 0x3F) << 6) \
                        | (np.int64(data[pos + 2]) & 0x3F)
                    pos += 3
                elif c >= 0xC0 and pos + 1 < end:
                    cp = ((np.int64(c) & 0x1F) << 6) | (np.int64(data[pos + 1]) & 0x3F)
                    pos += 2
                else:  # not valid utf-8 (Arrow strings should not hold any): let Python decide
                    is_complex = True
                    break
                if cp >= limit:
                    is_sep = False
                elif raw or kind[cp] == 0:
                    is_sep = sep[cp] != 0
                elif kind[cp] == 1:
                    r_pos = repl_off[cp]
                    r_end = repl_off[cp + 1]
                    continue
                else:
                    is_complex = True
                    break
            if is_sep:
                if in_word:
                    word_end[n_words] = out
                    n_words += 1
                    in_word = False
                continue
            if not in_word:
                if n_words > 0:
                    norm[out] = 0x20
                    out += 1
                word_start[n_words] = out
                in_word = True
            if cp < 0x80:
                norm[out] = cp
                out += 1
            elif cp < 0x800:
                norm[out] = 0xC0 | (cp >> 6)
                norm[out + 1] = 0x80 | (cp & 0x3F)
                out += 2
            elif cp < 0x10000:
                norm[out] = 0xE0 | (cp >> 12)
                norm[out + 1] = 0x80 | ((cp >> 6) & 0x3F)
                norm[out + 2] = 0x80 | (cp & 0x3F)
                out += 3
            else:
                norm[out] = 0xF0 | (cp >> 18)
                norm[out + 1] = 0x80 | ((cp >> 12) & 0x3F)
                norm[out + 2] = 0x80 | ((cp >> 6) & 0x3F)
                norm[out + 3] = 0x80 | (cp & 0x3F)
                out += 4
        if is_complex:
            complex_rows[d] = 1
            continue
        if in_word:
            word_end[n_words] = out
            n_words += 1
        norm_len[d] = out

        # 2. shingle hashes (xxh32, seed 0), pre-mixed with fmix32 as datasketch does; the exact
        # key is a second xxh32 of the whole text and an order-dependent fold of the shingle hashes
        fold = np.uint64(0x811C9DC5)
        if n_words < ngram:
            n_sh = 1
            h = xxh32(norm, 0, out, 0)
            fold = ((fold ^ h) * np.uint64(0x01000193)) & m32
            hashes[0] = np.uint32(_fmix32(h))
        else:
            n_sh = n_words - ngram + 1
            for s in range(n_sh):
                h = xxh32(norm, word_start[s], word_end[s + ngram - 1], 0)
                fold = ((fold ^ h) * np.uint64(0x01000193)) & m32
                hashes[s] = np.uint32(_fmix32(h))
        exact_hash[d] = (xxh32(norm, 0, out, 0x2545F491) << np.uint64(32)) | fold

        # 3. affine permutations a*h + b mod 2**32, minimum over the shingles
        for k in range(num_perm):
            ak = a32[k]
            bk = b32[k]
            mn = maxv
            for s in range(n_sh):
                v = np.uint32(ak * hashes[s] + bk)
                if v < mn:
                    mn = v
            sig[d, k] = mn


# --- Arrow glue --------------------------------------------------------------------------------

def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(utf-8 data as uint8, int64 offsets of the ``len(arr) + 1`` boundaries) of a string array."""
    if pa.types.is_string(arr.type):
        off_type = np.int32
    elif pa.types.is_large_string(arr.type):
        off_type = np.int64
    else:
        raise TypeError(f"expected a string column, got {arr.type}")
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=off_type)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, np.uint8)
    return data, offsets


ASCII_MAP = np.array([0 if chr(c).isspace() or unicodedata.category(chr(c))[0] == "P" else ord(chr(c).lower())
                      for c in range(128)], dtype=np.uint8)  # 0: word break, else the lowercased byte


def _sign_array(arr: pa.Array, num_perm: int, ngram: int, seed: int, raw: bool,
                sig: np.ndarray, exact_hash: np.ndarray, norm_len: np.ndarray) -> np.ndarray:
    """Run the kernel over one string array, writing into the given output slices; returns the
    uint8 mask of rows it left to Python (complex characters)."""
    data, offsets = _buffers(pc.fill_null(arr, ""))
    a, b = permutations(num_perm, seed)
    sep, kind, repl_off, repl = char_tables()
    complex_rows = np.zeros(len(arr), dtype=np.uint8)
    _sign_kernel(data, offsets, ngram, a.astype(np.uint64), b.astype(np.uint64), ASCII_MAP, sep, kind,
                 repl_off, repl, raw, sig, exact_hash, norm_len, complex_rows)
    return complex_rows


def signatures(texts: pa.Array | pa.ChunkedArray, num_perm: int = 128, ngram: int = 5, seed: int = 1,
               out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sig, exact_hash, norm_len)`` for a column of texts: ``sig`` is uint32 ``(n, num_perm)``,
    identical to ``datasketch.MinHash(num_perm, seed, hashfunc=xxh32_intdigest, scheme="affine32")``
    fed :func:`dataforge.curate.dedup.shingles`; ``exact_hash`` (uint64) and ``norm_len`` (int64)
    identify the normalized text for exact deduplication. Nulls count as empty texts.

    Rows whose text holds a character whose normalization depends on its neighbours (combining
    marks, Hangul jamo, capital sigma: rare outside such scripts) are normalized in Python with
    the reference's own ``unicodedata.normalize("NFKC", t).lower()`` and signed in a second pass.
    ``out``: arrays to write into (e.g. a shard's rows of the whole table's arrays)."""
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise TypeError(f"expected a string column of texts, got {texts.type}")
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    n = sum(len(c) for c in chunks)
    if out is None:
        out = (np.empty((n, num_perm), dtype=np.uint32), np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.int64))
    sig, exact_hash, norm_len = out
    if sig.shape != (n, num_perm) or exact_hash.shape != (n,) or norm_len.shape != (n,):
        raise ValueError(f"output arrays do not fit {n} rows x {num_perm} permutations")
    row = 0
    for chunk in chunks:
        k = len(chunk)
        if k == 0:
            continue
        part_out = (sig[row: row + k], exact_hash[row: row + k], norm_len[row: row + k])
        complex_rows = _sign_array(chunk, num_perm, ngram, seed, False, *part_out)
        if complex_rows.any():
            idx = np.flatnonzero(complex_rows)
            texts_py = pc.take(chunk, pa.array(idx)).to_pylist()
            fixed = pa.array([unicodedata.normalize("NFKC", t or "").lower() for t in texts_py], pa.large_string())
            part = (np.empty((len(idx), num_perm), np.uint32), np.empty(len(idx), np.uint64),
                    np.empty(len(idx), np.int64))
            if _sign_array(fixed, num_perm, ngram, seed, True, *part).any():
                raise ValueError("text column holds invalid utf-8")
            for full, sub in zip(part_out, part):
                full[idx] = sub
        row += k
    return sig, exact_hash, norm_len


# --- banding -----------------------------------------------------------------------------------

def _fp_fn(threshold: float, b: int, r: int) -> tuple[float, float]:
    """datasketch's false positive / false negative areas under the S-curve 1-(1-s^r)^b,
    integrated numerically (midpoint rule, fine grid) instead of with scipy."""
    grid = 2000
    lo = (np.arange(grid) + 0.5) / grid * threshold
    hi = threshold + (np.arange(grid) + 0.5) / grid * (1 - threshold)
    fp = float(np.mean(1 - (1 - lo ** r) ** b) * threshold)
    fn = float(np.mean((1 - hi ** r) ** b) * (1 - threshold))
    return fp, fn


@functools.cache
def optimal_bands(threshold: float, num_perm: int, weights: tuple[float, float] = (0.05, 0.95)) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= num_perm`` minimizing ``w_fp * FP + w_fn * FN``, the
    rule of datasketch's ``MinHashLSH._optimal_param``. The default weights favour recall because
    every candidate is verified afterwards (see ``dedup.LSH_WEIGHTS``)."""
    best, best_err = (1, 1), math.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp, fn = _fp_fn(threshold, bands, rows)
            err = weights[0] * fp + weights[1] * fn
            if err < best_err:
                best, best_err = (bands, rows), err
    return best


def band_keys(sig: np.ndarray, band: int, rows: int) -> np.ndarray:
    """One uint64 key per row for band ``band``: its ``rows`` signature slots folded with a
    multiply-xorshift mix. Rows agreeing on the band get the same key; different slots collide with
    probability ~2**-64, and a collision costs only one verification."""
    cols = sig[:, band * rows: (band + 1) * rows].astype(np.uint64)
    key = np.full(sig.shape[0], np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(band), dtype=np.uint64)
    mult = np.uint64(0xFF51AFD7ED558CCD)
    with np.errstate(over="ignore"):
        for j in range(cols.shape[1]):
            key = (key ^ cols[:, j]) * mult
            key ^= key >> np.uint64(29)
    return key


@njit(nogil=True, cache=True)
def _group_pairs(order, sorted_keys, window):
    """Pairs (left, right) of row ids inside runs of equal keys of ``sorted_keys``: every pair of
    a run of at most ``window + 1`` rows, else each row with the ``window`` rows before it."""
    n = sorted_keys.shape[0]
    total = 0
    i = 0
    while i < n:
        j = i + 1
        while j < n and sorted_keys[j] == sorted_keys[i]:
            j += 1
        k = j - i
        if k > 1:
            if k <= window + 1:
                total += k * (k - 1) // 2
            else:
                total += window * (window + 1) // 2 + (k - window - 1) * window
        i = j
    left = np.empty(total, dtype=np.int64)
    right = np.empty(total, dtype=np.int64)
    p = 0
    i = 0
    while i < n:
        j = i + 1
        while j < n and sorted_keys[j] == sorted_keys[i]:
            j += 1
        for x in range(i + 1, j):
            lo = max(i, x - window)
            for y in range(lo, x):
                u = order[x]
                v = order[y]
                if u < v:
                    left[p] = u
                    right[p] = v
                else:
                    left[p] = v
                    right[p] = u
                p += 1
        i = j
    return left, right


def candidate_pairs(sig: np.ndarray, band: int, rows: int, bands: int,
                    window: int = DEFAULT_WINDOW) -> np.ndarray:
    """Candidate pairs of one band as unique int64 codes ``left * n + right`` (``left < right``):
    rows whose band keys are equal, grouped by a sort. Inside a group rows are ordered by the next
    band's key, so that in a group too big for all pairs (more than ``window + 1`` rows) rows that
    also share the next band are neighbours within the window."""
    n = sig.shape[0]
    key = band_keys(sig, band, rows)
    nxt = band_keys(sig, (band + 1) % bands, rows) if bands > 1 else np.zeros(n, np.uint64)
    order = np.lexsort((nxt, key)).astype(np.int64)
    left, right = _group_pairs(order, key[order], window)
    return np.unique(left * n + right)


# --- verification and clustering ---------------------------------------------------------------

@njit(nogil=True, cache=True)
def _equal_slots(sig, left, right):
    out = np.empty(left.shape[0], dtype=np.int64)
    num_perm = sig.shape[1]
    for p in range(left.shape[0]):
        u = left[p]
        v = right[p]
        c = 0
        for k in range(num_perm):
            c += sig[u, k] == sig[v, k]
        out[p] = c
    return out


def estimated_jaccard(sig: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Fraction of equal signature slots of each pair (datasketch's ``MinHash.jaccard``)."""
    if len(left) == 0:
        return np.zeros(0, dtype=np.float64)
    return _equal_slots(sig, left, right).astype(np.float64) / sig.shape[1]


def verify_pairs(sig: np.ndarray, codes: np.ndarray, threshold: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, estimated Jaccard) of the candidate pairs whose estimate reaches ``threshold``."""
    n = sig.shape[0]
    left, right = codes // max(n, 1), codes % max(n, 1)
    est = estimated_jaccard(sig, left, right)
    keep = est >= threshold
    return left[keep], right[keep], est[keep]


@njit(nogil=True, cache=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@njit(nogil=True, cache=True)
def _union_find(n, left, right, rank):
    parent = np.arange(n)
    for p in range(left.shape[0]):
        ru = _find(parent, left[p])
        rv = _find(parent, right[p])
        if ru != rv:  # the better-ranked root wins, so every root is its component's best row
            if rank[ru] < rank[rv]:
                parent[rv] = ru
            else:
                parent[ru] = rv
    for i in range(n):
        parent[i] = _find(parent, i)
    return parent


def connected_components(n: int, left: np.ndarray, right: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each row its component's best row (lowest ``rank``): union-find over the pairs.
    Transitive: A~B and B~C put A and C together even when A and C are far apart."""
    return _union_find(n, left.astype(np.int64), right.astype(np.int64), rank.astype(np.int64))


@njit(nogil=True, cache=True)
def _star(n, indptr, nbr, by_rank):
    survivor = np.full(n, -1, dtype=np.int64)
    for t in range(n):
        u = by_rank[t]
        if survivor[u] != -1:
            continue
        survivor[u] = u
        for e in range(indptr[u], indptr[u + 1]):
            v = nbr[e]
            if survivor[v] == -1:
                survivor[v] = u
    return survivor


def star_clusters(n: int, left: np.ndarray, right: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each row its survivor: rows are visited best rank first; an unclaimed row becomes a
    survivor and claims every unclaimed row it has a verified pair with. So every dropped row is
    itself verified against the survivor it names (no chains: A~B, B~C, A !~ C leaves C apart
    unless C pairs with a survivor), and a template shared by many rows cannot pull them all into
    one cluster through LSH collisions."""
    rank = rank.astype(np.int64)
    by_rank = np.argsort(rank, kind="stable").astype(np.int64)
    u = np.concatenate([left, right]).astype(np.int64)
    v = np.concatenate([right, left]).astype(np.int64)
    order = np.lexsort((rank[v], u))  # each row's neighbours, best first
    nbr = v[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(u, minlength=n), out=indptr[1:])
    return _star(n, indptr, nbr, by_rank)

