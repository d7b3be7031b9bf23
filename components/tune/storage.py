"""Optuna RDB storage with heartbeats, so a killed worker's trial is failed and retried.

Without a heartbeat a killed process leaves its trial RUNNING forever (toolchain.md §6). Here every
running trial records a heartbeat each ``heartbeat_interval`` seconds; on the next trial start of
any worker, a RUNNING trial silent for more than ``grace_period`` seconds becomes FAIL and
``RetryHeartbeatStaleTrialCallback(max_retry=1)`` enqueues a copy with the same parameters
(``system_attrs["failed_trial"]`` = the old number).

Several workers may open a fresh database at the same moment; the schema creation then races
(PostgreSQL: duplicate table / version row), so opening is retried a few times.
"""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback


class StorageError(RuntimeError):
    """The study storage cannot be opened; the message names the URL (password hidden)."""


def _engine_kwargs(url: sqlalchemy.engine.URL) -> dict:
    if url.get_backend_name() == "sqlite":
        # Writers from several processes queue on the file lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    # Drop pooled connections that the server closed between trials (long trials).
    return {"pool_pre_ping": True}


def masked_url(url: str) -> str:
    """``url`` as SQLAlchemy renders it with the password replaced by ``***`` (safe to log/write)."""
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


def make_storage(url: str, *, heartbeat_interval: int, grace_period: int,
                 attempts: int = 5) -> RDBStorage:
    """Open (creating tables if needed) the RDB study storage at ``url`` with heartbeats on.

    An SQLite file's parent directory is created. Opening is retried ``attempts`` times on
    database errors (concurrent schema creation); a missing driver raises :class:`StorageError`
    saying which package to install.
    """
    parsed = sqlalchemy.engine.make_url(url)
    shown = masked_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    url, engine_kwargs=_engine_kwargs(parsed),
                    heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
        except ImportError as e:
            raise StorageError(
                f"tune.storage {shown}: the database driver is not installed "
                f"(postgresql+psycopg:// needs `pip install 'psycopg[binary]'`): {e.__cause__ or e}"
            ) from e
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            if attempt == attempts:
                raise StorageError(f"tune.storage {shown}: cannot open after {attempts} "
                                   f"attempts: {e}") from e
            time.sleep(0.2 * attempt + random.random() * 0.3)
    raise AssertionError("unreachable")
