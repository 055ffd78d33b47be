"""Textbooks in depth: taxonomies, the sampling plan, prompts, seed passages, the stage's rows and
run.json record, and the warehouse's coverage and lexical-diversity reports."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fake_openai import FakeOpenAI

from dataforge import runner, warehouse
from dataforge.config import DEFAULT_TAXONOMIES, ConfigError, PipelineConfig, TextbookConfig, load_config, parse_config
from dataforge.curate.diversity_metrics import distinct_n, distinct_n_by
from dataforge.generate.taxonomy import TaxonomyError, load_taxonomies, load_taxonomy, shipped_taxonomies
from dataforge.generate.textbook_prompts import STOCK_OPENERS, opening_rule, stock_opener
from dataforge.generate.textbooks import (
    PassageError,
    TextbookCell,
    cut_extract,
    load_passages,
    load_textbook_sources,
    plan_textbooks,
    textbook_messages,
)
from dataforge.records import make_sample, samples_to_table, with_drop
from dataforge.runner import rejected_schema
from dataforge.store import Run, ShardWriter

REPO = Path(__file__).resolve().parents[1]
AXES = ("subject", "topic", "subtopic", "audience", "style", "format")


def sources_for(tmp_path: Path, **textbooks) -> tuple[PipelineConfig, object]:
    cfg = parse_config({"textbooks": textbooks}, str(tmp_path / "pipeline.yaml"))
    return cfg, load_textbook_sources(cfg.textbooks, cfg.resolve_path)


def spread(values) -> int:
    counts = Counter(values)
    return max(counts.values()) - min(counts.values())


# --- taxonomies -------------------------------------------------------------------------------

def test_shipped_taxonomies_are_valid_and_complete():
    names = shipped_taxonomies()
    assert set(DEFAULT_TAXONOMIES) == set(names) and len(names) >= 4
    subjects = set()
    for tax in load_taxonomies(names, Path):
        t = tax.taxonomy
        subjects.add(t.subject)
        assert len(t.topics) >= 4, tax.name
        for topic in t.topics:
            assert 3 <= len(topic.subtopics) <= 6, (tax.name, topic.name)
            assert all(s.covers for s in topic.subtopics), (tax.name, topic.name)
        units = tax.units()
        assert len(units) == sum(len(tp.subtopics) for tp in t.topics)
        for u in units:
            # siblings are the other subtopics of the same topic, never the unit itself
            topic = next(tp for tp in t.topics if tp.name == u.topic)
            assert [n for n, _ in u.siblings] == [s.name for s in topic.subtopics if s.name != u.subtopic]
    assert len(subjects) == len(names)


GOOD = {"subject": "Astronomy", "topics": [
    {"name": "The Moon", "subtopics": [{"name": "Phases", "covers": "why the lit part changes"}, "Tides", "Eclipses"]},
    {"name": "Stars", "subtopics": ["Colour and temperature", "Life cycle"]},
]}


def write_yaml(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_taxonomy_loads_bare_subtopic_names(tmp_path):
    tax = load_taxonomy(write_yaml(tmp_path / "astro.yaml", GOOD))
    assert tax.name == "astro" and len(tax.sha256) == 64
    units = tax.units()
    assert [(u.topic, u.subtopic) for u in units][:3] == [("The Moon", "Phases"), ("The Moon", "Tides"),
                                                          ("The Moon", "Eclipses")]
    tides = units[1]
    assert tides.covers is None and tides.siblings == (("Phases", "why the lit part changes"), ("Eclipses", None))


@pytest.mark.parametrize("text, where, says", [
    # a subtopic without a name: the line of that entry, and the entry spelled out
    ("subject: Astronomy\ntopics:\n  - name: The Moon\n    subtopics:\n      - name: Phases\n      - covers: x\n",
     "line 6: topics[0] 'The Moon' > subtopics[1] > name", "Field required"),
    ("subject: Astronomy\ntopics:\n  - name: The Moon\n    subtopic:\n      - Phases\n",
     "line 4: topics[0] 'The Moon' > subtopic", "unknown field"),
    ("subject: Astronomy\ntopics:\n  - name: The Moon\n    subtopics: [Tides, tides]\n",
     "line 3: topics[0] 'The Moon': ", "subtopics[1] 'tides' repeats subtopics[0] (names must be unique)"),
    ("subject: Astronomy\ntopics:\n  - name: The Moon\n    subtopics: []\n",
     "line 4: topics[0] 'The Moon' > subtopics", "at least 1 item"),
    ("subject: ''\ntopics: [{name: A, subtopics: [b]}]\n", "line 1: subject", "at least 1 character"),
    ("subject: Astronomy\ntopics: []\n", "line 2: topics", "at least 1 item"),
    ("subject: Astronomy\ntopics:\n  - name: A\n    subtopics: [b\n", "line 5, column 1", "not valid YAML"),
    ("- just\n- a list\n", "", "a taxonomy is a mapping"),
])
def test_taxonomy_errors_name_file_line_and_entry(tmp_path, text, where, says):
    p = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(TaxonomyError) as info:
        load_taxonomy(p)
    msg = str(info.value)
    assert str(p) in msg and where in msg and says in msg, msg


def test_taxonomy_references_resolve_against_the_config_file(tmp_path):
    (tmp_path / "tax").mkdir()
    write_yaml(tmp_path / "tax" / "astro.yaml", GOOD)
    (tmp_path / "configs").mkdir()
    cfg_path = write_yaml(tmp_path / "configs" / "p.yaml", {"textbooks": {"taxonomies": ["../tax/astro.yaml",
                                                                                         "mathematics"]}})
    cfg = load_config(cfg_path)
    src = load_textbook_sources(cfg.textbooks, cfg.resolve_path)
    assert {u.subject for u in src.units} == {"Astronomy", "Mathematics"}
    described = src.describe()["taxonomies"]
    assert [t["name"] for t in described] == ["astro", "mathematics"]
    assert described[0]["path"] == str((tmp_path / "tax" / "astro.yaml").resolve())

    with pytest.raises(TaxonomyError, match=r"'mathematic' is not a shipped taxonomy \(shipped: computer_science"):
        load_taxonomies(["mathematic"], cfg.resolve_path)
    with pytest.raises(TaxonomyError, match=r"taxonomy file 'nowhere.yaml' not found \(resolved to .*configs/nowhere"):
        load_taxonomies(["nowhere.yaml"], cfg.resolve_path)
    # two files may not define one subject
    write_yaml(tmp_path / "tax" / "astro2.yaml", GOOD)
    with pytest.raises(TaxonomyError, match=r"astro2.yaml: subject 'Astronomy' is already defined by .*astro.yaml"):
        load_taxonomies(["../tax/astro.yaml", "../tax/astro2.yaml"], cfg.resolve_path)


# --- configuration ------------------------------------------------------------------------------

def test_config_topic_sources_and_axes():
    default = TextbookConfig()
    assert default.taxonomies == list(DEFAULT_TAXONOMIES) and default.topics == []
    assert [a.name for a in default.audiences] == ["young children", "high school students", "college students",
                                                   "professionals"]
    assert [s.name for s in default.styles] == ["academic textbook", "narrative", "how-to guide", "blog post"]
    assert [f.name for f in default.formats] == ["worked example", "exercises with solutions"]
    # an inline list alone is the whole topic source: no shipped taxonomy is added to it
    only_topics = TextbookConfig(topics=["maps"])
    assert only_topics.taxonomies == [] and only_topics.topics == ["maps"]
    custom = TextbookConfig(topics=["maps"], audiences=["pilots", {"name": "nurses", "description": "Ward staff."}])
    assert [(a.name, a.description) for a in custom.audiences] == [("pilots", None), ("nurses", "Ward staff.")]


@pytest.mark.parametrize("textbooks, field, says", [
    ({"topics": []}, "textbooks", "give at least one of taxonomies, topics or passages"),
    ({"topics": ["maps", "Maps"]}, "textbooks.topics", "'Maps' is listed twice"),
    ({"audiences": ["pilots", "pilots"]}, "textbooks.audiences", "listed twice"),
    ({"styles": [{"name": "memo", "descripton": "x"}]}, "textbooks.styles.0.descripton", "unknown field"),
    ({"formats": []}, "textbooks.formats", "at least 1 item"),
    ({"max_passage_chars": 10}, "textbooks.max_passage_chars", "greater than or equal to 50"),
])
def test_config_errors_name_the_field(tmp_path, textbooks, field, says):
    with pytest.raises(ConfigError) as info:
        parse_config({"textbooks": textbooks}, "p.yaml")
    assert f"p.yaml: {field}: " in str(info.value) and says in str(info.value), str(info.value)


# --- the sampling plan ---------------------------------------------------------------------------

def test_quickstart_plan_covers_every_audience_and_style():
    cfg = load_config(REPO / "configs" / "quickstart.yaml")
    src = load_textbook_sources(cfg.textbooks, cfg.resolve_path)
    plan = plan_textbooks(src, cfg.textbooks.max_samples, cfg.seed)
    assert len(plan) == 8 == len(set(plan))
    assert Counter(c.audience for c in plan) == {a.name: 2 for a in cfg.textbooks.audiences}
    assert Counter(c.style for c in plan) == {s.name: 2 for s in cfg.textbooks.styles}
    assert Counter(c.format for c in plan) == {f.name: 4 for f in cfg.textbooks.formats}
    assert spread(c.topic for c in plan) <= 1 and len({c.topic for c in plan}) == 6


def test_plan_is_deterministic_and_a_prefix_of_larger_plans(tmp_path):
    _, src = sources_for(tmp_path)
    a, b = plan_textbooks(src, 60, seed=7), plan_textbooks(src, 60, seed=7)
    assert a == b
    assert plan_textbooks(src, 60, seed=8) != a
    assert plan_textbooks(src, 25, seed=7) == a[:25]  # raising max_samples keeps earlier cells (and the cache)


@pytest.mark.parametrize("n", [1, 7, 16, 40, 99, 250, 1000, 2000])
def test_plan_is_balanced_on_every_axis(tmp_path, n):
    _, src = sources_for(tmp_path)  # the four shipped taxonomies: 99 subtopics, 32 cells each
    plan = plan_textbooks(src, n, seed=3)
    assert len(plan) == n == len(set(plan))
    if n >= 4:
        assert len({c.subject for c in plan}) == 4 and len({c.audience for c in plan}) == 4
    # the flat axes stay within one (two, now and then, in long plans: see plan_textbooks)
    for axis in ("audience", "style", "format"):
        assert spread(getattr(c, axis) for c in plan) <= (1 if n < 160 else 2), axis
    # the hierarchy stays within one at every level: subjects, topics in a subject, subtopics in a topic
    assert spread(c.subject for c in plan) <= 1
    for tax in load_taxonomies(shipped_taxonomies(), Path):
        per_topic = [sum(1 for c in plan if (c.subject, c.topic) == (tax.taxonomy.subject, t.name))
                     for t in tax.taxonomy.topics]
        assert max(per_topic) - min(per_topic) <= 1, tax.name
        for topic in tax.taxonomy.topics:
            counts = [sum(1 for c in plan if (c.topic, c.subtopic) == (topic.name, s.name)) for s in topic.subtopics]
            assert max(counts) - min(counts) <= 1, topic.name
    # pairs of flat axes spread too: no (audience, style) pair strays more than two from its fair share
    pairs = Counter((c.audience, c.style) for c in plan)
    assert all(abs(pairs.get(p, 0) - n / 16) <= 2 for p in itertools.product(
        [a.name for a in src.audiences], [s.name for s in src.styles]))


def test_plan_exhausts_the_table_without_repeats(tmp_path):
    _, src = sources_for(tmp_path, topics=["maps", "clouds", "tides"], audiences=["kids", "adults"],
                         styles=["story", "manual", "essay"], formats=["worked example"])
    plan = plan_textbooks(src, 10_000, seed=1)
    table = {TextbookCell(None, t, None, None, a, s, "worked example")
             for t, a, s in itertools.product(["maps", "clouds", "tides"], ["kids", "adults"],
                                              ["story", "manual", "essay"])}
    assert len(plan) == 18 and set(plan) == table


def test_plain_shuffle_would_leave_axes_uneven(tmp_path):
    """Why the plan is stratified: the old seeded shuffle cut to max_samples misses audiences."""
    import random

    _, src = sources_for(tmp_path)
    cells = list(itertools.product(src.units, src.audiences, src.styles, src.formats))
    worst = 0
    for seed in range(20):
        shuffled = cells[:]
        random.Random(seed).shuffle(shuffled)
        worst = max(worst, spread(a.name for _, a, _, _ in shuffled[:16]))
        assert spread(c.audience for c in plan_textbooks(src, 16, seed)) == 0
    assert worst >= 3


# --- prompts ---------------------------------------------------------------------------------------

def test_topic_prompt_names_siblings_audience_and_banned_openers(tmp_path):
    _, src = sources_for(tmp_path, taxonomies=["natural_sciences"])
    cell = TextbookCell("Natural sciences", "Living things", "Photosynthesis", None, "young children", "narrative",
                        "exercises with solutions")
    template, messages = textbook_messages(cell, src)
    prompt = messages[0]["content"]
    assert template == "textbook_topic_v2" and len(messages) == 1 and messages[0]["role"] == "user"
    assert prompt.startswith("Write a section of a narrative about Photosynthesis for young children.")
    assert 'the unit "Living things" of Natural sciences' in prompt
    assert "how plants turn light, water and carbon dioxide into sugar" in prompt  # its own `covers`
    siblings = prompt.split("Other sections of the same unit cover")[1].split("\n\n")[0]
    for name in ("Cells", "Cellular respiration", "DNA and heredity", "Evolution by natural selection",
                 "Ecosystems and food webs"):
        assert f"- {name}: " in siblings
    assert "- Photosynthesis" not in siblings
    assert "genes, dominant and recessive alleles" in siblings  # what a sibling covers
    assert "Readers aged 6 to 10" in prompt and "Teach through a story" in prompt and "two or three exercises" in prompt
    for opener in STOCK_OPENERS:
        assert f'"{opener}"' in prompt
    assert opening_rule() in prompt


def test_flat_topic_prompt_has_no_sibling_note(tmp_path):
    _, src = sources_for(tmp_path, topics=["maps", "clouds"], styles=["story"], audiences=["pilots"])
    _, messages = textbook_messages(TextbookCell(None, "maps", None, None, "pilots", "story", "worked example"), src)
    prompt = messages[0]["content"]
    assert prompt.startswith("Write a section of a story about maps for pilots.")
    assert "Other sections" not in prompt and "clouds" not in prompt
    assert "Audience (" not in prompt  # a custom audience without a description gets no description line


@pytest.mark.parametrize("text, opener", [
    ("Once upon a time, in a land of fractions...", "Once upon a time"),
    ("**In the Realm of** numbers, a fraction is...", "In the realm of"),
    ("  # Have you ever wondered why the sky is blue?", "Have you ever"),
    ("In today’s fast-paced world, data is everywhere.", "In today's fast-paced world"),
    ("> Hello! Today we learn about magnets.", "Hello"),
    ("Welcome   to the\nworld of atoms.", "Welcome to"),
    ("Hellos and goodbyes are words.", None),
    ("A fraction names part of a whole.", None),
    ("The realm of numbers is large.", None),
    ("", None),
])
def test_stock_opener(text, opener):
    assert stock_opener(text) == opener


# --- seed passages ---------------------------------------------------------------------------------

def test_passages_load_and_malformed_lines_are_quarantined(tmp_path):
    p = tmp_path / "passages.jsonl"
    lines = [
        json.dumps({"text": "Bees dance to tell the hive where flowers are. " * 3, "url": "a"}),  # 1 ok
        '{"text": "broken',                                                                      # 2 not JSON
        json.dumps({"body": "no text field"}),                                                     # 3
        "",                                                                                        # 4 blank: skipped
        json.dumps({"text": "   "}),                                                               # 5 empty
        json.dumps(["a", "list"]),                                                                 # 6 not an object
        json.dumps({"text": "Bees dance to tell the hive where flowers are. " * 3}),               # 7 duplicate
        json.dumps({"text": "Volcanoes form where plates pull apart or dive under each other."}),  # 8 ok
    ]
    p.write_text("\n".join(lines) + "\n")
    passages, bad = load_passages(p, max_chars=60)
    assert [x.line for x in passages] == [1, 8]
    assert passages[0].text == "Bees dance to tell the hive where flowers are. Bees dance"  # cut at a word
    assert len(passages[0].passage_id) == 16 and passages[0].source == str(p)
    assert [(q.line, q.reason.split(":")[0].split(" (")[0]) for q in bad] == [
        (2, "not valid JSON"), (3, "missing or empty string field 'text'"),
        (5, "missing or empty string field 'text'"), (6, "expected a JSON object, got list"),
        (7, "duplicate passage text")]
    assert all(q.file == str(p) for q in bad) and bad[0].raw == '{"text": "broken'


def test_passage_ids_from_a_field_and_parquet_rows(tmp_path):
    p = tmp_path / "passages.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in [
        {"doc": "Rivers carve valleys over thousands of years.", "key": 7},
        {"doc": "Glaciers carve valleys too, into a U shape.", "key": 7},
        {"doc": "Deltas form where a river slows and drops its sand.", "key": True},
        {"doc": "Wind shapes dunes in deserts.", "key": "w1"},
    ]) + "\n")
    passages, bad = load_passages(p, text_field="doc", id_field="key")
    assert [x.passage_id for x in passages] == ["7", "w1"]
    assert [(q.line, q.reason) for q in bad] == [(2, "duplicate id '7' (first on line 1)"),
                                                 (3, "missing id field 'key' (a string or integer)")]

    pq_path = tmp_path / "passages.parquet"
    pq.write_table(pa.table({"text": ["Sound is a wave of pressure.", None, "Light bends in water."],
                             "n": [1, 2, 3]}), pq_path)
    passages, bad = load_passages(pq_path)
    assert [x.line for x in passages] == [1, 3] and [(q.line, q.file) for q in bad] == [(2, str(pq_path))]
    with pytest.raises(PassageError, match=r"no column 'body' \(columns: text, n\); set textbooks.passage_field"):
        load_passages(pq_path, text_field="body")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"x": 1}\nnot json\n')
    with pytest.raises(PassageError, match=r"empty.jsonl: no usable passage \(2 quarantined — line 1: missing"):
        load_passages(empty)
    with pytest.raises(PassageError, match="passage file not found"):
        load_passages(tmp_path / "missing.jsonl")
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(b"PAR1 not really")
    with pytest.raises(PassageError, match="damaged.parquet: not a readable Parquet file"):
        load_passages(damaged)


def test_cut_extract():
    assert cut_extract("one  two\nthree", 100) == "one two three"
    assert cut_extract("alpha beta gamma delta", 12) == "alpha beta"
    assert cut_extract("x" * 30, 10) == "x" * 10  # no space to cut at


# --- the stage: rows, quarantine, run.json ----------------------------------------------------------

def section_responder(body: dict) -> str:
    """A teacher that writes a different section per request; every third one opens with a
    stock phrase, so the stage's opener count has something to find."""
    seed = body.get("seed") or 0
    prompt = body["messages"][-1]["content"]
    opener = "Once upon a time, " if seed % 3 == 0 else ""
    extract = re.search(r'Extract: "(\w+)', prompt)
    words = f"section {seed} about {extract.group(1) if extract else 'its subject'} with numbers {seed * 7} and {seed + 11}"
    return f"{opener}This is {words}. It explains one idea and works one example."


