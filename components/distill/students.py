"""The distill stage's logic: every configured student, Optuna-tuned where a search space exists.

For each name in ``distill.students``:

- with a ``tune.search_space`` entry for it: an Optuna study ``<tune.study_prefix>-<student>``
  (resumable, storage ``tune.storage``) whose trials each run the student's whole procedure with the
  suggested hyperparameters (the reference defaults as trial 0), pruned on the per-epoch validation
  AUC; every trial writes into ``<tune.trials_dir>/<study>/<number>`` (outside DVC's outputs, so a
  killed study resumes with its finished trials); the study name carries a hash of the teacher,
  the student's settings and the space, so changed inputs start a new study; the best trial's
  directory becomes ``<distill.out_dir>/<student>`` and the study's table ``<student>/study/``;
- without one: a single run with the params.yaml settings.

Then each name in ``distill.baselines`` is trained from scratch with BCE only
(``<distill.out_dir>/baseline_<name>``), the "same student without distillation" comparison.
Returns one summary per run: valid/test AUC and LogLoss, parameters, tuned values.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.config import Params
from components.distill.baseline import run_student_baseline
from components.distill.kd_dagfm import run_kd_dagfm
from components.distill.self_distill import run_fsdnet
from components.distill.settings import KD_STUDENTS, DistillParams
from components.tune.storage import masked_url


def with_overrides(settings: DistillParams, student: str, values: dict[str, Any]) -> DistillParams:
    """``settings`` with ``values`` replacing keys of the student's block (validated by pydantic)."""
    block = settings.block(student)
    new_block = type(block).model_validate({**block.model_dump(), **values})
    return settings.model_copy(update={student: new_block})


def run_student(student: str, settings: DistillParams, teacher_dir: Path, processed_dir: Path,
                out_dir: Path, *, trial_callback: Callable | None = None, log=print) -> dict:
    """One full procedure of ``student`` (KD chain or FSDNet self-distillation) into ``out_dir``."""
    if student in KD_STUDENTS:
        return run_kd_dagfm(teacher_dir, processed_dir, settings, out_dir, student=student,
                            trial_callback=trial_callback, log=log)
    if student == "fsdnet":
        needs_teacher = settings.fsdnet.external_teacher_weight > 0 or settings.logistic_base
        return run_fsdnet(processed_dir, settings, out_dir, teacher_dir=teacher_dir if needs_teacher else None,
                          trial_callback=trial_callback, log=log)
    raise ValueError(f"unknown student {student!r}; known: {[*KD_STUDENTS, 'fsdnet']}")


def _summary(name: str, metrics: dict, tuned: dict | None = None) -> dict:
    final = metrics.get("final", {})
    return {
        "student": name,
        "valid": final.get("valid"),
        "test": final.get("test"),
        "parameters": metrics.get("parameters"),
        "tuned": tuned,
    }


