"""The hand-off export: layouts TRL reads, loadable with `datasets`, a stable split by id hash,
a dataset card with counts, funnel, teacher, config and licence, checksums, atomic writes."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fake_openai import FakeOpenAI
from responders import teacher_responder
from run_helpers import run_pipeline, write_add_seeds, write_config
from typer.testing import CliRunner

from dataforge import runner
from dataforge.cli import app
from dataforge.config import ConfigError, load_config, parse_config
from dataforge.export import (
    ExportError,
    export_table,
    render_standard,
    split_position,
    split_prompt_completion,
    validation_mask,
)
from dataforge.records import make_sample, samples_to_table
from dataforge.store import MANIFEST, TMP_PREFIX, read_manifest

ROLES = {"system", "user", "assistant"}


def _table(n: int = 60, seed: int = 0) -> pa.Table:
    """n samples: cot (system + user + assistant), textbook (user + assistant), documents (text only)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = i % 3
        if k == 0:
            msgs = [{"role": "system", "content": "Think step by step."},
                    {"role": "user", "content": f"What is {i} + 1?"},
                    {"role": "assistant", "content": f"{i} + 1 = {i + 1}. The answer is {i + 1}."}]
            rows.append(make_sample("cot", msgs[-1]["content"], msgs, question=msgs[1]["content"],
                                    answer=str(i + 1), teacher_model="teach-a"))
        elif k == 1:
            body = f"Section {i}: " + " ".join(rng.choice(["tides", "maps", "levers"]) for _ in range(12))
            msgs = [{"role": "user", "content": f"Write a section about topic {i}."},
                    {"role": "assistant", "content": body}]
            rows.append(make_sample("textbook", body, msgs, topic=f"topic {i}", teacher_model="teach-b"))
        else:
            rows.append(make_sample("document", f"A plain document number {i} about rivers.", None))
    return samples_to_table(rows)


@pytest.fixture(autouse=True)
def _offline_datasets(tmp_path, monkeypatch):
    # `datasets` must never reach a hub here, and keeps its cache in the test's folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _export_all(table: pa.Table, out: Path, **kw) -> dict:
    return export_table(table, out, ["jsonl", "parquet"], kinds=["chat", "prompt_completion", "text"],
                        validation_fraction=kw.pop("validation_fraction", 0.3), **kw)


def _jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]


# --- loads with `datasets`, in the structure TRL reads ---------------------------------------

