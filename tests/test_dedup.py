"""MinHash LSH near-duplicate removal (Lee et al. 2022 settings: word 5-grams, Jaccard 0.8)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from dataforge.config import DedupConfig
from dataforge.curate.dedup import (
    MINHASH_SCHEME,
    apply_dedup,
    minhash,
    near_duplicate_clusters,
    normalize_for_dedup,
    shingles,
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
# One word changed: 82 shingles each, 77 shared, true Jaccard 77/87 = 0.885. The 128-permutation
# estimate has a standard deviation of ~0.03, so a few single-word edits land below 0.8 by chance
# (with seed 1, "poor" -> "bad" estimates 0.797); this one estimates 0.83.
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


def sample(text: str, minutes: int = 0, kind: str = "document") -> dict:
    return make_sample(kind, text, created_at=T0 + timedelta(minutes=minutes))


def table_of(*rows: dict) -> pa.Table:
    return samples_to_table(rows)


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
    other_seed = minhash(PARAGRAPH, DedupConfig(seed=2))
    assert not (other_seed.hashvalues == a.hashvalues).all()
    assert len(minhash(PARAGRAPH, DedupConfig(num_perm=64))) == 64


def test_signature_is_pinned() -> None:
    """Golden values (datasketch 2.0.0, scheme affine32): a library upgrade that changes the
    signatures, and so which rows count as near-duplicates, fails here instead of silently."""
    m = minhash("The quick brown fox jumps over the lazy dog.", DedupConfig(num_perm=16))
    assert m.hashvalues.tolist() == [
        396806663, 314361870, 754404237, 90289063, 449122062, 580872510, 1331853943, 475814692,
        280095643, 1002761352, 176054746, 993637184, 414768141, 103366699, 119056002, 1701764543,
    ]


def test_near_duplicates_cluster_and_unrelated_stay_apart() -> None:
    cfg = DedupConfig()
    assert minhash(PARAGRAPH, cfg).jaccard(minhash(NEAR, cfg)) >= cfg.threshold
    assert near_duplicate_clusters([OTHER, PARAGRAPH, THIRD, NEAR], cfg) == [0, 1, 2, 1]
    assert near_duplicate_clusters([OTHER, THIRD, PARAGRAPH], cfg) == [0, 1, 2]
    assert near_duplicate_clusters([], cfg) == []


def test_only_the_survivor_is_kept() -> None:
    # NEAR was created first, so it survives although PARAGRAPH comes first in the table.
    rows = [sample(PARAGRAPH, minutes=5), sample(OTHER, minutes=0), sample(NEAR, minutes=1)]
    table = table_of(*rows)
    kept, rejected = apply_dedup(table, DedupConfig())
    near_id, par_id, other_id = rows[2]["id"], rows[0]["id"], rows[1]["id"]

    assert kept.column("id").to_pylist() == [other_id, near_id]  # input order
    assert kept.column("dedup_cluster").to_pylist() == [other_id, near_id]
    assert kept.column("dedup_size").to_pylist() == [1, 2]
    assert kept.schema.field("dedup_size").type == pa.int32()
    assert "drop_reason" not in kept.column_names

    assert rejected.column("id").to_pylist() == [par_id]
    assert rejected.column("drop_stage").to_pylist() == ["dedup"]
    assert rejected.column("drop_reason").to_pylist() == [f"near_duplicate_of:{near_id}"]
    assert rejected.column("dedup_cluster").to_pylist() == [near_id]
    assert rejected.column("dedup_size").to_pylist() == [2]
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


def test_exact_duplicates_cluster() -> None:
    # Same text in two kinds (different ids) and twice in one kind (same id, different time).
    rows = [sample(OTHER, 2, "document"), sample(OTHER, 1, "textbook"), sample(OTHER, 0, "document"), sample(THIRD, 0)]
    kept, rejected = apply_dedup(table_of(*rows), DedupConfig())
    assert kept.num_rows == 2 and rejected.num_rows == 2
    survivor = kept.to_pylist()[0]
    assert survivor["created_at"] == T0 and survivor["kind"] == "document" and survivor["dedup_size"] == 3
    assert rejected.column("drop_reason").to_pylist() == [f"near_duplicate_of:{survivor['id']}"] * 2


def test_short_texts() -> None:
    texts = ["Yes.", "yes", "No.", "", "", "Paris is in France.", "Paris is in Spain."]
    roots = near_duplicate_clusters(texts, DedupConfig())
    assert roots == [0, 0, 2, 3, 3, 5, 6]  # normalized-identical short texts cluster, others don't
    kept, rejected = apply_dedup(table_of(*(sample(t, i) for i, t in enumerate(texts))), DedupConfig())
    assert kept.column("text").to_pylist() == ["Yes.", "No.", "", "Paris is in France.", "Paris is in Spain."]
    assert rejected.num_rows == 2


def test_deterministic() -> None:
    rows = [sample(t, i % 2) for i, t in enumerate([PARAGRAPH, OTHER, NEAR, THIRD, OTHER.upper(), "short"])]
    table = table_of(*rows)
    first = apply_dedup(table, DedupConfig())
    second = apply_dedup(table, DedupConfig())
    assert first[0].equals(second[0]) and first[1].equals(second[1])
    # running again on the kept rows changes nothing (columns are replaced, not duplicated)
    again_kept, again_rejected = apply_dedup(first[0], DedupConfig())
    assert again_kept.drop_columns(["dedup_size"]).equals(first[0].drop_columns(["dedup_size"]))
    assert again_rejected.num_rows == 0


def test_disabled() -> None:
    rows = [sample(PARAGRAPH, 1), sample(PARAGRAPH, 0), sample(NEAR, 2)]
    table = table_of(*rows)
    kept, rejected = apply_dedup(table, DedupConfig(enabled=False))
    assert kept.drop_columns(["dedup_cluster", "dedup_size"]).equals(table)
    assert kept.column("dedup_cluster").to_pylist() == table.column("id").to_pylist()
    assert kept.column("dedup_size").to_pylist() == [1, 1, 1]
    assert rejected.num_rows == 0
    assert rejected.column_names == kept.column_names + ["drop_stage", "drop_reason"]


def test_empty_table() -> None:
    kept, rejected = apply_dedup(samples_to_table([]), DedupConfig())
    assert kept.num_rows == rejected.num_rows == 0
    assert "dedup_cluster" in kept.column_names and "drop_reason" in rejected.column_names


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


@pytest.mark.shared_data
def test_dedup_on_the_pile_sample(pile_docs: list[dict]) -> None:
    docs = [doc["contents"] for doc in pile_docs]
    rng = random.Random(20240101)
    vocabulary = sorted({w for doc in docs for w in doc.split() if w.isalpha() and w.islower()})
    sources = rng.sample([i for i, doc in enumerate(docs) if len(doc.split()) >= 50], 50)
    copies = [near_copy(docs[i], rng, vocabulary) for i in sources]

    # Copies are created after every original, so an original always survives its copy.
    rows = [sample(doc, minutes=i) for i, doc in enumerate(docs)]
    rows += [sample(copy, minutes=10_000 + k) for k, copy in enumerate(copies)]
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
            assert row["dedup_size"] >= 2
