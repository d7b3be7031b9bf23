"""One pipeline run at a time per checkout: an exclusive lock on ``.ctrflow/run.lock``.

``ctrflow run``, every stage command (so each ``dvc repro`` stage) and the Prefect flow itself take
this lock before writing, so two runs on one checkout (a scheduled run firing during a manual one,
``ctrflow run`` beside ``dvc repro``) never interleave their writes. The second run waits for the
first or refuses (``run.on_busy: wait | fail``), naming the holder: pid, host, start time, command.

How it works:

- The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on an open descriptor of the lock file, held for
  the run's lifetime. The kernel drops it when the holder exits, however it exits (SIGKILL
  included), so a free flock means a free lock, whatever the file says: a killed run's leftover
  record is simply overwritten (and the take-over logged). The file is never deleted (deleting a
  flock file races with a process that has it open); a clean release empties it, so a non-empty
  record found on acquiring is always a run that did not finish. One caveat: processes forked by
  the holder (not exec'd) share its descriptor, so the lock outlives a killed holder until they
  exit too.
- The holder's record (JSON: pid, host, started, command, token) is written after acquiring.
- Re-entrancy: the holder exports ``CTRFLOW_RUN_LOCK=<pid>:<token>``. A process it starts (the
  flow's ``dvc commit``, the ``ctrflow <stage>`` commands of a ``dvc repro`` it runs) finds the
  lock busy, sees that the record's pid and token are the ones in its environment, and goes on
  without taking the lock. A forged or stale variable (a token that is not the holder's) is
  ignored. Within one process the lock is simply re-entrant (``ctrflow run`` → the flow).
- A filesystem without flock support (some network/FUSE mounts answer ENOLCK/EOPNOTSUPP) falls
  back to ``<lock>.excl``, created atomically with its record (``os.link``, fails if it exists)
  and removed on release; a record whose pid is no longer running on this host is stale and is
  taken over. Less exact than flock: a holder on another host is never presumed dead, and two
  processes taking over the same stale record at the same instant are not excluded.

No Prefect import here: the CLI, the flow and the tests share this module.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

ENV_VAR = "CTRFLOW_RUN_LOCK"
DEFAULT_PATH = ".ctrflow/run.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}

_logger = logging.getLogger("ctrflow.runlock")
_held: dict[Path, RunLock] = {}  # locks this process holds, by absolute path (in-process re-entrancy)
_held_guard = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """The record the lock holder writes into the lock file."""

    pid: int
    host: str
    started: str
    command: str
    token: str = ""

    def describe(self) -> str:
        alive = ""
        if self.host == socket.gethostname() and not pid_alive(self.pid):
            alive = " (no longer running: a process it started still holds the lock)"
        return f"pid {self.pid} on host {self.host}{alive}, started {self.started}, command `{self.command}`"

    @staticmethod
    def parse(text: str) -> Holder | None:
        try:
            d = json.loads(text)
            return Holder(int(d["pid"]), str(d["host"]), str(d["started"]), str(d.get("command", "?")),
                          str(d.get("token", "")))
        except (ValueError, KeyError, TypeError):
            return None


class RunLockBusy(RuntimeError):
    """Another run holds the lock (run.on_busy: fail, or the wait timed out)."""

    def __init__(self, path: Path, holder: Holder | None, reason: str):
        self.path, self.holder = path, holder
        who = holder.describe() if holder else "holder unknown (its record is not readable)"
        super().__init__(f"another ctrflow run holds {path}: {who}; {reason}")


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def default_command() -> str:
    """The command line of this process, e.g. ``ctrflow train --fresh``."""
    if not sys.argv or not sys.argv[0]:
        return f"python (pid {os.getpid()})"
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _env_claim() -> tuple[int, str] | None:
    value = os.environ.get(ENV_VAR, "")
    pid, _, token = value.partition(":")
    if not pid.isdigit() or not token:
        return None
    return int(pid), token


class RunLock:
    """The run lock on ``path``; use as a context manager (``with RunLock(...):``)."""

    def __init__(self, path: str | os.PathLike = DEFAULT_PATH, *, on_busy: str = "wait",
                 wait_timeout_s: float | None = 3600, poll_s: float = 2.0, command: str | None = None,
                 log: Callable[[str], None] | None = None):
        if on_busy not in ("wait", "fail"):
            raise ValueError(f"run.on_busy must be wait or fail, got {on_busy!r}")
        self.path = Path(os.path.abspath(path))
        self.on_busy, self.wait_timeout_s, self.poll_s = on_busy, wait_timeout_s, max(poll_s, 0.01)
        self.command = command or default_command()
        self.log = log or _logger.warning
        self.mode: str | None = None  # "flock" | "excl" (held) | "reentrant" | "nested" (no lock taken)
        self.holder: Holder | None = None
        self._fd: int | None = None
        self._prev_env: str | None = None

    # ---- public -------------------------------------------------------------------------------
    def acquire(self) -> RunLock:
        with _held_guard:
            owner = _held.get(self.path)
            if owner is not None:  # this process already holds it (ctrflow run → the flow)
                self.mode, self.holder = "nested", owner.holder
                return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        attempt = self._try_flock
        try:
            first = attempt()
        except OSError as e:  # no flock on this filesystem
            if e.errno not in _NO_FLOCK:
                raise
            attempt = self._try_excl
            first = attempt()
        return self._busy_loop(attempt, first)

    def release(self) -> None:
        if self.mode in ("flock", "excl"):
            with _held_guard:
                _held.pop(self.path, None)
            if self._prev_env is None:
                os.environ.pop(ENV_VAR, None)
            else:
                os.environ[ENV_VAR] = self._prev_env
            if self.mode == "flock" and self._fd is not None:
                os.ftruncate(self._fd, 0)  # empty record = released cleanly (never unlink: see module doc)
                os.close(self._fd)  # drops the flock
                self._fd = None
            elif self.mode == "excl":
                excl = self._excl_path()
                if Holder.parse(_read(excl)) == self.holder:
                    excl.unlink(missing_ok=True)
        self.mode = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ---- flock mode ---------------------------------------------------------------------------
    def _try_flock(self) -> tuple[bool, Holder | None]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False, _read_record(self.path)
        except OSError:
            os.close(fd)
            raise
        self._on_flock(fd)
        return True, None

    def _on_flock(self, fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        left = Holder.parse(os.read(fd, 65536).decode(errors="replace"))
        if left is not None:
            self.log(f"taking over the run lock {self.path} left by pid {left.pid} on host {left.host} "
                     f"(started {left.started}, command `{left.command}`), no longer running")
        holder = self._new_holder()
        data = json.dumps(asdict(holder)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd = fd
        self._hold("flock", holder)

    # ---- O_EXCL fallback ----------------------------------------------------------------------
    def _excl_path(self) -> Path:
        return self.path.with_name(self.path.name + ".excl")

    def _try_excl(self) -> tuple[bool, Holder | None]:
        excl = self._excl_path()
        holder = self._new_holder()
        tmp = excl.with_name(f"{excl.name}.{os.getpid()}.{holder.token}")
        tmp.write_text(json.dumps(asdict(holder)))
        try:
            for _ in range(3):
                try:
                    os.link(tmp, excl)  # atomic: fails if a lock record exists
                except FileExistsError:
                    current = _read_record(excl)
                    if current is None or current.host != socket.gethostname() or pid_alive(current.pid):
                        return False, current
                    if Holder.parse(_read(excl)) == current:  # still the dead run's record
                        self.log(f"taking over the run lock {excl} left by pid {current.pid} on host "
                                 f"{current.host} (started {current.started}, command `{current.command}`), "
                                 f"no longer running")
                        excl.unlink(missing_ok=True)
                    continue
                self._hold("excl", holder)
                return True, None
            return False, _read_record(excl)
        finally:
            tmp.unlink(missing_ok=True)

    # ---- shared -------------------------------------------------------------------------------
    def _new_holder(self) -> Holder:
        return Holder(pid=os.getpid(), host=socket.gethostname(),
                      started=datetime.now().astimezone().isoformat(timespec="seconds"),
                      command=self.command, token=secrets.token_hex(8))

    def _hold(self, mode: str, holder: Holder) -> None:
        self.mode, self.holder = mode, holder
        with _held_guard:
            _held[self.path] = self
        self._prev_env = os.environ.get(ENV_VAR)
        os.environ[ENV_VAR] = f"{holder.pid}:{holder.token}"  # inherited by the processes it starts

    def _busy_loop(self, attempt: Callable[[], tuple[bool, Holder | None]],
                   first: tuple[bool, Holder | None]) -> RunLock:
        start = time.monotonic()
        announced = False
        ok, holder = first
        while True:
            if ok:
                return self
            claim = _env_claim()
            if holder is not None and claim == (holder.pid, holder.token):
                self.mode, self.holder = "reentrant", holder  # an ancestor of ours holds it
                return self
            if self.on_busy == "fail":
                raise RunLockBusy(self.path, holder, "run.on_busy: fail")
            waited = time.monotonic() - start
            if self.wait_timeout_s is not None and waited >= self.wait_timeout_s:
                raise RunLockBusy(self.path, holder, f"gave up after waiting {waited:.0f} s "
                                                     f"(run.wait_timeout_s: {self.wait_timeout_s:g})")
            if not announced:
                who = holder.describe() if holder else "a run whose record is not readable yet"
                limit = "no time limit" if self.wait_timeout_s is None else f"at most {self.wait_timeout_s:g} s"
                self.log(f"waiting for the run lock {self.path}, held by {who} "
                         f"(run.on_busy: wait, {limit})")
                announced = True
            time.sleep(self.poll_s)
            ok, holder = attempt()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _read_record(path: Path, tries: int = 20) -> Holder | None:
    """The holder's record; retried briefly, since a new holder may be between truncate and write."""
    for _ in range(tries):
        holder = Holder.parse(_read(path))
        if holder is not None:
            return holder
        time.sleep(0.01)
    return None


