"""The Gopher quality rules (Rae et al. 2021, App. A.1.1) and the heuristics stage."""

from __future__ import annotations


import pyarrow as pa
import pytest

from dataforge.config import GopherQualityConfig, HeuristicsConfig
from dataforge.curate.heuristics import (
    GOPHER_QUALITY_RULE_NAMES,
    GOPHER_QUALITY_RULES,
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
    fields = [name for name in GopherQualityConfig.model_fields
              if name not in ("enabled", "stop_words", "definitions")]
    assert [rule.name for rule in GOPHER_QUALITY_RULES] == fields
    assert GOPHER_QUALITY_RULE_NAMES == tuple(f"gopher_quality:{name}" for name in fields)
    assert RULE_NAMES[: len(fields)] == GOPHER_QUALITY_RULE_NAMES  # gopher_quality is the first family
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
    assert set(rejected.column("drop_reason").to_pylist()) <= set(GOPHER_QUALITY_RULE_NAMES)
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
    assert set(reasons) <= set(GOPHER_QUALITY_RULE_NAMES)
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
    rules = {rule.reason: rule for rule in GOPHER_QUALITY_RULES}
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


# === Gopher repetition, C4, FineWeb quality (issue 4, part 1) ====================================

from dataforge.config import (C4Config, FineWebQualityConfig, GopherRepetitionConfig,  # noqa: E402
                              parse_config)
from dataforge.curate import heuristics as H  # noqa: E402
from dataforge.curate import wordtok  # noqa: E402

ALL_FAMILIES = {"gopher_repetition": {"enabled": True}, "c4": {"enabled": True},
                "fineweb_quality": {"enabled": True}}

# Prose that passes every family with the default thresholds: 6+ sentences on lines that end in
# punctuation, no repeated lines or n-grams, not too many newlines.
PROSE = (
    "Photosynthesis is the process by which green plants turn light into chemical energy.\n"
    "Inside the leaves, chlorophyll absorbs sunlight and uses it to split water molecules. "
    "Oxygen is released as a by-product of that reaction.\n"
    "The energy captured this way drives the synthesis of sugars from carbon dioxide. "
    "Those sugars feed the plant and, through the food chain, nearly every animal on Earth.\n"
    "Without this process there would be very little oxygen in the atmosphere today."
)


def only(family: str, **fields) -> H.HeuristicsConfig:
    """A config that runs one family (with ``fields`` overriding its config)."""
    data = {f: {"enabled": f == family} for f in H.FAMILY_NAMES}
    data[family].update(fields)
    return H.HeuristicsConfig.model_validate(data)


def decide(text: str, cfg: H.HeuristicsConfig, fast: bool = True) -> tuple[dict, str | None]:
    metrics, reasons, _ = H.heuristics_table([text], cfg, fast=fast)
    return metrics.to_pylist()[0], reasons[0]


def test_prose_passes_every_family_on_both_paths() -> None:
    cfg = H.HeuristicsConfig.model_validate(ALL_FAMILIES)
    for fast in (True, False):
        _, reason = decide(PROSE, cfg, fast)
        assert reason is None


def test_rule_names_and_config_fields() -> None:
    rep_fields = [f for f in GopherRepetitionConfig.model_fields if f != "enabled"]
    assert [r.name for r in H.GOPHER_REPETITION_RULES] == ["empty"] + rep_fields
    assert "gopher_repetition:dup_line_frac" in H.RULE_NAMES and "c4:min_sentences" in H.RULE_NAMES
    assert "fineweb_quality:list_ratio" in H.RULE_NAMES
    assert len(set(H.RULE_NAMES)) == len(H.RULE_NAMES)
    assert H.FAMILY_NAMES == ("gopher_quality", "gopher_repetition", "c4", "fineweb_quality")
    # defaults are the published thresholds (Gopher Table A1, C4, FineWeb)
    rep, c4, fw = GopherRepetitionConfig(), C4Config(), FineWebQualityConfig()
    assert (rep.dup_line_frac, rep.dup_para_char_frac, rep.top_2_gram_char_frac, rep.dup_10_gram_char_frac) == \
        (0.3, 0.2, 0.2, 0.10)
    assert (c4.min_sentences, c4.min_words_per_line, c4.max_word_length) == (5, 3, 1000)
    assert (fw.line_punct_ratio, fw.short_line_ratio, fw.short_line_length, fw.char_dup_ratio, fw.list_ratio) == \
        (0.12, 0.67, 30, 0.01, 0.3)


# Each repetition rule: a text, the metric by hand, and the rule fails just above / passes just at it.
REPETITION_CASES = [
    # 3 paragraphs, the 3rd repeats the 1st: 1/3 of paragraphs, 7 of 28 characters
    ("dup_para_frac", "A para.\n\nOther one.\n\nA para.", 1 / 3),
    ("dup_para_char_frac", "A para.\n\nOther one.\n\nA para.", 7 / 28),
    # 3 lines, one repeats: 1/3 of lines, 3 of 9 characters
    ("dup_line_frac", "x y\nz w\nx y", 1 / 3),
    ("dup_line_char_frac", "x y\nz w\nx y", 3 / 11),
    # tokens the cat the cat the cat: "the cat" x 3 = 21 of 23 characters
    ("top_2_gram_char_frac", "the cat the cat the cat", 21 / 23),
    ("top_3_gram_char_frac", "a b c a b c a b c d", (5 * 3) / 19),
    ("top_4_gram_char_frac", "a b c d a b c d e", (7 * 2) / 17),
    # a b c d e a b c d e: the second 5-gram repeats the first: 5 characters (joined) of 19
    ("dup_5_gram_char_frac", "a b c d e a b c d e", 5 / 19),
    ("dup_6_gram_char_frac", "a b c d e f a b c d e f", 6 / 23),
    ("dup_10_gram_char_frac", " ".join("abcdefghij" * 2), 10 / 39),
]


@pytest.mark.parametrize("rule,text,expected", REPETITION_CASES, ids=[c[0] for c in REPETITION_CASES])
def test_each_repetition_rule_on_both_sides_of_its_threshold(rule: str, text: str, expected: float) -> None:
    off = {f: None for f in GopherRepetitionConfig.model_fields if f != "enabled"}
    for fast in (True, False):
        m, _ = decide(text, only("gopher_repetition", **off), fast)
        assert m[f"heur_{rule}"] == pytest.approx(expected)
        _, reason = decide(text, only("gopher_repetition", **{**off, rule: expected - 1e-6}), fast)
        assert reason == f"gopher_repetition:{rule}"
        _, reason = decide(text, only("gopher_repetition", **{**off, rule: expected}), fast)
        assert reason is None  # the bound itself passes (drop when above)


def test_repetition_order_and_empty() -> None:
    text = "same line\nsame line\nsame line\nsame line"
    _, reason = decide(text, only("gopher_repetition"))
    assert reason == "gopher_repetition:dup_line_frac"  # 3/4 lines; paragraphs come first but there is one
    assert decide("", only("gopher_repetition"))[1] == "gopher_repetition:empty"
    assert decide("", only("gopher_repetition"), fast=False)[1] == "gopher_repetition:empty"


def test_duplicated_ngram_scan_skips_past_a_repeat() -> None:
    # datatrove's find_all_duplicate: after a repeated n-gram the scan jumps n words
    words = "a b a b a b a".split()
    assert H.duplicated_ngram_chars(words, 2) == 4  # "ab" at 2 (skip to 4), "ab" at 4 (skip to 6): 2 + 2
    assert H.top_ngram_chars(words, 2) == len("a b") * 3
    assert H.top_ngram_chars(["x"], 2) == 0


C4_LINES = [
    "The first sentence is here. The second one follows it.",
    "A third sentence ends the line!",
    "Is this the fourth sentence? It is, and this is the fifth.",
]


def test_c4_line_rules_and_cleaning() -> None:
    text = "\n".join([
        "Navigation menu",                                        # no terminal punctuation
        C4_LINES[0],
        "Too short.",                                             # fewer than 3 words
        "Please enable JavaScript to view the comments.",         # javascript
        "A third sentence[1] ends the line!",                     # citation removed, then kept
        "This site uses cookies to improve your experience.",     # policy
        "  " + C4_LINES[2] + "  ",
        "x" * 1001 + " is a very long word.",                     # word over 1000 characters
        "",
        "Wait for it...",                                         # an ellipsis is no terminal mark
    ])
    cfg = only("c4")
    for fast in (True, False):
        metrics, reasons, cleaned = H.heuristics_table([text], cfg, fast=fast)
        m = metrics.to_pylist()[0]
        assert m["heur_c4_sentences"] == 5 and reasons == [None]
        assert m["heur_c4_lines_removed"] == 6  # the blank line is not counted
        assert not m["heur_c4_lorem_ipsum"] and not m["heur_c4_curly_bracket"]
        assert cleaned == ["\n".join([C4_LINES[0], C4_LINES[1], C4_LINES[2]])]
    # one sentence fewer: dropped; with the bound lowered, kept
    short = "\n".join(C4_LINES[:2])
    assert decide(short, cfg)[0]["heur_c4_sentences"] == 3
    assert decide(short, cfg)[1] == "c4:min_sentences"
    assert decide(short, only("c4", min_sentences=3))[1] is None
    assert decide(short, only("c4", min_sentences=None))[1] is None
    # line rules switched off keep the lines they would remove
    m, _ = decide("Navigation menu\n" + short, only("c4", filter_no_terminal_punct=False))
    assert m["heur_c4_lines_removed"] == 1  # still fewer than 3 words? no: "Navigation menu" has 2
    m, _ = decide("Navigation menu here\n" + short, only("c4", filter_no_terminal_punct=False))
    assert m["heur_c4_lines_removed"] == 0 and m["heur_c4_sentences"] == 4


def test_c4_document_rules() -> None:
    body = "\n".join(C4_LINES)
    cfg = only("c4")
    assert decide(body + "\nLorem ipsum dolor sit amet, consectetur.", cfg)[1] == "c4:lorem_ipsum"
    assert decide(body + "\nThe map is {a: 1} in this code.", cfg)[1] == "c4:curly_bracket"
    # a bracket on a line that a line rule removes first does not count (datatrove's order)
    assert decide(body + "\nfunction f() {", cfg)[1] is None
    assert decide(body + "\nThe javascript object {a: 1} is here.", cfg)[1] is None
    assert decide(body + "\nThe map is {a: 1} in this code.", only("c4", filter_curly_bracket=False))[1] is None
    # lorem ipsum comes before the bracket in the rule order
    assert decide(body + "\nLorem ipsum {x} dolor sit.", cfg)[1] == "c4:lorem_ipsum"


def test_fineweb_rules_on_both_sides() -> None:
    cfg = only("fineweb_quality")
    # 10 lines, 1 ends in punctuation: ratio 0.1 < 0.12
    no_punct = "\n".join([f"line number {w} without any final mark at all here" for w in "abcdefghi"] +
                         ["The last line ends well."])
    for fast in (True, False):
        m, reason = decide(no_punct, cfg, fast)
        assert m["heur_fw_line_punct_ratio"] == pytest.approx(0.1)
        assert reason == "fineweb_quality:line_punct_ratio"
        assert decide(no_punct, only("fineweb_quality", line_punct_ratio=0.1), fast)[1] is None
    zero = "no line here ends with any final mark at all\nand neither does this other line over here"
    assert decide(zero, only("fineweb_quality", line_punct_exclude_zero=True, list_ratio=None))[1] is None
    # short lines: 3 of 4 lines at most 30 characters (0.75 > 0.67)
    short = "Short one.\nAnother short.\nThird short line.\nA long line that is certainly more than thirty characters."
    m, reason = decide(short, cfg)
    assert m["heur_fw_short_line_ratio"] == pytest.approx(0.75) and reason == "fineweb_quality:short_line_ratio"
    assert decide(short, only("fineweb_quality", short_line_ratio=0.75))[1] is None
    assert decide(short, only("fineweb_quality", short_line_length=10))[1] is None
    # duplicated lines: characters of repeated lines / non-newline characters
    dup = PROSE + "\nSee the note.\nSee the note."
    m, reason = decide(dup, cfg)
    assert m["heur_fw_char_dup_ratio"] == pytest.approx(13 / (len(dup) - dup.count("\n")))
    assert reason == "fineweb_quality:char_dup_ratio"
    assert decide(dup, only("fineweb_quality", char_dup_ratio=0.05))[1] is None
    # newlines per token: a list of one-word lines
    listy = "\n".join(f"Item{i}." for i in range(20))
    m, reason = decide(listy, only("fineweb_quality", short_line_ratio=None))
    assert m["heur_fw_list_ratio"] == pytest.approx(19 / 40)  # 19 newlines, 40 tokens ("Item0", ".")
    assert reason == "fineweb_quality:list_ratio"
    assert decide("  \n\n \t", cfg)[1] == "fineweb_quality:empty"


def test_first_failed_rule_names_the_drop_across_families() -> None:
    short_doc = "Too short to be a document."
    cfg = H.HeuristicsConfig.model_validate(ALL_FAMILIES)
    assert decide(short_doc, cfg)[1] == "gopher_quality:min_doc_words"
    no_gq = H.HeuristicsConfig.model_validate({**ALL_FAMILIES, "gopher_quality": {"enabled": False}})
    # in a short text any 2-gram is a large share of the characters (as in datatrove)
    assert decide(short_doc, no_gq)[1] == "gopher_repetition:top_2_gram_char_frac"
    no_gq_rep = H.HeuristicsConfig.model_validate({**ALL_FAMILIES, "gopher_quality": {"enabled": False},
                                                   "gopher_repetition": {"enabled": False}})
    assert decide(short_doc, no_gq_rep)[1] == "c4:min_sentences"
    only_fw = only("fineweb_quality")
    assert decide(short_doc, only_fw)[1] == "fineweb_quality:short_line_ratio"  # one line of 27 characters
    # the stage: reason column and per-family metric columns
    table = table_of(("document", PROSE), ("document", short_doc), ("cot", short_doc))
    kept, rejected = apply_heuristics(table, cfg)
    assert kept.column("kind").to_pylist() == ["document", "cot"]
    assert rejected.column("drop_reason").to_pylist() == ["gopher_quality:min_doc_words"]
    for name in ("heur_dup_line_frac", "heur_c4_sentences", "heur_fw_list_ratio", "heur_n_words"):
        assert name in kept.column_names and name in rejected.column_names
    assert kept.to_pylist()[1]["heur_c4_sentences"] is None  # unchecked row: null metrics


def test_config_overrides_from_yaml_dict() -> None:
    cfg = parse_config({"heuristics": {"c4": {"enabled": True, "min_sentences": 2},
                                       "gopher_repetition": {"enabled": False, "dup_line_frac": None},
                                       "gopher_quality": {"enabled": False}}}).heuristics
    assert cfg.c4.enabled and cfg.c4.min_sentences == 2 and cfg.gopher_repetition.dup_line_frac is None
    assert decide("\n".join(C4_LINES[:1]), cfg)[1] is None
    assert decide("\n".join(C4_LINES[:1]), only("c4"))[1] == "c4:min_sentences"
    with pytest.raises(Exception):
        parse_config({"heuristics": {"c4": {"min_sentence": 2}}})  # a misspelt field is an error


def test_stage_cleans_c4_lines_of_kept_rows() -> None:
    text = "Menu\n" + "\n".join(C4_LINES) + "\nHome | About | Contact"
    table = table_of(("document", text), ("document", "Menu\nTiny."))
    cfg = H.HeuristicsConfig.model_validate({"gopher_quality": {"enabled": False}, "c4": {"enabled": True},
                                             "keep_metrics": False})
    kept, rejected = apply_heuristics(table, cfg)
    assert kept.column("text").to_pylist() == ["\n".join(C4_LINES)]
    assert kept.column("heur_c4_lines_removed").to_pylist() == [2]  # kept without keep_metrics
    assert rejected.column("text").to_pylist() == ["Menu\nTiny."]  # rejected rows keep their text
    assert rejected.column("drop_reason").to_pylist() == ["c4:min_sentences"]
    no_clean = H.HeuristicsConfig.model_validate({"gopher_quality": {"enabled": False},
                                                  "c4": {"enabled": True, "clean_lines": False}})
    assert apply_heuristics(table, no_clean)[0].column("text").to_pylist() == [text]


def test_gopher_quality_datatrove_definitions_by_hand() -> None:
    text = "The cat... and the dog!\n\n- a #1 list item\n* b 42 …\n  --"
    # spaCy tokens (18): The cat ... and the dog ! - a # 1 list item * b 42 … --
    m = H.gopher_quality_metrics([text], ["the", "and", "dog"], definitions="datatrove").to_pylist()[0]
    assert m["heur_n_words"] == 11  # tokens with a character outside datatrove's punctuation
    assert m["heur_avg_word_length"] == pytest.approx(28 / 11)
    assert m["heur_symbol_word_ratio"] == pytest.approx(2 / 18)  # max(1 "#", 2 ellipses) / 18 tokens
    assert m["heur_bullet_lines_ratio"] == pytest.approx(2 / 5)  # "- a", "  --"; the blank line counts
    assert m["heur_ellipsis_lines_ratio"] == pytest.approx(1 / 5)
    assert m["heur_alpha_words_ratio"] == pytest.approx(9 / 18)  # punctuation tokens count as non-alpha
    assert m["heur_stop_words"] == 3  # distinct and case-sensitive: "the", "and", "dog" (not "The")
    cfg = H.HeuristicsConfig.model_validate({"gopher_quality": {"definitions": "datatrove"}})
    assert decide(GOOD, cfg)[1] is None and decide(GOOD, cfg, fast=False)[1] is None


# --- the spaCy-rule tokenizer (datatrove's words and sentences) --------------------------------

@pytest.mark.parametrize("text,tokens", [
    # spaCy 3.8 / datatrove 0.10.1 split_into_words on these strings
    ("Don't panic: Mr. Smith's dog (see e-mail) cost $3.14 in the U.S. today...",
     ["Do", "n't", "panic", ":", "Mr.", "Smith", "'s", "dog", "(", "see", "e", "-", "mail", ")", "cost", "$",
      "3.14", "in", "the", "U.S.", "today", "..."]),
    ("I can't go, it's 10km away!", ["I", "ca", "n't", "go", ",", "it", "'s", "10", "km", "away", "!"]),
    ("Visit https://example.com/a?b=1 now.", ["Visit", "https://example.com/a?b=1", "now", "."]),
    ("x=5; f(x) -> {y}", ["x=5", ";", "f(x", ")", "-", ">", "{", "y", "}"]),
])
def test_tokenizer_matches_spacy(text: str, tokens: list[str]) -> None:
    assert wordtok.tokenize(text) == tokens


def test_tokenizer_on_long_chunks() -> None:
    # peeling thousands of marks off one chunk, and a long run of periods (one token)
    assert wordtok.tokenize("(" * 3000 + "word" + ")" * 3000 + ".") == ["("] * 3000 + ["word"] + [")"] * 3000 + ["."]
    assert wordtok.tokenize("=" * 5000) == ["="] * 5000
    assert wordtok.tokenize("end" + "." * 500) == ["end", "." * 500]


@pytest.mark.parametrize("text,n", [("Hello there. How are you? Fine.", 3), ("Mr. Smith went home at 5 p.m. today.", 1),
                                    ("Wait... what is this. Yes!", 2), ('"Quoted." Then more.', 2), ("", 0)])
def test_sentences_match_spacy_sentencizer(text: str, n: int) -> None:
    assert wordtok.count_sentences(text) == n


# --- the bulk path against the reference ---------------------------------------------------------

EDGE_TEXTS = [
    "", " ", "\n", "\n\n\n", " \t\n \n", "a", "word", "#", "...", "…", "{", "lorem ipsum.",
    "One line.\r\nTwo lines.\rThree.\u2028Four here now.\u2029Five is last.\x0bSix.\x0cSeven.\x1cEight.\x85Nine.",
    "Trailing newline at the end of it all.\n", "\nLeading newline, then a sentence.",
    "[1]\n[edit] [2]\nA cited line[3] of words.",
    "tabs\tand\u00a0no-break\u2003spaces,\u3000wide ones. Are here! Yes.",
    "- bullet one\n- bullet two\n• bullet three\n* star\n-- not a bullet",
    "ünïcödé wörds and 中文 characters 😀 emoji, and Ωmega. Done.",
    "中文的句子。\n日本語の文です。\nNo mark here\nअंत।",
    "same\nsame\nsame\n\nsame\n\nsame", "x " * 200, ("The end. " * 30).strip(),
    "a" * 1500 + " is long. Then short ones follow here.", "[1] [edit] [citation needed] cites.",
    "Mr.Smith said no.U.S. stuff e.g. this, i.e. that... etc. 3.14 1,000 10km $5 50%.",
    "JavaScript is required. Privacy Policy. Terms of Use apply here.",
    None,
]


# More texts where a kernel over the UTF-8 buffer could go wrong: every line separator, every kind
# of whitespace, multi-byte characters at line ends, very long lines and words, many short lines,
# repeated paragraphs, punctuation only, citations with non-ASCII digits, the two non-ASCII
# characters that lower-case to ASCII (the Kelvin sign to "k", "İ" to "i" + a combining dot).
MORE_EDGE_TEXTS = [
    "\r", "\r\n", "\r\n\r\n", "\n\r", "a\r\n\r\nb", "a\n\r\n\nb", "x\x1fy\x1dz", "\x85", "\u2028\u2029", " \u3000 ",
    "!!!", "... … ... …", "#\n#\n#", "?!.\n'\n\"", "—–-‐", "(((((", ".....", "......\n.......", "\n\n",
    "end.\n" * 500, "\n".join(f"line {i}." for i in range(3000)),
    ("Para one is here. It has words.\n\nPara two is here.\n\n" * 20).strip(),
    "A paragraph.\n\n\n\nA paragraph.\n \nA paragraph.\n\n", "\n\nA\n\nA\n\n",
    "word " * 5000, "x" * 3000 + ".", "é" * 1001 + " is long. " * 3, "é" * 999 + " fits. " * 6,
    "Das Ende。\nएक वाक्य।\nالنهاية؟\nΤέλος;\nКонец.",
    "The \u212aelvin policy: this site uses coo\u212aies. Coo\u212aie policy applies to all of us here.",
    "JAVASCR\u0130PT is \u0130stanbul. LOREM \u0130PSUM dolor sit amet. Lorem ipsum\u0130 here.",
    "A cited line[١٢] ends here now.\nAnother[12][edit].\n[citation needed]Start of it.\nEnd with a cite. [3]",
    "Line with [ bracket and ] other.\nDots and more..[1].\nA quote here.\"[2]\nA line[1]...",
    "😀😀😀 🎉. Emoji line one.\n😀😀😀 🎉. Emoji line one.",
    "\t\tindented bullet\n  • dot bullet\n  - dash\n+ plus\n–en dash\n-\n*\n-\u3000wide",
    "Mixed\u00a0nbsp\u2009thin\u202fnarrow and\u205fmath spaces. Done here now.",
    "trailing spaces   \nand tabs\t\t\n   \n", "{\n}\n{}", "Lorem ipsum dolor.\nThe {x} and y are here.",
]

FUZZ_PIECES = ["the", "The", "of", "and", "to", "word", "Words", "Mr.", "U.S.", "don't", "e-mail", "3.14", "1,000",
               "10km", "$5", "中文", "ünï", "Ωmega", "😀", ".", ",", "!", "?", "...", "…", "#", "—", "(", ")", ":",
               "[1]", "[edit]", "[citation needed]", "[١]", "[", "]", "{", "}", "lorem ipsum", "JavaScript",
               "privacy policy", "uses cookies", "\u212a", "\u0130", "•", "-", "*", "–", "\"", "'", "。", "।", "é" * 40]
FUZZ_SEPARATORS = [" ", " ", " ", " ", "  ", "\t", "\n", "\n", "\n\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f",
                   "\x85", "\xa0", "\u2028", "\u3000", ""]


def fuzz_texts(n: int, seed: int) -> list[str]:
    """Random texts of tricky pieces and separators; a third repeat a slice of themselves (so
    lines, paragraphs and n-grams repeat)."""
    import random

    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 150)):
            parts.append(rng.choice(FUZZ_PIECES))
            parts.append(rng.choice(FUZZ_SEPARATORS))
        text = "".join(parts)
        if rng.random() < 0.35:
            text += rng.choice(["\n", "\n\n", " "]) + text[:rng.randint(0, len(text))]
        texts.append(text)
    return texts


