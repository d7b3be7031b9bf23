"""A write that fails during preprocess, training and report (issue 14 §4): over the file size limit
(``ulimit -f``), on a full filesystem (a small tmpfs), into a read-only output directory (a tmpfs
remounted read-only; ``chmod 0555`` where mounting is not permitted). Each case: exit status 1, one
line naming the path and the cause, the earlier outputs byte-identical, no temporary file left, and the
next run (without the limit, space back, writable again) succeeds.

One finished tiny run (3,000 rows, a 1-epoch teacher, its report) is prepared per module; each case
copies the stage's earlier outputs into its own directory (or mount), points the stage there and fails
it once. The file-size cases run the installed ``ctrflow`` in a subprocess (RLIMIT_FSIZE must not limit
pytest itself); the others run the same CLI in-process (CliRunner), to keep the file's wall time low.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import REPO_ROOT, VENV_BIN, write_params

TINY = {
    "generate": {"rows": 3000},
    "preprocess": {"min_count": 2},
    "train": {"max_epochs": 1, "batch_size": 256, "embedding_dim": 8,
              "model_params": {"hidden_units": [16], "num_cross_layers": 1},
              "gate": {"on_fail": "warn", "baseline_max_epochs": 1}, "device": "cpu", "num_threads": 1},
}
IS_ROOT = os.geteuid() == 0

# stage command → (params overrides pointing its outputs into the case directory MNT, the fixture's
# outputs copied there first as "the earlier outputs")
STAGES = {
    "preprocess": ({"preprocess": {"out_dir": "{mnt}/processed"}}, {"data/processed": "processed"}),
    # another seed (as with new data): the earlier teacher's resume state does not fit, so it trains
    "train": ({"train": {"out_dir": "{mnt}/models/teacher", "metrics": "{mnt}/metrics/teacher.json",
                         "curve": "{mnt}/metrics/teacher_curve.csv", "seed": 4321}},
              {"models/teacher": "models/teacher", "metrics/teacher.json": "metrics/teacher.json",
               "metrics/teacher_curve.csv": "metrics/teacher_curve.csv"}),
    "report": ({"evaluate": {"report_dir": "{mnt}/reports"}}, {"reports": "reports"}),
}
CAUSE = {"fsize": "file too large", "full": "no space left on device",
         "readonly": "read-only file system" if IS_ROOT else "permission denied"}


def _snapshot(d: Path, skip: str = "filler") -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and p.name != skip}


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _leftovers(d: Path) -> list[str]:
    """Hidden names (every temporary of the writers here is one) and ``*.tmp`` files."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")
                  if p.name.startswith(".") or p.name.endswith(".tmp"))


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    env.pop("CTRFLOW_DEBUG", None)
    return env


def _ctrflow(*args: str, fsize: int | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    def limit():  # Python ignores SIGXFSZ, so an oversized write raises OSError EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([str(VENV_BIN / "ctrflow"), *args], env=_env(), capture_output=True, text=True,
                          preexec_fn=limit if fsize else None, cwd=cwd)


def _cli(*args: str):
    """The same CLI in this process: (exit code, stderr)."""
    from cli import main

    os.environ.pop("CTRFLOW_DEBUG", None)
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def _mount_tmpfs(mnt: Path, size: str = "8m") -> bool:
    return IS_ROOT and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                                      capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    """A finished tiny run: validated and preprocessed data, a 1-epoch teacher, its report."""
    from components import stages
    from components.config import load_params

    root = tmp_path_factory.mktemp("diskfull")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        write_params(root, **TINY)
        params = load_params("params.yaml")
        stages.generate_stage(params)
        stages.validate_stage(params)
        stages.preprocess_stage(params)
        stages.train_stage(params)
        stages.report_stage(params)
    finally:
        os.chdir(cwd)
    return root


def _case_params(root: Path, stage: str, mnt: Path) -> Path:
    overrides, _copies = STAGES[stage]
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update({k: v.format(mnt=mnt) if isinstance(v, str) else v for k, v in values.items()})
    path = root / f"params-{mnt.name}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _seed(root: Path, stage: str, mnt: Path) -> None:
    for src, dst in STAGES[stage][1].items():
        (mnt / dst).parent.mkdir(parents=True, exist_ok=True)
        if (root / src).is_dir():
            shutil.copytree(root / src, mnt / dst)
        else:
            shutil.copy2(root / src, mnt / dst)


def _fsize_limit(root: Path, stage: str) -> int:
    """A file size limit that the stage's small files pass and one of its bigger files does not."""
    if stage == "preprocess":
        return 20_000  # train.parquet is bigger
    if stage == "train":  # model.safetensors passes; the resume state (weights + Adam moments) does not
        model = (root / "models/teacher/model.safetensors").stat().st_size
        assert (root / "models/teacher/resume-1.safetensors").stat().st_size > model + 10_000
        return model + 10_000
    # report: the figures and report.md pass, report.html (figures inlined) does not — the case
    # that once left a new report.md beside the old report.html
    biggest = max(p.stat().st_size for p in (root / "reports").rglob("*.png"))
    assert (root / "reports/report.html").stat().st_size > biggest + 1_000
    return biggest + 1_000


