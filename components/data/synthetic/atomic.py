"""Write outputs under temporary names and rename them into place only when complete.

A failed or interrupted generation leaves earlier good outputs untouched: every output is first
written to a hidden sibling path (same directory, so the rename is atomic on one filesystem).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def staging_path(target: Path) -> Path:
    """A hidden sibling of ``target`` to write into before the rename."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def discard(path: Path) -> None:
    """Remove a staging file or directory if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def publish(staged: Path, target: Path) -> None:
    """Move ``staged`` onto ``target``. A file replaces atomically; a directory is swapped in
    (the old one renamed aside, the new one renamed in, the old one removed)."""
    if staged.is_dir():
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(staged, target)
            discard(old)
        else:
            os.replace(staged, target)
    else:
        os.replace(staged, target)