def test_export_loads_with_datasets_as_trl_reads_it(tmp_path):
    from datasets import load_dataset

    table = _table(60)
    out = tmp_path / "export"
    manifest = _export_all(table, out, license_id="cc-by-4.0")
    ids = set(table.column("id").to_pylist())

    for builder, ext in (("parquet", "parquet"), ("json", "jsonl")):
        ds = load_dataset(builder, data_files={"train": str(out / f"train.{ext}"),
                                               "validation": str(out / f"validation.{ext}")},
                          cache_dir=str(tmp_path / "hf-cache"))
        assert set(ds) == {"train", "validation"}
        assert ds["train"].num_rows + ds["validation"].num_rows == 60
        assert ds["validation"].num_rows == manifest["layouts"]["chat"]["validation"] > 0
        assert set(ds["train"]["id"]) | set(ds["validation"]["id"]) == ids
        for row in ds["train"]:
            msgs = row["messages"]
            # TRL's conversational language-modeling format: a list of {role, content}
            assert isinstance(msgs, list) and msgs
            assert all(set(m) == {"role", "content"} and m["role"] in ROLES and isinstance(m["content"], str)
                       for m in msgs)
            assert msgs[-1]["role"] == "assistant"

    pc = load_dataset("parquet", data_files=str(out / "prompt_completion" / "train.parquet"),
                      cache_dir=str(tmp_path / "hf-cache"))["train"]
    by_id = {r["id"]: r for r in table.to_pylist()}
    assert pc.num_rows > 0
    for row in pc:
        src = by_id[row["id"]]["messages"]
        # conversational prompt-completion: prompt = turns before the last assistant turn
        assert row["prompt"] == src[:-1] and row["completion"] == [src[-1]]
        assert row["completion"][0]["role"] == "assistant" and row["prompt"][-1]["role"] != "assistant"
    # documents have no prompt: left out of this layout and counted
    n_docs = sum(1 for r in table.to_pylist() if r["kind"] == "document")
    assert manifest["layouts"]["prompt_completion"]["no_prompt"] == n_docs
    assert sum(manifest["layouts"]["prompt_completion"][s] for s in ("train", "validation")) == 60 - n_docs

    text = load_dataset("json", data_files=str(out / "text" / "train.jsonl"),
                        cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert all(row["text"] == by_id[row["id"]]["text"] for row in text)

    # the card's Hub header names a config per layout, so a folder load picks the chat one
    folder = load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert "messages" in folder["train"].column_names
    assert folder["train"].num_rows == manifest["layouts"]["chat"]["train"]


def test_standard_prompt_completion_strings(tmp_path):
    table = _table(12)
    out = tmp_path / "std"
    export_table(table, out, ["jsonl"], kinds=["prompt_completion"], prompt_style="standard")
    rows = _jsonl(out / "prompt_completion" / "train.jsonl")
    by_id = {r["id"]: r for r in table.to_pylist()}
    assert rows
    for r in rows:
        msgs = by_id[r["id"]]["messages"]
        assert isinstance(r["prompt"], str) and r["prompt"].endswith("Assistant:")
        assert r["completion"] == " " + msgs[-1]["content"]
        assert r["prompt"].startswith(f"{msgs[0]['role'].capitalize()}: {msgs[0]['content']}\n\n")
    assert render_standard([{"role": "user", "content": "Hi"}], [{"role": "assistant", "content": "Yo"}]) == \
        ("User: Hi\n\nAssistant:", " Yo")
    assert split_prompt_completion([{"role": "assistant", "content": "x"}]) is None


# --- the split --------------------------------------------------------------------------------

def test_split_is_by_id_only_and_stable(tmp_path):
    table = _table(90, seed=1)
    ids = table.column("id").to_pylist()
    a = dict(zip(ids, validation_mask(ids, 0.25)))
    # the same id lands in the same split whatever else is exported with it, and in any order
    rng = random.Random(3)
    subset = rng.sample(ids, 40)
    assert dict(zip(subset, validation_mask(subset, 0.25))) == {i: a[i] for i in subset}
    # and in the files: two exports of different subsets agree on the shared ids
    _export_all(table, tmp_path / "all", validation_fraction=0.25)
    _export_all(table.take(sorted(rng.sample(range(90), 50))), tmp_path / "part", validation_fraction=0.25)
    for d in ("all", "part"):
        for split in ("train", "validation"):
            for row in pq.read_table(tmp_path / d / f"{split}.parquet").to_pylist():
                assert a[row["id"]] == (split == "validation")
    # a larger fraction only adds rows to validation (threshold on a fixed position)
    b = dict(zip(ids, validation_mask(ids, 0.5)))
    assert all(b[i] for i in ids if a[i])
    # a different salt gives a different split
    assert validation_mask(ids, 0.25, salt="other") != list(a.values())
    # the position is sha256(salt:id) as documented
    h = hashlib.sha256(f"dataforge-split-v1:{ids[0]}".encode()).digest()
    assert split_position(ids[0]) == int.from_bytes(h[:8], "big") / 2**64


def test_split_fraction_is_close_to_asked():
    ids = [f"id-{i}" for i in range(20_000)]
    share = sum(validation_mask(ids, 0.02)) / len(ids)
    assert 0.016 < share < 0.024  # 0.02 ± 4 standard deviations of a binomial share
    assert not any(validation_mask(ids, 0.0))
    with pytest.raises(ExportError, match="validation_fraction"):
        validation_mask(ids, 1.0)


# --- card, checksums, manifest ------------------------------------------------------------------

def test_card_checksums_and_manifest(tmp_path):
    table = _table(30)
    out = tmp_path / "e"
    info = {"funnel": [{"stage": "cot", "rows_in": 40, "rows_kept": 30, "rows_dropped": 10}],
            "teacher_models": ["teach-a", "teach-b"], "config": {"export": {"license": "cc-by-4.0"}}, "run_id": "r1"}
    manifest = _export_all(table, out, license_id="cc-by-4.0", title="My set", card_info=info)
    sums = dict(reversed(line.split("  ")) for line in (out / "checksums.sha256").read_text().splitlines())
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                   and p.name not in ("checksums.sha256", "README.md", MANIFEST))
    assert sorted(sums) == files and len(files) == 3 * 2 * 2  # 3 layouts x 2 splits x 2 formats
    for name, digest in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == sums
    assert read_manifest(out) == manifest

    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "cc-by-4.0"
    assert [c["config_name"] for c in header["configs"]] == ["chat", "prompt_completion", "text"]
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "train.parquet"},
                                                  {"split": "validation", "path": "validation.parquet"}]
    lay = manifest["layouts"]
    assert f"| chat | {lay['chat']['train']} | {lay['chat']['validation']} | 0 |" in card
    assert f"| prompt_completion | {lay['prompt_completion']['train']} |" in card
    assert "| cot | 40 | 30 | 10 |" in card  # the funnel
    assert "`teach-a`, `teach-b`" in card and "Licence: cc-by-4.0" in card
    assert '"dataforge_version": "0.1.0"' in card and "## Configuration" in card
    assert "| cot | 10 |" in card and "| document | 10 |" in card  # rows per kind


