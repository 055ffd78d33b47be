"""Deduplication: exact (normalized text), then MinHash LSH near-duplicates (Lee et al. 2022
settings: word 5-grams, Jaccard 0.8). The fast path (dataforge/curate/minhash.py) is checked
against the readable datasketch reference in dataforge/curate/dedup.py."""

from __future__ import annotations

import json
import random
import sys
import unicodedata
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from datasketch import MinHash
from typer.testing import CliRunner

from dataforge.cli import app
from dataforge.config import DedupConfig, parse_config
from dataforge.curate import minhash as fast
from dataforge.curate.dedup import (
    HASHFUNC,
    MINHASH_SCHEME,
    apply_dedup,
    exact_groups,
    lsh_params,
    minhash,
    near_duplicate_clusters,
    near_survivors,
    normalize_for_dedup,
    shingles,
    sign_texts,
    survivor_rank,
)
from dataforge.records import make_sample, samples_to_table

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)

PARAGRAPH = (
    "The French Revolution began in 1789 when the Estates-General met at Versailles for the "
    "first time in more than a century. Financial crisis, poor harvests and resentment of "
    "aristocratic privilege had left the kingdom restless. Within weeks the Third Estate had "
    "declared itself a National Assembly, and in July crowds in Paris stormed the Bastille, a "
    "fortress that had become a symbol of royal power. Over the following years the monarchy "
    "was abolished, the king was executed, and France fought wars against most of Europe."
)
# One word changed: 82 shingles each, 77 shared, true Jaccard 77/87 = 0.885; the 128-permutation
# estimate (standard deviation ~0.03) of this pair is 0.86 with the xxh32 shingle hash.
NEAR = PARAGRAPH.replace("poor harvests", "failed harvests")
OTHER = (
    "Mitochondria are membrane-bound organelles that generate most of the chemical energy "
    "needed to power a cell's biochemical reactions. The energy is stored in a small molecule "
    "called adenosine triphosphate. Mitochondria contain their own small chromosomes and are "
    "thought to descend from bacteria that were engulfed by an ancestral cell long ago."
)
THIRD = (
    "A sonnet is a poem of fourteen lines that follows a strict rhyme scheme. Petrarch made "
    "the form famous in Italy, and Shakespeare wrote more than one hundred and fifty of them "
    "in English, most about love, time and the way beauty fades."
)

# Texts whose normalization is hard: ligatures and compatibility forms (NFKC), combining marks
# and Hangul jamo (which compose with their neighbours), capital sigma (final-sigma lowercasing),
# dotted capital I (lowercases to two code points), no-break and ideographic spaces, Unicode
# punctuation, emoji, right-to-left text, astral characters, a U+FDFA ligature (18 characters).
EDGE_TEXTS = [
    "", " ", "?!", "x", "Hello, world", "A b, c d!", "one two three four", "one two three four five",
    "ﬁne ﬂour ＦＵＬＬＷＩＤＴＨ ½ ™ ℌello x² Ⅻ", "e\u0301te\u0301 cafe\u0301 naïve", "\u1100\u1161\u11a8 한국어 텍스트입니다",
    "ΟΔΥΣΣΕΥΣ ΣΑΣ Σ. σοφός", "İstanbul İİ DİKKAT", "a\u00a0b\u3000c\u2003d\u200be", "«quoted» — “curly” … ‘x’ ¿qué? ¡sí!",
    "emoji 😀 🎉 text 👍🏽 here", "שלום עולם مرحبا بالعالم", "𝐁𝐨𝐥𝐝 𝔉𝔯𝔞𝔨𝔱𝔲𝔯 astral 𠀀𠀁", "\ufdfa and \u3250 \u32ff",
    "tab\tnew\nline\r\nform\x0cfeed\x1cfs\x85nel", "MiXeD CaSe ÀÉÎÕÜ ÆØÅ ẞ ß", "a+b = c; $5 & 10% #tag @user",
    "ǅungla ǈ ǋ ῼ ᾈ", "Ω K Å ﬀ ﬃ ﬅ", "\u0130\u0307 \u03a3\u0301",
]


def sample(text: str, minutes: int = 0, kind: str = "document", **extra) -> dict:
    return make_sample(kind, text, created_at=T0 + timedelta(minutes=minutes), **extra)


def table_of(*rows: dict) -> pa.Table:
    return samples_to_table(rows)


def reference_signature(text: str, num_perm: int, ngram: int, seed: int) -> np.ndarray:
    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest, scheme="affine32")
    m.update_batch(sorted(shingles(text, ngram)))
    return m.hashvalues


# --- normalization and the reference ----------------------------------------------------------

def test_normalize_for_dedup() -> None:
    assert normalize_for_dedup("  Héllo,\tWORLD!!  The ﬁne\n\nprint—ok. ") == "héllo world the fine print ok"
    assert normalize_for_dedup("ℌello") == "hello"  # NFKC before lowercasing
    assert normalize_for_dedup("a+b = c") == "a+b = c"  # symbols are content
    assert normalize_for_dedup("") == ""


def test_shingles() -> None:
    assert shingles("A b, c d!", 3) == {b"a b c", b"b c d"}
    assert shingles("Hello, world", 5) == {b"hello world"}  # fewer than n words: one shingle
    assert shingles("", 5) == {b""}
    assert shingles("?!", 5) == {b""}
    assert shingles("Ünïcode wörds here", 2) == {"ünïcode wörds".encode(), "wörds here".encode()}
    assert all(shingles(text, 5) for text in ("x", "x y", PARAGRAPH))


