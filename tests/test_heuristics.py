"""The Gopher quality rules (Rae et al. 2021, App. A.1.1) and the heuristics stage."""

from __future__ import annotations


import pyarrow as pa
import pytest

from dataforge.config import GopherQualityConfig, HeuristicsConfig
from dataforge.curate.heuristics import (
    GOPHER_RULES,
    METRICS_SCHEMA,
    RULE_NAMES,
    apply_heuristics,
    gopher_quality_metrics,
    gopher_quality_reasons,
    split_words,
)
from dataforge.records import make_sample, samples_to_table

GOOD = (
    "Photosynthesis is the process by which green plants turn light into chemical energy. "
    "Inside the leaves, chlorophyll absorbs sunlight and uses it to split water molecules, "
    "releasing oxygen as a by-product. The energy that is captured this way drives the "
    "synthesis of sugars from carbon dioxide. Those sugars feed the plant and, through the "
    "food chain, nearly every animal on Earth. Without this process there would be very "
    "little oxygen in the atmosphere and no forests, fields or farms to speak of."
)

NO_STOP_WORDS = " ".join(
    ["Cats chase mice across quiet gardens every evening while owls watch from tall trees."] * 6
)

# One text per rule that fails that rule and passes every other one (with default thresholds).
RULE_TEXTS = {
    "min_doc_words": "The gardener planted tomatoes and peppers along the sunny fence of the yard.",
    "max_doc_words": " ".join([GOOD] * 1250),  # ~100,000 words
    "min_avg_word_length": " ".join(["we go to it and be on up as of an ox"] * 6),
    "max_avg_word_length": " ".join(["the internationalization of telecommunications infrastructure"] * 12),
    "max_symbol_word_ratio": GOOD + " #" * 12,
    "max_bullet_lines_ratio": "\n".join(f"- the item number {w} is of some note" for w in "abcdefghij"),
    "max_ellipsis_lines_ratio": "\n".join(
        [GOOD] + [f"The story of the {w} went on and on with the things that have no end..." for w in "abcd"]
    ),
    "max_non_alpha_words_ratio": GOOD + " " + " ".join(str(1000 + i) for i in range(40)),
    "min_stop_words": NO_STOP_WORDS,
}


def table_of(*rows: tuple[str, str]) -> pa.Table:
    return samples_to_table(make_sample(kind, text) for kind, text in rows)


def reason_of(text: str, cfg: GopherQualityConfig | None = None) -> str | None:
    cfg = cfg or GopherQualityConfig()
    return gopher_quality_reasons(gopher_quality_metrics([text], cfg.stop_words), cfg)[0]


def test_rules_follow_config_field_order() -> None:
    fields = [name for name in GopherQualityConfig.model_fields if name != "stop_words"]
    assert [rule.name for rule in GOPHER_RULES] == fields
    assert RULE_NAMES == tuple(f"gopher_quality:{name}" for name in fields)
    assert set(RULE_TEXTS) == set(fields)


@pytest.mark.parametrize("rule", list(RULE_TEXTS))
def test_each_rule_names_exactly_that_rule(rule: str) -> None:
    text = RULE_TEXTS[rule]
    assert reason_of(text) == f"gopher_quality:{rule}"
    # and it is the only rule the text fails: with that rule disabled the text passes
    assert reason_of(text, GopherQualityConfig(**{rule: None})) is None


def test_good_paragraph_passes() -> None:
    assert reason_of(GOOD) is None
    kept, rejected = apply_heuristics(table_of(("textbook", GOOD)), HeuristicsConfig())
    assert (kept.num_rows, rejected.num_rows) == (1, 0)
    row = kept.to_pylist()[0]
    assert row["heur_checked"] is True
    assert 50 <= row["heur_n_words"] <= 90
    assert 3 <= row["heur_avg_word_length"] <= 10
    assert row["heur_alpha_words_ratio"] == 1.0
    assert row["heur_stop_words"] >= 2


