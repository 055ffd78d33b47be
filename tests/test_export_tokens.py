"""The ``tokens`` export layout: flat uint16/uint32 shards a numpy memmap reads, an offsets
index, metadata naming the tokenizer; detokenized back to the source texts, cut into shards at
the cap, listed with sha256 in the manifest, refused early without a readable tokenizer, and
read by the reference SLM's trainer (the same blocks as packing the texts)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from fake_openai import FakeOpenAI
from responders import teacher_responder
from run_helpers import run_pipeline, write_add_seeds, write_config
from typer.testing import CliRunner

import dataforge.export as export_mod
from dataforge import runner
from dataforge.cli import app
from dataforge.config import ConfigError, SlmConfig, load_config, parse_config
from dataforge.export import ExportError, export_run, export_table, validation_mask
from dataforge.records import make_sample, samples_to_table
from dataforge.slm.data import pack, pack_tokens, tokens_source
from dataforge.slm.tokenizer import train_tokenizer
from dataforge.slm.train import prepare, train_reference
from dataforge.store import MANIFEST, read_manifest
from dataforge.tokens import TokensError, read_meta, read_tokens, token_dtype, tokenizer_fingerprint

cli = CliRunner()

WORDS = ("the river carried forty two boats past seven red barns while tides rose and levers lifted maps "
         "of the coast because 12 + 30 = 42").split()


def texts(n: int, seed: int = 0) -> list[str]:
    """Documents with what a tokenizer can get wrong: non-ASCII, newlines, leading and double spaces."""
    rng = np.random.default_rng(seed)
    extra = ["Ünïcode café — 中文 ✓", "line one\nline two\n\n  indented", "  leading and  double  spaces "]
    out = []
    for i in range(n):
        body = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 60))))
        out.append(f"{body} {extra[i % 3]}" if i % 4 == 0 else body)
    return out


def table_of(docs: list[str]) -> pa.Table:
    rows = []
    for i, t in enumerate(docs):
        if i % 2:
            rows.append(make_sample("document", t, None))
        else:
            rows.append(make_sample("textbook", t, [{"role": "user", "content": f"Write about {i}."},
                                                    {"role": "assistant", "content": t}]))
    return samples_to_table(rows)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> Path:
    """The reference SLM's byte-level BPE, saved as an HF folder (with its tokenizer.json)."""
    folder = tmp_path_factory.mktemp("tok") / "bpe"
    train_tokenizer(texts(300, seed=1), vocab_size=400, max_chars=None).save_pretrained(folder)
    return folder


def backend(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))


