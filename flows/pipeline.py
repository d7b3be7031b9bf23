"""The retraining flow: [nothing new? end early] → generate (synthetic default only) → validate →
preprocess (a task per partition and step on a process pool or Dask cluster when
``preprocess.parallel`` asks: flows/preprocess.py) → train_teacher → distill (one task per student) →
evaluate → profile → report → promote (champion / challenger) → Prefect artifacts → retention (gc) →
record the run's partitions.

Recording and skipping (components/dvc_state.py): when the run is params.yaml's own (a DVC repo, the
default params file, no overrides), each stage is committed to dvc.lock right after it completes and,
before it runs, skipped if `dvc status <stage>` finds its deps, params, code and outputs unchanged
since (params.yaml `run.skip_unchanged`, `ctrflow run --force`). So a rerun after a crash or kill -9
redoes only the stages that had not completed; dvc.lock is the only record of what completed.

Failures: a stage task is retried (`run.retries`, exponential back-off from `run.retry_delay_s`) only
after a transient I/O or database error (components/transient.py); a failed gate, bad input or a bad
parameter is final at once. The flow run's state message names the failed stage and its cause.
`run.stage_timeout_s` bounds a stage's task. The UI shows the run's summary, model table, report link
and per-model progress as artifacts (flows/artifacts.py).

Thin orchestration: each task calls one function of components/stages.py and passes paths and small
dicts, never frames (Prefect's default cache policy would hash them).

The flow holds the run lock (components/runlock.py) for its whole body, so a run started by a Prefect
worker or `ctrflow serve` excludes `ctrflow run`, `dvc repro` and other flow runs on the same checkout
just as they exclude it. Started by `ctrflow run`, which already holds it, the flow re-enters it.
"""

from __future__ import annotations  # noqa: I001  (flows._env must run before prefect is imported)

from pathlib import Path

from flows import _env  # noqa: F401
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from components.config import load_params
from components import stages
from components.runlock import run_lock
from components.transient import StageFailed, is_transient
from flows.artifacts import progress_artifact, publish_run_summary
from flows.naming import run_name, tag_run
from flows.preprocess import run_preprocess
from flows.versioning import dvc_push_task


def _params(params_path: str, overrides: dict):
    return load_params(params_path, overrides)


def _log_result(result) -> str:
    logger = get_run_logger()
    logger.info(result.summary)
    for warning in result.details.get("warnings", []):  # e.g. a failed baseline gate under on_fail: warn
        logger.warning(warning)
    return result.summary


def _stage_task(name: str, stage_fn):
    """A Prefect task (named ``name``) running one stage function of components/stages.py; its
    training / tuning progress becomes a progress artifact (flows/artifacts.py); a failure is raised as
    :class:`StageFailed` naming the stage."""

    def run(params_path: str, overrides: dict) -> str:
        try:
            with progress_artifact(name):
                result = stage_fn(_params(params_path, overrides))
        except Exception as exc:
            raise StageFailed(name, exc) from exc
        return _log_result(result)

    run.__name__ = run.__qualname__ = name.replace("-", "_") + "_task"
    return task(name=name, cache_policy=NO_CACHE)(run)


generate_task = _stage_task("generate", stages.generate_stage)
validate_task = _stage_task("validate", stages.validate_stage)
preprocess_task = _stage_task("preprocess", stages.preprocess_stage)
train_task = _stage_task("train-teacher", stages.train_stage)
evaluate_task = _stage_task("evaluate", stages.evaluate_stage)
profile_task = _stage_task("profile", stages.profile_stage)
report_task = _stage_task("report", stages.report_stage)
promote_task = _stage_task("promote", stages.promote_stage)


@task(name="distill-student", task_run_name="distill-{name}", cache_policy=NO_CACHE)
def distill_student_task(params_path: str, overrides: dict, name: str) -> dict:
    """One student (or baseline) of the distill stage; returns its summary dict (small)."""
    try:
        with progress_artifact(f"distill-{name}"):
            result = stages.distill_student_stage(_params(params_path, overrides), name)
    except Exception as exc:
        raise StageFailed(f"distill ({name})", exc) from exc
    _log_result(result)
    return result.details["student"]