def run_stage(tmp_path: Path, srv: FakeOpenAI, textbooks: dict) -> tuple[Run, runner.StageResult]:
    cfg_path = write_yaml(tmp_path / "pipeline.yaml", {
        "name": "tb", "data_root": str(tmp_path / "data"), "seed": 100,
        "teacher": {"provider": "openai", "base_url": srv.base_url, "model": "fake-model", "max_attempts": 1,
                    "backoff_initial_s": 0.01},
        # these tests are about the plan and the rows; the gates have their own test below
        "textbooks": {"gates": {"enabled": False}, **textbooks}, "cot": {"enabled": False}})
    cfg = load_config(cfg_path)
    run = runner.open_run(cfg)
    result = runner.run_textbooks(run, cfg)
    runner.record_result(run, result)
    return run, result


def test_stage_rows_carry_every_axis_and_run_json_records_the_plan(tmp_path):
    write_yaml(tmp_path / "astro.yaml", GOOD)
    with FakeOpenAI(responder=section_responder) as srv:
        run, result = run_stage(tmp_path, srv, {"taxonomies": ["astro.yaml", "mathematics"], "max_samples": 12})
        prompts = [r["json"]["messages"][0]["content"] for r in srv.requests if r["path"].endswith("/completions")]
    assert result.rows_kept == 12 and result.rows_dropped == 0
    rows = run.read("textbooks").to_pylist()
    for r in rows:
        assert all(r[a] for a in AXES), r
        assert r["passage_id"] is None and r["template"] == "textbook_topic_v2"
        assert r["seed_source"] == ("astro" if r["subject"] == "Astronomy" else "mathematics")
        assert r["messages"][0]["content"] in prompts
    assert Counter(r["subject"] for r in rows) == {"Astronomy": 6, "Mathematics": 6}
    assert spread(r["audience"] for r in rows) == 0 and spread(r["style"] for r in rows) == 0

    extra = json.loads(run.record_path.read_text())["stages"]["textbooks"]["extra"]
    assert extra["plan"]["cells"] == 12 and extra["plan"]["units"] == 5 + 25
    assert extra["plan"]["table_cells"] == 30 * 4 * 4 * 2
    assert extra["plan"]["audiences"] == {a: 3 for a in ("young children", "high school students", "college students",
                                                         "professionals")}
    seeds = [json.loads(r["gen_params"])["seed"] for r in rows]
    assert extra["stock_openers"] == {"Once upon a time": sum(1 for s in seeds if s % 3 == 0)}
    assert extra["distinct_n"]["distinct_1"] == round(distinct_n([r["text"] for r in rows])[1], 4)
    assert [t["name"] for t in extra["sources"]["taxonomies"]] == ["astro", "mathematics"]
    assert extra["quarantined_passages"] == 0 and extra["quarantine_file"] is None