def _fill(mnt: Path, leave: int = 16 * 1024) -> None:
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    with open(mnt / "filler", "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(free - leave, 0))


def _set_writable(mnt: Path, writable: bool) -> None:
    if IS_ROOT:
        subprocess.run(["mount", "-o", f"remount,{'rw' if writable else 'ro'}", str(mnt)], check=True)
    else:
        dirs = [mnt, *(p for p in mnt.rglob("*") if p.is_dir())]
        for d in (dirs if writable else reversed(dirs)):
            d.chmod(0o755 if writable else 0o555)


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("cond", ["fsize", "full", "readonly"])
def test_failed_write_names_the_path_keeps_earlier_outputs_and_the_next_run_succeeds(
        run_root: Path, stage: str, cond: str, monkeypatch):
    monkeypatch.chdir(run_root)
    mnt = run_root / "cases" / f"{stage}-{cond}"
    mnt.mkdir(parents=True)
    mounted = False
    if cond in ("full", "readonly") and IS_ROOT:
        mounted = _mount_tmpfs(mnt)
        if not mounted:
            pytest.skip("mounting a small tmpfs is not permitted here (needs root and CAP_SYS_ADMIN)")
    if cond == "full" and not mounted:
        pytest.skip("a full filesystem needs a small tmpfs: mounting needs root (CAP_SYS_ADMIN)")
    try:
        _seed(run_root, stage, mnt)
        params = _case_params(run_root, stage, mnt)
        before = _snapshot(mnt)
        if cond == "fsize":
            proc = _ctrflow("--params", str(params), stage, fsize=_fsize_limit(run_root, stage), cwd=run_root)
            code, stderr = proc.returncode, proc.stderr
        else:
            _fill(mnt) if cond == "full" else _set_writable(mnt, False)
            try:
                code, stderr = _cli("--params", str(params), stage)
            finally:
                if cond == "readonly":
                    _set_writable(mnt, True)
        lines = stderr.strip().splitlines()
        assert code == 1, stderr
        assert "Traceback" not in stderr and len(lines) == 1, stderr
        assert lines[0].startswith(f"error: {CAUSE[cond]}") and str(mnt) in lines[0], lines[0]
        assert lines[0].endswith("earlier outputs are left as they were"), lines[0]
        print(f"\n{stage} {cond}: {lines[0]}")
        assert _snapshot(mnt) == before  # byte-identical: nothing half-replaced
        assert _leftovers(mnt) == []     # no temporary, no staged directory

        (mnt / "filler").unlink(missing_ok=True)  # space is back (the limit and read-only are gone)
        code, stderr = _cli("--params", str(params), stage)
        assert code == 0, stderr
        assert _leftovers(mnt) == []
        after = _snapshot(mnt)
        assert set(after) >= {k for k in before if "resume" not in k}, sorted(after)
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)


# ---- training: the earlier teacher stays until the new one is complete; resume goes on -----------

def test_interrupted_training_leaves_the_teacher_and_resumes_from_the_staged_state(run_root, tmp_path):
    from components.config import load_params
    from components.train.teacher import staged_dir, train_teacher

    base = load_params(run_root / "params.yaml").train.model_copy(update={
        "out_dir": str(tmp_path / "teacher"), "metrics": str(tmp_path / "teacher.json"),
        "curve": str(tmp_path / "curve.csv")})
    processed = run_root / "data/processed"
    quiet = []
    train_teacher(base, processed, log=quiet.append)

    def outputs() -> dict[str, str]:
        return {**_snapshot(Path(base.out_dir)), **{p: _digest(Path(p)) for p in (base.metrics, base.curve)}}

    before = outputs()

    class Killed(Exception):
        pass

    def die_after_epoch_2(record):
        if record["epoch"] == 2:
            raise Killed

    longer = base.model_copy(update={"max_epochs": 3})
    with pytest.raises(Killed):  # continues the finished 1-epoch state in the staged copy, dies after epoch 2
        train_teacher(longer, processed, log=quiet.append, on_epoch_end=die_after_epoch_2)
    assert any("resuming" in m and "after epoch 1" in m for m in quiet), quiet
    assert outputs() == before  # hard-linked staged copy: the teacher's files untouched
    staged = staged_dir(base.out_dir)
    assert (staged / "resume.json").is_file()  # a complete resume state is kept for the next run
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [staged.name]

    quiet.clear()
    res = train_teacher(longer, processed, log=quiet.append)
    assert any("resuming" in m and "after epoch 2" in m for m in quiet), quiet
    assert res.metrics["epochs"] == 3 and not staged.exists()
    assert sorted(p.name for p in Path(base.out_dir).iterdir()) == [
        "baseline_lr", "logistic_base", "model.json", "model.safetensors", "resume-3.safetensors", "resume.json"]

    # without resume a kept state is dropped, and a failure leaves no staged directory
    with pytest.raises(Killed):
        train_teacher(longer, processed, resume=False, log=quiet.append,
                      on_epoch_end=lambda r: (_ for _ in ()).throw(Killed()))
    assert not staged.exists()


def test_ctrflow_run_reports_a_failed_write_in_one_line(run_root, monkeypatch):
    import errno

    import flows.pipeline

    path = str(run_root / "models/.teacher.partial/model.safetensors")

    def full(**_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.chdir(run_root)
    monkeypatch.setattr(flows.pipeline, "pipeline", full)
    code, stderr = _cli("run")
    assert code == 1, stderr
    assert stderr.strip().splitlines() == [
        f"error: no space left on device writing {path} (No space left on device); earlier outputs are "
        f"left as they were"], stderr
