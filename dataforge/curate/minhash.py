"""Fast MinHash: compiled kernels over Arrow string buffers, banding, candidate pairs, clustering.

This is the fast path of :mod:`dataforge.curate.dedup`; the readable reference is the
datasketch path there (:func:`dataforge.curate.dedup.minhash`), and ``tests/test_dedup.py``
checks that both give bit-identical signatures.

Pipeline, shaped so that each step can later run on its own worker:

1. :func:`signatures` (per shard; releases the GIL, so shards sign in parallel threads): a numba
   kernel over the Arrow UTF-8 data buffer and offsets, in batches of documents, in three steps.
   (a) :func:`_normalize`: lowercasing and NFKC per character from tables built from Python's
   ``unicodedata`` (Unicode punctuation and whitespace break words; the rare rows holding a
   character whose normalization depends on its neighbours are normalized by Python first, as
   the reference does) and word boundaries, with a branch-free loop over ASCII bytes.
   (b) :func:`_hash_lanes`: the word ``n``-gram shingles (the utf-8 shingle "w1 w2 ... wn") are
   binned by byte length and each bin is hashed with xxh32 (seed 0) lane-parallel, 16 shingles
   per AVX-512 instruction: every shingle of a bin takes the same steps, so a step is one loop
   over the bin, which LLVM vectorises. (c) per document, the datasketch "affine32" minimum of
   ``a * fmix32(h) + b mod 2**32`` over its shingle hashes, eight permutations per pass over the
   hashes. It also returns a 64-bit hash and the length of the whole normalized text: the key
   of exact deduplication. :func:`xxh32` (scalar) is the reference the lanes are tested against.
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

@functools.lru_cache(maxsize=32)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``a`` (odd) and ``b`` parameters of datasketch 2.0.0's "affine32" scheme
    (``MinHash._init_permutations``): ``np.random.RandomState(seed)``, then ``a`` and ``b``.
    Computed once per ``(num_perm, seed)``; the arrays are read-only."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    a.flags.writeable = False
    b.flags.writeable = False
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


_P1 = np.uint32(0x9E3779B1)
_P2 = np.uint32(0x85EBCA77)
_P3 = np.uint32(0xC2B2AE3D)
_P4 = np.uint32(0x27D4EB2F)
_P5 = np.uint32(0x165667B1)

# The signing kernel's batches and bins. Shingles up to LANE_MAX_LEN bytes go into one bin per
# length and are hashed LANES at a time (_hash_lanes); longer ones (rare: 5 words of 50+ bytes)
# one by one with xxh32. A batch is about BATCH_BYTES of normalized text (its shingles' hashes
# and the bins stay in the L2 cache), at most BATCH_DOCS documents (empty texts take no bytes).
LANE_MAX_LEN = 255
LANES = 256
BATCH_BYTES = 1 << 16
BATCH_DOCS = 1024
EXACT_SEED = 0x2545F491  # seed of the whole-text xxh32 in the exact key


@njit(inline="always")
def _rotl(x, r):
    """32-bit rotate left of a uint32 (LLVM turns it into one rotate instruction)."""
    return np.uint32((x << np.uint32(r)) | (x >> np.uint32(32 - r)))


@njit(inline="always")
def _mix32(x):
    """MurmurHash3's 32-bit finalizer on a uint32 (datasketch's pre-mix, affine32)."""
    x = np.uint32(x ^ (x >> np.uint32(16)))
    x = np.uint32(x * np.uint32(0x85EBCA6B))
    x = np.uint32(x ^ (x >> np.uint32(13)))
    x = np.uint32(x * np.uint32(0xC2B2AE35))
    return np.uint32(x ^ (x >> np.uint32(16)))


@njit(nogil=True, cache=True)
def _normalize(data, pos, end, ascii_tab, sep, kind, repl_off, repl, raw, norm, out, word_start):
    """Normalize ``data[pos:end]`` (utf-8) into ``norm[out:]``: words (lowercased, NFKC) each
    followed by one space, the last one's space dropped. Returns ``(end of the text in norm,
    number of words)``, word ``i`` starting at ``word_start[i]``; ``(out, -1)`` when the text
    holds a character whose normalization depends on its neighbours (see :func:`char_tables`).

    ASCII (almost all bytes) goes through a loop without data-dependent branches: every byte is
    written (``ascii_tab`` maps a word break to a space), and the output position moves on
    after a word byte or the first break after a word."""
    n_words = 0
    in_word = 0
    limit = sep.shape[0]
    r_pos = 0
    r_end = 0
    while True:
        if r_pos < r_end:
            cp = repl[r_pos]
            r_pos += 1
            is_sep = sep[cp] != 0
        else:
            # unsigned indices: numba then emits no negative-index wraparound
            u_pos = np.uint64(pos)
            u_end = np.uint64(end)
            u_out = np.uint64(out)
            u_words = np.uint64(n_words)
            u_in = np.uint64(in_word)
            one = np.uint64(1)
            while u_pos < u_end:
                c = data[u_pos]
                if c >= 0x80:
                    break
                m = ascii_tab[c]
                w = np.uint64(m != 0x20)
                norm[u_out] = m
                word_start[u_words] = np.int64(u_out)
                u_words += w & (u_in ^ one)
                u_out += w | u_in
                u_in = w
                u_pos += one
            pos = np.int64(u_pos)
            out = np.int64(u_out)
            n_words = np.int64(u_words)
            in_word = np.int64(u_in)
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
                return out, -1
            if cp >= limit:
                is_sep = False
            elif raw or kind[cp] == IDENTITY:
                is_sep = sep[cp] != 0
            elif kind[cp] == MAPPED:
                r_pos = repl_off[cp]
                r_end = repl_off[cp + 1]
                continue
            else:
                return out, -1
        if is_sep:
            if in_word:
                norm[out] = 0x20
                out += 1
                in_word = 0
            continue
        if not in_word:
            word_start[n_words] = out
            n_words += 1
            in_word = 1
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
    if n_words > 0 and not in_word:
        out -= 1  # the space after the last word
    return out, n_words


@njit(nogil=True, cache=True)
def _hash_lanes(norm, n, starts, slots, k, hashes, words, h, v1, v2, v3, v4):
    """``hashes[slots[j]] = xxh32(norm[starts[j]:starts[j] + n], seed 0)`` for ``j < k``: the
    algorithm of :func:`xxh32` run on ``k`` shingles of the same length ``n`` at once, so all take
    the same steps. Their bytes are first copied into ``words`` transposed (row ``w``: 4-byte word
    ``w`` of every shingle; then the tail bytes); each step of xxHash32 is then a loop along a row,
    which LLVM compiles to SIMD instructions (16 shingles per instruction with AVX-512). Loops run
    over whole vectors (``kp`` lanes, the extra ones hold stale values and are not used)."""
    kp = (k + 63) // 64 * 64  # the vector loop does 64 lanes per iteration: no scalar remainder
    n_words = n // 4
    n_bytes = n % 4
    for w in range(n_words):
        row = words[w]
        for j in range(k):
            row[j] = np.uint32(_read32(norm, starts[j] + 4 * w))
    for t in range(n_bytes):
        row = words[n_words + t]
        for j in range(k):
            row[j] = norm[np.uint64(starts[j] + 4 * n_words + t)]
    w = 0
    if n >= 16:
        for j in range(kp):
            v1[j] = _P1 + _P2
            v2[j] = _P2
            v3[j] = 0
            v4[j] = np.uint32(0) - _P1
        while 4 * w + 16 <= n:
            x1 = words[w]
            x2 = words[w + 1]
            x3 = words[w + 2]
            x4 = words[w + 3]
            for j in range(kp):
                v1[j] = np.uint32(_rotl(np.uint32(v1[j] + x1[j] * _P2), 13) * _P1)
                v2[j] = np.uint32(_rotl(np.uint32(v2[j] + x2[j] * _P2), 13) * _P1)
                v3[j] = np.uint32(_rotl(np.uint32(v3[j] + x3[j] * _P2), 13) * _P1)
                v4[j] = np.uint32(_rotl(np.uint32(v4[j] + x4[j] * _P2), 13) * _P1)
            w += 4
        for j in range(kp):
            h[j] = np.uint32(_rotl(v1[j], 1) + _rotl(v2[j], 7) + _rotl(v3[j], 12) + _rotl(v4[j], 18) + np.uint32(n))
    else:
        for j in range(kp):
            h[j] = np.uint32(_P5 + np.uint32(n))
    while w < n_words:
        x1 = words[w]
        for j in range(kp):
            h[j] = np.uint32(_rotl(np.uint32(h[j] + x1[j] * _P3), 17) * _P4)
        w += 1
    for t in range(n_bytes):
        x1 = words[n_words + t]
        for j in range(kp):
            h[j] = np.uint32(_rotl(np.uint32(h[j] + x1[j] * _P5), 11) * _P1)
    for j in range(kp):
        x = h[j]
        x = np.uint32(x ^ (x >> np.uint32(15)))
        x = np.uint32(x * _P2)
        x = np.uint32(x ^ (x >> np.uint32(13)))
        x = np.uint32(x * _P3)
        h[j] = np.uint32(x ^ (x >> np.uint32(16)))
    for j in range(k):
        hashes[slots[j]] = h[j]


@njit(nogil=True, cache=True)
def _sign_kernel(data, offsets, ngram, a, b, ascii_tab, sep, kind, repl_off, repl, raw,
                 sig, exact_hash, norm_len, complex_rows):
    """For each document ``data[offsets[d]:offsets[d+1]]`` (utf-8): ``sig[d]`` (uint32 MinHash),
    ``exact_hash[d]``, ``norm_len[d]``; or ``complex_rows[d] = 1`` (and nothing else) when it holds
    a character whose normalization depends on its neighbours (see :func:`char_tables`). With
    ``raw``, the text is taken as already NFKC-normalized and lowercased (by Python) and only
    ASCII is lowercased (a no-op then) and words split.

    Documents go in batches of about :data:`BATCH_BYTES` normalized bytes:

    1. each document is normalized (:func:`_normalize`) into one buffer, and its shingles are
       put in bins by length (a shingle of more than :data:`LANE_MAX_LEN` bytes is hashed at
       once with :func:`xxh32`); a full bin is hashed (:func:`_hash_lanes`) and emptied;
    2. at the end of the batch the remaining bins are hashed;
    3. per document: the exact key (a second xxh32 of the whole normalized text and an
       order-dependent fold of the shingle hashes) and, for each permutation, the minimum of
       ``a * fmix32(h) + b mod 2**32`` over its shingle hashes ``h``."""
    n_docs = offsets.shape[0] - 1
    num_perm = a.shape[0]
    max_len = 0
    for i in range(n_docs):
        ln = offsets[i + 1] - offsets[i]
        if ln > max_len:
            max_len = ln
    # a mapped character can grow (U+FDFA is 18 characters after NFKC): room for 18x
    doc_cap = 18 * max_len + 8
    norm = np.empty(BATCH_BYTES + doc_cap, dtype=np.uint8)
    word_start = np.empty(doc_cap // 2 + 2, dtype=np.int64)
    hashes = np.empty((BATCH_BYTES + doc_cap) // 2 + 2 * BATCH_DOCS + 2, dtype=np.uint32)
    batch_doc = np.empty(BATCH_DOCS, dtype=np.int64)
    batch_sh = np.empty(BATCH_DOCS + 1, dtype=np.int64)
    mixed = np.empty(doc_cap // 2 + 2 + 64, dtype=np.uint32)
    bin_fill = np.zeros(LANE_MAX_LEN + 1, dtype=np.int64)
    bin_start = np.empty((LANE_MAX_LEN + 1, LANES), dtype=np.int64)  # where each shingle starts in norm
    bin_slot = np.empty((LANE_MAX_LEN + 1, LANES), dtype=np.int64)  # its index in hashes
    words = np.empty((LANE_MAX_LEN // 4 + 4, LANES), dtype=np.uint32)
    h = np.empty(LANES, dtype=np.uint32)
    v1 = np.empty(LANES, dtype=np.uint32)
    v2 = np.empty(LANES, dtype=np.uint32)
    v3 = np.empty(LANES, dtype=np.uint32)
    v4 = np.empty(LANES, dtype=np.uint32)
    a32 = a.astype(np.uint32)  # a no-op for the uint32 arrays of permutations()
    b32 = b.astype(np.uint32)
    d = 0
    while d < n_docs:
        # 1. normalize a batch of documents; bin (or hash) their shingles
        out = 0
        n_sh = 0
        nb = 0
        batch_sh[0] = 0
        while d < n_docs and nb < BATCH_DOCS and out < BATCH_BYTES:
            start = np.int64(out)  # np.int64(): one compiled _normalize, not one for a literal 0 too
            out, n_words = _normalize(data, offsets[d], offsets[d + 1], ascii_tab, sep, kind, repl_off, repl,
                                      raw, norm, start, word_start)
            if n_words < 0:
                complex_rows[d] = 1
                out = start
                d += 1
                continue
            norm_len[d] = out - start
            exact_hash[d] = np.uint64(xxh32(norm, start, out, np.int64(EXACT_SEED))) << np.uint64(32)
            # shingle s spans words s .. s + span - 1: from word_start[s] to word_start[s + span] - 1
            if n_words < ngram:  # fewer words than n: one shingle, the whole text
                word_start[0] = start
                word_start[1] = out + 1
                span = 1
                k = 1
            else:
                word_start[n_words] = out + 1  # as if one more word followed
                span = ngram
                k = n_words - ngram + 1
            for s in range(k):
                st = word_start[s]
                n = np.uint64(word_start[s + span] - 1 - st)
                if n > LANE_MAX_LEN:
                    hashes[n_sh + s] = np.uint32(xxh32(norm, st, st + np.int64(n), np.int64(0)))
                    continue
                f = np.uint64(bin_fill[n])
                bin_start[n, f] = st
                bin_slot[n, f] = n_sh + s
                if f + np.uint64(1) == LANES:
                    _hash_lanes(norm, np.int64(n), bin_start[n], bin_slot[n], np.int64(LANES), hashes,
                                words, h, v1, v2, v3, v4)
                    bin_fill[n] = 0
                else:
                    bin_fill[n] = f + np.uint64(1)
            n_sh += k
            batch_doc[nb] = d
            nb += 1
            batch_sh[nb] = n_sh
            d += 1
        # 2. the shingles left in the bins
        for n in range(LANE_MAX_LEN + 1):
            if bin_fill[n] > 0:
                _hash_lanes(norm, np.int64(n), bin_start[n], bin_slot[n], bin_fill[n], hashes, words, h, v1, v2, v3, v4)
                bin_fill[n] = 0
        # 3. per document: the exact key, then the affine permutations' minima
        for i in range(nb):
            dd = batch_doc[i]
            s0 = batch_sh[i]
            k = batch_sh[i + 1] - s0
            fold = np.uint32(0x811C9DC5)
            for s in range(k):
                fold = np.uint32((fold ^ hashes[s0 + s]) * np.uint32(0x01000193))
            exact_hash[dd] |= np.uint64(fold)
            for s in range(k):
                mixed[s] = _mix32(hashes[s0 + s])
            # pad with copies of the first hash (the minimum does not change) to whole vectors of
            # 16 lanes, so that no scalar remainder loop runs
            padded = (k + 15) // 16 * 16
            for s in range(k, padded):
                mixed[s] = mixed[0]
            # eight permutations per pass over the hashes: one load feeds eight multiplications,
            # and the eight minima (and a, b) stay in vector registers
            p = 0
            while p + 8 <= num_perm:
                a0, a1, a2, a3, a4, a5, a6, a7 = a32[p], a32[p + 1], a32[p + 2], a32[p + 3], \
                    a32[p + 4], a32[p + 5], a32[p + 6], a32[p + 7]
                b0, b1, b2, b3, b4, b5, b6, b7 = b32[p], b32[p + 1], b32[p + 2], b32[p + 3], \
                    b32[p + 4], b32[p + 5], b32[p + 6], b32[p + 7]
                m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = np.uint32(0xFFFFFFFF)
                for s in range(padded):
                    x = mixed[s]
                    m0 = min(m0, np.uint32(a0 * x + b0))
                    m1 = min(m1, np.uint32(a1 * x + b1))
                    m2 = min(m2, np.uint32(a2 * x + b2))
                    m3 = min(m3, np.uint32(a3 * x + b3))
                    m4 = min(m4, np.uint32(a4 * x + b4))
                    m5 = min(m5, np.uint32(a5 * x + b5))
                    m6 = min(m6, np.uint32(a6 * x + b6))
                    m7 = min(m7, np.uint32(a7 * x + b7))
                sig[dd, p] = m0
                sig[dd, p + 1] = m1
                sig[dd, p + 2] = m2
                sig[dd, p + 3] = m3
                sig[dd, p + 4] = m4
                sig[dd, p + 5] = m5
                sig[dd, p + 6] = m6
                sig[dd, p + 7] = m7
                p += 8
            while p < num_perm:
                a0 = a32[p]
                b0 = b32[p]
                m0 = np.uint32(0xFFFFFFFF)
                for s in range(padded):
                    m0 = min(m0, np.uint32(a0 * mixed[s] + b0))
                sig[dd, p] = m0
                p += 1


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


ASCII_MAP = np.array([0x20 if chr(c).isspace() or unicodedata.category(chr(c))[0] == "P" else ord(chr(c).lower())
                      for c in range(128)], dtype=np.uint8)  # a space for a word break, else the lowercased byte


def _sign_array(arr: pa.Array, num_perm: int, ngram: int, seed: int, raw: bool,
                sig: np.ndarray, exact_hash: np.ndarray, norm_len: np.ndarray) -> np.ndarray:
    """Run the kernel over one string array, writing into the given output slices; returns the
    uint8 mask of rows it left to Python (complex characters)."""
    data, offsets = _buffers(pc.fill_null(arr, ""))
    a, b = permutations(num_perm, seed)
    sep, kind, repl_off, repl = char_tables()
    complex_rows = np.zeros(len(arr), dtype=np.uint8)
    _sign_kernel(data, offsets, ngram, a, b, ASCII_MAP, sep, kind,
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


@njit(inline="always")
def _band_key(sig, i, c0, c1, band):
    key = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(band)
    for c in range(c0, c1):
        key = (key ^ np.uint64(sig[i, c])) * np.uint64(0xFF51AFD7ED558CCD)
        key ^= key >> np.uint64(29)
    return key


@njit(nogil=True, cache=True)
def _band_keys(sig, idx, band, rows):
    """The band keys of the rows ``idx`` of ``sig``."""
    c0 = min(band * rows, sig.shape[1])
    c1 = min(c0 + rows, sig.shape[1])
    out = np.empty(idx.shape[0], dtype=np.uint64)
    for i in range(idx.shape[0]):
        out[i] = _band_key(sig, idx[i], c0, c1, band)
    return out


def _subset_rows(sig: np.ndarray, subset: np.ndarray | None) -> np.ndarray:
    return np.arange(sig.shape[0], dtype=np.int64) if subset is None else np.asarray(subset, dtype=np.int64)


def unique_codes(codes: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an int64 array: ``np.unique`` by a sort. (numpy 2.4's
    ``np.unique`` goes through a hash table, 20x slower on millions of distinct pair codes, as
    the candidates of templated text give.)"""
    s = np.sort(codes)
    if len(s) < 2:
        return s
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def maybe_shared(keys: np.ndarray) -> np.ndarray:
    """The rows (ascending int64 positions) whose uint64 key may occur more than once among
    ``keys``: every row whose key another row shares, plus about 1/8 of the others. One pass
    sets a bitmap of ~8 bits per row indexed by the key's top bits (the keys must be well-mixed
    hashes), a second marks the bits set twice; so a sort or grouping afterwards only needs these
    rows, usually a small part of the whole."""
    return _maybe_shared(np.ascontiguousarray(keys).astype(np.uint64, copy=False))


