"""Swap a finished directory (or a JSON file: :func:`write_json_atomic`) into place so readers never see a half-written one."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


def write_json_atomic(path: Path, data) -> None:
    """Write ``data`` as JSON to ``path`` through a uniquely named temporary sibling and
    ``os.replace`` (readers see the old file or the new one; concurrent writers do not clash)."""
    import json
    import uuid

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` to ``out_dir``, replacing an existing ``out_dir`` (two renames, then delete the old).

    ``tmp`` must be on the same filesystem as ``out_dir`` (a sibling), so each rename is atomic; an
    existing ``out_dir`` is renamed aside first and removed only after the new one is in place.
    """
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except BaseException:
        if old is not None:
            old.rename(out_dir)  # put the earlier directory back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# Names of the temporary siblings that the writers of this project stage outputs under (a `.name.tmp-<pid>`
# file or directory, `.name.old-<pid>` / `.name.partial-<pid>` directories being swapped, `.name.tmp`
# / `.name.old`, `name.tmp`): what a killed run leaves behind.
_LEFTOVER = re.compile(r"^\..+\.(tmp|old|partial)(-[0-9A-Za-z]+)?$|^\..+\.[0-9a-f]{32}\.tmp$|^[^.].*\.tmp$")


def is_leftover(name: str) -> bool:
    """True for a name that only a writer of this project interrupted mid-write leaves behind."""
    return bool(_LEFTOVER.match(name))


# components/train/checkpoint.STATE_META (not imported here: this module must stay torch-free)
RESUME_STATE = "resume.json"


def is_resumable(path: Path) -> bool:
    """A staged training directory (``.teacher.partial``) holding a resume state: not debris but the
    checkpoint a killed training continues from, so the sweeps below and ``ctrflow gc`` keep it
    (the next training replaces it; ``ctrflow train --fresh`` drops it)."""
    return path.is_dir() and not path.is_symlink() and (path / RESUME_STATE).is_file()


def sweep_leftovers(roots, *, log=None) -> list[Path]:
    """Delete the temporary files and directories that a killed run left in and beside ``roots``.

    For each root (a stage's output file or directory): its siblings with a leftover name that start
    with ``.<root name>`` and, for a directory, every leftover entry anywhere inside it. Call it only
    while holding the run lock (components/runlock.py): then no live writer owns any of them. A DVC
    output directory holding such an entry would otherwise be hashed and committed with it.
    """
    removed: list[Path] = []

    def drop(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
        if log is not None:
            log(f"removed {path}, left by an interrupted run")

    for root in dict.fromkeys(Path(r) for r in roots):
        parent = root.parent
        if parent.is_dir():
            for sib in parent.iterdir():
                if is_resumable(sib):
                    continue
                if sib.name.startswith(f".{root.name}.") and is_leftover(sib.name) or \
                        sib.name.startswith(f"{root.name}.") and sib.name.endswith(".tmp"):
                    drop(sib)
        if root.is_dir() and not root.is_symlink():
            for dirpath, dirnames, filenames in os.walk(root):
                for name in [*dirnames, *filenames]:
                    if is_leftover(name):
                        drop(Path(dirpath) / name)
                dirnames[:] = [d for d in dirnames if not is_leftover(d)]
    return removed


def link_or_copy(src, dst) -> None:
    """Hard-link ``src`` to ``dst`` (no bytes copied), or copy it where the filesystem cannot link."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path) -> None:
    """Copy the tree ``src`` to ``dst`` through :func:`link_or_copy` (symlinks kept as symlinks)."""
    shutil.copytree(src, dst, copy_function=link_or_copy, symlinks=True)
