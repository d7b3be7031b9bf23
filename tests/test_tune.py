"""Optuna tuning infrastructure: search spaces, total-N studies, defaults, kill/resume, pruning,
outputs, and two workers sharing one study on a real PostgreSQL server."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from components.tune import (
    SearchSpaceError,
    StudyResult,
    TuneParams,
    fixed_values,
    parse_space,
    pruning_callback,
    run_study,
    suggest_params,
    write_study_outputs,
)
from components.tune.study import DEFAULTS_ATTR, SURPLUS_ATTR

REPO_ROOT = Path(__file__).resolve().parents[1]
MARKER_ENV = "CTRFLOW_TUNE_TEST_MARKER"
TOY_DEFAULTS = {"x": 0.25, "n": 3, "kind": "b"}

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---- top-level toy objectives (picklable: worker processes import them from this module) ----

def toy_objective(trial: optuna.Trial) -> float:
    """Maximised at x = 0.5, n = 2, kind = 'a'; each trial notes its worker's pid."""
    x = trial.suggest_float("x", 0.0, 1.0)
    n = trial.suggest_int("n", 1, 4)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    trial.set_user_attr("pid", os.getpid())
    return -((x - 0.5) ** 2) - 0.1 * abs(n - 2) - (0.2 if kind == "b" else 0.0)


def sleepy_objective(trial: optuna.Trial) -> float:
    """toy_objective after 0.2 s, so two workers overlap."""
    time.sleep(0.2)
    return toy_objective(trial)


def hang_on_second_trial(trial: optuna.Trial) -> float:
    """Trial 1 writes the marker file named by $CTRFLOW_TUNE_TEST_MARKER and sleeps (to be killed)."""
    x = trial.suggest_float("x", 0.0, 1.0)
    if trial.number == 1:
        Path(os.environ[MARKER_ENV]).write_text("running")
        time.sleep(120)
    return x


def _params(tmp_path: Path, **kw) -> TuneParams:
    base = {"storage": f"sqlite:///{tmp_path / 'studies' / 'optuna.db'}", "n_trials": 3,
            "heartbeat_interval": 1, "grace_period": 2, "seed": 7}
    return TuneParams.model_validate(base | kw)


def _trials(params: TuneParams, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=f"{params.study_prefix}-{name}", storage=params.storage)
    return sorted(study.get_trials(), key=lambda t: t.number)


# ---- search space ------------------------------------------------------------------------------

def test_suggest_params_respects_bounds_types_log_and_step():
    space = {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
             "w": {"type": "float", "low": 0.5, "high": 2.0, "step": 0.25},
             "depth": {"type": "int", "low": 2, "high": 5},
             "width": {"type": "int", "low": 1, "high": 64, "log": True},
             "kind": {"type": "categorical", "choices": ["inner", 3, True]}}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    draws = []
    for _ in range(300):
        trial = study.ask()
        draws.append(suggest_params(trial, space))
        study.tell(trial, 0.0)
    lr = [d["lr"] for d in draws]
    assert all(1e-4 <= v <= 1e-1 for v in lr)
    # log-uniform: P(lr < 1e-2) = log(1e-2/1e-4) / log(1e-1/1e-4) = 2/3 (uniform would give 0.099)
    assert 0.58 < sum(v < 1e-2 for v in lr) / len(lr) < 0.75
    assert {d["w"] for d in draws} == {0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0}
    assert {d["depth"] for d in draws} == {2, 3, 4, 5}
    assert all(type(d["depth"]) is int and type(d["width"]) is int for d in draws)
    assert all(1 <= d["width"] <= 64 for d in draws)
    assert {d["kind"] for d in draws} == {"inner", 3, True}
    dist = study.trials[0].distributions
    assert dist["lr"].log is True and dist["w"].step == 0.25 and dist["width"].log is True


@pytest.mark.parametrize("spec, words", [
    ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "log scale needs low > 0"),
    ({"type": "float", "low": 2.0, "high": 1.0}, "low <= high"),
    ({"type": "float", "low": 0.1}, "needs both `low` and `high`"),
    ({"type": "int", "low": 1.5, "high": 4}, "whole numbers"),
    ({"type": "categorical", "choices": []}, "non-empty `choices`"),
    ({"type": "categorical", "choices": ["a"], "low": 1}, "takes only `choices`"),
    ({"type": "float", "low": 1e-3, "high": 1.0, "log": True, "step": 0.1}, "cannot be combined"),
    ({"type": "float", "low": 0, "high": 1, "hi": 3}, "hi: Extra inputs are not permitted"),
    ({"type": "uniform", "low": 0, "high": 1}, "type: Input should be"),
])
def test_bad_spec_error_names_the_key(spec, words):
    with pytest.raises(SearchSpaceError) as e:
        parse_space({"ok": {"type": "int", "low": 1, "high": 2}, "lr": spec}, "search_space.dagfm")
    assert str(e.value).startswith("search_space.dagfm.lr: ")
    assert words in str(e.value)


