"""The sample browser (`dataforge browse`, issue 15): page latency on a 1M-row run, over HTTP.

A synthetic run is written with the store's own writer and manifests (so the browser opens it
exactly as it opens a real run): two generation stages (textbooks, cot) and four curation stages
(heuristics, quality, dedup, decontam), with every column the browser shows -- topics,
audiences, styles, seed sources, CoT votes, quality scores, dedup clusters with their survivors,
decontamination excerpts -- and drop reasons at every stage. The text is real: textbook sections
are Alpaca answers and Pile documents, CoT samples are GSM8K problems and worked solutions from
the shared data (``$DATAFORGE_SHARED_DATA``, default ``../shared/data``; never copied into the
repository), combined so that every row's text is distinct. `--rows` counts the samples the
browser lists: every generated row ends once, as a row of the final stage or as a dropped row.

Then ``dataforge browse``'s app is started on 127.0.0.1 (uvicorn, as the command does) and
timed over HTTP with the page's own requests: the first list page, later pages, a deep page, a
facet change (a filter on a drop reason, then on a topic: list and facet counts), a score range,
a text search and a sample's page. Every figure is the median of ``--repeats`` requests, each
with a filter value not asked before (no cache helps).

    .venv/bin/python benchmarks/bench_browse.py [--rows 1000000] [--repeats 7] [--data-root DIR]

With ``--data-root`` the run is kept there and reused by the next call (built only when absent).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DATAFORGE_PROGRESS", "0")

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataforge.records import DROP_FIELDS, SAMPLE_SCHEMA
from dataforge.store import Run, RunRecord, StageStatus, package_versions

CHAIN = ["textbooks", "cot", "heuristics", "quality", "dedup", "decontam"]
AUDIENCES = ["young children", "high school students", "college students", "professionals"]
STYLES = ["academic textbook", "narrative", "how-to guide", "blog post"]
FORMATS = ["worked example", "exercises with solutions"]
STAGE_COLUMNS = {
    "heuristics": [("heur_n_words", pa.int32()), ("heur_mean_word_length", pa.float32()),
                   ("heur_stop_words", pa.int32())],
    "quality": [("quality_score", pa.float32()), ("quality_model", pa.string())],
    "dedup": [("dedup_cluster", pa.string()), ("dedup_size", pa.int32()), ("dedup_similarity", pa.float32())],
    "decontam": [("contam_max_fraction", pa.float32()), ("contam_benchmark", pa.string()),
                 ("contam_item", pa.int64()), ("contam_excerpt", pa.string()), ("contam_fraction", pa.float32())],
}


def shared_data() -> Path:
    return Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _sources() -> tuple[list[str], list[dict], list[tuple[str, str]]]:
    """Real text: paragraphs (Alpaca answers, Pile documents), GSM8K problems, topic names."""
    import yaml

    root = shared_data()
    need = [root / "alpaca" / "random_9k.json", root / "web" / "pile_1k.jsonl", root / "gsm8k" / "train.jsonl"]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise SystemExit(f"shared data not found ({', '.join(missing)}); set DATAFORGE_SHARED_DATA")
    alpaca = json.loads(need[0].read_text(encoding="utf-8"))
    paragraphs = [r["output"].strip() for r in alpaca if len(r["output"]) > 200]
    for line in need[1].read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc = json.loads(line)
            if doc.get("metadata", {}).get("pile_set_name") in ("Pile-CC", "Wikipedia (en)", "PubMed Abstracts"):
                paragraphs.append(doc["contents"].strip()[:1200])
    problems = [json.loads(x) for x in need[2].read_text(encoding="utf-8").splitlines() if x.strip()]
    topics = []
    for p in sorted((REPO / "dataforge" / "generate" / "taxonomies").glob("*.yaml")):
        tax = yaml.safe_load(p.read_text())
        for t in tax["topics"]:
            topics.append((tax["subject"], t["name"]))
    return paragraphs, problems, topics


def _hex(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def _universe(n: int, run_id: str, seed: int) -> tuple[pa.Table, np.ndarray, list]:
    """Every generated row with every column it will ever carry, the index of the stage where
    its path ends (a drop there, or len(CHAIN) for the final stage) and its drop reasons."""
    from dataforge.records import content_id

    rng = np.random.default_rng(seed)
    paragraphs, problems, topics = _sources()
    n_cot = n // 2
    n_tb = n - n_cot
    t0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    rows: dict[str, list] = {f.name: [] for f in SAMPLE_SCHEMA}
    fate = np.full(n, len(CHAIN), np.int64)
    reasons: list[str | None] = [None] * n
    # textbook sections: a topic cell and two real paragraphs
    tb_topic = rng.integers(0, len(topics), n_tb)
    tb_aud = rng.integers(0, len(AUDIENCES), n_tb)
    tb_sty = rng.integers(0, len(STYLES), n_tb)
    tb_fmt = rng.integers(0, len(FORMATS), n_tb)
    pa_idx = rng.integers(0, len(paragraphs), (n_tb, 2))
    sim = rng.beta(5, 2, n_tb).astype(np.float32)
    for i in range(n_tb):
        subject, topic = topics[tb_topic[i]]
        text = (f"# {topic}\n\n{paragraphs[pa_idx[i, 0]]}\n\n{paragraphs[pa_idx[i, 1]]}\n\n"
                f"({AUDIENCES[tb_aud[i]]}, section {i})")
        _append(rows, id=content_id("textbook", text), kind="textbook", text=text, subject=subject, topic=topic,
                subtopic=None, audience=AUDIENCES[tb_aud[i]], style=STYLES[tb_sty[i]], format=FORMATS[tb_fmt[i]],
                template="textbook_topic_v2", gen_topic_similarity=float(sim[i]), gen_reading_grade=float(8 + i % 9),
                sample_index=0, passage_id=None, seed_source=None, seed_id=None)
    # CoT samples: k=4 samples of one GSM8K problem, most right, some wrong
    n_q = max(1, n_cot // 4)
    q_idx = rng.permutation(n_q) % len(problems)
    wrong = rng.random(n_cot) < 0.25
    for j in range(n_cot):
        qn = j // 4
        prob = problems[q_idx[qn]]
        question = prob["question"] if qn < len(problems) else f"{prob['question']} (variant {qn})"
        worked, gold = prob["answer"].rsplit("####", 1)
        gold = gold.strip()
        answer = gold if not wrong[j] else str(int(gold.replace(",", "")) + 1 + j % 3 if gold.replace(",", "").isdigit() else gold + "0")
        rationale = f"{worked.strip()}\nThe answer is {answer}." + ("" if j % 4 == 0 else f" (sample {j % 4})")
        msgs = [{"role": "user", "content": question}, {"role": "assistant", "content": rationale}]
        text = f"Question: {question}\nAnswer: {rationale}"
        _append(rows, id=content_id("cot", text, msgs), kind="cot", text=text, messages=msgs, question=question,
                rationale=rationale, answer=answer, gold_answer=gold, answer_correct=not wrong[j],
                seed_id=_hex(question)[:16], seed_source="gsm8k" if qn % 5 else "synthetic:gsm8k",
                sample_index=j % 4, template="cot_v1", method="cot", system_prompt="orca_step_by_step",
                steps_checked=worked.count("<<"), step_errors=0)
    # votes and agreement per question (self-consistency over the 4 samples)
    base = n_tb
    for qn in range(n_q):
        idx = list(range(base + 4 * qn, min(base + 4 * qn + 4, n)))
        answers = [rows["answer"][k] for k in idx]
        for k in idx:
            v = answers.count(rows["answer"][k])
            rows["votes"][k] = v
            rows["agreement"][k] = v / len(idx)
    for k in range(n):
        rows["run_id"][k] = run_id
        rows["teacher_model"][k] = "gpt-4o-mini"
        rows["request_hash"][k] = _hex(f"{run_id}:{k}")
        rows["created_at"][k] = t0 + timedelta(milliseconds=k)
        rows["finish_reason"][k] = "stop"
        rows["prompt_tokens"][k] = 180 + k % 50
        rows["completion_tokens"][k] = len(rows["text"][k]) // 4
        rows["gen_params"][k] = '{"temperature": 0.8, "top_p": 0.95}'
    # fates: drops at each stage
    u = rng.random(n)
    kinds = np.array(rows["kind"])
    is_tb = kinds == "textbook"
    for k in np.flatnonzero(is_tb & (u < 0.04)):
        fate[k], reasons[k] = 0, f"off_topic:{rows['gen_topic_similarity'][k] * 0.4:.2f}"
        rows["gen_topic_similarity"][k] *= 0.4
    for k in np.flatnonzero(is_tb & (u >= 0.04) & (u < 0.06)):
        fate[k], reasons[k] = 0, "noncompliant:meta_talk:Here is a section about"
        rows["gen_compliance"][k] = "meta_talk"
    for k in np.flatnonzero(~is_tb & np.array([not c for c in rows["answer_correct"]]) & (u < 0.9)):
        fate[k], reasons[k] = 1, "answer_mismatch"
    for k in np.flatnonzero(~is_tb & (fate == len(CHAIN)) & (u > 0.97)):
        fate[k], reasons[k] = 1, "wrong_step:48/2 = 25"
        rows["step_errors"][k], rows["first_step_error"][k] = 1, "48/2 = 25"
    alive = fate == len(CHAIN)
    heur = ["gopher_quality:min_doc_words", "gopher_repetition:dup_line_frac", "c4:min_sentences"]
    for k in np.flatnonzero(alive & (rng.random(n) < 0.05)):
        fate[k], reasons[k] = 2, heur[k % 3]
    qscore = rng.beta(4, 2, n).astype(np.float32)
    alive = fate == len(CHAIN)
    for k in np.flatnonzero(alive & (qscore < 0.3)):
        fate[k], reasons[k] = 3, f"quality:below_threshold({qscore[k]:.3f}<0.300)"
    # near duplicates: a copy of a surviving row with one word changed, dropped by dedup
    alive = np.flatnonzero(fate == len(CHAIN))
    dups_l, surv_l = [], []
    for of_kind in (is_tb, ~is_tb):  # a duplicate and its survivor are of one kind
        pool = np.intersect1d(alive, np.flatnonzero(of_kind))
        d = rng.choice(pool, size=min(len(pool) // 2, n // 60), replace=False)
        dups_l.append(d)
        surv_l.append(rng.choice(np.setdiff1d(pool, d), size=len(d)))
    dups, survivors = np.concatenate(dups_l), np.concatenate(surv_l)
    extra = {"dedup_cluster": [None] * n, "dedup_size": [None] * n, "dedup_similarity": [None] * n}
    for d, s in zip(dups, survivors):
        for col in rows:
            if col not in ("id", "text", "request_hash", "created_at", "run_id"):
                rows[col][d] = rows[col][s]
        words = (rows["rationale"][s] if rows["kind"][s] == "cot" else rows["text"][s]).split(" ")
        w = len(words) // 2
        words[w] = words[w].upper() if words[w] != words[w].upper() else words[w] + "s"
        if rows["kind"][s] == "cot":
            rows["rationale"][d] = " ".join(words)
            rows["text"][d] = f"Question: {rows['question'][s]}\nAnswer: {rows['rationale'][d]}"
            rows["messages"][d] = [rows["messages"][s][0], {"role": "assistant", "content": rows["rationale"][d]}]
        else:
            rows["text"][d] = " ".join(words)
        rows["id"][d] = content_id(rows["kind"][d], rows["text"][d], rows["messages"][d])
        fate[d], reasons[d] = 4, f"near_duplicate_of:{rows['id'][s]}"
        sim_d = float(0.82 + (d % 17) / 100)
        extra["dedup_cluster"][d], extra["dedup_similarity"][d], extra["dedup_size"][d] = rows["id"][s], sim_d, 2
        extra["dedup_cluster"][s], extra["dedup_similarity"][s], extra["dedup_size"][s] = rows["id"][s], 1.0, 2
    # decontamination: a few CoT samples of GSM8K test look-alikes
    contam = {"contam_max_fraction": (rng.random(n) * 0.3).astype(np.float32).tolist(),
              "contam_benchmark": [None] * n, "contam_item": [None] * n, "contam_excerpt": [None] * n,
              "contam_fraction": [None] * n}
    alive = np.flatnonzero((fate == len(CHAIN)) & ~is_tb)
    for k in rng.choice(alive, size=min(len(alive), max(1, n // 400)), replace=False):
        item = int(k % 1319)
        fate[k], reasons[k] = 5, f"contaminated:gsm8k_test:{item}"
        contam["contam_benchmark"][k], contam["contam_item"][k] = "gsm8k_test", item
        contam["contam_excerpt"][k] = rows["question"][k][:100]
        contam["contam_max_fraction"][k] = contam["contam_fraction"][k] = 0.62 + (k % 30) / 100
    table = pa.table({f.name: pa.array(rows[f.name], f.type) for f in SAMPLE_SCHEMA}, schema=SAMPLE_SCHEMA)
    n_words = pc.list_value_length(pc.utf8_split_whitespace(table.column("text"))).cast(pa.int32())
    cols = {"heur_n_words": n_words, "heur_mean_word_length": pa.array((4 + rng.random(n)).astype(np.float32)),
            "heur_stop_words": pa.array((rng.integers(2, 40, n)).astype(np.int32)),
            "quality_score": pa.array(qscore), "quality_model": pa.array(["web_quality"] * n),
            **extra, **contam}
    for stage in CHAIN[2:]:
        for name, typ in STAGE_COLUMNS[stage]:
            table = table.append_column(pa.field(name, typ), pa.array(cols[name], typ) if not isinstance(
                cols[name], (pa.Array, pa.ChunkedArray)) else cols[name].cast(typ))
    return table, fate, reasons


def _append(rows: dict[str, list], **values) -> None:
    for name in rows:
        rows[name].append(values.get(name))


def make_run(data_root: Path, n: int, *, seed: int = 0, shard_rows: int = 1000, cache_rows: int = 0,
             run_id: str = "browse-bench") -> Run:
    """Write a completed run of ``n`` samples under ``data_root`` (see the module docstring);
    ``cache_rows`` rows also get their teacher request and response in the request cache."""
    from dataforge.teacher.cache import RequestCache

    run = Run(data_root, run_id)
    table, fate, reasons = _universe(n, run_id, seed)
    core = len(SAMPLE_SCHEMA)
    n_cols = {"textbooks": core, "cot": core}
    width = core
    for stage in CHAIN[2:]:
        width += len(STAGE_COLUMNS[stage])
        n_cols[stage] = width
    reason_arr = pa.array(reasons, pa.string())
    fate_arr = pa.array(fate)
    kinds = table.column("kind")
    rec = RunRecord(run_id=run_id, name="browse-bench", created_at=datetime.now(UTC).isoformat(),
                    status="completed", versions=package_versions())
    with run.lock():
        for pos, stage in enumerate(CHAIN):
            t0 = time.perf_counter()
            run.begin_stage(stage)
            cols = table.select(list(range(n_cols[stage])))
            reach = pc.greater_equal(fate_arr, pos)
            if stage == "textbooks":
                reach = pc.and_(reach, pc.equal(kinds, "textbook"))
            elif stage == "cot":
                reach = pc.and_(reach, pc.equal(kinds, "cot"))
            kept = cols.filter(pc.and_(reach, pc.greater(fate_arr, pos)))
            dropped = cols.filter(pc.and_(reach, pc.equal(fate_arr, pos)))
            dropped = dropped.append_column(DROP_FIELDS[0], pa.array([stage] * dropped.num_rows, pa.string()))
            dropped = dropped.append_column(DROP_FIELDS[1], reason_arr.filter(pc.and_(reach, pc.equal(fate_arr, pos))))
            entries = []
            for directory, part in ((run.stage_dir(stage), kept), (run.rejected_dir(stage), dropped)):
                with run.shard_writer(directory, prefix="part-00000", max_rows=shard_rows, schema=part.schema) as w:
                    w.write(part)
                entries.append(w.entries)
            run.commit_stage(stage, entries[0], entries[1], kept.schema, dropped.schema, fingerprint=f"bench-{pos}",
                             config_hash="bench")
            rec.stages[stage] = StageStatus(status="completed", rows_in=kept.num_rows + dropped.num_rows,
                                            rows_kept=kept.num_rows, rows_dropped=dropped.num_rows,
                                            seconds=round(time.perf_counter() - t0, 3),
                                            finished_at=datetime.now(UTC).isoformat())
        rec.stages["export"] = StageStatus(status="skipped")
        run.save_record(rec)
    if cache_rows:
        with RequestCache(Path(data_root) / "cache" / "teacher.sqlite") as cache:
            for row in table.slice(0, cache_rows).to_pylist():
                if row["kind"] == "cot":
                    prompt = [{"role": "system", "content": "You are a careful tutor. Solve step by step and end "
                                                            "with 'The answer is N.'"},
                              {"role": "user", "content": row["question"]}]
                    content = row["rationale"]
                else:
                    prompt = [{"role": "system", "content": "You write clear textbook sections."},
                              {"role": "user", "content": f"Write a {row['style']} section on \"{row['topic']}\" "
                                                          f"({row['subject']}) for {row['audience']}, as a "
                                                          f"{row['format']}."}]
                    content = row["text"]
                cache.put(row["request_hash"],
                          {"model": row["teacher_model"], "messages": prompt,
                           "params": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 1024},
                           "sample_index": row["sample_index"]},
                          {"id": "chatcmpl-" + row["request_hash"][:12], "object": "chat.completion",
                           "model": row["teacher_model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content}}],
                           "usage": {"prompt_tokens": row["prompt_tokens"],
                                     "completion_tokens": row["completion_tokens"]}})
    return run


# --- the benchmark ---------------------------------------------------------------------------------

def _timed(client, path: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = client.get(path)
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise SystemExit(f"{path}: HTTP {r.status_code} {r.text[:200]}")
    return dt, r.json()


def _pair(client, qs: str, offset: int = 0) -> tuple[float, float, float, dict]:
    """The page's own two requests on a filter change, sent at once as it sends them: wall time
    of both, and each one's time."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        a = pool.submit(_timed, client, f"/api/samples?{qs}&offset={offset}&limit=50")
        b = pool.submit(_timed, client, f"/api/facets?{qs}")
        (ta, page), (tb, _) = a.result(), b.result()
        return time.perf_counter() - t0, ta, tb, page