def fuzz_configs() -> list[H.HeuristicsConfig]:
    return [
        H.HeuristicsConfig.model_validate(ALL_FAMILIES),
        H.HeuristicsConfig.model_validate({
            "gopher_quality": {"stop_words": ["the", "DER", "straße", "ΚΑΙ", "k"]},
            "gopher_repetition": {"enabled": True},
            "c4": {"enabled": True, "remove_citations": False, "filter_no_terminal_punct": False,
                   "min_words_per_line": None, "max_word_length": 5, "filter_policy": False},
            "fineweb_quality": {"enabled": True, "short_line_length": 5, "line_punct_exclude_zero": True}}),
        H.HeuristicsConfig.model_validate({"gopher_quality": {"definitions": "datatrove",
                                                              "stop_words": ["The", "of", "and", "."]},
                                           "c4": {"enabled": True, "min_sentences": 1}}),
        only("c4", min_words_per_line=1, max_word_length=40),
        # Gopher quality alone: an ASCII chunk's word is read off its bytes, not the chunk cache
        H.HeuristicsConfig.model_validate({"gopher_quality": {
            "stop_words": ["the", "DER", "straße", "ΚΑΙ", "k", "don't", "e-mail", "a"]}}),
    ]


def assert_paths_agree(texts: list, cfg: H.HeuristicsConfig) -> None:
    """The bulk path gives exactly the reference's metrics (floats too: both divide the same
    integers), drop reasons and cleaned texts."""
    fm, fr, fc = H.heuristics_table(texts, cfg, fast=True)
    rm, rr, rc = H.heuristics_table(texts, cfg, fast=False)
    assert fm.schema == rm.schema
    for name in rm.column_names:
        fast_col, ref_col = fm.column(name).to_pylist(), rm.column(name).to_pylist()
        for i, (a, b) in enumerate(zip(fast_col, ref_col)):
            assert (a is None) == (b is None), (name, i)
            assert a == b, (name, i, a, b, texts[i] and texts[i][:80])
    assert fr == rr
    assert fc == rc


