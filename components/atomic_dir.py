"""Swap a finished directory into place so readers never see a half-written one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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
