"""Distillation signals (issue 16, part 3): teacher top-k logprobs in the request, the cache key,
the ``teacher_topk`` column through generation, curation and export, the distillation loss and
the tokenizer refusal; and the embedded teacher's real top-k (``local_model``)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_openai import FakeOpenAI
from responders import TEXTBOOK_BODY, teacher_responder
from run_helpers import run_pipeline, write_add_seeds, write_config
from teacher_fixtures import KEY_ENV, fake_teacher_cfg, require_embedded_teacher

from dataforge.config import ConfigError, SlmConfig, TeacherConfig, parse_config
from dataforge.records import TOPK_TYPE
from dataforge.slm.distill import (
    DistillError,
    distill_loss,
    pack_distill,
    topk_kl,
    train_distill,
)
from dataforge.teacher.cache import RequestCache
from dataforge.teacher.client import TeacherClient
from dataforge.teacher.logprobs import TeacherVocab, f16_values, parse_logprobs

MSG = [{"role": "user", "content": "Write a section about fractions for children."}]


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-distill-secret")


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory) -> Path:
    """A byte-level BPE trained on the fake teacher's replies, saved as a tokenizer.json: the
    fake teacher tokenizes with it, so the column can hold ids."""
    from dataforge.slm.tokenizer import train_tokenizer

    texts = [TEXTBOOK_BODY.format(topic=t, seed=s) for t in ("fractions", "photosynthesis", "this subject")
             for s in range(40)]
    texts += [teacher_responder({"messages": [{"content": f"What is {i} + 2?"}], "seed": s})
              for i in range(30) for s in range(4)]
    tok = train_tokenizer(texts, vocab_size=600, max_chars=None)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.backend_tokenizer.save(str(path))
    return path


def tokenizing(srv: FakeOpenAI, vocab_file: Path) -> TeacherVocab:
    """Make the fake teacher answer in the pieces of ``vocab_file``; returns that vocabulary."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(vocab_file))
    srv.tokenize = lambda text: [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False).ids]
    return TeacherVocab.from_tokenizer_json(vocab_file)


def ask(cfg: TeacherConfig, cache: RequestCache | None, **kw):
    async def go():
        async with TeacherClient(cfg, cache) as client:
            c = await client.complete(MSG, temperature=0.7, max_tokens=64, seed=1, **kw)
            return c, client.stats
    return asyncio.run(go())


# --- the request, the reply shapes, the cache -------------------------------------------------

def test_request_asks_for_top_logprobs_and_the_reply_keeps_them(tmp_path):
    with FakeOpenAI(responder=teacher_responder) as srv:
        c, _ = ask(fake_teacher_cfg(srv, logprobs=3), None)
        body = srv.requests[-1]["json"]
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    assert c.logprobs is not None and "".join(e.token for e in c.logprobs) == c.text
    assert all(len(e.top) == 3 and e.top[0][0] == e.token for e in c.logprobs)
    assert [v for _, v in c.logprobs[0].top] == sorted((v for _, v in c.logprobs[0].top), reverse=True)


def test_logprobs_off_sends_nothing_extra():
    with FakeOpenAI(responder=teacher_responder) as srv:
        c, _ = ask(fake_teacher_cfg(srv), None)
        body = srv.requests[-1]["json"]
    assert "logprobs" not in body and "top_logprobs" not in body and c.logprobs is None


def test_legacy_shape_is_read_too():
    with FakeOpenAI(responder=teacher_responder) as srv:
        srv.logprobs_shape = "legacy"
        c, _ = ask(fake_teacher_cfg(srv, logprobs=2), None)
    assert "".join(e.token for e in c.logprobs) == c.text
    assert all(len(e.top) == 2 for e in c.logprobs)


def test_llama_cpp_k_plus_one_alternatives_are_cut_to_k():
    # llama-cpp-python's server lists k alternatives plus the sampled token when it is not among them
    choice = {"logprobs": {"content": [{"token": "A", "logprob": -4.5, "bytes": None, "top_logprobs": [
        {"token": "Bon", "logprob": -1.6, "bytes": None}, {"token": "Je", "logprob": -2.0, "bytes": None},
        {"token": "B", "logprob": -3.1, "bytes": None}, {"token": "A", "logprob": -4.5, "bytes": None}]}]}}
    (e,) = parse_logprobs(choice, 3)
    assert e.token == "A" and e.logprob == -4.5
    assert e.top == (("Bon", -1.6), ("Je", -2.0), ("B", -3.1))