def test_fast_path_equals_reference_on_edge_cases() -> None:
    assert_paths_agree(EDGE_TEXTS, H.HeuristicsConfig.model_validate(ALL_FAMILIES))
    # non-default settings too
    odd = H.HeuristicsConfig.model_validate({
        "gopher_repetition": {"enabled": True},
        "c4": {"enabled": True, "remove_citations": False, "filter_no_terminal_punct": False,
               "min_words_per_line": None, "max_word_length": 5, "filter_policy": False},
        "fineweb_quality": {"enabled": True, "short_line_length": 5, "line_punct_exclude_zero": True}})
    assert_paths_agree(EDGE_TEXTS + [PROSE], odd)
    assert_paths_agree(EDGE_TEXTS + [PROSE, GOOD], H.HeuristicsConfig.model_validate(
        {"gopher_quality": {"definitions": "datatrove", "stop_words": ["The", "of", "and"]}}))
    assert_paths_agree([], H.HeuristicsConfig.model_validate(ALL_FAMILIES))
    assert_paths_agree([None, None], H.HeuristicsConfig.model_validate(ALL_FAMILIES))


def test_fast_path_equals_reference_on_more_edge_cases() -> None:
    for cfg in fuzz_configs():
        assert_paths_agree(MORE_EDGE_TEXTS, cfg)
    # each text alone too (a text's neighbours in the buffer must not matter)
    for text in MORE_EDGE_TEXTS[:20]:
        assert_paths_agree([text], fuzz_configs()[0])


