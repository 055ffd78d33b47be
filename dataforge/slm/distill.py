"""Response-based knowledge distillation for the reference SLM, from the teacher's top-k.

Rows generated with ``teacher.logprobs: k`` carry ``teacher_topk`` (dataforge/teacher/logprobs.py):
the sampled token ids and, per position, the teacher's k most likely ids with float16
log-probabilities. When the student shares the teacher's tokenizer (same vocabulary
fingerprint), each document is packed as

    EOS, tokens of the text before the completion (the prompt part of ``text``, if any),
    the teacher's sampled ids (the completion exactly as generated, no re-tokenization)

with a parallel ``[seq_len, k]`` array of teacher ids and log-probabilities (-1: no teacher
distribution: EOS, prompt tokens, a token without an id). The loss at a position whose next
token has a teacher distribution is

    loss = (1 - w) * CE + w * KL,   KL = sum_{i in top-k} p_i (log p_i - log q_i)

with ``p`` the teacher's top-k renormalised to sum to 1 and ``q`` the student's full softmax
over the whole vocabulary, read at those k ids (not renormalised over them: the term also
pushes the student's mass off the tokens the teacher did not rank). CE is the usual next-token
cross-entropy over every position; KL is averaged over the positions that have a teacher
distribution; ``w = slm.distill_weight``. ``w = 0`` is plain SFT on the same blocks, which is
what the ablation's SFT arm runs, so the two arms differ only in the loss.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataforge.config import SlmConfig
from dataforge.errors import DataforgeError
from dataforge.slm.data import PackedTokens
from dataforge.teacher.logprobs import TeacherVocab, f16_values, vocab_fingerprint

log = logging.getLogger("dataforge.slm")

__all__ = ["DistillData", "DistillError", "distill_loss", "pack_distill", "run_distill_ablation", "train_distill"]


class DistillError(DataforgeError, ValueError):
    """Distillation that cannot run as asked: no top-k in the rows, or another tokenizer."""


@dataclass
class DistillData(PackedTokens):
    """Packed blocks (and the same per-epoch batches) with the teacher's top-k per position
    (``top_ids`` -1 where there is none)."""

    top_ids: np.ndarray  # int32 [n, seq_len, k]
    top_logprobs: np.ndarray  # float16 [n, seq_len, k]
    vocab: str


def _prefix(text: str, completion: str) -> str:
    """The part of a row's ``text`` before its completion (a CoT row's question), else ""."""
    body = completion.strip()
    if body and text.endswith(body):
        return text[: len(text) - len(body)]
    return ""


def check_tokenizer(rows_vocab: str | None, tokenizer: Any) -> None:
    """Refuse, in one line, a student tokenizer that is not the teacher's."""
    if rows_vocab is None:
        raise DistillError("the rows' teacher_topk holds token strings, not ids (no teacher vocabulary was known "
                           "at generation): set teacher.tokenizer, or use the embedded teacher")
    have = vocab_fingerprint(tokenizer)
    if have != rows_vocab:
        raise DistillError(f"the student's tokenizer (vocabulary {have[:12]}) is not the teacher's (vocabulary "
                           f"{rows_vocab[:12]}): distillation needs the teacher's tokenizer")


