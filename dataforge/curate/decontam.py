"""Benchmark decontamination: drop samples that contain a benchmark item.

The method is Cosmopedia's (``decontamination/decontaminate.py``): every benchmark item's word
n-grams go into an index; a sample sharing an n-gram with an item is a *candidate*, and a
candidate is confirmed with a sequence match (difflib): the sample is contaminated when the
matching blocks (of at least ``min_block`` words) cover more than ``match_fraction`` (0.5) of
the item's words. Settings and the measured reasons for their defaults are
:class:`dataforge.config.DecontamConfig`.

Text is compared after :func:`normalize_words`: NFKC, lower case, punctuation to spaces (the
normalization of dedup), digit runs read as ``0`` when ``ignore_numbers`` (an item re-posed
with other numbers is the same item), split on whitespace. An item with fewer words than
``ngram`` is indexed by its whole word sequence.

Two implementations of one specification:

* :func:`scan` — the fast path. Words are normalized and split by Arrow compute kernels,
  mapped to the benchmark vocabulary (``pc.index_in``; a word no item has can never be part of
  a match), n-grams hashed to uint64 with numpy (a sum of per-word random values times
  per-position odd constants), looked up with ``searchsorted`` in the sorted index, and only
  candidate (sample, item) pairs are confirmed, by a compiled (numba) copy of difflib's
  ``get_matching_blocks`` on word ids (:func:`matched_words`; difflib took 70% of the scan).
* :func:`reference_scan` — plain Python: tuples of words in a dict, then the same difflib
  confirmation. ``tests/test_decontam.py`` checks the two agree.

The confirmation compares the item with a *window* of the sample: from ``len(item)`` words
before the first shared n-gram to ``len(item)`` words after the last. A rewording can shift a
planted item by a few words but not by a whole item's length, and in a long sample the
window keeps difflib from collecting scattered common words ("the", "of", "how many") from all
over a textbook chapter into a spurious half of the item.

The stage is declared per shard (``scope="shard"`` in dataforge/stages/decontam.py): each row is decided alone, so
shards fan out; the index is built once per process per benchmark set (:func:`index_for`,
cached on the files' paths, sizes and modification times) — about 0.4 s for GSM8K test +
MultiArith + SVAMP. Dropped rows carry ``contam_benchmark``, ``contam_item`` (the item's
0-based record index in its file: JSON array index; for JSON lines the 0-based line of the
file, blank lines counted; Parquet row),
``contam_excerpt`` (the item's first 100 characters), ``contam_fraction``, and
``drop_reason = "contaminated:<benchmark>:<item>"``. Every row carries ``contam_max_fraction``:
the highest fraction of any candidate item (0 when the row shares no n-gram with any item), so
a kept row's near miss can be inspected and the cut re-chosen without a rescan.
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from dataforge.config import BenchmarkSource, ConfigError, DecontamConfig, PipelineConfig, format_validation_error
from dataforge.curate.dedup import normalize_for_dedup
from dataforge.hashing import file_sha256
from dataforge.records import with_drop
from dataforge.tabular import InputError, read_text_table

log = logging.getLogger("dataforge.decontam")

STAGE = "decontam"
REASON_PREFIX = "contaminated:"
COLUMN_PREFIX = "contam_"
EXCERPT_CHARS = 100
BATCH_ROWS = 20_000  # rows scanned at once

# named layouts and the file-name / benchmark-name hints that pick them under format "auto"
_NAMED_FORMATS = ("gsm8k", "multiarith", "addsub", "singleeq", "svamp", "aqua", "commonsenseqa", "strategyqa")
_HASH_SEED = 0x5DEECE66D  # fixed: hashes are internal, but runs should be reproducible bit for bit


class DecontamError(ConfigError):
    """A benchmark that cannot be used (missing file, unknown layout, no items, bad field)."""


# --- normalization ---------------------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]+")


def normalize_words(text: str, ignore_numbers: bool = True) -> list[str]:
    """The words of ``text`` as decontamination compares them (the reference definition)."""
    norm = normalize_for_dedup(text)
    if ignore_numbers:
        norm = _DIGITS.sub("0", norm)
    return norm.split()


def normalized_word_lists(texts: pa.Array | pa.ChunkedArray, ignore_numbers: bool = True) -> pa.ListArray:
    """:func:`normalize_words` of every text in bulk, with Arrow kernels (null → no words).
    ``\\p{P}`` is the Unicode punctuation category that ``normalize_for_dedup`` maps to spaces."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    t = pc.utf8_lower(pc.utf8_normalize(texts, "NFKC"))
    t = pc.replace_substring_regex(t, r"\p{P}", " ")
    if ignore_numbers:
        t = pc.replace_substring_regex(t, r"[0-9]+", "0")
    # trimmed first: a trailing space would split off a "" word; an empty text still gives [""]
    lists = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(t))
    flat, offsets = _flat(lists)
    keep = pc.not_equal(flat, "")
    if len(flat) and not pc.all(keep).as_py():
        counts = np.concatenate([[0], np.cumsum(keep.to_numpy(zero_copy_only=False), dtype=np.int64)])
        lists = pa.ListArray.from_arrays(pa.array(counts[offsets], pa.int32()), flat.filter(keep),
                                         mask=pc.is_null(texts))
    return lists


