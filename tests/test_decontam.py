"""Benchmark decontamination (dataforge/curate/decontam.py): tiny synthetic benchmarks, the fast
path against the reference, benchmark formats and config errors, the command, GSM8K test
questions planted in samples (caught) vs GSM8K train questions (not), and the pipeline stage."""

from __future__ import annotations

import difflib
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from dataforge.cli import app
from dataforge.config import BenchmarkSource, ConfigError, DecontamConfig, load_config, parse_config
from dataforge.curate.decontam import (BenchmarkItems, DecontamError, build_index,
                                       decontam_stage_inputs, decontaminate, index_for, load_benchmark, load_index,
                                       matched_fraction, matched_words,
                                       normalize_words, normalized_word_lists, parse_benchmark_spec,
                                       reference_scan, scan)
from dataforge.records import make_sample, samples_to_table
from decontam_plants import near_identical_mask, plant, reword

ITEMS = [
    "A farmer has 12 cows and buys 7 more at the county market. How many cows does the farmer have now?",
    "Lucy reads 15 pages of her book every evening before bed. How many pages does she read in a week?",
    "The bakery sold 48 muffins in the morning and half as many in the afternoon. How many muffins were sold?",
    "Tom is six.",  # shorter than an n-gram: indexed by its whole word sequence
]
BENCH = BenchmarkItems("tiny", ITEMS, [str(i) for i in range(len(ITEMS))])


def cfg_of(**kw) -> DecontamConfig:
    return DecontamConfig(enabled=True, benchmarks=[BenchmarkSource(name="tiny", path="unused")], **kw)


def table_of(texts: list[str]) -> pa.Table:
    return samples_to_table([make_sample("textbook", t) for t in texts])


# --- unit: tiny synthetic benchmarks -----------------------------------------------------------

def test_planted_item_is_dropped_with_benchmark_item_and_fraction():
    cfg = cfg_of()
    index = build_index([BENCH], cfg.ngram, cfg.ignore_numbers, cfg.min_block)
    texts = [
        "Chapter 2. Today we practise word problems. " + ITEMS[1] + " Let us think step by step.",
        "Rivers carry water from the mountains to the sea, and along the way they shape the valleys.",
        # one 6-gram of item 0, well under half of its words: a candidate that is not confirmed
        "A farmer has 12 cows and buys hay for the winter.",
        "We know that Tom is six. He likes trains.",
    ]
    kept, rejected = decontaminate(table_of(texts), cfg, index)
    assert rejected.num_rows == 2 and kept.num_rows == 2
    rows = {r["contam_item"]: r for r in rejected.to_pylist()}
    assert set(rows) == {"1", "3"}
    assert rows["1"]["drop_stage"] == "decontam" and rows["1"]["drop_reason"] == "contaminated:tiny:1"
    assert rows["1"]["contam_benchmark"] == "tiny" and rows["1"]["contam_fraction"] == 1.0
    assert rows["1"]["contam_excerpt"] == ITEMS[1][:100]
    k = {r["text"][:10]: r for r in kept.to_pylist()}
    assert k["Rivers car"]["contam_max_fraction"] == 0.0  # no shared n-gram at all
    partial = k["A farmer h"]["contam_max_fraction"]
    assert 0 < partial <= 0.5  # a candidate, confirmed below the cut
    assert k["A farmer h"]["contam_fraction"] is None and k["A farmer h"]["contam_item"] is None
    assert kept.schema.names[-5:] == ["contam_max_fraction", "contam_benchmark", "contam_item", "contam_excerpt",
                                      "contam_fraction"]
    assert rejected.schema.names[:-2] == kept.schema.names


def test_match_fraction_is_the_cut():
    text = "A farmer has 12 cows and buys 7 more at the county market. That is all we know."
    index = build_index([BENCH], 6, False, 3)
    frac = scan(index, [text]).fraction[0]
    assert 0.5 < frac < 1
    assert decontaminate(table_of([text]), cfg_of(match_fraction=frac - 0.01), index)[1].num_rows == 1
    assert decontaminate(table_of([text]), cfg_of(match_fraction=frac), index)[1].num_rows == 0  # "more than"