def test_fixed_values_check_and_cast_defaults():
    space = {"tau": {"type": "float", "low": 0.5, "high": 3.0},
             "depth": {"type": "int", "low": 2, "high": 4},
             "kind": {"type": "categorical", "choices": ["inner", "outer"]}}
    got = fixed_values(space, {"tau": 1, "depth": 3.0, "kind": "outer"})
    assert got == {"tau": 1.0, "depth": 3, "kind": "outer"}
    assert type(got["tau"]) is float and type(got["depth"]) is int
    with pytest.raises(SearchSpaceError, match=r"defaults\.tau: 4 is outside"):
        fixed_values(space, {"tau": 4, "depth": 3, "kind": "outer"})
    with pytest.raises(SearchSpaceError, match=r"missing \['kind'\], unknown \['kin'\]"):
        fixed_values(space, {"tau": 1, "depth": 3, "kin": "outer"})


def test_tune_params_defaults_and_rules():
    p = TuneParams()
    assert p.n_trials == 3 and p.storage == "sqlite:///optuna/ctrflow.db"
    for student in ("dagfm", "fsdnet"):  # the shipped defaults lie inside the shipped spaces
        assert fixed_values(p.space_for(student), p.defaults_for(student)) == p.defaults[student]
    assert p.defaults_for("dagfm")["beta"] == 921.6
    bad_default = {"defaults": {"dagfm": {**p.defaults["dagfm"], "lr": 1.0}}}
    with pytest.raises(ValueError, match=r"tune\.defaults\.dagfm\.lr: 1\.0 is outside"):
        TuneParams.model_validate(bad_default)
    with pytest.raises(ValueError, match=r"tune\.defaults\.dagfm: keys must match.*missing \['depth'\]"):
        TuneParams.model_validate({"defaults": {"dagfm": {k: v for k, v in p.defaults["dagfm"].items()
                                                          if k != "depth"}}})
    with pytest.raises(ValueError, match="grace_period .* must exceed"):
        TuneParams(heartbeat_interval=10, grace_period=10)
    with pytest.raises(ValueError, match="heartbeats need an RDB"):
        TuneParams(storage="journal.log")
    with pytest.raises(ValueError, match="n_triasl"):
        TuneParams.model_validate({"n_triasl": 3})
    with pytest.raises(KeyError, match="declared: \\['dagfm', 'fsdnet'\\]"):
        p.space_for("afm")


# ---- study: defaults, total N, resume ------------------------------------------------------------

def test_defaults_are_trial_zero_and_n_trials_is_the_total(tmp_path):
    calls = []

    def counted(trial):
        calls.append(trial.number)
        return toy_objective(trial)

    p3 = _params(tmp_path, n_trials=3)
    r = run_study("toy", counted, p3, defaults=TOY_DEFAULTS)
    assert (r.n_complete, r.n_pruned, r.n_failed, len(r.trials_table)) == (3, 0, 0, 3)
    first = _trials(p3, "toy")
    assert first[0].params == TOY_DEFAULTS and first[0].user_attrs[DEFAULTS_ATTR] is True
    # value of the defaults: -(0.25-0.5)^2 - 0.1*|3-2| - 0.2 = -0.3625
    assert first[0].value == pytest.approx(-0.3625)
    assert r.trials_table[0]["note"] == "reference defaults"
    assert r.best_value == max(t.value for t in first)

    # "killed and started again" with the same budget: nothing runs, nothing is enqueued.
    r = run_study("toy", counted, p3, defaults=TOY_DEFAULTS)
    assert calls == [0, 1, 2] and len(r.trials_table) == 3

    # A bigger budget adds only the difference and keeps the finished trials.
    r = run_study("toy", counted, _params(tmp_path, n_trials=5), defaults=TOY_DEFAULTS)
    assert calls == [0, 1, 2, 3, 4]
    after = _trials(p3, "toy")
    assert [t.number for t in after] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in after) and r.n_complete == 5
    assert [(t.params, t.value) for t in after[:3]] == [(t.params, t.value) for t in first]
    assert sum(DEFAULTS_ATTR in t.user_attrs for t in after) == 1
    assert len({tuple(sorted(t.params.items())) for t in after}) == 5  # resume resampled, no replay