def pack_distill(rows: Iterable[Mapping[str, Any]], tokenizer: TeacherVocab, seq_len: int, *,
                 max_tokens: int | None = None, with_prefix: bool = True) -> DistillData:
    """Pack rows carrying ``teacher_topk`` into blocks with aligned top-k arrays (module doc).
    Rows without top-k are skipped; none at all, or ids from another vocabulary, is an error."""
    ids_parts: list[np.ndarray] = []
    top_parts: list[np.ndarray] = []
    lp_parts: list[np.ndarray] = []
    eos = int(tokenizer.eos_token_id)
    k = None
    vocab: str | None = None
    docs = produced = 0
    checked = False
    for row in rows:
        col = row.get("teacher_topk")
        if not col or not col.get("tokens"):
            continue
        if not checked:
            check_tokenizer(col.get("vocab"), tokenizer)
            vocab, k, checked = col["vocab"], int(col["k"]), True
        elif col.get("vocab") != vocab:
            raise DistillError(f"row {row.get('id')}: its top-k ids index another vocabulary ({col.get('vocab')})")
        prefix = tokenizer.encode(_prefix(row.get("text") or "", "".join(col["tokens"]))) if with_prefix else []
        doc_ids: list[int] = [eos, *prefix]
        tops: list[list[int]] = [[-1] * k] * (1 + len(prefix))
        lps: list[list[float]] = [[0.0] * k] * (1 + len(prefix))
        for tok, tid, t_ids, t_bits in zip(col["tokens"], col["ids"], col["top_ids"], col["top_logprobs_f16"]):
            t_lps = f16_values(t_bits).astype(np.float32).tolist()
            if tid is None or tid < 0:  # no id for this piece: its bytes, without a teacher target
                extra = tokenizer.encode(tok)
                doc_ids.extend(extra)
                tops.extend([[-1] * k] * len(extra))
                lps.extend([[0.0] * k] * len(extra))
                continue
            doc_ids.append(int(tid))
            t_ids = list(t_ids)[:k] + [-1] * max(0, k - len(t_ids))
            t_lps = [float(v) for v in list(t_lps)[:k]] + [0.0] * max(0, k - len(t_lps))
            tops.append([int(i) if i is not None else -1 for i in t_ids])
            lps.append(t_lps)
        ids_parts.append(np.asarray(doc_ids, np.int32))
        top_parts.append(np.asarray(tops, np.int32).reshape(-1, k))
        lp_parts.append(np.asarray(lps, np.float16).reshape(-1, k))
        docs += 1
        produced += len(doc_ids)
        if max_tokens is not None and produced >= max_tokens:
            break
    if not checked:
        raise DistillError("no row carries teacher_topk: generate with teacher.logprobs set (1..20)")
    stream = np.concatenate(ids_parts)
    tops_all = np.concatenate(top_parts)
    lps_all = np.concatenate(lp_parts)
    if max_tokens is not None:
        stream, tops_all, lps_all = stream[:max_tokens], tops_all[:max_tokens], lps_all[:max_tokens]
    n = len(stream) // seq_len
    cut = n * seq_len
    return DistillData(blocks=stream[:cut].reshape(n, seq_len), top_ids=tops_all[:cut].reshape(n, seq_len, k),
                       top_logprobs=lps_all[:cut].reshape(n, seq_len, k), docs=docs,
                       dropped_tokens=int(len(stream) - cut), vocab=vocab or "")


def topk_kl(logits, top_ids, top_logprobs):
    """Per-position forward KL(renormalised teacher top-k || student softmax at those ids) and
    the mask of positions that have a teacher distribution. ``logits`` [..., V] predict the
    tokens whose teacher top-k is ``top_ids`` / ``top_logprobs`` [..., k]."""
    import torch

    valid = top_ids >= 0
    has = valid.any(dim=-1)
    logq = torch.log_softmax(logits.float(), dim=-1).gather(-1, top_ids.clamp(min=0).long())
    t = top_logprobs.float().masked_fill(~valid, float("-inf"))
    logp = torch.log_softmax(t.masked_fill(~has.unsqueeze(-1), 0.0), dim=-1)  # renormalise over the k
    p = logp.exp().masked_fill(~valid, 0.0)
    kl = (p * (logp.masked_fill(~valid, 0.0) - logq)).sum(-1)
    return kl.masked_fill(~has, 0.0), has


def distill_loss(logits, input_ids, top_ids, top_logprobs, weight: float):
    """``(1 - weight) * CE + weight * KL`` on one batch (module doc); returns (loss, ce, kl)."""
    import torch

    shift = logits[:, :-1]
    ce = torch.nn.functional.cross_entropy(shift.reshape(-1, shift.shape[-1]).float(),
                                           input_ids[:, 1:].reshape(-1).long())
    if weight == 0:
        return ce, ce, torch.zeros((), device=logits.device)
    kl, has = topk_kl(shift, top_ids[:, 1:], top_logprobs[:, 1:])
    kl_mean = kl.sum() / has.sum().clamp(min=1)
    return (1 - weight) * ce + weight * kl_mean, ce, kl_mean