def test_stage_writes_from_passages_and_quarantines_bad_lines(tmp_path):
    p = tmp_path / "extracts.jsonl"
    good = ["Penguins huddle together to keep warm through the Antarctic winter.",
            "Sourdough rises because wild yeast and bacteria ferment the flour.",
            "Lighthouses once used clockwork to turn their lamps."]
    p.write_text("\n".join([json.dumps({"text": good[0], "id": "p0"}), "{oops", json.dumps({"id": "p9"}),
                            json.dumps({"text": good[1], "id": "p1"}), json.dumps({"text": good[2], "id": "p2"})]))
    with FakeOpenAI(responder=section_responder) as srv:
        run, result = run_stage(tmp_path, srv, {"passages": "extracts.jsonl", "passage_id_field": "id",
                                                "audiences": ["young children", "professionals"],
                                                "styles": ["blog post"], "formats": ["worked example"],
                                                "max_samples": 6})
    rows = run.read("textbooks").to_pylist()
    assert result.rows_kept == 6
    # every passage twice (once per audience), the extract inside the prompt
    assert Counter(r["passage_id"] for r in rows) == {"p0": 2, "p1": 2, "p2": 2}
    for r in rows:
        assert r["template"] == "textbook_passage_v2" and r["seed_source"] == "extracts.jsonl"
        assert r["topic"] is None and r["subject"] is None
        text = good[int(r["passage_id"][1])]
        assert f'Extract: "{text}"' in r["messages"][0]["content"]
        assert r["messages"][0]["content"].startswith("Write a section of a blog post for ")
    assert {(r["passage_id"], r["audience"]) for r in rows} == {(f"p{i}", a) for i in range(3)
                                                                for a in ("young children", "professionals")}
    quarantine = [json.loads(x) for x in (run.quarantine_dir() / "textbook_passages.jsonl").read_text().splitlines()]
    assert [(q["line"], q["reason"][:14]) for q in quarantine] == [(2, "not valid JSON"), (3, "missing or emp")]
    assert all(q["file"] == str(p.resolve()) for q in quarantine)
    extra = json.loads(run.record_path.read_text())["stages"]["textbooks"]["extra"]
    assert extra["quarantined_passages"] == 2 and extra["sources"]["passages"]["used"] == 3
    assert extra["quarantine_file"] == str(run.quarantine_dir() / "textbook_passages.jsonl")