def run_lock(run_params, command: str | None = None, log: Callable[[str], None] | None = None) -> RunLock:
    """The lock configured by params.yaml's ``run`` section (components.config.RunParams)."""
    return RunLock(run_params.lock_file, on_busy=run_params.on_busy,
                   wait_timeout_s=run_params.wait_timeout_s, poll_s=run_params.poll_s,
                   command=command, log=log)


def main(argv: list[str] | None = None) -> int:
    """``python -m components.runlock [--params FILE] CMD [ARGS...]``: run CMD holding the run lock.

    ``make repro`` runs ``dvc repro`` this way, so a whole repro is one run: its stage commands
    re-enter the lock (they are the holder's children) and nothing slips in between two stages.
    Exit status: CMD's; 3 when another run holds the lock; 2 for a bad params file.
    """
    import argparse
    import subprocess

    parser = argparse.ArgumentParser(prog="python -m components.runlock",
                                     description="Run a command holding the ctrflow run lock.")
    parser.add_argument("--params", default="params.yaml", help="params file with the `run` section")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, e.g. dvc repro")
    args = parser.parse_args(argv)
    if not args.cmd:
        parser.error("no command given")
    from components.config import ConfigError, RunParams, load_params

    try:
        run = load_params(args.params).run if Path(args.params).exists() else RunParams()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        with run_lock(run, command=" ".join(args.cmd),
                      log=lambda msg: print(f"note: {msg}", file=sys.stderr, flush=True)):
            proc = subprocess.Popen(args.cmd)
            while True:
                try:
                    return proc.wait()
                except KeyboardInterrupt:  # Ctrl-C reaches CMD too: let it stop in its own way
                    continue
    except RunLockBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
