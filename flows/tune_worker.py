"""A tuning worker as a Prefect flow: the deployment ``tune-worker`` (prefect.yaml) that an operator runs
N times at once, one run per machine, to spread a student's (or the teacher's) Optuna study over N
machines (docs/scale.md "Distributed tuning workers").

Thin wiring: one task calls :func:`components.stages.tune_worker_stage`, the function behind
``ctrflow distill --worker`` / ``ctrflow train --worker``. Unlike the pipeline flow it takes no run
lock and commits nothing to DVC: it only adds trials to the shared study (and their directories under
``tune.trials_dir``); the pipeline's distill / train stage keeps the best trial afterwards.
"""

from __future__ import annotations  # noqa: I001  (flows._env must run before prefect is imported)

from flows import _env  # noqa: F401
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components import stages
from components.config import load_params
from components.transient import StageFailed, is_transient
from flows.artifacts import progress_artifact


def _retry_on_transient(task, task_run, state) -> bool:
    return is_transient(state.result(raise_on_failure=False))


@task(name="tune-worker", task_run_name="tune-{study}", cache_policy=NO_CACHE)
def tune_worker_task(params_path: str, overrides: dict, study: str | None) -> dict:
    """Run trials of ``study`` (a tuned student, ``teacher``, or None: every tuned student) until it
    holds its ``n_trials`` finished trials; returns the stage's details (small dicts)."""
    try:
        with progress_artifact(f"tune-{study or 'students'}"):
            result = stages.tune_worker_stage(load_params(params_path, overrides),
                                              [study] if study else None)
    except Exception as exc:
        raise StageFailed(f"tune worker ({study or 'every tuned student'})", exc) from exc
    get_run_logger().info(result.summary)
    return result.details


@flow(name="ctrflow-tune-worker", log_prints=True)
def tune_worker_flow(student: str | None = None, params_path: str = "params.yaml",
                     overrides: dict | None = None) -> dict:
    """One tuning worker: join the study of ``student`` (a tuned student of ``distill.students``;
    ``teacher`` for the ``train.tune`` study; None: every tuned student in turn) and run trials until
    it holds ``n_trials`` finished trials in total, however many other workers run beside it.

    Needs ``tune.storage`` to be a database every worker reaches (PostgreSQL, via the variable named
    by ``tune.storage_env``); SQLite is refused. A transient database error retries the task
    (``run.retries``): the retry just rejoins the study. Returns per study: counts, the best trial so
    far and the trial numbers this worker ran.
    """
    overrides = overrides or {}
    r = load_params(params_path, overrides).run
    options = {"retries": r.retries, "retry_condition_fn": _retry_on_transient,
               "retry_delay_seconds": r.retry_delay_s}
    return tune_worker_task.with_options(**options)(params_path, overrides, student)