def band_keys(sig: np.ndarray, band: int, rows: int) -> np.ndarray:
    """One uint64 key per row for band ``band``: its ``rows`` signature slots folded with a
    multiply-xorshift mix (``key = (key ^ slot) * 0xFF51AFD7ED558CCD; key ^= key >> 29`` from
    ``0x9E3779B97F4A7C15 ^ band``). Rows agreeing on the band get the same key; different slots
    collide with probability ~2**-64, and a collision costs only one verification."""
    return _band_keys(sig, _subset_rows(sig, None), band, rows)


@njit(nogil=True, cache=True)
def _maybe_shared(key):
    n = key.shape[0]
    bits = 6
    while (1 << bits) < 8 * n:
        bits += 1
    shift = np.uint64(64 - bits)
    seen = np.zeros((1 << bits) >> 6, dtype=np.uint64)
    twice = np.zeros((1 << bits) >> 6, dtype=np.uint64)
    for i in range(n):
        h = key[i] >> shift
        w = h >> np.uint64(6)
        bit = np.uint64(1) << (h & np.uint64(63))
        twice[w] |= seen[w] & bit
        seen[w] |= bit
    m = 0
    for i in range(n):
        h = key[i] >> shift
        m += (twice[h >> np.uint64(6)] >> (h & np.uint64(63))) & np.uint64(1)
    out = np.empty(m, dtype=np.int64)
    m = 0
    for i in range(n):
        h = key[i] >> shift
        if (twice[h >> np.uint64(6)] >> (h & np.uint64(63))) & np.uint64(1):
            out[m] = i
            m += 1
    return out