def test_minhash_is_deterministic_and_parameterised() -> None:
    cfg = DedupConfig()
    a, b = minhash(PARAGRAPH, cfg), minhash(PARAGRAPH, cfg)
    assert (a.hashvalues == b.hashvalues).all()
    assert a.scheme == MINHASH_SCHEME and len(a) == cfg.num_perm and a.seed == cfg.seed
    assert a.hashfunc is HASHFUNC
    other_seed = minhash(PARAGRAPH, DedupConfig(seed=2))
    assert not (other_seed.hashvalues == a.hashvalues).all()
    assert len(minhash(PARAGRAPH, DedupConfig(num_perm=64))) == 64


def test_signature_is_pinned() -> None:
    """Golden values (datasketch 2.0.0, scheme affine32, xxh32 shingle hash), for the reference
    and the kernel: a library change that alters signatures, and so which rows count as
    near-duplicates, fails here instead of silently."""
    golden = [449374137, 1396510277, 164433790, 930161928, 1239467602, 807258305, 504358662, 1230716891,
              606756978, 418700501, 9700886, 493292711, 1256513641, 107632361, 252158806, 49860440]
    text = "The quick brown fox jumps over the lazy dog."
    assert minhash(text, DedupConfig(num_perm=16)).hashvalues.tolist() == golden
    assert fast.signatures(pa.array([text]), num_perm=16)[0][0].tolist() == golden


# --- the kernel against the reference ---------------------------------------------------------

def test_xxh32_matches_the_c_binding() -> None:
    rng = np.random.default_rng(0)
    for length in list(range(0, 70)) + [255, 1000]:
        data = rng.integers(0, 256, length + 3, dtype=np.uint8)
        for seed in (0, 1, 0x2545F491, 2**32 - 1):
            assert fast.xxh32(data, 3, length + 3, seed) == xxhash.xxh32_intdigest(data[3:].tobytes(), seed=seed)


@pytest.mark.parametrize("num_perm,seed", [(128, 1), (64, 7), (256, 0)])
def test_permutations_match_datasketch(num_perm: int, seed: int) -> None:
    a, b = fast.permutations(num_perm, seed)
    ref = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    assert (a == ref[0]).all() and (b == ref[1]).all() and a.dtype == np.uint32


def test_char_tables_agree_with_unicodedata() -> None:
    sep, kind, repl_off, repl = fast.char_tables()
    for cp in range(fast.TABLE_LIMIT):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        assert sep[cp] == (ch.isspace() or unicodedata.category(ch)[0] == "P"), hex(cp)
        if kind[cp] == fast.IDENTITY and cp >= 0x80:
            assert unicodedata.normalize("NFKC", ch).lower() == ch, hex(cp)
        elif kind[cp] == fast.MAPPED:
            mapped = "".join(chr(c) for c in repl[repl_off[cp]:repl_off[cp + 1]])
            assert mapped == unicodedata.normalize("NFKC", ch).lower(), hex(cp)
    # above the table nothing is punctuation, space, cased, combining or changed by NFKC
    for cp in range(fast.TABLE_LIMIT, sys.maxunicode + 1, 7):
        ch = chr(cp)
        assert not ch.isspace() and unicodedata.category(ch)[0] != "P" and ch.lower() == ch, hex(cp)
        assert unicodedata.combining(ch) == 0 and unicodedata.normalize("NFKC", ch) == ch, hex(cp)


@pytest.mark.parametrize("ngram,num_perm", [(5, 128), (1, 64), (3, 128)])
def test_kernel_signatures_identical_to_datasketch_on_edge_cases(ngram: int, num_perm: int) -> None:
    texts = EDGE_TEXTS + [PARAGRAPH, NEAR, OTHER, THIRD, PARAGRAPH.upper(), " ".join(EDGE_TEXTS)]
    sig, _, _ = fast.signatures(pa.array(texts), num_perm=num_perm, ngram=ngram, seed=3)
    for i, text in enumerate(texts):
        assert sig[i].tolist() == reference_signature(text, num_perm, ngram, 3).tolist(), repr(text)


def test_kernel_handles_nulls_slices_chunks_and_large_strings() -> None:
    texts = [PARAGRAPH, None, "Hello, world", OTHER, "", THIRD]
    expected = [reference_signature(t or "", 128, 5, 1).tolist() for t in texts]
    plain = fast.signatures(pa.array(texts))[0]
    assert plain.tolist() == expected
    large = fast.signatures(pa.array(texts, pa.large_string()))[0]
    assert large.tolist() == expected
    chunked = fast.signatures(pa.chunked_array([pa.array(texts[:2]), pa.array([], pa.string()), pa.array(texts[2:])]))[0]
    assert chunked.tolist() == expected
    sliced = fast.signatures(pa.array(texts).slice(2, 3))[0]
    assert sliced.tolist() == expected[2:5]
    with pytest.raises(TypeError, match="string column"):
        fast.signatures(pa.array([1, 2]))


@pytest.mark.shared_data
def test_kernel_signatures_identical_to_datasketch_on_the_pile(pile_docs: list[dict]) -> None:
    texts = [doc["contents"] for doc in pile_docs]
    sig, exact_hash, norm_len = fast.signatures(pa.array(texts))
    mismatched = [i for i, t in enumerate(texts) if sig[i].tolist() != reference_signature(t, 128, 5, 1).tolist()]
    assert not mismatched, f"{len(mismatched)} of {len(texts)} documents differ, first {mismatched[:5]}"
    assert (norm_len == [len(normalize_for_dedup(t).encode()) for t in texts]).all()


