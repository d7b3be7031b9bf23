"""components/dvc_state.py (stage up to date vs dvc.lock, atomic record), faults.py, the leftover sweep
and the retry of a killed worker's Optuna trial."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components import dvc_state
from components.atomic_dir import is_leftover, sweep_leftovers
from tests.conftest import REPO_ROOT, VENV_BIN


@pytest.fixture
def mini_repo(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([str(VENV_BIN / "dvc"), "init", "-q"], check=True)
    Path("params.yaml").write_text("a: 1\n")
    Path("dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "one": {"cmd": "echo one > out1", "params": ["a"], "outs": ["out1"]},
        "two": {"cmd": "cat out1 > out2", "deps": ["out1"], "outs": ["out2"]}}}))
    return tmp_path


def test_a_stage_is_unchanged_only_once_recorded_and_while_its_deps_params_and_outs_match(mini_repo):
    assert dvc_state.in_dvc_repo()
    assert not dvc_state.is_unchanged("one")  # never recorded
    Path("out1").write_text("one\n")
    dvc_state.commit(["one"])
    assert dvc_state.is_unchanged("one") and not dvc_state.is_unchanged("two")
    assert yaml.safe_load(Path("dvc.lock").read_text())["stages"]["one"]["outs"][0]["path"] == "out1"
    assert not list(Path(".").glob(".dvc.lock.tmp-*"))
    Path("params.yaml").write_text("a: 2\n")
    assert not dvc_state.is_unchanged("one")  # params changed
    Path("params.yaml").write_text("a: 1\n")
    Path("out1").write_text("half")
    assert not dvc_state.is_unchanged("one")  # output changed (e.g. a killed rewrite)
    Path("out1").unlink()
    assert dvc_state.stage_changes("one")  # output gone


def test_a_kill_while_dvc_lock_is_rewritten_leaves_the_previous_lock(mini_repo):
    Path("out1").write_text("one\n")
    dvc_state.commit(["one"])
    before = Path("dvc.lock").read_text()
    Path("out1").write_text("uno\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from components import dvc_state; "
            "dvc_state.commit(['one'])")
    env = {**os.environ, "CTRFLOW_TEST_PAUSE_AT": "dvc_commit.write", "CTRFLOW_TEST_PAUSE_MARKER": "paused"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(REPO_ROOT)], env=env)
    try:
        for _ in range(600):
            if Path("paused").exists() or proc.poll() is not None:
                break
            import time
            time.sleep(0.1)
        assert Path("paused").exists(), "the pause point was not reached"
    finally:
        proc.kill()
        proc.wait()
    assert Path("dvc.lock").read_text() == before
    assert [p.name for p in Path(".").glob(".dvc.lock.tmp-*")], sorted(os.listdir("."))  # never renamed in
    assert dvc_state.sweep_leftovers() and not list(Path(".").glob(".dvc.lock.tmp-*"))


def test_pause_point_costs_nothing_when_unset():
    from components import faults

    assert faults._parse(None) is None and faults._parse("") is None
    assert faults._parse("train_teacher.batch@5") == ("train_teacher.batch", 5)
    assert faults._parse("report.write") == ("report.write", 1)
    if faults._TARGET is None:
        faults.pause_point("report.write")  # returns at once


def test_sweep_removes_a_killed_writers_temp_files_only(tmp_path):
    out = tmp_path / "models" / "students"
    (out / "dagfm").mkdir(parents=True)
    keep = [out / "dagfm" / "model.safetensors", out / "dagfm" / "metrics.json", tmp_path / "models" / "other"]
    for p in keep:
        p.write_text("x")
    junk = [out / "dagfm" / ".model.safetensors.tmp-1234", out / ".dagfm.tmp", out / ".dagfm.old-99",
            tmp_path / "models" / ".students.tmp-77", out / "dagfm" / ".metrics.json.0123456789abcdef0123456789abcdef.tmp"]
    for p in junk:
        p.write_text("half")
    (out / ".fsdnet.partial-5").mkdir()
    junk.append(out / ".fsdnet.partial-5")
    assert sorted(sweep_leftovers([out])) == sorted(junk)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in junk)
    assert not is_leftover("model.safetensors") and not is_leftover(".gitignore")
    assert is_leftover("students.json.tmp")


def test_a_trial_left_running_by_a_dead_process_is_failed_and_retried_with_its_params(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from components.tune.settings import TuneParams
    from components.tune.storage import make_storage
    from components.tune.study import WORKER_ATTR, fail_dead_trials, run_study

    params = TuneParams.model_validate({"n_trials": 2, "storage": f"sqlite:///{tmp_path}/s.db",
                                        "heartbeat_interval": 60, "grace_period": 180})
    storage = make_storage(params.storage, heartbeat_interval=60, grace_period=180)
    study = optuna.create_study(study_name="ctrflow-x", storage=storage, direction="maximize")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR,
                                         {"host": socket.gethostname(), "pid": int(dead), "started": 0.0})
    killed_x = trial.params["x"]
    assert fail_dead_trials(study) == [0]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert study.get_trials()[1].system_attrs["failed_trial"] == 0
    seen = []
    result = run_study("x", lambda t: seen.append(t.suggest_float("x", 0, 1)) or seen[-1], params)
    assert seen[0] == killed_x and result.n_complete == 2 and result.n_running == 0


def test_a_staged_training_with_a_resume_state_survives_the_sweeps(tmp_path):
    from components.atomic_dir import RESUME_STATE, is_resumable, sweep_leftovers
    from components.train.checkpoint import STATE_META

    assert RESUME_STATE == STATE_META
    out = tmp_path / "models" / "teacher"
    out.mkdir(parents=True)
    staged = tmp_path / "models" / ".teacher.partial"
    staged.mkdir()
    (staged / "model.safetensors").write_bytes(b"x")
    assert not is_resumable(staged)
    assert sweep_leftovers([out]) == [staged]  # no resume state: debris
    staged.mkdir()
    (staged / STATE_META).write_text("{}")
    assert is_resumable(staged) and sweep_leftovers([out]) == [] and staged.is_dir()
