"""What produced a run: package versions, device, seeds, git commit and DVC output hashes.

- versions: ``importlib.metadata`` of the installed distributions (no heavy imports), plus Python;
- git: ``git rev-parse HEAD`` and whether ``git status --porcelain`` lists changes (read-only calls;
  ``None`` outside a git checkout or without git);
- DVC: every stage's ``outs`` (path and md5 / hash) from ``dvc.lock`` when it exists.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import yaml

PACKAGES = ("torch", "polars", "pyarrow", "numpy", "prefect", "dvc", "optuna",
            "great_expectations", "scikit-learn", "matplotlib")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """``{"python": …, package: version or None when not installed}``."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(cwd: str | Path = ".") -> dict[str, str | bool | None]:
    """``{"commit": hash or None, "dirty": bool or None}`` of the checkout at ``cwd``."""
    cwd = Path(cwd)
    commit = _git(["rev-parse", "HEAD"], cwd)
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd) if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def dvc_output_hashes(lock_path: str | Path = "dvc.lock") -> list[dict[str, str]]:
    """``[{"stage", "path", "hash"}]`` for every out of every stage in ``dvc.lock`` ([] if absent).

    ``hash`` is the out's ``md5`` (a directory's ends in ``.dir``), else its ``etag``/``checksum``.
    """
    lock_path = Path(lock_path)
    if not lock_path.is_file():
        return []
    try:
        lock = yaml.safe_load(lock_path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{lock_path}: not valid YAML: {e}") from e
    rows = []
    for stage, spec in (lock.get("stages") or {}).items():
        for out in (spec or {}).get("outs") or []:
            digest = out.get("md5") or out.get("etag") or out.get("checksum")
            rows.append({"stage": stage, "path": str(out.get("path")), "hash": str(digest)})
    return rows
