"""Retention (components/gc.py, `ctrflow gc`): back-to-back runs keep the repository's disk use flat.

The fixture runs the real pipeline once (train, distil: every DVC output exists). Each "run" after it
then writes, through the real code that accumulates, what a nightly run with a new teacher writes: a
new teacher checkpoint (a new seed, swapped into ``train.out_dir``), its teacher-logit cache
(``ensure_teacher_logits``), a new Optuna study named after that teacher (``run_study`` with one
trial writing its checkpoint into ``<tune.trials_dir>/<study>/<n>``, and the student's
``study/best.json``), `dvc commit` of both stages (new DVC cache entries) and a git commit of
dvc.lock; then the real gc path (`gc_stage`). Training and distilling themselves are left out of the
loop: they add nothing to disk that these steps do not, and cost most of the time.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from components.config import load_params
from tests.conftest import write_params
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
    """A git + DVC copy of the project with a validated, preprocessed 1,500-row log, a trained
    teacher, its logit cache and a student study (the outputs of both DVC stages)."""
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
    stages.train_stage(params)     # the real stage once (its metrics and curve), then a teacher and
    _new_teacher(params, -1)       # what distill writes as in every run below (see _one_run): every
    _distill_outputs(params)       # output of both DVC stages exists
    stages.distill_summary_stage(params, [])
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "fixture")
    return repo


def _new_teacher(params, seed: int) -> None:
    """A teacher with new weights (as after a retrain on new data), swapped into train.out_dir."""
    import torch

    from components.atomic_dir import replace_dir
    from components.data.feature_map import FeatureMap
    from components.models import build_model
    from components.train.checkpoint import feature_map_hash, save_model

    fmap = FeatureMap.load(Path(params.preprocess.out_dir) / "feature_map.json")
    tp = params.train
    hparams = {"embedding_dim": tp.embedding_dim, **tp.model_params}
    torch.manual_seed(seed)
    out = Path(tp.out_dir)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    save_model(build_model(tp.model, fmap, **hparams), tmp, model_name=tp.model, hparams=hparams,
               feature_map_hash=feature_map_hash(fmap), epoch=1, metrics={"valid_auc": 0.5})
    replace_dir(tmp, out)


def _new_study(params) -> None:
    """The dagfm student's study for the current teacher: one trial writing a checkpoint (the teacher's
    files stand in for a student's) into its trial directory, then study/best.json (distill's paths)."""
    import shutil

    from components.distill.students import study_key
    from components.tune.outputs import write_study_outputs
    from components.tune.study import run_study

    teacher = Path(params.train.out_dir)
    name = f"dagfm-{study_key('dagfm', params, teacher)}"
    trials_dir = Path(params.tune.trials_dir) / f"{params.tune.study_prefix}-{name}"

    def objective(trial) -> float:
        shutil.copytree(teacher, trials_dir / str(trial.number))
        return 0.6

    result = run_study(name, objective, params.tune)
    write_study_outputs(result, Path(params.distill.out_dir) / "dagfm" / "study")


def _distill_outputs(params) -> None:
    """What distill accumulates for the current teacher: its logit cache and the student's study."""
    from components.distill.logit_cache import ensure_teacher_logits

    ensure_teacher_logits(params.train.out_dir, params.preprocess.out_dir, params.distill.logit_cache_dir,
                          log=lambda _m: None)
    _new_study(params)


def _one_run(repo: Path, seed: int, gc: bool) -> dict:
    """New teacher (seed), its logit cache and student study, gc when asked, dvc commit (+ git commit
    of dvc.lock): the flow's order, gc before the commit (after it, the logit caches in the
    DVC-tracked cache directory would all count as referenced by dvc.lock)."""
    from dvc.repo import Repo

    from components import stages

    params = load_params("params.yaml")
    _new_teacher(params, seed)
    _distill_outputs(params)
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
    # flat: what still grows is the retention ledger's line per run (capped at 100 lines)
    assert max(sizes[4:]) - min(sizes[4:]) < 16 * 400, sizes
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
    from dvc.repo import Repo

    with Repo(str(tiny_repo)) as dvc:
        assert dvc.status(["train_teacher", "distill"]) == {}
        dvc.checkout(["train_teacher", "distill"], force=True)  # raises CheckoutError if one is missing


# ---- `ctrflow gc --dry-run` and the registry, on a planted layout (no training, no DVC) -----------

