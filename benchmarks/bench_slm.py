"""Reference-SLM throughput: our trainer vs a bare PyTorch loop, and scoring, in one run.

Training: the ``small`` (5M) preset, the same batch and sequence length, the same AdamW. *Ours*
is :func:`dataforge.slm.train.train_model` on packed real text (GSM8K solutions and Pile
documents through the trained BPE; random tokens when the shared data is absent), with its
warmup/cosine schedule, gradient clipping, loss logging and batch indexing. *Bare* is the
minimal loop over a random-token tensor: forward with labels, backward, ``opt.step()``,
``zero_grad()``. Both are warmed up once, then run alternately ``--repeats`` times (the order
flips every repeat, so drift in the machine's load falls on both); medians of wall-clock
tokens/s and their ratio are reported, and the same for CPU time (``time.process_time``), which
the other jobs of a shared machine disturb less than wall time. The data loader's share is measured separately (time to fetch and convert one
batch vs one training step), as is tokenize+pack throughput, and so is everything our step does
beyond the bare one (batch fetch, gradient clipping, the scheduler, reading the loss), timed in
isolation on a model with real gradients: a bound on the gap that the machine's load cannot blur.

Scoring: :func:`dataforge.slm.score.score_texts` (length-sorted batches) vs
:func:`score_texts_reference` (one row at a time) on the same rows.

    .venv/bin/python benchmarks/bench_slm.py [--repeats 3] [--steps 15] [--batch-size 16] [--seq-len 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("DATAFORGE_PROGRESS", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dataforge.config import SlmConfig  # noqa: E402
from dataforge.slm.data import PackedTokens, pack  # noqa: E402
from dataforge.slm.presets import build_model  # noqa: E402
from dataforge.slm.score import score_texts, score_texts_reference  # noqa: E402
from dataforge.slm.tokenizer import train_tokenizer  # noqa: E402
from dataforge.slm.train import make_optimizer, train_model  # noqa: E402


def shared_texts() -> list[str] | None:
    root = Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not root.exists():
        return None
    out = []
    with open(root / "gsm8k" / "train.jsonl", encoding="utf-8") as f:
        out += [json.loads(line)["answer"] for line in f if line.strip()]
    with open(root / "web" / "pile_1k.jsonl", encoding="utf-8") as f:
        out += [json.loads(line)["contents"] for line in f if line.strip()]
    return out


def bare_loop(cfg: SlmConfig, vocab: int, eos: int, steps: int) -> tuple[float, float]:
    """(wall, CPU) tokens/s of the minimal loop on random tokens."""
    model = build_model(cfg.preset, vocab, cfg.seed, eos, max_positions=cfg.seq_len)
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (steps, cfg.batch_size, cfg.seq_len), generator=g)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        loss = model(input_ids=x[i], labels=x[i]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    tokens = steps * cfg.batch_size * cfg.seq_len
    return tokens / (time.perf_counter() - t0), tokens / (time.process_time() - c0)


def ours(cfg: SlmConfig, data: PackedTokens, vocab: int, eos: int, steps: int) -> tuple[float, float]:
    """(wall, CPU) tokens/s of :func:`train_model` (its clock covers the step loop; the CPU
    clock here also covers its optimizer and scheduler set-up, against us)."""
    model = build_model(cfg.preset, vocab, cfg.seed, eos, max_positions=cfg.seq_len)
    c0 = time.process_time()
    res = train_model(model, data, cfg, None, max_steps=steps)
    return res.tokens_per_second, res.tokens / (time.process_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--score-rows", type=int, default=256)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    cfg = SlmConfig(preset="small", seq_len=args.seq_len, batch_size=args.batch_size, log_every=5,
                    checkpoint_every=0)
    texts = shared_texts()
    t0 = time.perf_counter()
    if texts is not None:
        tok = train_tokenizer([texts], 8192, max_chars=5_000_000)
        tok_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        data = pack(tok, texts, cfg.seq_len)
        pack_tps = data.tokens / (time.perf_counter() - t1)
        vocab, eos, source = len(tok), tok.eos_token_id, "gsm8k train + pile_1k"
    else:
        tok, tok_s, vocab, eos, source = None, 0.0, 8192, 0, "random tokens"
        rng = np.random.default_rng(0)
        data = PackedTokens(rng.integers(1, vocab, size=(4096, cfg.seq_len), dtype=np.int32), 0, 0)
        pack_tps = float("nan")
    print(f"data: {source}; {len(data):,} blocks of {cfg.seq_len}; vocab {vocab}; threads {torch.get_num_threads()}; "
          f"tokenizer trained in {tok_s:.1f}s; tokenize+pack {pack_tps:,.0f} tok/s", flush=True)

    # the loader's share: fetch + convert one batch vs a training step
    t = time.perf_counter()
    for i in range(200):
        torch.from_numpy(data.batch(i, cfg.batch_size, cfg.seed)).long()
    loader_s = (time.perf_counter() - t) / 200

    # our step's extras over the bare step, in isolation (gradients populated by one real step)
    m = build_model(cfg.preset, vocab, cfg.seed, eos, max_positions=cfg.seq_len)
    m.train()
    opt = make_optimizer(m, cfg, cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    x = torch.from_numpy(data.batch(0, cfg.batch_size, cfg.seed)).long()
    loss = m(input_ids=x, labels=x).loss
    loss.backward()
    t = time.perf_counter()
    for i in range(50):
        torch.from_numpy(data.batch(i, cfg.batch_size, cfg.seed)).to(dtype=torch.long)
        float(loss.detach())
        torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.grad_clip)
        sched.step()
    extras_s = (time.perf_counter() - t) / 50
    del m, opt, sched

    ours(cfg, data, vocab, eos, 2)  # warm-up: first-call allocations and kernel selection
    bare_loop(cfg, vocab, eos, 2)
    ours_tps, bare_tps, ours_cpu, bare_cpu = [], [], [], []
    for r in range(args.repeats):
        for which in (("ours", "bare") if r % 2 == 0 else ("bare", "ours")):
            if which == "ours":
                w, c = ours(cfg, data, vocab, eos, args.steps)
                ours_tps.append(w)
                ours_cpu.append(c)
            else:
                w, c = bare_loop(cfg, vocab, eos, args.steps)
                bare_tps.append(w)
                bare_cpu.append(c)
        print(f"repeat {r + 1}: ours {ours_tps[-1]:,.0f} tok/s ({ours_cpu[-1]:,.0f} per CPU-s), bare "
              f"{bare_tps[-1]:,.0f} tok/s ({bare_cpu[-1]:,.0f} per CPU-s); ratio {ours_tps[-1] / bare_tps[-1]:.3f} "
              f"wall, {ours_cpu[-1] / bare_cpu[-1]:.3f} CPU; load {os.getloadavg()[0]:.2f}", flush=True)
    step_s = cfg.batch_size * cfg.seq_len / statistics.median(ours_tps)

    result = {"preset": cfg.preset, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "steps": args.steps,
              "repeats": args.repeats, "threads": torch.get_num_threads(), "data": source,
              "train_ours_tok_s": statistics.median(ours_tps), "train_bare_tok_s": statistics.median(bare_tps),
              "train_ratio_median": statistics.median(o / b for o, b in zip(ours_tps, bare_tps)),
              "train_ratio_of_medians": statistics.median(ours_tps) / statistics.median(bare_tps),
              "train_ours_tok_per_cpu_s": statistics.median(ours_cpu), "train_bare_tok_per_cpu_s": statistics.median(bare_cpu),
              "train_cpu_ratio_of_medians": statistics.median(ours_cpu) / statistics.median(bare_cpu),
              "load_avg_1m_end": os.getloadavg()[0],
              "loader_ms_per_batch": loader_s * 1e3, "step_ms": step_s * 1e3, "loader_share": loader_s / step_s,
              "extras_ms_per_step": extras_s * 1e3, "extras_share": extras_s / step_s,
              "tokenize_pack_tok_s": pack_tps}

    if tok is not None:
        model = build_model(cfg.preset, vocab, cfg.seed, eos, max_positions=cfg.seq_len)
        rows = texts[: args.score_rows // 2] + texts[-args.score_rows // 2:]
        fast_tps, ref_tps = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            _, counts = score_texts(model, tok, rows, batch_size=cfg.score_batch_size)
            fast_tps.append(counts.sum() / (time.perf_counter() - t))
            t = time.perf_counter()
            score_texts_reference(model, tok, rows)
            ref_tps.append(counts.sum() / (time.perf_counter() - t))
        result.update({"score_rows": len(rows), "score_tokens": int(counts.sum()),
                       "score_batched_tok_s": statistics.median(fast_tps),
                       "score_per_row_tok_s": statistics.median(ref_tps),
                       "score_ratio": statistics.median(fast_tps) / statistics.median(ref_tps)})
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
