"""Which failures are worth retrying: transient I/O and database errors, never deterministic ones.

The Prefect flow retries a stage task (``run.retries`` times, with exponential back-off from
``run.retry_delay_s``) only when :func:`is_transient` says its exception may pass by itself: a dropped
database connection (Optuna on PostgreSQL), a network file system hiccup, a timeout. A failed gate,
bad input, a bad parameter, a full disk or a missing file fails the same way every time, so it is
final at once: retrying it would only delay the morning's "why".
"""

from __future__ import annotations

import errno

# errno values of I/O errors that can pass by themselves (network file systems, busy resources)
TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.EIO, errno.ETIMEDOUT,
                              errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EHOSTUNREACH,
                              errno.ENETUNREACH, errno.ENETDOWN, errno.ESTALE, errno.EPIPE})
# exception class names (any module) of database / connection errors that can pass by themselves
TRANSIENT_NAMES = frozenset({"OperationalError", "InterfaceError", "DisconnectionError",  # SQLAlchemy / DB-API
                             "StorageInternalError",  # Optuna's RDB storage
                             "ConnectionError", "TimeoutError", "RemoteDisconnected"})


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_transient(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised from) is a transient I/O or database error."""
    if exc is None:
        return False
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return True
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if any(c.__name__ in TRANSIENT_NAMES for c in type(e).__mro__):
            return True
    return False


class StageFailed(RuntimeError):
    """A stage of the flow failed; the message names the stage and the cause (the flow run's state
    message in the Prefect UI)."""

    def __init__(self, stage: str, cause: BaseException):
        self.stage, self.cause = stage, cause
        super().__init__(f"stage {stage} failed: {type(cause).__name__}: {cause}")
        self.__cause__ = cause  # as `raise ... from cause`: tracebacks and is_transient follow it