def text_rows(out: Path, split: str) -> list[str]:
    return [json.loads(x)["text"] for x in (out / "text" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def numpy_read(out: Path, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The format read with numpy alone, as docs/export.md shows (no dataforge code)."""
    meta = json.loads((out / "tokens" / "tokens.json").read_text())
    info = meta["splits"][split]
    ids = np.concatenate([np.memmap(out / "tokens" / s["file"], dtype=np.dtype(meta["dtype"]).newbyteorder("<"),
                                    mode="r") for s in info["shards"]])
    offsets = np.load(out / "tokens" / info["index"])
    return ids, offsets, meta


# --- the format ------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["tokenizer.json", "hf_folder"])
def test_tokens_read_back_with_numpy_and_detokenize_to_the_text(tmp_path, bpe, form):
    table = table_of(texts(80))
    out = tmp_path / "e"
    tok_path = bpe / "tokenizer.json" if form == "tokenizer.json" else bpe
    manifest = export_table(table, out, ["jsonl"], kinds=["text", "tokens"], validation_fraction=0.3,
                            tokenizer=tok_path)
    bt = backend(bpe)
    eos = bt.token_to_id("<|endoftext|>")
    is_val = validation_mask(table.column("id").to_pylist(), 0.3)
    for split in ("train", "validation"):
        ids, offsets, meta = numpy_read(out, split)
        source = text_rows(out, split)
        want = [t for t, v in zip(table.column("text").to_pylist(), is_val) if v == (split == "validation")]
        assert source == want and len(source) > 5  # documents are the text layout's rows, in order
        assert meta["dtype"] == "uint16" and ids.dtype == np.dtype("<u2") and meta["eos_id"] == eos
        assert meta["tokenizer"]["kind"] == form and meta["tokenizer"]["path"] == str(tok_path.resolve())
        assert meta["tokenizer"]["vocab_size"] == meta["vocab_size"] == bt.get_vocab_size(True)
        assert offsets.dtype == np.uint64 and len(offsets) == len(source) + 1
        assert offsets[0] == 0 and offsets[-1] == len(ids) == meta["splits"][split]["tokens"]
        assert (out / "tokens" / f"{split}-00000.bin").stat().st_size == 2 * len(ids)
        for i, text in enumerate(source):
            doc = ids[offsets[i]:offsets[i + 1]]
            assert doc[-1] == eos and eos not in doc[:-1]  # one EOS, appended after the document
            assert doc[:-1].tolist() == bt.encode(text, add_special_tokens=False).ids  # the per-row reference
            assert bt.decode(doc[:-1].tolist(), skip_special_tokens=False) == text
        assert manifest["layouts"]["tokens"][split] == len(source)
        assert manifest["layouts"]["tokens"][f"{split}_tokens"] == len(ids)
    # dataforge's reader says the same
    train = read_tokens(out, "train")
    assert [bt.decode(d.tolist()) for d in train] == text_rows(out, "train")
    assert train.document(0)[-1] == eos and len(train) == len(text_rows(out, "train"))


def test_tokenizer_file_and_folder_give_the_same_ids_and_the_card_says_tokens(tmp_path, bpe):
    table = table_of(texts(40))
    export_table(table, tmp_path / "a", ["jsonl"], kinds=["tokens"], tokenizer=bpe / "tokenizer.json")
    export_table(table, tmp_path / "b", ["jsonl"], kinds=["tokens"], tokenizer=bpe)
    assert ((tmp_path / "a/tokens/train-00000.bin").read_bytes() == (tmp_path / "b/tokens/train-00000.bin").read_bytes())
    ma, mb = read_meta(tmp_path / "a"), read_meta(tmp_path / "b")
    assert ma["tokenizer"]["fingerprint"] == mb["tokenizer"]["fingerprint"]
    assert ma["tokenizer"]["sha256"] == hashlib.sha256((bpe / "tokenizer.json").read_bytes()).hexdigest()
    assert not (tmp_path / "a" / "train.jsonl").exists()  # only the layouts asked for
    card = (tmp_path / "a" / "README.md").read_text()
    assert "| tokens | 40 | 0 | 0 |" in card and "uint16 token ids" in card and "load_dataset" not in card
    assert yaml.safe_load(card.split("---\n")[1])["configs"] == []  # nothing for the Hub's loader


def wordlevel(path: Path, vocab_size: int, eos_id: int) -> Path:
    """A WordLevel tokenizer.json of ``vocab_size`` ids (w0, w1, ...; the EOS at ``eos_id``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(vocab_size)}
    del vocab[f"w{eos_id}"]
    vocab["<|endoftext|>"] = eos_id
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.save(str(path))
    return path


@pytest.mark.parametrize("vocab_size, dtype", [(65536, "uint16"), (65537, "uint32"), (70000, "uint32")])
def test_dtype_is_uint16_while_every_id_fits_else_uint32(tmp_path, vocab_size, dtype):
    top = vocab_size - 1  # the largest id: wraps around if stored in too small a type
    tok = wordlevel(tmp_path / "wl.json", vocab_size, eos_id=3)
    docs = [f"w{top} w65535 w0 w65534", f"w{top - 1} w7 w{top}", "w1"]
    out = tmp_path / "e"
    export_table(table_of(docs), out, ["jsonl"], kinds=["text", "tokens"], tokenizer=tok)
    ids, offsets, meta = numpy_read(out, "train")
    assert meta["dtype"] == dtype == token_dtype(vocab_size).name and meta["vocab_size"] == vocab_size
    assert (out / "tokens" / "train-00000.bin").stat().st_size == np.dtype(dtype).itemsize * len(ids)
    assert ids.max() == top
    bt = backend(tok)
    assert [bt.decode(ids[offsets[i]:offsets[i + 1] - 1].tolist()) for i in range(len(docs))] == text_rows(out, "train")
    assert [ids[offsets[i + 1] - 1] for i in range(len(docs))] == [3, 3, 3]


def test_shards_are_cut_at_the_cap_and_documents_span_them(tmp_path, bpe):
    table = table_of(texts(50))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    export_table(table, whole, ["jsonl"], kinds=["text", "tokens"], tokenizer=bpe)
    export_table(table, cut, ["jsonl"], kinds=["text", "tokens"], tokenizer=bpe, shard_tokens=97)
    total = read_meta(whole)["splits"]["train"]["tokens"]
    files = sorted((cut / "tokens").glob("train-*.bin"))
    assert len(files) == math.ceil(total / 97) >= 3
    assert [f.stat().st_size // 2 for f in files] == [97] * (len(files) - 1) + [total - 97 * (len(files) - 1)]
    assert [s["file"] for s in read_meta(cut)["splits"]["train"]["shards"]] == [f.name for f in files]
    # the shards' concatenation is the one-shard stream, the index the same
    assert b"".join(f.read_bytes() for f in files) == (whole / "tokens" / "train-00000.bin").read_bytes()
    assert (cut / "tokens/train.idx.npy").read_bytes() == (whole / "tokens/train.idx.npy").read_bytes()
    split = read_tokens(cut / "tokens", "train")
    spanning = [i for i in range(len(split)) if split.offsets[i] // 97 != (split.offsets[i + 1] - 1) // 97]
    assert spanning  # some document continues into the next shard, and reads back whole
    bt = backend(bpe)
    assert [bt.decode(d.tolist()) for d in split.iter_documents()] == text_rows(cut, "train")
    assert split.slice(90, 200).tolist() == np.fromfile(whole / "tokens/train-00000.bin", "<u2")[90:200].tolist()


def test_manifest_and_checksums_list_every_tokens_file(tmp_path, bpe):
    out = tmp_path / "e"
    manifest = export_table(table_of(texts(60)), out, ["parquet"], kinds=["chat", "tokens"], validation_fraction=0.25,
                            tokenizer=bpe, shard_tokens=200)
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                     and p.name not in ("checksums.sha256", "README.md", MANIFEST))
    listed = {f["name"]: f for f in manifest["files"]}
    assert sorted(listed) == on_disk
    assert {"tokens/tokens.json", "tokens/train.idx.npy", "tokens/validation.idx.npy", "tokens/train-00001.bin",
            "tokens/tokenizer/tokenizer.json"} <= set(listed)
    for name, f in listed.items():
        data = (out / name).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
    sums = dict(reversed(line.split("  ")) for line in (out / "checksums.sha256").read_text().splitlines())
    assert sums == {n: f["sha256"] for n, f in listed.items()}
    assert read_manifest(out) == manifest
    assert listed["tokens/train-00000.bin"]["rows"] == 200  # a shard's rows are its tokens
    # the reader checks the files against tokens.json
    shard = out / "tokens" / "train-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(TokensError, match="train-00001.bin: expected"):
        read_tokens(out, "train")
    with pytest.raises(TokensError, match="no split 'test'"):
        read_tokens(out, "test")


def test_tokens_are_encoded_in_batches_with_a_progress_bar(tmp_path, bpe, monkeypatch, capsys):
    calls = []
    real = export_mod.encode_documents

    def counting(backend, texts, eos_id):
        calls.append(len(texts))
        return real(backend, texts, eos_id)

    monkeypatch.setattr(export_mod, "encode_documents", counting)
    monkeypatch.setattr(export_mod, "TOKENS_BATCH_ROWS", 16)
    monkeypatch.setattr(export_mod, "EXPORT_BATCH_ROWS", 32)  # the export streams batches of 32 rows
    monkeypatch.setenv("DATAFORGE_PROGRESS", "1")
    out = tmp_path / "e"
    export_table(table_of(texts(70)), out, ["jsonl"], kinds=["text", "tokens"], tokenizer=bpe)
    assert calls == [16, 16, 16, 16, 6]  # five batch calls, not one per row
    err = capsys.readouterr().err
    total = read_meta(out)["splits"]["train"]["tokens"]
    assert f"export (70 rows, 3 batches): 3/3  70 rows · {total:,} tokens" in err  # one bar for the whole export
    bt = backend(bpe)
    assert [bt.decode(d.tolist()) for d in read_tokens(out)] == text_rows(out, "train")


# --- errors: before any work ---------------------------------------------------------------

def test_missing_or_unreadable_tokenizer_is_one_line_naming_it_before_any_work(tmp_path, bpe, monkeypatch):
    table = table_of(texts(5))
    out = tmp_path / "exports" / "e"
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    (tmp_path / "empty").mkdir()
    for path, match in ((tmp_path / "nope.json", "no such tokenizer"), (garbage, "not a readable tokenizer"),
                        (tmp_path / "empty", "not a readable tokenizer")):
        with pytest.raises(ExportError, match=match) as e:
            export_table(table, out, ["jsonl"], kinds=["text", "tokens"], tokenizer=path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ExportError, match="needs a tokenizer"):
        export_table(table, out, ["jsonl"], kinds=["tokens"])
    with pytest.raises(ExportError, match="EOS token '<nope>' is not in"):
        export_table(table, out, ["jsonl"], kinds=["tokens"], tokenizer=bpe, eos_token="<nope>")
    nameless = wordlevel(tmp_path / "wl.json", 50, eos_id=0)
    data = json.loads(nameless.read_text())
    data["model"]["vocab"] = {k.replace("<|endoftext|>", "w0"): v for k, v in data["model"]["vocab"].items()}
    data["model"]["unk_token"] = "w0"
    nameless.write_text(json.dumps(data))
    with pytest.raises(ExportError, match="no end-of-text token found"):
        export_table(table, out, ["jsonl"], kinds=["tokens"], tokenizer=nameless)
    assert not (tmp_path / "exports").exists()  # nothing was written, not even the lock

    # a run's export checks the tokenizer before it reads a row
    from dataforge.store import Run

    def no_read(*a, **kw):
        raise AssertionError("rows were read before the tokenizer was checked")

    monkeypatch.setattr(Run, "read", no_read)
    cfg = parse_config({"export": {"kinds": ["tokens"], "tokenizer": str(tmp_path / "nope.json")}})
    with pytest.raises(ExportError, match="nope.json: no such tokenizer"):
        export_run(Run(tmp_path / "data", "r"), "dedup", "default", ["jsonl"], export_cfg=cfg.export)


def test_export_config_needs_a_tokenizer_with_tokens_and_resolves_it_against_the_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"export\.tokenizer: .*required with the tokens layout"):
        parse_config({"export": {"kinds": ["text", "tokens"]}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"export\.shard_tokens"):
        parse_config({"export": {"kinds": ["tokens"], "tokenizer": "t.json", "shard_tokens": 0}}, "x.yaml")
    (tmp_path / "conf").mkdir()
    p = tmp_path / "conf" / "p.yaml"
    p.write_text("export:\n  kinds: [tokens]\n  tokenizer: tok/tokenizer.json\n")
    assert load_config(p).export.tokenizer == str(tmp_path / "conf" / "tok" / "tokenizer.json")


# --- through a run, the CLI and the reference SLM ------------------------------------------

@pytest.fixture(scope="module")
def tokens_run(tmp_path_factory, bpe):
    tmp = tmp_path_factory.mktemp("run")
    (tmp / "cfg").mkdir()
    with FakeOpenAI(responder=lambda b: f"{teacher_responder(b)} ({b.get('seed')})") as srv:
        cfg_path = write_config(
            tmp / "cfg" / "c.yaml", srv.base_url, tmp / "data", name="tok",
            textbooks={"topics": ["maps", "tides"], "max_samples": 4},
            cot={"seeds": str(write_add_seeds(tmp / "seeds.jsonl", 10)), "samples_per_question": 2, "keep": "all"},
            export={"kinds": ["text", "tokens"], "validation_fraction": 0.25,
                    "tokenizer": str(Path("..") / "tok" / "tokenizer.json")})
        (tmp / "tok").mkdir()
        (tmp / "tok" / "tokenizer.json").write_bytes((bpe / "tokenizer.json").read_bytes())
        run = run_pipeline(cfg_path, "tok-run")
    return run, load_config(cfg_path)


def test_pipeline_exports_tokens_and_redoes_them_when_the_tokenizer_changes(tokens_run, bpe):
    run, cfg = tokens_run
    out = run.export_dir("default")
    m = read_manifest(out)
    assert m["rows"] == run.read("dedup").num_rows > 0
    assert m["layouts"]["tokens"]["train"] + m["layouts"]["tokens"]["validation"] == m["rows"]
    bt = backend(bpe)
    for split in ("train", "validation"):
        assert [bt.decode(d.tolist()) for d in read_tokens(out, split)] == text_rows(out, split)
    assert read_meta(out)["tokenizer"]["path"] == cfg.export.tokenizer
    assert runner.run_export(run, cfg).skipped
    # the same path, another tokenizer: exported again
    tok_file = Path(cfg.export.tokenizer)
    before = tok_file.read_bytes()
    try:
        train_tokenizer(texts(200, seed=5), vocab_size=350, max_chars=None).backend_tokenizer.save(str(tok_file))
        assert not runner.run_export(run, cfg).skipped
        assert read_meta(out)["tokenizer"]["sha256"] == hashlib.sha256(tok_file.read_bytes()).hexdigest()
    finally:
        tok_file.write_bytes(before)
        runner.run_export(run, cfg)


def test_cli_export_tokens_and_its_errors(tokens_run, bpe, tmp_path):
    run, _ = tokens_run
    root = ["--data-root", str(run.data_root), "--run", run.run_id]
    r = cli.invoke(app, ["export", *root, "--name", "tok", "--kinds", "tokens", "--tokenizer", str(bpe),
                         "--shard-tokens", "64", "--validation-fraction", "0"])
    assert r.exit_code == 0, r.output
    assert "tokens:" in r.output
    out = run.export_dir("tok")
    meta = read_meta(out)
    assert meta["shard_tokens"] == 64 and meta["tokenizer"]["kind"] == "hf_folder" and "validation" not in meta["splits"]
    assert len(meta["splits"]["train"]["shards"]) == math.ceil(meta["splits"]["train"]["tokens"] / 64)
    assert not list(out.rglob("*.parquet")) and not list(out.rglob("*.jsonl"))
    r = cli.invoke(app, ["export", *root, "--name", "tok2", "--kinds", "tokens", "--tokenizer",
                         str(tmp_path / "missing")])
    assert r.exit_code == 2 and "missing: no such tokenizer" in r.output and "Traceback" not in r.output
    assert not run.export_dir("tok2").exists()
    r = cli.invoke(app, ["export", *root, "--name", "tok3", "--kinds", "tokens", "--tokenizer", ""])
    assert r.exit_code == 2 and "--tokenizer" in r.output and "required with the tokens layout" in r.output
    r = cli.invoke(app, ["export", "--help"])
    assert "--tokenizer" in r.output and "--shard-tokens" in r.output


def tiny(**kw) -> SlmConfig:
    return SlmConfig(**{"preset": "tiny", "seq_len": 32, "batch_size": 4, "max_steps": 4, "log_every": 2,
                        "checkpoint_every": 0, "seed": 1, **kw})


def test_slm_packs_a_tokens_export_as_it_packs_the_texts(tmp_path, bpe):
    from transformers import AutoTokenizer

    out = tmp_path / "e"
    export_table(table_of(texts(90)), out, ["jsonl"], kinds=["text", "tokens"], validation_fraction=0.2,
                 tokenizer=bpe)
    tok = AutoTokenizer.from_pretrained(bpe)
    for split in ("train", "validation"):
        from_tokens = pack_tokens(read_tokens(out, split), 32)
        from_text = pack(tok, text_rows(out, split), 32)
        assert from_tokens.blocks.shape == from_text.blocks.shape and len(from_tokens) > 3
        assert np.array_equal(from_tokens.blocks, from_text.blocks)
        assert (from_tokens.docs, from_tokens.dropped_tokens) == (from_text.docs, from_text.dropped_tokens)
        capped_tokens, capped_text = pack_tokens(read_tokens(out, split), 32, 100), pack(tok, text_rows(out, split),
                                                                                          32, max_tokens=100)
        assert np.array_equal(capped_tokens.blocks, capped_text.blocks) and capped_tokens.docs == capped_text.docs
    assert tokens_source(out / "tokens") == (out / "tokens", "train")
    assert tokens_source(out) == (out / "tokens", "train")
    assert tokens_source(out / "tokens" / "validation") == (out / "tokens", "validation")
    assert tokens_source([out / "tokens" / "tokens.json"]) == (out / "tokens", "train")
    assert tokens_source(out / "text" / "train.jsonl") is None
    _, data, _ = prepare(out / "tokens" / "validation", tiny(max_steps=100))
    assert data.docs == len(text_rows(out, "validation"))


def test_slm_cli_trains_from_a_tokens_export_and_refuses_another_tokenizer(tmp_path, bpe):
    from transformers import AutoTokenizer

    out = tmp_path / "e"
    export_table(table_of(texts(120)), out, ["jsonl"], kinds=["tokens"], tokenizer=bpe / "tokenizer.json")
    total = read_meta(out)["splits"]["train"]["tokens"]
    steps = math.ceil(total / (4 * 32))  # enough to read every document
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({"slm": tiny(max_steps=steps).model_dump(mode="json")}))
    model = tmp_path / "model"
    r = cli.invoke(app, ["slm", "train", str(out / "tokens"), "--out", str(model), "--config", str(cfg),
                         "--format", "json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output.strip().splitlines()[-1])
    assert result["steps"] == steps and math.isfinite(result["train_loss"])
    assert result["data"]["docs"] == 120 and result["data"]["tokens"] + result["data"]["dropped_tail_tokens"] == total
    trained_tok = AutoTokenizer.from_pretrained(model)
    assert tokenizer_fingerprint(trained_tok.backend_tokenizer) == read_meta(out)["tokenizer"]["fingerprint"]
    assert json.loads((model / "config.json").read_text())["vocab_size"] == read_meta(out)["vocab_size"]

    other = train_tokenizer(texts(100, seed=7), vocab_size=330, max_chars=None)
    with pytest.raises(ValueError, match="the trainer's tokenizer \\(given\\) differs"):
        train_reference(out / "tokens", None, tiny(), tokenizer=other)
    # a checkpoint left by a run on other data holds another tokenizer: refused, with the way out
    other.save_pretrained(tmp_path / "m2" / "checkpoint")
    r = cli.invoke(app, ["slm", "train", str(out / "tokens"), "--out", str(tmp_path / "m2"), "--config", str(cfg)])
    assert r.exit_code == 2 and "differs" in r.output and "--no-resume" in r.output
    r = cli.invoke(app, ["slm", "train", str(out / "tokens" / "test"), "--out", str(tmp_path / "m3"),
                         "--config", str(cfg)])
    assert r.exit_code == 2 and "no split 'test'" in r.output