def _stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return f"{statistics.median(xs) * 1000:.0f} ms (p90 {p90 * 1000:.0f}, n={len(xs)})"


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    from urllib.parse import urlencode

    import httpx

    from dataforge.browse.queries import SampleIndex
    from dataforge.browse.server import create_app, running

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--data-root", type=Path, default=None, help="Keep (and reuse) the run here")
    ap.add_argument("--shard-rows", type=int, default=1000, help="Rows per shard (the pipeline's default: 1000)")
    args = ap.parse_args()
    tmp = None
    root = args.data_root
    if root is None:
        tmp = tempfile.mkdtemp(prefix="dataforge-bench-browse-")
        root = Path(tmp)
    try:
        run = Run(root, "browse-bench")
        wrote = not run.exists()
        if not wrote:
            print(f"reusing the run at {run.dir}")
        else:
            t0 = time.perf_counter()
            make_run(root, args.rows, shard_rows=args.shard_rows)
            print(f"wrote a {args.rows:,}-sample run in {time.perf_counter() - t0:.0f} s: {run.dir}")
        rec = run.load_record()
        print("funnel: " + "; ".join(f"{s} {st.rows_in:,} in, {st.rows_kept:,} kept" for s, st in rec.stages.items()
                                      if st.rows_in is not None))
        t0 = time.perf_counter()
        index = SampleIndex(run, verify=True, progress=lambda m: print("  " + m))
        startup = time.perf_counter() - t0
        results: dict[str, list[float]] = {}

        def add(name: str, seconds: float) -> None:
            results.setdefault(name, []).append(seconds)

        with running(create_app(index)) as url, httpx.Client(base_url=url, timeout=120) as client:
            _timed(client, "/api/info")
            t, info_page = _timed(client, "/api/samples?offset=0&limit=50")
            add("first page (list)", t)
            t, facets = _timed(client, "/api/facets")
            add("first page (facets, computed once)", t)
            total = info_page["total"]
            rng = random.Random(0)
            for i in range(args.repeats):
                t, _ = _timed(client, f"/api/samples?offset={rng.randrange(0, total // 50) * 50}&limit=50")
                add("a page at random (no filter)", t)
            reasons = [v["value"] for v in facets["facets"]["reason"] if v["value"] != "(none)"]
            topics = [v["value"] for v in facets["facets"]["topic"] if v["value"] != "(none)"]
            audiences = [v["value"] for v in facets["facets"]["audience"] if v["value"] != "(none)"]
            kinds = [v["value"] for v in facets["facets"]["kind"]]
            changes = []
            for i in range(args.repeats):
                changes += [{"reason": reasons[i % len(reasons)]},
                            {"reason": reasons[(i + 1) % len(reasons)], "kind": kinds[i % len(kinds)]},
                            {"topic": topics[i % len(topics)], "status": "kept"},
                            {"audience": audiences[i % len(audiences)], "topic": topics[(i + 3) % len(topics)]},
                            {"quality_score": f"{0.3 + 0.05 * i:.2f}:{0.6 + 0.05 * i:.2f}"},
                            {"status": "kept", "quality_score": f"{0.5 + 0.03 * i:.2f}:"}]
            for change in changes:
                qs = urlencode(change)
                wall, ta, tb, page = _pair(client, qs)
                add("facet change: list + facets at once (wall)", wall)
                add("facet change: list", ta)
                add("facet change: facets", tb)
                if page["total"] > 5000:
                    t, _ = _timed(client, f"/api/samples?{qs}&offset={(page['total'] // 100) * 50}&limit=50")
                    add("a deep page of a filtered list", t)
            words = ["overtime", "photosynthesis", "triangle", "democracy", "algorithm", "marbles", "volcano",
                     "percent", "recipe", "planet", "library", "battery"]
            for i in range(min(args.repeats, len(words))):
                qs = urlencode({"q": words[i]})
                wall, ta, tb, page = _pair(client, qs)
                add("search, a new word (list + facets, wall: one scan of the text)", wall)
                wall, ta, tb, _ = _pair(client, urlencode({"q": words[i], "kind": "cot"}))
                add("search then a facet change (wall)", wall)
                if page["rows"]:
                    t, _ = _timed(client, f"/api/sample/{page['rows'][0]['id']}")
                    add("a sample's page", t)
            for change in ({"reason": "near_duplicate_of"}, {"reason": "contaminated"}, {"kind": "cot"}):
                _, page = _timed(client, f"/api/samples?{urlencode(change)}&offset=0&limit=50")
                for row in page["rows"][: args.repeats]:
                    t, _ = _timed(client, f"/api/sample/{row['id']}")
                    add("a sample's page", t)
        memory = index.con.execute("SELECT memory_usage FROM pragma_database_size()").fetchone()[0]
        index.close()
        print(f"\n{total:,} samples in the list; start-up (manifests, sha256 of every shard, the samples "
              f"table): {startup:.1f} s; the index in DuckDB: {memory}; peak RSS of this process "
              f"{_peak_rss_mb():,.0f} MB{' (it wrote the run too)' if wrote else ''}; load average "
              f"{os.getloadavg()[0]:.1f} at the end")
        print("| request | median |\n|---|---|")
        for name, xs in results.items():
            print(f"| {name} | {_stats(xs)} |")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