def test_fast_path_equals_reference_on_random_texts() -> None:
    texts = fuzz_texts(300, seed=14)
    for cfg in fuzz_configs():
        assert_paths_agree(texts, cfg)


def test_chunk_cache_paths(monkeypatch) -> None:
    """The bulk path's per-process chunk cache: entries made without tokens get them when a later
    call needs them, C4 alone tokenizes only its kept lines, an overflowing cache is cleared."""
    from dataforge.curate import heuristics_fast as F

    texts = EDGE_TEXTS + MORE_EDGE_TEXTS + fuzz_texts(80, seed=5)
    every = H.HeuristicsConfig.model_validate(ALL_FAMILIES)
    F.clear_caches()
    assert_paths_agree(texts, only("gopher_quality"))
    assert_paths_agree(texts, every)
    F.clear_caches()
    assert_paths_agree(texts, only("c4"))
    assert_paths_agree(texts, every)
    assert_paths_agree(texts, H.HeuristicsConfig.model_validate({"gopher_quality": {"definitions": "datatrove"}}))
    monkeypatch.setattr(F.ChunkCache, "max_entries", 10)
    for part in (texts[:10], texts[10:40], texts[40:]):
        assert_paths_agree(part, every)
    assert F.chunk_cache().n > 10  # filled past the bound within a call, cleared at the next one