def _replace_dir(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temp sibling, so ``dst`` is never half-written."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    tmp.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def study_key(student: str, params: Params, teacher_dir: Path) -> str:
    """Short hash of what a study's trials depend on: the teacher's weights and data, the student's
    fixed settings and the search space. A change starts a new study instead of resuming a stale one."""
    import hashlib
    import json

    meta = json.loads((teacher_dir / "model.json").read_text())
    fields = {
        "teacher": meta.get("weights_sha256") or meta,
        "feature_map": meta.get("feature_map_hash"),
        "block": params.distill.block(student).model_dump(mode="json"),
        "space": {k: v.model_dump(mode="json") for k, v in params.tune.space_for(student).items()},
        "seed": params.distill.seed,
    }
    if params.distill.logistic_base and (meta.get("hparams") or {}).get("logistic_base"):
        fields["logistic_base"] = True  # the student carries the teacher's LR: another model (absent: keys as before)
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _student_study(student: str, params: Params, teacher_dir: Path, processed_dir: Path, *,
                   log=print, worker: int = 0, ran: list[int] | None = None):
    """Run (or resume, or join) the student's Optuna study; returns (StudyResult, trials_dir).

    ``worker`` is the sampler-seed index (:func:`components.tune.study.run_study`); the number of
    every trial this call runs is appended to ``ran``."""
    import optuna

    from components.tune.pruning import pruning_callback
    from components.tune.space import fixed_values, suggest_params
    from components.tune.study import run_study

    space = params.tune.space_for(student)
    name = f"{student}-{study_key(student, params, teacher_dir)}"
    trials_dir = Path(params.tune.trials_dir) / f"{params.tune.study_prefix}-{name}"

    def objective(trial: optuna.Trial) -> float:
        if ran is not None:
            ran.append(trial.number)
        values = suggest_params(trial, space, f"tune.search_space.{student}")
        settings = with_overrides(params.distill, student, values)
        log(f"[{student} trial {trial.number}] {values}")
        metrics = run_student(student, settings, teacher_dir, processed_dir,
                              trials_dir / str(trial.number), trial_callback=pruning_callback(trial), log=log)
        return float(metrics["final"]["valid"]["auc"])

    defaults = params.tune.defaults_for(student)
    log(f"[{student}] Optuna study {params.tune.study_prefix}-{name} in {masked_url(params.tune.storage)}")
    result = run_study(name, objective, params.tune, worker=worker,
                       defaults=fixed_values(space, defaults) if defaults else None)
    return result, trials_dir


def tune_student(student: str, params: Params, teacher_dir: Path, processed_dir: Path,
                 out_dir: Path, *, log=print) -> dict:
    """Optuna study over the student's search space; the best trial's outputs land in out_dir/<student>."""
    import json

    from components.tune.outputs import write_study_outputs

    result, trials_dir = _student_study(student, params, teacher_dir, processed_dir, log=log)
    if result.best_number is None:
        raise RuntimeError(f"study {result.study_name}: no trial completed; see its trials table")
    best_dir = trials_dir / str(result.best_number)
    if not best_dir.exists():
        raise RuntimeError(f"study {result.study_name}: best trial {result.best_number} has no outputs "
                           f"in {best_dir} (run on another machine? give every worker the same "
                           f"tune.trials_dir, or copy that directory here: docs/scale.md)")
    _replace_dir(best_dir, out_dir / student)
    write_study_outputs(result, out_dir / student / "study", timings=False)  # a DVC out
    metrics = json.loads((out_dir / student / "metrics.json").read_text())
    tuned = {"best_trial": result.best_number, "best_valid_auc": result.best_value,
             "params": result.best_params, "complete": result.n_complete, "pruned": result.n_pruned}
    return _summary(student, metrics, tuned)


def tuned_students(params: Params) -> list[str]:
    """The students of ``distill.students`` that have a ``tune.search_space`` (those with a study)."""
    return [s for s in params.distill.students if s in params.tune.search_space]


def join_student_study(params: Params, student: str, *, worker: int, log=print) -> dict:
    """A tuning worker's share of ``student``'s study: run trials until the study holds
    ``tune.n_trials`` finished trials, then return, writing none of the stage's outputs (no
    checkpoints promoted, no metrics). Returns the study's counts, best trial and this call's trials."""
    teacher_dir = Path(params.train.out_dir)
    processed_dir = Path(params.preprocess.out_dir)
    if student not in tuned_students(params):
        raise ValueError(f"{student!r} has no study to join: the tuned students (in distill.students "
                         f"with a tune.search_space entry) are {tuned_students(params)}")
    if not (teacher_dir / "model.json").exists():
        raise FileNotFoundError(f"{teacher_dir}/model.json: no trained teacher; run `ctrflow train` "
                                f"(or `dvc pull`) on this machine first")
    if not (processed_dir / "feature_map.json").exists():
        raise FileNotFoundError(f"{processed_dir}/feature_map.json: no preprocessed data; run "
                                f"`ctrflow preprocess` (or `dvc pull`) on this machine first")
    ran: list[int] = []
    result, trials_dir = _student_study(student, params, teacher_dir, processed_dir, log=log,
                                        worker=worker, ran=ran)
    return {"study": result.study_name, "n_trials": params.tune.n_trials,
            "n_complete": result.n_complete, "n_pruned": result.n_pruned, "n_failed": result.n_failed,
            "n_running": result.n_running, "best_trial": result.best_number,
            "best_value": result.best_value, "ran": sorted(ran), "trials_dir": str(trials_dir)}


def distill_names(params: Params) -> list[str]:
    """What the distill stage trains, in order: every student, then ``baseline_<name>`` per baseline."""
    return [*params.distill.students, *(f"baseline_{b}" for b in params.distill.baselines)]


def distill_one(params: Params, name: str, *, log=print) -> dict:
    """Train one entry of :func:`distill_names`: a student (tuned where a search space exists) or a
    ``baseline_<name>`` (the student's architecture trained on labels alone); returns its summary."""
    teacher_dir = Path(params.train.out_dir)
    processed_dir = Path(params.preprocess.out_dir)
    out_dir = Path(params.distill.out_dir)
    if name not in distill_names(params):
        raise ValueError(f"{name!r} is neither in distill.students nor baseline_<distill.baselines>: "
                         f"{distill_names(params)}")
    if not (teacher_dir / "model.json").exists():
        raise FileNotFoundError(f"{teacher_dir}/model.json: no trained teacher; run `ctrflow train` first")
    if name.startswith("baseline_") and name not in params.distill.students:
        import json

        teacher_dim = json.loads((teacher_dir / "model.json").read_text())["hparams"].get("embedding_dim")
        metrics = run_student_baseline(name.removeprefix("baseline_"), processed_dir, params.distill,
                                       out_dir / name, embedding_dim=teacher_dim, log=log)
        return _summary(name, metrics)
    if name in params.tune.search_space:
        return tune_student(name, params, teacher_dir, processed_dir, out_dir, log=log)
    metrics = run_student(name, params.distill, teacher_dir, processed_dir, out_dir / name, log=log)
    return _summary(name, metrics)


def distill_students(params: Params, *, log=print) -> list[dict]:
    """Run every configured student (tuned where a search space exists) and every baseline, in turn."""
    return [distill_one(params, name, log=log) for name in distill_names(params)]