def test_failed_export_leaves_previous_one_and_no_temporaries(tmp_path, monkeypatch):
    import dataforge.export as export_mod

    table = _table(9)
    out = tmp_path / "runs" / "export" / "default"
    _export_all(table, out)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls = {"n": 0}
    real = export_mod.write_file

    def failing_write(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 5:  # in the middle of the second layout
            raise OSError("No space left on device")
        return real(*a, **kw)

    monkeypatch.setattr(export_mod, "write_file", failing_write)
    with pytest.raises(OSError, match="No space"):
        _export_all(_table(15), out)
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == [".lock-export-default", "default"]
    # a temporary folder left by a killed export is cleared by the next one
    (out.parent / f"{TMP_PREFIX}export-default-0123abcd").mkdir()
    monkeypatch.setattr(export_mod, "write_file", real)
    _export_all(table, out)
    assert sorted(p.name for p in out.parent.iterdir()) == [".lock-export-default", "default"]


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="unknown or missing export format/layout"):
        export_table(_table(3), tmp_path / "x", ["jsonl"], kinds=["sharegpt"])
    bad = _table(3).to_pylist()
    bad[0]["messages"] = [{"role": "narrator", "content": "once"}]
    with pytest.raises(ExportError, match="role in"):
        export_table(samples_to_table(bad), tmp_path / "y", ["jsonl"])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("snippet, field", [
    ("export:\n  kinds: [chat, sharegpt]\n", "export.kinds.1"),
    ("export:\n  validation_fraction: 1.0\n", "export.validation_fraction"),
    ("export:\n  kinds: [chat, chat]\n", "export.kinds"),
    ("export:\n  prompt_style: fancy\n", "export.prompt_style"),
    ("export:\n  licence: mit\n", "export.licence"),
])
def test_export_config_errors_name_the_field(snippet, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(yaml.safe_load(snippet), "x.yaml")


# --- through the pipeline's stage runners and the CLI ------------------------------------------

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    with FakeOpenAI(responder=lambda b: f"{teacher_responder(b)} ({b.get('seed')})") as srv:
        cfg_path = write_config(
            tmp / "c.yaml", srv.base_url, tmp / "data", name="exp",
            textbooks={"topics": ["maps", "tides"], "max_samples": 4},
            cot={"seeds": str(write_add_seeds(tmp / "seeds.jsonl", 12)), "samples_per_question": 2, "keep": "all"},
            export={"kinds": ["chat", "prompt_completion", "text"], "validation_fraction": 0.25,
                    "license": "apache-2.0"})
        run = run_pipeline(cfg_path, "exp-run")
    return run, load_config(cfg_path)


def test_pipeline_export_has_card_from_the_run(small_run):
    run, cfg = small_run
    out = run.export_dir("default")
    m = read_manifest(out)
    final = run.read("dedup")
    assert m["rows"] == final.num_rows > 0 and m["export_config"]["license"] == "apache-2.0"
    card = (out / "README.md").read_text()
    rec = run.load_record()
    for s in ("textbooks", "cot", "heuristics", "dedup"):
        st = rec.stages[s]
        assert f"| {s} | {st.rows_in} | {st.rows_kept} | {st.rows_dropped} |" in card
    assert "`fake-teacher`" in card and "license: apache-2.0" in card
    # the export is skipped while nothing changed, redone when the export config changes
    assert runner.run_export(run, cfg).skipped
    cfg2 = cfg.model_copy(update={"export": cfg.export.model_copy(update={"validation_fraction": 0.5})})
    again = runner.run_export(run, cfg2)
    assert not again.skipped
    assert read_manifest(out)["layouts"]["chat"]["validation"] >= m["layouts"]["chat"]["validation"]


def test_cli_export_layouts_and_errors(small_run):
    run, _ = small_run
    root = ["--data-root", str(run.data_root), "--run", run.run_id]
    runner = CliRunner()
    r = runner.invoke(app, ["export", *root, "--name", "pre", "--kinds", "text", "--formats", "parquet",
                            "--validation-fraction", "0", "--license", "mit"])
    assert r.exit_code == 0, r.output
    assert "exported" in r.output and "text:" in r.output
    out = run.export_dir("pre")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet")) == ["text/train.parquet"]
    assert "license: mit" in (out / "README.md").read_text()
    r = runner.invoke(app, ["export", *root, "--kinds", "chat,sharegpt"])
    assert r.exit_code == 2 and "--kinds" in r.output
    r = runner.invoke(app, ["export", *root, "--validation-fraction", "2"])
    assert r.exit_code == 2 and "--validation-fraction" in r.output
    r = runner.invoke(app, ["export", "--help"])
    assert r.exit_code == 0 and "prompt_completion" in r.output


# --- the bulk (Arrow) path against the row-by-row reference ------------------------------------

from hypothesis import given, settings
from hypothesis import strategies as st

from dataforge.export import layout_arrow, layout_reference, messages_column

_turn = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                               "content": st.text(max_size=12)})


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(convs=st.lists(st.none() | st.lists(_turn, max_size=5), min_size=0, max_size=12),
       style=st.sampled_from(["conversational", "standard"]))
