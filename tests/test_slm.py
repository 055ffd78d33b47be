"""The reference SLM: presets, tokenizer, packing, training with resume, the hand-off to
transformers, per-row scoring against a reference, and ``dataforge slm train | eval | score``.

Everything runs on the ``tiny`` preset with a handful of steps."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from dataforge.cli import app
from dataforge.config import ConfigError, SlmConfig, parse_config
from dataforge.slm.data import iter_text_batches, pack
from dataforge.slm.presets import build_model, count_parameters, get_preset
from dataforge.slm.score import heldout_loss, score_texts, score_texts_reference
from dataforge.slm.tokenizer import train_tokenizer
from dataforge.slm.train import lr_factor, train_model, train_reference
from dataforge.tabular import InputError

runner = CliRunner()

WORDS = ("the cat sat on a mat while seven dogs ran past the red barn and ate forty two apples "
         "because numbers like 12 + 30 = 42 are fun").split()


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 40)))) for _ in range(n)]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(corpus(300), vocab_size=400)


def tiny_cfg(**kw) -> SlmConfig:
    base = dict(preset="tiny", seq_len=32, batch_size=4, max_steps=12, log_every=2, lr=3e-3, seed=3,
                checkpoint_every=0)
    return SlmConfig(**{**base, **kw})


# --- presets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("preset,low,high", [("small", 4.5e6, 5.5e6), ("medium", 18e6, 22e6),
                                             ("base", 115e6, 135e6), ("tiny", 5e4, 5e5)])
def test_preset_sizes(preset, low, high):
    assert low <= count_parameters(preset) <= high


def test_preset_architecture_is_llama_with_gqa():
    m = build_model("tiny", 400)
    assert type(m).__name__ == "LlamaForCausalLM"
    assert m.config.num_key_value_heads < m.config.num_attention_heads
    assert m.config.hidden_act == "silu" and m.config.tie_word_embeddings
    assert get_preset("5m") == get_preset("small")
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        get_preset("huge")


def test_slm_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="slm.seq_len"):
        parse_config({"slm": {"seq_len": 2}})
    with pytest.raises(ConfigError, match="slm.preset"):
        parse_config({"slm": {"preset": "gigantic"}})
    with pytest.raises(ConfigError, match="max_steps or max_tokens"):
        parse_config({"slm": {"max_steps": 3, "max_tokens": 100}})


# --- tokenizer and packing -------------------------------------------------------------------

def test_tokenizer_round_trips_bytes_and_loads_with_autotokenizer(tok, tmp_path):
    from transformers import AutoTokenizer

    text = "the cat — naïve café 🐱 12 + 30 = 42\n\ttabs"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: nothing is unknown
    assert len(ids) < len(text.encode())  # merges were learned
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert again.eos_token == "<|endoftext|>"


def reference_pack(tok, texts, seq_len):
    stream = []
    for t in texts:
        if t:
            stream += [tok.eos_token_id] + tok(t, add_special_tokens=False)["input_ids"]
    n = len(stream) // seq_len
    return np.array(stream[: n * seq_len], dtype=np.int32).reshape(n, seq_len)


def test_packing_matches_reference_and_streams_from_parquet(tok, tmp_path):
    texts = corpus(120, seed=1) + [""]
    data = pack(tok, texts, seq_len=16, batch_rows=17)
    ref = reference_pack(tok, texts, 16)
    np.testing.assert_array_equal(data.blocks, ref)
    assert data.docs == 120
    # two Parquet shards, small row groups: the same blocks
    for i, part in enumerate((texts[:50], texts[50:])):
        pq.write_table(pa.table({"body": part}), tmp_path / f"part-{i}.parquet", row_group_size=7)
    shards = sorted(tmp_path.glob("part-*.parquet"))
    np.testing.assert_array_equal(pack(tok, shards, 16, column="body").blocks, ref)
    capped = pack(tok, texts, 16, max_tokens=100)
    assert capped.tokens == 96 and capped.dropped_tokens == 4
    with pytest.raises(InputError, match="no column 'text'"):
        list(iter_text_batches(shards[0], "text"))


def test_batch_order_is_a_seeded_permutation_per_epoch(tok):
    data = pack(tok, corpus(100, seed=2), seq_len=16)
    n = len(data)
    bs = 5
    seen = np.concatenate([data.batch_indices(i, bs, seed=7) for i in range(math.ceil(2 * n / bs))])
    assert sorted(seen[:n].tolist()) == list(range(n))  # the first epoch visits every block once
    assert sorted(seen[n:2 * n].tolist()) == list(range(n))
    assert seen[:n].tolist() != seen[n:2 * n].tolist()  # a new order each epoch
    np.testing.assert_array_equal(data.batch(3, bs, 7), data.batch(3, bs, 7))
    assert not np.array_equal(data.batch_indices(0, bs, 7), data.batch_indices(0, bs, 8))


# --- training --------------------------------------------------------------------------------

def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_interrupted_run_resumes_to_the_same_weights(tok, tmp_path):
    texts = corpus(200, seed=4)
    cfg = tiny_cfg(max_steps=10, checkpoint_every=3)
    data = pack(tok, texts, cfg.seq_len)

    full = build_model("tiny", len(tok), seed=cfg.seed, eos_token_id=tok.eos_token_id, max_positions=cfg.seq_len)
    r_full = train_model(full, data, cfg, tmp_path / "full", tokenizer=tok)

    part = build_model("tiny", len(tok), seed=cfg.seed, eos_token_id=tok.eos_token_id, max_positions=cfg.seq_len)
    r1 = train_model(part, data, cfg, tmp_path / "resumed", tokenizer=tok, stop_after=4)
    assert r1.interrupted and r1.steps == 4 and (tmp_path / "resumed" / "checkpoint" / "state.pt").exists()
    fresh = build_model("tiny", len(tok), seed=99, eos_token_id=tok.eos_token_id, max_positions=cfg.seq_len)
    r2 = train_model(fresh, data, cfg, tmp_path / "resumed", tokenizer=tok)
    assert r2.resumed_from == 4 and r2.steps == 10
    for (name, a), b in zip(full.state_dict().items(), fresh.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert [p["loss"] for p in r2.curve] == pytest.approx([p["loss"] for p in r_full.curve], abs=1e-5)
    assert not (tmp_path / "resumed" / "checkpoint").exists()  # finished: the checkpoint is gone

    # a checkpoint made with other settings is refused, not silently mixed in
    r3 = train_model(build_model("tiny", len(tok), seed=cfg.seed), data, cfg, tmp_path / "other", stop_after=2)
    assert r3.interrupted
    with pytest.raises(ValueError, match="other data or settings"):
        train_model(build_model("tiny", len(tok)), data, cfg.model_copy(update={"lr": 1e-4}), tmp_path / "other")


def test_trained_model_loads_with_auto_classes_and_generates(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = corpus(300, seed=5)
    heldout = corpus(40, seed=6)
    cfg = tiny_cfg(max_steps=25, vocab_size=400)
    model, tok, res = train_reference(texts, tmp_path / "ref", cfg, eval_sets={"held": heldout})
    untrained = build_model("tiny", len(tok), seed=123, eos_token_id=tok.eos_token_id, max_positions=cfg.seq_len)
    assert res.eval["held"]["loss"] < heldout_loss(untrained, tok, heldout)["loss"] - 0.5  # it learned
    assert res.eval["held"]["perplexity"] == pytest.approx(math.exp(res.eval["held"]["loss"]))
    assert json.loads((tmp_path / "ref" / "train_result.json").read_text())["steps"] == 25

    m = AutoModelForCausalLM.from_pretrained(tmp_path / "ref")
    t = AutoTokenizer.from_pretrained(tmp_path / "ref")
    enc = t("the cat", return_tensors="pt")
    out = m.generate(**enc, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert isinstance(t.decode(out[0]), str)
    # the saved weights are the trained ones
    assert heldout_loss(m, t, heldout)["loss"] == pytest.approx(res.eval["held"]["loss"], abs=1e-4)


# --- scoring ---------------------------------------------------------------------------------

def test_batched_scores_match_the_per_row_reference(tok):
    model = build_model("tiny", len(tok), seed=1, eos_token_id=tok.eos_token_id, max_positions=24)
    texts = corpus(23, seed=8) + ["", "cat"]
    fast, counts = score_texts(model, tok, texts, batch_size=5)
    ref = score_texts_reference(model, tok, texts)
    assert np.isnan(fast[-2]) and np.isnan(ref[-2]) and counts[-2] == 0
    np.testing.assert_allclose(fast[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-5, atol=1e-5)
    assert counts.max() == 23  # truncated to the model's 24 positions (EOS + 23 scored tokens)
    assert len(set(np.round(fast[:-2], 4))) > 10  # real per-row values, not one constant


# --- the command line ------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["slm"], ["slm", "train"], ["slm", "eval"], ["slm", "score"]])
def test_slm_help(args):
    r = runner.invoke(app, [*args, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_slm_cli_train_eval_score(tmp_path):
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps({"body": t}) + "\n" for t in corpus(200, seed=9)))
    held = tmp_path / "held.parquet"
    pq.write_table(pa.table({"body": corpus(30, seed=10)}), held)
    cfg = tmp_path / "p.yaml"
    cfg.write_text("slm:\n  preset: tiny\n  vocab_size: 400\n  seq_len: 32\n  batch_size: 4\n  max_steps: 50\n")
    out = tmp_path / "model"
    r = runner.invoke(app, ["slm", "train", str(train_file), "--out", str(out), "--text-column", "body",
                            "--eval", str(held), "--config", str(cfg), "--steps", "6"])
    assert r.exit_code == 0, r.output
    assert "for 6 steps" in r.output and "held loss" in r.output
    assert json.loads((out / "train_result.json").read_text())["steps"] == 6

    r = runner.invoke(app, ["slm", "eval", str(out), str(held), "--text-column", "body", "--format", "json"])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output)
    assert ev["rows"] == 30 and ev["perplexity"] == pytest.approx(math.exp(ev["loss"]))

    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"body": "the cat sat"}\nnot json\n{"body": ""}\n{"body": "seven dogs ran"}\n')
    r = runner.invoke(app, ["slm", "score", str(out), str(bad), "--out", str(tmp_path / "scored"),
                            "--text-column", "body"])
    assert r.exit_code == 0, r.output
    assert "scored 2 rows" in r.output and "1 without tokens" in r.output and "1 quarantined" in r.output
    kept = pq.read_table(tmp_path / "scored" / "kept.parquet")
    assert kept.column("body").to_pylist() == ["the cat sat", "seven dogs ran"]
    assert all(x > 0 for x in kept.column("slm_loss").to_pylist())
    rej = pq.read_table(tmp_path / "scored" / "rejected.parquet")
    assert rej.column("drop_reason").to_pylist() == ["slm:no_tokens"]


def test_slm_cli_errors_are_clear(tmp_path):
    r = runner.invoke(app, ["slm", "train", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = runner.invoke(app, ["slm", "train", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "m"),
                            "--seq-len", "3"])
    assert r.exit_code == 2 and "slm.seq_len" in r.output
    r = runner.invoke(app, ["slm", "eval", str(tmp_path), str(tmp_path / "x.jsonl")])
    assert r.exit_code == 2 and "not a trained model folder" in r.output
