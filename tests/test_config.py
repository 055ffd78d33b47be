"""Pipeline configuration: loading, error messages that name file and field, secrets, hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataforge.config import ConfigError, PipelineConfig, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def write(tmp_path: Path, text: str, name: str = "pipe.yaml") -> Path:
    p = (tmp_path / name).resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_quickstart_loads():
    cfg = load_config(QUICKSTART)
    assert cfg.name == "quickstart"
    assert cfg.teacher.provider == "local"
    assert cfg.cot.samples_per_question == 4 and cfg.cot.max_questions == 40 and cfg.cot.keep == "verified"
    assert cfg.cot.check_steps and cfg.textbooks.gates.enabled  # the quality gates are on
    assert len(cfg.textbooks.topics) == 6 and "photosynthesis" in cfg.textbooks.topics
    assert cfg.export.formats == ["jsonl", "parquet"]
    seeds = [cfg.resolve_path(s) for s in cfg.cot.seed_paths()]
    assert seeds == [(REPO / "seeds" / n).resolve() for n in ("arithmetic_sample.jsonl", "gsm8k_sample.jsonl")]
    assert all(s.exists() for s in seeds)


def test_empty_file_gives_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg == PipelineConfig(source_path=cfg.source_path)
    assert cfg.dedup.threshold == 0.8 and cfg.dedup.ngram == 5


@pytest.mark.parametrize("text, field", [
    ("name: x\ntextbook:\n  max_samples: 3\n", "textbook"),
    ("cot:\n  samples_per_questoin: 4\n", "cot.samples_per_questoin"),
    ("teacher:\n  provder: openai\n", "teacher.provder"),
    ("teacher:\n  local:\n    prot: 9000\n", "teacher.local.prot"),
])
def test_unknown_field_names_file_and_field(tmp_path, text, field):
    p = write(tmp_path, text)
    msg = error_of(p)
    assert f"{p}: {field}: unknown field" in msg


@pytest.mark.parametrize("text, field, says", [
    ("cot:\n  samples_per_question: many\n", "cot.samples_per_question", "integer"),
    ("teacher:\n  provider: openai\n  max_concurrency: 0\n", "teacher.max_concurrency", "greater than or equal to 1"),
    ("cot:\n  keep: some\n", "cot.keep", "'verified' or 'all'"),
    ("dedup:\n  threshold: 1.5\n", "dedup.threshold", "less than 1"),
    ("export:\n  formats: [jsonl, csv]\n", "export.formats.1", "'jsonl' or 'parquet'"),
    ("export:\n  name: ../escape\n", "export.name", "plain folder name"),
    ("teacher: remote\n", "teacher.provider", "'local' or 'openai'"),
])
def test_invalid_value_names_file_and_field(tmp_path, text, field, says):
    p = write(tmp_path, text)
    msg = error_of(p)
    line = next((ln for ln in msg.splitlines() if f"{p}: {field}: " in ln), None)
    assert line is not None, msg
    assert says in line


def test_every_error_is_reported(tmp_path):
    p = write(tmp_path, "cot:\n  keep: some\n  samples_per_question: 0\nseeed: 1\n")
    msg = error_of(p)
    for field in ("cot.keep", "cot.samples_per_question", "seeed"):
        assert f"{p}: {field}: " in msg


@pytest.mark.parametrize("text, line", [
    ("name: x\nseed: 1\ncot:\n\tkeep: all\n", 4),
    ("name: x\nseed: 2\n  shard_rows: 3\n", 3),
])
def test_yaml_syntax_error_names_file_and_line(tmp_path, text, line):
    p = write(tmp_path, text)
    msg = error_of(p)
    assert str(p) in msg
    assert f"line {line}," in msg
    assert "not valid YAML" in msg


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    p = write(tmp_path, text)
    msg = error_of(p)
    assert str(p) in msg and "top level must be a mapping" in msg and kind in msg


def test_missing_file(tmp_path):
    p = tmp_path / "nope" / "missing.yaml"
    msg = error_of(p)
    assert str(p) in msg and "not found" in msg


def test_parse_config_without_file_has_no_source_path():
    cfg = parse_config({"cot": {"seeds": "rel/seeds.jsonl"}})
    assert cfg.source_path is None
    assert cfg.resolve_path(cfg.cot.seeds) == Path("rel/seeds.jsonl")
    with pytest.raises(ConfigError, match=r"<config>: cot\.keep"):
        parse_config({"cot": {"keep": "some"}})


# --- teacher -------------------------------------------------------------------------------

def test_teacher_local_shorthand(tmp_path):
    cfg = load_config(write(tmp_path, "teacher: local\n"))
    assert cfg.teacher.provider == "local"
    assert cfg.teacher.resolved_base_url() == "http://127.0.0.1:8765/v1"
    assert cfg.teacher.api_key() == "not-needed"
    cfg2 = load_config(write(tmp_path, "teacher:\n  provider: local\n  local: {port: 9001}\n", "b.yaml"))
    assert cfg2.teacher.resolved_base_url() == "http://127.0.0.1:9001/v1"


def test_openai_without_base_url_defaults_to_openai(tmp_path):
    cfg = load_config(write(tmp_path, "teacher:\n  provider: openai\n  model: gpt-4o-mini\n"))
    assert cfg.teacher.base_url == "https://api.openai.com/v1"
    assert cfg.teacher.resolved_base_url() == "https://api.openai.com/v1"
    own = load_config(write(tmp_path, "teacher:\n  provider: openai\n  base_url: http://10.0.0.5:8000/v1\n", "o.yaml"))
    assert own.teacher.resolved_base_url() == "http://10.0.0.5:8000/v1"
    assert load_config(write(tmp_path, "teacher: openai\n", "s.yaml")).teacher.base_url == "https://api.openai.com/v1"


def test_api_key_from_environment(tmp_path, monkeypatch):
    var = "DATAFORGE_TEST_TEACHER_KEY"
    cfg = load_config(write(tmp_path, f"teacher:\n  provider: openai\n  api_key_env: {var}\n"))
    monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError) as info:
        cfg.teacher.api_key()
    assert "teacher.api_key_env" in str(info.value) and var in str(info.value)
    monkeypatch.setenv(var, "")
    with pytest.raises(ConfigError, match=var):
        cfg.teacher.api_key()
    monkeypatch.setenv(var, "sk-test-value-123")
    assert cfg.teacher.api_key() == "sk-test-value-123"


def test_snapshot_never_holds_the_key(tmp_path, monkeypatch):
    from dataforge.runner import open_run

    var = "DATAFORGE_TEST_SECRET_KEY"
    sentinel = "sk-SENTINEL-0b9f3c2e-never-store-me"
    monkeypatch.setenv(var, sentinel)
    cfg = load_config(write(tmp_path, f"data_root: {tmp_path / 'data'}\n"
                                      f"teacher:\n  provider: openai\n  api_key_env: {var}\n"))
    assert cfg.teacher.api_key() == sentinel
    snap = cfg.snapshot()
    dumped = json.dumps(snap)
    assert sentinel not in dumped
    assert snap["teacher"]["api_key_env"] == var
    assert "source_path" not in snap
    run = open_run(cfg, "secret-check")
    assert sentinel not in run.record_path.read_text()
    assert var in run.record_path.read_text()


# --- paths and hashes ----------------------------------------------------------------------

def test_relative_seeds_resolve_against_the_config_folder(tmp_path, monkeypatch):
    p = write(tmp_path, "cot:\n  seeds: ../seeds/mine.jsonl\n", "configs/deep/pipe.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(p)
    assert cfg.resolve_path(cfg.cot.seeds) == (tmp_path / "configs" / "seeds" / "mine.jsonl").resolve()
    # a relative path to the config itself resolves the same way
    monkeypatch.chdir(tmp_path)
    cfg_rel = load_config(Path("configs/deep/pipe.yaml"))
    assert cfg_rel.resolve_path(cfg_rel.cot.seeds) == (tmp_path / "configs" / "seeds" / "mine.jsonl").resolve()
    absolute = tmp_path / "abs.jsonl"
    assert cfg.resolve_path(str(absolute)) == absolute


def test_stage_hash_tracks_only_its_sections():
    base = parse_config({})
    cot_changed = parse_config({"cot": {"temperature": 0.3}})
    dedup_changed = parse_config({"dedup": {"threshold": 0.7}})
    seed_changed = parse_config({"seed": 99})

    assert base.stage_hash("cot", "seed") == parse_config({}).stage_hash("cot", "seed")
    assert base.stage_hash("cot", "seed") != cot_changed.stage_hash("cot", "seed")
    assert base.stage_hash("textbooks", "seed") == cot_changed.stage_hash("textbooks", "seed")
    assert base.stage_hash("dedup") == cot_changed.stage_hash("dedup")
    assert base.stage_hash("dedup") != dedup_changed.stage_hash("dedup")
    assert base.stage_hash("heuristics") == dedup_changed.stage_hash("heuristics")
    assert base.stage_hash("cot", "seed") != seed_changed.stage_hash("cot", "seed")
    assert base.stage_hash("dedup") == seed_changed.stage_hash("dedup")
    # a nested change counts
    nested = parse_config({"heuristics": {"gopher_quality": {"min_doc_words": 20}}})
    assert base.stage_hash("heuristics") != nested.stage_hash("heuristics")
    # argument order does not matter; the set of sections does
    assert base.stage_hash("cot", "seed") == base.stage_hash("seed", "cot")
    assert base.stage_hash("cot") != base.stage_hash("cot", "seed")


def test_generation_stage_hash_follows_the_teacher_not_its_speed(tmp_path):
    from dataforge.config import PipelineConfig
    from dataforge.runner import generation_io
    from dataforge.store import Run

    run = Run(tmp_path, "r1")
    base = PipelineConfig(data_root=str(tmp_path))
    h = generation_io(run, base, "cot").config_hash
    other_model = base.model_copy(update={"teacher": base.teacher.model_copy(update={"model": "other"})})
    faster = base.model_copy(update={"teacher": base.teacher.model_copy(update={"max_concurrency": 16})})
    assert generation_io(run, other_model, "cot").config_hash != h
    assert generation_io(run, faster, "cot").config_hash == h
