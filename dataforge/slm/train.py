"""The reference SLM's training loop: a plain PyTorch loop (so its speed stays that of the bare
model — ``benchmarks/bench_slm.py`` measures the gap).

AdamW (no decay on norms), linear warmup then cosine decay to ``lr * min_lr_ratio``, gradient
accumulation, gradient clipping; bf16 autocast on CUDA, fp32 on CPU. A checkpoint (model,
optimizer, schedule, step, curve) is written atomically every ``checkpoint_every`` steps to
``<out>/checkpoint/state.pt``; training started again on the same data and config resumes from
it and ends on the same weights as an uninterrupted run, because the batch of each step is a
function of (seed, step) alone (:meth:`PackedTokens.batch`). The finished model and tokenizer
are written with ``save_pretrained``: ``AutoModelForCausalLM`` / ``AutoTokenizer`` load the
folder as it is.

The data is text (Parquet, JSON lines, a table, a list) or a ``tokens`` export
(:mod:`dataforge.tokens`): then the export's tokenizer is the model's, and a tokenizer given
(or found in a checkpoint) that encodes differently is an error, not a silent mismatch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dataforge.config import SlmConfig
from dataforge.slm.data import PackedTokens, iter_text_batches, open_tokens, pack, pack_tokens
from dataforge.slm.presets import build_model, get_preset
from dataforge.slm.score import heldout_loss
from dataforge.slm.tokenizer import train_tokenizer
from dataforge.tokens import TOKENIZER_COPY, TokenSplit, tokenizer_fingerprint

log = logging.getLogger("dataforge.slm")

CHECKPOINT = "checkpoint"
RESULT = "train_result.json"


@dataclass
class TrainResult:
    out_dir: str | None
    steps: int
    tokens: int
    seconds: float
    tokens_per_second: float
    train_loss: float | None
    parameters: int
    eval: dict[str, dict] = field(default_factory=dict)
    curve: list[dict] = field(default_factory=list)  # {step, tokens, loss, lr} (+ eval_<name>)
    data: dict = field(default_factory=dict)
    resumed_from: int | None = None
    interrupted: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def pick_device(name: str):
    import torch

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device: cuda was asked for but torch sees no GPU")
        return torch.device("cuda")
    return torch.device("cpu")


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def steps_for(cfg: SlmConfig, n_blocks: int) -> int:
    """Optimizer steps: ``max_steps``, or ``max_tokens`` worth, or one pass over the blocks."""
    per_step = cfg.batch_size * cfg.grad_accum
    if cfg.max_steps is not None:
        return cfg.max_steps
    if cfg.max_tokens is not None:
        return max(1, math.ceil(cfg.max_tokens / (per_step * cfg.seq_len)))
    return max(1, math.ceil(n_blocks / per_step))


def make_optimizer(model, cfg: SlmConfig, lr: float):
    import torch

    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95), eps=1e-8)


def _atomic_torch_save(obj, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device=None) -> dict:
    """A training checkpoint, read with ``torch.load(weights_only=True)``: tensors and plain
    containers, numbers and strings only, so a planted file cannot run code (pickle's
    ``__reduce__``). What :func:`train_model` saves is only that (the config as a JSON dict)."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a checkpoint that loads safely (tensors and plain values only): {first}; "
                         "delete it, or pass --no-resume to start over") from None
    if not isinstance(state, dict):
        # a bad file, reported as the CLI reports other bad checkpoints
        raise ValueError(f"{path}: not a training checkpoint (a {type(state).__name__}, not a dict)")  # noqa: TRY004
    return state


def _fingerprint(data: PackedTokens, cfg: SlmConfig, lr: float, total: int, init: str) -> dict:
    return {"data": data.fingerprint(), "blocks": len(data), "config": cfg.model_dump(mode="json"), "lr": lr,
            "steps": total, "init": init}


