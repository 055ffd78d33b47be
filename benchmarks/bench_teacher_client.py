"""Teacher client throughput against a bare ``AsyncOpenAI`` loop, side by side in one run.

Both send the same number of distinct requests at the same concurrency to the fake
OpenAI-compatible server (tests/fake_openai.py) with a fixed per-request latency. The client
works as in production (request cache on disk, rate-limit bookkeeping, retries armed), but
every request is new, so nothing is a cache hit. Repeats alternate between the two so noise
from the shared machine falls on both; medians and their ratio are printed.

    .venv/bin/python benchmarks/bench_teacher_client.py [--requests 300] [--concurrency 16] [--latency 0.05] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fake_openai import FakeOpenAI  # noqa: E402

from dataforge.config import TeacherConfig  # noqa: E402
from dataforge.teacher import RequestCache, TeacherClient  # noqa: E402


def messages(tag: str, i: int) -> list[dict]:
    return [{"role": "user", "content": f"{tag} request {i}: write one sentence."}]


async def bare_loop(base_url: str, n: int, concurrency: int, tag: str) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=60)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            r = await client.chat.completions.create(model="fake-model", messages=messages(tag, i),
                                                     temperature=0.7, max_tokens=32)
            assert r.choices[0].message.content

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    await client.close()
    return n / elapsed


async def dataforge_client(base_url: str, n: int, concurrency: int, tag: str, cache_dir: Path) -> float:
    cfg = TeacherConfig(provider="openai", base_url=base_url, model="fake-model", max_concurrency=concurrency)
    cache = RequestCache(cache_dir / f"{tag}.sqlite")
    client = TeacherClient(cfg, cache)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(client.complete(messages(tag, i), temperature=0.7, max_tokens=32)
                                     for i in range(n)))
    elapsed = time.perf_counter() - t0
    assert all(r.text and not r.cached for r in results)
    assert client.stats.requests_sent == n
    await client.aclose()
    cache.close()
    return n / elapsed


def main() -> None:
    # the standard library's default listen backlog (5) refuses bursts of 16 new connections
    import http.server

    http.server.ThreadingHTTPServer.request_queue_size = 256
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.05, help="fake server latency per request, seconds")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    bare, ours = [], []
    with FakeOpenAI(delay_s=args.latency) as srv, tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            order = [("bare", bare), ("dataforge", ours)]
            if rep % 2:
                order.reverse()
            for name, sink in order:
                tag = f"{name}-{rep}"
                if name == "bare":
                    rate = asyncio.run(bare_loop(srv.base_url, args.requests, args.concurrency, tag))
                else:
                    rate = asyncio.run(dataforge_client(srv.base_url, args.requests, args.concurrency, tag, Path(tmp)))
                sink.append(rate)
                print(f"repeat {rep}: {name:9s} {rate:7.1f} req/s", flush=True)
    mb, mo = statistics.median(bare), statistics.median(ours)
    ideal = args.concurrency / args.latency
    print(f"\n{args.requests} requests, concurrency {args.concurrency}, latency {args.latency * 1000:.0f} ms "
          f"(ideal {ideal:.0f} req/s), {args.repeats} alternating repeats")
    print(f"median bare AsyncOpenAI loop: {mb:.1f} req/s")
    print(f"median dataforge TeacherClient: {mo:.1f} req/s")
    print(f"ratio dataforge / bare: {mo / mb:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
