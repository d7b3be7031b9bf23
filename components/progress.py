"""Progress of a long stage, for whoever watches: one process-wide observer, no Prefect here.

Training reports after every evaluation (:func:`components.train.loop.fit`), a tuning study after
every finished trial (:func:`components.tune.study.run_study`). By default nothing listens and a
report costs one function call. The Prefect flow installs an observer for the duration of a task
(flows/artifacts.py turns it into a Prefect progress artifact the UI updates live); the CLI does not.

The observer is a context variable (each thread or Prefect task context has its own). An observer must never break the run it watches: an exception it raises is logged and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``kind`` (``epochs`` or ``trials``) in ``task`` (e.g. a model or
    study name); ``message`` is the line a person would read (the metric so far)."""

    task: str
    kind: str
    done: float
    total: float
    message: str = ""

    @property
    def percent(self) -> float:
        """Share done, 0..100 (100 when ``total`` is not positive)."""
        if self.total <= 0:
            return 100.0
        return max(0.0, min(100.0, 100.0 * self.done / self.total))


Observer = Callable[[Progress], None]
# per thread / task context, so students distilled in parallel threads each report to their own observer
_observer: ContextVar[Observer | None] = ContextVar("ctrflow_progress_observer", default=None)


def report(task: str, kind: str, done: float, total: float, message: str = "") -> None:
    """Tell the current observer (if any) how far ``task`` is."""
    observer = _observer.get()
    if observer is None:
        return
    try:
        observer(Progress(task, kind, float(done), float(total), message))
    except Exception:  # noqa: BLE001 - a broken observer must not fail training
        log.warning("progress observer failed; ignoring it", exc_info=True)


@contextmanager
def observed(observer: Observer) -> Iterator[None]:
    """Install ``observer`` for the ``with`` block (the previous one is restored after it)."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)
