"""The ablation: the E + B/D^beta fit, the effective data multiplier, the report, the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from dataforge.ablate import PowerLawFit, effective_multiplier, fit_power_law, run_ablation
from dataforge.cli import app
from dataforge.config import SlmConfig

runner = CliRunner()


def test_fit_recovers_a_known_curve():
    D = np.array([1e4, 2e4, 4e4, 8e4, 1.6e5])
    L = 2.0 + 50.0 / D ** 0.3
    fit = fit_power_law(D, L)
    assert fit.E == pytest.approx(2.0, abs=0.02)
    assert fit.beta == pytest.approx(0.3, abs=0.01)
    assert fit.rmse < 1e-3
    np.testing.assert_allclose(fit.loss(D), L, atol=2e-3)
    # the inverse: tokens for a loss
    assert fit.tokens_for(float(fit.loss(3e4))) == pytest.approx(3e4, rel=1e-6)


def test_fit_with_noise_and_its_limits():
    rng = np.random.default_rng(0)
    D = np.array([5e3, 1e4, 2e4, 4e4])
    L = 3.0 + 20.0 / D ** 0.25 + rng.normal(0, 0.005, 4)
    fit = fit_power_law(D, L)
    assert np.all(np.diff(fit.loss(D)) < 0)  # decreasing in D
    assert fit.E >= 0 and fit.B > 0
    with pytest.raises(ValueError, match="three or more"):
        fit_power_law([1e3, 2e3], [5.0, 4.0])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([0, 1e3, 2e3], [5.0, 4.0, 3.0])


def test_effective_multiplier():
    fit = PowerLawFit(E=2.0, B=100.0, beta=0.5, rmse=0.0)
    # L = 2 + 100/sqrt(D): at D=10,000 L=3; a selection at L=2.5 is worth 40,000 random tokens
    m = effective_multiplier(fit, 2.5, 10_000, (5_000, 80_000))
    assert m["effective_tokens"] == pytest.approx(40_000)
    assert m["multiplier"] == pytest.approx(4.0) and not m["extrapolated"]
    assert effective_multiplier(fit, 2.1, 10_000, (5_000, 80_000))["extrapolated"]
    below = effective_multiplier(fit, 1.9, 10_000, (5_000, 80_000))
    assert below["below_floor"] and math.isinf(below["multiplier"])


def texts(kind: str, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    if kind == "math":
        return [f"{a} + {b} = {a + b}. so the answer is {a + b}." for a, b in rng.integers(1, 50, size=(n, 2))]
    words = "river castle poem violin mountain senate harbor novel garden winter".split()
    return [" ".join(rng.choice(words, size=12)) for _ in range(n)]


CFG = SlmConfig(preset="tiny", vocab_size=500, seq_len=32, batch_size=4, max_steps=8, lr=3e-3, log_every=2,
                checkpoint_every=0)


def test_run_ablation_writes_the_report(tmp_path):
    pool = texts("math", 60, 0) + texts("other", 180, 1)
    selection = pool[:60]
    heldout = {"math_test": texts("math", 30, 2)}
    rep = run_ablation(pool, selection, heldout, CFG, tmp_path, budgets=(0.5, 1, 2))
    arms = rep["arms"]
    assert list(arms) == ["selection", "random_subset", "random_x0.5", "whole_pool", "random_x2"]
    assert arms["selection"]["tokens"] == arms["random_subset"]["tokens"] == arms["whole_pool"]["tokens"]
    assert arms["random_x2"]["tokens"] == 2 * arms["whole_pool"]["tokens"]
    assert arms["random_subset"]["rows"] == 60
    # each arm reads only what its budget needs: twice the budget, (about) twice the documents
    assert 0 < arms["whole_pool"]["docs_read"] < arms["random_x2"]["docs_read"] <= 240
    t = rep["targets"]["math_test"]
    # the selection is the held-out set's own kind of text: at the same budget it must beat the
    # random subset (a quarter math) and be worth more than its own tokens of random pool data
    assert t["selection_loss"] < t["random_subset_loss"] - 0.1, t
    assert t["multiplier"] > 1 and t["effective_tokens"] > arms["selection"]["tokens"]
    assert t["whole_pool_loss"] == arms["whole_pool"]["heldout"]["math_test"]
    assert [p["tokens"] for p in t["points"]] == [arms[n]["tokens"] for n in ("random_x0.5", "whole_pool", "random_x2")]
    fit = PowerLawFit(**t["fit"])
    if math.isfinite(t["effective_tokens"]):
        assert fit.loss(t["effective_tokens"]) == pytest.approx(t["selection_loss"], rel=1e-6)
        assert t["multiplier"] == pytest.approx(t["effective_tokens"] / arms["selection"]["tokens"])
    md = (tmp_path / "report.md").read_text()
    assert "Effective data multiplier on `math_test`" in md and "| random_subset | 60 |" in md
    # the headline states the multiplier with the fitted curve and its points
    assert f"{t['multiplier']:.2f}×" in md and f"D^{t['fit']['beta']:.3f}" in md
    assert all(f"({p['tokens']:,}, {p['loss']:.4f})" in md for p in t["points"])
    assert json.loads((tmp_path / "report.json").read_text())["token_budget"] == arms["selection"]["tokens"]
    png = (tmp_path / "loss_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    with pytest.raises(ValueError, match="three or more"):
        run_ablation(pool, selection, heldout, CFG, tmp_path / "x", budgets=(1, 2))


def test_ablate_command(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool_rows = texts("math", 40, 3) + texts("other", 80, 4)
    pool.write_text("".join(json.dumps({"body": t}) + "\n" for t in pool_rows))
    sel = tmp_path / "sel.jsonl"
    sel.write_text("".join(json.dumps({"body": t}) + "\n" for t in pool_rows[:40]))
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"solution": t}) + "\n" for t in texts("math", 20, 5)))
    cfg = tmp_path / "p.yaml"
    cfg.write_text("slm:\n  preset: tiny\n  vocab_size: 500\n  seq_len: 32\n  batch_size: 4\n  checkpoint_every: 0\n")
    out = tmp_path / "abl"
    r = runner.invoke(app, ["ablate", str(pool), "--selected", str(sel), "--heldout", str(held), "--heldout-column",
                            "solution", "--text-column", "body", "--config", str(cfg), "--steps", "4",
                            "--budgets", "0.5,1,2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "held: selection loss" in r.output and "effective data multiplier" in r.output
    assert (out / "report.md").exists() and (out / "loss_curves.png").exists()

    r = runner.invoke(app, ["ablate", str(pool), "--heldout", str(held), "--out", str(out)])
    assert r.exit_code == 2 and "exactly one of --selected" in r.output
    r = runner.invoke(app, ["ablate", str(pool), "--selected", str(sel), "--heldout", str(held), "--out", str(out),
                            "--budgets", "a,b"])
    assert r.exit_code == 2 and "--budgets" in r.output


def test_report_states_floor_and_extrapolation():
    from dataforge.ablate import format_multiplier

    assert format_multiplier({"below_floor": True, "extrapolated": True, "multiplier": math.inf}).startswith("∞")
    assert format_multiplier({"below_floor": False, "extrapolated": True, "multiplier": 3.0}) == \
        "3.00× (extrapolated beyond the fitted budgets)"
    assert format_multiplier({"below_floor": False, "extrapolated": False, "multiplier": 1.5}) == "1.50×"


def test_ablate_command_selects_with_color_first(tmp_path):
    pool_rows = texts("math", 30, 6) + texts("other", 90, 7)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in pool_rows))
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts("math", 60, 8)))
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts("math", 20, 9)))
    cfg = tmp_path / "p.yaml"
    cfg.write_text("slm:\n  preset: tiny\n  vocab_size: 500\n  seq_len: 32\n  batch_size: 4\n  lr: 0.003\n"
                   "  checkpoint_every: 0\ncolor:\n  preset: tiny\n  prior_rows: 120\n  prior_steps: 60\n"
                   "  cond_steps: 20\n")
    out = tmp_path / "abl"
    r = runner.invoke(app, ["ablate", str(pool), "--target", str(target), "--heldout", str(held), "--tau", "4",
                            "--config", str(cfg), "--steps", "4", "--budgets", "0.5,1,2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "CoLoR-Filter kept 30 of 120 rows (tau 4)" in r.output
    import pyarrow.parquet as pq

    kept = pq.read_table(out / "color" / "kept.parquet")
    assert {"color_prior_loss", "color_cond_loss", "color_score"} <= set(kept.column_names)
    assert sum("+" in t for t in kept.column("text").to_pylist()) >= 27  # the math rows were chosen
    rep = json.loads((out / "report.json").read_text())
    assert rep["selection_rows"] == 30 and rep["pool_rows"] == 120


def test_ablate_help():
    r = runner.invoke(app, ["ablate", "--help"])
    assert r.exit_code == 0 and "effective data" in r.output