def test_only_the_creator_enqueues_defaults_and_joiners_wait_for_them(tmp_path, monkeypatch):
    """A worker that finds the study already created never enqueues the defaults (the creator
    does, atomically with creating it); it waits for that first trial so the defaults are trial 0."""
    monkeypatch.setattr("components.tune.study._JOIN_WAIT_S", 5.0)
    p = _params(tmp_path, n_trials=2)
    (tmp_path / "studies").mkdir()
    creator = optuna.create_study(study_name="ctrflow-join", storage=p.storage,
                                  direction="maximize")
    timer = threading.Timer(0.5, creator.enqueue_trial, args=(TOY_DEFAULTS,),
                            kwargs={"user_attrs": {DEFAULTS_ATTR: True}})
    timer.start()
    t0 = time.monotonic()
    run_study("join", toy_objective, p, defaults=TOY_DEFAULTS)
    timer.join()
    assert time.monotonic() - t0 >= 0.5
    trials = _trials(p, "join")
    assert [t.params == TOY_DEFAULTS for t in trials] == [True, False]
    assert sum(DEFAULTS_ATTR in t.user_attrs for t in trials) == 1

    # A creator that never enqueues: the joiner gives up waiting and enqueues nothing itself.
    monkeypatch.setattr("components.tune.study._JOIN_WAIT_S", 0.2)
    optuna.create_study(study_name="ctrflow-orphan", storage=p.storage, direction="maximize")
    run_study("orphan", toy_objective, p, defaults=TOY_DEFAULTS)
    assert [DEFAULTS_ATTR in t.user_attrs for t in _trials(p, "orphan")] == [False, False]


def test_nan_objective_fails_trials_but_cannot_loop_forever(tmp_path):
    calls = []

    def diverged(trial):
        calls.append(trial.number)
        return float("nan")

    r = run_study("nan", diverged, _params(tmp_path, n_trials=2))
    assert len(calls) == 2 * 2 + 2                      # the per-call cap: 2 * missing + 2
    assert (r.n_complete, r.n_failed, r.best_value, r.best_params) == (0, 6, None, {})


def test_direction_mismatch_on_resume_is_refused(tmp_path):
    p = _params(tmp_path, n_trials=1)
    run_study("dir", toy_objective, p)
    with pytest.raises(ValueError, match="created to maximize, not to minimize"):
        run_study("dir", toy_objective, p, direction="minimize")


def test_trial_running_elsewhere_keeps_its_slot_and_surplus_trial_stops(tmp_path):
    """Two slots, one held by a RUNNING trial of 'another worker': this worker runs one trial,
    then its next trial is surplus (rank 2 >= 2) and ends FAIL without running the objective."""
    p = _params(tmp_path, n_trials=2)
    (tmp_path / "studies").mkdir()
    optuna.create_study(study_name="ctrflow-busy", storage=p.storage, direction="maximize").ask()
    calls = []

    def counted(trial):
        calls.append(trial.number)
        return toy_objective(trial)

    r = run_study("busy", counted, p)
    assert calls == [1]
    assert [(row["number"], row["state"]) for row in r.trials_table] == [
        (0, "RUNNING"), (1, "COMPLETE"), (2, "FAIL")]
    assert r.trials_table[2]["note"] == "surplus (study already full)"
    assert (r.n_complete, r.n_running, r.n_failed) == (1, 1, 1)
    assert _trials(p, "busy")[2].user_attrs[SURPLUS_ATTR] is True


def test_killed_worker_trial_is_failed_and_retried(tmp_path):
    p = _params(tmp_path, n_trials=3)
    marker = tmp_path / "trial1.running"
    script = ("import sys; from components.tune import TuneParams, run_study; "
              "from tests.test_tune import hang_on_second_trial; "
              "run_study('killed', hang_on_second_trial, TuneParams.model_validate_json(sys.argv[1]))")
    env = dict(os.environ, **{MARKER_ENV: str(marker)},
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", script, p.model_dump_json()], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "worker never reached trial 1"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _trials(p, "killed")
    assert [(t.number, t.state) for t in before] == [(0, TrialState.COMPLETE), (1, TrialState.RUNNING)]

    time.sleep(3.5)  # > grace_period (2 s) since its last heartbeat (SQLite time has 1 s resolution)
    r = run_study("killed", lambda trial: trial.suggest_float("x", 0.0, 1.0), p)
    after = _trials(p, "killed")
    assert [(t.number, t.state) for t in after] == [
        (0, TrialState.COMPLETE), (1, TrialState.FAIL), (2, TrialState.COMPLETE),
        (3, TrialState.COMPLETE)]
    assert after[2].system_attrs["failed_trial"] == 1
    assert after[2].params == before[1].params          # the killed configuration is retried
    assert after[0].params == before[0].params and after[0].value == before[0].value
    assert (r.n_complete, r.n_running, r.n_failed) == (3, 0, 1)
    assert r.trials_table[2]["note"] == "retry of trial 1"


# ---- pruning -------------------------------------------------------------------------------------

def test_pruning_callback_steps_and_median_pruning(tmp_path):
    curves = {0: [0.70, 0.72, 0.74], 1: [0.70, 0.73, 0.75], 2: [0.60, 0.61, 0.62],
              3: [0.71, 0.74, 0.76]}

    def objective(trial):
        cb = pruning_callback(trial)
        curve = curves[trial.number]
        cb("teacher", 0, curve[0])        # steps 0, 1, 2 across phases
        cb("student", 0, curve[1])
        cb("student", 1, curve[2])
        return curve[-1]

    p = _params(tmp_path, n_trials=4, pruner={"type": "median", "n_startup_trials": 2,
                                              "n_warmup_steps": 0})
    r = run_study("prune", objective, p)
    t = _trials(p, "prune")
    assert [x.state for x in t] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                                    TrialState.COMPLETE]
    assert t[0].intermediate_values == {0: 0.70, 1: 0.72, 2: 0.74}
    # median at step 0 of trials 0, 1 is 0.70 > 0.60: trial 2 stops after its first report
    assert t[2].intermediate_values == {0: 0.60}
    assert t[2].user_attrs["last_report"] == {"phase": "teacher", "epoch": 0, "step": 0}
    assert t[3].user_attrs["last_report"] == {"phase": "student", "epoch": 1, "step": 2}
    assert (r.n_complete, r.n_pruned, r.best_value, r.best_number) == (3, 1, 0.76, 3)

    p_none = _params(tmp_path, n_trials=4, pruner={"type": "none"}, study_prefix="nop")
    assert run_study("prune", objective, p_none).n_pruned == 0


