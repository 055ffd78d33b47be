"""Quality gates for generated textbook sections (dataforge/generate/gates.py): compliance of
the opening, reading grade, topic similarity, the config, and the gate over rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from dataforge.generate import gates
from dataforge.generate.gates import (
    TextbookGatesConfig,
    apply_textbook_gates,
    compliance,
    plan_text,
    reading_grade,
    syllables,
    text_counts,
    topic_similarity,
)
from dataforge.generate.taxonomy import load_taxonomies, shipped_taxonomies
from dataforge.generate.textbook_prompts import PATTERNS_FILE, STOCK_OPENERS, opening_rule, stock_opener
from dataforge.select.diversity import minilm_available

BACKENDS = ["ngram"] + (["minilm"] if minilm_available() else [])


# --- the patterns file --------------------------------------------------------------------------

def test_one_patterns_file_feeds_the_prompt_and_the_gate():
    data = yaml.safe_load(PATTERNS_FILE.read_text())
    assert tuple(data["stock_opener"]["phrases"]) == STOCK_OPENERS
    rule = opening_rule()
    for opener in STOCK_OPENERS:
        assert f'"{opener}"' in rule
        # every phrase the prompt bans is caught by the gate, as the stock opener it is
        assert compliance(f"{opener} the numbers, there is a lot to see.", "stop")[0] == "stock_opener"
        assert stock_opener(f"{opener} the numbers") == opener
    for reason in gates.REASONS[:-1]:
        assert reason in data, reason


# --- compliance ---------------------------------------------------------------------------------

# Openings of the embedded 135M teacher from a quickstart export (issue 11) and others of the kind.
@pytest.mark.parametrize("text, reason, excerpt_start", [
    ("Welcome to a world of wonders, where the laws of motion come alive!", "stock_opener", "Welcome to a world"),
    ("In today's fast-paced world, understanding data structures is key.", "stock_opener", "In today's fast-paced"),
    ("\"Hello, there! Welcome to today's journey through the water cycle.", "stock_opener", "Hello, there!"),
    ("**Once upon a time**, in a land of fractions...", "stock_opener", "Once upon a time"),
    ("Let's begin our journey together. Welcome to a fascinating world of mathematics.", "stock_opener",
     "Let's begin our journey"),
    ("As you embark on a journey through the pages of ancient Mesopotamia, remember this.", "stock_opener",
     "As you embark on a journey"),
    ("Greetings, young scientists! Today we will look at magnets.", "greeting", "Greetings, young"),
    ("Hey kids! Have a look at this pendulum.", "greeting", "Hey kids!"),
    ("Good morning, class! Let us count the sides of a triangle.", "greeting", "Good morning"),
    ("Dear students, fractions are parts of a whole.", "greeting", "Dear students"),
    ("This is a fantastic introduction to Newton's laws of motion. Here it goes:\n\nAn object at rest...",
     "meta_talk", "This is a fantastic introduction"),
    ("Sure! Here is a section of a blog post about photosynthesis for young children.\n\nPlants...",
     "meta_talk", "Sure!"),
    ("Here's an engaging how-to guide on balancing chemical equations:\n\n1. Count the atoms.",
     "meta_talk", "Here's an engaging how-to guide"),
    ("Chemical equations must balance. Here is a short explanation of why, as requested.", "meta_talk",
     "Here is a short explanation"),
    ("Certainly! Binary search halves the list at every step.", "meta_talk", "Certainly!"),
    ("I'd be happy to write about the French Revolution. In 1789...", "meta_talk", "I'd be happy to"),
    ("Below is an academic textbook section on supply and demand.", "meta_talk", "Below is"),
    ("In this essay, we will explore the causes of the First World War.", "meta_talk", "In this essay"),
    ("Photosynthesis feeds the planet. Without further ado, let's start.", "meta_talk", "Without further ado"),
    # the embedded teacher's own openings (benchmarks/bench_textbook_gates.py corpus)
    ("This section for young children is designed to teach and help them understand a simple concept.",
     "meta_talk", "This section for young children"),
    ("I'm excited to share some tips and techniques with you today.", "meta_talk", "I'm excited to share"),
    ("In a high school classroom, the French Revolution is as simple as it can be. I'm going to give you a guide "
     "on how to teach it.", "meta_talk", "I'm going to give you a guide"),
    ("Greet the reader and begin by explaining a few ideas, like how gravity works.", "meta_talk", "Greet the reader"),
    ("Introduction to the topic of Taxes and public goods, in Economics. The section should include a brief "
     "introduction.", "meta_talk", "Introduction to the topic"),
    ("In a section of the unit about networks and HTTP, focus on how requests are sent.", "meta_talk",
     "section of the unit about"),
    ("Fractions are fundamental. A great starting point is the story \"Once Upon a Time\" or the world.",
     "meta_talk", '"Once Upon a Time" or'),
    ("DNA and heredity is an exciting topic to delve into. In fact, the genetic code is old.", "meta_talk",
     "DNA and heredity is an exciting topic"),
    ("What a wonderful unit, Heat and temperature! This is the main topic of the blog post.", "meta_talk",
     "What a wonderful unit"),
    ("<<Electric circuits for professionals>> In this section, we delve into electricity.", "meta_talk",
     "this section, we delve"),
    ("I'm ready to help with any question. Chat: chat_mango", "meta_talk", "I'm ready to help"),
    ("I'm sorry, but I can't write about that topic.", "refusal", "I'm sorry, but I can't"),
    ("Unfortunately, I cannot provide a worked example here.", "refusal", "Unfortunately, I cannot"),
    ("As an AI language model, I do not have personal experiences of gravity.", "ai_disclaimer", "As an AI"),
    ("Gravity pulls things down. As a language model, I can only describe it.", "ai_disclaimer", "As a language"),
    ("# Newton's First Law\n\nAn object keeps moving unless a force acts on it.", "heading", "# Newton's First Law"),
    ("Newton's Laws of Motion\n\nAn object keeps moving unless a force acts on it.", "heading", "Newton's Laws"),
    ("Introduction\nFractions name parts of a whole.", "heading", "Introduction"),
    ("**Understanding Fractions**\n\nA fraction names part of a whole.", "heading", "**Understanding Fractions**"),
    ("Title: The Water Cycle for Kids\n\nWater moves.", "heading", "Title: The Water Cycle"),
    ("Chapter 3: Sorting\n\nSorting puts items in order.", "heading", "Chapter 3: Sorting"),
])
def test_compliance_catches(text, reason, excerpt_start):
    verdict = compliance(text, "stop")
    assert verdict is not None and verdict[0] == reason, verdict
    assert verdict[1].startswith(excerpt_start) and len(verdict[1]) <= gates.EXCERPT_CHARS


@pytest.mark.parametrize("text", [
    # words of the patterns inside ordinary sentences
    "A pendulum swings back and forth. People say hello to each other in many ways.",
    "Greetings differ from country to country: in Japan people bow, in France they kiss.",
    "Here is where the water cycle begins: the sun warms the ocean and water rises as vapour.",
    "Here the river bends, and the water slows down and drops its sand.",
    "Welcoming a new pupil, the teacher asked each child to name a fraction.",
    "Of course, not every fraction can be simplified: 3/7 is already in lowest terms.",
    "I cannot stress enough how much practice helps with long division.",
    "I cannot help but notice that every even number ends in 0, 2, 4, 6 or 8.",
    "As an AI model is trained, its weights change a little at every step.",
    "Imagining the Earth from space helps: it is a ball, and gravity pulls toward its centre.",
    "Imagine you're riding a bike downhill: you speed up because gravity pulls you.",
    "Let's start with an example: a ball rolling on grass slows down sooner than one on ice.",
    "Photosynthesis is an important process: plants turn light, water and carbon dioxide into sugar.",
    "\"Look, the apple fell!\"\nTom said, and his sister explained why things fall down.",
    "This is why a boat floats: the water it pushes aside weighs as much as the boat.",
    "This is why a ball rolls farther on ice than on grass: there is less friction.",
    "Sorting algorithms put items in order. Bubble sort swaps neighbours that are out of order.",
    # a lead-in line that ends in a colon is not a heading
    "Let's look at an example:\n1. Take 3/4.\n2. Multiply top and bottom by 2.",
    # a how-to guide may start with its first step
    "1. Gather a ruler and a ball.\n2. Drop the ball from one metre.",
    "Step 1: Measure the Sides\nUse a ruler on each side of the triangle.",
    "Exercise 1: Simplify 6/8\nDivide the top and the bottom by 2: 3/4.",
    "",
])
def test_compliance_leaves_clean_openings_alone(text):
    assert compliance(text, "stop") is None


def test_heading_check_can_be_turned_off_and_truncation_is_reported_last():
    titled = "Newton's Laws of Motion\n\nAn object keeps moving unless a force acts on it."
    assert compliance(titled, "stop", heading_forbidden=False) is None
    assert compliance(titled, "length") == ("heading", "Newton's Laws of Motion")  # the opening comes first
    reason, excerpt = compliance("Friction slows a sliding box because the surfaces grip and", "length")
    assert reason == "truncated" and excerpt.endswith("because the surfaces grip and") and len(excerpt) <= 60
    assert compliance("Friction slows a sliding box.", "stop") is None
    assert compliance("Friction slows a sliding box.", None) is None


def test_a_title_line_is_its_own_sentence():
    # the line break ends the title, so the meta talk after it starts a sentence of its own
    # (the phrase patterns are checked before the heading, so meta talk is what is reported)
    text = "Newton's Laws\n\nHere is a section about them for college students."
    assert compliance(text, "stop") == ("meta_talk", "Here is a section about them for college students.")
    assert compliance("Newton's Laws\n\nThey describe motion.", "stop") == ("heading", "Newton's Laws")


def test_patterns_only_look_at_the_first_sentences():
    late = "Plants need light. They also need water. Roots take it up. Leaves lose it. " \
           "Here is a section of a blog post about it."
    assert compliance(late, "stop") is None
    early = "Plants need light. Here is a section of a blog post about it."
    assert compliance(early, "stop")[0] == "meta_talk"


# --- reading grade ------------------------------------------------------------------------------

@pytest.mark.parametrize("word, n", [
    ("cat", 1), ("the", 1), ("table", 2), ("little", 2), ("makes", 1), ("jumped", 1), ("wanted", 2),
    ("horses", 2), ("boxes", 2), ("science", 2), ("idea", 3), ("video", 3), ("something", 2), ("timeline", 2), ("actual", 3), ("molecules", 3),
    ("energy", 3), ("gravity", 3), ("acceleration", 5), ("photosynthesis", 5), ("beautiful", 3), ("1905", 1),
])
def test_syllable_heuristic(word, n):
    assert syllables(word) == n


def test_flesch_kincaid_on_known_texts():
    # 1 sentence, 6 words, 6 syllables: 0.39 * 6 + 11.8 * 1 - 15.59
    assert text_counts("The cat sat on the mat.") == (1, 6, 6)
    assert reading_grade(["The cat sat on the mat."])[0] == pytest.approx(0.39 * 6 + 11.8 - 15.59)
    # 2 sentences, 11 words, 17 syllables: the moon keeps or-bit-ing / gra-vi-ty holds the pla-net in its or-bit
    text = "The Moon keeps orbiting. Gravity holds the planet in its orbit!"
    assert text_counts(text) == (2, 11, 1 + 1 + 1 + 3 + 3 + 1 + 1 + 2 + 1 + 1 + 2)
    assert reading_grade([text])[0] == pytest.approx(0.39 * 11 / 2 + 11.8 * 17 / 11 - 15.59)
    grades = reading_grade(["", None, "1 2 3", "Photosynthesis is the physiological process whereby autotrophic "
                            "organisms convert electromagnetic radiation into chemical energy."])
    assert np.isnan(grades[0]) and np.isnan(grades[1]) and grades[3] > 16


def test_grade_counts_list_items_and_headings_as_sentences_and_skips_code():
    listed = "# Steps\n- Pour the water\n- Add the salt\n- Stir it well"
    assert text_counts(listed) == (4, 10, 11)  # "water" has two syllables
    wrapped = "A force is a push or a pull that can change\nhow an object moves."
    assert text_counts(wrapped)[0] == 1  # a line that runs on is one sentence
    assert text_counts("Run it. ```python\nfor i in range(10): print(i)\n```")[1] == 2
    assert text_counts("Use e.g. a ruler. It is 3.5 cm long.")[0] == 2


def test_grade_orders_real_text(shared_data):
    import json

    questions = [json.loads(x)["question"] for x in (shared_data / "gsm8k" / "train.jsonl").open()][:300]
    pile = [json.loads(x) for x in (shared_data / "web" / "pile_1k.jsonl").open()]
    wiki = [d["contents"] for d in pile if d["metadata"]["pile_set_name"] == "Wikipedia (en)"]
    pubmed = [d["contents"] for d in pile if d["metadata"]["pile_set_name"] == "PubMed Abstracts"]
    g_school, g_wiki, g_pubmed = (float(np.nanmedian(reading_grade(t))) for t in (questions, wiki, pubmed))
    # grade-school word problems < encyclopedia < medical abstracts
    assert 2 < g_school < 8 < g_wiki < g_pubmed, (g_school, g_wiki, g_pubmed)


# --- topic similarity ---------------------------------------------------------------------------

SECTIONS = {  # (subject, topic, subtopic) of a shipped taxonomy -> a section about it
    ("Natural sciences", "Forces and motion", "Friction"):
        "When you push a heavy box across the floor, it slows down and stops as soon as you let go. The rough "
        "surfaces of the box and the floor grip each other. Static friction holds the box still until your push "
        "is strong enough; kinetic friction then acts on the sliding box. Ice has less friction than carpet.",
    ("Natural sciences", "Living things", "Photosynthesis"):
        "A leaf is a small factory. It takes in carbon dioxide from the air and water from the roots, and with "
        "the energy of sunlight its chloroplasts turn them into sugar. Oxygen is released as a by-product, "
        "which is why forests matter for the air we breathe.",
    ("Mathematics", "Fractions, decimals and percentages", "Equivalent fractions"):
        "Cut a pizza into four equal slices and take two: you have 2/4 of the pizza. Cut it into two halves "
        "and take one: 1/2. It is the same amount of pizza. Multiplying or dividing the numerator and "
        "denominator by the same number gives an equivalent fraction, and dividing by a common factor "
        "simplifies it.",
}


def _covers() -> dict:
    return {(u.subject, u.topic, u.subtopic): u.covers
            for t in load_taxonomies(shipped_taxonomies(), Path) for u in t.units()}


def test_plan_text():
    assert plan_text("Mathematics", "Fractions", "Equivalent fractions", "why 2/4 and 1/2 match.") == \
        "Equivalent fractions: why 2/4 and 1/2 match. Fractions, Mathematics."
    assert plan_text(None, "maps", None, None) == "maps."


@pytest.mark.parametrize("backend", BACKENDS)
def test_topic_similarity_prefers_the_planned_unit(backend):
    covers = _covers()
    keys = list(SECTIONS)
    for k in keys:
        assert k in covers, k  # the units exist in the shipped taxonomies
    plans = [plan_text(*k, covers[k]) for k in keys]
    texts = [SECTIONS[k] for k in keys]
    matrix = np.array([[topic_similarity([p], [t], backend)[0] if backend == "minilm" else np.nan
                        for t in texts] for p in plans])
    if backend == "ngram":  # IDF over the batch: score all pairs in one call
        pp = [p for p in plans for _ in texts]
        tt = texts * len(plans)
        matrix = topic_similarity(pp, tt, backend).reshape(len(plans), len(texts))
    assert all(matrix[i, i] > np.delete(matrix[i], i).max() for i in range(len(keys))), matrix


@pytest.mark.parametrize("backend, agree", [(b, {"ngram": 0.75, "minilm": 0.9}[b]) for b in BACKENDS])
def test_topic_similarity_on_wikipedia_articles(pile_docs, backend, agree):
    """Real articles against their own title vs another article's title. A title is a few words
    with no context, so n-grams score 0 when the body does not repeat them: they agree less."""
    docs = []
    for d in pile_docs:
        if d["metadata"]["pile_set_name"] != "Wikipedia (en)":
            continue
        title, _, body = d["contents"].partition("\n")
        if 3 <= len(title) <= 60 and not title.rstrip().endswith(".") and len(body.split()) >= 80:
            docs.append((title.strip(), body.strip()))
    assert len(docs) >= 10
    titles = [plan_text(None, t, None, None) for t, _ in docs]
    bodies = [b for _, b in docs]
    matched = topic_similarity(titles, bodies, backend)
    rng = np.random.default_rng(0)
    shift = rng.integers(1, len(docs), size=len(docs))
    shuffled = topic_similarity([titles[(i + s) % len(docs)] for i, s in enumerate(shift)], bodies, backend)
    assert (matched > shuffled).mean() >= agree and matched.mean() > shuffled.mean() + 0.1


def test_topic_similarity_checks_its_input(monkeypatch):
    with pytest.raises(ValueError, match="2 plans for 1 texts"):
        topic_similarity(["a", "b"], ["a"], "ngram")
    assert topic_similarity([], [], "ngram").shape == (0,)
    monkeypatch.setattr("dataforge.select.diversity.minilm_available", lambda: False)
    assert gates.resolve_embedding("auto") == "ngram"
    with pytest.raises(ValueError, match="textbooks.gates.embedding: minilm needs the package"):
        gates.resolve_embedding("minilm")


# --- config -------------------------------------------------------------------------------------

def test_config_defaults_and_validation():
    cfg = TextbookGatesConfig()
    assert cfg.enabled and cfg.compliance and cfg.topic and cfg.reading_grade and cfg.embedding == "auto"
    assert set(cfg.min_topic_similarity) == {"minilm", "ngram"}
    assert set(cfg.grade_bands) == {"young children", "high school students", "college students", "professionals"}
    for lo, hi in cfg.grade_bands.values():
        assert lo <= hi
    partial = TextbookGatesConfig(min_topic_similarity={"ngram": 0.2})
    assert partial.min_topic_similarity == {"minilm": gates.DEFAULT_MIN_TOPIC_SIMILARITY["minilm"], "ngram": 0.2}
    custom = TextbookGatesConfig.model_validate({"grade_bands": {"pilots": [9, 14]}, "grade_tolerance": 1})
    assert custom.grade_bands == {"pilots": (9.0, 14.0)}
    for bad in ({"min_topic_similarity": {"ngram": 1.5}}, {"min_topic_similarity": {"bert": 0.3}},
                {"grade_bands": {"kids": [6, 2]}}, {"grade_bands": {"kids": [1]}}, {"grade_tolerance": -1},
                {"embedding": "bert"}, {"unknown": True}):
        with pytest.raises(ValidationError):
            TextbookGatesConfig.model_validate(bad)


# --- the gate over rows -------------------------------------------------------------------------

def _row(text, *, audience="high school students", unit=("Natural sciences", "Forces and motion", "Friction"),
         finish_reason="stop", **extra):
    subject, topic, subtopic = unit
    return {"id": str(hash((text, audience, unit))), "text": text, "subject": subject, "topic": topic,
            "subtopic": subtopic, "audience": audience, "finish_reason": finish_reason, "passage_id": None,
            "drop_reason": None, **extra}


FRICTION = SECTIONS[("Natural sciences", "Forces and motion", "Friction")]


def test_apply_gates_sets_columns_and_reasons():
    covers = _covers()
    cfg = TextbookGatesConfig(embedding="ngram", grade_bands={"young children": (1, 5)}, grade_tolerance=2)
    hard = ("Kinetic friction originates from microscopic asperities whose interlocking, characterised "
            "phenomenologically by static and kinetic coefficients, necessitates considerable energy dissipation.")
    rows = [
        _row(FRICTION),
        _row("Welcome to the wonderful world of friction! " + FRICTION),
        _row(FRICTION, finish_reason="length"),
        _row(SECTIONS[("Mathematics", "Fractions, decimals and percentages", "Equivalent fractions")]),  # planned as friction
        _row(hard, audience="young children"),
        _row("Bees dance to show where flowers are. " * 5, unit=(None, None, None), passage_id="p1"),
        _row("", drop_reason="teacher_error:timeout"),
    ]
    kept, dropped = apply_textbook_gates(rows, cfg, covers)
    reasons = [r["drop_reason"] for r in dropped]
    assert len(reasons) == 5 and reasons[4] == "teacher_error:timeout"
    assert reasons[0] == "noncompliant:stock_opener:Welcome to the wonderful world of friction! When you push…"
    assert reasons[1].startswith("noncompliant:truncated:…") and reasons[1].endswith("less friction than carpet.")
    assert len(reasons[1].split(":", 2)[2]) <= 60
    assert dropped[2]["drop_reason"].startswith("off_topic:")
    assert float(dropped[2]["drop_reason"].split(":")[1]) < cfg.min_topic_similarity["ngram"]
    assert dropped[3]["drop_reason"].startswith("reading_grade:") and \
        dropped[3]["drop_reason"].endswith(" outside young children band [1, 5]")
    assert float(dropped[3]["drop_reason"].split(":")[1].split()[0]) > 7
    assert [r["text"][:12] for r in kept] == [FRICTION[:12], "Bees dance t"]
    on_topic = kept[0]
    assert on_topic["gen_compliance"] is None and on_topic["gen_topic_similarity"] >= cfg.min_topic_similarity["ngram"]
    assert 0 < on_topic["gen_reading_grade"] < 14
    assert kept[1]["gen_topic_similarity"] is None  # a passage row has no planned topic
    assert rows[1]["gen_compliance"] == "stock_opener" and rows[2]["gen_compliance"] == "truncated"
    assert rows[6]["gen_compliance"] is None and rows[6]["gen_reading_grade"] is None
    for r in rows:
        assert set(gates.GATE_COLUMNS) <= set(r)


def test_apply_gates_switches():
    rows = [_row("Hello! " + FRICTION), _row(SECTIONS[("Mathematics", "Fractions, decimals and percentages", "Equivalent fractions")])]
    kept, dropped = apply_textbook_gates([dict(r) for r in rows], TextbookGatesConfig(enabled=False), None)
    assert len(kept) == 2 and not dropped and all(r["gen_compliance"] is None for r in kept)
    cfg = TextbookGatesConfig(compliance=False, topic=False, reading_grade=False, embedding="ngram")
    kept, dropped = apply_textbook_gates([dict(r) for r in rows], cfg, None)
    assert len(kept) == 2 and kept[0]["gen_compliance"] == "stock_opener"  # recorded, not dropped
    assert all(r["gen_topic_similarity"] is None for r in kept)
    # an audience without a band is not grade-checked
    hard = _row("Notwithstanding considerable epistemological heterogeneity, institutional historiography "
                "systematically underrepresented marginalised communities.", audience="pilots")
    kept, dropped = apply_textbook_gates([hard], TextbookGatesConfig(topic=False), None)
    assert kept and kept[0]["gen_reading_grade"] > 20


def test_placeholder_left_unfilled_anywhere_is_caught_and_code_is_not():
    # a real opening of the embedded teacher's corpus section (issue 11)
    assert compliance("The city of [city_name] has grown exponentially over the past century, transforming "
                      "into a major centre of trade.", "stop")[0] == "placeholder"
    assert compliance("Rivers carry water to the sea. " * 20 + "Best wishes, [Your Name]", "stop")[0] == "placeholder"
    assert compliance("Plants need light to grow. <insert example here> Then they store sugar.", "stop")[0] == \
        "placeholder"
    # indexing in code, citations and bracketed asides are not slots
    for clean in ("To read the largest value, write `scores[max_index]` and print it. Arrays start at zero.",
                  "Each cell a[i][j] holds the sum of its row and column. The table grows one row at a time.",
                  "Water boils at 100 degrees Celsius at sea level [1]. At altitude it boils lower.",
                  "The word photosynthesis [from Greek: light + putting together] names the process."):
        assert compliance(clean, "stop") is None, clean
