"""The flow's service features in-process (Prefect's temporary API): parts of the pipeline via
the ``stages`` parameter, task retries, artifacts, the shared teacher limit's settings, and
reading ``prefect.yaml`` for ``flows.serve``."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from dataforge.stages.registry import get_stage, replaced
from dataforge import runner
from dataforge.config import ConfigError, load_config, parse_config
from dataforge.store import MANIFEST, Run, list_runs
from fake_openai import FakeOpenAI
from responders import teacher_responder
from test_pipeline import write_config

pytestmark = pytest.mark.prefect
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def teacher(monkeypatch):
    monkeypatch.setenv("DATAFORGE_TEST_KEY", "sk-test")
    with FakeOpenAI(responder=teacher_responder) as srv:
        yield srv


def test_generation_part_then_curation_part_continues_the_run(tmp_path, teacher):
    from flows.pipeline import pipeline

    config = write_config(tmp_path, teacher.base_url)
    root = load_config(config).data_root
    rid = pipeline(str(config), stages=["generation"])
    run = Run(root, rid)
    assert run.committed("textbooks") and run.committed("cot")
    assert not (run.stage_dir("heuristics") / MANIFEST).exists() and not run.export_dir("default").exists()
    asked = teacher.chat_count

    # no run_id: the curation part continues this pipeline's latest run, asking the teacher nothing
    assert pipeline(str(config), stages=["curation", "export"]) == rid
    assert teacher.chat_count == asked
    assert run.committed("heuristics") and run.committed("dedup")
    assert_dedup_is_the_library_result(run, config)
    assert (run.export_dir("default") / "train.jsonl").exists()
    assert run.load_record().status == "completed" and len(list_runs(root)) == 1


def assert_dedup_is_the_library_result(run: Run, config: Path) -> None:
    """The flow's dedup (signature tasks per shard, candidate tasks per band, one finishing
    task) committed exactly what ``apply_dedup`` gives in one process on the same input rows."""
    from dataforge.curate.dedup import apply_dedup

    cfg = load_config(config)
    table = pa.concat_tables([run.read(s) for s in runner.curation_inputs_of(cfg, "dedup")])
    kept, rejected = apply_dedup(table, cfg.dedup)
    assert rejected.num_rows > 0  # the fake teacher's answers hold near-duplicates to find
    assert run.read("dedup").equals(kept)
    assert run.read_rejected("dedup").equals(rejected)
    tasks = run.load_record().stages["dedup"].extra["tasks"]
    assert tasks == {"sign": len(runner.curation_inputs(run, cfg, "dedup")), "bands": runner.dedup_bands(cfg)}
    assert tasks["sign"] > 1 and tasks["bands"] > 1


def test_curation_part_without_a_run_and_unknown_stages_are_clear_errors(tmp_path, teacher):
    from flows.pipeline import pipeline, select_stages

    config = write_config(tmp_path, teacher.base_url)
    with pytest.raises(ConfigError, match="has no run of pipeline 't'"):
        pipeline(str(config), stages=["curation"])
    with pytest.raises(ConfigError, match=r"stages: unknown stage 'dedupe' \(choose from generation, curation"):
        select_stages(["dedupe"])
    assert select_stages(["generation", "export"]) == {"ingest", "textbooks", "instructions", "cot", "export"}


def test_local_dir_holds_the_request_cache_and_teacher_state(tmp_path):
    """What cannot live on an object store (the SQLite request cache, the embedded teacher's
    state) goes to ``local_dir``: by default the data root itself when it is local, else a
    folder under ~/.cache/dataforge named after the URI."""
    from pathlib import Path

    assert parse_config({"data_root": str(tmp_path)}).resolved_local_dir() == tmp_path
    assert parse_config({"data_root": str(tmp_path)}).teacher_cache_dir() == tmp_path / "cache"
    assert parse_config({"data_root": f"file://{tmp_path}"}).resolved_local_dir() == tmp_path
    remote = parse_config({"data_root": "s3://bucket/prefix/../x?region=us-east-1"}).resolved_local_dir()
    assert remote == Path.home() / ".cache" / "dataforge" / "s3" / "bucket" / "prefix" / "x"
    assert parse_config({"data_root": "s3://b/p", "local_dir": str(tmp_path / "l")}).resolved_local_dir() == tmp_path / "l"


def test_curation_part_on_an_object_store_root_equals_the_local_one(tmp_path, teacher):
    """The flow's curation (heuristics per shard, dedup per shard and per band) on a data root
    that is an object store (fsspec's in-memory one, ``memory://``) commits what it commits on a
    local root, and so does the export (made locally, published with its manifest last); a whole
    run there, generation included, gives the local run's samples."""
    import uuid

    from flows.pipeline import pipeline

    config = write_config(tmp_path, teacher.base_url)
    local = Run(load_config(config).data_root, pipeline(str(config), stages=["generation"]))
    (tmp_path / "remote").mkdir()
    remote_config = write_config(tmp_path / "remote", teacher.base_url, data_root=f"memory://df-{uuid.uuid4().hex[:8]}")
    rcfg = load_config(remote_config)
    remote = runner.open_run(rcfg, local.run_id)  # the generation output, copied to the object store
    assert not remote.is_local
    for s in ("textbooks", "cot"):
        io = runner.generation_io(remote, rcfg, s)
        io.begin()
        kept, rej = io.write_shard(0, local.read(s), local.read_rejected(s))
        io.commit(kept, rej, local.read(s).schema)
    asked = teacher.chat_count
    assert pipeline(str(remote_config), stages=["curation"]) == local.run_id  # finds the run there
    pipeline(str(config), stages=["curation"])
    assert teacher.chat_count == asked
    for s in ("heuristics", "dedup"):
        assert remote.read(s).equals(local.read(s)) and remote.read_rejected(s).equals(local.read_rejected(s)), s
    assert_dedup_is_the_library_result(remote, remote_config)
    assert remote.load_record().status == "completed"
    pipeline(str(remote_config), stages=["export"])
    pipeline(str(config), stages=["export"])
    from dataforge.store import read_manifest

    fs = remote.filesystem
    rdir, ldir = remote.export_dir(rcfg.export.name), local.export_dir(load_config(config).export.name)
    rman, lman = read_manifest(rdir, fs), read_manifest(ldir)
    assert rman and [f["name"] for f in rman["files"]] == [f["name"] for f in lman["files"]] and rman["rows"] == lman["rows"]
    for f in lman["files"]:  # same bytes as the local export
        with fs.open_input_stream(f"{rdir}/{f['name']}") as stream:
            assert stream.read() == (ldir / f["name"]).read_bytes(), f["name"]

    # the whole pipeline, generation included, on another object-store root: the request cache
    # lives in local_dir (here the local run's, so every answer is a cache hit) and the samples
    # are the local run's
    (tmp_path / "whole").mkdir()
    whole_config = write_config(tmp_path / "whole", teacher.base_url, data_root=f"memory://df-{uuid.uuid4().hex[:8]}",
                                local_dir=str(load_config(config).data_root))
    wcfg = load_config(whole_config)
    whole = Run(wcfg.data_root, pipeline(str(whole_config)))
    assert teacher.chat_count == asked and whole.load_record().status == "completed"
    for s in ("textbooks", "cot", "heuristics", "dedup"):
        assert sorted(whole.read(s).column("id").to_pylist()) == sorted(local.read(s).column("id").to_pylist()), s
    assert read_manifest(whole.export_dir(wcfg.export.name), whole.filesystem)["rows"] == lman["rows"]
    # the seeds' malformed lines are quarantined there too, as one whole object
    with whole.filesystem.open_input_stream(str(whole.quarantine_dir() / "cot_seeds.jsonl")) as f:
        remote_bad = [json.loads(x) for x in f.read().decode().splitlines()]
    local_bad = [json.loads(x) for x in (local.quarantine_dir() / "cot_seeds.jsonl").read_text().splitlines()]
    assert remote_bad and [(b["line"], b["reason"]) for b in remote_bad] == [(b["line"], b["reason"]) for b in local_bad]
    assert not (Path.cwd() / "memory:").exists() and not list(Path.cwd().glob("df-*"))


def test_a_failed_stage_task_is_retried_and_a_config_error_is_not(tmp_path, teacher, monkeypatch):
    from flows.pipeline import pipeline

    calls: list[str] = []
    real = get_stage("heuristics").apply

    def flaky(table: pa.Table, cfg):
        calls.append("x")
        if len(calls) == 1:
            raise OSError("worker lost its disk for a moment")
        return real(table, cfg)

    config = write_config(tmp_path, teacher.base_url, orchestration={"retries": 1, "retry_delay_seconds": 0})
    with replaced("heuristics", apply=flaky):
        run = Run(load_config(config).data_root, pipeline(str(config)))
    shards = len(run.committed("cot")["files"]) + len(run.committed("textbooks")["files"])
    assert len(calls) == shards + 1  # the failed shard ran twice, the others once
    assert run.load_record().status == "completed"
    assert run.committed("heuristics")["rows"] + run.committed_rejected("heuristics")["rows"] == \
        run.committed("cot")["rows"] + run.committed("textbooks")["rows"]

    def broken(table: pa.Table, cfg):
        calls.append("bug")
        raise ValueError("a bug, the same on every attempt")

    calls.clear()
    with replaced("heuristics", apply=broken), pytest.raises(ValueError, match="a bug"):
        pipeline(str(config))  # a new run (generation answered from the cache)
    assert calls == ["bug"] * shards  # not retried
    failed = list_runs(load_config(config).data_root)[-1]
    assert failed.run_id != run.run_id and failed.load_record().stages["heuristics"].status == "failed"


def test_artifacts_of_an_in_process_run(tmp_path, teacher):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.artifacts import artifact_key
    from flows.pipeline import pipeline

    config = write_config(tmp_path, teacher.base_url, name="My Pipeline")
    rid = pipeline(str(config))
    key = artifact_key("My Pipeline", "funnel")
    assert key == "dataforge-my-pipeline-funnel"
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert arts, "no funnel artifact"
    rows = json.loads(arts[0].data)
    rec = Run(load_config(config).data_root, rid).load_record()
    assert {r["stage"]: r["rows_kept"] for r in rows if r["stage"] != "export"} == \
        {s: st.rows_kept for s, st in rec.stages.items() if s != "export"}


def test_teacher_limit_settings():
    from flows.limits import teacher_limit_name, teacher_limit_settings

    assert teacher_limit_name("Qwen/Qwen2.5-7B") == "teacher:Qwen_Qwen2.5-7B"
    assert teacher_limit_settings(parse_config({})) is None  # no rpm, no shared limit
    cfg = parse_config({"teacher": {"model": "m", "requests_per_minute": 90}})
    assert teacher_limit_settings(cfg) == ("teacher:m", 90, 1.5)
    cfg = parse_config({"teacher": {"model": "m", "requests_per_minute": 90}, "orchestration": {"teacher_burst": 3}})
    assert teacher_limit_settings(cfg) == ("teacher:m", 3, 1.5)
    cfg = parse_config({"teacher": {"model": "m", "requests_per_minute": 90},
                        "orchestration": {"global_teacher_limit": False}})
    assert teacher_limit_settings(cfg) is None


def test_repository_prefect_yaml_describes_servable_deployments():
    from flows.serve import build_deployments, read_deployment_specs

    specs = read_deployment_specs(REPO / "prefect.yaml")
    assert [d["name"] for d in specs] == ["pipeline", "generate", "curate", "export", "curate-folder"]
    assert all(Path(d["parameters"]["config_path"]).is_file() for d in specs)
    deps = build_deployments(specs)
    pipeline = deps[0]
    assert pipeline.entrypoint == "flows.pipeline.pipeline"
    assert [s.schedule.cron for s in pipeline.schedules] == ["0 3 * * *"]
    assert deps[2].parameters["stages"] == ["curation", "export"]


def test_prefect_yaml_errors_name_the_entry(tmp_path):
    from flows.serve import DeploymentSpecError, read_deployment_specs

    p = tmp_path / "prefect.yaml"
    p.write_text("deployments:\n  - name: x\n    entrypoint: flows/pipeline.py:pipeline\n    parameters: {config_path: nope.yaml}\n")
    with pytest.raises(DeploymentSpecError, match=r"deployments\[0\] \(x\): parameters.config_path: .*nope.yaml does not exist"):
        read_deployment_specs(p)
    p.write_text("deployments:\n  - name: x\n    entrypoint: flows/pipeline.py:pipeline\n    shedules: []\n")
    with pytest.raises(DeploymentSpecError, match=r"deployments\[0\] \(x\): unknown field\(s\) \['shedules'\]"):
        read_deployment_specs(p)


def sixty_documents(tmp_path: Path, workers: int) -> Path:
    """A config over 60 one-line documents in shards of 5 rows: ingest, heuristics, no dedup."""
    import yaml

    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": f"Document {i} is a plain sentence about the number {i}. "
                                               "It has a second sentence too, with a few more words in it."}) + "\n"
                           for i in range(60)))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": "w", "data_root": str(tmp_path / "data"), "shard_rows": 5,
                                      "sources": {"docs": {"path": str(src)}},
                                      "heuristics": {"enabled": True, "apply_to": ["document"]},
                                      "dedup": {"enabled": False}, "runner": {"workers": workers}}))
    return config


