"""SFT versus distillation at equal tokens, with the embedded teacher (issue 16, part 3).

1. Generates short explanations (one per topic and audience) with the embedded teacher
   (SmolLM2-135M-Instruct through llama-cpp-python's server) and ``teacher.logprobs: k``:
   TeacherClient -> completion_topk -> the ``teacher_topk`` column, as the textbooks stage does
   (tests/test_distill.py runs that stage itself). The request cache makes a re-run free.
2. Packs them for a student with the teacher's tokenizer (the GGUF's vocabulary) and trains
   (dataforge.slm.distill.run_distill_ablation): SFT (w = 0) at 0.5/1/2/4 x D, distillation
   (w = slm.distill_weight) at D; held-out CE on held-out teacher generations; the power-law fit
   of the SFT curve gives the distillation arm's effective data multiplier.

    .venv/bin/python benchmarks/bench_distill.py --serve --samples 94 --max-tokens 40 --epochs 4 --heldout 0.2

(RESULTS.md, "SFT versus distillation at equal tokens"; also --epochs 2. ``--serve`` starts the
embedded teacher on --port and stops it after; without it the requests must all be cached.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

TOPICS = [
    "photosynthesis", "the water cycle", "fractions", "prime numbers", "the solar system", "volcanoes",
    "the human heart", "electric circuits", "the Roman Empire", "gravity", "plate tectonics", "DNA",
    "the French Revolution", "probability", "weather and climate", "sound waves", "magnets", "ecosystems",
    "the periodic table", "the immune system", "rivers", "algebraic equations", "light and color",
    "the Industrial Revolution", "cells", "geometry of triangles", "friction", "the Moon", "erosion",
    "ancient Egypt", "percentages", "digestion", "rainforests", "simple machines", "the atmosphere",
    "bacteria", "the printing press", "earthquakes", "chemical reactions", "the ocean",
]


AUDIENCES = ["a child", "a high school student", "a college student", "a teacher", "a curious adult"]


async def generate(samples: int, k: int, max_tokens: int, port: int, cache_path: Path, seed: int) -> list[dict]:
    """Short sections: one request per (topic, audience) cell, the row built as the textbooks
    stage builds it (make_sample with the ``teacher_topk`` of the completion). Short prompts keep
    the teacher's prompt evaluation cheap on busy cores."""
    from dataforge.config import TeacherConfig
    from dataforge.records import make_sample
    from dataforge.teacher.cache import RequestCache
    from dataforge.teacher.client import TeacherClient, TeacherError
    from dataforge.teacher.logprobs import completion_topk

    tcfg = TeacherConfig(provider="local", local={"port": port}, logprobs=k, max_concurrency=1)
    cells = [(t, a) for a in AUDIENCES for t in TOPICS][:samples]
    rows: list[dict] = []
    t0 = time.perf_counter()
    async with TeacherClient(tcfg, RequestCache(cache_path)) as client:
        for i, (topic, audience) in enumerate(cells):
            messages = [{"role": "user", "content": f"In two sentences, explain {topic} to {audience}."}]
            try:
                c = await client.complete(messages, temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=seed + i)
            except TeacherError as err:
                print(f"  cell {i}: {err.reason}", flush=True)
                continue
            text = c.text.strip()
            if not text:
                continue
            rows.append(make_sample("textbook", text, messages + [{"role": "assistant", "content": text}],
                                    topic=topic, audience=audience, teacher_model=tcfg.model,
                                    completion_tokens=c.completion_tokens, teacher_topk=completion_topk(tcfg, c)))
            if (i + 1) % 20 == 0:
                print(f"  {i + 1}/{len(cells)} generated ({time.perf_counter() - t0:.0f}s)", flush=True)
        stats = client.stats.as_dict()
    print(f"generated {len(rows)} rows; teacher stats {stats}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--port", type=int, default=8796)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_distill"))
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--weight", type=float, default=0.5)
    ap.add_argument("--heldout", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--server-threads", type=int, default=1,
                    help="llama.cpp threads (1: on busy cores, more threads spin and run slower)")
    ap.add_argument("--epochs", type=float, default=3.0, help="the equal budget D, in passes over the training blocks")
    ap.add_argument("--serve", action="store_true", help="start (and stop) the embedded teacher")
    args = ap.parse_args()

    from dataforge.config import SlmConfig, TeacherConfig
    from dataforge.slm.distill import run_distill_ablation
    from dataforge.teacher.local import LocalTeacher
    from dataforge.teacher.logprobs import teacher_vocab

    args.out.mkdir(parents=True, exist_ok=True)
    tcfg = TeacherConfig(provider="local", local={"port": args.port, "n_threads": args.server_threads}, logprobs=args.k)
    server = LocalTeacher(tcfg, args.out / "teacher") if args.serve else None
    t0 = time.perf_counter()
    try:
        if server is not None:
            server.serve()
        rows = asyncio.run(generate(args.samples, args.k, args.max_tokens, args.port, args.out / "cache.sqlite", 7))
    finally:
        if server is not None:
            server.stop()
    gen_s = time.perf_counter() - t0
    rows = [r for r in rows if r.get("teacher_topk")]
    n_held = max(1, int(len(rows) * args.heldout))
    held, train = rows[:n_held], rows[n_held:]
    vocab = teacher_vocab(tcfg)
    cfg = SlmConfig(preset=args.preset, seq_len=args.seq_len, batch_size=args.batch, lr=3e-3, log_every=5,
                    distill_weight=args.weight, threads=args.threads, device="cpu", seed=0)
    t1 = time.perf_counter()
    from dataforge.slm.distill import pack_distill

    blocks = len(pack_distill(train, vocab, cfg.seq_len))
    steps = max(1, round(args.epochs * blocks / cfg.batch_size))
    report = run_distill_ablation(train, held, vocab, cfg, args.out, steps=steps,
                                  on_arm=lambda n, a: print(f"  {n}: {a['tokens']:,} tokens, held-out CE "
                                                            f"{a['heldout']:.4f} ({a['seconds']:.0f}s)", flush=True))
    report.update(generation_seconds=round(gen_s, 1), training_seconds=round(time.perf_counter() - t1, 1),
                  train_rows=len(train), heldout_rows=len(held),
                  completion_tokens=sum(len(r["teacher_topk"]["tokens"]) for r in rows))
    (args.out / "distill_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "arms"}, indent=2))


if __name__ == "__main__":
    main()