def test_bulk_path_from_threads() -> None:
    """Calls from several threads (each with its own chunk cache; the kernels release the GIL)
    each get the reference's answer, and the caches are the threads' own."""
    from concurrent.futures import ThreadPoolExecutor

    from dataforge.curate import heuristics_fast as F

    texts = fuzz_texts(240, seed=21)
    parts = [texts[i::6] for i in range(6)]
    configs = fuzz_configs()
    jobs = [(part, configs[i % len(configs)]) for i, part in enumerate(parts)] * 2
    expected = [H.heuristics_table(part, cfg, fast=False) for part, cfg in jobs]
    F.clear_caches()
    caches = set()

    def check(job):
        out = H.heuristics_table(job[0], job[1])
        caches.add(id(F.chunk_cache()))
        return out

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(check, jobs))
    assert len(caches) > 1 and id(F.chunk_cache()) not in caches
    for (fm, fr, fc), (rm, rr, rc) in zip(got, expected):
        assert fm.to_pylist() == rm.to_pylist()
        assert (fr, fc) == (rr, rc)


@pytest.mark.shared_data
def test_fast_path_equals_reference_on_the_pile(pile_docs: list[dict]) -> None:
    texts = [d["contents"] for d in pile_docs]
    cfg = H.HeuristicsConfig.model_validate(ALL_FAMILIES)
    assert_paths_agree(texts, cfg)
    assert_paths_agree(texts, H.HeuristicsConfig.model_validate({"gopher_quality": {"definitions": "datatrove"}}))
    _, reasons, _ = H.heuristics_table(texts, cfg)
    families = {r.split(":")[0] for r in reasons if r}
    assert families == set(H.FAMILY_NAMES), "real web text trips every family"
    assert 0.05 < reasons.count(None) / len(texts) < 0.6


