"""fastText quality classifiers: normalisation, metrics, sources, training, scoring, the cut,
hybrid labelling against the fake teacher, the CLI, and the quality stage in a pipeline run.

Every model here is trained in the test on tiny synthetic data (small buckets and dim, so a
training takes well under a second); the committed demonstration cards are only checked for
holding real metric fields with plausible values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fake_openai import FakeOpenAI
from pydantic import ValidationError
from teacher_fixtures import KEY_ENV, fake_teacher_cfg
from typer.testing import CliRunner

from dataforge.cli import app
from dataforge.config import ConfigError, QualityConfig, parse_config
from dataforge.curate.classifier import (
    ClassifierError,
    Labelled,
    TrainParams,
    binary_metrics,
    clean_labelled,
    load_source,
    parse_source,
    path_resolver,
    roc_auc,
    stratified_folds,
    stratified_split,
    train_classifier,
)
from dataforge.curate.quality import (
    QualityError,
    apply_quality,
    cut_scores,
    cut_scores_reference,
    load_quality_model,
    normalize_text_reference,
    normalize_texts,
    score_table,
    score_texts,
)
from dataforge.curate.rubric import (
    RubricRating,
    attach_ratings,
    load_rubric,
    rate_texts,
    sample_rows,
)

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

# tiny but real fastText settings: the DCLM recipe with small buckets and vectors
TINY = {"dim": 16, "bucket": 20_000, "epoch": 20, "lr": 0.5, "cutoff": 500, "valid_fraction": 0.25, "seed": 3}

SCIENCE = ["photosynthesis", "equation", "theorem", "molecule", "hypothesis", "derivative", "enzyme",
           "velocity", "integral", "proof", "electron", "matrix", "experiment", "chloroplast"]
CHATTER = ["lol", "omg", "subscribe", "click", "dude", "awesome", "yeah", "gonna", "wanna", "likes",
           "follow", "haha", "totally", "vibes"]
COMMON = ["the", "a", "of", "and", "to", "in", "is", "it", "this", "that", "we", "you"]


def make_texts(words: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ws = list(rng.choice(words, 6)) + list(rng.choice(COMMON, 10))
        rng.shuffle(ws)
        out.append(" ".join(ws).capitalize() + f". Note {i}!")
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[Path, dict]:
    """A binary model (science = 1, chatter = 0) trained once for the module."""
    out = tmp_path_factory.mktemp("model")
    data = Labelled(make_texts(SCIENCE, 80, 1) + make_texts(CHATTER, 80, 2), np.array([1] * 80 + [0] * 80),
                    "binary", [{"source": "synthetic", "sha256": "0" * 64, "rows_selected": 160}])
    card = train_classifier(data, TrainParams(**TINY, folds=3), out / "tiny", "tiny")
    return out / "tiny" / "model.ftz", card


# --- normalisation ---------------------------------------------------------------------------

def test_normalisation_rule():
    got = normalize_texts(["Hello, World!\n\nNew\tline", "  The end.  ", None, "", "e=mc^2 (really)"]).to_pylist()
    assert got == ["hello , world ! new line", "the end .", None, "", "e = mc ^ 2 ( really )"]


UNICODE_CASES = ["İstanbul ΣΟΦΟΣ Straße", "café e\u0301 ½ ① 3.14", "x\u00a0y\u2028z\u3000w", "\x00a\x1fb\x7f",
                 "you’re 😀ok — «quoted»", "tab\there\r\nwin\fform\vvt", "中文，标点。", "  ", "a_b-c/d"]


def test_bulk_normalisation_equals_reference():
    bulk = normalize_texts(UNICODE_CASES).to_pylist()
    assert bulk == [normalize_text_reference(t) for t in UNICODE_CASES]
    assert all("\n" not in t and "  " not in t and t == t.strip() for t in bulk)


def test_bulk_normalisation_equals_reference_on_real_text(pile_docs):
    texts = [d["contents"] for d in pile_docs]
    assert normalize_texts(texts).to_pylist() == [normalize_text_reference(t) for t in texts]


# --- metrics and splits ------------------------------------------------------------------------

def auc_pairwise(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        s = np.round(rng.random(60) + 0.3 * y, 1)  # rounding makes ties
        assert roc_auc(y, s) == pytest.approx(auc_pairwise(y, s))
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_binary_metrics_counts():
    m = binary_metrics(np.array([1, 1, 1, 0, 0, 0]), np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3]), 0.5)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3, abs=1e-4) and m["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["roc_auc"] == pytest.approx(auc_pairwise(np.array([1, 1, 1, 0, 0, 0]),
                                                      np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3])), abs=1e-4)


def test_stratified_split_and_folds():
    labels = np.array([1] * 30 + [0] * 70)
    train, valid = stratified_split(labels, 0.2, seed=5)
    assert len(np.intersect1d(train, valid)) == 0 and len(train) + len(valid) == 100
    assert labels[valid].sum() == 6 and (labels[valid] == 0).sum() == 14
    again = stratified_split(labels, 0.2, seed=5)
    assert np.array_equal(valid, again[1]) and not np.array_equal(valid, stratified_split(labels, 0.2, seed=6)[1])
    folds = stratified_folds(labels, 5, seed=1)
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(100))
    assert all(labels[f].sum() == 6 for f in folds)


def test_clean_labelled_removes_duplicates_and_conflicts():
    data = Labelled(["Same text.", "same  TEXT .", "Conflict!", "conflict !", "   ", "Unique"],
                    np.array([1, 1, 1, 0, 0, 0]), "binary", [])
    texts, labels, removed = clean_labelled(data)
    assert texts == ["same text .", "unique"] and labels.tolist() == [1, 0]
    assert removed == {"empty": 1, "conflicts": 2, "duplicates": 1}


# --- sources -------------------------------------------------------------------------------------

def test_parse_source_forms():
    s = parse_source("data/pile.jsonl:contents?metadata.pile_set_name=Wikipedia (en),USPTO Backgrounds&limit=5")
    assert s.file == "data/pile.jsonl" and s.columns == ["contents"] and s.limit == 5
    assert s.where == {"metadata.pile_set_name": ["Wikipedia (en)", "USPTO Backgrounds"]}
    s = parse_source("/abs/a.json:instruction+input+output?in=/abs/b.json")
    assert s.columns == ["instruction", "input", "output"] and s.in_ == "/abs/b.json"
    assert parse_source("plain.parquet").columns == ["text"]
    assert parse_source(s.describe()) == s
    with pytest.raises(ClassifierError, match="FIELD=VALUE"):
        parse_source("x.jsonl?justaword")
    with pytest.raises(ClassifierError, match="limit"):
        parse_source("x.jsonl?limit=many")


def test_load_source_filters_nested_fields_membership_and_json_arrays(tmp_path):
    rows = [{"contents": f"doc {i}", "metadata": {"set": "wiki" if i % 3 == 0 else "cc"}} for i in range(9)]
    pile = write_jsonl(tmp_path / "pile.jsonl", rows)
    (tmp_path / "pile.jsonl").write_text(pile.read_text() + "{broken\n")
    resolve = path_resolver(tmp_path)
    got = load_source(parse_source("pile.jsonl:contents?metadata.set=wiki"), resolve)
    assert got.texts == ["doc 0", "doc 3", "doc 6"]
    assert got.info["rows_read"] == 9 and got.info["quarantined"] == 1 and len(got.info["sha256"]) == 64
    triples = [{"instruction": f"Do {i}", "input": "" if i % 2 else f"in {i}", "output": f"out {i}"} for i in range(6)]
    (tmp_path / "all.json").write_text(json.dumps(triples, indent=2))
    (tmp_path / "good.json").write_text(json.dumps([triples[1], triples[4]]))
    cols = "instruction+input+output"
    pos = load_source(parse_source(f"all.json:{cols}?in=good.json"), resolve)
    neg = load_source(parse_source(f"all.json:{cols}?not_in=good.json"), resolve)
    assert pos.texts == ["Do 1\nout 1", "Do 4\nin 4\nout 4"] and len(neg.texts) == 4
    with pytest.raises(ClassifierError, match="no field 'sett'"):
        load_source(parse_source("pile.jsonl:contents?metadata.sett=wiki"), resolve)
    with pytest.raises(ClassifierError, match="selects no rows"):
        load_source(parse_source("pile.jsonl:contents?metadata.set=nothing"), resolve)
    with pytest.raises(ClassifierError, match="no such file"):
        load_source(parse_source("missing.jsonl"), resolve)


def test_shared_data_variable_in_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFORGE_SHARED_DATA", str(tmp_path / "shared"))
    assert path_resolver(Path("/r"))("${DATAFORGE_SHARED_DATA}/web/x.jsonl") == tmp_path / "shared/web/x.jsonl"
    assert path_resolver(Path("/r"))("rel/x.jsonl") == Path("/r/rel/x.jsonl")
    with pytest.raises(ClassifierError, match="NOT_SET_ANYWHERE"):
        path_resolver()("${NOT_SET_ANYWHERE}/x")


# --- training, cards, scoring -----------------------------------------------------------------

def test_training_writes_a_quantized_model_and_a_card_with_real_metrics(tiny_model):
    path, card = tiny_model
    assert path.exists() and (path.parent / "card.md").exists()
    on_disk = json.loads((path.parent / "card.json").read_text())
    assert on_disk == card
    held = card["metrics"]["held_out"]
    assert held["n"] == card["split"]["valid_rows"] == 40 and held["n_positive"] == 20
    assert held["roc_auc"] > 0.9 and held["precision"] > 0.8 and held["recall"] > 0.8  # separable data
    assert card["model"]["quantized"] and card["model"]["bytes"] < card["model"]["unquantized_bytes"]
    assert card["model"]["bytes"] == path.stat().st_size
    assert card["hyperparameters"]["word_ngrams"] == 2 and card["hyperparameters"]["thread"] == 1
    assert card["data"]["label_counts"]["valid"] == {"0": 20, "1": 20}
    cv = card["metrics"]["cross_validation"]
    assert len(cv["roc_auc"]["per_fold"]) == 3 and 0.8 < cv["roc_auc"]["mean"] <= 1
    assert "ROC-AUC" in (path.parent / "card.md").read_text()


def test_training_is_deterministic(tmp_path):
    data = Labelled(make_texts(SCIENCE, 30, 4) + make_texts(CHATTER, 30, 5), np.array([1] * 30 + [0] * 30),
                    "binary", [])
    params = TrainParams(**{**TINY, "lr": 0.2}, quantize=False)
    a = train_classifier(data, params, tmp_path / "a", "a")
    other = Labelled(make_texts(CHATTER, 40, 6) + make_texts(SCIENCE, 40, 7), np.array([1] * 40 + [0] * 40),
                     "binary", [])
    train_classifier(other, TrainParams(**{**TINY, "bucket": 30_000}), tmp_path / "o", "o")  # leaves freed memory behind
    b = train_classifier(data, params, tmp_path / "b", "b")
    assert a["model"]["sha256"] == b["model"]["sha256"]
    assert a["metrics"] == b["metrics"]


def test_bulk_scores_equal_per_row_reference(tiny_model):
    model = load_quality_model(tiny_model[0])
    assert model.kind == "binary" and model.tag.startswith("tiny@")
    texts = make_texts(SCIENCE, 20, 9) + make_texts(CHATTER, 20, 10) + [None, "", "Just words."]
    bulk = score_texts(model, texts, batch_rows=7)
    ref = [math.nan if t is None else model.predict_line_reference(normalize_text_reference(t)) for t in texts]
    np.testing.assert_allclose(bulk, ref, rtol=1e-6)
    assert np.isnan(bulk[40]) and bulk[:20].mean() > 0.5 > bulk[20:40].mean()


def test_cut_equals_reference_and_reasons(tiny_model):
    rng = np.random.default_rng(7)
    scores = [None if i % 9 == 0 else float(x) for i, x in enumerate(np.round(rng.random(50), 2))]
    table = pa.table({"id": [str(i) for i in range(50)], "quality_score": pa.array(scores, pa.float64())})
    rows = table.to_pylist()
    for kw in ({"threshold": 0.5}, {"top_fraction": 0.3}, {"top_fraction": 1.0}):
        kept, rej = cut_scores(table, **kw)
        ref_kept, ref_dropped = cut_scores_reference(rows, **kw)
        assert kept.column("id").to_pylist() == [r["id"] for r in ref_kept]
        assert rej.column("id").to_pylist() == [r["id"] for r, _ in ref_dropped]
        assert rej.column("drop_reason").to_pylist() == [why for _, why in ref_dropped]
        assert set(rej.column("drop_stage").to_pylist()) <= {"quality"}
    kept, rej = cut_scores(table, threshold=0.5)
    assert rej.column("drop_reason")[0].as_py().startswith("quality:below_threshold(0.")
    scored = [s for s in scores if s is not None]
    kept, _ = cut_scores(table, top_fraction=0.3)
    assert kept.num_rows - 6 >= math.ceil(0.3 * len(scored))  # 6 null-score rows are never cut


def test_score_table_respects_apply_to_and_threshold_range(tiny_model):
    table = pa.table({"id": ["a", "b", "c"], "kind": ["textbook", "cot", "document"],
                      "text": ["A theorem and a proof.", "We add 2 and 3.", "lol subscribe"]})
    model = load_quality_model(tiny_model[0])
    scored = score_table(table, model, apply_to=["textbook", "document"])
    assert scored.column("quality_score")[1].as_py() is None and scored.column("quality_model")[1].as_py() is None
    assert scored.column("quality_model")[0].as_py() == model.tag
    qcfg = QualityConfig(enabled=True, model=str(tiny_model[0]), cut={"threshold": 2.0}, apply_to=["textbook"])
    with pytest.raises(QualityError, match=r"quality\.cut\.threshold: 2\.0 is above 1"):
        apply_quality(table, qcfg, tiny_model[0])
    with pytest.raises(QualityError, match="not found"):
        load_quality_model(tiny_model[0].parent / "nope.ftz")


def test_stage_recut_reads_cached_scores_without_the_model(tiny_model, tmp_path, monkeypatch):
    """Scoring and the cut are separate steps: after one run of the stage, a run whose only
    change is the cut reads every score back from the score cache (the model is neither loaded
    nor called) and keeps the new cut's rows; new texts alone are scored."""
    from dataforge.curate import quality

    texts = make_texts(SCIENCE, 30, 11) + make_texts(CHATTER, 30, 12)
    table = pa.table({"id": [str(i) for i in range(66)], "kind": ["textbook", "document", "cot"] * 22,
                      "text": texts + texts[:5] + [None]})  # repeated texts, a null text, an unscored kind

    def cfg_with(cut: dict):
        return parse_config({"data_root": str(tmp_path / "data"), "quality": {
            "enabled": True, "model": str(tiny_model[0]), "cut": cut, "apply_to": ["textbook", "document"]}})

    cfg = cfg_with({"threshold": 0.5})
    kept, rejected = quality.apply_quality_stage(table, cfg)
    # the same rows, scores and reasons as scoring without the cache
    ref_kept, ref_rejected = apply_quality(table, cfg.quality, tiny_model[0])
    assert kept.equals(ref_kept) and rejected.equals(ref_rejected) and kept.num_rows and rejected.num_rows
    assert len(list((cfg.teacher_cache_dir() / "quality_scores").glob("*.parquet"))) == 1
    scored = score_table(table, load_quality_model(tiny_model[0]), ["textbook", "document"])
    want_kept, want_rejected = cut_scores(scored, top_fraction=0.25)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded or called")

    for name in ("_load", "load_quality_model", "score_texts", "score_table"):
        monkeypatch.setattr(quality, name, no_model)
    kept, rejected = quality.apply_quality_stage(table, cfg_with({"top_fraction": 0.25}))
    assert kept.equals(want_kept) and rejected.equals(want_rejected)
    assert rejected.num_rows and all(r.startswith("quality:below_top_fraction(")
                                     for r in rejected.column("drop_reason").to_pylist())
    with pytest.raises(QualityError, match=r"threshold: 2\.0 is above 1"):  # checked against the cached kind
        quality.apply_quality_stage(table, cfg_with({"threshold": 2.0}))

    monkeypatch.undo()
    calls = []
    real = quality.score_texts
    monkeypatch.setattr(quality, "score_texts", lambda model, texts, *a: calls.append(len(texts)) or real(model, texts, *a))
    more = pa.concat_tables([table, pa.table({"id": ["n1", "n2"], "kind": ["textbook"] * 2,
                                              "text": ["A new theorem.", "lol new vibes"]})])
    kept, _ = quality.apply_quality_stage(more, cfg_with({"top_fraction": 0.25}))
    assert calls == [2] and kept.num_rows >= want_kept.num_rows


