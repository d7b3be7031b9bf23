"""Kill -9 anywhere, then rerun (issue 14 §2).

`ctrflow run` runs as a subprocess in a temp copy of the project (a git + DVC repo) and is paused at a
named point inside a stage (components/faults.py: CTRFLOW_TEST_PAUSE_AT) and then killed with SIGKILL,
its whole process group at once (what a dying node or `systemctl kill` does). The kills are chained:
each rerun is killed one stage further, so the chain costs about one pipeline run plus the start-ups.
After every kill no output of any stage is half-written (every file parses; leftovers are only the
hidden temp names no reader opens) and dvc.lock parses; each rerun skips what completed before (dvc.lock)
and the final rerun reaches the same metrics as an uninterrupted run of the same params.

The default suite runs the chain through the three kills with the most at stake (mid-epoch, mid-trial,
during the dvc.lock rewrite: about 4 minutes on 2 cores); the kill in every stage in turn (about
8 minutes) is marked `killchain`, deselected by default: `make test-kill` (run by .ci/run) runs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import SMALL_RUN, VENV_BIN, write_params
from tests.test_pipeline import _copy_project

STAGES = ["generate", "validate", "preprocess", "train_teacher", "distill", "evaluate", "profile", "report",
          "promote"]
KILL_TIMEOUT_S = 420

# A tiny run: 3,000 rows, one tuned student (2 trials) and its baseline, 2 teacher epochs of 3 batches.
TINY = {**SMALL_RUN,
        "generate": {"rows": 3000},
        "distill": {**SMALL_RUN["distill"], "students": ["dagfm"]},
        "evaluate": {**SMALL_RUN["evaluate"], "latency_runs": 5, "profile_runs": 1}}

# The full chain also kills inside the promotion, so its run must promote: 3,000 rows cannot give a
# teacher whose LogLoss beats the constant predictor's (the baseline gate, which promotion requires),
# 20,000 rows at batch 512 do (valid LogLoss ~0.555 vs 0.566; the AUC margin over LR is waived here).
FULL = {**TINY,
        "generate": {"rows": 20000},
        "train": {**SMALL_RUN["train"], "batch_size": 512,
                  "gate": {**SMALL_RUN["train"]["gate"], "min_auc_gain": -1.0}},
        "promote": {"max_flops_fraction": None}}

# (pause point, the stage it is in). `@n`: the n-th time the point is reached in that process.
# TINY: train has 3 batches an epoch, so batch 5 is mid epoch 2, after epoch 1's resume checkpoint; the
# dagfm study's trial 0 runs 9 batches (2 distillation + 1 fine-tuning epochs), so batch 12 is in trial 1.
# FULL: 32 train batches an epoch (batch 40: mid epoch 2) and 16 distill batches an epoch (trial 0: 48).
# promote: with the new version half copied, then published but `production` not yet switched.
# dvc_commit: the first commit of that run, which is the promotion's (all before it are skipped).
KILLS = [("generate.write", "generate"), ("validate.write", "validate"), ("preprocess.write", "preprocess"),
         ("train_teacher.batch@40", "train_teacher"), ("distill.batch@60", "distill"),
         ("evaluate.write", "evaluate"), ("profile.write", "profile"), ("report.write", "report"),
         ("promote.version_half_written", "promote"), ("promote.before_production_switch", "promote"),
         ("dvc_commit.write", "promote")]


def _make_repo(root: Path, params: dict) -> Path:
    root.mkdir()
    _copy_project(root)
    write_params(root, **params)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def _env(repo: Path, pause: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API", "CTRFLOW_TEST_", "CTRFLOW_RUN_LOCK"))}
    env.update({"PATH": f"{VENV_BIN}:{env['PATH']}", "PYTHONPATH": str(repo),  # the copy's code, not main's
                "PREFECT_HOME": str(repo / ".prefect"), "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1"})
    if pause:
        env.update({"CTRFLOW_TEST_PAUSE_AT": pause, "CTRFLOW_TEST_PAUSE_MARKER": str(repo / "paused")})
    return env


def _start(repo: Path, pause: str | None, log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen([str(VENV_BIN / "ctrflow"), "run"], cwd=repo, env=_env(repo, pause),
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _run_and_kill(repo: Path, pause: str, log: Path) -> None:
    marker = repo / "paused"
    marker.unlink(missing_ok=True)
    proc = _start(repo, pause, log)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    try:
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"run exited ({proc.returncode}) before reaching {pause}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{pause} not reached in {KILL_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the flow, its Prefect server, any child
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _run_to_end(repo: Path, log: Path) -> str:
    proc = _start(repo, None, log)
    try:
        proc.wait(timeout=KILL_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    assert proc.returncode == 0, out[-6000:]
    return out


def _output_files(repo: Path) -> dict[str, list[Path]]:
    from components.config import load_params
    from components.stages import output_paths

    params = load_params(repo / "params.yaml")
    files = {}
    for stage, roots in output_paths(params).items():
        found = []
        for root in map(lambda r: repo / r, roots):
            found += [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else [root] * root.is_file()
        files[stage] = found
    return files


def _is_leftover(path: Path, repo: Path) -> bool:
    from components.atomic_dir import is_leftover

    return any(is_leftover(part) for part in path.relative_to(repo).parts)


def _assert_nothing_half_written(repo: Path) -> None:
    """Every output a reader would open parses; dvc.lock parses."""
    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    for stage, files in _output_files(repo).items():
        for path in files:
            if _is_leftover(path, repo):
                continue  # a hidden temp name: never read, swept by the next run
            try:
                if path.suffix == ".parquet":
                    pq.read_table(path)
                elif path.suffix == ".json":
                    json.loads(path.read_text())
                elif path.suffix == ".safetensors":
                    load_file(str(path))
                elif path.suffix in (".csv", ".md", ".html", ".txt"):
                    assert path.stat().st_size > 0
            except Exception as e:  # noqa: BLE001
                raise AssertionError(f"{stage}: {path.relative_to(repo)} is half-written: {e}") from e
    lock = repo / "dvc.lock"
    if lock.exists():
        data = yaml.safe_load(lock.read_text())
        assert set(data["stages"]) <= set(STAGES)
    # the registry's production (once there is one) names a complete version
    from components.registry.store import Registry

    registry = Registry(repo / "models/registry")
    if registry.production() is not None:
        version = registry.production_dir()
        json.loads((version / "metrics.json").read_text())
        assert (version / "model.onnx").stat().st_size > 0, version


def _skipped(log: str) -> list[str]:
    return [s for s in STAGES if f"skipped {s}: unchanged since its last complete run" in log]


def _locked(repo: Path) -> list[str]:
    lock = repo / "dvc.lock"
    return [s for s in STAGES if lock.exists() and s in (yaml.safe_load(lock.read_text())["stages"] or {})]


def _final_metrics(repo: Path) -> dict:
    """The model-quality numbers of the run (trial numbers, timings and paths left out)."""
    teacher = json.loads((repo / "metrics/teacher.json").read_text())
    students = json.loads((repo / "metrics/students.json").read_text())
    evaluation = json.loads((repo / "metrics/evaluation.json").read_text())
    promotion = json.loads((repo / "metrics/promotion.json").read_text())
    return {"promotion": {k: promotion.get(k) for k in ("decision", "candidate")},"teacher": {k: teacher[k] for k in ("valid", "test", "best_epoch", "epochs")},
            "students": {n: {k: s[k] for k in ("valid", "test")} for n, s in students.items()},
            "tuned": {n: s["tuned"]["params"] for n, s in students.items() if s.get("tuned")},
            "evaluation": evaluation["models"] if "models" in evaluation else evaluation}


# The default suite's chain: the three kills with the most state at stake (a resume checkpoint, an
# Optuna trial, dvc.lock being rewritten); the first commit of the third run is the distill stage's.
CORE_KILLS = [("train_teacher.batch@5", "train_teacher"), ("distill.batch@12", "distill"),
              ("dvc_commit.write", "distill")]


@pytest.mark.slow
def test_kill_in_training_tuning_and_dvc_commit_then_rerun_matches_an_uninterrupted_run(tmp_path):
    _kill_chain(tmp_path, CORE_KILLS, TINY)


@pytest.mark.killchain
@pytest.mark.timeout(1500)
def test_kill_in_every_stage_then_rerun_matches_an_uninterrupted_run(tmp_path):
    _kill_chain(tmp_path, KILLS, FULL)


def _kill_chain(tmp_path: Path, kills: list[tuple[str, str]], params: dict) -> None:
    started = time.monotonic()
    reference = _make_repo(tmp_path / "reference", params)
    ref_log = _run_to_end(reference, tmp_path / "reference.log")
    assert _skipped(ref_log) == []
    assert _locked(reference) == STAGES

    repo = _make_repo(tmp_path / "killed", params)
    timings = {}
    for i, (point, stage) in enumerate(kills):
        t0 = time.monotonic()
        log = tmp_path / f"run{i}.log"
        done_before = _locked(repo)
        _run_and_kill(repo, point, log)
        text = log.read_text()
        # what completed (recorded in dvc.lock) before this run is skipped, the rest is redone
        assert _skipped(text) == done_before, text[-4000:]
        _assert_nothing_half_written(repo)
        locked = _locked(repo)
        assert stage not in locked or point.startswith("dvc_commit"), (point, locked)
        assert locked == STAGES[:STAGES.index(stage)], (point, locked)
        timings[point] = round(time.monotonic() - t0, 1)

    final = _run_to_end(repo, tmp_path / "final.log")
    assert _skipped(final) == STAGES[:STAGES.index(kills[-1][1])], final[-4000:]
    assert _locked(repo) == STAGES
    leftovers = [str(p.relative_to(repo)) for files in _output_files(repo).values() for p in files
                 if _is_leftover(p, repo)]
    assert leftovers == []
    assert not list(repo.glob(".dvc.lock.tmp-*"))
    _assert_nothing_half_written(repo)
    assert _final_metrics(repo) == _final_metrics(reference)

    if kills == KILLS:
        # the kills inside the promotion hit a real one: the run promoted its challenger as production
        promotion = json.loads((repo / "metrics/promotion.json").read_text())
        assert promotion["decision"] == "promoted" and promotion["production"] == promotion["version"], promotion
        # the same state once more: every stage is skipped, nothing is recorded anew
        again = _run_to_end(repo, tmp_path / "again.log")
        assert _skipped(again) == STAGES and "recorded in dvc.lock: nothing" in again
    print(f"kill chain timings (s): {timings}; total {time.monotonic() - started:.0f}s")