def test_arrow_layouts_equal_the_reference(convs, style):
    rows = [make_sample("textbook" if m else "document", f"text {i} \u2028 é", m or None) for i, m in enumerate(convs)]
    for i, m in enumerate(convs):  # make_sample drops an empty list; keep it to test that case too
        if m == []:
            rows[i]["messages"] = []
    table = samples_to_table(rows)
    msgs = messages_column(table)
    for layout in ("chat", "prompt_completion", "text"):
        fast, inc_fast = layout_arrow(table, msgs, layout, style)
        ref, inc_ref = layout_reference(table, layout, style)
        assert fast.equals(ref), layout
        assert list(inc_fast) == list(inc_ref)


def test_arrow_and_reference_exports_have_the_same_content(tmp_path):
    table = _table(45)
    a = export_table(table, tmp_path / "a", ["jsonl", "parquet"], kinds=["chat", "prompt_completion", "text"],
                     validation_fraction=0.3, prompt_style="standard")
    b = export_table(table, tmp_path / "b", ["jsonl", "parquet"], kinds=["chat", "prompt_completion", "text"],
                     validation_fraction=0.3, prompt_style="standard", engine="reference")
    assert a["layouts"] == b["layouts"] and a["counts"] == b["counts"]
    names = sorted(f["name"] for f in a["files"])
    assert names == sorted(f["name"] for f in b["files"])
    for name in names:
        pa_, pb = tmp_path / "a" / name, tmp_path / "b" / name
        if name.endswith(".parquet"):
            assert pq.read_table(pa_).equals(pq.read_table(pb)), name
        else:  # same records; the bulk writer uses compact separators
            ra = [json.loads(x) for x in pa_.read_text(encoding="utf-8").split("\n") if x]
            rb = [json.loads(x) for x in pb.read_text(encoding="utf-8").split("\n") if x]
            assert ra == rb, name
    bad = _table(3).to_pylist()
    bad[1]["messages"] = [{"role": "user", "content": None}]
    with pytest.raises(ExportError, match=bad[1]["id"]):
        export_table(samples_to_table(bad), tmp_path / "c", ["jsonl"])