def test_failed_requests_keep_their_axes(tmp_path):
    with FakeOpenAI(responder=section_responder) as srv:
        srv.default_action = "500"
        run, result = run_stage(tmp_path, srv, {"taxonomies": ["computer_science"], "max_samples": 3})
    assert result.rows_kept == 0 and result.rows_dropped == 3
    rej = run.read_rejected("textbooks").to_pylist()
    assert all(r["drop_reason"] == "teacher_error:http_500" and all(r[a] for a in AXES) for r in rej)


# --- warehouse reports on a hand-built run ---------------------------------------------------------

def commit(run: Run, stage: str, kept: pa.Table, rejected: pa.Table) -> None:
    run.begin_stage(stage)
    kw = ShardWriter(run.stage_dir(stage), schema=kept.schema)
    kw.write(kept)
    rw = ShardWriter(run.rejected_dir(stage), schema=rejected_schema(kept.schema))
    rw.write(rejected)
    run.commit_stage(stage, kw.close(), rw.close(), kept.schema, rejected_schema(kept.schema),
                     fingerprint="fp", config_hash="ch")


def tb(key: str, text: str, subject: str, topic: str, subtopic: str, audience: str, style: str, fmt: str,
       request_hash: str | None) -> dict:
    return make_sample("textbook", text, subject=subject, topic=topic, subtopic=subtopic, audience=audience,
                       style=style, format=fmt, request_hash=request_hash, template="textbook_topic_v2",
                       seed_source=key)