def test_cache_keys_on_the_logprobs_setting(tmp_path):
    cache = RequestCache(tmp_path / "cache.sqlite")
    with FakeOpenAI(responder=teacher_responder) as srv:
        plain, _ = ask(fake_teacher_cfg(srv), cache)
        with_lp, stats = ask(fake_teacher_cfg(srv, logprobs=3), cache)
        assert stats.cache_hits == 0 and with_lp.logprobs is not None  # a reply without them is not reused
        again, stats = ask(fake_teacher_cfg(srv, logprobs=3), cache)
        assert stats.cache_hits == 1 and again.cached and again.logprobs == with_lp.logprobs
        other_k, stats = ask(fake_teacher_cfg(srv, logprobs=5), cache)
        assert stats.cache_hits == 0 and len(other_k.logprobs[0].top) == 5
        plain_again, stats = ask(fake_teacher_cfg(srv), cache)
        assert stats.cache_hits == 1 and plain_again.logprobs is None
        assert len(srv.requests) == 3
    assert plain.request_hash != with_lp.request_hash
    assert "sk-test-distill-secret" not in (tmp_path / "cache.sqlite").read_bytes().decode("latin-1")


def test_config_names_the_bad_field():
    with pytest.raises(ConfigError, match=r"teacher\.logprobs"):
        parse_config({"teacher": {"provider": "openai", "base_url": "http://x/v1", "logprobs": 21}})
    with pytest.raises(ConfigError, match=r"slm\.distill_weight"):
        parse_config({"slm": {"distill_weight": 1.5}})


# --- the column through a run: generation, curation, export -----------------------------------

@pytest.fixture(scope="module")
def distill_run(tmp_path_factory, vocab_file):
    tmp = tmp_path_factory.mktemp("run")
    os.environ[KEY_ENV] = "sk-test-distill-secret"
    with FakeOpenAI(responder=teacher_responder) as srv:
        tokenizing(srv, vocab_file)
        seeds = write_add_seeds(tmp / "seeds.jsonl", 6)
        cfg = write_config(tmp / "c.yaml", srv.base_url, tmp / "data",
                           teacher={"logprobs": 4, "tokenizer": str(vocab_file), "api_key_env": KEY_ENV},
                           textbooks={"topics": ["fractions", "photosynthesis"], "max_samples": 6,
                                      "gates": {"enabled": False}},
                           cot={"seeds": str(seeds), "samples_per_question": 2, "keep": "all"},
                           heuristics={"apply_to": ["textbook"]}, dedup={"threshold": 0.95},
                           export={"formats": ["jsonl", "parquet"], "kinds": ["chat", "prompt_completion", "text"],
                                   "distill": True})
        run = run_pipeline(cfg, "distill-run")
    return run, TeacherVocab.from_tokenizer_json(vocab_file)


def test_generated_rows_carry_aligned_topk(distill_run):
    run, vocab = distill_run
    for stage in ("textbooks", "cot"):
        t = run.read(stage)
        assert t.schema.field("teacher_topk").type == TOPK_TYPE
        assert TOPK_TYPE.field("top_logprobs_f16").type.value_type.value_type == pa.uint16()
        rows = t.to_pylist()
        assert rows
        for r in rows:
            col = r["teacher_topk"]
            assert col["vocab"] == vocab.fingerprint and col["k"] == 4 and col["top_tokens"] is None
            n = len(col["tokens"])
            assert len(col["ids"]) == len(col["logprob_f16"]) == len(col["top_ids"]) == len(col["top_logprobs_f16"]) == n
            reply = "".join(col["tokens"])
            assert reply.strip() == r["messages"][-1]["content"]  # the assistant turn, token by token
            assert vocab.decode(col["ids"]) == reply and min(col["ids"]) >= 0
            assert all(len(ids) == 4 and ids[0] == tid for ids, tid in zip(col["top_ids"], col["ids"]))
            # float16 bits: the sampled token's logprob as the fake teacher sent it, to half precision
            lps = f16_values(col["logprob_f16"])
            assert lps.dtype == np.float16 and float(lps[0]) == pytest.approx(-0.1, abs=1e-3)
            tops = [f16_values(b) for b in col["top_logprobs_f16"]]
            assert all(float(t[0]) == float(lp) and float(t[1]) == pytest.approx(float(lp) - 1, abs=2e-3)
                       for t, lp in zip(tops, lps))


def test_curation_passes_the_column_through(distill_run):
    run, _ = distill_run
    generated = {r["id"]: r["teacher_topk"] for s in ("textbooks", "cot") for r in run.read(s).to_pylist()}
    for stage in ("heuristics", "dedup"):
        kept = run.read(stage).to_pylist()
        assert kept
        for r in kept:
            assert r["teacher_topk"] == generated[r["id"]]