def test_quality_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"quality\.cut.*exactly one of threshold or top_fraction"):
        parse_config({"quality": {"enabled": True, "model": "m.ftz", "cut": {"threshold": 0.5, "top_fraction": 0.2}}})
    with pytest.raises(ConfigError, match=r"quality.*model: required"):
        parse_config({"quality": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"quality\.cut\.top_fraction"):
        parse_config({"quality": {"enabled": True, "model": "m.ftz", "cut": {"top_fraction": 1.5}}})
    with pytest.raises(ConfigError, match=r"quality\.apply_to"):
        parse_config({"quality": {"apply_to": ["poem"]}})


# --- hybrid labelling against the fake teacher ---------------------------------------------------

def rubric_responder(body: dict) -> str:
    """Rates an extract 4 when it talks science, 1 otherwise; 'BROKEN' extracts always get an
    out-of-range score (never valid against the schema)."""
    extract = body["messages"][-1]["content"].split("<extract>")[1]
    if "BROKEN" in extract:
        return json.dumps({"reasoning": "?", "score": 9})
    score = 4 if any(w in extract.lower() for w in SCIENCE) else 1
    return json.dumps({"reasoning": f"rated {score}", "score": score})


@pytest.fixture
def teacher_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-quality")


def test_rubric_ratings_are_validated_and_failures_recorded(teacher_key, tmp_path):
    import asyncio

    from dataforge.teacher import RequestCache, TeacherClient

    texts = make_texts(SCIENCE, 5, 1) + make_texts(CHATTER, 5, 2) + ["BROKEN row"]
    rubric = load_rubric()
    with FakeOpenAI(responder=rubric_responder) as srv:
        srv.script(["500", "429:0"])  # transient faults are retried away

        async def go():
            async with TeacherClient(fake_teacher_cfg(srv, max_attempts=3), RequestCache(tmp_path / "c.sqlite")) as c:
                return await rate_texts(c, texts, rubric)

        ratings = asyncio.run(go())
        sent = srv.chat_count
        rf = srv.requests[-1]["json"]["response_format"]
        assert rf["type"] == "json_schema" and rf["json_schema"]["schema"]["properties"]["score"]["maximum"] == 5
        again = asyncio.run(go())  # every valid answer comes from the cache
        assert srv.chat_count - sent == 3  # only the broken row is asked again (3 attempts)
    assert [r.score for r in ratings[:10]] == [4] * 5 + [1] * 5
    assert ratings[10].score is None and ratings[10].error == "schema_invalid"
    assert [r.score for r in again] == [r.score for r in ratings] and all(r.cached for r in again[:10])
    table = pa.table({"id": [str(i) for i in range(11)], "text": texts})
    kept, rejected = attach_ratings(table, ratings, "fake-model")
    assert kept.num_rows == 10 and rejected.num_rows == 1
    assert rejected.column("drop_reason").to_pylist() == ["teacher_error:schema_invalid"]
    assert rejected.column("drop_stage").to_pylist() == ["label"]
    assert kept.column("label_reasoning")[0].as_py() == "rated 4"
    with pytest.raises(ValidationError, match="less than or equal to 5"):
        RubricRating(reasoning="x", score=6)
    assert sample_rows(table, 4, 0).num_rows == 4 and sample_rows(table, 4, 0).equals(sample_rows(table, 4, 0))


def test_cli_label_then_train_a_rating_model_that_scores_rows(teacher_key, tmp_path):
    rows = [{"text": t} for t in make_texts(SCIENCE, 40, 11) + make_texts(CHATTER, 40, 12)] + [{"text": "BROKEN"}]
    src = write_jsonl(tmp_path / "rows.jsonl", rows)
    with FakeOpenAI(responder=rubric_responder) as srv:
        cfg = tmp_path / "pipe.yaml"
        cfg.write_text(yaml.safe_dump({"teacher": fake_teacher_cfg(srv, max_attempts=2).model_dump(mode="json")}))
        r = runner.invoke(app, ["classifier", "label", str(src), "--out", str(tmp_path / "labels"), "--config", str(cfg),
                                "--sample", "81", "--data-root", str(tmp_path / "root"), "--train", "--dim", "16",
                                "--bucket", "20000", "--name", "edu"])
    assert r.exit_code == 0, r.output
    assert "rated 80 of 81" in r.output and "1 failed" in r.output
    labels = pq.read_table(tmp_path / "labels" / "kept.parquet")
    assert sorted(set(labels.column("label").to_pylist())) == [1, 4]
    assert pq.read_table(tmp_path / "labels" / "rejected.parquet").column("drop_reason").to_pylist() == [
        "teacher_error:schema_invalid"]
    model_dir = tmp_path / "root" / "models" / "edu"
    card = json.loads((model_dir / "card.json").read_text())
    assert card["kind"] == "rating" and card["data"]["label_counts"]["all"] == {"1": 40, "4": 40}
    model = load_quality_model(model_dir / "model.ftz")
    assert model.kind == "rating" and model.name == "edu"
    scores = score_texts(model, ["The theorem has a proof with an integral.", "lol dude subscribe haha"])
    assert 0 <= scores[1] < scores[0] <= 5 and scores[0] > 2.5 > scores[1]


# --- CLI: train and classify --------------------------------------------------------------------

@pytest.fixture
def web_like(tmp_path) -> Path:
    rows = ([{"contents": t, "meta": {"src": "Wiki"}} for t in make_texts(SCIENCE, 50, 21)]
            + [{"contents": t, "meta": {"src": "CC"}} for t in make_texts(CHATTER, 50, 22)])
    return write_jsonl(tmp_path / "web.jsonl", rows)


def test_cli_train_from_sources_and_classify(tmp_path, web_like):
    r = runner.invoke(app, ["classifier", "train", "--positive", f"{web_like}:contents?meta.src=Wiki",
                            "--negative", f"{web_like}:contents?meta.src=CC", "--out", str(tmp_path / "m"),
                            "--dim", "16", "--bucket", "20000", "--epochs", "20", "--lr", "0.5", "--cutoff", "500",
                            "--cards-dir", str(tmp_path / "cards"), "--name", "webby"])
    assert r.exit_code == 0, r.output
    assert "webby: 100 rows, held-out 10: AUC" in r.output
    assert json.loads((tmp_path / "cards" / "webby.json").read_text())["metrics"]["held_out"]["n"] == 10
    r = runner.invoke(app, ["classify", str(web_like), "--model", str(tmp_path / "m" / "model.ftz"), "--out",
                            str(tmp_path / "c"), "--text-column", "contents", "--top-fraction", "0.5"])
    assert r.exit_code == 0, r.output
    assert "scored 100 rows" in r.output and "kept 50" in r.output
    kept = pq.read_table(tmp_path / "c" / "kept.parquet")
    assert "contents" in kept.column_names and "quality_score" in kept.column_names
    assert sum(m["src"] == "Wiki" for m in kept.column("meta").to_pylist()) >= 45
    rej = pq.read_table(tmp_path / "c" / "rejected.parquet")
    assert all(x.startswith("quality:below_top_fraction(") for x in rej.column("drop_reason").to_pylist())


def test_cli_classify_config_section_and_errors(tmp_path, tiny_model, web_like):
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(yaml.safe_dump({"quality": {"enabled": True, "model": str(tiny_model[0]),
                                               "cut": {"threshold": 0.5}}}))
    r = runner.invoke(app, ["classify", str(web_like), "--config", str(cfg), "--out", str(tmp_path / "o"),
                            "--text-column", "contents"])
    assert r.exit_code == 0, r.output
    assert "(threshold 0.5)" in r.output
    r = runner.invoke(app, ["classify", str(web_like), "--model", str(tiny_model[0]), "--out", str(tmp_path / "o"),
                            "--text-column", "contents", "--threshold", "0.5", "--top-fraction", "0.2"])
    assert r.exit_code == 2 and "quality.cut" in r.output and "exactly one" in r.output
    r = runner.invoke(app, ["classify", str(web_like), "--model", str(tiny_model[0]), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "all 100 rows were quarantined" in r.output and "'text' is missing" in r.output
    r = runner.invoke(app, ["classifier", "train", "--positive", str(web_like)])
    assert r.exit_code == 2 and "--negative" in r.output


def test_cli_train_recipe_with_shared_data_variable(tmp_path, web_like, monkeypatch):
    monkeypatch.setenv("DATAFORGE_SHARED_DATA", str(tmp_path))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "r1", "description": "test recipe",
        "positive": [{"file": "${DATAFORGE_SHARED_DATA}/web.jsonl", "text": "contents", "where": {"meta.src": ["Wiki"]}}],
        "negative": [{"file": "${DATAFORGE_SHARED_DATA}/web.jsonl", "text": "contents", "where": {"meta.src": ["CC"]}}],
        "params": {**TINY, "folds": 2}}))
    r = runner.invoke(app, ["classifier", "train", "--recipe", str(recipe), "--data-root", str(tmp_path / "root")])
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "root" / "models" / "r1" / "card.json").read_text())
    assert card["recipe"] == str(recipe) and [s["rows_selected"] for s in card["sources"]] == [50, 50]
    recipe.write_text(yaml.safe_dump({"name": "r1", "positive": [{"file": "x.jsonl", "colour": "red"}]}))
    r = runner.invoke(app, ["classifier", "train", "--recipe", str(recipe)])
    assert r.exit_code == 2 and "positive.0.colour" in r.output


