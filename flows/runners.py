"""Where the flow's tasks run, chosen by the ``runner`` section of the pipeline YAML.

``threads`` (default): Prefect's thread pool in the flow's process, ``workers`` tasks at once
(default: the CPUs; each running shard task holds its shard, so this bounds a stage's memory). ``dask``: prefect-dask's
``DaskTaskRunner``, either on a temporary ``distributed.LocalCluster`` started for the run and
torn down after it, or on a running cluster given by its scheduler ``address``::

    runner: {kind: dask, n_workers: 4, threads_per_worker: 1}     # a local cluster
    runner: {kind: dask, address: "tcp://10.0.0.5:8786"}          # an existing one

Tasks travel to workers pickled (a :class:`~dataforge.store.Run` is a path, an id and, for a data
root on an object store, its pyarrow filesystem; a config is pydantic), so a remote worker needs
dataforge installed and the data root reachable: the same local path, or the same object store
(``s3://...``; ``memory://`` lives in one process and suits the threads runner only). Dedup's
signature arrays pass between tasks as futures, so on Dask they go from worker to worker.
"""

from __future__ import annotations

from prefect import get_client
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from dataforge.config import RunnerConfig
from dataforge.teacher.urls import redact_url

LOOPBACK = "127.0.0.1"


def task_runner(cfg: RunnerConfig) -> TaskRunner:
    """The Prefect task runner for ``cfg``."""
    if cfg.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=cfg.thread_workers())  # the pipeline_tasks subflow's
    from prefect_dask import DaskTaskRunner

    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs=local_cluster_kwargs(cfg, current_api_url()))


def task_limit(cfg: RunnerConfig) -> int | None:
    """How many shard or dedup tasks the flow keeps unfinished at once: ``workers`` on threads
    (the flow's own thread pool has no bound), none on Dask (its workers bound it)."""
    return cfg.thread_workers() if cfg.kind == "threads" else None


def local_cluster_kwargs(cfg: RunnerConfig, api_url: str) -> dict:
    """The ``distributed.LocalCluster`` arguments of a temporary cluster: processes, so CPU-bound
    stages run in parallel; scheduler, workers and the status dashboard listen on loopback only
    (the dashboard on a free port, so runs go side by side; nobody else on the network reaches a
    scheduler that runs whatever it is sent); the workers report their task runs to this flow's
    API, even when it is Prefect's temporary one (otherwise each worker would start its own)."""
    return {"n_workers": cfg.n_workers, "threads_per_worker": cfg.threads_per_worker, "processes": True,
            "host": LOOPBACK, "dashboard_address": f"{LOOPBACK}:0", "env": {"PREFECT_API_URL": api_url}}


def current_api_url() -> str:
    """The URL of the Prefect API this process talks to (the temporary server's when no
    ``PREFECT_API_URL`` is set)."""
    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")


def describe(cfg: RunnerConfig) -> str:
    if cfg.kind == "threads":
        return f"threads ({cfg.thread_workers()} at once)"
    if cfg.address:
        return f"dask at {redact_url(cfg.address)}"
    return f"dask LocalCluster ({cfg.n_workers} workers x {cfg.threads_per_worker} threads)"