def test_export_carries_the_column_in_parquet_beside_the_text(distill_run):
    run, _ = distill_run
    final = {r["id"]: r["teacher_topk"] for r in run.read("dedup").to_pylist()}
    export = run.export_dir("default")
    for rel in ("train.parquet", "text/train.parquet", "prompt_completion/train.parquet"):
        t = pq.read_table(export / rel)
        assert t.schema.field("teacher_topk").type == TOPK_TYPE, rel
        for r in t.to_pylist():
            assert r["teacher_topk"] == final[r["id"]]
    first = json.loads((export / "train.jsonl").read_text().splitlines()[0])
    assert "teacher_topk" not in first  # JSON lines stay TRL's minimal rows


def test_the_warehouse_opens_a_run_with_the_column(distill_run):
    from dataforge import warehouse

    run, _ = distill_run
    con = warehouse.connect(run)
    (n,) = con.execute("SELECT count(*) FROM kept_rows WHERE teacher_topk IS NOT NULL").fetchone()
    assert n > 0
    # a stage with no file registers the schema itself through Arrow (DuckDB has no halffloat)
    import duckdb

    from dataforge.records import SAMPLE_SCHEMA

    fresh = duckdb.connect()  # what the warehouse does for a stage with no files
    fresh.register("no_rows", SAMPLE_SCHEMA.empty_table())
    assert fresh.execute("SELECT count(*) FROM no_rows").fetchone() == (0,)


def test_export_without_distill_has_no_column(tmp_path, distill_run):
    from dataforge.export import export_table

    run, _ = distill_run
    export_table(run.read("dedup"), tmp_path / "e", ["parquet"], kinds=["chat", "text"])
    assert "teacher_topk" not in pq.read_table(tmp_path / "e" / "text" / "train.parquet").column_names


def test_export_loads_with_datasets(distill_run):
    datasets = pytest.importorskip("datasets")
    run, _ = distill_run
    ds = datasets.load_dataset("parquet", data_files=str(run.export_dir("default") / "text" / "train.parquet"),
                               split="train")
    assert "teacher_topk" in ds.column_names and len(ds[0]["teacher_topk"]["top_ids"][0]) == 4


# --- the loss, packing, the refusal -----------------------------------------------------------

def test_kl_matches_a_hand_computation():
    import torch

    logits = torch.tensor([[[2.0, 0.5, -1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]]])
    top_ids = torch.tensor([[[0, 4, 2], [1, -1, -1]]])
    top_lps = torch.tensor([[[-0.4, -1.4, -3.0], [-2.0, 0.0, 0.0]]])
    kl, has = topk_kl(logits, top_ids, top_lps)

    def by_hand(z, ids, lps):
        logq = [z[i] - math.log(sum(math.exp(v) for v in z)) for i in ids]
        norm = math.log(sum(math.exp(v) for v in lps))
        logp = [v - norm for v in lps]
        return sum(math.exp(a) * (a - b) for a, b in zip(logp, logq))

    assert kl[0, 0].item() == pytest.approx(by_hand([2.0, 0.5, -1.0, 0.0, 1.0], [0, 4, 2], [-0.4, -1.4, -3.0]), 1e-5)
    # one valid id: p = 1 on it, KL = -log q(1) = log 5 for uniform logits
    assert kl[0, 1].item() == pytest.approx(math.log(5), 1e-5)
    assert has.tolist() == [[True, True]]


def test_mixed_loss_is_the_weighted_sum():
    import torch

    torch.manual_seed(0)
    logits = torch.randn(1, 4, 6)
    x = torch.tensor([[0, 3, 1, 5]])
    top_ids = torch.tensor([[[-1, -1], [3, 2], [-1, -1], [5, 0]]])  # positions 1 and 3 have a teacher
    top_lps = torch.tensor([[[0.0, 0.0], [-0.2, -1.8], [0.0, 0.0], [-0.1, -2.5]]])
    loss, ce, kl = distill_loss(logits, x, top_ids, top_lps, 0.3)
    ce_hand = -sum(torch.log_softmax(logits[0, t], -1)[x[0, t + 1]].item() for t in range(3)) / 3
    kls, _ = topk_kl(logits[:, :-1], top_ids[:, 1:], top_lps[:, 1:])
    kl_hand = (kls[0, 0].item() + kls[0, 2].item()) / 2  # the mean over the two positions with a teacher
    assert ce.item() == pytest.approx(ce_hand, 1e-5) and kl.item() == pytest.approx(kl_hand, 1e-5)
    assert loss.item() == pytest.approx(0.7 * ce_hand + 0.3 * kl_hand, 1e-5)
    sft, _, _ = distill_loss(logits, x, top_ids, top_lps, 0.0)
    assert sft.item() == pytest.approx(ce_hand, 1e-5)