def test_min_block_ignores_scattered_common_words():
    item = ["how", "many", "apples", "does", "the", "girl", "have", "in", "the", "basket", "now"]
    scattered = "how x many y apples z does q the w girl e have r in t the u basket i now".split()
    assert matched_fraction(item, scattered, 1) == 1.0
    assert matched_fraction(item, scattered, 3) == 0.0
    assert matched_fraction(item, item, 3) == 1.0


def test_compiled_matching_blocks_equal_difflib():
    """The fast path's compiled get_matching_blocks against difflib itself, on small alphabets
    (many equal-length blocks, so difflib's tie-breaking and block merging matter)."""
    rng = np.random.default_rng(3)
    for _ in range(400):
        a = rng.integers(0, 4, rng.integers(0, 30))
        b = rng.integers(0, 4, rng.integers(0, 80))
        blocks = difflib.SequenceMatcher(None, a.tolist(), b.tolist(), autojunk=False).get_matching_blocks()
        for mb in (1, 2, 3):
            assert matched_words(a, b, mb) == sum(x.size for x in blocks if x.size >= mb), (a, b, mb)


def test_ignore_numbers_catches_changed_numbers_only_when_on():
    item = "Sam has 3 red, 5 blue, 8 green and 13 yellow marbles, and gives 2 away each day for 4 days."
    bench = BenchmarkItems("nums", [item], ["0"])
    text = "Try this: Sam has 4 red, 6 blue, 9 green and 12 yellow marbles, and gives 3 away each day for 5 days."
    for ignore, dropped in ((False, 0), (True, 1)):
        cfg = cfg_of(ignore_numbers=ignore)
        index = build_index([bench], cfg.ngram, cfg.ignore_numbers, cfg.min_block)
        # numbers kept: every 6-gram of the item spans a number, so there is no candidate at all
        kept, rejected = decontaminate(table_of([text]), cfg, index)
        assert rejected.num_rows == dropped, ignore
        if not ignore:
            assert kept.column("contam_max_fraction").to_pylist() == [0.0]


def test_messages_and_question_fields_are_checked():
    index = build_index([BENCH], 6, False, 3)
    chat = [{"role": "system", "content": "You are a tutor."}, {"role": "user", "content": ITEMS[2]},
            {"role": "assistant", "content": "Half of 48 is 24, so 72."}]
    rows = [make_sample("cot", "Question: see the chat", chat), make_sample("cot", "clean text", None),
            make_sample("cot", "clean text two", None, question="Oh " + ITEMS[0])]
    table = samples_to_table(rows)
    kept, rejected = decontaminate(table, cfg_of(), index)
    assert sorted(rejected.column("contam_item").to_pylist()) == ["0", "2"]
    kept, rejected = decontaminate(table, cfg_of(fields=["text"]), index)
    assert rejected.num_rows == 0 and kept.num_rows == 3


def test_fields_errors_name_the_field():
    index = build_index([BENCH], 6, False, 3)
    with pytest.raises(DecontamError, match=r"decontam.fields: none of \['body'\]"):
        decontaminate(pa.table({"text": ["x"]}), cfg_of(fields=["body"]), index)
    with pytest.raises(DecontamError, match="column 'n' is int64"):
        decontaminate(pa.table({"text": ["x"], "n": [1]}), cfg_of(fields=["n"]), index)


def test_normalization_bulk_equals_reference():
    texts = ["Janet’s ducks lay 16 eggs… per day!  ", "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ, 3.5% off — “quoted”", "",
             "a-b_c d\te\nf", "  leading", "Ünïcödé ÉCOLE straße $2,000.50"]
    for ignore in (False, True):
        bulk = normalized_word_lists(pa.array(texts + [None]), ignore).to_pylist()
        assert bulk[:-1] == [normalize_words(t, ignore) for t in texts]
        assert not bulk[-1]


