"""The ablation that closes the loop: is the selected data worth more than random data?

Reference models (same preset, tokenizer, seed and schedule) are trained at an equal token
budget ``D`` on (1) the selection, (2) a random subset of the pool with as many rows, and
(3) the whole pool; each is evaluated on the target's held-out set(s). The whole pool is also
trained at several more budgets (default ``0.5, 1, 2, 4 x D``, each run with its own
warmup + cosine schedule) and its held-out loss fitted with the data term of the Chinchilla law,

    L(D) = E + B / D**beta                         (Hoffmann et al. 2022, at fixed N)

The selection's *effective data multiplier* is ``D_random / D`` where ``L(D_random)`` equals
the selection's held-out loss: how many random tokens its tokens are worth (the data-quality
term Q of the SLM survey's L(N, D, Q), made measurable). It is the report's headline, per
held-out target; a multiplier outside the fitted budgets is marked as an extrapolation, and
a selection below the fitted floor E has no finite multiplier.

The fit needs no scipy: for each beta on a fine grid, E and B are ordinary least squares on
``[1, D**-beta]`` (B >= 0, E >= 0 enforced by refitting with the offending term fixed at 0), and
the beta with the smallest squared error wins.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataforge.config import SlmConfig

DEFAULT_BUDGETS = (0.5, 1.0, 2.0, 4.0)


# --- the fit -------------------------------------------------------------------------------

@dataclass
class PowerLawFit:
    E: float
    B: float
    beta: float
    rmse: float

    def loss(self, tokens: float | np.ndarray) -> float | np.ndarray:
        return self.E + self.B / np.power(tokens, self.beta)

    def tokens_for(self, loss: float) -> float:
        """D with L(D) = loss; inf when ``loss`` is at or below the floor E."""
        if loss <= self.E or self.B <= 0:
            return math.inf
        return float((self.B / (loss - self.E)) ** (1.0 / self.beta))

    def as_dict(self) -> dict:
        return {"E": self.E, "B": self.B, "beta": self.beta, "rmse": self.rmse}


def _lsq_nonneg(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares of y on the two columns of X with both coefficients >= 0."""
    best = None
    candidates = [np.linalg.lstsq(X, y, rcond=None)[0]]
    for j in range(2):  # one coefficient held at zero
        c = np.zeros(2)
        col = X[:, j]
        c[j] = max(0.0, float(col @ y / (col @ col)))
        candidates.append(c)
    for c in candidates:
        if np.any(c < 0):
            continue
        sse = float(np.sum((X @ c - y) ** 2))
        if best is None or sse < best[1]:
            best = (c, sse)
    assert best is not None
    return best


def fit_power_law(tokens, losses, betas: np.ndarray | None = None) -> PowerLawFit:
    """Fit ``L = E + B / D**beta`` to three or more (tokens, loss) points."""
    D = np.asarray(tokens, dtype=np.float64)
    L = np.asarray(losses, dtype=np.float64)
    if len(D) < 3 or len(np.unique(D)) < 3:
        raise ValueError("the fit needs losses at three or more different token budgets")
    if np.any(D <= 0) or not np.all(np.isfinite(L)):
        raise ValueError("token budgets must be positive and losses finite")
    betas = np.linspace(0.01, 2.0, 800) if betas is None else betas
    scale = D.max()  # fit on D / scale for conditioning; B is rescaled back below
    best = None
    for beta in betas:
        X = np.column_stack([np.ones_like(D), np.power(D / scale, -beta)])
        (e, b), sse = _lsq_nonneg(X, L)
        if best is None or sse < best[0]:
            best = (sse, e, b, beta)
    sse, e, b, beta = best
    return PowerLawFit(E=float(e), B=float(b * scale ** beta), beta=float(beta), rmse=float(math.sqrt(sse / len(D))))


def effective_multiplier(fit: PowerLawFit, loss: float, tokens: float, fitted_range: tuple[float, float]) -> dict:
    d = fit.tokens_for(loss)
    return {"effective_tokens": d, "multiplier": d / tokens if math.isfinite(d) else math.inf,
            "extrapolated": not (fitted_range[0] <= d <= fitted_range[1]), "below_floor": not math.isfinite(d)}


# --- the runs -----------------------------------------------------------------------------

def _shuffled(texts: list[str], seed: int) -> list[str]:
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order]