@task(name="distill-summary", cache_policy=NO_CACHE)
def distill_summary_task(params_path: str, overrides: dict, summaries: list[dict]) -> str:
    return _log_result(stages.distill_summary_stage(_params(params_path, overrides), summaries))


@task(name="check-new-data", cache_policy=NO_CACHE)
def new_data_task(params_path: str, overrides: dict) -> dict:
    """Is there a partition the last successful run did not train on? (details of the check)"""
    result = stages.new_data_stage(_params(params_path, overrides))
    get_run_logger().info(result.summary)
    return {**result.details, "summary": result.summary}


@task(name="publish-summary", cache_policy=NO_CACHE)
def summary_task(params_path: str, overrides: dict) -> str:
    """The run's summary, model table and report link as Prefect artifacts (the UI's Artifacts tab)."""
    from prefect.runtime import flow_run

    publish_run_summary(_params(params_path, overrides), title=f"ctrflow run {flow_run.name or ''}".strip())
    return "published the summary, model table and report link as Prefect artifacts"


@task(name="gc", cache_policy=NO_CACHE)
def gc_task(params_path: str, overrides: dict, before_dvc_commit: bool) -> dict:
    """The retention policy (params.yaml ``retention``); right before a dvc commit when recording."""
    result = stages.gc_stage(_params(params_path, overrides), before_dvc_commit=before_dvc_commit)
    get_run_logger().info(result.summary)
    return {"line": result.summary.splitlines()[-1], "removed": len(result.outputs)}


@task(name="record-success", cache_policy=NO_CACHE)
def record_success_task(params_path: str, overrides: dict) -> str:
    """What this successful run trained on (``run.state_file``), for the next run's nothing-new check."""
    return _log_result(stages.record_success_stage(_params(params_path, overrides)))


@task(name="dvc-commit", cache_policy=NO_CACHE)
def dvc_commit_task(stage_names: list[str]) -> str:
    """Record the outputs a stage wrote in dvc.lock (`dvc commit --force`), so they are versioned, `dvc
    repro` is a no-op and a rerun after a kill skips the stage."""
    from components import dvc_state

    dvc_state.commit(stage_names)
    return f"recorded in dvc.lock: {', '.join(stage_names)}"


def _flow_command() -> str:
    """What the lock record says this run is: the flow run's name and its deployment, if any."""
    from prefect.runtime import deployment, flow_run

    command = f"Prefect flow run {flow_run.name or '?'} of ctrflow-pipeline"
    return f"{command}/{deployment.name}" if deployment.name else command


@flow(name="ctrflow-pipeline", flow_run_name=run_name, log_prints=True)
def pipeline(params_path: str = "params.yaml", overrides: dict | None = None,
             dvc_commit: bool = True, force: bool = False, dvc_push: bool = False) -> list[str]:
    """Run the pipeline end to end under the run lock; returns one summary line per stage.

    When the run records in dvc.lock (``dvc_commit``, a DVC repo, the repository's params.yaml and no
    overrides), each stage is recorded as soon as it completes, and a stage that DVC reports unchanged
    since its last complete run is skipped (``run.skip_unchanged``; ``force`` runs every stage).
    ``dvc_push`` (set by the nightly deployment, prefect.yaml): after the run's last dvc commit, push
    the outputs to the default DVC remote (flows/versioning.py).
    """
    overrides = overrides or {}
    params = _params(params_path, overrides)
    tag_run(params)
    with run_lock(params.run, command=_flow_command(), log=lambda msg: get_run_logger().warning(msg)):
        return _run(params, params_path, overrides, dvc_commit, force, dvc_push)


def _retry_on_transient(task, task_run, state) -> bool:
    return is_transient(state.result(raise_on_failure=False))