def test_metric_values_by_hand() -> None:
    text = "The cat... and the dog!\n\n- a #1 list item\n* b 42 …\n  --"
    # words: The cat and the dog a 1 list item b 42   ("-", "#", "*", "…", "--" are not words)
    assert split_words(text) == ["The", "cat", "and", "the", "dog", "a", "1", "list", "item", "b", "42"]
    m = gopher_quality_metrics([text], ["the", "and"]).to_pylist()[0]
    assert m["heur_n_words"] == 11
    assert m["heur_avg_word_length"] == pytest.approx(28 / 11)
    assert m["heur_symbol_word_ratio"] == pytest.approx(3 / 11)  # "#", "...", "…"
    assert m["heur_bullet_lines_ratio"] == pytest.approx(2 / 4)  # 4 non-blank lines; "--" is no bullet
    assert m["heur_ellipsis_lines_ratio"] == pytest.approx(1 / 4)  # "… " ends its line once stripped
    assert m["heur_alpha_words_ratio"] == pytest.approx(9 / 11)
    assert m["heur_stop_words"] == 3  # The, and, the: occurrences, case-insensitive


def test_metrics_of_none_and_empty_texts() -> None:
    metrics = gopher_quality_metrics([None, "", "   \n "])
    assert metrics.schema == METRICS_SCHEMA
    rows = metrics.to_pylist()
    assert all(v is None for v in rows[0].values())
    assert rows[1]["heur_n_words"] == 0 and rows[1]["heur_avg_word_length"] == 0.0
    reasons = gopher_quality_reasons(metrics, GopherQualityConfig())
    assert reasons == [None, "gopher_quality:min_doc_words", "gopher_quality:min_doc_words"]


def test_apply_to_is_respected() -> None:
    short = "Two plus two is four, so the answer is 4."
    table = table_of(("cot", short), ("textbook", short))
    kept, rejected = apply_heuristics(table, HeuristicsConfig())
    assert kept.column("kind").to_pylist() == ["cot"]
    cot = kept.to_pylist()[0]
    assert cot["heur_checked"] is False
    assert all(cot[name] is None for name in METRICS_SCHEMA.names)
    assert rejected.column("kind").to_pylist() == ["textbook"]
    assert rejected.column("drop_reason").to_pylist() == ["gopher_quality:min_doc_words"]
    assert rejected.column("drop_stage").to_pylist() == ["heuristics"]
    assert rejected.column("heur_checked").to_pylist() == [True]
    assert rejected.column("heur_n_words").to_pylist() == [10]


def test_threshold_overrides_change_the_outcome() -> None:
    short = RULE_TEXTS["min_doc_words"]
    assert reason_of(short) == "gopher_quality:min_doc_words"
    assert reason_of(short, GopherQualityConfig(min_doc_words=5)) is None
    assert reason_of(GOOD, GopherQualityConfig(max_avg_word_length=4)) == "gopher_quality:max_avg_word_length"
    assert reason_of(GOOD, GopherQualityConfig(min_stop_words=100)) == "gopher_quality:min_stop_words"
    custom_stop = GopherQualityConfig(stop_words=["cats", "owls"])
    assert reason_of(NO_STOP_WORDS, custom_stop) is None
    # through the stage config
    table = table_of(("document", short))
    cfg = HeuristicsConfig(gopher_quality=GopherQualityConfig(min_doc_words=None, min_avg_word_length=None))
    kept, rejected = apply_heuristics(table, cfg)
    assert (kept.num_rows, rejected.num_rows) == (1, 0)


def test_keep_metrics_false_drops_the_columns() -> None:
    table = table_of(("textbook", GOOD), ("textbook", "Too short."))
    kept, rejected = apply_heuristics(table, HeuristicsConfig(keep_metrics=False))
    for out in (kept, rejected):
        assert [c for c in out.column_names if c.startswith("heur_")] == ["heur_checked"]
    assert (kept.num_rows, rejected.num_rows) == (1, 1)
    assert rejected.column_names == table.column_names + ["heur_checked", "drop_stage", "drop_reason"]