# --- benchmark items -------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchmarkItems:
    """The items of one benchmark: their text and their key (0-based record index)."""

    name: str
    texts: list[str]
    keys: list[str]
    quarantined: int = 0


def resolve_format(src: BenchmarkSource, path: Path) -> str:
    """``auto`` → a named layout hinted by the file name, then by the benchmark's name; else table."""
    if src.format != "auto":
        return src.format
    if path.suffix.lower() == ".parquet":
        return "table"
    for hint in (path.name.lower(), src.name.lower()):
        for fmt in _NAMED_FORMATS:
            if fmt in hint:
                return fmt
    return "table"


def _quiet_duplicates(record: logging.LogRecord) -> bool:
    """Logging filter: a benchmark repeating a question (MultiArith does, 20 times) is no news."""
    return "duplicate question" not in record.getMessage()


def load_benchmark(src: BenchmarkSource, path: Path) -> BenchmarkItems:
    """Read one benchmark's items with the seed loaders (named layouts) or ``read_text_table``
    (``table``). Records that cannot be read are logged and counted, never indexed."""
    from dataforge.generate.seeds import SeedFormatError, load_gsm8k_jsonl, load_seed_file

    if not path.exists():
        raise DecontamError(f"benchmark {src.name!r}: file not found: {path}")
    fmt = resolve_format(src, path)
    if src.text_field is not None and fmt not in ("gsm8k", "table"):
        raise DecontamError(f"benchmark {src.name!r}: text_field applies to the gsm8k and table formats, "
                            f"not {fmt!r} (its question field is fixed)")
    seeds_log = logging.getLogger("dataforge.seeds")
    seeds_log.addFilter(_quiet_duplicates)
    try:
        if fmt == "table":
            table, bad = read_text_table(path, src.text_field or "text", keep_columns=False)
            texts = table.column("text").to_pylist()
            keys = [str(r - 1) for r in table.column("source_row").to_pylist()]
            items = BenchmarkItems(src.name, texts, keys, len(bad))
        else:
            if fmt == "gsm8k":
                # answers play no part in matching: an answer field no record has makes every
                # record a question without gold, so an odd answer never keeps an item out
                seeds, bad = load_gsm8k_jsonl(path, question_field=src.text_field or "question",
                                              answer_field="\x00no answer field")
            else:
                seeds, bad = load_seed_file(path, fmt)
            keys = [str(s.record if s.record is not None else s.line - 1) for s in seeds]
            # a question repeated inside a benchmark is indexed once, under its first record
            bad = [q for q in bad if not q.reason.startswith("duplicate question")]
            items = BenchmarkItems(src.name, [s.question for s in seeds], keys, len(bad))
    except (InputError, SeedFormatError, FileNotFoundError) as err:
        raise DecontamError(f"benchmark {src.name!r}: {err}") from None
    finally:
        seeds_log.removeFilter(_quiet_duplicates)
    if items.quarantined:
        log.warning("benchmark %s: %d records of %s could not be read and are not indexed",
                    src.name, items.quarantined, path)
    if not items.texts:
        why = f"; line {bad[0].line}: {bad[0].reason}" if bad else ""
        raise DecontamError(f"benchmark {src.name!r}: no items read from {path} (format {fmt}{why})")
    return items


# --- the index -------------------------------------------------------------------------------

