"""A write that fails (file size limit, full or read-only filesystem) during preprocess: one line naming
the path and the cause, exit 1, earlier outputs byte-identical, and the next run succeeds."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, VENV_BIN, write_params


def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _ctrflow(*args: str, fsize: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    env.pop("CTRFLOW_DEBUG", None)

    def limit():  # Python ignores SIGXFSZ, so an oversized write raises OSError EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([str(VENV_BIN / "ctrflow"), *args], env=env, capture_output=True, text=True,
                          preexec_fn=limit if fsize else None)


@pytest.fixture
def validated(tmp_path, monkeypatch):
    from components import stages
    from components.config import load_params

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, generate={"rows": 3000}, preprocess={"min_count": 2})
    params = load_params("params.yaml")
    stages.generate_stage(params)
    stages.validate_stage(params)
    stages.preprocess_stage(params)
    return tmp_path


def test_preprocess_over_the_file_size_limit_names_the_path_and_keeps_the_earlier_outputs(validated):
    before = _snapshot(validated / "data/processed")
    proc = _ctrflow("preprocess", fsize=20_000)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: file too large") and "data/processed" in lines[0], lines[0]
    assert _snapshot(validated / "data/processed") == before
    assert [p.name for p in (validated / "data").iterdir() if p.name.startswith(".")] == []  # no temp left
    again = _ctrflow("preprocess")
    assert again.returncode == 0, again.stderr
    assert _snapshot(validated / "data/processed") == before  # same input, same bytes


def test_preprocess_on_a_full_filesystem(validated, tmp_path):
    """A 64 KiB tmpfs mounted over data/ (root only): ENOSPC, the path named, and a retry succeeds."""
    mnt = validated / "full"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs is not permitted here (needs root and CAP_SYS_ADMIN)")
    try:
        params = write_params(validated, generate={"rows": 3000},
                              preprocess={"min_count": 2, "out_dir": "full/processed"})
        proc = _ctrflow("--params", str(params), "preprocess")
        assert proc.returncode == 1, proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert "Traceback" not in proc.stderr, proc.stderr
        assert line.startswith("error: no space left on device") and "full/" in line, line
        assert [p.name for p in mnt.iterdir()] == []  # the partial output was cleaned up
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    proc = _ctrflow("--params", str(params), "preprocess")  # space is back (the mount is gone)
    assert proc.returncode == 0, proc.stderr