def test_fast_path_equals_reference_on_random_mix():
    rng = random.Random(7)
    vocab = ("the a farmer cows buys more market how many does have now lucy reads pages book every evening "
             "bakery sold muffins morning half afternoon were tom is six river sea boat").split()
    items = [" ".join(rng.choice(vocab) for _ in range(rng.randint(2, 14))) + "." for _ in range(60)] + ITEMS
    bench = BenchmarkItems("rand", items, [str(i) for i in range(len(items))])
    docs = []
    for _ in range(300):
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 60))]
        if rng.random() < 0.5:
            pos = rng.randint(0, len(words))
            words[pos:pos] = reword(rng.choice(items), rng, rng.randint(0, 3), rng.random() < 0.3).split()
        docs.append(" ".join(words))
    docs.append(None)
    for ngram, ignore, min_block in ((3, False, 1), (5, True, 3), (8, False, 2)):
        index = build_index([bench], ngram, ignore, min_block)
        fast, ref = scan(index, docs), reference_scan(index, docs)
        assert fast.candidates == ref.candidates > 50
        assert np.array_equal(fast.item, ref.item)
        assert np.allclose(fast.fraction, ref.fraction)
        assert (fast.fraction > 0.5).sum() > 20


# --- benchmark files, config ---------------------------------------------------------------------