def test_publish_export_to_an_object_store_shows_old_whole_none_or_new_whole(tmp_path):
    """publish_export on an object-store-like filesystem: the new export replaces the old one
    (stale files gone), and a crash midway leaves no manifest, so no reader sees half of it."""
    import uuid
    from pathlib import PurePosixPath

    import pyarrow.fs as pafs
    from fsspec.implementations.memory import MemoryFileSystem

    from dataforge.export import publish_export

    class Flaky(MemoryFileSystem):  # fails writing train.jsonl once told to: a dropped connection
        fail = False

        def _open(self, path, mode="rb", **kw):
            if self.fail and "w" in mode and path.endswith("train.jsonl"):
                raise OSError("connection reset")
            return super()._open(path, mode=mode, **kw)

    flaky = Flaky()
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(flaky))
    dest = PurePosixPath(f"/pub-{uuid.uuid4().hex[:8]}/export/default")

    def make(name: str, files: dict[str, str]) -> Path:
        d = tmp_path / name
        d.mkdir()
        for k, v in files.items():
            (d / k).write_text(v)
        (d / MANIFEST).write_text(json.dumps({"files": [{"name": k} for k in files], "rows": len(files)}))
        return d

    publish_export(make("v1", {"train.jsonl": "old\n", "old_only.txt": "x"}), fs, dest)
    assert read_manifest(dest, fs)["rows"] == 2
    publish_export(make("v2", {"train.jsonl": "new\n"}), fs, dest)
    names = sorted(PurePosixPath(i.path).name for i in fs.get_file_info(pafs.FileSelector(str(dest), recursive=True)))
    assert names == [MANIFEST, "train.jsonl"] and read_manifest(dest, fs)["rows"] == 1
    with fs.open_input_stream(str(dest / "train.jsonl")) as f:
        assert f.read() == b"new\n"

    # a crash after the old manifest is gone and before the new one is written: no export at all
    flaky.fail = True
    with pytest.raises(OSError):
        publish_export(make("v3", {"train.jsonl": "newer\n"}), fs, dest)
    assert read_manifest(dest, fs) is None


# --- streaming: a stage's shards one at a time (issue 14) ----------------------------------------

def _stage_run(tmp_path: Path, shards: list[pa.Table], run_id: str = "stream"):
    """A run whose ``dedup`` stage is ``shards``, each written by its own writer (so each keeps
    its own schema, as shard tasks leave them), committed; with a run.json for the card."""
    from dataforge.config import PipelineConfig
    from dataforge.runner import open_run
    from dataforge.store import ShardWriter

    run = open_run(PipelineConfig(data_root=str(tmp_path / "data"), teacher={"model": "cfg-teacher"}), run_id)
    run.begin_stage("dedup")
    entries = []
    for j, t in enumerate(shards):
        w = ShardWriter(run.stage_dir("dedup"), prefix=f"s{j}", schema=t.schema)
        w.write(t)
        entries += w.close()
    schema = shards[0].schema if shards else _table(0).schema
    run.commit_stage("dedup", entries, [], schema, schema, fingerprint="f", config_hash="c")
    return run


def _uneven_shards() -> list[pa.Table]:
    """Four shards of 40, 31, 26 and 1 rows whose schemas differ: ``teacher_model`` all null
    (type null) in the second, ``topic`` absent from the third."""
    a, b, c, d = _table(40, seed=1), _table(31, seed=2), _table(26, seed=3), _table(1, seed=4)
    b = b.set_column(b.schema.get_field_index("teacher_model"), "teacher_model", pa.nulls(b.num_rows))
    c = c.drop_columns(["topic"])
    return [a, b, c, d]


