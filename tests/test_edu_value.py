"""The educational-value model (issue 11, part 4): a rating model (expected rating 0..5) applied
by the quality stage to textbook rows only, with FineWeb-Edu's cut; the recipe for teacher
labels; the committed card's rater check. No teacher: the ratings here are built by the test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from fake_openai import FakeOpenAI
from teacher_fixtures import KEY_ENV, fake_teacher_cfg
from typer.testing import CliRunner

from dataforge.cli import app
from dataforge.config import ConfigError, parse_config
from dataforge.curate.classifier import Labelled, TrainParams, load_recipe, train_classifier
from dataforge.curate.quality import (
    apply_quality_stage,
    load_quality_model,
    normalize_text_reference,
)

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

TINY = {"dim": 16, "bucket": 20_000, "epoch": 25, "lr": 0.5, "cutoff": 500, "valid_fraction": 0.2, "seed": 1}
COMMON = ["the", "a", "of", "and", "to", "in", "is", "it", "this", "that", "we", "you"]
# three levels of a 0..5 rubric, each with its own words
LEVELS = {
    0: ["lol", "subscribe", "click", "dude", "haha", "gonna", "likes", "follow", "vibes", "omg"],
    2: ["news", "today", "people", "city", "price", "report", "season", "team", "weather", "market"],
    5: ["theorem", "proof", "derivative", "enzyme", "photosynthesis", "equation", "exercise", "integral",
        "molecule", "hypothesis"],
}


def texts_of(level: int, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ws = list(rng.choice(LEVELS[level], 7)) + list(rng.choice(COMMON, 9))
        rng.shuffle(ws)
        out.append(" ".join(ws).capitalize() + f". Part {i}.")
    return out


@pytest.fixture(scope="module")
def rating_model(tmp_path_factory) -> Path:
    """A rating model (labels 0, 2, 5) trained on ratings the test assigns by vocabulary."""
    texts, labels = [], []
    for level, seed in ((0, 1), (2, 2), (5, 3)):
        texts += texts_of(level, 60, seed)
        labels += [level] * 60
    out = tmp_path_factory.mktemp("edu")
    card = train_classifier(Labelled(texts, np.array(labels), "rating", []), TrainParams(**TINY), out / "m",
                            "edu_tiny")
    assert card["kind"] == "rating" and card["metrics"]["held_out"]["positive_from"] == 3
    return out / "m" / "model.ftz"


def mixed_table() -> pa.Table:
    """Textbook rows of the top and bottom levels, and CoT rows whose text is chatter (which a
    rating model would score low and the cut would drop, if it scored them)."""
    good, bad = texts_of(5, 6, 41), texts_of(0, 6, 42)
    cot = texts_of(0, 5, 43)
    rows = ([{"id": f"tg{i}", "kind": "textbook", "text": t} for i, t in enumerate(good)]
            + [{"id": f"tb{i}", "kind": "textbook", "text": t} for i, t in enumerate(bad)]
            + [{"id": f"c{i}", "kind": "cot", "text": t} for i, t in enumerate(cot)])
    return pa.Table.from_pylist(rows)


def test_quality_stage_applies_a_rating_model_to_textbooks_only(rating_model):
    table = mixed_table()
    cfg = parse_config({"quality": {"enabled": True, "model": str(rating_model), "cut": {"threshold": 3},
                                    "apply_to": ["textbook"]}})
    kept, rejected = apply_quality_stage(table, cfg)
    assert kept.num_rows + rejected.num_rows == table.num_rows
    model = load_quality_model(rating_model)
    assert model.kind == "rating" and model.max_score == 5

    rows = {r["id"]: r for r in kept.to_pylist() + rejected.to_pylist()}
    for i, t in enumerate(table.column("text").to_pylist()):
        r = rows[table.column("id")[i].as_py()]
        if r["kind"] == "textbook":
            # the expected rating sum_r r * p(r), the same as a per-row reference call
            ref = model.predict_line_reference(normalize_text_reference(t))
            assert r["quality_score"] == pytest.approx(ref, abs=1e-6) and 0 <= r["quality_score"] <= 5
            assert r["quality_model"] == model.tag
        else:
            assert r["quality_score"] is None and r["quality_model"] is None

    # the cut: rating >= 3 kept; the chatter textbooks dropped with the score in the reason
    kept_ids = set(kept.column("id").to_pylist())
    assert {f"tg{i}" for i in range(6)} <= kept_ids
    assert set(rejected.column("id").to_pylist()) == {f"tb{i}" for i in range(6)}
    assert all(s >= 3 for s in kept.column("quality_score").to_pylist() if s is not None)
    for r in rejected.to_pylist():
        assert r["drop_stage"] == "quality" and r["kind"] == "textbook"
        assert r["drop_reason"] == f"quality:below_threshold({round(r['quality_score'], 4):g}<3)"
    # CoT rows pass unscored, although scoring them would have cut them
    cot = [r for r in kept.to_pylist() if r["kind"] == "cot"]
    assert len(cot) == 5
    cot_scores = [model.predict_line_reference(normalize_text_reference(r["text"])) for r in cot]
    assert max(cot_scores) < 3


def test_rating_cut_is_bounded_by_the_rating_scale_and_top_fraction_works(rating_model):
    table = mixed_table()
    with pytest.raises(ConfigError, match=r"quality\.cut\.threshold: Input should be less than or equal to 5"):
        parse_config({"quality": {"enabled": True, "model": str(rating_model), "cut": {"threshold": 5.5}}})
    # FineWeb-Edu's own cut, int(round(score)) >= 3, is threshold 2.5 on the expected rating
    cfg = parse_config({"quality": {"enabled": True, "model": str(rating_model), "cut": {"threshold": 2.5},
                                    "apply_to": ["textbook"]}})
    kept, _ = apply_quality_stage(table, cfg)
    assert all(s >= 2.5 for s in kept.column("quality_score").to_pylist() if s is not None)
    cfg = parse_config({"quality": {"enabled": True, "model": str(rating_model), "cut": {"top_fraction": 0.5},
                                    "apply_to": ["textbook"]}})
    kept, rejected = apply_quality_stage(table, cfg)
    # half of the 12 scored textbook rows stay (the 6 good ones); the CoT rows are not counted
    assert sorted(kept.filter(pc.equal(kept.column("kind"), "textbook")).column("id").to_pylist()) == [
        f"tg{i}" for i in range(6)]
    assert rejected.num_rows == 6 and all(r.startswith("quality:below_top_fraction(")
                                          for r in rejected.column("drop_reason").to_pylist())


def test_classify_command_honours_apply_to_of_a_config(rating_model, tmp_path):
    src = tmp_path / "rows.parquet"
    pq.write_table(mixed_table(), src)
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(yaml.safe_dump({"quality": {"model": str(rating_model), "apply_to": ["textbook"],
                                               "cut": {"threshold": 3}}}))
    r = runner.invoke(app, ["classify", str(src), "--out", str(tmp_path / "out"), "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    kept = pq.read_table(tmp_path / "out" / "kept.parquet")
    rejected = pq.read_table(tmp_path / "out" / "rejected.parquet")
    assert kept.num_rows == 11 and rejected.num_rows == 6
    assert set(rejected.column("kind").to_pylist()) == {"textbook"}


def test_recipe_trains_a_rating_model_from_a_labels_file(tmp_path):
    """The shipped recipe, pointed at a labels file of the same shape as `classifier label`
    writes (text, label 0..5), trains a rating model with its hyperparameters."""
    recipe = REPO / "classifiers" / "recipes" / "educational_value.yaml"
    rec = load_recipe(recipe)
    assert rec.labelled is not None and rec.labelled.kind == "rating" and rec.params.positive_from == 3
    # the recipe's relative labels path, rebuilt under tmp_path
    where = tmp_path / "classifiers" / "recipes"
    where.mkdir(parents=True)
    shutil.copyfile(recipe, where / recipe.name)
    labels_file = (where / rec.labelled.file).resolve()
    labels_file.parent.mkdir(parents=True)
    texts = texts_of(0, 40, 7) + texts_of(2, 40, 8) + texts_of(5, 40, 9)
    pq.write_table(pa.table({"text": texts, "label": pa.array([0] * 40 + [2] * 40 + [5] * 40, pa.int64()),
                             "label_reasoning": ["r"] * 120}), labels_file)
    r = runner.invoke(app, ["classifier", "train", "--recipe", str(where / recipe.name), "--out", str(tmp_path / "m"),
                            "--dim", "16", "--bucket", "20000", "--folds", "0", "--epochs", "20", "--lr", "0.5",
                            "--cutoff", "500"])
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["kind"] == "rating" and card["data"]["label_counts"]["all"] == {"0": 40, "2": 40, "5": 40}
    held = card["metrics"]["held_out"]
    assert held["n"] == 24 and held["n_positive"] == 8 and held["threshold"] == 2.5
    assert held["roc_auc"] > 0.9 and held["mae"] < 1.5  # separable by construction
    assert card["hyperparameters"]["word_ngrams"] == 2 and card["recipe"].endswith("educational_value.yaml")


def test_label_temperature_reaches_the_teacher(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, "sk-test-edu")
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts_of(5, 3, 1)))

    def rate(body: dict) -> str:
        return json.dumps({"reasoning": "ok", "score": 4})

    with FakeOpenAI(responder=rate) as srv:
        cfg = tmp_path / "pipe.yaml"
        cfg.write_text(yaml.safe_dump({"teacher": fake_teacher_cfg(srv).model_dump(mode="json")}))
        for temp, seed, out in (("0", "0", "a"), ("0.7", "1", "b")):
            r = runner.invoke(app, ["classifier", "label", str(src), "--out", str(tmp_path / out), "--config", str(cfg),
                                    "--data-root", str(tmp_path / "root"), "--temperature", temp, "--seed", seed])
            assert r.exit_code == 0, r.output
        sent = [(q["json"]["temperature"], q["json"].get("seed")) for q in srv.requests
                if q["path"].endswith("/chat/completions")]
    # the re-rating is a new request each (not a cache hit of the greedy one)
    assert sorted(set(sent)) == [(0.0, 0), (0.7, 1)] and len(sent) == 6


# --- the committed card -----------------------------------------------------------------------

def test_committed_card_states_the_rater_check():
    card_path = REPO / "classifiers" / "cards" / "educational_value.json"
    card = json.loads(card_path.read_text())
    rq = card["rater_quality"]
    m = rq["measurements"]
    assert card["kind"] == "rating" and card["recipe"].endswith("recipes/educational_value.yaml")
    auc = m["auc_reference_vs_web"]
    assert auc["n_pos"] > 50 and auc["n_neg"] > 50 and 0 <= auc["roc_auc"] <= 1
    assert m["retest"] and all(r["n"] >= 5 and r["kappa_ci95_bootstrap"] for r in m["retest"])
    assert sum(m["distribution"]["all"]["counts"].values()) == m["rated"]
    assert all(len(s["sha256"]) == 64 for s in card["sources"])
    md = (REPO / "classifiers" / "cards" / "educational_value.md").read_text()
    shipped = REPO / "classifiers" / "models" / "educational_value.ftz"
    if rq["fit"]:
        assert card["model"]["shipped"]
    else:  # a rater that cannot rate: said at the top, and no model among the usable ones
        assert not card["model"]["shipped"] and not shipped.exists()
        assert "Do not use this model as a filter" in md.split("\n## ")[0]
        assert "--recipe classifiers/recipes/educational_value.yaml" in card["model"]["why_not_shipped"]