def write_benchmarks(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    paths = {
        "gsm": d / "gsm8k_test.jsonl", "arith": d / "multiarith.json", "svamp": d / "svamp.json",
        "mine": d / "evals.jsonl", "pq": d / "evals.parquet",
    }
    paths["gsm"].write_text("\n".join(json.dumps({"question": q, "answer": "no number here"}) for q in ITEMS[:2])
                            + "\n{broken\n")
    paths["arith"].write_text(json.dumps([{"iIndex": 0, "sQuestion": ITEMS[2], "lSolutions": [72.0]},
                                          {"iIndex": 1, "sQuestion": ITEMS[2], "lSolutions": [72.0]},
                                          {"iIndex": 2, "sQuestion": ITEMS[0], "lSolutions": [19.0]}]))
    paths["svamp"].write_text(json.dumps([{"ID": "chal-1", "Body": "Lucy reads 15 pages of her book every evening "
                                           "before bed.", "Question": "How many pages in a week?", "Answer": 105}]))
    paths["mine"].write_text(json.dumps({"prompt": ITEMS[3]}) + "\n" + json.dumps({"prompt": ITEMS[1]}) + "\n")
    pq.write_table(pa.table({"text": [ITEMS[0], ITEMS[1]]}), paths["pq"])
    return paths


def test_benchmark_formats(tmp_path, caplog):
    p = write_benchmarks(tmp_path)
    gsm = load_benchmark(BenchmarkSource(name="g", path=str(p["gsm"])), p["gsm"])
    # auto by file name; answers play no part; the broken line is counted, not fatal
    assert gsm.texts == ITEMS[:2] and gsm.keys == ["0", "1"] and gsm.quarantined == 1
    arith = load_benchmark(BenchmarkSource(name="a", path=str(p["arith"])), p["arith"])
    assert arith.keys == ["0", "2"] and arith.quarantined == 0  # a repeated question is indexed once
    assert "duplicate" not in caplog.text
    sv = load_benchmark(BenchmarkSource(name="s", path=str(p["svamp"])), p["svamp"])
    assert sv.texts == ["Lucy reads 15 pages of her book every evening before bed. How many pages in a week?"]
    mine = load_benchmark(BenchmarkSource(name="m", path=str(p["mine"]), text_field="prompt"), p["mine"])
    assert mine.texts == [ITEMS[3], ITEMS[1]] and mine.keys == ["0", "1"]
    par = load_benchmark(BenchmarkSource(name="p", path=str(p["pq"])), p["pq"])
    assert par.texts == ITEMS[:2]
    # the benchmark's name picks the layout when the file name does not
    renamed = tmp_path / "test.jsonl"
    renamed.write_text(p["gsm"].read_text())
    assert load_benchmark(BenchmarkSource(name="gsm8k_test", path=str(renamed)), renamed).texts == ITEMS[:2]
    with pytest.raises(DecontamError, match="text_field applies to the gsm8k and table formats"):
        load_benchmark(BenchmarkSource(name="a", path=str(p["arith"]), text_field="x"), p["arith"])
    with pytest.raises(DecontamError, match="'m': no items read .*line 1: 'text' is missing"):
        load_benchmark(BenchmarkSource(name="m", path=str(p["mine"])), p["mine"])
    with pytest.raises(DecontamError, match="'x': file not found"):
        load_benchmark(BenchmarkSource(name="x", path="nope.jsonl"), tmp_path / "nope.jsonl")


def test_config_errors_name_the_field():
    def err(section: dict) -> str:
        with pytest.raises(ConfigError) as e:
            parse_config({"decontam": section}, "p.yaml")
        return str(e.value)

    assert "decontam: Value error, benchmarks: name at least one" in err({"enabled": True})
    assert "decontam.benchmarks: Value error, benchmark names must be unique, repeated: g" in err(
        {"benchmarks": [{"name": "g", "path": "a"}, {"name": "g", "path": "b"}]})
    assert "decontam.benchmarks.0.name" in err({"benchmarks": [{"name": "a:b", "path": "a"}]})
    assert "decontam.benchmarks.0.format" in err({"benchmarks": [{"name": "a", "path": "a", "format": "csv"}]})
    assert "decontam.ngram" in err({"ngram": 2})
    assert "decontam.match_fraction" in err({"match_fraction": 1.0})
    assert "decontam.min_block" in err({"min_block": 0})
    assert "decontam.ngrams: unknown field" in err({"ngrams": 10})


def test_benchmark_spec():
    assert parse_benchmark_spec("gsm8k=data/test.jsonl") == BenchmarkSource(name="gsm8k", path="data/test.jsonl")
    s = parse_benchmark_spec("mine=C:x/e.parquet:table:prompt")
    assert (s.path, s.format, s.text_field) == ("C:x/e.parquet", "table", "prompt")
    assert parse_benchmark_spec("sv=a.json:svamp").format == "svamp"
    for bad in ("noequals.jsonl", "=x.jsonl", "a b=x.jsonl"):
        with pytest.raises(DecontamError, match="--benchmark"):
            parse_benchmark_spec(bad)


def test_index_resolves_against_the_config_and_follows_file_changes(tmp_path):
    p = write_benchmarks(tmp_path / "bench")
    cfg_path = tmp_path / "pipeline.yaml"
    cfg_path.write_text(yaml.safe_dump({"decontam": {"enabled": True, "benchmarks": [
        {"name": "mine", "path": "bench/evals.jsonl", "text_field": "prompt"}]}}))
    cfg = load_config(cfg_path)
    index = index_for(cfg)
    assert index.num_items == 2 and index_for(cfg) is index  # built once per process
    before = decontam_stage_inputs(cfg)
    p["mine"].write_text(json.dumps({"prompt": ITEMS[0]}) + "\n")
    assert decontam_stage_inputs(cfg) != before
    assert index_for(cfg).excerpts == [ITEMS[0][:100]]  # a new index for the edited file


# --- the command -----------------------------------------------------------------------------------

def test_decontam_command(tmp_path):
    p = write_benchmarks(tmp_path / "bench")
    inp = tmp_path / "samples.jsonl"
    rows = [{"body": "Intro. " + ITEMS[1] + " Done.", "n": 1}, {"body": "Nothing to see here at all today.", "n": 2},
            {"body": "Story: " + ITEMS[2], "n": 3}]
    inp.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    runner = CliRunner()
    r = runner.invoke(app, ["decontam", str(inp), "--out", str(tmp_path / "out"), "--text-column", "body",
                            "-b", f"gsm={p['gsm']}:gsm8k", "-b", f"arith={p['arith']}"])
    assert r.exit_code == 0, r.output
    assert "rows 3, kept 1, contaminated 2 (arith 1, gsm 1)" in r.output and "quarantined 1" in r.output
    rej = pq.read_table(tmp_path / "out" / "rejected.parquet").to_pylist()
    assert sorted(x["drop_reason"] for x in rej) == ["contaminated:arith:0", "contaminated:gsm:1"]
    kept = pq.read_table(tmp_path / "out" / "kept.parquet")
    assert kept.column("body").to_pylist() == [rows[1]["body"]] and "contam_max_fraction" in kept.column_names
    assert (tmp_path / "out" / "quarantine.jsonl").exists()

    # the config's section, its paths relative to the YAML, overridden by a flag
    cfg_path = tmp_path / "p.yaml"
    cfg_path.write_text(yaml.safe_dump({"decontam": {"benchmarks": [{"name": "g", "path": "bench/gsm8k_test.jsonl"}],
                                                     "fields": ["text"]}}))
    r = runner.invoke(app, ["decontam", str(inp), "--out", str(tmp_path / "o2"), "--text-column", "body",
                            "--config", str(cfg_path), "--match-fraction", "0.99"])
    assert r.exit_code == 0, r.output
    assert "contaminated 1 (g 1)" in r.output

    r = runner.invoke(app, ["decontam", str(inp), "--out", str(tmp_path / "o3"), "-b", f"g={p['gsm']}",
                            "--ngram", "2"])
    assert r.exit_code == 2 and "decontam.ngram" in r.output
    r = runner.invoke(app, ["decontam", str(inp), "--out", str(tmp_path / "o3"), "-b", "g=missing.jsonl"])
    assert r.exit_code == 2 and "file not found" in r.output
    r = runner.invoke(app, ["decontam", "--help"])
    assert r.exit_code == 0 and "NAME=PATH" in r.output and "difflib" in r.output


# --- real data: GSM8K test planted in samples vs GSM8K train -------------------------------------

N_PLANTED = 200


def gsm8k_questions(shared_data: Path, split: str) -> list[str]:
    with (shared_data / "gsm8k" / f"{split}.jsonl").open() as f:
        return [json.loads(line)["question"] for line in f if line.strip()]


@pytest.fixture(scope="module")
def gsm8k_index():
    from conftest import shared_data_dir

    path = shared_data_dir() / "gsm8k" / "test.jsonl"
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set DATAFORGE_SHARED_DATA)")
    cfg = DecontamConfig()
    return load_index([BenchmarkSource(name="gsm8k_test", path=str(path))], Path, cfg.ngram, cfg.ignore_numbers,
                      cfg.min_block)


