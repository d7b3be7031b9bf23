"""Retention (components/gc.py, `ctrflow gc`): back-to-back runs keep the repository's disk use flat.

Each "run" is a real run of the code that accumulates files: the teacher retrained with a new seed
(so the logit-cache key and the study names change, as with nightly data), the distill stage (one
Optuna trial: a trial directory, a teacher-logit cache), `dvc commit` of both stages (new DVC cache
entries), then the real gc path (`gc_stage`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from components.config import load_params
from tests.conftest import REPO_ROOT, VENV_BIN, write_params
from tests.test_pipeline import _copy_project

TINY = {
    "generate": {"rows": 1500, "seed": 5},
    "preprocess": {"min_count": 2},
    "train": {"max_epochs": 1, "batch_size": 256, "embedding_dim": 8,
              "model_params": {"hidden_units": [16], "num_cross_layers": 1},
              "gate": {"on_fail": "warn", "baseline_max_epochs": 1}, "device": "cpu", "num_threads": 1},
    "distill": {"students": ["dagfm"], "baselines": [], "device": "cpu", "num_threads": 1,
                "dagfm": {"distill_max_epochs": 1, "finetune_max_epochs": 1, "batch_size": 256}},
    "tune": {"n_trials": 1},
    "retention": {"keep_runs": 2, "dvc_keep_commits": 2},
}


def _env(repo: Path) -> dict:
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
            "PYTHONPATH": str(REPO_ROOT), "PREFECT_HOME": str(repo / ".prefect")}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def _disk(repo: Path) -> int:
    """Bytes under the repository, .git excluded (git history is the user's, not ours to prune)."""
    total = 0
    for dirpath, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if d != ".git"]
        total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
    return total


@pytest.fixture
def tiny_repo(tmp_path, monkeypatch):
    """A git + DVC copy of the project with a validated, preprocessed 1,500-row log."""
    from components import stages

    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_project(repo)
    write_params(repo, **TINY)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PREFECT_HOME", str(repo / ".prefect"))
    _git(repo, "init", "-q")
    params = load_params("params.yaml")
    stages.generate_stage(params)
    stages.validate_stage(params)
    stages.preprocess_stage(params)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "fixture")
    return repo


def _one_run(repo: Path, seed: int, gc: bool) -> dict:
    """Train (seed), distill, gc when asked, dvc commit (+ git commit of dvc.lock): the flow's order,
    gc before the commit (after it, the logit caches in the DVC-tracked cache directory would all
    count as referenced by dvc.lock)."""
    from dvc.repo import Repo

    from components import stages

    params = load_params("params.yaml", {"train.seed": seed})
    stages.train_stage(params)
    stages.distill_stage(params)
    details = stages.gc_stage(params, before_dvc_commit=True).details if gc else {}
    with Repo(str(repo)) as dvc:
        dvc.commit("train_teacher", force=True)
        dvc.commit("distill", force=True)
    _git(repo, "add", "dvc.lock")
    _git(repo, "commit", "-qm", f"run {seed}")
    return details


def test_twenty_back_to_back_runs_keep_disk_use_flat(tiny_repo: Path, capsys):
    # Without gc every run adds a study, a logit cache and DVC cache entries: the disk use grows.
    base = _disk(tiny_repo)
    grown = []
    for seed in range(2):
        _one_run(tiny_repo, seed, gc=False)
        grown.append(_disk(tiny_repo))
    steps = [b - a for a, b in zip([base, *grown], grown, strict=False)]
    assert all(s > 50_000 for s in steps), f"no growth without gc? sizes {grown}"

    # With gc after each run: flat after the first few.
    sizes, freed = [], []
    for k in range(1, 21):
        details = _one_run(tiny_repo, 100 + k, gc=True)
        sizes.append(_disk(tiny_repo))
        freed.append(details["bytes"])
    with capsys.disabled():
        print(f"\nwithout gc: {[base, *grown]}\nwith gc (runs 1..20): {sizes}\nfreed per run: {freed}")
    assert max(sizes[4:]) <= 1.1 * sizes[3] + 200_000, sizes
    assert max(sizes[4:]) < grown[-1] + 3 * min(steps), sizes  # far below a never-pruned repo
    assert all(f > 0 for f in freed[3:]), freed

    # Only the last keep_runs (2) runs' studies and logit caches remain; the current one is among them.
    params = load_params("params.yaml")
    studies = sorted(p.name for p in Path(params.tune.trials_dir).iterdir())
    caches = sorted(p.name for p in Path(params.distill.logit_cache_dir).iterdir())
    assert len(studies) <= 2 and len(caches) <= 2, (studies, caches)
    best = json.loads(Path("models/students/dagfm/study/best.json").read_text())["study_name"]
    assert best in studies
    import optuna

    stored = {s.study_name for s in optuna.study.get_all_study_summaries("sqlite:///optuna/ctrflow.db")}
    assert stored == set(studies), (stored, studies)

    # The workspace still matches dvc.lock, and its outputs are all in the cache.
    env = _env(tiny_repo)
    status = subprocess.run(["dvc", "status", "train_teacher", "distill"], cwd=tiny_repo, env=env,
                            capture_output=True, text=True)
    assert status.returncode == 0 and "changed" not in status.stdout, status.stdout + status.stderr
    checkout = subprocess.run(["dvc", "checkout", "--force", "train_teacher", "distill"], cwd=tiny_repo, env=env,
                              capture_output=True, text=True)
    assert checkout.returncode == 0, checkout.stderr
