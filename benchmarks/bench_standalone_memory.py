"""Issue 14, part 2: peak memory of the standalone `filter` and `dedup` on a 1 GB JSONL, streamed
(this version) against the whole-file commands of an earlier commit, side by side in one run.

The input: ``--input FILE`` (for example a slice of the scale corpus, benchmarks/corpus.py), or
one made here from ``bench_dedup.build_corpus`` (real text units of ``../shared/data``
recombined into documents, with planted near and exact copies) until ``--mb`` MB of JSON lines.
Each command runs as its own process under ``/usr/bin/time -v`` (its "Maximum resident set
size": the child's own peak); the baseline is the same command from ``git worktree`` of
``--baseline`` (default: the commit before the streaming commands), run with this venv.

Run: ``.venv/bin/python benchmarks/bench_standalone_memory.py [--mb 1000] [--baseline REV]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def make_input(path: Path, mb: int) -> None:
    from bench_dedup import build_corpus

    written, seed = 0, 0
    with path.open("w", encoding="utf-8") as f:
        while written < mb * 1_000_000:
            table, _ = build_corpus(100_000, 10_000, seed=seed)
            for rid, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
                line = json.dumps({"id": f"{seed}-{rid}", "text": text}, ensure_ascii=False) + "\n"
                f.write(line)
                written += len(line.encode("utf-8"))
            seed += 1


def timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if done.returncode != 0 or not m:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    last = [ln for ln in done.stdout.splitlines() if ln.startswith("rows ")]
    return seconds, int(m.group(1)) / 1024, (last[-1] if last else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path)
    ap.add_argument("--mb", type=int, default=1000)
    ap.add_argument("--baseline", default="bffbba1")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dataforge-bench-standalone-"))
    src = args.input
    if src is None:
        src = tmp / "input.jsonl"
        make_input(src, args.mb)
    size_mb = src.stat().st_size / 1e6
    old = tmp / "baseline"
    subprocess.run(["git", "worktree", "add", "-f", "--detach", str(old), args.baseline], cwd=REPO, check=True,
                   capture_output=True)
    env = {**os.environ, "DATAFORGE_PROGRESS": "0"}
    rows = []
    try:
        for name, extra in (("filter", ["--rules", "all"]), ("dedup", [])):
            for label, root in (("whole file (" + args.baseline + ")", old), ("streamed (this version)", REPO)):
                out = tmp / f"out-{name}-{root.name}"
                # the venv's editable install finds the working tree through a meta-path finder that
                # PYTHONPATH does not override: drop it, then import the version under test
                launch = (f"import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in "
                          f"type(f).__name__ and 'editable' not in getattr(f, '__module__', '')]; "
                          f"sys.path.insert(0, {str(root)!r}); import dataforge; "
                          f"assert dataforge.__file__.startswith({str(root)!r}), dataforge.__file__; "
                          f"from dataforge.cli.main import main; sys.argv[0] = 'dataforge'; main()")
                cmd = [sys.executable, "-c", launch, name, str(src), "-o", str(out), *extra]
                seconds, peak, summary = timed(cmd, env)
                rows.append((name, label, seconds, peak, summary))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, check=False, capture_output=True)
    print(f"input: {src} ({size_mb:,.0f} MB of JSON lines)\n")
    print("| command | version | seconds | peak RSS MB | summary |\n|---|---|---|---|---|")
    for name, label, seconds, peak, summary in rows:
        print(f"| {name} | {label} | {seconds:.0f} | {peak:,.0f} | {summary[:90]} |")


if __name__ == "__main__":
    main()