def test_packing_aligns_ids_and_topk(distill_run):
    run, vocab = distill_run
    rows = run.read("cot").to_pylist()
    data = pack_distill(rows, vocab, seq_len=16)
    assert data.top_ids.shape == (len(data), 16, 4) and data.top_logprobs.dtype == np.float16
    stream, tops = data.blocks.reshape(-1), data.top_ids.reshape(-1, 4)
    has = tops[:, 0] >= 0
    assert np.array_equal(stream[has], tops[has, 0])  # the fake teacher ranks the sampled token first
    # a CoT row's question is packed before the completion, without a teacher target
    first = rows[0]
    prefix = vocab.encode(first["text"][: len(first["text"]) - len("".join(first["teacher_topk"]["tokens"]).strip())])
    assert prefix and list(stream[1:1 + len(prefix)]) == prefix and not has[1:1 + len(prefix)].any()


def test_refuses_another_tokenizer_and_rows_without_topk(distill_run, tmp_path):
    from dataforge.slm.tokenizer import train_tokenizer

    run, vocab = distill_run
    rows = run.read("textbooks").to_pylist()
    other = train_tokenizer(["a completely different corpus of words"] * 50, vocab_size=300, max_chars=None)
    other_file = tmp_path / "other.json"
    other.backend_tokenizer.save(str(other_file))
    with pytest.raises(DistillError, match="not the teacher's") as info:
        pack_distill(rows, TeacherVocab.from_tokenizer_json(other_file), seq_len=16)
    assert "\n" not in str(info.value)
    with pytest.raises(DistillError, match="no row carries teacher_topk"):
        pack_distill([{**r, "teacher_topk": None} for r in rows], vocab, seq_len=16)
    strings = [{**r, "teacher_topk": {**r["teacher_topk"], "vocab": None, "ids": None}} for r in rows]
    with pytest.raises(DistillError, match="token strings"):
        pack_distill(strings, vocab, seq_len=16)


def test_a_transformers_copy_of_the_teachers_tokenizer_is_accepted(vocab_file):
    from transformers import PreTrainedTokenizerFast

    from dataforge.slm.distill import check_tokenizer

    vocab = TeacherVocab.from_tokenizer_json(vocab_file)
    check_tokenizer(vocab.fingerprint, PreTrainedTokenizerFast(tokenizer_file=str(vocab_file)))  # no error


def test_training_with_the_kl_moves_the_student_to_the_teacher(distill_run):
    import torch

    from dataforge.slm.presets import build_model

    run, vocab = distill_run
    rows = run.read("textbooks").to_pylist() + run.read("cot").to_pylist()
    data = pack_distill(rows, vocab, seq_len=32)
    cfg = SlmConfig(preset="tiny", seq_len=32, batch_size=4, lr=1e-2, log_every=1, device="cpu", threads=1)

    def kl_of(model) -> float:
        with torch.no_grad():
            x = torch.from_numpy(data.blocks).long()
            _, _, kl = distill_loss(model(input_ids=x).logits, x, torch.from_numpy(data.top_ids),
                                    torch.from_numpy(data.top_logprobs.astype(np.float32)), 1.0)
        return kl.item()

    model = build_model("tiny", len(vocab), 0, vocab.eos_token_id, max_positions=32)
    before = kl_of(model)
    res = train_distill(model, data, cfg, weight=1.0, max_steps=30)
    assert res.steps == 30 and res.tokens == 30 * 4 * 32 and math.isfinite(res.train_loss)
    assert kl_of(model) < 0.7 * before


def test_ablation_reports_a_multiplier(distill_run, tmp_path):
    from dataforge.slm.distill import run_distill_ablation

    run, vocab = distill_run
    rows = run.read("textbooks").to_pylist() + run.read("cot").to_pylist()
    cfg = SlmConfig(preset="tiny", seq_len=16, batch_size=2, lr=1e-2, log_every=1, device="cpu", threads=1)
    report = run_distill_ablation(rows[2:], rows[:4], vocab, cfg, tmp_path, steps=6)
    assert set(report["arms"]) == {"distill", "sft_x0.5", "sft", "sft_x2", "sft_x4"}
    assert report["arms"]["distill"]["tokens"] == report["arms"]["sft"]["tokens"] == report["token_budget"]
    assert "multiplier" in report and (tmp_path / "distill_report.json").exists()


