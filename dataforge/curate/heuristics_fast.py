"""The bulk path of the heuristic rules: the metrics of :mod:`dataforge.curate.heuristics` for a
whole column of texts at once. The rules, schemas and character sets come from
:mod:`dataforge.curate.heuristics_rules`; this module does not import the reference.

The texts become one Arrow ``large_string`` array, and numba kernels read its UTF-8 buffer and
offsets directly (no Python string per row):

* one scan (:func:`_scan`) cuts every text into whitespace chunks (what ``str.split()``
  returns) and records its ``str.splitlines()`` separators and its "\\n" bytes, with per-text
  counts of characters, ``#``, ``...``, ``…`` and newlines. Lines, paragraphs and
  ``split("\\n")`` pieces come from these positions (a stripped line runs from its first
  chunk to the end of its last), not from further passes over the bytes;
* each chunk is looked up in a per-process cache of distinct chunks (:class:`ChunkCache`; exact:
  the bytes are compared, not only a hash) that holds what the families need of a chunk: its
  Gopher word (edge punctuation stripped: length, has a letter, id of its lower-case form) and
  its tokens (spaCy's rules, :mod:`dataforge.curate.wordtok`) as ids into a token vocabulary
  with per-token flags. One pass (:func:`_lookup`) finds each chunk's entry, reading only the
  cache's hash table for chunks of up to eight bytes; only chunks the thread has never seen go
  through Python, once each; a second (:func:`_gather`) sums the Gopher words per text and lays
  the token ids of all texts end to end;
* the families are per-text loops over those: duplicate lines and paragraphs through an
  open-addressing table (hash, then the bytes compared), Gopher repetition's word n-grams
  grouped exactly n by n (:func:`_ngram_chars`), C4's line rules, sentence count and cleaned
  text written to a new buffer.

Python's own Unicode tables decide what is whitespace, a terminal mark or a digit (as the
reference's ``str`` methods and ``re`` do). The kernels release the GIL; the cache is shared by
threads under a lock. tests/test_heuristics.py checks every metric, decision and cleaned text
against the reference (exactly: ratios divide the same integers), on edge cases, random texts
and the shared Pile sample; benchmarks/bench_rules.py measures it against datatrove.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
import weakref
from collections.abc import Sequence

import numba
import numpy as np
import pyarrow as pa

from dataforge.config import C4Config, HeuristicsConfig
from dataforge.curate import heuristics_rules as rules
from dataforge.curate import wordtok

# --- tables ------------------------------------------------------------------------------------

_WS, _TERM, _DIGIT = 1, 2, 4
# the reference's bullet regex: ^(?:[•‣⁃◦▪▫●○■□►▸➢➤]|[-*+–](?:\s|$))
_BULLETS = np.array(sorted(ord(c) for c in "•‣⁃◦▪▫●○■□►▸➢➤"), np.int64)
_BULLET_MARKS = np.array(sorted(ord(c) for c in "-*+–"), np.int64)


@functools.cache
def _char_classes() -> np.ndarray:
    """Per code point: whitespace (``str.isspace``, re's ``\\s``), datatrove's terminal
    punctuation, a decimal digit (category Nd, re's ``\\d``)."""
    cls = np.zeros(sys.maxunicode + 1, np.uint8)
    cls[[ord(c) for c in rules.WHITESPACE]] |= _WS
    cls[[ord(c) for c in rules.TERMINAL_PUNCTUATION]] |= _TERM
    cls[[i for i in range(sys.maxunicode + 1) if chr(i).isdecimal()]] |= _DIGIT
    return cls


# C4's phrases, lower case: the kind of each (0 lorem ipsum, 1 javascript, 2 a policy phrase)
_C4_PHRASES = [("lorem ipsum", 0), ("javascript", 1)] + [(p, 2) for p in rules.POLICY_SUBSTRINGS]
_PHRASE_BYTES = np.frombuffer("".join(p for p, _ in _C4_PHRASES).encode("ascii"), np.uint8).copy()
_PHRASE_OFF = np.cumsum([0] + [len(p) for p, _ in _C4_PHRASES]).astype(np.int64)
_PHRASE_KIND = np.array([k for _, k in _C4_PHRASES], np.int64)
_PHRASE_FIRST = np.zeros(256, np.int64)  # bit j: phrase j starts with this byte
for _j, (_p, _) in enumerate(_C4_PHRASES):
    _PHRASE_FIRST[ord(_p[0])] |= 1 << _j
# per byte of a line as written: the phrases its lower case starts, 256 "{", 512 "[", 1024 a byte
# that may start a character lowering to ASCII (see _line_marks)
_LINE_BYTES = _PHRASE_FIRST.copy()
for _b in range(ord("A"), ord("Z") + 1):
    _LINE_BYTES[_b] = _PHRASE_FIRST[_b + 32]
_LINE_BYTES[ord("{")] |= 256
_LINE_BYTES[ord("[")] |= 512
_LINE_BYTES[[0xC4, 0xE2]] |= 1024
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A"):ord("Z") + 1] += 32

_CITATION_NEEDED = np.frombuffer(b"citation needed]", np.uint8).copy()


# --- bytes and characters (numba helpers) ---------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _cp(data, i):
    """The code point starting at byte ``i`` and its length in bytes (valid UTF-8)."""
    b = np.int64(data[i])
    if b < 0x80:
        return b, 1
    if b < 0xE0:
        return ((b & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F), 2
    if b < 0xF0:
        return ((b & 0x0F) << 12) | ((np.int64(data[i + 1]) & 0x3F) << 6) | (np.int64(data[i + 2]) & 0x3F), 3
    return (((b & 0x07) << 18) | ((np.int64(data[i + 1]) & 0x3F) << 12) | ((np.int64(data[i + 2]) & 0x3F) << 6)
            | (np.int64(data[i + 3]) & 0x3F)), 4


@numba.njit(cache=True, nogil=True)
def _prev(data, i):
    """The start of the code point that ends right before byte ``i``."""
    p = i - 1
    while data[p] & 0xC0 == 0x80:
        p -= 1
    return p


@numba.njit(cache=True, nogil=True)
def _ltrim(data, a, b, cls):
    while a < b:
        cp, k = _cp(data, a)
        if not cls[cp] & 1:
            break
        a += k
    return a


@numba.njit(cache=True, nogil=True)
def _rtrim(data, a, b, cls):
    while b > a:
        p = _prev(data, b)
        cp, _ = _cp(data, p)
        if not cls[cp] & 1:
            break
        b = p
    return b


@numba.njit(cache=True, nogil=True)
def _n_chars(data, a, b):
    n = 0
    for i in range(a, b):
        n += data[i] & 0xC0 != 0x80
    return n


@numba.njit(cache=True, nogil=True)
def _same(x, i, y, j, n):
    for k in range(n):
        if x[i + k] != y[j + k]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _ends_with_dots(buf, a, b):
    return b - a >= 3 and buf[b - 1] == 0x2E and buf[b - 2] == 0x2E and buf[b - 3] == 0x2E


@numba.njit(cache=True, nogil=True)
def _ends_with_hellip(buf, a, b):  # "…" is E2 80 A6
    return b - a >= 3 and buf[b - 1] == 0xA6 and buf[b - 2] == 0x80 and buf[b - 3] == 0xE2


@numba.njit(cache=True, nogil=True)
def _mix(x):
    # splitmix64's finalizer
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _pow2(n):
    size = 16
    while size < n:
        size *= 2
    return size


_K = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True)
def _load8(data, i):
    """The eight bytes from ``i`` on as a little-endian word (the buffer is padded past its end).
    Unsigned indices: without numba's negative-index wraparound LLVM makes this one load."""
    j = np.uint64(i)
    return (np.uint64(data[j]) | (np.uint64(data[j + np.uint64(1)]) << np.uint64(8))
            | (np.uint64(data[j + np.uint64(2)]) << np.uint64(16)) | (np.uint64(data[j + np.uint64(3)]) << np.uint64(24))
            | (np.uint64(data[j + np.uint64(4)]) << np.uint64(32)) | (np.uint64(data[j + np.uint64(5)]) << np.uint64(40))
            | (np.uint64(data[j + np.uint64(6)]) << np.uint64(48)) | (np.uint64(data[j + np.uint64(7)]) << np.uint64(56)))


@numba.njit(cache=True, nogil=True)
def _hash(data, a, b):
    """A 64-bit hash of ``data[a:b]``, eight bytes at a time (equal bytes, equal hash); reads up to
    8 bytes past ``b`` (:func:`_buffers` pads the buffer)."""
    n = b - a
    h = np.uint64(n) * _K
    if n <= 8:
        w = _load8(data, a)
        if n < 8:
            w &= (np.uint64(1) << np.uint64(8 * n)) - np.uint64(1)
        return _mix(h ^ w)
    i = a
    while i + 8 < b:
        h = (h ^ _load8(data, i)) * _K
        h ^= h >> np.uint64(29)
        i += 8
    return _mix(h ^ _load8(data, b - 8))  # the last word (overlapping the one before)


@numba.njit(cache=True, nogil=True)
def _equal(x, i, y, j, n):
    """``x[i:i + n] == y[j:j + n]``, eight bytes at a time (both buffers padded past the ranges)."""
    k = 0
    while k + 8 <= n:
        if _load8(x, i + k) != _load8(y, j + k):
            return False
        k += 8
    if k == n:
        return True
    return (_load8(x, i + k) ^ _load8(y, j + k)) & ((np.uint64(1) << np.uint64(8 * (n - k))) - np.uint64(1)) == 0


@numba.njit(cache=True, nogil=True)
def _dup_flags(data, starts, ends, hashes, count, keys, first, stamp, now, dup):
    """``dup[j]`` for the ``count`` byte ranges: equal to an earlier range (``keys``, ``first``,
    ``stamp``: a scratch open-addressing table, slots valid when ``stamp == now``)."""
    mask = np.uint64(_pow2(2 * count) - 1)
    for j in range(count):
        h = hashes[j]
        slot = h & mask
        ln = ends[j] - starts[j]
        found = False
        while stamp[slot] == now:
            if keys[slot] == h:
                f = first[slot]
                if ends[f] - starts[f] == ln and _equal(data, starts[f], data, starts[j], ln):
                    found = True
                    break
            slot = (slot + np.uint64(1)) & mask
        dup[j] = found
        if not found:
            stamp[slot] = now
            keys[slot] = h
            first[slot] = j


# --- the scan: chunks and per-text counts ---------------------------------------------------------

# per byte: 1 ASCII whitespace, 2 ".", 4 "#", 8 "\\n", 16 the lead byte of a multi-byte character, 32 an
# ASCII str.splitlines() separator
_BYTES = np.zeros(256, np.uint8)
for _b in range(128):
    _BYTES[_b] = 1 if chr(_b).isspace() else 0
    _BYTES[_b] |= 32 if len(("a" + chr(_b) + "b").splitlines()) == 2 else 0
_BYTES[ord(".")], _BYTES[ord("#")] = 2, 4
_BYTES[ord("\n")] |= 8
_BYTES[0xC0:] = 16


@numba.njit(cache=True, nogil=True)
def _scan(data, offs, cls, byte_class):
    """One pass over every text: its whitespace chunks (start, end, characters; ``doc_c`` their
    per-text offsets), its ``str.splitlines()`` separators (start, end; ``doc_b``), its "\\n"
    bytes (position, UTF-8 continuation bytes of the text before it; ``doc_n``) and its
    characters, "#", "..." (non-overlapping), "…" and newlines."""
    n = len(offs) - 1
    # sizes first (bounds: a chunk ends at whitespace or the end of its text, a separator is ASCII
    # or starts with C2 / E2): an array reassigned in the loop below would make it twice as slow
    n_ws = n_breaks = n_newlines = 0
    for i in range(offs[0], offs[n]):
        c = byte_class[data[i]]
        n_ws += (c & 1) | ((c >> 4) & 1)
        n_breaks += (c >> 5) | (data[i] == 0xC2) | (data[i] == 0xE2)
        n_newlines += (c >> 3) & 1
    cs = np.empty(n_ws + n, np.int64)
    ce = np.empty(n_ws + n, np.int64)
    cc = np.empty(n_ws + n, np.int64)
    brk = np.empty((n_breaks, 2), np.int64)
    nl = np.empty((n_newlines, 2), np.int64)
    doc_c = np.zeros(n + 1, np.int64)
    doc_b = np.zeros(n + 1, np.int64)
    doc_n = np.zeros(n + 1, np.int64)
    counts = np.zeros((5, n), np.int64)  # chars, "#", "...", "…", "\\n"
    k = nb = nn = 0
    for d in range(n):
        i, e = offs[d], offs[d + 1]
        cont = hashes = dots = hellips = 0
        while i < e:
            # whitespace
            while i < e:
                c = byte_class[data[i]]
                if c & 1:
                    if c & 32:  # a line break
                        if data[i] == 0x0D and i + 1 < e and data[i + 1] == 0x0A:  # "\r\n": one break
                            brk[nb, 0], brk[nb, 1] = i, i + 2
                            nl[nn, 0], nl[nn, 1] = i + 1, cont
                            nn += 1
                            i += 1
                        else:
                            brk[nb, 0], brk[nb, 1] = i, i + 1
                            if c & 8:
                                nl[nn, 0], nl[nn, 1] = i, cont
                                nn += 1
                        nb += 1
                    i += 1
                elif c & 16:
                    cp, step = _cp(data, i)
                    if not cls[cp] & 1:
                        break
                    if cp == 0x85 or cp == 0x2028 or cp == 0x2029:
                        brk[nb, 0], brk[nb, 1] = i, i + step
                        nb += 1
                    cont += step - 1
                    i += step
                else:
                    break
            if i >= e:
                break
            # a chunk
            start = i
            chunk_cont = 0
            run = 0
            while i < e:
                c = byte_class[data[i]]
                if c == 0:
                    run = 0
                    i += 1
                elif c == 2:
                    run += 1
                    if run == 3:
                        dots += 1
                        run = 0
                    i += 1
                elif c == 4:
                    hashes += 1
                    run = 0
                    i += 1
                elif c & 16:
                    cp, step = _cp(data, i)
                    if cls[cp] & 1:
                        break
                    hellips += cp == 0x2026
                    chunk_cont += step - 1
                    run = 0
                    i += step
                else:
                    break
            cs[k], ce[k], cc[k] = start, i, i - start - chunk_cont
            k += 1
            cont += chunk_cont
        counts[0, d] = offs[d + 1] - offs[d] - cont
        counts[1, d], counts[2, d], counts[3, d] = hashes, dots, hellips
        counts[4, d] = nn - doc_n[d]
        doc_c[d + 1], doc_b[d + 1], doc_n[d + 1] = k, nb, nn
    return cs[:k], ce[:k], cc[:k], doc_c, brk[:nb], doc_b, nl[:nn], doc_n, counts


@numba.njit(cache=True, nogil=True)
def _split_lines(offs, doc_c, cs, ce, brk, doc_b):
    """The ``str.splitlines()`` lines of every text as rows (stripped start, stripped end, first
    chunk, end chunk; a blank line has start == end) and their per-text offsets ``doc_l``. A
    stripped line runs from its first chunk's start to its last chunk's end: every separator is
    whitespace, so no chunk spans two lines."""
    n = len(offs) - 1
    lines = np.empty((len(brk) + n, 4), np.int64)
    doc_l = np.zeros(n + 1, np.int64)
    k = 0
    for d in range(n):
        start, e = offs[d], offs[d + 1]
        c, c_end = doc_c[d], doc_c[d + 1]
        j = doc_b[d]
        while True:
            if j < doc_b[d + 1]:
                end, nxt = brk[j, 0], brk[j, 1]
                j += 1
            elif start < e:  # the last line, without a separator
                end, nxt = e, e
            else:
                break
            c0 = c
            while c < c_end and cs[c] < end:
                c += 1
            if c > c0:
                lines[k, 0], lines[k, 1] = cs[c0], ce[c - 1]
            else:
                lines[k, 0], lines[k, 1] = start, start
            lines[k, 2], lines[k, 3] = c0, c
            k += 1
            start = nxt
        doc_l[d + 1] = k
    return lines[:k], doc_l


# --- the chunk cache ----------------------------------------------------------------------------

# the columns of an entry's record (one 64-byte row per distinct chunk)
_B_START, _B_LEN, _T_START, _T_COUNT, _W_LEN, _W_ALPHA, _W_LOWER, _T_FIRST = range(8)
_NO_TOKENS, _PENDING = -1, -2  # _T_COUNT of an entry not tokenized yet / about to be
_SKIP = np.int64(-(1 << 62))  # ent[c] of a chunk nothing is needed of
_DIRECT = np.int64(-(1 << 62) + 1)  # ent[c] of an ASCII chunk needing its Gopher word only

# A slot of the cache's hash table is two words side by side (one cache line holds both): the
# chunk's first eight bytes (zero-padded), and its hash's top 24 bits, its length (up to 255) and
# its entry id + 1 (0: an empty slot). A chunk of at most eight bytes, most words, is found from
# its slot alone; a longer one then compares the rest of its bytes with the arena's copy.


@numba.njit(cache=True, nogil=True)
def _head(data, a, b):
    """The first eight bytes of ``data[a:b]``, zero-padded (the buffer is padded past ``b``)."""
    w = _load8(data, a)
    n = b - a
    if n < 8:
        w &= (np.uint64(1) << np.uint64(8 * n)) - np.uint64(1)
    return w


@numba.njit(cache=True, nogil=True)
def _meta(h, n):
    return ((h >> np.uint64(40)) << np.uint64(40)) | (np.uint64(min(n, 255)) << np.uint64(32))


@numba.njit(cache=True, nogil=True)
def _find(data, a, b, h, slots, rec, arena):
    """The entry holding the bytes ``data[a:b]`` (hash ``h``), or -1 (linear probing from the
    hash's low bits)."""
    mask = np.uint64(len(slots) - 1)
    ln = b - a
    want = _meta(h, ln)
    head = _head(data, a, b)
    slot = h & mask
    while True:
        v = slots[slot, 0]
        if v == 0:
            return -1
        if (v & np.uint64(0xFFFFFFFF00000000)) == want and slots[slot, 1] == head:
            e = np.int64(v & np.uint64(0xFFFFFFFF)) - 1
            if ln <= 8:
                return e
            if rec[e, _B_LEN] == ln and _equal(arena, rec[e, _B_START] + 8, data, a + 8, ln - 8):
                return e
        slot = (slot + np.uint64(1)) & mask


@numba.njit(cache=True, nogil=True)
def _place(slots, h, n, head, e):
    mask = np.uint64(len(slots) - 1)
    slot = h & mask
    while slots[slot, 0] != 0:
        slot = (slot + np.uint64(1)) & mask
    slots[slot, 0] = _meta(h, n) | np.uint64(e + 1)
    slots[slot, 1] = head


_HI = np.uint64(0x8080808080808080)
_LO7 = np.uint64(0x7F7F7F7F7F7F7F7F)


@numba.njit(cache=True, nogil=True)
def _ascii(data, a, b):
    """Whether ``data[a:b]`` is ASCII (the buffer is padded past ``b``)."""
    acc = np.uint64(0)
    for i in range(a, b, 8):
        acc |= _head(data, i, b)
    return (acc & _HI) == 0


@numba.njit(cache=True, nogil=True)
def _in_range(w, lo, hi):
    """Per byte of the ASCII word ``w``: 0x80 where ``lo <= byte <= hi``, else 0 (no branches)."""
    x = w & _LO7
    ge = x + np.uint64(0x0101010101010101) * np.uint64(0x80 - lo)
    gt = x + np.uint64(0x0101010101010101) * np.uint64(0x7F - hi)
    return ge & ~gt & _HI


@numba.njit(cache=True, nogil=True)
def _ascii_word(data, a, b, strip, stop_keys, long_stop, long_len):
    """The Gopher word of an ASCII chunk as :func:`heuristics.split_words` strips it (``strip``:
    per ASCII byte, whether it is punctuation or a symbol): -1 when nothing is left, else its
    length << 2 | has a letter << 1 | its lower-case form is a stop word. ``stop_keys``: the
    ASCII stop words of up to 8 bytes (lower case) as little-endian words; ``long_stop`` (rows of
    bytes, ``long_len`` long) the longer ones. Eight bytes at a time, without branches per byte."""
    while a < b and strip[data[a]]:
        a += 1
    while b > a and strip[data[b - 1]]:
        b -= 1
    if a == b:
        return -1
    n = b - a
    letters = np.uint64(0)
    for i in range(a, b, 8):
        letters |= _in_range(_head(data, i, b) | np.uint64(0x2020202020202020), 97, 122)
    stop = 0
    if n <= 8:
        w = _head(data, a, b)
        key = w | (_in_range(w, 65, 90) >> np.uint64(2))  # lower case
        for k in range(len(stop_keys)):
            stop |= key == stop_keys[k]
    else:
        for k in range(len(long_len)):
            if long_len[k] != n:
                continue
            same = True
            for j in range(n):
                ch = data[a + j]
                if ch >= 65 and ch <= 90:
                    ch += 32
                if ch != long_stop[k, j]:
                    same = False
                    break
            if same:
                stop = 1
                break
    return (n << 2) | ((letters != 0) << 1) | stop


@numba.njit(cache=True, nogil=True)
def _lookup(data, cs, ce, need, slots, rec, arena):
    """The first pass over a column's chunks: per chunk its entry (``ent``; ``-(j + 1)`` for the
    ``j``-th distinct chunk the cache lacks, :data:`_SKIP` when nothing is needed of it) and, per
    distinct missing chunk, one chunk of it (``first``) and whether any of its chunks needs
    tokens (``miss_tok``). Reads the hash table only (and the arena for chunks over 8 bytes)."""
    m = len(cs)
    ent = np.empty(m, np.int64)
    mslots = np.zeros(0, np.uint64)
    first = np.empty(16, np.int64)
    miss_tok = np.zeros(16, np.bool_)
    n_miss = 0
    for c in range(m):
        if need[c] == 0:
            ent[c] = _SKIP
            continue
        if need[c] == 1 and _ascii(data, cs[c], ce[c]):
            ent[c] = _DIRECT  # its Gopher word is read off its bytes (_ascii_word)
            continue
        h = _hash(data, cs[c], ce[c])
        e = _find(data, cs[c], ce[c], h, slots, rec, arena)
        if e >= 0:
            ent[c] = e
            continue
        if len(mslots) == 0:  # the first miss of the call: a table of the distinct misses
            mslots = np.zeros(_pow2(2 * m), np.uint64)
        mmask = np.uint64(len(mslots) - 1)
        slot = h & mmask
        mid = -1
        while mslots[slot] != 0:
            f = first[np.int64(mslots[slot] & np.uint64(0xFFFFFFFF)) - 1]
            if mslots[slot] >> np.uint64(32) == h >> np.uint64(32) and ce[f] - cs[f] == ce[c] - cs[c] \
                    and _equal(data, cs[f], data, cs[c], ce[c] - cs[c]):
                mid = np.int64(mslots[slot] & np.uint64(0xFFFFFFFF)) - 1
                break
            slot = (slot + np.uint64(1)) & mmask
        if mid < 0:
            mid = n_miss
            if n_miss == len(first):
                first = np.concatenate((first, np.empty(len(first), np.int64)))
                miss_tok = np.concatenate((miss_tok, np.zeros(len(miss_tok), np.bool_)))
            first[mid] = c
            miss_tok[mid] = False
            n_miss += 1
            mslots[slot] = ((h >> np.uint64(32)) << np.uint64(32)) | np.uint64(mid + 1)
        if need[c] == 2:
            miss_tok[mid] = True
        ent[c] = -(mid + 1)
    return ent, first[:n_miss], miss_tok[:n_miss]


@numba.njit(cache=True, nogil=True)
def _gather(data, cs, ce, doc_c, need, ent, base, rec, toks, is_stop, strip, stop_keys, long_stop, long_len):
    """The second pass, over the entries :func:`_lookup` found (a missing chunk's entry is
    ``base`` + its miss number, once added): per text the Gopher word sums (words, their
    characters, with a letter, stop words by ``is_stop`` of the lower-case id), and the token ids
    of the chunks needing them one after another (``tok_at[c]``: how many come before chunk
    ``c``). Entries that need tokens and have none yet come back as ``pending`` (marked): with
    any, the tokens are incomplete; tokenize them and call again."""
    m = len(cs)
    n = len(doc_c) - 1
    words = np.zeros((4, n), np.int64)
    bound = 0  # a token has at least one byte: no more tokens than chunk bytes
    for c in range(m):
        bound += ce[c] - cs[c]
    ids = np.empty(bound, np.int32)
    tok_at = np.zeros(m + 1, np.int64)
    k = 0
    pending = np.empty(16, np.int64)
    n_pending = 0
    for d in range(n):
        n_words = n_chars = n_alpha = n_stop = 0
        for c in range(doc_c[d], doc_c[d + 1]):
            tok_at[c] = k
            if need[c] == 0:
                continue
            e = ent[c]
            if e == _DIRECT:
                word = _ascii_word(data, cs[c], ce[c], strip, stop_keys, long_stop, long_len)
                if word >= 0:
                    n_words += 1
                    n_chars += word >> 2
                    n_alpha += (word >> 1) & 1
                    n_stop += word & 1
                continue
            if e < 0:
                e = base - e - 1
            length = rec[e, _W_LEN]
            if length > 0:
                n_words += 1
                n_chars += length
                n_alpha += rec[e, _W_ALPHA]
                n_stop += is_stop[rec[e, _W_LOWER]]
            if need[c] == 2:
                count = rec[e, _T_COUNT]
                if count < 0:
                    if count == _NO_TOKENS:
                        rec[e, _T_COUNT] = _PENDING
                        if n_pending == len(pending):
                            pending = np.concatenate((pending, np.empty(len(pending), np.int64)))
                        pending[n_pending] = e
                        n_pending += 1
                    continue
                if count == 1:  # most chunks: the token is in the record
                    ids[k] = rec[e, _T_FIRST]
                else:
                    t0 = rec[e, _T_START]
                    for j in range(count):
                        ids[k + j] = toks[t0 + j]
                k += count
        words[0, d], words[1, d], words[2, d], words[3, d] = n_words, n_chars, n_alpha, n_stop
    tok_at[m] = k
    return words, ids[:k], tok_at, pending[:n_pending]


@numba.njit(cache=True, nogil=True)
def _insert(data, cs, ce, chunks, base, slots, rec, arena, used):
    """Add ``chunks`` as entries ``base, base + 1, ...`` (bytes copied to ``arena`` from
    ``used`` on); returns the arena's new end."""
    for j in range(len(chunks)):
        c = chunks[j]
        ln = ce[c] - cs[c]
        arena[used:used + ln] = data[cs[c]:ce[c]]
        e = base + j
        rec[e, _B_START] = used
        rec[e, _B_LEN] = ln
        used += ln
        _place(slots, _hash(data, cs[c], ce[c]), ln, _head(data, cs[c], ce[c]), e)
    return used


@numba.njit(cache=True, nogil=True)
def _rehash(n, rec, arena, slots):
    for e in range(n):
        a = rec[e, _B_START]
        b = a + rec[e, _B_LEN]
        _place(slots, _hash(arena, a, b), b - a, _head(arena, a, b), e)


@functools.cache
def _not_in_classes():
    """``search`` of a character outside Unicode punctuation (P*), and outside datatrove's
    punctuation set: one compiled class each, for the flags of new tokens."""
    def outside(chars: frozenset[str]):
        return re.compile("[^" + "".join(re.escape(c) for c in sorted(chars)) + "]").search

    return outside(rules.punctuation()), outside(rules.DATATROVE_PUNCTUATION)


def _grown(arr: np.ndarray, need: int) -> np.ndarray:
    """``arr`` with room for ``need`` rows (doubling), contents kept."""
    if need <= len(arr):
        return arr
    out = np.empty((max(need, 2 * len(arr)), *arr.shape[1:]), arr.dtype)
    out[:len(arr)] = arr
    return out


@functools.lru_cache(maxsize=16)
def _ascii_tables(stop_lower: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What :func:`_ascii_word` needs: the ASCII bytes Gopher's words are stripped of, and the
    ASCII stop words (lower case): those of up to 8 bytes as little-endian words, the longer as
    rows of bytes with their lengths (a stop word with other characters cannot be the lower
    case of an ASCII word)."""
    punct = rules.punctuation_and_symbols()
    strip = np.array([chr(b) in punct for b in range(256)], np.bool_)
    words = [w.encode("ascii") for w in stop_lower if w.isascii() and w]
    keys = np.array([int.from_bytes(w, "little") for w in words if len(w) <= 8], np.uint64)
    longer = [w for w in words if len(w) > 8]
    long_stop = np.zeros((len(longer), max(map(len, longer), default=1)), np.uint8)
    for k, w in enumerate(longer):
        long_stop[k, :len(w)] = np.frombuffer(w, np.uint8)
    return strip, keys, long_stop, np.array([len(w) for w in longer], np.int64)


class ChunkCache:
    """The distinct whitespace chunks this process has seen and what the families need of each:
    the Gopher word (edge punctuation and symbols stripped: its length, whether it has a letter,
    the id of its lower-cased form) and, when a family asked for them, its tokens as ids into a
    token vocabulary (length, sentence mark, punctuation, datatrove word, alphabetic flags per
    token). Cleared whole when it holds more than :attr:`max_entries` chunks or :attr:`max_bytes`
    bytes of them. Arrays only grow by reallocation, so a snapshot taken under the lock stays
    valid for the entries it holds. Each thread has its own (:func:`chunk_cache`); :func:`clear_caches`
    empties them all."""

    max_entries = 1 << 19  # at the bound ~140 MB: records, slots, arena, the token and word dicts
    max_bytes = 1 << 26

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._reset()

    def clear(self) -> None:
        with self.lock:
            self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.slots = np.zeros((1 << 16, 2), np.uint64)
        self.rec = np.empty((1 << 14, 8), np.int64)
        self.arena = np.zeros(1 << 20, np.uint8)
        self.used = 0
        self.toks = np.empty(1 << 16, np.int64)
        self.n_toks = 0
        self.lower_index: dict[str, int] = {}
        self.tok_index: dict[str, int] = {}
        self.tok_props = np.empty((5, 1 << 14), np.int64)  # len, mark, punct, dt word, alpha

    def _strings(self, entries: np.ndarray) -> list[str]:
        raw = self.arena[:self.used].tobytes()
        return [raw[s:s + n].decode("utf-8") for s, n in self.rec[entries, _B_START:_B_LEN + 1].tolist()]

    def _add_entries(self, data, cs, ce, chunks: np.ndarray) -> list[str]:
        """Add ``chunks`` (distinct, none in the cache) as entries; returns them as strings."""
        k = len(chunks)
        base = self.n
        total = int((ce[chunks] - cs[chunks]).sum())
        self.arena = _grown(self.arena, self.used + total + 16)  # padded: _hash reads whole words
        self.rec = _grown(self.rec, base + k)
        if 2 * (base + k) > len(self.slots):
            size = len(self.slots)
            while 2 * (base + k) > size:
                size *= 2
            self.slots = np.zeros((size, 2), np.uint64)
            _rehash(base, self.rec, self.arena, self.slots)
        self.used = _insert(data, cs, ce, chunks, base, self.slots, self.rec, self.arena, self.used)
        self.n = base + k
        raw = memoryview(data)  # decoded in place: a copy of the whole batch per call cost more
        strings = [str(raw[a:b], "utf-8") for a, b in zip(cs[chunks].tolist(), ce[chunks].tolist())]
        # the Gopher word of each chunk, as heuristics.split_words strips it
        punct = rules.punctuation_and_symbols()
        lower_index = self.lower_index
        lengths, alpha, lower = [], [], []
        for s in strings:
            a, b = 0, len(s)
            while a < b and s[a] in punct:
                a += 1
            while b > a and s[b - 1] in punct:
                b -= 1
            if a == b:
                lengths.append(0)
                alpha.append(False)
                lower.append(-1)
                continue
            w = s[a:b]
            low = w.lower()
            i = lower_index.get(low)
            if i is None:
                i = lower_index[low] = len(lower_index)
            lengths.append(b - a)
            alpha.append(w.isalpha() or any(c.isalpha() for c in w))
            lower.append(i)
        rec = self.rec
        rec[base:base + k, _W_LEN] = lengths
        rec[base:base + k, _W_ALPHA] = alpha
        rec[base:base + k, _W_LOWER] = lower
        rec[base:base + k, _T_COUNT] = _NO_TOKENS
        return strings

    def _tokenize(self, entries: np.ndarray, strings: list[str] | None = None) -> None:
        """Tokens for ``entries`` (spaCy's rules; ``strings``: their text, when at hand), new
        tokens added to the vocabulary."""
        index = self.tok_index
        start = len(index)
        new: list[str] = []
        ids: list[int] = []
        counts: list[int] = []
        split = wordtok.chunk_tokens
        for s in self._strings(entries) if strings is None else strings:
            toks = split(s)
            counts.append(len(toks))
            for t in toks:
                j = index.get(t)
                if j is None:
                    j = index[t] = len(index)
                    new.append(t)
                ids.append(j)
        if new:
            props = np.empty((5, len(new)), np.int64)
            marks = wordtok.sentence_marks()
            not_punct, not_dt_punct = _not_in_classes()
            props[0] = [len(t) for t in new]
            props[1] = [t in marks for t in new]
            props[2] = [not_punct(t) is None for t in new]  # wordtok.is_punct
            props[3] = [not_dt_punct(t) is not None for t in new]  # a character outside datatrove's set
            props[4] = [t.isalpha() or any(c.isalpha() for c in t) for t in new]
            if len(index) > self.tok_props.shape[1]:
                grown = np.empty((5, max(len(index), 2 * self.tok_props.shape[1])), np.int64)
                grown[:, :start] = self.tok_props[:, :start]
                self.tok_props = grown
            self.tok_props[:, start:len(index)] = props
        counts_arr = np.array(counts, np.int64)
        self.toks = _grown(self.toks, self.n_toks + len(ids))
        self.toks[self.n_toks:self.n_toks + len(ids)] = ids
        starts = self.n_toks + np.cumsum(counts_arr) - counts_arr
        self.rec[entries, _T_START] = starts
        self.rec[entries, _T_COUNT] = counts_arr
        has = counts_arr > 0
        self.rec[entries[has], _T_FIRST] = self.toks[starts[has]]
        self.n_toks += len(ids)

    def resolve(self, data, cs, ce, doc_c, need, stop_words: Sequence[str] = ()) -> tuple:
        """The column's chunks looked up (:func:`_lookup`), the cache filled with what it lacked,
        then the sums and tokens read off the entries (:func:`_gather`), with the token flags of
        the vocabulary as it then is (valid for every id returned)."""
        stop_lower = sorted({w.lower() for w in stop_words})
        with self.lock:
            if self.n > self.max_entries or self.used > self.max_bytes:
                self._reset()
            ent, first, miss_tok = _lookup(data, cs, ce, need, self.slots, self.rec, self.arena)
            base = self.n
            if len(first):
                strings = self._add_entries(data, cs, ce, first)
                want = np.flatnonzero(miss_tok)
                if len(want):
                    self._tokenize(base + want, [strings[j] for j in want.tolist()])
            is_stop = np.zeros(len(self.lower_index) + 1, np.bool_)  # the last slot (id -1) stays False
            is_stop[[self.lower_index[w] for w in stop_lower if w in self.lower_index]] = True
            ascii_tables = _ascii_tables(tuple(stop_lower))
            while True:
                words, ids, tok_at, pending = _gather(data, cs, ce, doc_c, need, ent, base, self.rec, self.toks,
                                                      is_stop, *ascii_tables)
                if not len(pending):
                    break
                self._tokenize(pending)  # entries made earlier without tokens
            tok_props = self.tok_props[:, :len(self.tok_index)]
        return words, ids, tok_at, tok_props

    def token_ids(self, tokens: Sequence[str]) -> list[tuple[int, int]]:
        """(token id, position in ``tokens``) of the tokens the vocabulary holds."""
        with self.lock:
            return [(self.tok_index[t], j) for j, t in enumerate(tokens) if t in self.tok_index]


_THREAD = threading.local()
_ALL_CACHES: "weakref.WeakSet[ChunkCache]" = weakref.WeakSet()


def chunk_cache() -> ChunkCache:
    """This thread's chunk cache. One per thread, not one per process: a shared cache held its
    lock over the lookup pass (two thirds of the families' time), so shard tasks on two threads
    ran one at a time. The cache only memoizes, so which cache a text meets never changes a
    result; each holds at most :attr:`ChunkCache.max_bytes` of chunks."""
    cache = getattr(_THREAD, "cache", None)
    if cache is None:
        cache = _THREAD.cache = ChunkCache()
        _ALL_CACHES.add(cache)
    return cache


def clear_caches() -> None:
    """Forget every chunk and token seen (every thread's cache and wordtok's): the next call
    tokenizes from scratch (benchmarks/bench_rules.py's "cold" figures)."""
    for cache in list(_ALL_CACHES):
        cache.clear()
    wordtok.chunk_tokens.cache_clear()


# --- Gopher quality ---------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _in_sorted(values, x):
    j = np.searchsorted(values, x)
    return j < len(values) and values[j] == x


@numba.njit(cache=True, nogil=True)
def _gopher_quality_lines(data, lines, doc_l, cls, bullets, marks):
    """Per text: non-blank ``splitlines()`` lines, those starting with a bullet (the reference's
    ``^(?:[•‣⁃◦▪▫●○■□►▸➢➤]|[-*+–](?:\\s|$))`` on the stripped line) and those ending with an
    ellipsis. (The word counts come from the chunk cache, :func:`_gather`.)"""
    n = len(doc_l) - 1
    out = np.zeros((3, n), np.int64)
    for d in range(n):
        n_lines = bullet = ellipsis = 0
        for j in range(doc_l[d], doc_l[d + 1]):
            a, b = lines[j, 0], lines[j, 1]
            if b == a:
                continue
            n_lines += 1
            cp, k = _cp(data, a)
            if _in_sorted(bullets, cp):
                bullet += 1
            elif _in_sorted(marks, cp):
                if a + k == b:
                    bullet += 1
                else:
                    cp2, _ = _cp(data, a + k)
                    bullet += cls[cp2] & 1
            ellipsis += _ends_with_dots(data, a, b) or _ends_with_hellip(data, a, b)
        out[0, d], out[1, d], out[2, d] = n_lines, bullet, ellipsis
    return out


@numba.njit(cache=True, nogil=True)
def _gopher_quality_datatrove(data, lines, doc_l, tok_off, tok_ids, tlen, tword, talpha, stop_idx, n_stop):
    """Per text (datatrove's definitions): tokens that are words, their characters, alphabetic
    tokens, distinct stop words; ``splitlines()`` lines, those starting with "•" or "-" once
    left-stripped, those ending with an ellipsis once right-stripped."""
    n = len(doc_l) - 1
    out = np.zeros((7, n), np.int64)
    seen = np.zeros(max(n_stop, 1), np.bool_)
    for d in range(n):
        words = chars = alpha = stop = 0
        for j in range(tok_off[d], tok_off[d + 1]):
            t = tok_ids[j]
            if tword[t]:
                words += 1
                chars += tlen[t]
            alpha += talpha[t]
            s = stop_idx[t]
            if s >= 0 and not seen[s]:
                seen[s] = True
                stop += 1
        seen[:] = False
        bullet = ellipsis = 0
        for j in range(doc_l[d], doc_l[d + 1]):
            a, b = lines[j, 0], lines[j, 1]
            if b > a:
                cp, _ = _cp(data, a)
                bullet += cp == 0x2022 or cp == 0x2D
                ellipsis += _ends_with_dots(data, a, b) or _ends_with_hellip(data, a, b)
        out[0, d], out[1, d], out[2, d], out[3, d] = words, chars, alpha, stop
        out[4, d], out[5, d], out[6, d] = doc_l[d + 1] - doc_l[d], bullet, ellipsis
    return out


# --- Gopher repetition and FineWeb: n-grams, newline pieces, paragraphs ----------------------------

@numba.njit(cache=True, nogil=True)
def _ngram_chars(tok_off, ids, tlen, n_vocab, is_top, is_dup, max_n):
    """Per text, for each n of ``is_top`` (row ``n - 2`` of ``top``) the characters of the most
    frequent n-gram (tokens joined by spaces) times its count, ties to the n-gram seen first; for
    each n of ``is_dup`` (row ``n - 2`` of ``dup``) the characters (joined without spaces) of
    datatrove's left-to-right scan for repeated n-grams (a repeat skips past itself).

    Exact: n-grams are grouped n by n, an n-gram being the pair (group of its first n - 1
    tokens, its last token) in a table; only positions whose (n-1)-gram and the next
    (n-1)-gram both repeat can start a repeated n-gram, and only those are looked at."""
    n_docs = len(tok_off) - 1
    top = np.zeros((max_n - 1, n_docs), np.int64)
    dup = np.zeros((max_n - 1, n_docs), np.int64)
    longest = 0
    for d in range(n_docs):
        longest = max(longest, tok_off[d + 1] - tok_off[d])
    cnt1 = np.zeros(n_vocab, np.int32)
    g = np.empty(longest, np.int64)
    reps = np.empty(longest, np.int64)
    cand = np.empty(longest, np.int64)
    gcount = np.empty(longest, np.int64)
    gfirst = np.empty(longest, np.int64)
    seen = np.zeros(longest, np.bool_)
    size = _pow2(2 * longest)
    table = np.zeros((size, 2), np.uint64)  # per slot: the key, and the stamp over the group id
    now = 0
    csum = np.zeros(longest + 1, np.int64)
    for d in range(n_docs):
        s = tok_off[d]
        m = tok_off[d + 1] - s
        if m < 2:
            continue
        for i in range(m):
            t = ids[s + i]
            csum[i + 1] = csum[i] + tlen[t]
            cnt1[t] += 1
        n_reps = 0
        for i in range(m):
            t = ids[s + i]
            g[i] = t
            if cnt1[t] >= 2:
                reps[n_reps] = i
                n_reps += 1
        for i in range(m):
            cnt1[ids[s + i]] = 0
        for n in range(2, max_n + 1):
            k = m - n + 1
            if k <= 0:
                break
            now += 1
            stamp = np.uint64(now) << np.uint64(32)
            mask = np.uint64(_pow2(2 * n_reps) - 1)
            n_groups = 0
            n_cand = 0
            for j in range(n_reps - 1):
                i = reps[j]
                if i >= k:
                    break
                if reps[j + 1] != i + 1:
                    continue
                key = (np.uint64(g[i]) << np.uint64(32)) | np.uint64(ids[s + i + n - 1])
                slot = _mix(key) & mask
                while True:
                    v = table[slot, 1]
                    if v >> np.uint64(32) != np.uint64(now):
                        table[slot, 0] = key
                        table[slot, 1] = stamp | np.uint64(n_groups)
                        gcount[n_groups] = 1
                        gfirst[n_groups] = i
                        grp = n_groups
                        n_groups += 1
                        break
                    if table[slot, 0] == key:
                        grp = np.int64(v & np.uint64(0xFFFFFFFF))
                        gcount[grp] += 1
                        break
                    slot = (slot + np.uint64(1)) & mask
                g[i] = grp  # position i now holds its n-gram's group (later positions still n-1)
                cand[n_cand] = i
                n_cand += 1
            n_reps = 0
            for j in range(n_cand):
                i = cand[j]
                if gcount[g[i]] >= 2:
                    reps[n_reps] = i
                    n_reps += 1
            if is_top[n]:
                best, pos = 1, 0  # no repeat: the first n-gram, once
                for x in range(n_groups):
                    if gcount[x] > best or (gcount[x] == best and gfirst[x] < pos):
                        best, pos = gcount[x], gfirst[x]
                top[n - 2, d] = (csum[pos + n] - csum[pos] + n - 1) * best
            if is_dup[n]:
                seen[:n_groups] = False
                nxt = 0
                chars = 0
                for j in range(n_reps):
                    i = reps[j]
                    if i < nxt:
                        continue
                    x = g[i]
                    if seen[x]:
                        chars += csum[i + n] - csum[i]
                        nxt = i + n
                    else:
                        seen[x] = True
                        nxt = i + 1
                dup[n - 2, d] = chars
    return top, dup


@numba.njit(cache=True, nogil=True)
def _newline_pieces(data, offs, cls, n_chars, doc_c, cs, ce, nl, doc_n, short_len):
    """Per text over the pieces of ``split("\\n")`` (between the "\\n" bytes ``nl``): Gopher
    repetition's lines (``re.split(r"\\n+")``: the non-empty pieces, plus an empty one for a
    leading and a trailing newline, and one for an empty text): count, repeats, characters of
    repeats; FineWeb's non-blank lines (a chunk inside): count, ending in a terminal mark, at
    most ``short_len`` characters, characters of repeats."""
    n = len(offs) - 1
    out = np.zeros((7, n), np.int64)
    longest = 1
    for d in range(n):
        longest = max(longest, doc_n[d + 1] - doc_n[d] + 1)
    starts = np.empty(longest, np.int64)
    ends = np.empty(longest, np.int64)
    chars = np.empty(longest, np.int64)
    hashes = np.empty(longest, np.uint64)
    blank = np.empty(longest, np.bool_)
    dup = np.empty(longest, np.bool_)
    size = _pow2(2 * longest)
    keys = np.empty(size, np.uint64)
    first = np.empty(size, np.int64)
    stamp = np.zeros(size, np.int64)
    for d in range(n):
        s, e = offs[d], offs[d + 1]
        c, c_end = doc_c[d], doc_c[d + 1]
        k = 0
        a, a_cont = s, 0
        for j in range(doc_n[d], doc_n[d + 1] + 1):
            if j < doc_n[d + 1]:
                b, b_cont = nl[j, 0], nl[j, 1]
            else:
                b, b_cont = e, e - s - n_chars[d]
            if b > a:
                starts[k], ends[k], hashes[k] = a, b, _hash(data, a, b)
                while c < c_end and ce[c] <= a:
                    c += 1
                blank[k] = not (c < c_end and cs[c] < b)
                chars[k] = b - a - (b_cont - a_cont)  # bytes less UTF-8 continuation bytes
                k += 1
            if j < doc_n[d + 1]:
                a, a_cont = b + 1, b_cont
        _dup_flags(data, starts, ends, hashes, k, keys, first, stamp, d + 1, dup)
        if e == s:
            n_lines, rep_dup = 1, 0  # [""]
        else:  # the empty pieces: one for a leading newline, one for a trailing one (a repeat)
            lead, trail = data[s] == 0x0A, data[e - 1] == 0x0A
            n_lines, rep_dup = k + lead + trail, 1 if lead and trail else 0
        rep_chars = fw_lines = fw_punct = fw_short = fw_chars = 0
        for j in range(k):
            if dup[j]:
                rep_dup += 1
                rep_chars += chars[j]
            if not blank[j]:
                fw_lines += 1
                last = data[ends[j] - 1]
                if last < 0x80:
                    fw_punct += (cls[last] & 2) != 0
                else:
                    cp, _ = _cp(data, _prev(data, ends[j]))
                    fw_punct += (cls[cp] & 2) != 0
                fw_short += chars[j] <= short_len
                if dup[j]:
                    fw_chars += chars[j]
        out[0, d], out[1, d], out[2, d] = n_lines, rep_dup, rep_chars
        out[3, d], out[4, d], out[5, d], out[6, d] = fw_lines, fw_punct, fw_short, fw_chars
    return out


@numba.njit(cache=True, nogil=True)
def _paragraphs(data, doc_c, cs, ce, nl, doc_n):
    """Per text, Gopher repetition's paragraphs (``re.split(r"\\n{2,}", text.strip())``, the
    stripped text running from the first chunk to the end of the last; cut at runs of two or
    more consecutive "\\n" bytes): count, repeats, characters of repeats."""
    n = len(doc_c) - 1
    out = np.zeros((3, n), np.int64)
    longest = 1
    for d in range(n):
        longest = max(longest, (doc_n[d + 1] - doc_n[d]) // 2 + 1)
    starts = np.empty(longest, np.int64)
    ends = np.empty(longest, np.int64)
    hashes = np.empty(longest, np.uint64)
    dup = np.empty(longest, np.bool_)
    size = _pow2(2 * longest)
    keys = np.empty(size, np.uint64)
    first = np.empty(size, np.int64)
    stamp = np.zeros(size, np.int64)
    for d in range(n):
        if doc_c[d + 1] == doc_c[d]:
            out[0, d] = 1  # [""]
            continue
        s, e = cs[doc_c[d]], ce[doc_c[d + 1] - 1]
        k = 0
        a = s
        j, j_end = doc_n[d], doc_n[d + 1]
        while j < j_end and nl[j, 0] < s:
            j += 1
        while j < j_end and nl[j, 0] < e:
            r = j
            while r + 1 < j_end and nl[r + 1, 0] == nl[r, 0] + 1:
                r += 1
            if r > j:  # a run of two or more newlines
                starts[k], ends[k], hashes[k] = a, nl[j, 0], _hash(data, a, nl[j, 0])
                k += 1
                a = nl[r, 0] + 1
            j = r + 1
        starts[k], ends[k], hashes[k] = a, e, _hash(data, a, e)
        k += 1
        _dup_flags(data, starts, ends, hashes, k, keys, first, stamp, d + 1, dup)
        n_dup = chars = 0
        for j in range(k):
            if dup[j]:
                n_dup += 1
                chars += _n_chars(data, starts[j], ends[j])
        out[0, d], out[1, d], out[2, d] = k, n_dup, chars
    return out


# --- C4 ----------------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _citation_end(buf, i, b, cls):
    """The end of a citation (``\\[\\d*]``, ``[edit]``, ``[citation needed]``) starting at ``i``
    (a "["), or -1."""
    j = i + 1
    while j < b:
        cp, k = _cp(buf, j)
        if not cls[cp] & 4:
            break
        j += k
    if j < b and buf[j] == 0x5D:
        return j + 1
    # "[edit]" and "[citation needed]"
    if b - i >= 6 and buf[i + 1] == 0x65 and buf[i + 2] == 0x64 and buf[i + 3] == 0x69 and buf[i + 4] == 0x74 \
            and buf[i + 5] == 0x5D:
        return i + 6
    if b - i >= 17 and _same(buf, i + 1, _CITATION_NEEDED, 0, 16):
        return i + 17
    return -1


@numba.njit(cache=True, nogil=True)
def _uncite(data, a, b, cls, out, p):
    """Copy ``data[a:b]`` to ``out`` from ``p`` on without its citations; returns the end."""
    i = a
    while i < b:
        if data[i] == 0x5B:
            end = _citation_end(data, i, b, cls)
            if end >= 0:
                i = end
                continue
        out[p] = data[i]
        p += 1
        i += 1
    return p


@numba.njit(cache=True, nogil=True)
def _has_citation(data, a, b, cls):
    for i in range(a, b):
        if data[i] == 0x5B and _citation_end(data, i, b, cls) >= 0:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _phrases(buf, a, b, low, phrase, phrase_off, phrase_kind, phrase_first):
    """Bit k set: the lower-cased line (Python's ``str.lower``) holds a phrase of kind k. Only
    ASCII, the Kelvin sign (to "k") and "İ" (to "i" and a combining dot) lower to ASCII."""
    m = 0
    i = a
    while i < b:
        c = buf[i]
        if c < 0x80:
            low[m] = c + 32 if 0x41 <= c <= 0x5A else c
            m += 1
            i += 1
        elif c == 0xE2 and buf[i + 1] == 0x84 and buf[i + 2] == 0xAA:
            low[m] = 0x6B
            m += 1
            i += 3
        elif c == 0xC4 and buf[i + 1] == 0xB0:
            low[m] = 0x69
            low[m + 1] = 0x80
            m += 2
            i += 2
        else:
            low[m] = 0x80
            m += 1
            i += 1
    found = 0
    for i in range(m):
        bits = phrase_first[low[i]] if low[i] < 0x80 else 0
        while bits:
            j = 0
            while not (bits >> j) & 1:
                j += 1
            bits &= ~(1 << j)
            ln = phrase_off[j + 1] - phrase_off[j]
            if i + ln <= m and _same(low, i, phrase, phrase_off[j], ln):
                found |= 1 << phrase_kind[j]
    return found


@numba.njit(cache=True, nogil=True)
def _line_marks(buf, a, b, line_bytes, lower, phrase, phrase_off, phrase_kind):
    """What C4 looks for in a line, in one pass: bits 0-2 the kinds of phrase found in the line
    lower-cased byte by byte (ASCII); 256 a "{"; 512 a "["; 1024 a Kelvin sign or "İ", the only
    non-ASCII characters ``str.lower`` turns into ASCII (then :func:`_phrases` decides)."""
    found = 0
    for i in range(a, b):
        f = line_bytes[buf[i]]
        if f == 0:
            continue
        if f >= 256:
            if f & 1024:
                if (buf[i] == 0xE2 and buf[i + 1] == 0x84 and buf[i + 2] == 0xAA) or \
                        (buf[i] == 0xC4 and buf[i + 1] == 0xB0):
                    found |= 1024
            else:
                found |= f & 768
            f &= 255
        j = 0
        while f:
            if f & 1:
                start = phrase_off[j]
                ln = phrase_off[j + 1] - start
                if i + ln <= b:
                    q = 1
                    while q < ln and lower[buf[i + q]] == phrase[start + q]:
                        q += 1
                    if q == ln:
                        found |= 1 << phrase_kind[j]
            f >>= 1
            j += 1
    return found


@numba.njit(cache=True, nogil=True)
def _terminal(buf, a, b):
    """datatrove's C4 end check: the line ends with . ? ! " or ' and not with "..."."""
    if b == a:
        return False
    last = buf[b - 1]
    return (last == 0x2E or last == 0x3F or last == 0x21 or last == 0x22 or last == 0x27) \
        and not _ends_with_dots(buf, a, b)


@numba.njit(cache=True, nogil=True)
def _c4_lines(data, offs, cls, lines, doc_l, cc, max_word, remove_citations, no_terminal, min_words, lorem_on,
              javascript_on, curly_on, policy_on, phrase, phrase_off, phrase_kind, phrase_first, line_bytes,
              lower):
    """datatrove's C4 line rules over each text's ``splitlines()`` lines, stripped: per text the
    lines removed (non-blank ones for the first three rules) and whether a line reaching those
    checks held "lorem ipsum" / "{"; and the kept lines as rows (text, start, end, first chunk,
    end chunk, 1 if citations were removed from it).

    The first three rules (a long word, no terminal mark, too few words) remove a line alike, so
    they run cheapest first; the end of a line can only change with its citations removed when
    a "]" is among its last three bytes, otherwise the end check reads the line as it is."""
    n = len(offs) - 1
    removed = np.zeros(n, np.int64)
    lorem = np.zeros(n, np.bool_)
    curly = np.zeros(n, np.bool_)
    kept = np.empty((max(16, len(cc) // 4), 6), np.int64)
    n_kept = 0
    longest = 0
    for d in range(n):
        longest = max(longest, offs[d + 1] - offs[d])
    scratch = np.zeros(longest + 16, np.uint8)
    low = np.empty(2 * longest + 2, np.uint8)
    for d in range(n):
        for r in range(doc_l[d], doc_l[d + 1]):
            a, b, c0, c1 = lines[r, 0], lines[r, 1], lines[r, 2], lines[r, 3]
            nonblank = b > a
            if min_words >= 0 and c1 - c0 < min_words:
                removed[d] += nonblank
                continue
            if max_word >= 0:
                too_long = False
                for q in range(c0, c1):
                    if cc[q] > max_word:
                        too_long = True
                        break
                if too_long:
                    removed[d] += nonblank
                    continue
            tail_bracket = remove_citations and (
                (b - 1 >= a and data[b - 1] == 0x5D) or (b - 2 >= a and data[b - 2] == 0x5D)
                or (b - 3 >= a and data[b - 3] == 0x5D))
            if no_terminal and not tail_bracket and not _terminal(data, a, b):
                removed[d] += nonblank
                continue
            marks = _line_marks(data, a, b, line_bytes, lower, phrase, phrase_off, phrase_kind)
            buf, la, lb, cited = data, a, b, 0
            if remove_citations and marks & 512 and _has_citation(data, a, b, cls):
                buf, la, lb, cited = scratch, 0, _uncite(data, a, b, cls, scratch, 0), 1
                marks = _line_marks(buf, la, lb, line_bytes, lower, phrase, phrase_off, phrase_kind)
            if no_terminal and tail_bracket and not _terminal(buf, la, lb):
                removed[d] += nonblank
                continue
            if marks & 1024:
                marks = (marks & 768) | _phrases(buf, la, lb, low, phrase, phrase_off, phrase_kind, phrase_first)
            if lorem_on and marks & 1:
                lorem[d] = True
                removed[d] += 1
                continue
            if javascript_on and marks & 2:
                removed[d] += 1
                continue
            if curly_on and marks & 256:
                curly[d] = True
                removed[d] += 1
                continue
            if policy_on and marks & 4:
                removed[d] += 1
                continue
            if n_kept == len(kept):
                grown = np.empty((2 * len(kept), 6), np.int64)
                grown[:n_kept] = kept
                kept = grown
            kept[n_kept, 0], kept[n_kept, 1], kept[n_kept, 2] = d, a, b
            kept[n_kept, 3], kept[n_kept, 4], kept[n_kept, 5] = c0, c1, cited
            n_kept += 1
    return removed, lorem, curly, kept[:n_kept]


@numba.njit(cache=True, nogil=True)
def _c4_kept(data, offs, cls, kept, ids, tok_at, tmark, tpunct, clean):
    """Over C4's kept lines: the sentences per text (spaCy's sentencizer over the lines' tokens;
    a line whose citations were removed has other chunks, so it is copied to ``mod_buf`` for
    Python, rows (text, start, end) in ``mod``), and with ``clean`` the cleaned texts (the kept
    lines joined by newlines, stripped) in ``out`` / ``out_off``, ``same`` where equal to the
    text."""
    n = len(offs) - 1
    sentences = np.zeros(n, np.int64)
    out = np.empty(offs[n] - offs[0] if clean else 0, np.uint8)
    out_off = np.zeros(n + 1, np.int64)
    same = np.zeros(n, np.bool_)
    mod_bytes = 0
    n_mod = 0
    for r in range(len(kept)):
        if kept[r, 5]:
            mod_bytes += kept[r, 2] - kept[r, 1]
            n_mod += 1
    mod_buf = np.empty(mod_bytes, np.uint8)
    mod = np.empty((n_mod, 3), np.int64)
    mp = 0
    n_mod = 0
    p = 0
    r = 0
    for d in range(n):
        p0 = p
        first = True
        while r < len(kept) and kept[r, 0] == d:
            a, b, c0, c1, cited = kept[r, 1], kept[r, 2], kept[r, 3], kept[r, 4], kept[r, 5]
            r += 1
            if clean:
                if not first:
                    out[p] = 0x0A
                    p += 1
                if cited:
                    p = _uncite(data, a, b, cls, out, p)
                else:
                    out[p:p + b - a] = data[a:b]
                    p += b - a
            first = False
            if cited:
                q = mp
                mp = _uncite(data, a, b, cls, mod_buf, mp)
                mod[n_mod, 0], mod[n_mod, 1], mod[n_mod, 2] = d, q, mp
                n_mod += 1
                continue
            count = 0
            mark = False
            for j in range(tok_at[c0], tok_at[c1]):
                t = ids[j]
                if count == 0:
                    count = 1
                if mark and not tmark[t] and not tpunct[t]:
                    count += 1
                    mark = False
                elif tmark[t]:
                    mark = True
            sentences[d] += count
        if clean:
            a = _ltrim(out, p0, p, cls)
            b = _rtrim(out, a, p, cls)
            for q in range(a, b):
                out[p0 + q - a] = out[q]
            p = p0 + b - a
            out_off[d + 1] = p
            same[d] = p - p0 == offs[d + 1] - offs[d] and _same(out, p0, data, offs[d], p - p0)
    return sentences, out[:p], out_off, same, mod_buf[:mp], mod[:n_mod]


# --- the families, from Python ------------------------------------------------------------------------

def _ratio(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """``part / whole`` per row (0.0 where ``whole`` is 0), as the reference's ``_ratio``: both
    are exact integers, so the float division rounds the same."""
    part = np.asarray(part, np.float64)
    whole = np.asarray(whole, np.float64)
    out = np.zeros(len(part))
    np.divide(part, whole, out=out, where=whole != 0)
    return out


def _scatter(values: dict[str, np.ndarray], schema: pa.Schema, rows: np.ndarray, n: int) -> pa.Table:
    """Metric columns for the checked rows ``rows`` spread over ``n`` rows (nulls elsewhere)."""
    if len(rows) == n:
        return pa.Table.from_arrays([pa.array(np.asarray(values[f.name]).astype(f.type.to_pandas_dtype()), f.type)
                                     for f in schema], schema=schema)
    mask = np.ones(n, bool)
    mask[rows] = False
    columns = []
    for field in schema:
        full = np.zeros(n, dtype=field.type.to_pandas_dtype())
        full[rows] = values[field.name]
        columns.append(pa.array(full, field.type, mask=mask))
    return pa.Table.from_arrays(columns, schema=schema)


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes followed by 16 zero bytes, int64 offsets) of a ``large_string`` array."""
    _, off_buf, data_buf = arr.buffers()
    offs = np.frombuffer(off_buf, np.int64)[arr.offset:arr.offset + len(arr) + 1]
    size = int(offs[-1]) if len(offs) else 0
    data = np.zeros(size + 16, np.uint8)  # padded: the kernels read whole words and a byte or two ahead
    if size:
        data[:size] = np.frombuffer(data_buf, np.uint8, count=size)
    return data, offs


class _Column:
    """One column of texts as the kernels see it: the buffers, the chunks, per-text counts and,
    once resolved against the chunk cache, the Gopher word sums and the tokens."""

    def __init__(self, texts: "list[str] | pa.Array"):
        self.arr = texts.cast(pa.large_string()) if isinstance(texts, pa.Array) else pa.array(texts, pa.large_string())
        self.n = len(texts)
        self.data, self.offs = _buffers(self.arr)
        self.cls = _char_classes()
        (self.cs, self.ce, self.cc, self.doc_c, self.brk, self.doc_b, self.nl, self.doc_n,
         counts) = _scan(self.data, self.offs, self.cls, _BYTES)
        self.chars, self.hashes, self.dots, self.hellips, self.newlines = counts
        self._lines: tuple[np.ndarray, np.ndarray] | None = None

    def lines(self) -> tuple[np.ndarray, np.ndarray]:
        """The ``str.splitlines()`` lines (:func:`_split_lines`)."""
        if self._lines is None:
            self._lines = _split_lines(self.offs, self.doc_c, self.cs, self.ce, self.brk, self.doc_b)
        return self._lines

    def resolve(self, need: np.ndarray, stop_words: Sequence[str]) -> None:
        self.cache = chunk_cache()  # token ids are this cache's: later lookups go to the same one
        self.words, self.ids, self.tok_at, self.tok_props = self.cache.resolve(
            self.data, self.cs, self.ce, self.doc_c, need, stop_words)
        self.tok_off = self.tok_at[self.doc_c]  # per text (all chunks need tokens when these are read)


def _gopher_quality_values(col: _Column) -> dict[str, np.ndarray]:
    words, chars, alpha, stop = col.words
    lines = _gopher_quality_lines(col.data, *col.lines(), col.cls, _BULLETS, _BULLET_MARKS)
    return {
        "heur_n_words": words,
        "heur_avg_word_length": _ratio(chars, words),
        "heur_symbol_word_ratio": _ratio(col.hashes + col.dots + col.hellips, words),
        "heur_bullet_lines_ratio": _ratio(lines[1], lines[0]),
        "heur_ellipsis_lines_ratio": _ratio(lines[2], lines[0]),
        "heur_alpha_words_ratio": _ratio(alpha, words),
        "heur_stop_words": stop,
    }


def _gopher_quality_datatrove_values(col: _Column, stop_words: Sequence[str]) -> dict[str, np.ndarray]:
    props = col.tok_props
    stop_list = sorted(set(stop_words))
    stop_idx = np.full(props.shape[1], -1, np.int64)
    for tid, j in col.cache.token_ids(stop_list):
        stop_idx[tid] = j
    out = _gopher_quality_datatrove(col.data, *col.lines(), col.tok_off, col.ids, props[0], props[3], props[4],
                                    stop_idx, len(stop_list))
    n_tokens = np.diff(col.tok_off)
    return {
        "heur_n_words": out[0],
        "heur_avg_word_length": _ratio(out[1], out[0]),
        "heur_symbol_word_ratio": _ratio(np.maximum(col.hashes, col.dots + col.hellips), n_tokens),
        "heur_bullet_lines_ratio": _ratio(out[5], out[4]),
        "heur_ellipsis_lines_ratio": _ratio(out[6], out[4]),
        "heur_alpha_words_ratio": _ratio(out[2], n_tokens),
        "heur_stop_words": out[3],
    }


def _gopher_repetition_values(col: _Column, pieces: np.ndarray) -> dict[str, np.ndarray]:
    n_chars = col.chars
    out: dict[str, np.ndarray] = {"heur_n_chars": n_chars}
    paras = _paragraphs(col.data, col.doc_c, col.cs, col.ce, col.nl, col.doc_n)
    out["heur_dup_para_frac"] = _ratio(paras[1], paras[0])
    out["heur_dup_para_char_frac"] = _ratio(paras[2], n_chars)
    out["heur_dup_line_frac"] = _ratio(pieces[1], pieces[0])
    out["heur_dup_line_char_frac"] = _ratio(pieces[2], n_chars)
    max_n = max(*rules.TOP_NGRAMS, *rules.DUP_NGRAMS)
    is_top = np.zeros(max_n + 1, np.bool_)
    is_top[list(rules.TOP_NGRAMS)] = True
    is_dup = np.zeros(max_n + 1, np.bool_)
    is_dup[list(rules.DUP_NGRAMS)] = True
    props = col.tok_props
    top, dup = _ngram_chars(col.tok_off, col.ids, props[0], props.shape[1], is_top, is_dup, max_n)
    for k in rules.TOP_NGRAMS:
        out[f"heur_top_{k}_gram_char_frac"] = _ratio(top[k - 2], n_chars)
    for k in rules.DUP_NGRAMS:
        out[f"heur_dup_{k}_gram_char_frac"] = _ratio(dup[k - 2], n_chars)
    return out


def _fineweb_values(col: _Column, pieces: np.ndarray) -> dict[str, np.ndarray]:
    lines = pieces[3]
    tok_off = col.tok_off
    return {
        "heur_fw_lines": lines,
        "heur_fw_line_punct_ratio": _ratio(pieces[4], lines),
        "heur_fw_short_line_ratio": _ratio(pieces[5], lines),
        "heur_fw_char_dup_ratio": _ratio(pieces[6], col.chars - col.newlines),
        "heur_fw_list_ratio": _ratio(col.newlines, np.diff(tok_off)),
    }


def _c4_line_rules(col: _Column, cfg: C4Config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    def bound(value: int | None) -> int:
        return -1 if value is None else int(value)

    return _c4_lines(col.data, col.offs, col.cls, *col.lines(), col.cc, bound(cfg.max_word_length),
                     cfg.remove_citations, cfg.filter_no_terminal_punct, bound(cfg.min_words_per_line),
                     cfg.filter_lorem_ipsum, cfg.filter_javascript, cfg.filter_curly_bracket, cfg.filter_policy,
                     _PHRASE_BYTES, _PHRASE_OFF, _PHRASE_KIND, _PHRASE_FIRST, _LINE_BYTES, _LOWER)


def _c4_values(col: _Column, cfg: C4Config, lines: tuple, texts: list[str]
               ) -> tuple[dict[str, np.ndarray], list[str] | None]:
    removed, lorem, curly, kept = lines
    props = col.tok_props
    sentences, out, out_off, same, mod_buf, mod = _c4_kept(
        col.data, col.offs, col.cls, kept, col.ids, col.tok_at, props[1], props[2], cfg.clean_lines)
    if len(mod):
        raw = mod_buf.tobytes()
        for d, a, b in mod.tolist():  # lines whose citations were removed: their own chunks
            sentences[d] += wordtok.count_sentences(raw[a:b].decode("utf-8"))
    cleaned = None
    if cfg.clean_lines:
        changed = np.flatnonzero(~same)
        cleaned = list(texts)
        if len(changed):
            arr = pa.LargeStringArray.from_buffers(col.n, pa.py_buffer(out_off), pa.py_buffer(out))
            for i, text in zip(changed.tolist(), arr.take(pa.array(changed)).to_pylist()):
                cleaned[i] = text
    return {"heur_c4_sentences": sentences, "heur_c4_lorem_ipsum": lorem, "heur_c4_curly_bracket": curly,
            "heur_c4_lines_removed": removed}, cleaned


def bulk_metrics(texts: "Sequence[str | None] | pa.Array", cfg: HeuristicsConfig
                 ) -> tuple[dict[str, pa.Table], list[str | None] | None]:
    """What :func:`heuristics.reference_metrics` returns, computed in bulk. ``texts`` may be an
    Arrow string array (nulls: rows not checked), read without a Python string per row; the
    cleaned texts are then returned only when C4 cleans lines (None otherwise)."""
    n = len(texts)
    gq, rep, c4, fw = cfg.gopher_quality, cfg.gopher_repetition, cfg.c4, cfg.fineweb_quality
    c4_cleans = c4.enabled and c4.clean_lines
    if isinstance(texts, pa.Array):
        valid = texts.is_valid().to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(valid)
        rows_list = rows.tolist()
        column = texts.filter(pa.array(valid))
        cleaned: list[str | None] | None = texts.to_pylist() if c4_cleans else None
        checked = [cleaned[i] for i in rows_list] if cleaned is not None else []
    else:
        rows_list = [i for i, t in enumerate(texts) if t is not None]
        rows = np.array(rows_list, np.int64)
        checked = column = [texts[i] for i in rows_list]
        cleaned = list(texts)
    out: dict[str, pa.Table] = {}
    if not (gq.enabled or rep.enabled or c4.enabled or fw.enabled):
        return out, cleaned
    col = _Column(column)
    datatrove_gq = gq.enabled and gq.definitions == "datatrove"
    all_tokens = rep.enabled or fw.enabled or datatrove_gq
    # what each chunk needs from the cache: 2 its tokens, 1 its Gopher word only, 0 nothing
    need = np.full(len(col.cs), 2 if all_tokens else 1 if gq.enabled else 0, np.int8)
    c4_lines = None
    if c4.enabled:
        c4_lines = _c4_line_rules(col, c4)
        if not all_tokens:  # C4 alone tokenizes only the kept lines
            kept = c4_lines[3]
            kept = kept[kept[:, 5] == 0]
            m = len(col.cs)
            inside = np.cumsum(np.bincount(kept[:, 3], minlength=m + 1) - np.bincount(kept[:, 4], minlength=m + 1))
            need[inside[:m] > 0] = 2
    col.resolve(need, gq.stop_words if gq.enabled and not datatrove_gq else ())
    if gq.enabled:
        values = _gopher_quality_datatrove_values(col, gq.stop_words) if datatrove_gq \
            else _gopher_quality_values(col)
        out["gopher_quality"] = _scatter(values, rules.METRICS_SCHEMA, rows, n)
    pieces = _newline_pieces(col.data, col.offs, col.cls, col.chars, col.doc_c, col.cs, col.ce, col.nl, col.doc_n,
                             fw.short_line_length) \
        if (rep.enabled or fw.enabled) else None
    if rep.enabled:
        out["gopher_repetition"] = _scatter(_gopher_repetition_values(col, pieces), rules.GOPHER_REPETITION_SCHEMA,
                                            rows, n)
    if c4.enabled:
        values, c4_cleaned = _c4_values(col, c4, c4_lines, checked)
        out["c4"] = _scatter(values, rules.C4_SCHEMA, rows, n)
        if c4_cleaned is not None and cleaned is not None:
            for i, text in zip(rows_list, c4_cleaned):
                cleaned[i] = text
    if fw.enabled:
        out["fineweb_quality"] = _scatter(_fineweb_values(col, pieces), rules.FINEWEB_SCHEMA, rows, n)
    return out, cleaned