# --- CLI and warehouse ----------------------------------------------------------------------

def test_filter_cli_end_to_end(tmp_path) -> None:
    import json

    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from dataforge.cli import app

    src = tmp_path / "in.jsonl"
    rows = [{"body": PROSE, "kind": "mine"}, {"body": "Too short.", "kind": "theirs"},
            {"body": GOOD.replace(".", ","), "kind": "x"}]  # no line ends a sentence: no C4 sentences
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n" + json.dumps({"body": 3}) + "\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["filter", str(src), "--out", str(out), "--text-column", "body",
                                   "--rules", "gopher_quality,c4"])
    assert res.exit_code == 0, res.output
    kept, rejected = pq.read_table(out / "kept.parquet"), pq.read_table(out / "rejected.parquet")
    assert kept.column("body").to_pylist() == [PROSE]  # every PROSE line survives C4's cleaning
    assert kept.column("kind").to_pylist() == ["mine"]  # the file's own column, back unchanged
    assert rejected.column("drop_reason").to_pylist() == ["gopher_quality:min_doc_words", "c4:min_sentences"]
    assert rejected.column("drop_stage").to_pylist() == ["heuristics"] * 2
    assert "heur_c4_sentences" in kept.column_names and "heur_dup_line_frac" not in kept.column_names
    assert len((out / "quarantine.jsonl").read_text().splitlines()) == 2
    assert "gopher_quality:min_doc_words" in res.output and "c4:min_sentences" in res.output
    assert "quarantined 2" in res.output
    bad = CliRunner().invoke(app, ["filter", str(src), "--out", str(out), "--text-column", "body", "--rules", "c5"])
    assert bad.exit_code != 0 and "unknown family" in bad.output