def run_ablation(pool: list[str], selection: list[str], heldout: dict[str, list[str]], cfg: SlmConfig,
                 out_dir: str | Path, *, budgets: tuple[float, ...] = DEFAULT_BUDGETS, tokenizer=None,
                 on_arm=None) -> dict:
    """Train every arm, fit the random-data curve, and write ``report.json``, ``report.md`` and
    ``loss_curves.png`` under ``out_dir``. The equal budget D is ``cfg.max_tokens`` /
    ``cfg.max_steps`` or else one pass over the selection. ``on_arm(name, result)`` is called
    after each arm (the benchmark timestamps them)."""
    from dataforge.slm.data import pack
    from dataforge.slm.presets import get_preset
    from dataforge.slm.tokenizer import train_tokenizer
    from dataforge.slm.train import steps_for, train_reference

    if not selection:
        raise ValueError("the selection is empty")
    if len(pool) < len(selection):
        raise ValueError(f"the pool ({len(pool)} rows) is smaller than the selection ({len(selection)} rows)")
    if not heldout or not all(heldout.values()):
        raise ValueError("at least one non-empty held-out set is needed")
    if len([b for b in budgets if b > 0]) < 3 or 1.0 not in budgets:
        raise ValueError("budgets: three or more positive multiples of D, including 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if tokenizer is None:
        vocab = cfg.vocab_size or get_preset(cfg.preset).vocab_size
        tokenizer = train_tokenizer([_shuffled(pool, cfg.seed)], vocab, max_chars=cfg.tokenizer_chars)
    per_step = cfg.batch_size * cfg.grad_accum * cfg.seq_len
    if cfg.max_steps is None and cfg.max_tokens is None:
        steps = steps_for(cfg, len(pack(tokenizer, selection, cfg.seq_len)))
    else:
        steps = steps_for(cfg, 1)
    base = cfg.model_copy(update={"max_steps": None, "max_tokens": None})
    rng = np.random.default_rng(cfg.seed)
    subset = [pool[i] for i in np.sort(rng.choice(len(pool), size=len(selection), replace=False))]
    whole = _shuffled(pool, cfg.seed + 1)
    arms: dict[str, dict] = {}

    def train_arm(name: str, texts: list[str], n_steps: int) -> dict:
        t0 = time.perf_counter()
        _, _, res = train_reference(_shuffled(texts, cfg.seed + 2), out / "models" / name, base, tokenizer=tokenizer,
                                    eval_sets=heldout, max_steps=n_steps, description=f"ablate {name}")
        arm = {"rows": len(texts), "docs_read": res.data["docs"], "steps": res.steps, "tokens": res.tokens,
               "epochs": res.data["epochs"],
               "train_loss": res.train_loss, "heldout": {k: v["loss"] for k, v in res.eval.items()},
               "perplexity": {k: v["perplexity"] for k, v in res.eval.items()}, "curve": res.curve,
               "seconds": time.perf_counter() - t0}
        arms[name] = arm
        if on_arm is not None:
            on_arm(name, arm)
        return arm

    train_arm("selection", selection, steps)
    train_arm("random_subset", subset, steps)
    curve_points: list[dict] = []
    for m in sorted(budgets):
        n = max(1, int(round(steps * m)))
        name = "whole_pool" if m == 1.0 else f"random_x{m:g}"
        arm = train_arm(name, whole, n)
        curve_points.append({"budget": m, "name": name, "tokens": arm["tokens"], "heldout": arm["heldout"]})
    d_sel = arms["selection"]["tokens"]
    targets = {}
    for target in heldout:
        xs = [p["tokens"] for p in curve_points]
        ys = [p["heldout"][target] for p in curve_points]
        fit = fit_power_law(xs, ys)
        eff = effective_multiplier(fit, arms["selection"]["heldout"][target], d_sel, (min(xs), max(xs)))
        eff_subset = effective_multiplier(fit, arms["random_subset"]["heldout"][target], d_sel, (min(xs), max(xs)))
        targets[target] = {"fit": fit.as_dict(), "points": [{"tokens": x, "loss": y} for x, y in zip(xs, ys)],
                           "selection_loss": arms["selection"]["heldout"][target],
                           "random_subset_loss": arms["random_subset"]["heldout"][target],
                           "whole_pool_loss": arms["whole_pool"]["heldout"][target],
                           **eff, "random_subset_multiplier": eff_subset["multiplier"]}
    report = {"preset": cfg.preset, "seq_len": cfg.seq_len, "batch_tokens": per_step, "token_budget": d_sel,
              "budgets": sorted(budgets), "pool_rows": len(pool), "selection_rows": len(selection),
              "seed": cfg.seed, "arms": arms, "targets": targets, "seconds": time.perf_counter() - t_start}
    write_report(report, out)
    return report


# --- the report ----------------------------------------------------------------------------

def format_multiplier(t: dict) -> str:
    if t["below_floor"]:
        return "∞ (below the fitted floor E)"
    note = " (extrapolated beyond the fitted budgets)" if t["extrapolated"] else ""
    return f"{t['multiplier']:.2f}×{note}"


def write_report(report: dict, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    plot_curves(report, out / "loss_curves.png")
    lines = ["# Ablation: selection vs random data", ""]
    for name, t in report["targets"].items():
        lines.append(f"**Effective data multiplier on `{name}`: {format_multiplier(t)}** — the selection's "
                     f"{report['token_budget']:,} tokens reach the held-out loss ({t['selection_loss']:.4f}) that "
                     f"random pool data needs {t['effective_tokens']:,.0f} tokens for, by the fitted curve "
                     f"L(D) = {t['fit']['E']:.4f} + {t['fit']['B']:.4g} / D^{t['fit']['beta']:.3f} "
                     f"(rmse {t['fit']['rmse']:.4f}). The random subset's multiplier is "
                     f"{t['random_subset_multiplier']:.2f}×.")
        lines.append("")
    lines += [f"Preset `{report['preset']}`, sequence length {report['seq_len']}, {report['batch_tokens']:,} tokens "
              f"per step, seed {report['seed']}; pool {report['pool_rows']:,} rows, selection "
              f"{report['selection_rows']:,} rows; equal budget D = {report['token_budget']:,} tokens.", ""]
    names = list(report["targets"])
    lines.append("| arm | rows | docs read | train tokens | epochs | train loss | "
                 + " | ".join(f"held-out loss `{n}`" for n in names) + " |")
    lines.append("|---|---:|---:|---:|---:|---:|" + "---:|" * len(names))
    for arm, a in report["arms"].items():
        lines.append(f"| {arm} | {a['rows']:,} | {a.get('docs_read', 0):,} | {a['tokens']:,} | {a['epochs']} | "
                     f"{a['train_loss']:.4f} | "
                     + " | ".join(f"{a['heldout'][n]:.4f}" for n in names) + " |")
    lines += ["", "Random-data curve (whole pool at each budget):", ""]
    for name, t in report["targets"].items():
        pts = ", ".join(f"({p['tokens']:,}, {p['loss']:.4f})" for p in t["points"])
        lines.append(f"- `{name}`: (tokens, loss) = {pts}")
    lines += ["", "![loss curves](loss_curves.png)", ""]
    (out / "report.md").write_text("\n".join(lines))


def plot_curves(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["targets"])
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(6 * (1 + len(names)), 4.5))
    ax = axes[0]
    for arm, a in report["arms"].items():
        if a["curve"]:
            ax.plot([p["tokens"] for p in a["curve"]], [p["loss"] for p in a["curve"]], label=arm)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("training loss")
    ax.set_title("training loss")
    ax.legend(fontsize=8)
    for ax, name in zip(axes[1:], names):
        t = report["targets"][name]
        xs = np.array([p["tokens"] for p in t["points"]], dtype=float)
        ys = [p["loss"] for p in t["points"]]
        hi = max(xs.max(), t["effective_tokens"] if math.isfinite(t["effective_tokens"]) else 0) * 1.3
        grid = np.geomspace(xs.min() / 1.3, hi, 200)
        f = t["fit"]
        ax.plot(grid, f["E"] + f["B"] / grid ** f["beta"], "--", color="gray", label="fit E + B/D^β (random)")
        ax.scatter(xs, ys, color="C0", label="random (whole pool)", zorder=3)
        ax.scatter([report["token_budget"]], [t["selection_loss"]], color="C3", marker="*", s=150,
                   label="selection", zorder=4)
        ax.scatter([report["token_budget"]], [t["random_subset_loss"]], color="C2", marker="s",
                   label="random subset", zorder=4)
        if math.isfinite(t["effective_tokens"]):
            ax.axvline(t["effective_tokens"], color="C3", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("training tokens D")
        ax.set_ylabel(f"held-out loss ({name})")
        ax.set_title(f"{name}: multiplier {format_multiplier(t)}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