def test_planted_gsm8k_test_questions_are_caught(shared_data, gsm8k_index):
    test = gsm8k_questions(shared_data, "test")
    rng = random.Random(2024)
    chosen = rng.sample(range(len(test)), N_PLANTED)
    # half with their numbers kept, half with every number changed; 3 words substituted in each
    docs = [plant(reword(test[i], rng, 3, change_numbers=k % 2 == 1), rng) for k, i in enumerate(chosen)]
    r = scan(gsm8k_index, docs)
    caught = (r.fraction > DecontamConfig().match_fraction) & (r.item == np.array(chosen))
    # measured: 198/200 (99%): 100/100 with the numbers kept, 98/100 with them changed
    assert caught[0::2].mean() >= 0.97
    assert caught.mean() >= 0.93, f"caught {caught.sum()}/{N_PLANTED}"


def test_unrelated_gsm8k_train_questions_are_not_flagged(shared_data, gsm8k_index):
    test = gsm8k_questions(shared_data, "test")
    train = gsm8k_questions(shared_data, "train")
    rng = random.Random(99)
    pool = rng.sample(train, 260)
    # set aside train questions near-identical to a test item (GSM8K has a few: same story, other numbers)
    unrelated = [q for q, near in zip(pool, near_identical_mask(pool, test)) if not near][:N_PLANTED]
    assert len(unrelated) == N_PLANTED
    docs = [plant(q, rng) for q in unrelated]
    flagged = int((scan(gsm8k_index, docs).fraction > DecontamConfig().match_fraction).sum())
    assert flagged <= 1, f"{flagged}/{N_PLANTED} unrelated questions flagged"  # measured: 0


# --- the pipeline stage ------------------------------------------------------------------------------

STORIES = [
    "Mira packs crayons into small boxes for the art room and gives each table the same number of boxes.",
    "Jonas plants tulip bulbs along the garden fence and waters every row twice during the dry week.",
    "The library lends picture books to three classes and each class returns them on a Friday afternoon.",
    "Ava collects shells on the beach with her cousins and sorts them into jars by colour and size.",
]