@dataclass
class BenchmarkIndex:
    """Every item's words (as ids into ``vocab``) and its n-gram hashes, sorted for lookup.

    ``tables[m]`` = (sorted hashes, item of each hash) for the m-grams of items with at least
    ``ngram`` words (m = ngram) or the whole word sequence of shorter items (m = their length)."""

    ngram: int
    ignore_numbers: bool
    min_block: int
    names: list[str]  # benchmark of each item
    keys: list[str]
    excerpts: list[str]
    words: list[list[str]]  # normalized words of each item (the reference path reads these)
    tokens: np.ndarray  # int64 word ids of all items, concatenated
    offsets: np.ndarray  # item i is tokens[offsets[i]:offsets[i + 1]]
    vocab: pa.Array
    values: np.ndarray  # uint64 random value of each vocab word
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    run_length: dict[int, np.ndarray] = field(default_factory=dict)  # per table entry: entries with its hash
    quarantined: dict[str, int] = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.keys)



def _multipliers(n: int) -> np.ndarray:
    rng = np.random.default_rng(_HASH_SEED + 1)
    return rng.integers(1, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd


def _word_values(n: int) -> np.ndarray:
    return np.random.default_rng(_HASH_SEED).integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)


def _flat(lists: pa.ListArray) -> tuple[pa.Array, np.ndarray]:
    """The words of a list array and each list's start offset (length len + 1)."""
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return lists.flatten(), offsets


def _gram_hashes(values: np.ndarray, m: int) -> np.ndarray:
    """Hash of the m-gram starting at every position (positions past len - m are absent)."""
    n = len(values) - m + 1
    if n <= 0:
        return np.zeros(0, np.uint64)
    mult = _multipliers(m)
    h = values[:n] * mult[0]
    for k in range(1, m):
        h += values[k: k + n] * mult[k]
    return h


def _valid_starts(offsets: np.ndarray, unknown: np.ndarray | None, m: int) -> np.ndarray:
    """Start positions of the m-grams that lie inside one document and contain no unknown word."""
    total = int(offsets[-1])
    if total < m:
        return np.zeros(0, np.int64)
    starts = np.arange(total - m + 1, dtype=np.int64)
    doc_end = np.repeat(offsets[1:], np.diff(offsets))  # end of each word's document
    ok = starts + m <= doc_end[starts]
    if unknown is not None:
        bad = np.concatenate([[0], np.cumsum(unknown, dtype=np.int64)])
        ok &= bad[starts + m] == bad[starts]
    return starts[ok]


def build_index(benchmarks: Sequence[BenchmarkItems], ngram: int, ignore_numbers: bool = False,
                min_block: int = 1) -> BenchmarkIndex:
    """Index the items of ``benchmarks`` (in order; an item's global index is its position)."""
    names = [b.name for b in benchmarks for _ in b.texts]
    keys = [k for b in benchmarks for k in b.keys]
    texts = [t for b in benchmarks for t in b.texts]
    lists = normalized_word_lists(pa.array(texts, pa.string()), ignore_numbers)
    flat, offsets = _flat(lists)
    vocab = pc.unique(flat)
    tokens = pc.index_in(flat, value_set=vocab).to_numpy(zero_copy_only=False).astype(np.int64)
    values = _word_values(len(vocab))
    lengths = np.diff(offsets)
    index = BenchmarkIndex(ngram, ignore_numbers, min_block, names, keys, [t.strip()[:EXCERPT_CHARS] for t in texts],
                           lists.to_pylist(), tokens, offsets, vocab, values,
                           quarantined={b.name: b.quarantined for b in benchmarks if b.quarantined})
    token_values = values[tokens]
    item_of = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    for m in sorted({int(x) for x in np.minimum(lengths, ngram) if x > 0}):
        starts = _valid_starts(offsets, None, m)
        owner = item_of[starts]
        # m-grams of items whose gram length is m: all of a long item's n-grams (m == ngram), or
        # the one whole-item gram of a short item (m == its length, at its first word)
        keep = np.minimum(lengths[owner], ngram) == m
        starts, owner = starts[keep], owner[keep]
        h = _gram_hashes(token_values, m)[starts]
        order = np.lexsort((owner, h))
        h, owner = h[order], owner[order]
        first = np.ones(len(h), bool)
        first[1:] = (h[1:] != h[:-1]) | (owner[1:] != owner[:-1])
        h, owner = h[first], owner[first]
        index.tables[m] = (h, owner)
        # at the first entry of each run of equal hashes: the run's length (searchsorted "left" lands there)
        run_start = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
        lengths_of_runs = np.diff(np.concatenate([run_start, [len(h)]]))
        index.run_length[m] = np.repeat(lengths_of_runs, lengths_of_runs)
    empty = int((lengths == 0).sum())
    if empty:
        log.warning("%d benchmark items have no words after normalization and are not indexed", empty)
    return index


