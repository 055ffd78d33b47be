"""CoLoR-Filter: Conditional Loss Reduction Filtering (Brandfonbrener et al., NeurIPS 2024,
arXiv:2406.10670; reference code ``color-filter-olmo``: ``olmo/score.py``,
``scripts/select_index_np.py``).

Two small reference models: the *prior*, trained on a random sample of the candidate pool, and
the *conditional*, the prior fine-tuned on target-task data. A candidate the target makes more
likely is one worth training on, so each row is scored

    color_score = color_prior_loss - color_cond_loss      (mean token losses)

and the top ``1/tau`` rows by score are kept (``tau`` is the paper's "subset size multiplier":
candidates considered per selected row; its experiments use 7 to 64). Scoring adds the three
columns; the cut (:func:`cut_top`) is a separate cheap step, so re-thresholding never retrains
or rescores.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataforge.config import ColorConfig, PipelineConfig, SlmConfig
from dataforge.records import with_drop

log = logging.getLogger("dataforge.color")

COLUMN_PREFIX = "color_"
STAGE = "color"


@dataclass
class ColorModels:
    prior: object
    conditional: object
    tokenizer: object
    prior_result: object
    cond_result: object


def _slm_for(cfg: ColorConfig, slm: SlmConfig, steps: int, seed: int) -> SlmConfig:
    return slm.model_copy(update={"preset": cfg.preset, "max_steps": steps, "max_tokens": None, "seed": seed,
                                  "checkpoint_every": slm.checkpoint_every})


def train_color_models(pool_texts: list[str], target_texts: list[str], cfg: ColorConfig, slm: SlmConfig,
                       seed: int = 0, models_dir: str | Path | None = None) -> ColorModels:
    """Train the prior on a random sample of ``cfg.prior_rows`` candidates (tokenizer trained
    on that sample plus the target) and fine-tune a copy on the target into the conditional."""
    from dataforge.slm.tokenizer import train_tokenizer
    from dataforge.slm.presets import get_preset
    from dataforge.slm.train import train_reference

    if not target_texts:
        raise ValueError("color: the target set has no rows")
    rng = np.random.default_rng(seed)
    n = len(pool_texts)
    pick = np.sort(rng.choice(n, size=min(cfg.prior_rows, n), replace=False))
    sample = [pool_texts[i] for i in pick]
    target = target_texts[: cfg.target_rows] if cfg.target_rows else list(target_texts)
    vocab = slm.vocab_size or get_preset(cfg.preset).vocab_size
    tokenizer = train_tokenizer([sample, target], vocab, max_chars=slm.tokenizer_chars)
    out = Path(models_dir) if models_dir is not None else None
    prior_cfg = _slm_for(cfg, slm, cfg.prior_steps, seed)
    prior, _, prior_result = train_reference(sample, out / "prior" if out else None, prior_cfg, tokenizer=tokenizer,
                                             description="color prior")
    cond_cfg = _slm_for(cfg, slm, cfg.cond_steps, seed + 1)
    cond, _, cond_result = train_reference(target, out / "conditional" if out else None, cond_cfg,
                                           tokenizer=tokenizer, init_model=copy.deepcopy(prior),
                                           lr=cfg.cond_lr or slm.lr / 2, description="color conditional")
    return ColorModels(prior, cond, tokenizer, prior_result, cond_result)


def score_pool(models: ColorModels, texts: list[str], batch_size: int = 32, max_length: int | None = None
               ) -> dict[str, np.ndarray]:
    """``color_prior_loss``, ``color_cond_loss``, ``color_score`` for every text (NaN when a
    text has no tokens)."""
    from dataforge.progress import progress_bar
    from dataforge.slm.score import score_texts

    out = {}
    for name, model in (("prior", models.prior), ("cond", models.conditional)):
        with progress_bar(f"color score ({name})", len(texts)) as advance:
            def on_batch(rows: int, _tokens: int) -> None:
                for _ in range(rows):
                    advance()
            out[f"color_{name}_loss"], _ = score_texts(model, models.tokenizer, texts, batch_size, max_length,
                                                       on_batch=on_batch)
    out["color_score"] = out["color_prior_loss"] - out["color_cond_loss"]
    return out


def top_mask(scores: np.ndarray, tau: float) -> np.ndarray:
    """Keep the ``ceil(n / tau)`` highest scores (NaN never kept; ties by row order)."""
    n = len(scores)
    keep = np.zeros(n, dtype=bool)
    finite = np.where(np.isnan(scores), -np.inf, scores)
    k = min(int(math.ceil(n / tau)), int(np.count_nonzero(~np.isnan(scores))))
    if k > 0:
        order = np.argsort(-finite, kind="stable")
        keep[order[:k]] = True
    return keep


def cut_top(table: pa.Table, tau: float) -> tuple[pa.Table, pa.Table]:
    """Split a scored table (with ``color_score``) into the top 1/tau and the rest, the rest
    carrying ``drop_stage = color`` and ``drop_reason = color:below_top_1/<tau>`` (or
    ``color:empty`` for a row with no tokens)."""
    scores = table.column("color_score").to_numpy(zero_copy_only=False).astype(np.float64)
    keep = top_mask(scores, tau)
    mask = pa.array(keep)
    rejected = table.filter(pc.invert(mask))
    rej_scores = scores[~keep]
    reasons = np.where(np.isnan(rej_scores), "color:empty", f"color:below_top_1/{tau:g}")
    return table.filter(mask), with_drop(rejected, STAGE, pa.array(reasons.tolist(), pa.string()))


def add_scores(table: pa.Table, scores: dict[str, np.ndarray]) -> pa.Table:
    table = table.drop_columns([c for c in table.column_names if c.startswith(COLUMN_PREFIX)])
    for name in ("color_prior_loss", "color_cond_loss", "color_score"):
        table = table.append_column(pa.field(name, pa.float64()), pa.array(scores[name], pa.float64(),
                                                                           from_pandas=True))
    return table


def load_target(cfg: ColorConfig, resolve=Path) -> list[str]:
    from dataforge.tabular import read_text_table

    if not cfg.target:
        raise ValueError("color.target: required (a .jsonl or .parquet of target text)")
    table, quarantined = read_text_table(resolve(cfg.target), cfg.target_column, keep_columns=False)
    if quarantined:
        log.warning("color.target: %d malformed rows set aside", len(quarantined))
    texts = [t for t in table.column("text").to_pylist() if t]
    return texts[: cfg.target_rows] if cfg.target_rows else texts


def apply_color(table: pa.Table, cfg: ColorConfig, slm: SlmConfig, seed: int = 0, resolve=Path,
                target_texts: list[str] | None = None) -> tuple[pa.Table, pa.Table]:
    """The color stage on a table with a ``text`` column: train, score, keep the top 1/tau."""
    if table.num_rows == 0:
        empty = add_scores(table, {c: np.empty(0) for c in ("color_prior_loss", "color_cond_loss", "color_score")})
        return empty, with_drop(empty, STAGE, [])
    texts = [t or "" for t in table.column("text").to_pylist()]
    target = target_texts if target_texts is not None else load_target(cfg, resolve)
    models_dir = resolve(cfg.models_dir) if cfg.models_dir else None
    models = train_color_models(texts, target, cfg, slm, seed, models_dir)
    scored = add_scores(table, score_pool(models, texts, slm.score_batch_size, slm.seq_len))
    return cut_top(scored, cfg.tau)


def apply_color_stage(table: pa.Table, cfg: PipelineConfig) -> tuple[pa.Table, pa.Table]:
    """The ``color`` stage (dataforge/stages/color.py): the pipeline's color section, its slm section and seed."""
    return apply_color(table, cfg.color, cfg.slm, cfg.seed, cfg.resolve_path)