COT_TEXT = "Question: what is 2 + 2? Answer: 4"


@pytest.fixture
def report_run(tmp_path):
    """Five planned cells: A and B reach the output; C is dropped by heuristics; D has A's exact
    text (the same id) and is dropped by dedup; E was never produced (the teacher failed)."""
    cfg = PipelineConfig(data_root=str(tmp_path / "data"), textbooks=TextbookConfig(topics=["x"]))
    run = runner.open_run(cfg, "tb-report")
    A = tb("A", "the cat sat on the mat", "Math", "Algebra", "Linear", "kids", "story", "worked", "hA")
    B = tb("B", "The cat ran!", "Math", "Algebra", "Quadratic", "adults", "textbook", "worked", "hB")
    C = tb("C", "a dog barked loudly", "Science", "Energy", "Heat", "kids", "textbook", "exercises", "hC")
    D = tb("D", "the cat sat on the mat", "Science", "Energy", "Work", "adults", "story", "exercises", "hD")
    E = tb("E", "", "Science", "Energy", "Heat", "adults", "story", "worked", None)
    cot = make_sample("cot", COT_TEXT, question="what is 2 + 2?", answer="4")
    assert A["id"] == D["id"]
    t = samples_to_table
    commit(run, "textbooks", t([A, B, C, D]), with_drop(t([E]), "textbooks", ["teacher_error:http_500"]))
    commit(run, "cot", t([cot]), with_drop(t([]), "cot", []))
    commit(run, "heuristics", t([A, B, D, cot]), with_drop(t([C]), "heuristics", ["gopher_min_words"]))
    commit(run, "dedup", t([A, B, cot]), with_drop(t([D]), "dedup", ["exact_duplicate"]))
    return run