def load_index(sources: Sequence[BenchmarkSource], resolve: Callable[[str], Path], ngram: int,
               ignore_numbers: bool = False, min_block: int = 1) -> BenchmarkIndex:
    """Read and index the named benchmark files (uncached)."""
    items = [load_benchmark(src, resolve(src.path)) for src in sources]
    return build_index(items, ngram, ignore_numbers, min_block)


def _file_state(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return str(path), -1, -1
    return str(path), st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _cached_index(sources: tuple[tuple[str, str, str | None, str], ...], states: tuple, ngram: int,
                  ignore_numbers: bool, min_block: int) -> BenchmarkIndex:
    srcs = [BenchmarkSource(name=n, path=p, format=f, text_field=t) for n, p, t, f in sources]
    return load_index(srcs, Path, ngram, ignore_numbers, min_block)


def index_for(cfg: PipelineConfig) -> BenchmarkIndex:
    """The index of ``cfg.decontam.benchmarks`` (paths resolved against the YAML), built once per
    process for the same files (same paths, sizes and modification times) and settings."""
    d = cfg.decontam
    paths = [cfg.resolve_path(b.path) for b in d.benchmarks]
    sources = tuple((b.name, str(p), b.text_field, b.format) for b, p in zip(d.benchmarks, paths))
    return _cached_index(sources, tuple(_file_state(p) for p in paths), d.ngram, d.ignore_numbers, d.min_block)


def decontam_stage_inputs(cfg: PipelineConfig) -> dict | None:
    """What the stage depends on besides its config: the benchmark files' content (sha256), so
    editing a benchmark file re-runs the stage on resume."""
    if not cfg.decontam.enabled:
        return None
    out = {}
    for b in cfg.decontam.benchmarks:
        p = cfg.resolve_path(b.path)
        out[b.name] = file_sha256(p) if p.exists() else "missing"
    return out


# --- scanning --------------------------------------------------------------------------------

@dataclass
class ScanResult:
    """Per document: the best candidate item (-1: none) and its matched fraction (0: none)."""

    item: np.ndarray  # int64
    fraction: np.ndarray  # float64
    candidates: int = 0  # (document, item) pairs confirmed with difflib


def matched_fraction(item: Sequence, window: Sequence, min_block: int = 1) -> float:
    """Cosmopedia's test: the share of ``item``'s words covered by difflib's matching blocks
    against ``window``, counting blocks of at least ``min_block`` words (no autojunk: common
    words are content here, and the window is short)."""
    if not item:
        return 0.0
    sm = difflib.SequenceMatcher(None, item, window, autojunk=False)
    return sum(b.size for b in sm.get_matching_blocks() if b.size >= min_block) / len(item)


@njit(nogil=True, cache=True)
def _longest_match(a, b, alo, ahi, blo, bhi, prev, cur):  # pragma: no cover (compiled)
    """difflib's ``find_longest_match`` without junk: the longest common block of a[alo:ahi] and
    b[blo:bhi], the first one scanning i then j upwards on ties (difflib's order), by the dense
    dynamic programme over common-suffix lengths. ``prev``/``cur`` are scratch of len(b) + 1."""
    besti, bestj, bestsize = alo, blo, 0
    for j in range(blo, bhi + 1):
        prev[j] = 0
    for i in range(alo, ahi):
        cur[blo] = 0
        ai = a[i]
        for j in range(blo, bhi):
            if ai == b[j]:
                k = prev[j] + 1
                cur[j + 1] = k
                if k > bestsize:
                    besti, bestj, bestsize = i - k + 1, j - k + 1, k
            else:
                cur[j + 1] = 0
        prev, cur = cur, prev
    return besti, bestj, bestsize


@njit(nogil=True, cache=True)
def matched_words(a, b, min_block):  # pragma: no cover (compiled)
    """``matched_fraction(a, b, min_block) * len(a)``: difflib's ``get_matching_blocks`` (recursive
    longest blocks, adjacent blocks merged) summed over blocks of at least ``min_block``."""
    la, lb = len(a), len(b)
    prev = np.zeros(lb + 1, np.int64)
    cur = np.zeros(lb + 1, np.int64)
    stack = np.empty((2 * la + 2, 4), np.int64)
    blocks = np.empty((la + 1, 3), np.int64)
    stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = 0, la, 0, lb
    top, nb = 1, 0
    while top > 0:
        top -= 1
        alo, ahi, blo, bhi = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
        i, j, k = _longest_match(a, b, alo, ahi, blo, bhi, prev, cur)
        if k > 0:
            blocks[nb, 0], blocks[nb, 1], blocks[nb, 2] = i, j, k
            nb += 1
            if alo < i and blo < j:
                stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = alo, i, blo, j
                top += 1
            if i + k < ahi and j + k < bhi:
                stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = i + k, ahi, j + k, bhi
                top += 1
    order = np.argsort(blocks[:nb, 0])
    total, run_i, run_j, run_k = 0, -1, -1, 0
    for t in range(nb):
        i, j, k = blocks[order[t], 0], blocks[order[t], 1], blocks[order[t], 2]
        if run_k > 0 and run_i + run_k == i and run_j + run_k == j:
            run_k += k  # adjacent equal blocks are one block, as difflib reports them
        else:
            if run_k >= min_block:
                total += run_k
            run_i, run_j, run_k = i, j, k
    if run_k >= min_block:
        total += run_k
    return total


@njit(nogil=True, cache=True)
def _confirm(item_tokens, item_offsets, doc_tokens, pair_item, lo, hi, min_block):  # pragma: no cover
    """The matched fraction of every candidate pair: item ``pair_item[p]`` against
    ``doc_tokens[lo[p]:hi[p]]``."""
    out = np.zeros(len(pair_item), np.float64)
    for p in range(len(pair_item)):
        a = item_tokens[item_offsets[pair_item[p]]: item_offsets[pair_item[p] + 1]]
        if len(a):
            out[p] = matched_words(a, doc_tokens[lo[p]: hi[p]], min_block) / len(a)
    return out


def _window(doc_len: int, first: int, last: int, gram: int, item_len: int) -> tuple[int, int]:
    return max(0, first - item_len), min(doc_len, last + gram + item_len)


def _best(results: dict[int, float]) -> tuple[int, float]:
    """Highest fraction; ties go to the earliest item."""
    if not results:
        return -1, 0.0
    item = min(results, key=lambda i: (-results[i], i))
    return item, results[item]


def scan(index: BenchmarkIndex, docs: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> ScanResult:
    """The fast path: the best-matching item of every document (see the module docstring)."""
    if not isinstance(docs, (pa.Array, pa.ChunkedArray)):
        docs = pa.array(list(docs), pa.string())
    n_docs = len(docs)
    best_item = np.full(n_docs, -1, np.int64)
    best_frac = np.zeros(n_docs, np.float64)
    if n_docs == 0:
        return ScanResult(best_item, best_frac)
    flat, offsets = _flat(normalized_word_lists(docs, index.ignore_numbers))
    ids = pc.index_in(flat, value_set=index.vocab).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    unknown = ids < 0
    values = np.where(unknown, np.uint64(0), index.values[np.maximum(ids, 0)]) if len(ids) else np.zeros(0, np.uint64)

    hit_doc, hit_item, hit_pos = [], [], []
    for m, (table_hash, table_item) in index.tables.items():
        starts = _valid_starts(offsets, unknown, m)
        if not len(starts) or not len(table_hash):
            continue
        h = _gram_hashes(values, m)[starts]
        lo = np.searchsorted(table_hash, h, side="left")
        hit = table_hash[np.minimum(lo, len(table_hash) - 1)] == h
        if not hit.any():
            continue
        starts, lo = starts[hit], lo[hit]
        count = index.run_length[m][lo]  # items sharing this hash
        rep = np.repeat(np.arange(len(starts)), count)
        within = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        hit_item.append(table_item[lo[rep] + within])
        hit_pos.append(starts[rep])
        hit_doc.append(np.searchsorted(offsets, starts[rep], side="right") - 1)
    if not hit_doc:
        return ScanResult(best_item, best_frac)
    doc = np.concatenate(hit_doc)
    item = np.concatenate(hit_item)
    pos = np.concatenate(hit_pos)
    # one candidate per (document, item): the first and last shared gram's position
    key = doc * index.num_items + item
    order = np.lexsort((pos, key))
    key, pos = key[order], pos[order]
    starts_of = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    ends_of = np.concatenate([starts_of[1:], [len(key)]]) - 1
    pair_key, first, last = key[starts_of], pos[starts_of], pos[ends_of]
    pair_doc, pair_item = pair_key // index.num_items, pair_key % index.num_items

    # the window of each pair (as _window, in bulk), then every pair confirmed in compiled code
    item_len = np.diff(index.offsets)[pair_item]
    gram = np.minimum(item_len, index.ngram)
    lo = np.maximum(offsets[pair_doc], first - item_len)
    hi = np.minimum(offsets[pair_doc + 1], last + gram + item_len)
    frac = _confirm(index.tokens, index.offsets, ids, pair_item, lo, hi, index.min_block)
    # best per document: highest fraction, then earliest item (pairs are sorted by doc, item)
    order = np.lexsort((pair_item, -frac, pair_doc))
    pair_doc, pair_item, frac = pair_doc[order], pair_item[order], frac[order]
    head = np.concatenate([[True], pair_doc[1:] != pair_doc[:-1]])
    best_item[pair_doc[head]], best_frac[pair_doc[head]] = pair_item[head], frac[head]
    return ScanResult(best_item, best_frac, candidates=len(pair_key))


def reference_scan(index: BenchmarkIndex, docs: Sequence[str | None]) -> ScanResult:
    """The readable path (tuples of words in a dict, then difflib); the fast path is tested
    against it. Only ``index``'s words, names and settings are used, not its hashes."""
    grams: dict[tuple[str, ...], list[int]] = {}
    for i, words in enumerate(index.words):
        if not words:
            continue
        m = min(index.ngram, len(words))
        for s in range(len(words) - m + 1 if m == index.ngram else 1):
            grams.setdefault(tuple(words[s: s + m]), []).append(i)
    lengths = sorted({min(index.ngram, len(w)) for w in index.words if w})
    best_item = np.full(len(docs), -1, np.int64)
    best_frac = np.zeros(len(docs), np.float64)
    candidates = 0
    for d, text in enumerate(docs):
        words = normalize_words(text or "", index.ignore_numbers)
        spans: dict[int, list[int]] = {}
        for m in lengths:
            for s in range(len(words) - m + 1):
                for i in grams.get(tuple(words[s: s + m]), ()):
                    if min(index.ngram, len(index.words[i])) == m:
                        spans.setdefault(i, []).append(s)
        results = {}
        for i, positions in spans.items():
            item_words = index.words[i]
            a, b = _window(len(words), min(positions), max(positions), min(index.ngram, len(item_words)),
                           len(item_words))
            results[i] = matched_fraction(item_words, words[a:b], index.min_block)
        candidates += len(results)
        best_item[d], best_frac[d] = _best(results)
    return ScanResult(best_item, best_frac, candidates)


# --- the stage -------------------------------------------------------------------------------

def field_texts(table: pa.Table, name: str) -> pa.Array:
    """A column as one string per row: a string column as is, chat messages (list of
    ``{role, content}``) or a list of strings joined with newlines."""
    col = table.column(name)
    arr = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return arr
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        values = arr.values
        if pa.types.is_struct(values.type) and values.type.get_field_index("content") >= 0:
            values = pc.struct_field(values, "content")
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            joined = pc.binary_join(type(arr).from_arrays(arr.offsets, values), "\n")
            return pc.if_else(pc.is_null(arr), pa.scalar(None, joined.type), joined)
    raise DecontamError(f"decontam.fields: column {name!r} is {t}; expected text, a list of text, "
                        "or chat messages ({role, content})")


def scan_table(table: pa.Table, cfg: DecontamConfig, index: BenchmarkIndex,
               advance: Callable[[], None] | None = None, batch_rows: int = BATCH_ROWS) -> ScanResult:
    """The best item and fraction of every row over its ``cfg.fields`` (columns the table
    lacks are skipped; none present is an error), ``batch_rows`` rows at a time (memory stays
    bounded on a large file); ``advance()`` is called after each batch."""
    fields = [f for f in cfg.fields if f in table.column_names]
    if not fields:
        raise DecontamError(f"decontam.fields: none of {cfg.fields} is a column of the input "
                            f"(columns: {', '.join(table.column_names)})")
    n = table.num_rows
    best_item = np.full(n, -1, np.int64)
    best_frac = np.zeros(n, np.float64)
    candidates = 0
    for lo in range(0, n, batch_rows):
        part = table.slice(lo, batch_rows)
        for f in fields:
            r = scan(index, field_texts(part, f))
            candidates += r.candidates
            seg_i, seg_f = best_item[lo: lo + part.num_rows], best_frac[lo: lo + part.num_rows]
            better = (r.fraction > seg_f) | ((r.fraction == seg_f) & (r.item >= 0)
                                             & ((seg_i < 0) | (r.item < seg_i)))
            seg_i[better], seg_f[better] = r.item[better], r.fraction[better]
        if advance:
            advance()
    return ScanResult(best_item, best_frac, candidates)


def decontaminate(table: pa.Table, cfg: DecontamConfig, index: BenchmarkIndex,
                  advance: Callable[[], None] | None = None, batch_rows: int = BATCH_ROWS) -> tuple[pa.Table, pa.Table]:
    """Split ``table`` into kept rows and contaminated rows (see the module docstring)."""
    table = table.drop_columns([c for c in table.column_names if c.startswith(COLUMN_PREFIX)])
    if table.num_rows == 0:
        r = ScanResult(np.zeros(0, np.int64), np.zeros(0, np.float64))
    else:
        r = scan_table(table, cfg, index, advance, batch_rows)
    drop = r.fraction > cfg.match_fraction
    rows = np.flatnonzero(drop)
    item = r.item[rows]
    names = [index.names[i] for i in item.tolist()]
    keys = [index.keys[i] for i in item.tolist()]
    out = table.append_column(pa.field("contam_max_fraction", pa.float64()), pa.array(r.fraction, pa.float64()))
    kept = out.filter(pa.array(~drop))
    rejected = out.filter(pa.array(drop))
    extra = {
        "contam_benchmark": (pa.string(), names),
        "contam_item": (pa.string(), keys),
        "contam_excerpt": (pa.string(), [index.excerpts[i] for i in item.tolist()]),
        "contam_fraction": (pa.float64(), r.fraction[rows].tolist()),
    }
    for name, (typ, values) in extra.items():
        kept = kept.append_column(pa.field(name, typ), pa.nulls(kept.num_rows, typ))
        rejected = rejected.append_column(pa.field(name, typ), pa.array(values, typ))
    reasons = [f"{REASON_PREFIX}{b}:{k}" for b, k in zip(names, keys)]
    return kept, with_drop(rejected, STAGE, reasons)


def apply_decontam(table: pa.Table, cfg: PipelineConfig) -> tuple[pa.Table, pa.Table]:
    """The pipeline stage (registered in dataforge/stages/decontam.py)."""
    return decontaminate(table, cfg.decontam, index_for(cfg))


# --- the command line's --benchmark NAME=PATH[:FORMAT[:FIELD]] ------------------------------

def parse_benchmark_spec(spec: str) -> BenchmarkSource:
    """``gsm8k=data/test.jsonl``, ``svamp=svamp.json:svamp``, ``mine=x.parquet:table:prompt``."""
    from pydantic import ValidationError

    from dataforge.config import BENCHMARK_FORMATS

    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise DecontamError(f"--benchmark {spec!r}: expected NAME=PATH[:FORMAT[:FIELD]]")
    parts = rest.split(":")
    fmt, text_field, path = "auto", None, rest
    for k in range(len(parts) - 1, 0, -1):
        if parts[k] in BENCHMARK_FORMATS and len(parts) - k <= 2:
            path, fmt = ":".join(parts[:k]), parts[k]
            text_field = parts[k + 1] if len(parts) - k == 2 else None
            break
    try:
        return BenchmarkSource(name=name, path=path, format=fmt, text_field=text_field)
    except ValidationError as err:
        raise DecontamError(f"--benchmark {spec!r}: " + "; ".join(format_validation_error(err))) from None


def decontam_summary(kept: pa.Table, rejected: pa.Table) -> dict:
    """Rows, kept, contaminated, and contaminated rows per benchmark (for the command's line)."""
    per: dict[str, int] = {}
    for b in rejected.column("contam_benchmark").to_pylist() if rejected.num_rows else []:
        per[b] = per.get(b, 0) + 1
    return {"rows": kept.num_rows + rejected.num_rows, "kept": kept.num_rows,
            "contaminated": rejected.num_rows, "by_benchmark": per}
