"""``dataforge slm train | eval | score``: the reference SLM from the command line.

The commands take any JSON-lines or Parquet file (Parquet is streamed a row group at a time for
training; ``score`` reads through :func:`dataforge.tabular.read_text_table` and writes with
:func:`~dataforge.tabular.write_kept_rejected`). ``--config`` takes the ``slm`` section of a
pipeline YAML; flags override single knobs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from dataforge.cli.common import fail, section

slm_app = typer.Typer(help="The reference small language model: train a Llama preset on your shards, measure its "
                           "held-out loss, score every row by mean token loss.", no_args_is_help=True)

CONFIG_HELP = "Pipeline YAML whose `slm` section sets the defaults (flags override it)"


def slm_config(config: Optional[Path], **overrides):
    """The ``slm`` section of ``config`` (or the defaults) with the non-None ``overrides``; a bad
    value is an error naming the field."""
    from dataforge.config import SlmConfig, load_config

    base = load_config(config).slm if config else SlmConfig()
    data = {**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    if overrides.get("max_steps") is not None:
        data["max_tokens"] = None
    elif overrides.get("max_tokens") is not None:
        data["max_steps"] = None
    return section(SlmConfig, data, {}, "slm")


def read_texts(path: Path, column: str, rows: Optional[int] = None) -> list[str]:
    from dataforge.tabular import read_text_table

    table, quarantined = read_text_table(path, column, keep_columns=False)
    if quarantined:
        typer.echo(f"{path}: {len(quarantined)} malformed rows skipped (see the log)", err=True)
    texts = [t for t in table.column("text").to_pylist() if t]
    return texts[:rows] if rows else texts


@slm_app.command("train")
def train(
    inputs: list[Path] = typer.Argument(..., help="Training text: .parquet shards (streamed) or .jsonl files; or a "
                                        "tokens export (<export>/tokens, or <export>/tokens/<split>) with its tokenizer"),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the model, tokenizer, checkpoint and metrics"),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text"),
    eval_file: Optional[Path] = typer.Option(None, "--eval", help="Held-out .jsonl/.parquet: loss and perplexity"),
    eval_column: Optional[str] = typer.Option(None, "--eval-column", help="Text column of --eval [default: --text-column]"),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    preset: Optional[str] = typer.Option(None, "--preset", help="tiny | small (5M) | medium (20M) | base (125M)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (replaces the config's length)"),
    tokens: Optional[int] = typer.Option(None, "--tokens", help="Token budget (replaces the config's length)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Sequences per micro-batch"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Tokens per packed sequence"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for the init and the batch order"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from <out>/checkpoint when present"),
    fmt: str = typer.Option("text", "--format", help="Summary as text | json"),
) -> None:
    """Train a reference SLM on INPUTS and save it where AutoModelForCausalLM and AutoTokenizer load it.

    Trains a byte-level BPE on the text, packs documents (EOS between them) into --seq-len
    blocks and runs AdamW with warmup and cosine decay. Checkpoints go to <out>/checkpoint;
    running the same command again resumes. Example:
    dataforge slm train shards/*.parquet --out models/ref --preset small --tokens 2000000 --eval test.jsonl
    """
    from dataforge.slm.train import train_reference
    from dataforge.tabular import InputError

    cfg = slm_config(config, preset=preset, max_steps=steps, max_tokens=tokens, batch_size=batch_size,
                     seq_len=seq_len, lr=lr, seed=seed)
    eval_sets = {eval_file.stem: read_texts(eval_file, eval_column or text_column, cfg.eval_rows)} if eval_file else None
    source = inputs[0] if len(inputs) == 1 else list(inputs)
    try:
        _, _, result = train_reference(source, out, cfg, column=text_column, eval_sets=eval_sets, resume=resume)
    except (InputError, ValueError) as e:
        fail(str(e))
    if fmt == "json":
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
        return
    ev = "; ".join(f"{k} loss {v['loss']:.4f} (ppl {v['perplexity']:.2f})" for k, v in result.eval.items())
    typer.echo(f"trained {cfg.preset} ({result.parameters / 1e6:.2f}M params) for {result.steps} steps, "
               f"{result.tokens:,} tokens at {result.tokens_per_second:,.0f} tok/s; train loss "
               f"{result.train_loss:.4f}{'; ' + ev if ev else ''} -> {out}")


@slm_app.command("eval")
def evaluate(
    model: Path = typer.Argument(..., help="A model folder written by `dataforge slm train`"),
    input: Path = typer.Argument(..., help="Held-out text: .jsonl or .parquet"),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text"),
    rows: Optional[int] = typer.Option(None, "--rows", min=1, help="Score only the first N rows"),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Rows per scoring batch"),
    fmt: str = typer.Option("text", "--format", help="Summary as text | json"),
) -> None:
    """Held-out loss and perplexity of MODEL on INPUT (token-weighted mean over rows, each row
    scored on its own after an EOS)."""
    from dataforge.slm.score import heldout_loss
    from dataforge.slm.train import load_reference

    try:
        m, tok = load_reference(model)
        res = heldout_loss(m, tok, read_texts(input, text_column, rows), batch_size)
    except ValueError as e:
        fail(str(e))
    if fmt == "json":
        sys.stdout.write(json.dumps(res) + "\n")
        return
    typer.echo(f"{input}: loss {res['loss']:.4f}, perplexity {res['perplexity']:.2f} over {res['rows']:,} rows, "
               f"{res['tokens']:,} tokens")


@slm_app.command("score")
def score(
    model: Path = typer.Argument(..., help="A model folder written by `dataforge slm train`"),
    input: Path = typer.Argument(..., help="Rows to score: .jsonl or .parquet"),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for kept.parquet (scored), rejected.parquet, quarantine"),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text"),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Rows per scoring batch"),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=2,
                                             help="Tokens scored per row [default: the model's sequence length]"),
) -> None:
    """Add slm_loss (mean token loss) and slm_tokens to every row of INPUT, streamed in batches.

    Rows with no tokens go to rejected.parquet (drop_reason slm:no_tokens); malformed JSON
    lines to quarantine.jsonl."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from dataforge.progress import progress_bar
    from dataforge.records import with_drop
    from dataforge.slm.score import score_batches
    from dataforge.slm.train import load_reference
    from dataforge.tabular import InputError, read_text_table, write_kept_rejected

    try:
        table, quarantined = read_text_table(input, text_column)
        m, tok = load_reference(model)
    except (InputError, ValueError) as e:
        fail(str(e))
    texts = table.column("text").to_pylist()
    chunk = max(batch_size * 16, 512)
    losses, counts = [], []
    with progress_bar("slm score", table.num_rows) as advance:
        def on_batch(rows: int, _tokens: int) -> None:
            for _ in range(rows):
                advance()
        for lo, n in score_batches(m, tok, (texts[i:i + chunk] for i in range(0, len(texts), chunk)), batch_size,
                                   max_length, on_batch):
            losses.append(lo)
            counts.append(n)
    loss = np.concatenate(losses) if losses else np.empty(0)
    n_tok = np.concatenate(counts) if counts else np.empty(0, np.int64)
    table = table.append_column("slm_loss", pa.array(loss, pa.float64(), from_pandas=True))
    table = table.append_column("slm_tokens", pa.array(n_tok, pa.int64()))
    ok = pa.array(n_tok > 0)
    rejected = table.filter(pc.invert(ok))
    summary = write_kept_rejected(out, table.filter(ok), with_drop(rejected, "slm_score",
                                                                   ["slm:no_tokens"] * rejected.num_rows),
                                  quarantined, text_column)
    mean = float(np.nanmean(loss)) if np.any(n_tok > 0) else float("nan")
    typer.echo(f"scored {summary['kept']:,} rows (mean loss {mean:.4f}, {int(n_tok.sum()):,} tokens), "
               f"{summary['rejected']:,} without tokens, {summary['quarantined']:,} quarantined -> {out}")
