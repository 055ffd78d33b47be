"""CoLoR-Filter: the cut, the scores, the stage, and a small real-data run (tiny preset)."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from dataforge.stages.registry import get_stage
from dataforge.config import ColorConfig, ConfigError, SlmConfig, parse_config
from dataforge.select.color import apply_color, cut_top, top_mask

SLM = SlmConfig(preset="tiny", vocab_size=600, seq_len=48, batch_size=8, lr=3e-3, log_every=5, checkpoint_every=0)


def test_top_mask_keeps_ceil_n_over_tau_best():
    scores = np.array([0.1, 0.9, np.nan, 0.5, 0.7, -0.2, 0.9])
    keep = top_mask(scores, 4)  # ceil(7/4) = 2
    assert keep.tolist() == [False, True, False, False, False, False, True]
    assert top_mask(scores, 2).sum() == 4
    assert not top_mask(np.array([np.nan, np.nan]), 1.5).any()  # empty rows are never kept


def test_cut_top_reasons_and_recut_without_rescoring():
    t = pa.table({"id": list("abcdef"), "text": list("abcdef"),
                  "color_score": [0.3, float("nan"), 0.1, 0.9, -1.0, 0.2]})
    kept, rej = cut_top(t, 3)
    assert kept.column("id").to_pylist() == ["a", "d"]
    reasons = dict(zip(rej.column("id").to_pylist(), rej.column("drop_reason").to_pylist()))
    assert reasons == {"b": "color:empty", "c": "color:below_top_1/3", "e": "color:below_top_1/3",
                       "f": "color:below_top_1/3"}
    assert set(rej.column("drop_stage").to_pylist()) == {"color"}
    kept2, _ = cut_top(pa.concat_tables([kept, rej.drop_columns(["drop_stage", "drop_reason"])]), 1.5)
    assert sorted(kept2.column("id").to_pylist()) == ["a", "c", "d", "f"]


def test_color_config_validation():
    with pytest.raises(ConfigError, match="target: required when color is enabled"):
        parse_config({"color": {"enabled": True}})
    with pytest.raises(ConfigError, match="color.tau"):
        parse_config({"color": {"enabled": True, "target": "t.jsonl", "tau": 0.5}})
    assert ColorConfig().tau == 16  # within the paper's 7..64


def synthetic_pool(n_math: int, n_other: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)

    def math_row() -> str:
        a, b = rng.integers(2, 99, size=2)
        return f"She has {a} apples and buys {b} more, so {a} + {b} = <<{a}+{b}={a + b}>>{a + b}. #### {a + b}"

    words = "river castle poem violin mountain senate harbor novel garden winter festival".split()
    other = [" ".join(rng.choice(words, size=int(rng.integers(8, 20)))).capitalize() + "." for _ in range(n_other)]
    return [math_row() for _ in range(n_math)], other


def test_apply_color_scores_and_selects_target_like_rows():
    math_rows, other = synthetic_pool(150, 450)
    target, _ = synthetic_pool(200, 0, seed=1)
    texts = math_rows + other
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts,
                      "is_math": [True] * len(math_rows) + [False] * len(other)})
    cfg = ColorConfig(tau=4, preset="tiny", prior_rows=300, prior_steps=30, cond_steps=15)
    kept, rej = apply_color(table, cfg, SLM, seed=0, target_texts=target)
    assert kept.num_rows == math.ceil(600 / 4) and kept.num_rows + rej.num_rows == 600
    for t in (kept, rej):
        s = np.array(t.column("color_score").to_pylist())
        d = np.array(t.column("color_prior_loss").to_pylist()) - np.array(t.column("color_cond_loss").to_pylist())
        np.testing.assert_allclose(s, d)
    assert min(kept.column("color_score").to_pylist()) >= max(rej.column("color_score").to_pylist())
    precision = sum(kept.column("is_math").to_pylist()) / kept.num_rows
    assert precision >= 0.9, precision
    assert set(rej.column("drop_reason").to_pylist()) == {"color:below_top_1/4"}


def test_color_is_a_whole_stage_reading_its_target_from_the_config(tmp_path):
    assert get_stage("color").scope == "whole" and get_stage("color").kind == "curation"
    target_rows, _ = synthetic_pool(60, 0, seed=2)
    (tmp_path / "target.jsonl").write_text("".join(json.dumps({"solution": t}) + "\n" for t in target_rows))
    (tmp_path / "p.yaml").write_text("")
    cfg = parse_config({"color": {"enabled": True, "target": "target.jsonl", "target_column": "solution", "tau": 2,
                                  "preset": "tiny", "prior_rows": 50, "prior_steps": 4, "cond_steps": 2},
                        "slm": SLM.model_dump()}, str(tmp_path / "p.yaml"))
    m, o = synthetic_pool(20, 20, seed=3)
    table = pa.table({"id": [str(i) for i in range(40)], "text": m + o})
    kept, rej = get_stage("color").apply(table, cfg)
    assert kept.num_rows == 20 and rej.num_rows == 20
    assert {"color_prior_loss", "color_cond_loss", "color_score"} <= set(kept.column_names)
    # an empty input is answered at once with the output schema (no training)
    ek, er = get_stage("color").apply(table.slice(0, 0), cfg)
    assert ek.num_rows == 0 and "color_score" in ek.column_names and "drop_reason" in er.column_names
    # the stage's hash covers the slm section it trains with
    assert get_stage("color").sections() == ["color", "slm", "seed"]


@pytest.mark.shared_data
def test_color_on_real_math_vs_other_text(shared_data):
    """A small version of benchmarks/bench_color.py: GSM8K/AQuA rationales among Pile,
    CommonsenseQA and CREAK text; target GSM8K train (disjoint rows). Seeds are fixed (data
    sample 5, models 0), so the run is deterministic. The prior and conditional must be
    trained past the steep start of the loss curve: with 30 / 12 steps the tiny models are
    still learning generic statistics, fine-tuning lowers the loss of any English text and
    precision fell to ~0.68; at 150 / 50 steps it is 0.98-1.0 on every seed tried."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_color import MATH, build_data

    pool, target, _ = build_data(shared_data, n_gsm_pool=150, n_target=200, n_aqua=50, n_pile=100, n_csqa=150,
                                 n_creak=150, seed=5)
    pool_src = pool.column("source").to_pylist()
    base_rate = sum(s in MATH for s in pool_src) / len(pool_src)
    assert 0.3 <= base_rate <= 0.4  # 200 math rationales among 600 rows
    cfg = ColorConfig(tau=4, preset="tiny", prior_rows=400, prior_steps=150, cond_steps=50)
    kept, rej = apply_color(pool, cfg, SLM.model_copy(update={"vocab_size": 1024, "seq_len": 64}), seed=0,
                            target_texts=target)
    assert kept.num_rows == 150 and kept.num_rows + rej.num_rows == 600
    src = kept.column("source").to_pylist()
    precision = sum(s in MATH for s in src) / len(src)
    assert precision >= 0.9, (precision, base_rate, {s: src.count(s) for s in set(src)})
    # the unrelated sources score lower on average than the target's own kind (GSM8K)
    score = dict(zip(kept.column("id").to_pylist() + rej.column("id").to_pylist(),
                     kept.column("color_score").to_pylist() + rej.column("color_score").to_pylist()))
    by_src = {s: np.nanmean([v for k, v in score.items() if k.startswith(s + "-")]) for s in set(pool_src)}
    assert by_src["gsm8k"] > max(v for s, v in by_src.items() if s not in MATH), by_src
