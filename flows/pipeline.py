"""The retraining flow: generate (synthetic default only) → validate → preprocess → train_teacher →
distill → evaluate → profile → report, each recorded in dvc.lock as soon as it completes.

Recording and skipping (components/dvc_state.py): when the run is params.yaml's own (a DVC repo, the
default params file, no overrides), each stage is committed to dvc.lock right after it completes and,
before it runs, skipped if `dvc status <stage>` finds its deps, params, code and outputs unchanged
since (params.yaml `run.skip_unchanged`, `ctrflow run --force`). So a rerun after a crash or kill -9
redoes only the stages that had not completed; dvc.lock is the only record of what completed.

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

from components.config import load_params
from components import stages
from components.runlock import run_lock


def _params(params_path: str, overrides: dict):
    return load_params(params_path, overrides)


def _stage_task(name: str, stage_fn):
    """A Prefect task (named ``name``) running one stage function of components/stages.py."""

    def run(params_path: str, overrides: dict) -> str:
        result = stage_fn(_params(params_path, overrides))
        logger = get_run_logger()
        logger.info(result.summary)
        for warning in result.details.get("warnings", []):  # e.g. a failed baseline gate under on_fail: warn
            logger.warning(warning)
        return result.summary

    run.__name__ = run.__qualname__ = name.replace("-", "_") + "_task"
    return task(name=name, cache_policy=NO_CACHE)(run)


generate_task = _stage_task("generate", stages.generate_stage)
validate_task = _stage_task("validate", stages.validate_stage)
preprocess_task = _stage_task("preprocess", stages.preprocess_stage)
train_task = _stage_task("train-teacher", stages.train_stage)
distill_task = _stage_task("distill-students", stages.distill_stage)
evaluate_task = _stage_task("evaluate", stages.evaluate_stage)
profile_task = _stage_task("profile", stages.profile_stage)
report_task = _stage_task("report", stages.report_stage)


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


@flow(name="ctrflow-pipeline", log_prints=True)
def pipeline(params_path: str = "params.yaml", overrides: dict | None = None,
             dvc_commit: bool = True, force: bool = False) -> list[str]:
    """Run the pipeline end to end under the run lock; returns one summary line per stage.

    When the run records in dvc.lock (``dvc_commit``, a DVC repo, the repository's params.yaml and no
    overrides), each stage is recorded as soon as it completes, and a stage that DVC reports unchanged
    since its last complete run is skipped (``run.skip_unchanged``; ``force`` runs every stage).
    """
    overrides = overrides or {}
    params = _params(params_path, overrides)
    with run_lock(params.run, command=_flow_command(), log=lambda msg: get_run_logger().warning(msg)):
        return _run(params, params_path, overrides, dvc_commit, force)


def _run(params, params_path: str, overrides: dict, dvc_commit: bool, force: bool = False) -> list[str]:
    from components import dvc_state

    logger = get_run_logger()
    plan = [("generate", generate_task)] if params.uses_synthetic else []
    plan += [("validate", validate_task), ("preprocess", preprocess_task), ("train_teacher", train_task),
             ("distill", distill_task), ("evaluate", evaluate_task), ("profile", profile_task),
             ("report", report_task)]
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
        summaries.append(stage_task(params_path, overrides))
        if record:  # at once, so a kill in a later stage keeps this one
            logger.info(dvc_commit_task([name]))
            recorded.append(name)
    if record:
        summaries.append(f"recorded in dvc.lock: {', '.join(recorded) or 'nothing (all stages skipped)'}")
    return summaries


if __name__ == "__main__":
    pipeline()