# ---- outputs ------------------------------------------------------------------------------------

def _result(rows):
    return StudyResult(study_name="ctrflow-toy", direction="maximize", best_params={"x": 0.5},
                       best_value=0.9, best_number=1, n_complete=2, n_pruned=0, n_failed=0,
                       n_running=0, trials_table=rows)


def test_write_study_outputs_values_and_atomicity(tmp_path):
    rows = [{"number": 0, "state": "COMPLETE", "value": 0.8, "last_step": None, "duration_s": 1.5,
             "datetime_start": "t0", "datetime_complete": "t1", "note": "reference defaults",
             "params_x": 0.25},
            {"number": 1, "state": "COMPLETE", "value": 0.9, "last_step": 2, "duration_s": 2.0,
             "datetime_start": "t2", "datetime_complete": "t3", "note": "", "params_x": 0.5}]
    paths = write_study_outputs(_result(rows), tmp_path / "tune")
    assert paths["trials_csv"].read_text().splitlines() == [
        "number,state,value,last_step,duration_s,datetime_start,datetime_complete,note,params_x",
        "0,COMPLETE,0.8,,1.5,t0,t1,reference defaults,0.25",
        "1,COMPLETE,0.9,2,2.0,t2,t3,,0.5"]
    assert json.loads(paths["trials_json"].read_text()) == rows
    best = json.loads(paths["best"].read_text())
    assert best == {"study_name": "ctrflow-toy", "direction": "maximize", "best_params": {"x": 0.5},
                    "best_value": 0.9, "best_number": 1, "n_complete": 2, "n_pruned": 0,
                    "n_failed": 0, "n_running": 0}
    before = {k: v.read_bytes() for k, v in paths.items()}
    with pytest.raises(ValueError):
        write_study_outputs(_result([{**rows[0], "value": float("nan")}]), tmp_path / "tune")
    assert {k: v.read_bytes() for k, v in paths.items()} == before
    assert sorted(x.name for x in (tmp_path / "tune").iterdir()) == [
        "best.json", "trials.csv", "trials.json"]


# ---- PostgreSQL: two workers, one study -----------------------------------------------------------

# the `postgres_url` fixture (a throwaway server on 127.0.0.1) lives in tests/conftest.py


def pg_worker(params_json: str, worker: int, barrier) -> None:
    """One tuning worker process: wait for the other, then join the shared study."""
    barrier.wait(timeout=60)
    run_study("shared", sleepy_objective, TuneParams.model_validate_json(params_json),
              defaults=TOY_DEFAULTS, worker=worker)


def test_two_workers_share_one_postgres_study(postgres_url):
    p = TuneParams(storage=postgres_url, n_trials=8, heartbeat_interval=5, grace_period=30,
                   seed=11)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=pg_worker, args=(p.model_dump_json(), w, barrier)) for w in (0, 1)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=90)
    assert [proc.exitcode for proc in procs] == [0, 0]

    trials = _trials(p, "shared")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # unique, none missing
    others = [t for t in trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get(SURPLUS_ATTR) for t in others)
    assert len(others) <= 2                                  # at most one surplus per worker
    assert len({t.user_attrs["pid"] for t in complete}) == 2  # both workers contributed
    enqueued = [t for t in trials if DEFAULTS_ATTR in t.user_attrs]
    assert [t.number for t in enqueued] == [0] and enqueued[0].params == TOY_DEFAULTS
