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
"""

from __future__ import annotations

import hashlib
import os
import socket

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