@njit(nogil=True, cache=True)
def _group_pair_codes(order, sorted_keys, n_rows, window):
    """Pair codes ``left * n_rows + right`` (``left < right``) of every pair inside each run of
    at most ``window + 1`` equal keys of ``sorted_keys`` (``order``: the rows in that order), and
    the ``[start, end)`` of the bigger runs, left to :func:`candidate_pairs`."""
    n = sorted_keys.shape[0]
    total = 0
    n_big = 0
    i = 0
    while i < n:
        j = i + 1
        while j < n and sorted_keys[j] == sorted_keys[i]:
            j += 1
        k = j - i
        if k > window + 1:
            n_big += 1
        elif k > 1:
            total += k * (k - 1) // 2
        i = j
    codes = np.empty(total, dtype=np.int64)
    big = np.empty((n_big, 2), dtype=np.int64)
    p = 0
    g = 0
    i = 0
    while i < n:
        j = i + 1
        while j < n and sorted_keys[j] == sorted_keys[i]:
            j += 1
        if j - i > window + 1:
            big[g, 0] = i
            big[g, 1] = j
            g += 1
        else:
            for x in range(i + 1, j):
                for y in range(i, x):
                    u = order[x]
                    v = order[y]
                    codes[p] = min(u, v) * n_rows + max(u, v)
                    p += 1
        i = j
    return codes, big