# --- the fast kernel against the readable reference, on varied inputs --------------------------

def reference_exact_key(text: str, ngram: int) -> int:
    """The exact key the kernel computes, in Python: xxh32 (seed 0x2545F491) of the normalized
    text in the high 32 bits; in the low 32 an FNV-style fold of the shingles' xxh32, in order."""
    norm = normalize_for_dedup(text)
    words = norm.split()
    grams = [" ".join(words)] if len(words) < ngram else [" ".join(words[i:i + ngram])
                                                          for i in range(len(words) - ngram + 1)]
    fold = 0x811C9DC5
    for gram in grams:
        fold = ((fold ^ xxhash.xxh32_intdigest(gram.encode())) * 0x01000193) & 0xFFFFFFFF
    return (xxhash.xxh32_intdigest(norm.encode(), seed=fast.EXACT_SEED) << 32) | fold


# words whose normalization is easy (ASCII), takes the kernel's tables (accents, Greek, CJK, emoji,
# ligatures and fullwidth forms, dotted I) or Python (combining marks, Hangul jamo, capital sigma)
VARIED_WORDS = ["the", "a", "of", "Data", "FORGE", "x1", "3.14", "don't", "e-mail", "naïve", "Straße", "ΣΟΦΙΑ",
                "σοφία", "日本語", "中文", "😀", "👍🏽", "ﬁne", "ＦＵＬＬ", "İstanbul", "½", "e\u0301te\u0301",
                "\u1100\u1161\u11a8", "한국어", "שלום", "مرحبا", "𝐁𝐨𝐥𝐝", "\ufdfa", "tab\tsep", "«q»", "—", "…"]


def varied_texts(n: int, seed: int) -> list[str]:
    """Texts of every shape the kernel treats differently: empty, blank or punctuation only, fewer
    words than the n-gram, plain ASCII, mixed Unicode, words longer than the kernel's lane limit
    (shingles hashed one by one), and long documents (many shingles of each length)."""
    rng = random.Random(seed)
    vocab = VARIED_WORDS + ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 14)))
                            for _ in range(300)]
    texts = ["", " ", "\n\t ", "?!...", "—", "x", "one two", "a b c d", "Hello, World!"]
    while len(texts) < n:
        kind = rng.random()
        if kind < 0.15:  # shorter than a 5-gram
            k = rng.randint(0, 4)
        elif kind < 0.97:
            k = rng.randint(5, 300)
        else:  # long: hundreds of shingles of each length
            k = rng.randint(3000, 12000)
        words = [rng.choice(vocab) for _ in range(k)]
        if rng.random() < 0.1:
            words.insert(rng.randint(0, len(words)), "z" * rng.randint(60, 400))  # a shingle > LANE_MAX_LEN bytes
        seps = [rng.choice([" ", " ", " ", ", ", ". ", "\n", " — ", "  "]) for _ in words]
        text = "".join(w + s for w, s in zip(words, seps))
        texts.append(text.upper() if rng.random() < 0.05 else text)
    return texts


@pytest.mark.parametrize("ngram,num_perm,seed", [(5, 128, 1), (1, 64, 3), (3, 100, 7)])
def test_kernel_equals_reference_on_varied_texts(ngram: int, num_perm: int, seed: int) -> None:
    """More than one batch of the kernel (over BATCH_DOCS documents and BATCH_BYTES of text):
    signatures identical to datasketch's, the normalized length and the exact key to their
    Python definitions, and each row's result independent of the rows signed with it."""
    texts = varied_texts(1400, seed)
    assert len(texts) > fast.BATCH_DOCS and sum(map(len, texts)) > 4 * fast.BATCH_BYTES
    sig, exact_hash, norm_len = fast.signatures(pa.array(texts), num_perm=num_perm, ngram=ngram, seed=seed)
    rng = random.Random(seed)
    checked = sorted(set(range(12)) | set(rng.sample(range(len(texts)), 150))
                     | {i for i, t in enumerate(texts) if len(t) > 20_000})
    for i in checked:
        text = texts[i]
        assert sig[i].tolist() == reference_signature(text, num_perm, ngram, seed).tolist(), repr(text[:80])
        assert norm_len[i] == len(normalize_for_dedup(text).encode()), repr(text[:80])
        assert int(exact_hash[i]) == reference_exact_key(text, ngram), repr(text[:80])
    for i in range(0, len(texts), 7):  # alone, the same as among the others
        alone = fast.signatures(pa.array([texts[i]]), num_perm=num_perm, ngram=ngram, seed=seed)
        assert alone[0][0].tolist() == sig[i].tolist() and alone[1][0] == exact_hash[i] and alone[2][0] == norm_len[i]