def _plant(root: Path) -> dict[str, Path]:
    """Two older runs' studies and logit caches (in the ledger), the current run's, killed runs'
    leftovers: what gc would remove is ``old1`` (study), ``cacheA`` and the two leftovers."""
    write_params(root, retention={"keep_runs": 2})
    params = load_params(root / "params.yaml")
    trials, caches = root / params.tune.trials_dir, root / params.distill.logit_cache_dir
    paths = {"old1": trials / "ctrflow-dagfm-old1", "old2": trials / "ctrflow-dagfm-old2",
             "cur": trials / "ctrflow-dagfm-cur", "cacheA": caches / ("a" * 32), "cacheB": caches / ("b" * 32),
             "partial": root / "models" / ".teacher.partial", "tmp": root / "metrics" / ".teacher.json.tmp-999999"}
    for key in ("old1", "old2", "cur"):
        (paths[key] / "0").mkdir(parents=True)
        (paths[key] / "0" / "model.safetensors").write_bytes(b"w" * 5000)
    for key in ("cacheA", "cacheB"):
        paths[key].mkdir(parents=True)
        (paths[key] / "train.parquet").write_bytes(b"l" * 3000)
    paths["partial"].mkdir(parents=True)
    (paths["partial"] / "model.safetensors").write_text("{}")  # a staged training without a resume state
    paths["tmp"].parent.mkdir(parents=True)
    paths["tmp"].write_text("{")
    best = root / params.distill.out_dir / "dagfm" / "study" / "best.json"
    best.parent.mkdir(parents=True)
    best.write_text(json.dumps({"study_name": "ctrflow-dagfm-cur"}))
    ledger = root / params.retention.ledger
    ledger.parent.mkdir(parents=True, exist_ok=True)
    rel = lambda p: str(p.relative_to(root))  # noqa: E731
    ledger.write_text("".join(json.dumps(e) + "\n" for e in [
        {"time": 1, "trials": [rel(paths["old1"])], "logit_caches": [rel(paths["cacheA"])]},
        {"time": 2, "trials": [rel(paths["old2"])], "logit_caches": [rel(paths["cacheB"])]}]))
    return paths


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
            for p in sorted(root.rglob("*")) if ".ctrflow" not in p.parts}


def test_gc_dry_run_lists_what_would_go_with_bytes_and_removes_nothing(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cli import main

    monkeypatch.chdir(tmp_path)
    paths = _plant(tmp_path)
    before = _tree(tmp_path)
    ledger = (tmp_path / ".ctrflow" / "retention.jsonl").read_text()
    result = CliRunner().invoke(main, ["gc", "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for key, size in (("old1", "4.9 KiB"), ("cacheA", "2.9 KiB"), ("partial", "2 B"), ("tmp", "1 B")):
        line = next((ln for ln in out.splitlines() if str(paths[key].relative_to(tmp_path)) in ln), "")
        assert line.startswith("would remove ") and f"({size})" in line, (key, out)
    for key in ("old2", "cur", "cacheB"):
        assert str(paths[key].relative_to(tmp_path)) not in out, (key, out)
    assert "would delete Optuna study: ctrflow-dagfm-old1" in out
    assert "DVC cache: skipped (not a DVC repository)" in out
    assert out.rstrip().splitlines()[-1] == "gc: would free 7.8 KiB (8,003 bytes)", out
    assert _tree(tmp_path) == before  # nothing removed
    assert (tmp_path / ".ctrflow" / "retention.jsonl").read_text() == ledger  # not even the ledger touched
    # a staged training that holds a resume state is what a killed training continues from: kept
    (paths["partial"] / "resume.json").write_text("{}")
    again = CliRunner().invoke(main, ["gc", "--dry-run"]).stdout
    assert str(paths["partial"].relative_to(tmp_path)) not in again, again


def test_gc_never_removes_anything_under_the_registry(tmp_path, monkeypatch):
    from components import stages

    monkeypatch.chdir(tmp_path)
    paths = _plant(tmp_path)
    registry = tmp_path / "models" / "registry"
    version = registry / "v1"
    version.mkdir(parents=True)
    (version / "model.safetensors").write_bytes(b"r" * 4000)
    (version / "model.json").write_text("{}")
    # the registered version points at an old study and an old logit cache, and holds temp-like names
    (version / "trial").symlink_to(paths["old1"] / "0")
    (version / "teacher_logits").symlink_to(paths["cacheA"])
    (registry / ".v2.tmp-999999").mkdir()
    (registry / ".v2.tmp-999999" / "model.safetensors").write_bytes(b"p" * 100)
    (registry / "production").symlink_to("v1")
    registered = _tree(registry)

    details = stages.gc_stage(load_params(tmp_path / "params.yaml")).details
    removed = {r["path"] for r in details["removed"]}
    assert removed == {str(paths[k].relative_to(tmp_path)) for k in ("partial", "tmp")}, removed
    assert _tree(registry) == registered
    assert paths["old1"].is_dir() and paths["cacheA"].is_dir()  # a symlink in the registry points there
    kept = "\n".join(details["kept"])
    for what in ("ctrflow-dagfm-old1", "a" * 32, ".v2.tmp-999999"):
        assert what in kept and "model registry" in kept, kept