def test_warehouse_counts_rules(tmp_path) -> None:
    from dataforge import warehouse
    from dataforge.config import PipelineConfig
    from dataforge.runner import open_run, rejected_schema
    from dataforge.store import ShardWriter

    run = open_run(PipelineConfig(data_root=str(tmp_path / "data")), "heur-run")
    table = table_of(("document", PROSE), ("document", "Too short."), ("document", "Also short."),
                     ("document", GOOD.replace(".", ",")), ("cot", "x"))
    cfg = H.HeuristicsConfig.model_validate(ALL_FAMILIES)
    kept, rejected = apply_heuristics(table, cfg)
    run.begin_stage("heuristics")
    kw = ShardWriter(run.stage_dir("heuristics"), schema=kept.schema)
    kw.write(kept)
    rw = ShardWriter(run.rejected_dir("heuristics"), schema=rejected_schema(kept.schema))
    rw.write(rejected)
    run.commit_stage("heuristics", kw.close(), rw.close(), kept.schema, rejected_schema(kept.schema),
                     fingerprint="fp", config_hash="ch")
    con = warehouse.connect(run)
    report = warehouse.fetch_arrow(con, warehouse.report_queries()["heuristic_rules"]).to_pylist()
    got = {(r["family"], r["rule"]): (r["rows"], r["pct_of_checked"]) for r in report}
    assert got == {("gopher_quality", "min_doc_words"): (2, 50.0), ("c4", "min_sentences"): (1, 25.0)}


