"""Deterministic fault injection for the kill-and-rerun tests (tests/test_kill_rerun.py).

A pipeline step calls :func:`pause_point` with a name at a place where a real crash could hurt
(a half-written output, a checkpoint mid-update, ``dvc.lock`` being rewritten). With
``CTRFLOW_TEST_PAUSE_AT=<name>`` (or ``<name>@<n>``: the n-th time that point is reached, counted
per process) in the environment, that call writes the marker file named by
``CTRFLOW_TEST_PAUSE_MARKER`` and then sleeps until the process is killed; the test waits for the
marker and sends SIGKILL to the whole process group. Without the variable the call is one
comparison against ``None``: nothing is read, written or counted.

No Prefect import here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_ENV = "CTRFLOW_TEST_PAUSE_AT"
MARKER_ENV = "CTRFLOW_TEST_PAUSE_MARKER"


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, nth = value.partition("@")
    return name.strip(), int(nth) if nth else 1


_TARGET = _parse(os.environ.get(PAUSE_ENV))  # read once: the test sets it before the process starts
_hits = 0


def pause_point(name: str) -> None:
    """Pause here forever (after writing the marker) when ``CTRFLOW_TEST_PAUSE_AT`` names this point."""
    global _hits
    if _TARGET is None or _TARGET[0] != name:
        return
    _hits += 1
    if _hits < _TARGET[1]:
        return
    marker = os.environ.get(MARKER_ENV)
    if marker:
        tmp = Path(marker).with_name(f"{Path(marker).name}.tmp-{os.getpid()}")  # several ranks may pause at once
        tmp.write_text(f"{name}@{_hits} pid {os.getpid()}\n")
        tmp.replace(marker)
    while True:  # until SIGKILL
        time.sleep(3600)