def test_kernel_shingle_hash_for_every_length() -> None:
    """One shingle per text (fewer words than n), of every byte length from 0 to past the lane
    limit, in ASCII and in multi-byte characters: the lane-parallel xxh32 bins and the one-by-one
    path for long shingles give the reference's signatures."""
    rng = random.Random(5)
    texts = []
    for length in range(fast.LANE_MAX_LEN + 40):
        texts.append("".join(rng.choice("abcxyz0189") for _ in range(length)))
        texts.append("".join(rng.choice(["é", "ß", "中", "😀", "q"]) for _ in range(length // 2)))
        texts.append(" ".join(["w" * max(1, length // 4)] * 4))  # four equal words: a 4-gram shingle
    sig, exact_hash, _ = fast.signatures(pa.array(texts), num_perm=32, ngram=5, seed=2)
    for i, text in enumerate(texts):
        assert sig[i].tolist() == reference_signature(text, 32, 5, 2).tolist(), (i, len(text.encode()))
        assert int(exact_hash[i]) == reference_exact_key(text, 5)


def test_kernel_bins_fill_and_flush() -> None:
    """A document with thousands of shingles of a few lengths fills the kernel's bins (LANES
    shingles each) many times over; unigrams of equal-length words make every bin full."""
    words = ["".join(chr(97 + (i * 7 + j) % 26) for j in range(5)) + str(i % 10) for i in range(3 * fast.LANES)]
    text = " ".join(words)
    for ngram in (1, 2, 5):
        sig = fast.signatures(pa.array([text, text[:5000], ""]), num_perm=64, ngram=ngram, seed=9)[0]
        for i, t in enumerate([text, text[:5000], ""]):
            assert sig[i].tolist() == reference_signature(t, 64, ngram, 9).tolist()


def reference_candidate_pairs(sig: np.ndarray, band: int, rows: int, bands: int, window: int) -> np.ndarray:
    """The readable rule: rows sorted by (band key, next band's key, row), then each row paired
    with the up to ``window`` rows before it with the same band key."""
    n = sig.shape[0]
    key = [tuple(r) for r in sig[:, band * rows:(band + 1) * rows].tolist()]
    nb = (band + 1) % bands
    nxt = [int(fast.band_keys(sig[i:i + 1], nb, rows)[0]) if bands > 1 else 0 for i in range(n)]
    order = sorted(range(n), key=lambda i: (int(fast.band_keys(sig[i:i + 1], band, rows)[0]), nxt[i], i))
    codes = set()
    for x in range(n):
        for y in range(max(0, x - window), x):
            u, v = order[x], order[y]
            if key[u] == key[v]:
                codes.add(min(u, v) * n + max(u, v))
    return np.array(sorted(codes), dtype=np.int64)


@pytest.mark.parametrize("values,window", [(2, 3), (3, 8), (50, 64), (1, 5)])
def test_candidate_pairs_equal_the_readable_rule(values: int, window: int) -> None:
    rng = np.random.default_rng(values)
    n, bands, rows = 400, 3, 2
    sig = rng.integers(0, values, (n, bands * rows), dtype=np.uint32)
    sig[: n // 4] = sig[0]  # one big group in every band
    for band in range(bands):
        got = fast.candidate_pairs(sig, band, rows, bands, window=window)
        assert got.tolist() == reference_candidate_pairs(sig, band, rows, bands, window).tolist()
    one_band = fast.candidate_pairs(sig[:, :2], 0, 2, 1, window=window)
    assert one_band.tolist() == reference_candidate_pairs(sig[:, :2], 0, 2, 1, window).tolist()


def test_a_subset_of_rows_equals_its_copy() -> None:
    """``subset=`` (how apply_dedup bands the exact groups' representatives without copying their
    signatures) gives what the copied rows give."""
    rng = np.random.default_rng(6)
    sig = rng.integers(0, 3, (500, 12), dtype=np.uint32)
    subset = np.sort(rng.choice(500, 300, replace=False))
    for band in range(3):
        got = fast.candidate_pairs(sig, band, 4, 3, window=5, subset=subset)
        assert got.tolist() == fast.candidate_pairs(sig[subset], band, 4, 3, window=5).tolist()
        assert [x.tolist() for x in fast.verify_pairs(sig, got, 0.5, subset=subset)] == \
            [x.tolist() for x in fast.verify_pairs(sig[subset], got, 0.5)]


def test_maybe_shared_holds_every_shared_key() -> None:
    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 100, 50_000):
        keys = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        if n > 1:
            keys[rng.integers(0, n, n // 10)] = keys[rng.integers(0, n, n // 10)]
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared = np.flatnonzero(counts[inverse] > 1)
        got = fast.maybe_shared(keys)
        assert np.isin(shared, got).all() and (np.diff(got) > 0).all()
        assert len(got) <= len(shared) + 0.2 * n + 1  # and few others


def test_exact_groups_equal_a_full_sort() -> None:
    rng = np.random.default_rng(4)
    for n in (0, 1, 5, 3000):
        for distinct in (1, 3, n // 2 + 1, n + 1):
            values = rng.integers(0, 2**64, distinct, dtype=np.uint64)
            exact_hash = values[rng.integers(0, distinct, n)]
            norm_len = rng.integers(0, 2, n).astype(np.int64)
            for rank in (np.arange(n), rng.permutation(n), rng.integers(0, 3, n)):
                order = np.lexsort((rank, norm_len, exact_hash))
                first_of: dict = {}
                expected = np.empty(n, dtype=np.int64)
                for i in order:
                    expected[i] = first_of.setdefault((int(exact_hash[i]), int(norm_len[i])), int(i))
                assert exact_groups(exact_hash, norm_len, rank).tolist() == expected.tolist()


def test_exact_key_is_the_normalized_text() -> None:
    texts = [PARAGRAPH, PARAGRAPH.upper(), PARAGRAPH.replace(",", " ,  "), PARAGRAPH + "!", NEAR, OTHER, "", "?!",
             "ﬁne", "FINE", "fine.", "fi ne", "e\u0301", "\u00e9", "Σ", "σ"]
    _, exact_hash, norm_len = fast.signatures(pa.array(texts))
    rep = exact_groups(exact_hash, norm_len, np.arange(len(texts)))
    first_of = {}
    expected = [first_of.setdefault(normalize_for_dedup(t), i) for i, t in enumerate(texts)]
    assert rep.tolist() == expected
    assert len(set(expected)) == 8  # paragraph x4, near, other, empty x2, fine x3, fi ne, é x2, sigma x2


# --- banding, candidates, clustering ----------------------------------------------------------

def test_lsh_params_follow_datasketch_rule_or_config() -> None:
    from datasketch.lsh import _optimal_param

    for threshold, num_perm in [(0.8, 128), (0.5, 64), (0.9, 256)]:
        assert fast.optimal_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.05, 0.95)
    assert lsh_params(DedupConfig()) == (16, 8)
    assert lsh_params(DedupConfig(bands=20, rows=5)) == (20, 5)


def test_candidate_pairs_are_the_rows_sharing_a_band() -> None:
    rng = np.random.default_rng(1)
    n, bands, rows = 300, 4, 3
    sig = rng.integers(0, 5, (n, bands * rows), dtype=np.uint32)  # few values: many collisions
    for band in range(bands):
        codes = fast.candidate_pairs(sig, band, rows, bands, window=1000)
        block = sig[:, band * rows:(band + 1) * rows]
        expected = {i * n + j for i in range(n) for j in range(i + 1, n) if (block[i] == block[j]).all()}
        assert set(codes.tolist()) == expected and len(codes) == len(expected)


def test_big_band_groups_are_windowed() -> None:
    n = 1000
    sig = np.zeros((n, 8), dtype=np.uint32)  # everyone shares every band
    codes = fast.candidate_pairs(sig, 0, 4, 2, window=10)
    assert len(codes) == 10 * 11 // 2 + (n - 11) * 10  # not n*(n-1)/2
    left, right = codes // n, codes % n
    assert (left < right).all()


def test_star_does_not_chain_but_components_do() -> None:
    # 0 ~ 1 ~ 2 ~ 3 (a chain), 4 ~ 5; rank: row order
    left, right = np.array([0, 1, 2, 4]), np.array([1, 2, 3, 5])
    rank = np.arange(6)
    assert fast.star_clusters(6, left, right, rank).tolist() == [0, 0, 2, 2, 4, 4]
    assert fast.connected_components(6, left, right, rank).tolist() == [0, 0, 0, 0, 4, 4]
    # a better-ranked middle row claims both neighbours
    rank = np.array([5, 0, 4, 3, 2, 1])
    assert fast.star_clusters(6, left, right, rank).tolist() == [1, 1, 1, 3, 5, 5]
    assert fast.connected_components(6, left, right, rank).tolist() == [1, 1, 1, 1, 5, 5]


def test_verify_pairs_uses_the_estimated_jaccard() -> None:
    sig = np.zeros((3, 10), dtype=np.uint32)
    sig[1, :2] = 1  # row 1 agrees with row 0 on 8 of 10 slots
    sig[2, :3] = 2  # row 2 on 7 of 10
    codes = np.array([0 * 3 + 1, 0 * 3 + 2, 1 * 3 + 2])
    left, right, est = fast.verify_pairs(sig, codes, 0.8)
    assert left.tolist() == [0] and right.tolist() == [1] and est.tolist() == [0.8]


# --- the stage --------------------------------------------------------------------------------

def test_near_duplicates_cluster_and_unrelated_stay_apart() -> None:
    cfg = DedupConfig()
    assert minhash(PARAGRAPH, cfg).jaccard(minhash(NEAR, cfg)) >= cfg.threshold
    assert near_duplicate_clusters([OTHER, PARAGRAPH, THIRD, NEAR], cfg) == [0, 1, 2, 1]
    assert near_duplicate_clusters([OTHER, THIRD, PARAGRAPH], cfg) == [0, 1, 2]
    assert near_duplicate_clusters([], cfg) == []
    sig = fast.signatures(pa.array([OTHER, PARAGRAPH, THIRD, NEAR]))[0]
    assert near_survivors(sig, np.arange(4), cfg).tolist() == [0, 1, 2, 1]


def test_only_the_survivor_is_kept() -> None:
    # NEAR was created first, so it survives although PARAGRAPH comes first in the table.
    rows = [sample(PARAGRAPH, minutes=5), sample(OTHER, minutes=0), sample(NEAR, minutes=1)]
    table = table_of(*rows)
    kept, rejected = apply_dedup(table, DedupConfig())
    near_id, par_id, other_id = rows[2]["id"], rows[0]["id"], rows[1]["id"]

    assert kept.column("id").to_pylist() == [other_id, near_id]  # input order
    assert kept.column("dedup_cluster").to_pylist() == [other_id, near_id]
    assert kept.column("dedup_size").to_pylist() == [1, 2]
    assert kept.column("dedup_similarity").to_pylist() == [1.0, 1.0]
    assert kept.schema.field("dedup_size").type == pa.int32()
    assert "drop_reason" not in kept.column_names

    assert rejected.column("id").to_pylist() == [par_id]
    assert rejected.column("drop_stage").to_pylist() == ["dedup"]
    assert rejected.column("drop_reason").to_pylist() == [f"near_duplicate_of:{near_id}"]
    assert rejected.column("dedup_cluster").to_pylist() == [near_id]
    assert rejected.column("dedup_size").to_pylist() == [2]
    expected = minhash(PARAGRAPH, DedupConfig()).jaccard(minhash(NEAR, DedupConfig()))
    assert rejected.column("dedup_similarity").to_pylist() == [pytest.approx(expected)]
    assert rejected.column_names == kept.column_names + ["drop_stage", "drop_reason"]
    assert kept.num_rows + rejected.num_rows == table.num_rows


def test_survivor_ties_on_created_at_break_by_id_not_position() -> None:
    rows = [sample(PARAGRAPH, minutes=3), sample(NEAR, minutes=3)]
    smallest = min(r["id"] for r in rows)
    for order in (rows, rows[::-1]):
        kept, rejected = apply_dedup(table_of(*order), DedupConfig())
        assert kept.column("id").to_pylist() == [smallest]
        assert rejected.column("drop_reason").to_pylist() == [f"near_duplicate_of:{smallest}"]
    # an earlier created_at beats a smaller id
    smaller, larger = sorted(rows, key=lambda r: r["id"])
    rows = [sample(smaller["text"], minutes=9), sample(larger["text"], minutes=0)]
    kept, _ = apply_dedup(table_of(*rows), DedupConfig())
    assert kept.column("id").to_pylist() == [larger["id"]]


def test_highest_quality_score_survives_before_age() -> None:
    rows = [sample(PARAGRAPH, minutes=0), sample(NEAR, minutes=5), sample(OTHER, minutes=1)]
    table = table_of(*rows).append_column("quality_score", pa.array([0.2, 0.9, None], pa.float64()))
    kept, rejected = apply_dedup(table, DedupConfig())
    assert kept.column("id").to_pylist() == [rows[1]["id"], rows[2]["id"]]
    assert rejected.column("drop_reason").to_pylist() == [f"near_duplicate_of:{rows[1]['id']}"]
    assert survivor_rank(table).tolist() == [1, 0, 2]  # a null score ranks last


def test_exact_duplicates_are_named_as_such() -> None:
    # Same text in two kinds (different ids) and twice in one kind (same id, different time);
    # a case/punctuation variant is an exact duplicate of the normalized text too.
    rows = [sample(OTHER, 2, "document"), sample(OTHER, 1, "textbook"), sample(OTHER, 0, "document"),
            sample(OTHER.upper().replace(".", " . "), 3), sample(THIRD, 0)]
    kept, rejected = apply_dedup(table_of(*rows), DedupConfig())
    assert kept.num_rows == 2 and rejected.num_rows == 3
    survivor = kept.to_pylist()[0]
    assert survivor["created_at"] == T0 and survivor["kind"] == "document" and survivor["dedup_size"] == 4
    assert rejected.column("drop_reason").to_pylist() == [f"exact_duplicate_of:{survivor['id']}"] * 3
    # without the exact pass they are found as near-duplicates (estimated Jaccard 1)
    kept, rejected = apply_dedup(table_of(*rows), DedupConfig(exact=False))
    assert rejected.column("drop_reason").to_pylist() == [f"near_duplicate_of:{survivor['id']}"] * 3
    assert rejected.column("dedup_similarity").to_pylist() == [1.0] * 3


def test_exact_duplicate_of_a_near_duplicate_names_its_twin_and_the_cluster() -> None:
    rows = [sample(PARAGRAPH, 0), sample(NEAR, 1), sample(NEAR.upper(), 2)]
    kept, rejected = apply_dedup(table_of(*rows), DedupConfig())
    assert kept.column("id").to_pylist() == [rows[0]["id"]]
    by_id = {r["id"]: r for r in rejected.to_pylist()}
    assert by_id[rows[1]["id"]]["drop_reason"] == f"near_duplicate_of:{rows[0]['id']}"
    assert by_id[rows[2]["id"]]["drop_reason"] == f"exact_duplicate_of:{rows[1]['id']}"
    assert {r["dedup_cluster"] for r in by_id.values()} == {rows[0]["id"]}
    assert {r["dedup_size"] for r in by_id.values()} == {3}


def test_short_texts() -> None:
    texts = ["Yes.", "yes", "No.", "", "", "Paris is in France.", "Paris is in Spain."]
    assert near_duplicate_clusters(texts, DedupConfig()) == [0, 0, 2, 3, 3, 5, 6]
    kept, rejected = apply_dedup(table_of(*(sample(t, i) for i, t in enumerate(texts))), DedupConfig())
    assert kept.column("text").to_pylist() == ["Yes.", "No.", "", "Paris is in France.", "Paris is in Spain."]
    assert rejected.num_rows == 2
    assert all(r.startswith("exact_duplicate_of:") for r in rejected.column("drop_reason").to_pylist())


def test_deterministic_and_independent_of_workers() -> None:
    rows = [sample(t, i % 2) for i, t in enumerate([PARAGRAPH, OTHER, NEAR, THIRD, OTHER.upper(), "short"])]
    table = table_of(*rows)
    first = apply_dedup(table, DedupConfig())
    second = apply_dedup(table, DedupConfig(), workers=2)
    assert first[0].equals(second[0]) and first[1].equals(second[1])
    # running again on the kept rows changes nothing (columns are replaced, not duplicated)
    again_kept, again_rejected = apply_dedup(first[0], DedupConfig())
    assert again_kept.drop_columns(["dedup_size"]).equals(first[0].drop_columns(["dedup_size"]))
    assert again_rejected.num_rows == 0


def test_sign_texts_batches_and_threads_agree(monkeypatch) -> None:
    import dataforge.curate.dedup as dedup_module

    texts = pa.chunked_array([pa.array(EDGE_TEXTS), pa.array([PARAGRAPH, NEAR, OTHER] * 5)])
    whole = fast.signatures(texts)
    monkeypatch.setattr(dedup_module, "SIGN_BATCH_ROWS", 7)
    calls = []
    parts = sign_texts(texts, DedupConfig(), workers=3, advance=lambda: calls.append(1))
    assert all((a == b).all() for a, b in zip(whole, parts))
    assert len(calls) == -(-len(texts) // 7)


def test_disabled() -> None:
    rows = [sample(PARAGRAPH, 1), sample(PARAGRAPH, 0), sample(NEAR, 2)]
    table = table_of(*rows)
    kept, rejected = apply_dedup(table, DedupConfig(enabled=False))
    assert kept.drop_columns(["dedup_cluster", "dedup_size", "dedup_similarity"]).equals(table)
    assert kept.column("dedup_cluster").to_pylist() == table.column("id").to_pylist()
    assert kept.column("dedup_size").to_pylist() == [1, 1, 1]
    assert rejected.num_rows == 0
    assert rejected.column_names == kept.column_names + ["drop_stage", "drop_reason"]


def test_empty_table() -> None:
    kept, rejected = apply_dedup(samples_to_table([]), DedupConfig())
    assert kept.num_rows == rejected.num_rows == 0
    assert "dedup_cluster" in kept.column_names and "drop_reason" in rejected.column_names


def test_config_errors_name_the_field() -> None:
    from dataforge.config import ConfigError

    with pytest.raises(ConfigError, match="dedup.clustering"):
        parse_config({"dedup": {"clustering": "transitive"}})
    with pytest.raises(ConfigError, match="bands and rows"):
        parse_config({"dedup": {"bands": 10}})
    with pytest.raises(ConfigError, match="exceeds num_perm"):
        parse_config({"dedup": {"bands": 20, "rows": 8}})
    with pytest.raises(ConfigError, match="dedup.exact"):
        parse_config({"dedup": {"exact": "sometimes"}})


# --- templated text ---------------------------------------------------------------------------

def templated_texts(n: int, content_words: int, seed: int = 7) -> list[str]:
    """``n`` texts sharing one 240-word frame, each with its own ``content_words`` words in each
    of three slots (true pairwise Jaccard ~0.70 for 12 words per slot)."""
    rng = random.Random(seed)
    vocab = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "tu", "ve", "zo")
             for b in ("bar", "den", "fix", "gol", "hum", "jet", "kip", "lum", "mop", "nib", "orb", "pax")]
    frame = [" ".join(rng.choice(vocab) for _ in range(60)) for _ in range(4)]
    texts = []
    for _ in range(n):
        slots = [" ".join(rng.choice(vocab) for _ in range(content_words)) for _ in range(3)]
        texts.append(f"{frame[0]} {slots[0]} {frame[1]} {slots[1]}. {frame[2]}, {slots[2]} {frame[3]}")
    return texts


def test_templated_text_does_not_collapse() -> None:
    """10k texts sharing a long boilerplate frame, differing in their content: with star
    clustering no row is dropped except for a survivor it matches itself, and clusters stay
    small; connected components (the peers' way) chain hundreds of them together."""
    texts = templated_texts(10_000, content_words=12)
    a, b = shingles(texts[0], 5), shingles(texts[1], 5)
    assert 0.6 < len(a & b) / len(a | b) < 0.75  # really below the threshold
    table = table_of(*(sample(t, i) for i, t in enumerate(texts)))
    kept, rejected = apply_dedup(table, DedupConfig())
    largest = max(kept.column("dedup_size").to_pylist())
    assert kept.num_rows > 9_500 and largest <= 20, (kept.num_rows, largest)
    assert min(rejected.column("dedup_similarity").to_pylist() or [1.0]) >= 0.8
    sig = fast.signatures(table.column("text"))[0]
    # the alternative, connected components, for contrast
    survivors = near_survivors(sig, np.arange(len(texts)), DedupConfig(clustering="components"))
    assert np.bincount(survivors).max() > 10 * largest


# --- real data --------------------------------------------------------------------------------

def near_copy(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    """``text`` with about 2% of its words replaced by random vocabulary words.

    Rounded down (at least one): with word 5-grams every changed word breaks up to 5 shingles, so
    a fraction p of changed words gives a Jaccard of about (1 - 5p) / (1 + 5p): 2% exactly is
    ~0.82, right at the 0.8 threshold where a copy is a near-duplicate only by chance. Rounding
    down puts the copies of these 50-200-word documents at Jaccard ~0.85, clearly above it.
    """
    tokens = text.split(" ")
    positions = [i for i, token in enumerate(tokens) if token.strip()]
    for i in rng.sample(positions, max(1, len(positions) // 50)):
        tokens[i] = rng.choice(vocabulary)
    return " ".join(tokens)


def pile_with_copies(pile_docs: list[dict]) -> tuple[list[dict], list[int]]:
    docs = [doc["contents"] for doc in pile_docs]
    rng = random.Random(20240101)
    vocabulary = sorted({w for doc in docs for w in doc.split() if w.isalpha() and w.islower()})
    sources = rng.sample([i for i, doc in enumerate(docs) if len(doc.split()) >= 50], 50)
    copies = [near_copy(docs[i], rng, vocabulary) for i in sources]
    # Copies are created after every original, so an original always survives its copy.
    rows = [sample(doc, minutes=i) for i, doc in enumerate(docs)]
    rows += [sample(copy, minutes=10_000 + k) for k, copy in enumerate(copies)]
    return rows, sources


@pytest.mark.shared_data
def test_dedup_on_the_pile_sample(pile_docs: list[dict]) -> None:
    rows, sources = pile_with_copies(pile_docs)
    table = table_of(*rows)
    kept, rejected = apply_dedup(table, DedupConfig())

    assert kept.num_rows + rejected.num_rows == 1050
    copy_ids = {r["id"] for r in rows[1000:]}
    rejected_ids = rejected.column("id").to_pylist()
    removed_copies = [i for i in rejected_ids if i in copy_ids]
    removed_originals = [i for i in rejected_ids if i not in copy_ids]
    assert len(removed_copies) >= 45, f"only {len(removed_copies)} of 50 near-copies found"
    assert len(removed_originals) <= 5, f"{len(removed_originals)} original documents removed"
    # each removed copy points at the document it was made from
    source_of = {rows[1000 + k]["id"]: rows[i]["id"] for k, i in enumerate(sources)}
    for row in rejected.to_pylist():
        if row["id"] in source_of:
            assert row["drop_reason"] == f"near_duplicate_of:{source_of[row['id']]}"
            assert row["dedup_size"] >= 2 and row["dedup_similarity"] >= 0.8


@pytest.mark.shared_data
@pytest.mark.parametrize("clustering", ["star", "components"])
def test_fast_path_equals_the_datasketch_reference(pile_docs: list[dict], clustering: str) -> None:
    rows, _ = pile_with_copies(pile_docs)
    texts = [r["text"] for r in rows]
    cfg = DedupConfig(clustering=clustering, exact=False)
    table = table_of(*rows)
    rank = survivor_rank(table)
    expected = near_duplicate_clusters(texts, cfg, rank=rank.tolist())
    sig = fast.signatures(table.column("text"))[0]
    assert near_survivors(sig, rank, cfg).tolist() == expected
    assert len(set(expected)) < len(texts) - 40  # the copies were found, so the comparison means something


# --- command line -----------------------------------------------------------------------------

def test_cli_dedup(tmp_path) -> None:
    src = tmp_path / "docs.jsonl"
    records = [{"content": PARAGRAPH, "n": 1}, {"content": NEAR, "n": 2}, {"content": OTHER.upper(), "n": 3},
               {"content": OTHER, "n": 4}, {"content": THIRD, "n": 5}]
    src.write_text("".join(json.dumps(r) + "\n" for r in records) + "{broken\n")
    out = tmp_path / "out"
    runner = CliRunner()
    r = runner.invoke(app, ["dedup", str(src), "--out", str(out), "--text-column", "content", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "rows 5, kept 3, exact duplicates 1, near duplicates 1, largest cluster 2, quarantined 1" in r.output
    kept = pq.read_table(out / "kept.parquet")
    rejected = pq.read_table(out / "rejected.parquet")
    assert kept.column("n").to_pylist() == [1, 3, 5] and "content" in kept.column_names
    assert sorted(rejected.column("drop_reason").to_pylist()) == [
        f"exact_duplicate_of:{kept.column('id')[1]}", f"near_duplicate_of:{kept.column('id')[0]}"]
    assert json.loads((out / "quarantine.jsonl").read_text())["line"] == 6

    # --no-exact, explicit bands x rows, a pipeline YAML's section
    r = runner.invoke(app, ["dedup", str(src), "-o", str(out), "--text-column", "content", "--no-exact",
                            "--bands", "32", "--rows", "4"])
    assert r.exit_code == 0 and "exact duplicates 0, near duplicates 2" in r.output, r.output
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text("dedup:\n  threshold: 0.95\n  ngram: 3\n")
    r = runner.invoke(app, ["dedup", str(src), "-o", str(out), "--text-column", "content", "--config", str(yaml_path)])
    assert r.exit_code == 0 and "near duplicates 0" in r.output, r.output  # NEAR is ~0.89 similar

    # errors: a bad section in the YAML, bad flags, a missing file
    yaml_path.write_text("dedup:\n  treshold: 0.9\n")
    r = runner.invoke(app, ["dedup", str(src), "-o", str(out), "--config", str(yaml_path)])
    assert r.exit_code == 2 and "dedup.treshold" in r.output
    r = runner.invoke(app, ["dedup", str(src), "-o", str(out), "--threshold", "1.5"])
    assert r.exit_code == 2 and "threshold" in r.output
    r = runner.invoke(app, ["dedup", str(src), "-o", str(out), "--bands", "9"])
    assert r.exit_code == 2 and "bands and rows" in r.output
    r = runner.invoke(app, ["dedup", str(tmp_path / "nope.jsonl"), "-o", str(out)])
    assert r.exit_code == 2 and "no such file" in r.output

    r = runner.invoke(app, ["dedup", "--help"])
    assert r.exit_code == 0 and "near_duplicate_of" in r.output and "--no-exact" in r.output