@dataclass
class DistillResult:
    steps: int
    tokens: int
    seconds: float
    train_loss: float | None
    weight: float
    curve: list[dict] = field(default_factory=list)


def train_distill(model, data: DistillData, cfg: SlmConfig, *, weight: float | None = None,
                  max_steps: int | None = None, description: str = "distill") -> DistillResult:
    """Train ``model`` on ``data`` with the mixed loss (``weight`` default ``cfg.distill_weight``;
    0 = SFT), with the reference trainer's optimizer, schedule and batch order."""
    import torch

    from dataforge.slm.train import lr_factor, make_optimizer, pick_device, steps_for

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    w = cfg.distill_weight if weight is None else weight
    device = pick_device(cfg.device)
    total = max_steps if max_steps is not None else steps_for(cfg, len(data))
    warmup = round(cfg.warmup_fraction * total)
    model.to(device)
    model.config.use_cache = False
    model.train()
    opt = make_optimizer(model, cfg, cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total, cfg.min_lr_ratio))
    per_step = cfg.batch_size * cfg.grad_accum * data.seq_len
    curve: list[dict] = []
    window: list[float] = []
    t0 = time.perf_counter()
    for step in range(total):
        step_loss = 0.0
        for micro in range(cfg.grad_accum):
            idx = data.batch_indices(step * cfg.grad_accum + micro, cfg.batch_size, cfg.seed)
            x = torch.from_numpy(data.blocks[idx]).to(device=device, dtype=torch.long)
            ti = torch.from_numpy(data.top_ids[idx]).to(device)
            tl = torch.from_numpy(data.top_logprobs[idx].astype(np.float32)).to(device)
            logits = model(input_ids=x).logits
            loss, _, _ = distill_loss(logits, x, ti, tl, w)
            (loss / cfg.grad_accum).backward()
            step_loss += float(loss.detach()) / cfg.grad_accum
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        window.append(step_loss)
        done = step + 1
        if done % cfg.log_every == 0 or done == total:
            curve.append({"step": done, "tokens": done * per_step, "loss": sum(window) / len(window)})
            window = []
    model.config.use_cache = True
    model.eval()
    return DistillResult(steps=total, tokens=total * per_step, seconds=time.perf_counter() - t0,
                         train_loss=curve[-1]["loss"] if curve else None, weight=w, curve=curve)