def test_row_accounting_and_order() -> None:
    rows = [("textbook", GOOD), ("cot", "short"), ("document", NO_STOP_WORDS), ("instruction", "x")]
    rows += [("document", text) for text in RULE_TEXTS.values() if len(text) < 10_000]
    rows += [("textbook", GOOD.replace("plants", "trees"))]
    table = table_of(*rows)
    kept, rejected = apply_heuristics(table, HeuristicsConfig())
    assert kept.num_rows + rejected.num_rows == table.num_rows
    in_ids = table.column("id").to_pylist()
    kept_ids = kept.column("id").to_pylist()
    assert sorted(kept_ids + rejected.column("id").to_pylist()) == sorted(in_ids)
    assert kept_ids == [i for i in in_ids if i in set(kept_ids)]  # input order
    assert kept.column("kind").to_pylist() == ["textbook", "cot", "instruction", "textbook"]
    assert set(rejected.column("drop_reason").to_pylist()) <= set(RULE_NAMES)
    # every core column survives on both sides, and kept has no drop columns
    assert kept.column_names[: len(table.column_names)] == table.column_names
    assert "drop_reason" not in kept.column_names
    # deterministic, and re-running replaces the stage's columns instead of duplicating them
    again_kept, again_rejected = apply_heuristics(table, HeuristicsConfig())
    assert again_kept.equals(kept) and again_rejected.equals(rejected)
    rerun_kept, rerun_rejected = apply_heuristics(kept, HeuristicsConfig())
    assert rerun_kept.equals(kept) and rerun_rejected.num_rows == 0


def test_disabled_passes_everything_unchanged() -> None:
    table = table_of(("textbook", "Too short."), ("document", GOOD))
    kept, rejected = apply_heuristics(table, HeuristicsConfig(enabled=False))
    assert kept.equals(table)
    assert rejected.num_rows == 0
    assert rejected.column_names == table.column_names + ["drop_stage", "drop_reason"]


def test_empty_table() -> None:
    kept, rejected = apply_heuristics(samples_to_table([]), HeuristicsConfig())
    assert kept.num_rows == rejected.num_rows == 0
    assert "heur_n_words" in kept.column_names and "drop_reason" in rejected.column_names


# --- real data --------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_gopher_on_the_pile_sample(pile_docs: list[dict]) -> None:
    docs = pile_docs
    assert len(docs) == 1000
    table = table_of(*(("document", doc["contents"]) for doc in docs))
    cfg = HeuristicsConfig()
    gq = cfg.gopher_quality
    kept, rejected = apply_heuristics(table, cfg)

    assert kept.num_rows + rejected.num_rows == 1000
    assert 100 < kept.num_rows < 900, "real web text: a fair share kept, a fair share dropped"
    reasons = rejected.column("drop_reason").to_pylist()
    assert set(reasons) <= set(RULE_NAMES)
    assert "gopher_quality:min_doc_words" in reasons

    # Fewer than 50 whitespace tokens means fewer than 50 words: dropped by the first rule.
    for row in table.to_pylist():
        if len(row["text"].split()) < gq.min_doc_words:
            assert row["id"] in set(rejected.column("id").to_pylist())
    by_id = dict(zip(rejected.column("id").to_pylist(), reasons))
    short = [r for r in table.to_pylist() if len(r["text"].split()) < gq.min_doc_words]
    assert short and all(by_id[r["id"]] == "gopher_quality:min_doc_words" for r in short)

    # No kept document violates an enabled threshold, recomputed from the metric columns.
    for row in kept.to_pylist():
        assert gq.min_doc_words <= row["heur_n_words"] <= gq.max_doc_words
        assert gq.min_avg_word_length <= row["heur_avg_word_length"] <= gq.max_avg_word_length
        assert row["heur_symbol_word_ratio"] <= gq.max_symbol_word_ratio
        assert row["heur_bullet_lines_ratio"] <= gq.max_bullet_lines_ratio
        assert row["heur_ellipsis_lines_ratio"] <= gq.max_ellipsis_lines_ratio
        assert row["heur_alpha_words_ratio"] >= gq.max_non_alpha_words_ratio
        assert row["heur_stop_words"] >= gq.min_stop_words
    # ...and every rejected document does violate the rule it is rejected for.
    rules = {rule.reason: rule for rule in GOPHER_RULES}
    for row in rejected.to_pylist():
        rule = rules[row["drop_reason"]]
        assert rule.fails(row[rule.metric], getattr(gq, rule.name))

    # Source code is mostly dropped, encyclopedic / news prose mostly kept.
    kept_ids = set(kept.column("id").to_pylist())
    ids = table.column("id").to_pylist()

    def kept_share(sources: set[str]) -> float:
        flags = [i in kept_ids for i, d in zip(ids, docs) if d["metadata"]["pile_set_name"] in sources]
        return sum(flags) / len(flags)

    assert kept_share({"Github"}) < 0.5 < kept_share({"Wikipedia (en)", "OpenWebText2", "PubMed Abstracts"})