def _files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("style", ["conversational", "standard"])
def test_streamed_export_of_uneven_shards_equals_the_row_by_row_reference(tmp_path, monkeypatch, style):
    """The final stage read shard by shard, in batches of 7 rows (so batches, files' row groups
    and shards do not line up): every file holds the row-by-row reference's rows of the whole
    stage (``layout_reference`` over the shards concatenated), in order; JSON lines are the same
    bytes as one polars write of those rows; the counts, card and manifest are the whole
    stage's; and it equals the in-memory export of the same rows, file by file (Parquet files
    may differ only in their row groups)."""
    import dataforge.export as export_mod
    from dataforge.config import ExportConfig
    from dataforge.export import export_run, layout_reference, write_jsonl

    shards = _uneven_shards()
    run = _stage_run(tmp_path, shards)
    whole = pa.concat_tables([pq.read_table(f) for f in run.files("dedup")], promote_options="permissive")
    cfg = ExportConfig(kinds=["chat", "prompt_completion", "text"], validation_fraction=0.3, prompt_style=style,
                       license="mit")
    monkeypatch.setattr(export_mod, "EXPORT_BATCH_ROWS", 7)
    out, manifest = export_run(run, "dedup", "default", ["jsonl", "parquet"], export_cfg=cfg)
    files = _files_of(out)

    is_val = validation_mask(whole.column("id").to_pylist(), 0.3)
    expected_layouts = {}
    for layout in ("chat", "prompt_completion", "text"):
        ref, included = layout_reference(whole, layout, style)
        val = [v for v, inc in zip(is_val, included) if inc]
        counts = {}
        for split in ("train", "validation"):
            want = ref.filter(pa.array([v == (split == "validation") for v in val]))
            counts[split] = want.num_rows
            prefix = "" if layout == "chat" else f"{layout}/"
            got = pq.read_table(out / f"{prefix}{split}.parquet")
            pq.write_table(want, tmp_path / "want.parquet")  # (Parquet names a list's item "element")
            assert got.equals(want), (layout, split)
            assert got.schema.equals(pq.read_schema(tmp_path / "want.parquet"), check_metadata=True), (layout, split)
            if split == "train" and layout == "chat":  # streamed: several row groups
                assert pq.ParquetFile(out / f"{prefix}{split}.parquet").num_row_groups > 1
            lines = _jsonl(out / f"{prefix}{split}.jsonl")
            assert lines == want.select(list(lines[0])).to_pylist()
            write_jsonl(tmp_path / "want.jsonl", want.select(list(lines[0])))
            assert files[f"{prefix}{split}.jsonl"] == (tmp_path / "want.jsonl").read_bytes(), (layout, split)
        if layout == "prompt_completion":
            counts["no_prompt"] = int((~included).sum())
        expected_layouts[layout] = counts
    assert manifest["layouts"] == expected_layouts and manifest["rows"] == whole.num_rows == 98
    kinds = whole.column("kind").to_pylist()
    assert list(manifest["counts"].items()) == [(k, kinds.count(k)) for k in dict.fromkeys(kinds)]
    assert manifest["schema"] == [f"{f.name}: {f.type}" for f in whole.schema]
    card = (out / "README.md").read_text()
    assert f"Rows: {whole.num_rows}" in card
    # the teacher models are the rows' (every shard's, none from the all-null one), not the config's
    assert card.split("## Teacher\n")[1].split("##")[0].strip() == "`teach-a`, `teach-b`"
    sums = dict(reversed(line.split("  ")) for line in (out / "checksums.sha256").read_text().splitlines())
    assert sums == {n: hashlib.sha256(files[n]).hexdigest() for n in sums} and len(sums) == 12

    # the in-memory export of the same rows (one batch: every file written whole, as before streaming)
    monkeypatch.setattr(export_mod, "EXPORT_BATCH_ROWS", 16_384)
    mem = tmp_path / "in-memory"
    m2 = export_table(whole, mem, ["jsonl", "parquet"], kinds=cfg.kinds, validation_fraction=0.3, prompt_style=style,
                      license_id="mit", title=f"dataforge export default of run {run.run_id}")
    mem_files = _files_of(mem)
    assert sorted(mem_files) == sorted(files)
    for name, data in files.items():
        if name.endswith(".jsonl"):
            assert data == mem_files[name], name
        elif name.endswith(".parquet"):
            assert pq.read_table(mem / name).equals(pq.read_table(out / name)), name
            assert pq.ParquetFile(mem / name).num_row_groups == 1
    assert (m2["layouts"], m2["counts"], m2["rows"], m2["schema_ipc"]) == \
        (manifest["layouts"], manifest["counts"], manifest["rows"], manifest["schema_ipc"])


