"""Distributed tuning workers (docs/scale.md "Distributed tuning workers", components/tune/worker.py).

The main test: a tiny preprocessed log and a 1-epoch teacher built with the stage functions, then two
real `ctrflow distill --worker --student dagfm` processes, started at the same moment on one real
PostgreSQL study database (fixture `postgres_url`) and one checkout, run the dagfm study to its
`tune.n_trials`; no trial is run twice, both contribute, and neither writes the stage's outputs. The
normal distill stage afterwards runs no new trial and keeps the study's best trial.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from components.config import load_params
from components.tune.study import SURPLUS_ATTR, WORKER_ATTR
from tests.conftest import REPO_ROOT, SMALL_RUN, VENV_BIN, write_params

N_TRIALS = 4
ENV = "CTRFLOW_OPTUNA_STORAGE"
TINY = {
    "generate": {"rows": 3000},
    "preprocess": SMALL_RUN["preprocess"],
    "train": {**SMALL_RUN["train"], "max_epochs": 1, "num_threads": 1, "device": "cpu"},
    "distill": {**SMALL_RUN["distill"], "students": ["dagfm"], "baselines": [], "num_threads": 1,
                "device": "cpu"},
    "tune": {"n_trials": N_TRIALS},
}


def _env(storage: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env.update({ENV: storage, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})
    return env


def _ctrflow(*args: str) -> list[str]:
    return [str(VENV_BIN / "ctrflow"), *args]


def test_two_worker_processes_share_one_postgres_study_then_the_stage_keeps_its_best(
        postgres_url, tmp_path, monkeypatch, prefect_server):
    from components.stages import distill_stage, generate_stage, preprocess_stage, train_stage
    from flows.tune_worker import tune_worker_flow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV, postgres_url)
    write_params(tmp_path, **TINY)
    params = load_params("params.yaml")
    generate_stage(params)
    preprocess_stage(params, require_gate=False)
    train_stage(params)

    env = _env(postgres_url)
    t0 = time.monotonic()
    logs = [(tmp_path / f"worker{i}.log").open("w") for i in (0, 1)]
    workers = [subprocess.Popen(_ctrflow("distill", "--worker", "--student", "dagfm"), cwd=tmp_path,
                                env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs]
    for proc in workers:
        proc.wait(timeout=240)
    print(f"\ntwo workers, {N_TRIALS} trials: {time.monotonic() - t0:.1f} s")  # informational (-s)
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in (0, 1)]
    assert [p.returncode for p in workers] == [0, 0], "\n----\n".join(o[-3000:] for o in outputs)
    assert all("tuning worker done" in o for o in outputs)
    # started together, the workers computed the teacher logits once (the cache's flock): one built it,
    # the other waited and reused it
    assert sum(o.count("teacher logits: computing") for o in outputs) == 1

    # the workers wrote none of the stage's outputs
    assert not Path(params.distill.metrics).exists()
    assert not (Path(params.distill.out_dir) / "dagfm").exists()

    storage = optuna.storages.RDBStorage(postgres_url)
    [summary] = optuna.get_all_study_summaries(storage)
    assert summary.study_name.startswith("ctrflow-dagfm-")
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == N_TRIALS
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # every number once
    others = [t for t in trials if t not in finished]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get(SURPLUS_ATTR) for t in others), others
    assert len(others) <= 2                                               # at most one surplus per worker
    param_sets = [json.dumps(t.params, sort_keys=True) for t in finished]
    assert len(set(param_sets)) == N_TRIALS                               # no params set run twice
    pids = {t.system_attrs[WORKER_ATTR]["pid"] for t in finished}
    assert pids == {p.pid for p in workers}                               # both workers contributed
    trials_dir = Path(params.tune.trials_dir) / summary.study_name
    # one directory per completed trial (a pruned one keeps none), nothing half-written beside them
    assert sorted(d.name for d in trials_dir.iterdir()) == sorted(
        str(t.number) for t in finished if t.state == TrialState.COMPLETE)
    # one teacher-logit cache, built once, no half-written copy beside it
    assert [d.name for d in Path(params.distill.logit_cache_dir).iterdir()] != []
    assert not [d for d in Path(params.distill.logit_cache_dir).iterdir() if d.name.startswith(".")]

    # one more worker, as the Prefect deployment runs it (real flow, ephemeral server): the study is
    # full, so it runs nothing
    details = tune_worker_flow(student="dagfm", params_path="params.yaml")
    assert details["studies"]["dagfm"]["ran"] == []
    assert details["studies"]["dagfm"]["n_complete"] + details["studies"]["dagfm"]["n_pruned"] == N_TRIALS
    assert details["studies"]["dagfm"]["study"] == summary.study_name

    # the normal stage: no new trial, the study's best trial promoted
    result = distill_stage(load_params("params.yaml"))
    after = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert len(after.get_trials()) == len(trials)
    best = after.best_trial
    tuned = json.loads(Path(params.distill.metrics).read_text())["dagfm"]["tuned"]
    assert tuned["best_trial"] == best.number and tuned["params"] == best.params
    assert tuned["best_valid_auc"] == pytest.approx(best.value)
    promoted = json.loads((Path(params.distill.out_dir) / "dagfm" / "metrics.json").read_text())
    assert promoted == json.loads((trials_dir / str(best.number) / "metrics.json").read_text())
    assert result.details["students"][0]["tuned"]["best_trial"] == best.number


def test_a_worker_on_sqlite_storage_is_refused_with_the_variable_to_set(tmp_path):
    write_params(tmp_path, **TINY)
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.run(_ctrflow("distill", "--worker"), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "tune.storage is SQLite (sqlite:///optuna/ctrflow.db)" in proc.stderr
    assert f"Set {ENV}=postgresql+psycopg://" in proc.stderr
    assert not (tmp_path / "optuna").exists()  # refused before opening (creating) the database


def test_student_without_worker_is_a_usage_error(tmp_path):
    write_params(tmp_path, **TINY)
    proc = subprocess.run(_ctrflow("distill", "--student", "dagfm"), cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--student needs --worker" in proc.stderr


def test_a_worker_names_the_tuned_students_when_given_another(postgres_url, tmp_path, monkeypatch):
    from components.stages import tune_worker_stage

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV, postgres_url)
    write_params(tmp_path, **TINY)
    with pytest.raises(ValueError, match=r"'fsdnet' has no study to join: .* \['dagfm'\]"):
        tune_worker_stage(load_params("params.yaml"), ["fsdnet"])


def test_a_stage_sweep_spares_the_trials_and_logit_cache_while_a_worker_runs(tmp_path, monkeypatch):
    """A stage run (holding the run lock) sweeps leftovers; a tuning worker takes no lock, so while
    one runs on the checkout its in-progress trial and cache staging must survive, and go after."""
    from components.stages import sweep_leftovers
    from components.tune.worker import worker_presence, workers_present

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, **TINY)
    params = load_params("params.yaml")
    staging = Path(params.tune.trials_dir) / "ctrflow-dagfm-0123456789" / ".3.partial-4242"
    cache_tmp = Path(params.distill.logit_cache_dir) / f".{'a' * 32}.tmp-4242"
    metrics_tmp = Path(params.distill.out_dir) / "dagfm" / ".metrics.json.tmp-4242"
    for d in (staging, cache_tmp, metrics_tmp.parent):
        d.mkdir(parents=True)
    metrics_tmp.write_text("half")
    assert not workers_present(params.run.lock_file)
    with worker_presence(params.run.lock_file):
        assert workers_present(params.run.lock_file)
        assert sweep_leftovers(params, ["distill"]) == [metrics_tmp]  # the stage's own out: swept
        assert staging.is_dir() and cache_tmp.is_dir()
    assert not workers_present(params.run.lock_file)
    assert sorted(sweep_leftovers(params, ["distill"])) == sorted([staging, cache_tmp])