def candidate_pairs(sig: np.ndarray, band: int, rows: int, bands: int,
                    window: int = DEFAULT_WINDOW, subset: np.ndarray | None = None) -> np.ndarray:
    """Candidate pairs of one band as unique int64 codes ``left * n + right`` (``left < right``):
    rows whose band keys are equal, grouped by a sort. In a group too big for all pairs (more than
    ``window + 1`` rows) rows are ordered by the next band's key (then by row), so that rows that
    also share the next band are neighbours within the window; each pairs with the ``window`` rows
    before it (the rule of ``numpy.lexsort((next_key, key))`` and a sliding window).
    ``subset``: only these rows of ``sig`` (the codes then number their positions in it), the
    same as passing ``sig[subset]`` without copying it."""
    idx = _subset_rows(sig, subset)
    n = len(idx)
    key = _band_keys(sig, idx, band, rows)
    maybe = _maybe_shared(key)  # most keys are unique: sort only the rows whose key may not be (maybe_shared)
    order = maybe[np.argsort(key[maybe])]  # any order inside a group: small groups give all pairs
    codes, big = _group_pair_codes(order, key[order], n, window)
    parts = [codes]
    for start, end in big.tolist():  # templated text: a big group, in the order of the next band's key
        members = np.sort(order[start:end])
        if bands > 1:
            members = members[np.argsort(_band_keys(sig, idx[members], (band + 1) % bands, rows), kind="stable")]
        for d in range(1, window + 1):
            u, v = members[d:], members[:-d]
            parts.append(np.minimum(u, v) * n + np.maximum(u, v))
    return unique_codes(np.concatenate(parts))


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


