"""A tuning worker: one more process (on this machine or another) joining a shared Optuna study.

``ctrflow distill --worker`` / ``ctrflow train --worker`` and the Prefect deployment ``tune-worker``
(flows/tune_worker.py) run trials of the studies of :mod:`components.tune.study` until each holds
``n_trials`` finished trials, and write nothing of the stage's final outputs; the normal stage run
then finds the trials finished and keeps the best one. What makes a worker safe to start N times:

- :func:`require_shared_storage`: the study database must be one every worker reaches. SQLite is
  refused: on each machine its file is a separate database, so every "worker" would silently run its
  own full study; and SQLite on a network file system corrupts under concurrent writers. Several
  processes on one machine may share an SQLite file (its lock queues them), but that is plain
  ``ctrflow distill`` running beside another, not the distributed deployment this mode is for.
- :func:`worker_index`: the sampler seed's worker index (:func:`components.tune.study.run_study`),
  distinct per process so workers started at the same moment on the same study never draw the same
  random start-up samples. Index 0 stays the stage run's own.
- :func:`worker_presence`: a worker holds a shared ``flock`` on ``tune-workers.lock`` beside the run
  lock for its lifetime (it takes no run lock); a stage run's leftover sweep asks
  :func:`workers_present` and leaves ``tune.trials_dir`` and the logit cache alone while one runs on
  this checkout, so it never deletes a live trial's staging directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy

from components.tune.settings import TuneParams
from components.tune.storage import masked_url


class SharedStorageError(ValueError):
    """The study storage is not one several machines can share (the message says what to set)."""


def require_shared_storage(tune: TuneParams) -> None:
    """Raise :class:`SharedStorageError` unless ``tune.storage`` is a server database (PostgreSQL,
    MySQL) that every worker can reach."""
    backend = sqlalchemy.engine.make_url(tune.storage).get_backend_name()
    if backend != "sqlite":
        return
    env = tune.storage_env or "CTRFLOW_OPTUNA_STORAGE"
    raise SharedStorageError(
        f"a tuning worker needs a study database every worker shares, but tune.storage is SQLite "
        f"({masked_url(tune.storage)}): each machine would run its own separate study, and SQLite on a "
        f"network file system corrupts under concurrent writers. Set {env}="
        f"postgresql+psycopg://USER:PASSWORD@HOST:5432/DB on every worker (docs/scale.md, "
        f"'Distributed tuning workers')")


def worker_index() -> int:
    """A sampler-seed index for this process, from host, pid and process start time; never 0."""
    import psutil

    ident = f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time()}"
    return 1 + int.from_bytes(hashlib.sha256(ident.encode()).digest()[:4], "big") % (2**31 - 1)


def presence_file(run_lock_file: str | Path) -> Path:
    """``tune-workers.lock`` beside the run lock (params.yaml ``run.lock_file``)."""
    return Path(run_lock_file).with_name("tune-workers.lock")


@contextlib.contextmanager
def worker_presence(run_lock_file: str | Path) -> Iterator[None]:
    """Hold a shared flock on :func:`presence_file` for the block (released however the process ends)."""
    path = presence_file(run_lock_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):  # no flock on this filesystem: nothing to announce
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def workers_present(run_lock_file: str | Path) -> bool:
    """True while a tuning worker on this checkout holds its shared lock on :func:`presence_file`."""
    path = presence_file(run_lock_file)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # also releases the probe's lock
    return False
