"""Scale-out on Dask: the pipeline's tasks on a 2-worker LocalCluster give the same samples as
the in-process (threads) run, whether the runner starts the cluster (``runner: {kind: dask}``)
or joins a running one by its scheduler address.

Each run uses its own data root, so nothing is resumed or read from another run's cache; the
fake teacher answers deterministically, so equal ids mean equal work. Its answers carry a fixed
``created`` time: dedup keeps the earliest-created row of a cluster, and the real clock (whole
seconds) would let a second boundary between two runs pick another survivor, whatever the runner.
"""

from __future__ import annotations

import os

import pickle
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dataforge.config import ConfigError, load_config, parse_config
from dataforge.runner import dedup_bands
from dataforge.store import Run
from fake_openai import FakeOpenAI
from responders import teacher_responder
from test_flows import assert_dedup_is_the_library_result
from test_pipeline import write_config

pytestmark = [pytest.mark.prefect, pytest.mark.dask]


class FixedClockTeacher(FakeOpenAI):
    def completion(self, body: dict, finish_reason: str = "stop") -> dict:
        return {**super().completion(body, finish_reason), "created": 1_767_225_600}


def _run(tmp: Path, base_url: str, runner: dict) -> tuple[Run, dict[str, list[str]]]:
    from flows.pipeline import pipeline

    tmp.mkdir()
    # shard_rows 3: the CoT output is several shards, so heuristics fans out several tasks
    config = write_config(tmp, base_url, runner=runner)
    run = Run(load_config(config).data_root, pipeline(str(config)))
    assert_dedup_is_the_library_result(run, config)  # signatures per shard and bands spread over tasks
    stage_ids = {s: sorted(run.read(s, columns=["id"]).column("id").to_pylist())
                 for s in ("textbooks", "cot", "heuristics", "dedup")}
    stage_ids["export"] = sorted(pq.read_table(run.export_dir("default") / "train.parquet").column("id").to_pylist())
    return run, stage_ids


def test_dask_local_cluster_and_address_give_the_in_process_samples(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed", reason="prefect-dask (and distributed) not installed")
    monkeypatch.setenv("DATAFORGE_TEST_KEY", "sk-test")
    with FixedClockTeacher(responder=teacher_responder) as srv:
        _, in_process = _run(tmp_path / "threads", srv.base_url, {"kind": "threads"})
        assert in_process["export"] and len(in_process["heuristics"]) > 3

        # the runner starts (and tears down) a 2-worker LocalCluster itself
        run, on_dask = _run(tmp_path / "dask-local", srv.base_url, {"kind": "dask", "n_workers": 2})
        assert on_dask == in_process
        assert run.load_record().status == "completed"
        heur = run.committed("heuristics")
        assert heur is not None and len(heur["files"]) > 1  # one output shard per input shard

        # a running cluster given by address: its two workers did the stage tasks
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
            _, on_cluster = _run(tmp_path / "dask-address", srv.base_url,
                                 {"kind": "dask", "address": cluster.scheduler_address})
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert on_cluster == in_process
        # 2 generation + >= 2 heuristics shards + dedup (>= 2 signature shards, a plan, a task per
        # band, a finish) + export tasks, spread over both workers
        assert sum(executed.values()) >= 6 + dedup_bands(parse_config({})) and len(executed) == 2 and all(executed.values()), executed


def test_run_pickles_without_its_lock(tmp_path):
    run = Run(tmp_path, "r1")
    back = pickle.loads(pickle.dumps(run))
    assert (back.dir, back.run_id) == (run.dir, run.run_id)
    with back._lock:  # a fresh lock, usable
        pass


def test_runner_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"runner\.kind"):
        parse_config({"runner": {"kind": "ray"}})
    with pytest.raises(ConfigError, match=r"runner: .*set kind: dask"):
        parse_config({"runner": {"address": "tcp://127.0.0.1:8786"}})
    with pytest.raises(ConfigError, match=r"runner: .*tcp://host:8786"):
        parse_config({"runner": {"kind": "dask", "address": "127.0.0.1:8786"}})
    with pytest.raises(ConfigError, match=r"runner\.n_workers"):
        parse_config({"runner": {"kind": "dask", "n_workers": 0}})
    with pytest.raises(ConfigError, match=r"orchestration\.retries"):
        parse_config({"orchestration": {"retries": -1}})
    with pytest.raises(ConfigError, match=r"runner: .*workers is the threads runner's"):
        parse_config({"runner": {"kind": "dask", "workers": 2}})
    with pytest.raises(ConfigError, match=r"runner\.workers"):
        parse_config({"runner": {"workers": 0}})
    assert parse_config({"runner": {"kind": "dask", "address": "tcp://10.0.0.5:8786"}}).runner.address


def test_task_runner_follows_the_config():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.runners import task_runner

    default = task_runner(parse_config({}).runner)
    assert isinstance(default, ThreadPoolTaskRunner)
    assert default._max_workers == max(2, len(os.sched_getaffinity(0)))  # Prefect's own default is CPUs + 4
    assert task_runner(parse_config({"runner": {"workers": 1}}).runner)._max_workers == 1
    remote = task_runner(parse_config({"runner": {"kind": "dask", "address": "tcp://10.0.0.5:8786"}}).runner)
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"


def test_data_root_through_pyarrow_filesystem_layer(tmp_path):
    """A run on an object store travels to Dask workers with its filesystem (tests/test_store.py
    runs the store and curation on an in-memory object store)."""
    import pyarrow.fs as pafs

    run = Run(f"file://{tmp_path}", "r1")  # a file:// URI is the local directory
    assert run.is_local and run.data_root == tmp_path.resolve()
    remote = Run("s3://bucket/x?region=us-east-1", "r1")
    back = pickle.loads(pickle.dumps(remote))
    assert isinstance(back.filesystem, pafs.S3FileSystem) and back.dir == remote.dir and not back.is_local
    assert not (Path.cwd() / "s3:").exists()