def train_model(model, data: PackedTokens, cfg: SlmConfig, out_dir: str | Path | None = None, *,
                tokenizer=None, eval_sets: dict[str, list[str]] | None = None, lr: float | None = None,
                max_steps: int | None = None, resume: bool = True, stop_after: int | None = None,
                description: str = "train", init: str = "scratch",
                on_step: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``model`` on ``data`` for ``max_steps`` (default :func:`steps_for`). With an
    ``out_dir``: checkpoints, resume, and the final ``save_pretrained`` (model + ``tokenizer``).
    ``stop_after`` ends the run after that many steps as an interruption would (checkpoint
    written, nothing saved as final). ``eval_sets`` maps a name to held-out texts, scored at the
    end (and every ``eval_every`` steps)."""
    import torch

    from dataforge.progress import progress_bar

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    lr = lr if lr is not None else cfg.lr
    total = max_steps if max_steps is not None else steps_for(cfg, len(data))
    warmup = int(round(cfg.warmup_fraction * total))
    eval_sets = {k: v[: cfg.eval_rows] for k, v in (eval_sets or {}).items()}
    out = Path(out_dir) if out_dir is not None else None
    fp = _fingerprint(data, cfg, lr, total, init)

    model.to(device)
    model.config.use_cache = False
    model.train()
    opt = make_optimizer(model, cfg, lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total, cfg.min_lr_ratio))
    start, curve, elapsed, resumed_from = 0, [], 0.0, None
    ckpt = out / CHECKPOINT / "state.pt" if out is not None else None
    if out is not None and resume and ckpt.exists():
        state = load_checkpoint(ckpt, device)
        if state.get("fingerprint") != fp:
            raise ValueError(f"{ckpt}: this checkpoint was made with other data or settings; "
                             f"train into a new --out folder, or pass --no-resume to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, curve, elapsed = state["step"], state["curve"], state["elapsed"]
        resumed_from = start
        log.info("resuming %s from step %d", out, start)

    def save_checkpoint(step: int) -> None:
        if ckpt is not None:
            _atomic_torch_save({"fingerprint": fp, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "step": step, "curve": curve,
                                "elapsed": elapsed + time.perf_counter() - t0}, ckpt)

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    tokens_per_step = cfg.batch_size * cfg.grad_accum * data.seq_len
    window: list[float] = []
    last = {"loss": float("nan"), "tps": 0.0}
    t0 = time.perf_counter()
    run_tokens = 0
    interrupted = False

    def status() -> str:
        return f"loss {last['loss']:.3f} · {last['tps']:,.0f} tok/s"

    with progress_bar(description, total - start, status=status) as advance:
        for step in range(start, total):
            step_loss = 0.0
            for micro in range(cfg.grad_accum):
                x = torch.from_numpy(data.batch(step * cfg.grad_accum + micro, cfg.batch_size, cfg.seed))
                x = x.to(device=device, dtype=torch.long)
                with autocast:
                    loss = model(input_ids=x, labels=x).loss
                (loss / cfg.grad_accum).backward()
                step_loss += float(loss.detach()) / cfg.grad_accum
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            run_tokens += tokens_per_step
            window.append(step_loss)
            last["loss"] = step_loss
            last["tps"] = run_tokens / max(1e-9, time.perf_counter() - t0)
            done = step + 1
            if done % cfg.log_every == 0 or done == total:
                point = {"step": done, "tokens": done * tokens_per_step, "loss": sum(window) / len(window),
                         "lr": sched.get_last_lr()[0]}
                window = []
                if tokenizer is not None and cfg.eval_every and done % cfg.eval_every == 0 and done != total:
                    for name, texts in eval_sets.items():
                        point[f"eval_{name}"] = heldout_loss(model, tokenizer, texts, cfg.score_batch_size)["loss"]
                curve.append(point)
                if on_step is not None:
                    on_step(point)
            advance()
            if stop_after is not None and done >= stop_after and done < total:
                save_checkpoint(done)
                interrupted = True
                break
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
                save_checkpoint(done)
    seconds = elapsed + time.perf_counter() - t0
    steps_done = done if total > start else start
    result = TrainResult(
        out_dir=str(out) if out else None, steps=steps_done, tokens=steps_done * tokens_per_step, seconds=seconds,
        tokens_per_second=run_tokens / max(1e-9, time.perf_counter() - t0),
        train_loss=curve[-1]["loss"] if curve else None,
        parameters=sum(p.numel() for p in model.parameters()), curve=curve,
        data={"blocks": len(data), "seq_len": data.seq_len, "docs": data.docs, "tokens": data.tokens,
              "dropped_tail_tokens": data.dropped_tokens, "epochs": round(steps_done * cfg.batch_size
                                                                             * cfg.grad_accum / max(1, len(data)), 3)},
        resumed_from=resumed_from, interrupted=interrupted)
    if interrupted:
        return result
    if tokenizer is not None:
        for name, texts in eval_sets.items():
            result.eval[name] = heldout_loss(model, tokenizer, texts, cfg.score_batch_size)
    model.config.use_cache = True
    if out is not None:
        save_pretrained(model, tokenizer, out)
        (out / RESULT).write_text(json.dumps(result.as_dict(), indent=2))
        with open(out / "metrics.jsonl", "w") as f:
            for p in curve:
                f.write(json.dumps(p) + "\n")
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    return result


def save_pretrained(model, tokenizer, out: Path) -> None:
    """The hand-off: safetensors weights, config, generation config and the fast tokenizer."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress lines are enough
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.bos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.eos_token_id
        tokenizer.save_pretrained(out)
    model.save_pretrained(out, safe_serialization=True)


def load_reference(path: str | Path, device: str = "auto"):
    """(model, tokenizer) from a folder written by :func:`train_model` (or any causal LM folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(path)
    if not (path / "config.json").exists():
        raise ValueError(f"{path}: not a trained model folder (no config.json); train one with `dataforge slm train`")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(pick_device(device))
    model.eval()
    return model, tok


def tokens_tokenizer(split: TokenSplit, tokenizer=None, origin: str = "given"):
    """The tokenizer to train on a tokens export with: its copy (``tokens/tokenizer/``) unless
    one is given; either way checked against ``tokens.json`` (fingerprint, EOS id, vocabulary
    size), so ids and model always agree — a ValueError saying how they differ."""
    want = split.meta["tokenizer"]
    if tokenizer is None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        copy = split.folder / TOKENIZER_COPY
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(copy), local_files_only=True)
        except (OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"{copy}: the tokens export's tokenizer copy does not load: {first}") from None
        origin = f"its copy in {copy}"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    have = {"fingerprint": tokenizer_fingerprint(backend) if backend is not None else "(a slow tokenizer)",
            "eos_id": tokenizer.eos_token_id, "vocab_size": len(tokenizer)}
    if (have["fingerprint"] != want["fingerprint"] or have["eos_id"] != split.eos_id
            or have["vocab_size"] < int(split.meta["vocab_size"])):
        raise ValueError(
            f"{split.folder}: the tokens were made with the tokenizer {want['path']} (fingerprint "
            f"{want['fingerprint'][:12]}, EOS id {split.eos_id}, vocabulary {split.meta['vocab_size']}) but the "
            f"trainer's tokenizer ({origin}) differs (fingerprint {have['fingerprint'][:12]}, EOS id "
            f"{have['eos_id']}, vocabulary {have['vocab_size']}): train with the export's tokenizer, or re-export "
            f"with `dataforge export --kinds tokens --tokenizer <yours>`")
    return tokenizer


def prepare(source, cfg: SlmConfig, *, column: str = "text", tokenizer=None, max_steps: int | None = None,
            tokenizer_origin: str = "given"):
    """(tokenizer, packed data, steps) for training on ``source``: trains the BPE on the first
    ``tokenizer_chars`` characters unless a tokenizer is given, and reads only as many tokens
    as the step budget can use (plus one block). A ``tokens`` export as ``source``
    (:func:`~dataforge.slm.data.tokens_source`) brings its ids and its tokenizer
    (:func:`tokens_tokenizer`); ``column`` and ``vocab_size`` do not apply."""
    split = open_tokens(source)
    if split is not None:
        tokenizer = tokens_tokenizer(split, tokenizer, tokenizer_origin)
    elif tokenizer is None:
        vocab = cfg.vocab_size or get_preset(cfg.preset).vocab_size
        tokenizer = train_tokenizer(iter_text_batches(source, column), vocab, max_chars=cfg.tokenizer_chars)
    per_step = cfg.batch_size * cfg.grad_accum * cfg.seq_len
    steps = max_steps or cfg.max_steps or (math.ceil(cfg.max_tokens / per_step) if cfg.max_tokens else None)
    cap = steps * per_step + cfg.seq_len if steps else None
    if split is not None:
        data = pack_tokens(split, cfg.seq_len, max_tokens=cap)
    else:
        data = pack(tokenizer, source, cfg.seq_len, column, max_tokens=cap)
    if len(data) == 0:
        raise ValueError(f"the training data has {data.tokens + data.dropped_tokens} tokens, "
                         f"fewer than one sequence of {cfg.seq_len}")
    return tokenizer, data, steps or steps_for(cfg, len(data))


def train_reference(source, out_dir: str | Path | None, cfg: SlmConfig, *, column: str = "text",
                    eval_sets: dict[str, list[str]] | None = None, tokenizer=None, init_model=None,
                    lr: float | None = None, max_steps: int | None = None, resume: bool = True,
                    stop_after: int | None = None, description: str = "train") -> tuple[object, object, TrainResult]:
    """Tokenizer (trained unless given; a tokens export's own for a tokens ``source``), data, a
    fresh preset model (or ``init_model`` to fine-tune), training; returns (model, tokenizer,
    result)."""
    out = Path(out_dir) if out_dir is not None else None
    origin = "given"
    if tokenizer is None and out is not None and resume and (out / CHECKPOINT / "tokenizer.json").exists():
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(out / CHECKPOINT)
        origin = f"the one {out / CHECKPOINT} resumes with; use a new --out or --no-resume"
    tokenizer, data, steps = prepare(source, cfg, column=column, tokenizer=tokenizer, max_steps=max_steps,
                                     tokenizer_origin=origin)
    if out is not None:
        tokenizer.save_pretrained(out / CHECKPOINT)  # a resumed run must tokenize the same way
    if init_model is None:
        model = build_model(cfg.preset, len(tokenizer), cfg.seed, tokenizer.eos_token_id, max_positions=cfg.seq_len)
        init = "scratch"
    else:
        model = init_model
        init = f"finetune:{sum(float(p.detach().double().sum()) for p in model.parameters()):.6e}"
    result = train_model(model, data, cfg, out, tokenizer=tokenizer, eval_sets=eval_sets, lr=lr, max_steps=steps,
                         resume=resume, stop_after=stop_after, description=description, init=init)
    return model, tokenizer, result
