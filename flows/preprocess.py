"""The preprocess step as a fan-out over partitions, through the task runner ``preprocess.parallel``
names: a partitioned input with ``runner: process`` (Prefect's ``ProcessPoolTaskRunner``) or ``runner:
dask`` (prefect-dask's ``DaskTaskRunner``: a running scheduler at ``dask_address``, else a local
cluster of ``workers`` processes). The pipeline flow runs it in place of its single preprocess task
(flows/pipeline.py); ``runner: none`` keeps that task.

One subflow, ``preprocess-partitions``: prepare (the gate check, the job's work directory) → one
``count-<k>`` task per partition [→ ``cut`` → ``count-<k>`` again: time split] → ``merge`` → one
``encode-<k>`` task per partition → ``finish`` (assemble, feature_map.json, atomic publish), with
``digest`` (the input files' sha256) beside them. The per-partition tasks and digest are submitted to the
task runner; prepare, cut, merge and finish run in the flow's process. Tasks pass the work directory's
path and partition numbers, never frames; each calls one step function of components/stages.py, the
same functions ``ctrflow preprocess`` runs, so the outputs are the same bytes. A failure removes the
work directory after every submitted task has ended, and names the stage and the partition's file.
"""

from __future__ import annotations  # noqa: I001  (flows._env must run before prefect is imported)

from flows import _env  # noqa: F401
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ProcessPoolTaskRunner

from components import stages
from components.config import load_params
from components.executors import pool_size
from components.transient import StageFailed


@task(name="preprocess-prepare", cache_policy=NO_CACHE)
def prepare_task(params_path: str, overrides: dict, require_gate: bool) -> dict:
    result = stages.preprocess_prepare_stage(load_params(params_path, overrides), require_gate=require_gate)
    get_run_logger().info(result.summary)
    return result.details


@task(name="preprocess-count", task_run_name="count-{k}", cache_policy=NO_CACHE)
def count_task(work: str, k: int) -> dict:
    """Stage partition k and count its train values."""
    return stages.preprocess_count_stage(work, k)


@task(name="preprocess-cut", cache_policy=NO_CACHE)
def cut_task(work: str) -> dict:
    return stages.preprocess_cut_stage(work)


@task(name="preprocess-merge", cache_policy=NO_CACHE)
def merge_task(work: str) -> dict:
    return stages.preprocess_merge_stage(work)


@task(name="preprocess-encode", task_run_name="encode-{k}", cache_policy=NO_CACHE)
def encode_task(work: str, k: int) -> dict:
    """Encode partition k into its part files."""
    return stages.preprocess_encode_stage(work, k)


@task(name="preprocess-digest", cache_policy=NO_CACHE)
def digest_task(work: str) -> str:
    return stages.preprocess_digest_stage(work)


@task(name="preprocess-finish", cache_policy=NO_CACHE)
def finish_task(work: str, files_digest: str, embedding_dim: int) -> str:
    result = stages.preprocess_finish_stage(work, files_digest, embedding_dim)
    get_run_logger().info(result.summary)
    return result.summary


def task_runner(parallel):
    """The task runner of ``preprocess.parallel`` (runner process or dask)."""
    if parallel.runner == "process":
        return ProcessPoolTaskRunner(max_workers=pool_size(parallel.workers))
    if parallel.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if parallel.dask_address:
            return DaskTaskRunner(address=parallel.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": pool_size(parallel.workers), "threads_per_worker": 1,
                                              "processes": True})
    raise ValueError(f"preprocess.parallel.runner {parallel.runner!r} does not fan out over partitions")


def _fan_out(step, work: str, n: int, pending: list) -> list:
    futures = [step.submit(work, k) for k in range(n)]
    pending += futures
    return [f.result() for f in futures]  # the first failure in partition order is raised


@flow(name="preprocess-partitions")
def preprocess_partitions(params_path: str = "params.yaml", overrides: dict | None = None,
                          require_gate: bool = True) -> str:
    """The preprocess step over a partitioned input, one task per partition and step (module doc);
    returns the stage's summary line. The per-partition tasks retry on transient errors like the
    pipeline's stage tasks (``run.retries``). A failure raises :class:`StageFailed` (stage preprocess)."""
    from flows.pipeline import _options

    overrides = overrides or {}
    try:
        params = load_params(params_path, overrides)
        opts = {k: v for k, v in _options(params, "preprocess").items()
                if k != "timeout_seconds"}  # the stage's timeout bounds the whole subflow
        prep = prepare_task(params_path, overrides, require_gate)
        return _steps(prep["work"], len(prep["units"]), prep["split"], count_task.with_options(**opts),
                      encode_task.with_options(**opts), params.train.embedding_dim)
    except StageFailed:
        raise
    except Exception as exc:
        raise StageFailed("preprocess", exc) from exc


def _steps(work: str, n: int, split: str, count, encode, embedding_dim: int) -> str:
    pending: list = []
    try:
        digest = digest_task.submit(work)
        pending.append(digest)
        _fan_out(count, work, n, pending)
        if split == "time":  # the first pass staged; the time cut-offs decide the train rows
            cut_task(work)
            _fan_out(count, work, n, pending)
        merge_task(work)
        _fan_out(encode, work, n, pending)
        return finish_task(work, digest.result(), embedding_dim)
    except BaseException:
        wait(pending)  # nothing may still write into the work directory
        stages.preprocess_abort_stage(work)
        raise


def run_preprocess(params, params_path: str, overrides: dict, require_gate: bool = True) -> str:
    """Run :func:`preprocess_partitions` as a subflow on the task runner ``params`` chooses, within
    the preprocess stage's timeout (``run.stage_timeout_s``)."""
    sub = preprocess_partitions.with_options(task_runner=task_runner(params.preprocess.parallel),
                                             timeout_seconds=params.run.stage_timeout_s.get("preprocess"))
    return sub(params_path, overrides, require_gate=require_gate)