@pytest.mark.parametrize("workers", [1, 2])
def test_shard_tasks_run_at_most_workers_at_once(tmp_path, monkeypatch, workers):
    """``runner.workers`` bounds how many shard tasks hold their shard at once (each holds its
    whole shard, so this bounds a curation stage's memory); the rows are the same."""
    import threading
    import time

    from flows.pipeline import pipeline

    config = sixty_documents(tmp_path, workers)
    running, most = 0, 0
    lock = threading.Lock()
    real = get_stage("heuristics").apply

    def counted(table, cfg):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.3)  # long enough for every free worker to take a shard meanwhile
            return real(table, cfg)
        finally:
            with lock:
                running -= 1

    with replaced("heuristics", apply=counted):
        rid = pipeline(str(config), stages=["generation", "curation"])
    run = Run(load_config(config).data_root, rid)
    assert len(run.files("ingest")) == 12
    assert most == workers
    assert run.read("heuristics").num_rows + run.read_rejected("heuristics").num_rows == 60


def test_a_finished_shard_task_frees_its_slot_while_an_older_one_runs(tmp_path):
    """The next shard goes out when any running task ends, not the oldest: with 2 workers and a
    slow first shard, the other eleven shards all pass through the second worker meanwhile
    (waiting on the oldest let only one through)."""
    import threading
    import time

    from flows.pipeline import pipeline

    config = sixty_documents(tmp_path, 2)
    lock = threading.Lock()
    slow_running = threading.Event()
    done_meanwhile = 0
    real = get_stage("heuristics").apply

    def counted(table, cfg):
        nonlocal done_meanwhile
        if table.num_rows and table.column("text")[0].as_py().startswith("Document 0 "):
            slow_running.set()
            time.sleep(3.0)
            slow_running.clear()
        elif table.num_rows:
            time.sleep(0.05)
            with lock:
                done_meanwhile += slow_running.is_set()
        return real(table, cfg)

    with replaced("heuristics", apply=counted):
        rid = pipeline(str(config), stages=["generation", "curation"])
    run = Run(load_config(config).data_root, rid)
    assert len(run.files("ingest")) == 12
    assert done_meanwhile >= 8
    assert run.read("heuristics").num_rows + run.read_rejected("heuristics").num_rows == 60