def verify_pairs(sig: np.ndarray, codes: np.ndarray, threshold: float, subset: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, estimated Jaccard) of the candidate pairs whose estimate reaches ``threshold``.
    ``subset``: the codes number positions in these rows of ``sig`` (as :func:`candidate_pairs`
    with the same ``subset`` gives them), and so do ``left`` and ``right``."""
    idx = _subset_rows(sig, subset)
    n = len(idx)
    left, right = codes // max(n, 1), codes % max(n, 1)
    est = estimated_jaccard(sig, idx[left], idx[right]) if subset is not None else estimated_jaccard(sig, left, right)
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


def _stable_order(rank: np.ndarray) -> np.ndarray:
    """``np.argsort(rank, kind="stable")``, without a sort when the ranks are distinct integers
    below ``4 * n`` (as ``dedup.survivor_rank`` gives, or a subset of them): a scatter into a
    table indexed by rank, then its filled slots in order."""
    n = len(rank)
    if n and 0 <= rank.min() and rank.max() < 4 * n:
        slot = np.full(int(rank.max()) + 1, -1, dtype=np.int64)
        slot[rank] = np.arange(n, dtype=np.int64)
        order = slot[slot >= 0]
        if len(order) == n:  # distinct ranks
            return order
    return np.argsort(rank, kind="stable").astype(np.int64)


def star_clusters(n: int, left: np.ndarray, right: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each row its survivor: rows are visited best rank first; an unclaimed row becomes a
    survivor and claims every unclaimed row it has a verified pair with. So every dropped row is
    itself verified against the survivor it names (no chains: A~B, B~C, A !~ C leaves C apart
    unless C pairs with a survivor), and a template shared by many rows cannot pull them all into
    one cluster through LSH collisions."""
    rank = rank.astype(np.int64)
    by_rank = _stable_order(rank)
    u = np.concatenate([left, right]).astype(np.int64)
    v = np.concatenate([right, left]).astype(np.int64)
    order = np.lexsort((rank[v], u))  # each row's neighbours, best first
    nbr = v[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(u, minlength=n), out=indptr[1:])
    return _star(n, indptr, nbr, by_rank)