def reference_distinct(texts: list[str], n: int) -> float:
    """distinct-n by the definition, in plain Python: distinct n-grams within texts / tokens."""
    docs = [re.findall(r"[^\W_]+", t.lower()) for t in texts]
    grams = {tuple(d[i:i + n]) for d in docs for i in range(len(d) - n + 1)}
    return len(grams) / sum(len(d) for d in docs)


def test_coverage_report(report_run):
    con = warehouse.connect(report_run)
    reports = warehouse.report_queries()
    got = {(r["axis"], r["value"]): (r["planned"], r["produced"], r["in_final"], r["never_produced"], r["dropped"])
           for r in warehouse.fetch_arrow(con, "select * from textbook_coverage").to_pylist()}
    assert got == {
        ("subject", "Math"): (2, 2, 2, 0, 0), ("subject", "Science"): (3, 2, 0, 1, 2),
        ("topic", "Algebra"): (2, 2, 2, 0, 0), ("topic", "Energy"): (3, 2, 0, 1, 2),
        ("subtopic", "Heat"): (2, 1, 0, 1, 1), ("subtopic", "Linear"): (1, 1, 1, 0, 0),
        ("subtopic", "Quadratic"): (1, 1, 1, 0, 0), ("subtopic", "Work"): (1, 1, 0, 0, 1),
        ("audience", "adults"): (3, 2, 1, 1, 1), ("audience", "kids"): (2, 2, 1, 0, 1),
        ("style", "story"): (3, 2, 1, 1, 1), ("style", "textbook"): (2, 2, 1, 0, 1),
        ("format", "worked"): (3, 2, 2, 1, 0), ("format", "exercises"): (2, 2, 0, 0, 2),
    }
    # the report is the view without the (long) subtopic rows
    report = warehouse.fetch_arrow(con, reports["textbook_coverage"]).to_pylist()
    assert {(r["axis"], r["value"]): (r["planned"], r["produced"], r["in_final"], r["never_produced"], r["dropped"])
            for r in report} == {k: v for k, v in got.items() if k[0] != "subtopic"}
    pairs = {(r["axis_a"], r["axis_b"]): r for r in
             warehouse.fetch_arrow(con, reports["textbook_coverage_pairs"]).to_pylist()}
    assert len(pairs) == 9
    for key in [("audience", "style"), ("subject", "audience"), ("style", "format")]:
        r = pairs[key]
        assert (r["value_pairs"], r["planned_pairs"], r["final_pairs"], r["missing_pairs"]) == (4, 4, 2, 2), key
        assert (r["final_min"], r["final_max"]) == (0, 1), key
    # Math has only worked examples (A, B: both in the output); Science's pairs reach nothing
    r = pairs["subject", "format"]
    assert (r["value_pairs"], r["planned_pairs"], r["final_pairs"], r["missing_pairs"]) == (4, 3, 1, 3)
    assert (r["final_min"], r["final_max"]) == (0, 2)

    gaps = warehouse.fetch_arrow(con, reports["textbook_coverage_gaps"]).to_pylist()
    assert [(g["lost_at"], g["lost_reason"], g["subtopic"], g["audience"]) for g in gaps] == [
        ("textbooks", "teacher_error:http_500", "Heat", "adults"),
        ("heuristics", "gopher_min_words", "Heat", "kids"),
        ("dedup", "exact_duplicate", "Work", "adults")]
    # A and D share an id; the cell key (the request hash) tells them apart
    status = dict(con.execute("select subtopic || '/' || audience, status from textbook_cells").fetchall())
    assert status == {"Linear/kids": "final", "Quadratic/adults": "final", "Heat/kids": "dropped",
                      "Work/adults": "dropped", "Heat/adults": "never_produced"}


