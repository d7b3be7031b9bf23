"""What DVC knows about the pipeline's stages: is a stage up to date with dvc.lock, and record one.

The Prefect flow (flows/pipeline.py) uses this to make a run after a crash cheap and safe: each stage
is recorded in ``dvc.lock`` (``dvc commit --force <stage>``) as soon as it completes, and before a
stage runs the flow asks DVC whether it changed since (``dvc status <stage>``: its deps, params, code
deps and outputs against dvc.lock). DVC's own lock file is the only record; nothing here keeps a
second one that could disagree with it.

Both calls go through DVC's Python API in this process (no 2-3 s ``dvc`` start-up per stage).
``dvc.lock`` is rewritten through a temporary sibling and a rename: DVC itself truncates and rewrites
the file in place, so a kill at that instant would leave it empty or cut short.

No Prefect import here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from components.faults import pause_point


def in_dvc_repo(root: str | Path = ".") -> bool:
    return (Path(root) / ".dvc").is_dir() and (Path(root) / "dvc.yaml").is_file()


def stage_changes(stage: str, root: str | Path = ".") -> list:
    """What ``dvc status <stage>`` reports for this stage alone: ``[]`` when its deps, params, code
    deps and outputs all match its entry in dvc.lock (so rerunning it would reproduce them), else the
    changes (a stage missing from dvc.lock or with missing outputs counts as changed)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        status = repo.status(targets=[stage])
    return list(status.get(stage, [])) if status else []


def is_unchanged(stage: str, root: str | Path = ".") -> bool:
    """True when ``stage`` is recorded in dvc.lock and nothing it depends on or wrote changed since."""
    if not _locked(stage, root):
        return False
    return not stage_changes(stage, root)


def _locked(stage: str, root: str | Path) -> bool:
    import yaml

    path = Path(root) / "dvc.lock"
    if not path.exists():
        return False
    data = yaml.safe_load(path.read_text()) or {}
    return stage in (data.get("stages") or {})


def sweep_leftovers(root: str | Path = ".", log=None) -> list[Path]:
    """Delete a ``.dvc.lock.tmp-<pid>`` that a commit killed before its rename left (hold the run lock)."""
    from components.atomic_dir import sweep_leftovers as sweep

    return sweep([Path(root) / "dvc.lock"], log=log)


def commit(stages: Sequence[str], root: str | Path = ".") -> None:
    """Record ``stages`` (their current deps, params and outputs) in dvc.lock and the DVC cache, as
    ``dvc commit --force <stages>`` does; dvc.lock is replaced atomically."""
    from dvc.repo import Repo

    with _atomic_dvc_writes(), Repo(str(root)) as repo:
        for stage in stages:
            repo.commit(stage, force=True)


@contextlib.contextmanager
def _atomic_dvc_writes() -> Iterator[None]:
    """While inside, DVC writes its YAML files (dvc.lock) to a temporary sibling and renames it into
    place, instead of truncating and rewriting the file itself."""
    from dvc.utils.serialize import _common, _yaml

    original = _common._dump_data

    def dump_atomically(path, data, dumper, fs=None, **kwargs):
        from dvc.fs import LocalFileSystem

        if fs is not None and not isinstance(fs, LocalFileSystem):
            return original(path, data, dumper, fs=fs, **kwargs)
        path = os.fspath(path)
        tmp = f"{os.path.join(os.path.dirname(path), '.' + os.path.basename(path))}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as fd:
                dumper(data, fd, **kwargs)
                fd.flush()
                os.fsync(fd.fileno())
            if os.path.basename(path) == "dvc.lock":  # (DVC's run-cache entries are YAML files too)
                pause_point("dvc_commit.write")  # tests: a kill with the new dvc.lock written, not renamed
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    _common._dump_data = _yaml._dump_data = dump_atomically
    try:
        yield
    finally:
        _common._dump_data = _yaml._dump_data = original