@pytest.mark.shared_data
def test_decisions_agree_with_datatrove(pile_docs: list[dict], tmp_path) -> None:
    """Optional: only where benchmarks/bench_rules.py has created its datatrove venv."""
    import json
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    python = repo / "benchmarks" / ".venv-datatrove" / "bin" / "python"
    if not python.exists():
        pytest.skip("no benchmarks/.venv-datatrove (run benchmarks/bench_rules.py once to create it)")
    texts = [d["contents"] for d in pile_docs[:300]]
    docs = tmp_path / "docs.json"
    docs.write_text(json.dumps(texts))
    proc = subprocess.run([str(python), str(repo / "benchmarks" / "bench_rules.py"), "--datatrove-worker",
                           str(docs), "1"], capture_output=True, text=True, timeout=300, check=True)
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])["families"]
    for family in H.FAMILY_NAMES:
        cfg = only(family, **({"definitions": "datatrove"} if family == "gopher_quality" else {}))
        ours = H.heuristics_table(texts, cfg)[1]
        equal = sum((a is None) == (b is None) for a, b in zip(ours, theirs[family]["decisions"]))
        assert equal / len(texts) >= 0.99, (family, equal)


def test_stage_checks_a_shard_in_batches_with_the_same_result(monkeypatch, pile_docs):
    """The stage's apply cuts a shard into batches (bounded working memory when several shards
    run at once on threads); kept and rejected rows are those of one pass over the shard."""
    from dataforge.config import parse_config
    from dataforge.curate import heuristics as heur
    from dataforge.stages import heuristics as stage

    texts = [d["contents"] for d in pile_docs[:400]]
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts, "kind": ["document"] * len(texts)})
    cfg = parse_config({"heuristics": {"enabled": True, "apply_to": ["document"], "c4": {"enabled": True},
                                       "gopher_repetition": {"enabled": True}, "fineweb_quality": {"enabled": True}}})
    monkeypatch.setattr(heur, "BATCH_ROWS", 37)
    kept, rejected = stage.STAGE.apply(table, cfg)
    one_kept, one_rejected = apply_heuristics(table, cfg.heuristics, batch_rows=table.num_rows)
    assert kept.equals(one_kept) and rejected.equals(one_rejected)
    assert kept.num_rows and rejected.num_rows


def test_the_stage_reads_the_arrow_column_as_the_reference_reads_strings() -> None:
    """apply_heuristics' bulk path takes the text column as Arrow (no Python string per row):
    kept and rejected rows, metrics, reasons and C4-cleaned texts equal the reference path's, with
    null texts, kinds not checked and several batches."""
    texts = EDGE_TEXTS + MORE_EDGE_TEXTS + fuzz_texts(60, seed=33)
    kinds = ["document", "textbook", "cot", "instruction"]
    table = samples_to_table(make_sample(kinds[i % 4], t or "") for i, t in enumerate(texts))
    text = [None if t is None else s for t, s in zip(texts, table.column("text").to_pylist())]
    text[3] = None
    text[8] = None
    table = table.set_column(table.column_names.index("text"), "text", pa.array(text, pa.string()))
    for cfg in [*fuzz_configs(), HeuristicsConfig.model_validate({**ALL_FAMILIES, "apply_to": ["document", "cot"]})]:
        fast = apply_heuristics(table, cfg, fast=True, batch_rows=7)
        slow = apply_heuristics(table, cfg, fast=False)
        for f, r in zip(fast, slow):
            assert f.column_names == r.column_names
            for name in f.column_names:
                assert f.column(name).to_pylist() == r.column(name).to_pylist(), name