def test_pipeline_stage_drops_contaminated_cot_rows(tmp_path, monkeypatch):
    """A run of the stage runners (what the Prefect flow calls; no Prefect here) against the
    fake teacher: CoT rows whose question holds a benchmark item are dropped by decontam, the
    warehouse shows them, and the stage is skipped on resume unless a benchmark file changed."""
    from fake_openai import FakeOpenAI
    from responders import teacher_responder

    from dataforge import runner
    from dataforge.warehouse import query

    monkeypatch.setenv("DATAFORGE_TEST_KEY", "sk-test")
    seeds = [{"question": f"{s} What is {i} + {i + 1}?", "answer": f"#### {2 * i + 1}"} for i, s in enumerate(STORIES)]
    (tmp_path / "seeds.jsonl").write_text("\n".join(json.dumps(s) for s in seeds) + "\n")
    bench = tmp_path / "bench" / "evals.jsonl"
    bench.parent.mkdir()
    # the benchmark holds stories 1 and 3 with their own questions, and an unrelated item
    bench.write_text("\n".join(json.dumps({"prompt": p}) for p in [
        "A train leaves the station at noon and travels east for three hours at a steady speed.",
        STORIES[1] + " How many rows are there?", STORIES[3] + " How many jars does she fill?"]) + "\n")
    with FakeOpenAI(responder=teacher_responder) as srv:
        config = tmp_path / "pipeline.yaml"
        config.write_text(yaml.safe_dump({
            "name": "t", "data_root": str(tmp_path / "data"), "shard_rows": 2,
            "teacher": {"provider": "openai", "base_url": srv.base_url, "model": "fake-model",
                        "api_key_env": "DATAFORGE_TEST_KEY", "backoff_initial_s": 0.01, "max_attempts": 2},
            "textbooks": {"enabled": False},
            "cot": {"seeds": "seeds.jsonl", "samples_per_question": 2},
            "decontam": {"enabled": True, "benchmarks": [
                {"name": "evals", "path": "bench/evals.jsonl", "format": "table", "text_field": "prompt"}]},
        }))
        cfg = load_config(config)
        assert runner.enabled_curation(cfg) == ["heuristics", "dedup", "decontam"]
        run = runner.open_run(cfg)
        runner.record_result(run, runner.run_cot(run, cfg))
        for stage in runner.enabled_curation(cfg):
            runner.record_result(run, runner.run_curation_stage(run, cfg, stage))
        runner.record_result(run, runner.run_export(run, cfg))
    rec = json.loads(run.record_path.read_text())
    assert rec["stages"]["decontam"]["status"] == "completed"
    assert rec["stages"]["decontam"]["rows_in"] == rec["stages"]["cot"]["rows_kept"] >= 4
    drops = query(run, "select drop_reason, contam_benchmark, contam_item, contam_fraction, question "
                       "from rejections where drop_stage = 'decontam' order by contam_item").to_pylist()
    assert {d["contam_item"] for d in drops} == {"1", "2"}
    assert all(d["drop_reason"] == f"contaminated:evals:{d['contam_item']}" and d["contam_fraction"] > 0.5
               for d in drops)
    assert all(STORIES[1] in d["question"] or STORIES[3] in d["question"] for d in drops)
    final = query(run, "select question, contam_max_fraction from final").to_pylist()
    assert final and not any(STORIES[1] in f["question"] or STORIES[3] in f["question"] for f in final)
    funnel = {f["stage"]: f for f in query(run, "select stage, rows_in, rows_dropped from funnel").to_pylist()}
    assert funnel["decontam"]["rows_dropped"] == len(drops) >= 2
    assert sum(1 for x in (run.export_dir("default") / "train.jsonl").read_text().splitlines()) == len(final)

    # resume: committed, so skipped; a changed benchmark file runs it again
    assert runner.run_curation_stage(run, cfg, "decontam").skipped
    bench.write_text(json.dumps({"prompt": STORIES[0] + " How many boxes?"}) + "\n")
    again = runner.run_curation_stage(run, cfg, "decontam")
    assert not again.skipped and again.rows_dropped >= 1