def _options(params, stage: str) -> dict:
    """Retries (transient errors only, exponential back-off) and the stage's timeout, from params."""
    r = params.run
    opts = {"retries": r.retries, "retry_condition_fn": _retry_on_transient,
            "retry_delay_seconds": exponential_backoff(r.retry_delay_s) if r.retries else 0}
    if stage in r.stage_timeout_s:
        opts["timeout_seconds"] = r.stage_timeout_s[stage]
    return opts


def _distill(params, params_path: str, overrides: dict) -> str:
    """The distill stage as one task per student (``run.parallel_students`` at once), then its summary."""
    from components.distill.students import distill_names

    student = distill_student_task.with_options(**_options(params, "distill"))
    names, k = distill_names(params), params.run.parallel_students
    summaries: list[dict] = []
    for i in range(0, len(names), k):
        chunk = names[i:i + k]
        if k == 1:
            summaries.append(student(params_path, overrides, chunk[0]))
        else:
            futures = [student.submit(params_path, overrides, n) for n in chunk]
            summaries += [f.result() for f in futures]
    return distill_summary_task(params_path, overrides, summaries)


def _preprocess(params, params_path: str, overrides: dict) -> str:
    """The preprocess stage: one task, or a subflow with a task per partition and step when the input
    is partitioned and ``preprocess.parallel.runner`` is process or dask (flows/preprocess.py)."""
    if stages.preprocess_fans_out(params):
        return run_preprocess(params, params_path, overrides)
    return preprocess_task.with_options(**_options(params, "preprocess"))(params_path, overrides)


def _run(params, params_path: str, overrides: dict, dvc_commit: bool, force: bool = False,
         dvc_push: bool = False) -> list[str]:
    from components import dvc_state

    logger = get_run_logger()
    check = new_data_task(params_path, overrides)
    if check["skip"]:
        return [check["summary"]]
    plan = [("generate", generate_task)] if params.uses_synthetic else []
    plan += [("validate", validate_task), ("preprocess", None), ("train_teacher", train_task),
             ("distill", None), ("evaluate", evaluate_task), ("profile", profile_task),
             ("report", report_task), ("promote", promote_task)]
    # dvc.lock describes params.yaml's run only: a run with overrides or another params file neither
    # records nor skips (its outputs would be checked against, and recorded as, params.yaml's).
    same_params = not overrides and Path(params_path).resolve() == Path("params.yaml").resolve()
    record = dvc_commit and dvc_state.in_dvc_repo() and same_params
    skip = record and params.run.skip_unchanged and not force
    if dvc_commit and not record:
        logger.info("not recording in dvc.lock: the run used overrides or another params file")
    # Under the run lock no other writer lives: temp files among the outputs are a killed run's.
    stages.sweep_leftovers(params, [name for name, _ in plan], log=logger.warning)
    if record:
        dvc_state.sweep_leftovers(log=logger.warning)
    summaries, recorded = [], []
    for name, stage_task in plan:
        if skip and dvc_state.is_unchanged(name):
            line = f"skipped {name}: unchanged since its last complete run (dvc.lock)"
            logger.info(line)
            summaries.append(line)
            continue
        if stage_task is None:  # a stage of several tasks
            summaries.append({"preprocess": _preprocess, "distill": _distill}[name](params, params_path, overrides))
        else:
            summaries.append(stage_task.with_options(**_options(params, name))(params_path, overrides))
        if record:  # at once, so a kill in a later stage keeps this one
            logger.info(dvc_commit_task([name]))
            recorded.append(name)
    summary_task(params_path, overrides)
    if params.retention.after_run:
        gc = gc_task(params_path, overrides, record)
        summaries.append(gc["line"])
        if record and gc["removed"]:  # gc pruned old caches inside recorded outputs: record them again
            logger.info(dvc_commit_task([name for name, _ in plan]))
    if record:
        summaries.append(f"recorded in dvc.lock: {', '.join(recorded) or 'nothing (all stages skipped)'}")
        if dvc_push:  # every recorded output to the default remote: restorable by git checkout + dvc pull
            summaries.append(dvc_push_task([name for name, _ in plan]))
    record_success_task(params_path, overrides)
    return summaries


if __name__ == "__main__":
    pipeline()