def test_streamed_export_of_an_empty_stage_and_of_empty_shards(tmp_path):
    from dataforge.config import ExportConfig
    from dataforge.export import export_run

    cfg = ExportConfig(kinds=["chat", "prompt_completion", "text"], validation_fraction=0.3)
    for run_id, shards in (("none", []), ("empty", [_table(0), _table(0, seed=1)])):
        run = _stage_run(tmp_path, shards, run_id)
        out, manifest = export_run(run, "dedup", "default", ["jsonl", "parquet"], export_cfg=cfg)
        assert manifest["rows"] == 0 and manifest["counts"] == {}
        assert manifest["layouts"] == {"chat": {"train": 0, "validation": 0},
                                       "prompt_completion": {"train": 0, "validation": 0, "no_prompt": 0},
                                       "text": {"train": 0, "validation": 0}}
        # a train file per layout, with the layout's columns and no row; no validation file
        assert sorted(n for n in _files_of(out) if n.endswith((".jsonl", ".parquet"))) == sorted(
            f"{p}train.{f}" for p in ("", "prompt_completion/", "text/") for f in ("jsonl", "parquet"))
        assert (out / "train.jsonl").read_bytes() == b""
        chat = pq.read_table(out / "train.parquet")
        assert chat.num_rows == 0 and "messages" in chat.column_names and "topic" in chat.column_names
        assert pq.read_table(out / "text" / "train.parquet").column_names == ["text", "id", "kind"]
        assert "Rows: 0" in (out / "README.md").read_text()