# --- the embedded teacher ---------------------------------------------------------------------

LOCAL_PORT = 8794


@pytest.fixture(scope="module")
def local_teacher(tmp_path_factory):
    require_embedded_teacher()
    from dataforge.teacher.local import LocalTeacher

    cfg = TeacherConfig(provider="local", local={"port": LOCAL_PORT, "n_threads": 1}, logprobs=4)
    server = LocalTeacher(cfg, tmp_path_factory.mktemp("teacher"))
    server.serve()
    try:
        yield cfg
    finally:
        server.stop()


@pytest.mark.local_model
def test_embedded_teacher_topk_lands_in_the_column(local_teacher, tmp_path):
    from dataforge.config import TextbookConfig
    from dataforge.generate.textbooks import (
        generate_textbooks,
        load_textbook_sources,
        plan_textbooks,
    )
    from dataforge.teacher.logprobs import teacher_vocab

    bcfg = TextbookConfig(topics=["the water cycle", "fractions"], max_samples=2, max_tokens=40)
    sources = load_textbook_sources(bcfg, Path)

    async def go():
        async with TeacherClient(local_teacher, RequestCache(tmp_path / "c.sqlite")) as client:
            return await generate_textbooks(client, plan_textbooks(sources, 2, 1), sources, bcfg, run_id="t", seed=1)

    rows, failures = asyncio.run(go())
    assert rows and not failures
    vocab = teacher_vocab(local_teacher)
    for r in rows:
        col = r["teacher_topk"]
        reply = "".join(col["tokens"])
        assert reply.strip() == r["text"] and len(col["tokens"]) == r["completion_tokens"]
        assert col["vocab"] == vocab.fingerprint and col["k"] == 4
        assert all(len(t) == 4 for t in col["top_ids"])
        known = [i for i in col["ids"] if i >= 0]
        assert len(known) >= 0.9 * len(col["ids"])
        assert all(lp <= 0 for lp in f16_values(col["logprob_f16"]))
        # the teacher's alternatives are ranked: log-probabilities never rise along a position
        tops = [f16_values(b) for b in col["top_logprobs_f16"]]
        assert all(a >= b for lps in tops for a, b in itertools.pairwise(lps))
        if len(known) == len(col["ids"]):
            assert vocab.decode(col["ids"]) == reply
    # the column goes through the table schema (float16) and packs for a student with the GGUF's tokenizer
    from dataforge.records import samples_to_table

    table = samples_to_table(rows)
    data = pack_distill(table.to_pylist(), vocab, seq_len=16)
    assert len(data) >= 1 and data.vocab == vocab.fingerprint


def test_cli_ablate_distill(distill_run, vocab_file, tmp_path):
    from typer.testing import CliRunner

    from dataforge.cli import app

    run, _ = distill_run
    text = run.export_dir("default") / "text" / "train.parquet"
    args = ["ablate", str(text), "--distill", "--heldout", str(text), "--teacher-tokenizer", str(vocab_file),
            "--preset", "tiny", "--steps", "3", "--out", str(tmp_path / "abl")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "effective data multiplier" in r.output
    report = json.loads((tmp_path / "abl" / "distill_report.json").read_text())
    assert report["arms"]["distill"]["tokens"] == report["arms"]["sft"]["tokens"]
    # a file without the column, and another tokenizer: one-line errors, exit 2
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"text": ["a b c"]}), plain)
    r = CliRunner().invoke(app, ["ablate", str(plain), "--distill", "--heldout", str(text), "--teacher-tokenizer",
                                 str(vocab_file), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no teacher_topk column" in r.output
    from dataforge.slm.tokenizer import train_tokenizer

    other = tmp_path / "other.json"
    train_tokenizer(["another corpus entirely"] * 40, vocab_size=300, max_chars=None).backend_tokenizer.save(str(other))
    r = CliRunner().invoke(app, ["ablate", str(text), "--distill", "--heldout", str(text),
                                 "--teacher-tokenizer", str(other), "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "not the teacher's" in r.output


def test_interpolated_multiplier_reads_the_measured_points():
    from dataforge.slm.distill import interpolated_multiplier

    points = [(100, 10.0), (200, 8.0), (400, 7.0)]
    assert interpolated_multiplier(points, 8.0, 100) == pytest.approx(2.0)
    assert interpolated_multiplier(points, 9.0, 100) == pytest.approx(2 ** 0.5)  # half way in log D
    assert interpolated_multiplier(points, 6.0, 100) is None