def test_lexical_diversity_report_matches_the_definition(report_run):
    con = warehouse.connect(report_run)
    rows = warehouse.fetch_arrow(con, "select * from lexical_diversity").to_pylist()
    got = {(r["axis"], r["value"]): r for r in rows}
    a, b = "the cat sat on the mat", "The cat ran!"
    # by hand: 9 tokens; {the, cat, sat, on, mat, ran}; 6 bigrams ("the cat" twice); 5 trigrams
    tb_row = got[("kind", "textbook")]
    assert (tb_row["docs"], tb_row["tokens"]) == (2, 9)
    assert (tb_row["distinct_1"], tb_row["distinct_2"], tb_row["distinct_3"]) == pytest.approx((6 / 9, 6 / 9, 5 / 9))
    expected = {("kind", "textbook"): [a, b], ("kind", "cot"): [COT_TEXT], ("audience", "kids"): [a],
                ("audience", "adults"): [b], ("style", "story"): [a], ("subject", "Math"): [a, b],
                ("subtopic", "Quadratic"): [b]}
    for key, texts in expected.items():
        for n in (1, 2, 3):
            assert got[key][f"distinct_{n}"] == pytest.approx(reference_distinct(texts, n)), (key, n)
    assert got[("kind", "cot")]["tokens"] == 7  # question what is 2 2 answer 4
    # axes of the textbook rows only; dropped cells (C, D, E) are not in the output
    assert {k for k in got if k[0] == "subtopic"} == {("subtopic", "Linear"), ("subtopic", "Quadratic")}
    report = warehouse.fetch_arrow(con, warehouse.report_queries()["lexical_diversity"]).to_pylist()
    assert [(r["axis"], r["value"], r["tokens"]) for r in report] == [
        (r["axis"], r["value"], r["tokens"]) for r in rows if r["axis"] not in ("topic", "subtopic")]
    assert next(r for r in report if r["value"] == "textbook")["distinct_3"] == round(5 / 9, 3)

    openers = con.execute("select opener, rows from textbook_openers").fetchall()
    assert openers == [("the cat ran", 1), ("the cat sat", 1)]


def test_distinct_n_in_python_matches_the_definition():
    texts = ["the cat sat on the mat", "The cat ran!", None, "...", "Ünïcode wörds, ünïcode WÖRDS"]
    got = distinct_n(texts)
    live = [t for t in texts if t]
    for n in (1, 2, 3):
        assert got[n] == pytest.approx(reference_distinct(live, n))
    by = {r["value"]: r for r in distinct_n_by(texts, ["x", "y", "x", None, None]).to_pylist()}
    assert set(by) == {"x", "y", None}  # "..." has no token; its group still has the unicode text
    assert by[None]["tokens"] == 4 and by[None]["distinct_1"] == pytest.approx(2 / 4)
    assert by["x"]["docs"] == 1 and by["x"]["distinct_3"] == pytest.approx(4 / 6)
    assert distinct_n([]) == {1: 0.0, 2: 0.0, 3: 0.0}
    with pytest.raises(ValueError, match="2 group values for 1 texts"):
        distinct_n_by(["a"], ["x", "y"])


# --- real public data ----------------------------------------------------------------------------

