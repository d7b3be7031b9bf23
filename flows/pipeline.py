"""The retraining flow: generate (synthetic default only) → validate → preprocess → train_teacher →
distill → evaluate → profile → report [→ dvc commit].

Thin orchestration: each task calls one function of components/stages.py and passes paths and small
dicts, never frames (Prefect's default cache policy would hash them).

The flow holds the run lock (components/runlock.py) for its whole body, so a run started by a Prefect
worker or `ctrflow serve` excludes `ctrflow run`, `dvc repro` and other flow runs on the same checkout
just as they exclude it. Started by `ctrflow run`, which already holds it, the flow re-enters it.
"""

from __future__ import annotations  # noqa: I001  (flows._env must run before prefect is imported)

import shutil
import subprocess
import sys
from pathlib import Path

from flows import _env  # noqa: F401
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.config import load_params
from components import stages
from components.runlock import run_lock
from flows.artifacts import progress_artifact, publish_run_summary
from flows.naming import run_name, tag_run
from flows.versioning import dvc_push_task

# DVC stages whose outputs this flow produces, in order (must match dvc.yaml).
DVC_STAGES_SYNTHETIC = ["generate", "validate", "preprocess", "train_teacher", "distill", "evaluate",
                        "profile", "report"]


def _params(params_path: str, overrides: dict):
    return load_params(params_path, overrides)


def _stage_task(name: str, stage_fn):
    """A Prefect task (named ``name``) running one stage function of components/stages.py; its
    training / tuning progress becomes a progress artifact (flows/artifacts.py)."""

    def run(params_path: str, overrides: dict) -> str:
        with progress_artifact(name):
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


@task(name="publish-summary", cache_policy=NO_CACHE)
def summary_task(params_path: str, overrides: dict) -> str:
    """The run's summary, model table and report link as Prefect artifacts (the UI's Artifacts tab)."""
    from prefect.runtime import flow_run

    publish_run_summary(_params(params_path, overrides), title=f"ctrflow run {flow_run.name or ''}".strip())
    return "published the summary, model table and report link as Prefect artifacts"


@task(name="dvc-commit", cache_policy=NO_CACHE)
def dvc_commit_task(stage_names: list[str]) -> str:
    """Record the outputs the flow wrote in dvc.lock, so they are versioned and `dvc repro` is a no-op."""
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run([dvc, "commit", "--force", *stage_names], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc commit failed: {proc.stderr.strip()}")
    return f"recorded in dvc.lock: {', '.join(stage_names)}"


def _flow_command() -> str:
    """What the lock record says this run is: the flow run's name and its deployment, if any."""
    from prefect.runtime import deployment, flow_run

    command = f"Prefect flow run {flow_run.name or '?'} of ctrflow-pipeline"
    return f"{command}/{deployment.name}" if deployment.name else command


@flow(name="ctrflow-pipeline", flow_run_name=run_name, log_prints=True)
def pipeline(params_path: str = "params.yaml", overrides: dict | None = None,
             dvc_commit: bool = True, dvc_push: bool = False) -> list[str]:
    """Run the pipeline end to end under the run lock; returns one summary line per stage.

    ``dvc_push`` (set by the nightly deployment, prefect.yaml): after the dvc commit, push the outputs
    to the default DVC remote (flows/versioning.py)."""
    overrides = overrides or {}
    params = _params(params_path, overrides)
    tag_run(params)
    with run_lock(params.run, command=_flow_command(), log=lambda msg: get_run_logger().warning(msg)):
        return _run(params, params_path, overrides, dvc_commit, dvc_push)


def _run(params, params_path: str, overrides: dict, dvc_commit: bool, dvc_push: bool = False) -> list[str]:
    summaries = []
    synthetic = params.uses_synthetic
    if synthetic:
        summaries.append(generate_task(params_path, overrides))
    summaries.append(validate_task(params_path, overrides))
    summaries.append(preprocess_task(params_path, overrides))
    summaries.append(train_task(params_path, overrides))
    summaries.append(distill_task(params_path, overrides))
    summaries.append(evaluate_task(params_path, overrides))
    summaries.append(profile_task(params_path, overrides))
    summaries.append(report_task(params_path, overrides))
    summary_task(params_path, overrides)
    in_dvc_repo = Path(".dvc").is_dir()
    same_params = not overrides and Path(params_path).resolve() == Path("params.yaml").resolve()
    if dvc_commit and in_dvc_repo and same_params:
        names = DVC_STAGES_SYNTHETIC if synthetic else DVC_STAGES_SYNTHETIC[1:]
        summaries.append(dvc_commit_task(names))
        if dvc_push:
            summaries.append(dvc_push_task(names))
    elif dvc_commit:
        get_run_logger().info("not recording in dvc.lock: the run used overrides or another params file")
    return summaries


if __name__ == "__main__":
    pipeline()
