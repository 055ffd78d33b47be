"""``dataforge ablate``: prove a selection beats random data with the reference SLM
(library: :mod:`dataforge.ablate`; torch loads only when the command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dataforge.cli.common import fail
from dataforge.cli.slm import read_texts, slm_config


def ablate_command(
    pool: Path = typer.Argument(..., help="The candidate pool: .jsonl or .parquet"),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: report.md, report.json, loss_curves.png, models/"),
    heldout: list[Path] = typer.Option(..., "--heldout", help="Target held-out set(s), .jsonl/.parquet (repeatable)"),
    text_column: str = typer.Option("text", "--text-column", help="Text column of the pool (and of --selected)"),
    heldout_column: Optional[str] = typer.Option(None, "--heldout-column", help="Text column of --heldout [default: --text-column]"),
    selected: Optional[Path] = typer.Option(None, "--selected", help="The selection (e.g. a stage's kept.parquet)"),
    target: Optional[Path] = typer.Option(None, "--target", help="Target text: select from the pool with CoLoR-Filter first"),
    target_column: Optional[str] = typer.Option(None, "--target-column", help="Text column of --target [default: --text-column]"),
    tau: Optional[float] = typer.Option(None, "--tau", help="CoLoR keeps the top 1/tau [default: color.tau]"),
    config: Optional[Path] = typer.Option(None, "--config", help="Pipeline YAML: its slm (and color) sections"),
    preset: Optional[str] = typer.Option(None, "--preset", help="tiny | small (5M) | medium (20M) | base (125M)"),
    tokens: Optional[int] = typer.Option(None, "--tokens", help="Equal token budget D [default: one pass over the selection]"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Equal budget as optimizer steps"),
    budgets: str = typer.Option("0.5,1,2,4", "--budgets", help="Random-data budgets as multiples of D (>= 3, with 1)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling, init and batch order"),
    distill: bool = typer.Option(False, "--distill", help="SFT versus distillation at equal tokens: the pool and "
                                 "--heldout are Parquet rows with teacher_topk (teacher.logprobs)"),
    teacher_tokenizer: Optional[Path] = typer.Option(None, "--teacher-tokenizer", help="--distill: the teacher's "
                                                     ".gguf or tokenizer.json [default: the embedded teacher's GGUF]"),
) -> None:
    """Train reference models on the selection, a random subset of the same size and the whole
    pool at an equal token budget (each arm reads as many of its rows as the budget needs); report held-out losses and the selection's effective data
    multiplier (random tokens its loss is worth, from a fit of E + B/D^beta over random-data
    runs at several budgets), with a table and a loss-curve plot.

    Give the selection with --selected, or a --target to select with CoLoR-Filter first. Example:
    dataforge ablate pool.jsonl --target gsm8k_train.jsonl --heldout gsm8k_test.jsonl --heldout-column answer --tau 4 --out ablation/
    """
    from dataforge.ablate import format_multiplier, run_ablation
    from dataforge.config import PipelineConfig, load_config
    from dataforge.tabular import InputError, read_text_table, write_kept_rejected

    if distill:
        _distill_ablation(pool, out, heldout, config, preset, tokens, steps, budgets, seed, teacher_tokenizer)
        return
    if (selected is None) == (target is None):
        fail("give exactly one of --selected (a selection to test) or --target (select with CoLoR-Filter)")
    try:
        mults = tuple(float(x) for x in budgets.split(",") if x.strip())
    except ValueError:
        fail(f"--budgets: expected comma-separated numbers, got {budgets!r}")
    cfg = slm_config(config, preset=preset, max_tokens=tokens, max_steps=steps, seed=seed)
    pipeline = load_config(config) if config else PipelineConfig()
    pool_table, quarantined = read_text_table(pool, text_column)
    held = {p.stem: read_texts(p, heldout_column or text_column) for p in heldout}
    pool_texts = [t for t in pool_table.column("text").to_pylist() if t]
    if selected is not None:
        sel_texts = read_texts(selected, text_column)
    else:
        from dataforge.select.color import apply_color

        color = pipeline.color.model_copy(update={"target": str(target), "target_column": target_column or text_column,
                                                  **({"tau": tau} if tau else {}),
                                                  **({"preset": preset} if preset else {})})
        try:
            kept, rejected = apply_color(pool_table, color, cfg, cfg.seed)
        except (InputError, ValueError) as e:
            fail(str(e))
        write_kept_rejected(out / "color", kept, rejected, quarantined, text_column)
        sel_texts = [t for t in kept.column("text").to_pylist() if t]
        typer.echo(f"CoLoR-Filter kept {kept.num_rows:,} of {pool_table.num_rows:,} rows (tau {color.tau:g}) "
                   f"-> {out / 'color'}")
    try:
        report = run_ablation(pool_texts, sel_texts, held, cfg, out, budgets=mults)
    except ValueError as e:
        fail(str(e))
    for name, t in report["targets"].items():
        typer.echo(f"{name}: selection loss {t['selection_loss']:.4f}, random subset {t['random_subset_loss']:.4f}, "
                   f"whole pool {t['whole_pool_loss']:.4f} at {report['token_budget']:,} tokens; effective data "
                   f"multiplier {format_multiplier(t)} -> {out / 'report.md'}")


def _distill_ablation(pool: Path, out: Path, heldout: list[Path], config: Optional[Path], preset: Optional[str],
                      tokens: Optional[int], steps: Optional[int], budgets: str, seed: Optional[int],
                      teacher_tokenizer: Optional[Path]) -> None:
    """``dataforge ablate --distill``: :func:`dataforge.slm.distill.run_distill_ablation`."""
    from dataforge.slm.distill import DistillError, load_vocab, read_topk_rows, run_distill_ablation

    try:
        mults = tuple(float(x) for x in budgets.split(",") if x.strip())
    except ValueError:
        fail(f"--budgets: expected comma-separated numbers, got {budgets!r}")
    cfg = slm_config(config, preset=preset, max_tokens=tokens, max_steps=steps, seed=seed)
    try:
        vocab = load_vocab(teacher_tokenizer)
        train_rows = read_topk_rows(pool)
        held_rows = [r for p in heldout for r in read_topk_rows(p)]
        report = run_distill_ablation(train_rows, held_rows, vocab, cfg, out, budgets=mults)
    except (DistillError, ValueError) as e:
        fail(str(e))
    mult = report["multiplier"]
    interp = report["interpolated_multiplier"]
    typer.echo(f"distillation (w={report['distill_weight']:g}) held-out loss {report['distill_loss']:.4f}, SFT "
               f"{report['sft_loss']:.4f} at {report['token_budget']:,} tokens; effective data multiplier "
               f"{mult if isinstance(mult, str) else format(mult, '.2f')}"
               f"{' (extrapolated)' if report['extrapolated'] else ''}"
               f"{'' if interp is None else f'; between the measured SFT points {interp:.2f}'}"
               f" -> {out / 'distill_report.json'}")