@pytest.mark.parametrize("damage", ["other rows", "truncated"])
def test_streamed_export_of_a_changed_shard_fails_naming_it_and_leaves_the_previous_export(tmp_path, damage):
    """The third shard changed after its commit (another writer's rows; a torn file): the
    export fails once it reaches that shard, naming the file, after two shards were streamed;
    the previous export stays as it was and no temporary folder is left. --no-verify exports
    what is on disk (the other writer's rows)."""
    from dataforge.export import export_run
    from dataforge.store import ChecksumMismatch

    run = _stage_run(tmp_path, _uneven_shards())
    out, _ = export_run(run, "dedup", "default", ["jsonl", "parquet"])
    before = _files_of(out)
    shard = run.files("dedup")[2]
    if damage == "other rows":
        pq.write_table(_table(5, seed=9), shard, compression="zstd")
    else:
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ChecksumMismatch, match="does not match its manifest") as err:
        export_run(run, "dedup", "default", ["jsonl", "parquet"])
    assert str(shard) in str(err.value)
    assert _files_of(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == [".lock-export-default", "default"]
    if damage == "other rows":
        _, m = export_run(run, "dedup", "unverified", ["jsonl"], verify=False)
        assert m["rows"] == 40 + 31 + 5 + 1


def test_streamed_export_failing_midway_leaves_the_previous_export(tmp_path, monkeypatch):
    """A full disk while the files stream (the third Parquet row group): the previous export is
    untouched and no temporary folder is left."""
    import dataforge.export as export_mod
    from dataforge.export import export_run

    run = _stage_run(tmp_path, _uneven_shards())
    out, _ = export_run(run, "dedup", "default", ["jsonl", "parquet"])
    before = _files_of(out)
    monkeypatch.setattr(export_mod, "EXPORT_BATCH_ROWS", 5)
    calls = {"n": 0}

    class FullDisk(pq.ParquetWriter):
        def write_table(self, *a, **kw):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError("No space left on device")
            return super().write_table(*a, **kw)

    monkeypatch.setattr(export_mod.pq, "ParquetWriter", FullDisk)
    with pytest.raises(OSError, match="No space"):
        export_run(run, "dedup", "default", ["jsonl", "parquet"])
    assert _files_of(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == [".lock-export-default", "default"]


def test_streamed_export_reads_a_batch_at_a_time_with_progress_over_shards(tmp_path, monkeypatch, capsys):
    """The stage is never read whole (no ``Run.read``/``read_table``): batches of at most
    ``EXPORT_BATCH_ROWS`` rows, a shard at a time, one progress bar over the shards."""
    import dataforge.export as export_mod
    from dataforge import store
    from dataforge.export import export_run

    run = _stage_run(tmp_path, _uneven_shards())

    def whole_read(*a, **kw):
        raise AssertionError("the export read the whole stage")

    monkeypatch.setattr(store.Run, "read", whole_read)
    monkeypatch.setattr(store, "read_table", whole_read)
    seen = []
    real = export_mod.conform
    monkeypatch.setattr(export_mod, "conform", lambda t, schema: seen.append(t.num_rows) or real(t, schema))
    monkeypatch.setattr(export_mod, "EXPORT_BATCH_ROWS", 16)
    monkeypatch.setenv("DATAFORGE_PROGRESS", "1")
    _, manifest = export_run(run, "dedup", "default", ["jsonl"])
    assert seen == [16, 16, 8, 16, 15, 16, 10, 1] and manifest["rows"] == 98
    assert "export (98 rows, 4 shards): 4/4  98 rows" in capsys.readouterr().err


def test_streamed_tokens_equal_the_per_row_reference(tmp_path, monkeypatch):
    """The tokens layout of a stage streamed in batches of 7 rows, with shards of 50 tokens: the
    .bin stream is every text layout row's ids then EOS, in order (one encode per row), and the
    index is ``np.save`` of their offsets, byte for byte."""
    import numpy as np

    import dataforge.export as export_mod
    from dataforge.config import ExportConfig
    from dataforge.export import export_run
    from dataforge.slm.tokenizer import train_tokenizer
    from dataforge.tokens import read_meta

    shards = _uneven_shards()
    tok = tmp_path / "tok"
    train_tokenizer([t for s in shards for t in s.column("text").to_pylist()], vocab_size=300,
                    max_chars=None).save_pretrained(tok)
    run = _stage_run(tmp_path, shards)
    monkeypatch.setattr(export_mod, "EXPORT_BATCH_ROWS", 7)
    cfg = ExportConfig(kinds=["text", "tokens"], validation_fraction=0.3, tokenizer=str(tok), shard_tokens=50)
    out, manifest = export_run(run, "dedup", "default", ["jsonl"], export_cfg=cfg)
    from tokenizers import Tokenizer

    bt = Tokenizer.from_file(str(tok / "tokenizer.json"))
    meta = read_meta(out)
    for split in ("train", "validation"):
        docs = [r["text"] for r in _jsonl(out / "text" / f"{split}.jsonl")]
        ids = [bt.encode(t, add_special_tokens=False).ids + [meta["eos_id"]] for t in docs]
        stream = np.concatenate([np.fromfile(out / "tokens" / s["file"], "<u2") for s in meta["splits"][split]["shards"]])
        assert stream.tolist() == [i for d in ids for i in d]
        assert all(s["tokens"] == 50 for s in meta["splits"][split]["shards"][:-1])
        offsets = np.zeros(len(ids) + 1, "<u8")
        np.cumsum([len(d) for d in ids], out=offsets[1:])
        np.save(tmp_path / "want.npy", offsets)
        assert (out / "tokens" / f"{split}.idx.npy").read_bytes() == (tmp_path / "want.npy").read_bytes()
        assert manifest["layouts"]["tokens"][split] == len(docs) == manifest["layouts"]["text"][split]
    assert not [p for p in (out / "tokens").iterdir() if p.name.startswith(TMP_PREFIX)]