def heldout_ce(model, data: DistillData, batch_size: int = 16) -> float:
    """Mean next-token cross-entropy of ``model`` over the held-out blocks (teacher text)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    dev = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            x = torch.from_numpy(data.blocks[i:i + batch_size]).to(device=dev, dtype=torch.long)
            logits = model(input_ids=x).logits[:, :-1].float()
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                   reduction="sum")
            total += float(ce)
            count += x[:, 1:].numel()
    if count == 0:
        raise DistillError("the held-out set has no full block to score")
    return total / count


def interpolated_multiplier(points: list[tuple[float, float]], loss: float, tokens: float) -> float | None:
    """``D_sft / D`` read off the measured SFT points themselves (log-linear in D between the two
    budgets whose losses bracket ``loss``): a check on the power-law fit, which a few tiny runs
    can bend. None when no pair of neighbouring points brackets ``loss``."""
    pts = sorted(points)
    for (d0, l0), (d1, l1) in itertools.pairwise(pts):
        if min(l0, l1) <= loss <= max(l0, l1) and l0 != l1:
            f = (l0 - loss) / (l0 - l1)
            return float(math.exp(math.log(d0) + f * (math.log(d1) - math.log(d0))) / tokens)
    return None


def run_distill_ablation(train_rows: list[Mapping[str, Any]], heldout_rows: list[Mapping[str, Any]],
                         tokenizer: TeacherVocab, cfg: SlmConfig, out_dir: str | Path | None = None, *,
                         budgets: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0), steps: int | None = None,
                         on_arm=None) -> dict:
    """SFT versus distillation at equal tokens: a student with the teacher's tokenizer is
    trained on the same blocks with ``w = 0`` (SFT, at several budgets ``m x D`` for the
    power-law fit) and with ``w = cfg.distill_weight`` (at ``D``); held-out CE on the teacher's
    held-out generations. The distillation arm's *effective data multiplier* is
    ``D_sft / D`` where the fitted SFT curve reaches the distillation arm's loss."""
    import json

    from dataforge.ablate import effective_multiplier, fit_power_law
    from dataforge.slm.presets import build_model
    from dataforge.slm.train import steps_for

    if len([b for b in budgets if b > 0]) < 3 or 1.0 not in budgets:
        raise ValueError("budgets: three or more positive multiples of D, including 1")
    data = pack_distill(train_rows, tokenizer, cfg.seq_len)
    held = pack_distill(heldout_rows, tokenizer, cfg.seq_len)
    if len(data) == 0:
        raise DistillError(f"the training rows make no block of {cfg.seq_len} tokens")
    base_steps = steps or cfg.max_steps or steps_for(cfg, len(data))
    arms: dict[str, dict] = {}

    def arm(name: str, weight: float, n_steps: int) -> dict:
        model = build_model(cfg.preset, len(tokenizer), cfg.seed, tokenizer.eos_token_id, max_positions=cfg.seq_len)
        res = train_distill(model, data, cfg, weight=weight, max_steps=n_steps, description=name)
        a = {"weight": weight, "steps": res.steps, "tokens": res.tokens, "train_loss": res.train_loss,
             "heldout": heldout_ce(model, held, cfg.score_batch_size), "seconds": res.seconds}
        arms[name] = a
        if on_arm is not None:
            on_arm(name, a)
        return a

    d = arm("distill", cfg.distill_weight, base_steps)
    points = []
    for m in sorted(budgets):
        n = max(1, round(base_steps * m))
        a = arm("sft" if m == 1.0 else f"sft_x{m:g}", 0.0, n)
        points.append((a["tokens"], a["heldout"]))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    fit = fit_power_law(xs, ys)
    eff = effective_multiplier(fit, d["heldout"], d["tokens"], (min(xs), max(xs)))
    interp = interpolated_multiplier(points, d["heldout"], d["tokens"])
    report = {"token_budget": d["tokens"], "interpolated_multiplier": interp, "blocks": len(data), "heldout_blocks": len(held), "docs": data.docs,
              "k": int(data.top_ids.shape[-1]), "distill_weight": cfg.distill_weight, "vocab": data.vocab,
              "arms": arms, "fit": fit.as_dict(), "distill_loss": d["heldout"], "sft_loss": arms["sft"]["heldout"],
              **{k: (v if not (isinstance(v, float) and math.isinf(v)) else "inf") for k, v in eff.items()}}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "distill_report.json").write_text(json.dumps(report, indent=2))
    return report


def read_topk_rows(path: str | Path) -> list[dict]:
    """Rows of a Parquet file (a stage's kept shard or an export with ``export.distill``) that
    carry ``teacher_topk``; a one-line error when the file has no such column."""
    import pyarrow.parquet as pq

    p = Path(path)
    if p.suffix.lower() != ".parquet" or not p.is_file():
        raise DistillError(f"{p}: distillation reads a .parquet file with a teacher_topk column")
    cols = pq.read_schema(p).names
    if "teacher_topk" not in cols:
        raise DistillError(f"{p}: no teacher_topk column: generate with teacher.logprobs and export with "
                           "export.distill (or pass a stage's kept shard)")
    keep = [c for c in ("id", "text", "teacher_topk") if c in cols]
    return [r for r in pq.read_table(p, columns=keep).to_pylist() if r.get("teacher_topk")]


def load_vocab(path: str | Path | None) -> TeacherVocab:
    """The teacher's (and student's) vocabulary: a ``.gguf`` or a ``tokenizer.json``; default
    the embedded teacher's GGUF."""
    if path is None:
        from dataforge.teacher.local import find_gguf

        return TeacherVocab.from_gguf(find_gguf())
    p = Path(path)
    if not p.is_file():
        raise DistillError(f"{p}: no such tokenizer file (a .gguf or a tokenizer.json)")
    return TeacherVocab.from_gguf(p) if p.suffix.lower() == ".gguf" else TeacherVocab.from_tokenizer_json(p)