@pytest.mark.shared_data
def test_pile_documents_as_passages_and_diversity_agreement(shared_data, tmp_path):
    """The Pile sample (real web, code and papers) as seed passages: it loads, the plan uses every
    passage before reusing one, and the numpy and DuckDB distinct-n agree on real text."""
    pile = shared_data / "web" / "pile_1k.jsonl"
    passages, bad = load_passages(pile, text_field="contents")
    assert len(passages) + len(bad) == 1000 and len(passages) >= 950
    assert all(len(p.text) <= 1000 for p in passages)

    _, src = sources_for(tmp_path, passages=str(pile), passage_field="contents", styles=["blog post"],
                           formats=["worked example"])
    plan = plan_textbooks(src, len(passages), seed=5)
    assert len({c.passage_id for c in plan}) == len(passages)  # every passage once
    assert spread(c.audience for c in plan) <= 1

    docs = [json.loads(x) for x in pile.read_text().splitlines()]
    texts = [d["contents"] for d in docs]
    sets = [d["metadata"]["pile_set_name"] for d in docs]
    rows = [make_sample("textbook", t, style=s, topic="pile") for t, s in zip(texts, sets)]
    run = runner.open_run(PipelineConfig(data_root=str(tmp_path / "data"), textbooks=TextbookConfig(topics=["x"])),
                          "pile")
    table = samples_to_table(rows)
    for stage in ("textbooks", "heuristics", "dedup"):
        commit(run, stage, table, with_drop(samples_to_table([]), stage, []))
    con = warehouse.connect(run)
    sql = {r[0]: r[1:] for r in con.execute("select value, docs, tokens, distinct_1, distinct_2, distinct_3 "
                                            "from lexical_diversity where axis = 'style'").fetchall()}
    py = {r["value"]: (r["docs"], r["tokens"], r["distinct_1"], r["distinct_2"], r["distinct_3"])
          for r in distinct_n_by(texts, sets).to_pylist()}
    assert set(sql) == set(py) and len(py) >= 5
    for name in py:
        assert sql[name][:2] == py[name][:2], name
        assert sql[name][2:] == pytest.approx(py[name][2:], rel=1e-12), name


# Replies of the kinds a reader rejects in seconds, and one a reader keeps, keyed by the topic
# the prompt asks for (inline topics: the unit is the topic itself).
GATE_REPLIES = {
    "photosynthesis": (  # on topic, plain prose for high school students: kept
        "Plants make their own food through photosynthesis. Inside the leaves, chloroplasts hold a green "
        "pigment called chlorophyll, which absorbs light energy. The plant uses that energy to split water "
        "taken up by the roots and to combine carbon dioxide from the air into glucose, a sugar it can store "
        "or burn. Oxygen is released as a by-product through small pores called stomata. A simple experiment "
        "shows this: place a water plant under a lamp and count the bubbles of oxygen each minute. Move the "
        "lamp closer and the count rises, because more light drives the reaction faster. Temperature and the "
        "amount of carbon dioxide limit the rate in the same way."),
    "the water cycle": (  # meta-talk about the task
        "Sure! Here is a section about the water cycle for high school students. Water evaporates from the "
        "oceans, rises as vapour, cools into clouds and falls again as rain or snow, which rivers carry back "
        "to the sea. Each step moves energy as well as water."),
    "binary numbers": (  # a stock opener the prompt bans
        "In today's fast-paced world, binary numbers are everywhere. A binary number uses only the digits 0 "
        "and 1, and each place is worth twice the place to its right, so 1011 is eight plus two plus one, or "
        "eleven. Computers store every number this way because a switch is either off or on."),
    "the French Revolution": (  # off topic: about cooking pasta
        "Boil a large pot of salted water and add the dry pasta. Stir it during the first minute so the "
        "pieces do not stick together. Taste a piece after eight minutes; it should be soft but still firm in "
        "the middle. Drain the pasta in a colander, keep a cup of the cooking water, and toss the pasta with "
        "the sauce, adding a splash of the water if the sauce is too thick."),
}


def gate_responder(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    topic = re.search(r"about (.+?) for ", prompt).group(1)
    return GATE_REPLIES[topic]


def test_stage_gates_drop_what_a_reader_rejects_with_reasons_and_columns(tmp_path):
    with FakeOpenAI(responder=gate_responder) as srv:
        run, result = run_stage(tmp_path, srv, {
            "topics": list(GATE_REPLIES), "audiences": ["high school students"], "styles": ["academic textbook"],
            "formats": ["worked example"], "max_samples": 4, "gates": {"enabled": True}})
    kept = run.read("textbooks").to_pylist()
    assert [r["topic"] for r in kept] == ["photosynthesis"]
    k = kept[0]
    assert k["gen_compliance"] is None and k["gen_topic_similarity"] > 0.3 and 5 < k["gen_reading_grade"] < 15
    rejected = {r["topic"]: r for r in run.read_rejected("textbooks").to_pylist()}
    assert rejected["the water cycle"]["drop_reason"].startswith("noncompliant:meta_talk:Sure!")
    assert rejected["binary numbers"]["drop_reason"].startswith("noncompliant:stock_opener:In today")
    assert rejected["the French Revolution"]["drop_reason"].startswith("off_topic:")
    assert rejected["the French Revolution"]["gen_topic_similarity"] < 0.3
    extra = json.loads(run.record_path.read_text())["stages"]["textbooks"]["extra"]
    assert extra["gates"] == {"noncompliant:meta_talk": 1, "noncompliant:stock_opener": 1, "off_topic": 1}
    assert (result.rows_kept, result.rows_dropped) == (1, 3)