@pytest.mark.parametrize("args", [["classifier"], ["classifier", "train"], ["classifier", "label"], ["classify"]])
def test_help(args):
    r = runner.invoke(app, [*args, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output


# --- committed demonstration cards --------------------------------------------------------------

@pytest.mark.parametrize("name", ["web_quality", "instruction_quality"])
def test_committed_cards_hold_real_held_out_metrics(name):
    card = json.loads((REPO / "classifiers" / "cards" / f"{name}.json").read_text())
    held = card["metrics"]["held_out"]
    assert held["n"] == card["split"]["valid_rows"] > 50 and 0 < held["n_positive"] < held["n"]
    assert held["tp"] + held["fp"] + held["fn"] + held["tn"] == held["n"]
    for key in ("roc_auc", "precision", "recall", "f1"):
        assert 0 <= held[key] <= 1, key
    assert 0.5 <= held["roc_auc"] <= 1  # better than chance, not perfect by construction
    cv = card["metrics"]["cross_validation"]["roc_auc"]
    assert len(cv["per_fold"]) == card["hyperparameters"]["folds"] and 0 <= cv["sd"] < 0.2
    assert card["model"]["bytes"] < card["model"]["unquantized_bytes"]
    assert all(len(s["sha256"]) == 64 for s in card["sources"])
    assert f"| quantized (shipped) | {held['roc_auc']:.3f} |" in (REPO / "classifiers" / "cards" / f"{name}.md").read_text()
    from dataforge.hashing import file_sha256

    shipped = REPO / "classifiers" / "models" / f"{name}.ftz"
    if card["model"]["shipped"]:
        assert file_sha256(shipped) == card["model"]["sha256"]  # the card's model
    else:  # trained on non-commercial data: the card says how to rebuild it, the file is not in the repo
        assert not shipped.exists() and "--recipe classifiers/recipes/" in card["model"]["why_not_shipped"]


# --- the quality stage in a pipeline run -------------------------------------------------------

def pipeline_model(tmp_path: Path, seed: int = 3) -> Path:
    """A tiny model that tells the fake teacher's textbook sections (1) from its CoT replies (0)."""
    from responders import TEXTBOOK_BODY

    good = [TEXTBOOK_BODY.format(topic=t, seed=s) for t in ("fractions", "magnets", "rivers", "cells", "maps")
            for s in range(8)]
    bad = [f"We add {a} and {b}.\n{a} + {b} = {a + b}\nThe answer is {a + b}." for a in range(8) for b in range(5)]
    data = Labelled(good + bad, np.array([1] * len(good) + [0] * len(bad)), "binary", [])
    train_classifier(data, TrainParams(**{**TINY, "seed": seed}), tmp_path / f"m{seed}", "pipeline_tiny")
    return tmp_path / f"m{seed}" / "model.ftz"


@pytest.mark.prefect
def test_quality_stage_in_a_pipeline_run(tmp_path, monkeypatch):
    from responders import teacher_responder
    from test_pipeline import run_flow, write_config

    from dataforge import runner
    from dataforge.config import load_config
    from dataforge.store import MANIFEST
    from dataforge.warehouse import query

    monkeypatch.setenv("DATAFORGE_TEST_KEY", "sk-test-quality")
    model = pipeline_model(tmp_path)
    with FakeOpenAI(responder=teacher_responder) as srv:
        config = write_config(tmp_path, srv.base_url,
                              quality={"enabled": True, "model": str(model), "cut": {"threshold": 0.5}})
        run = run_flow(config)
    rec = json.loads(run.record_path.read_text())
    assert rec["status"] == "completed" and rec["stages"]["quality"]["status"] == "completed"
    assert (run.stage_dir("quality") / MANIFEST).exists()
    kept = query(run, "select kind, quality_score, quality_model from samples where stage = 'quality'").to_pylist()
    assert kept and {r["kind"] for r in kept} == {"textbook"}
    assert all(r["quality_score"] >= 0.5 and r["quality_model"].startswith("pipeline_tiny@") for r in kept)
    dropped = query(run, "select kind, drop_reason, quality_score from rejections where drop_stage = 'quality'"
                    ).to_pylist()
    assert len(dropped) == rec["stages"]["cot"]["rows_kept"] == 6 and {r["kind"] for r in dropped} == {"cot"}
    for r in dropped:
        assert r["drop_reason"] == f"quality:below_threshold({round(r['quality_score'], 4):g}<0.5)"
    funnel = [f["stage"] for f in query(run, "select stage from funnel").to_pylist()]
    assert funnel.index("heuristics") < funnel.index("quality") < funnel.index("dedup")
    from dataforge.warehouse import report_queries

    bins = query(run, report_queries()["quality_scores"]).to_pylist()
    assert len(bins) == 18 and {b["quality_model"] for b in bins} == {kept[0]["quality_model"]}
    assert sum(b["kept"] for b in bins) == len(kept) and sum(b["dropped"] for b in bins) == len(dropped)
    assert all(b["dropped"] == 0 for b in bins if b["bin_from"] >= 0.5)  # cut at 0.5

    # resume: same config and model -> skipped; a new cut, or a model retrained in place -> re-run
    cfg = load_config(config)
    assert runner.run_curation_stage(run, cfg, "quality").skipped
    cfg.quality.cut = type(cfg.quality.cut)(top_fraction=0.25)
    result = runner.run_curation_stage(run, cfg, "quality")
    assert not result.skipped and math.ceil(0.25 * result.rows_in) <= result.rows_kept < result.rows_in  # ties kept
    reasons = query(run, "select drop_reason from rejections where drop_stage = 'quality'").column(0).to_pylist()
    assert reasons and all(r.startswith("quality:below_top_fraction(") for r in reasons)
    assert runner.run_curation_stage(run, cfg, "quality").skipped
    retrained = pipeline_model(tmp_path, seed=4)
    model.write_bytes(retrained.read_bytes())
    assert not runner.run_curation_stage(run, cfg, "quality").skipped


def test_auc_interval_and_positive_rate_point():
    y = np.array([1] * 10 + [0] * 30)
    s = np.r_[np.linspace(0.2, 0.9, 10), np.linspace(0.0, 0.6, 30)]
    m = binary_metrics(y, s, 0.95)
    lo, hi = m["roc_auc_ci95"]
    assert lo < m["roc_auc"] < hi and hi - lo > 0.05  # 40 rows: a wide interval
    apr = m["at_positive_rate"]
    assert apr["predicted"] == 10 and apr["precision"] == apr["recall"] and m["recall"] == 0.0


def test_cli_label_names_a_missing_api_key(tmp_path, monkeypatch):
    monkeypatch.delenv("DATAFORGE_QUALITY_UNSET_KEY", raising=False)
    src = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a row"}])
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(yaml.safe_dump({"teacher": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                               "model": "m", "api_key_env": "DATAFORGE_QUALITY_UNSET_KEY"}}))
    r = runner.invoke(app, ["classifier", "label", str(src), "--out", str(tmp_path / "o"), "--config", str(cfg),
                            "--data-root", str(tmp_path / "root")])
    assert r.exit_code == 2 and "DATAFORGE_QUALITY_UNSET_KEY is not set" in r.output
