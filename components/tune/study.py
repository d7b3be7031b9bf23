"""Run (or resume, or join) one Optuna study until it holds ``n_trials`` finished trials in total.

The measured Optuna 5 gotchas (toolchain.md §6) and how they are handled:

- ``optimize(n_trials=N)`` adds N *more* trials per call. Here N is the study's total:
  nothing runs when N trials are already COMPLETE or PRUNED, and
  ``MaxTrialsCallback(N, states=(COMPLETE, PRUNED))`` stops the loop once they are.
- Several workers finishing at once would still overshoot N (each starts a trial while the others
  are running). Every trial therefore first checks its rank: the trials numbered below it that
  are not FAIL (WAITING, RUNNING, COMPLETE, PRUNED). Trial numbers are assigned under a row lock
  on the study, so all workers agree; a trial whose rank is N or more is surplus: it stops its
  worker and ends FAIL (user attr ``surplus``) before running the objective.
- A killed worker's trial is failed and retried through storage heartbeats (:mod:`.storage`).
- Each trial records its worker (host, pid, process start time). A call finding a RUNNING trial
  whose worker on this host no longer runs (killed: SIGKILL, OOM, a lost node's rerun) fails it and
  retries it at once, as the heartbeat would after ``grace_period``; so a rerun right after a kill
  completes the study instead of returning one trial short.
- The sampler and pruner are not stored: they are rebuilt on every call. The TPE seed mixes
  ``seed``, the worker index and the number of trials already in the study that did not FAIL, so a
  resumed or a second worker does not replay the random start-up samples of the first, while a
  killed trial (FAIL, its retry WAITING in its place) leaves the seed as if it had not been killed:
  the rerun samples what an uninterrupted run would have.
- The reference defaults are enqueued only by the worker that *created* the study (the creation
  is atomic in the database), so two workers starting together never enqueue them twice, and a
  resume never does. A worker joining a study that has no trial yet waits briefly for that first
  enqueue, so the defaults are trial 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from components.progress import report as report_progress
from components.tune.pruning import make_pruner
from components.tune.settings import TuneParams
from components.tune.storage import make_storage

log = logging.getLogger(__name__)

DEFAULTS_ATTR = "reference_defaults"
"""User attr set on the enqueued reference-defaults trial."""
WORKER_ATTR = "ctrflow_worker"
"""System attr of a running trial: {"host", "pid", "started"} of the process running it."""
SURPLUS_ATTR = "surplus"
"""User attr set on a trial that found the study already full and did not run."""
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_HOLDS_A_SLOT = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
_JOIN_WAIT_S = 10.0


class _SurplusTrial(Exception):
    """The study already holds n_trials trials ahead of this one."""


@dataclass(frozen=True)
class StudyResult:
    """What a study holds after a run: best trial, counts per state and one row per trial."""

    study_name: str
    direction: str
    best_params: dict[str, Any]
    best_value: float | None
    best_number: int | None
    n_complete: int
    n_pruned: int
    n_failed: int
    n_running: int
    trials_table: list[dict[str, Any]] = field(default_factory=list)


def study_name(params: TuneParams, name: str) -> str:
    """The stored study name of ``name`` (e.g. a student): ``<study_prefix>-<name>``."""
    return f"{params.study_prefix}-{name}"


def _sampler_seed(seed: int, worker: int, n_existing: int) -> int:
    return int(np.random.SeedSequence([seed, worker, n_existing]).generate_state(1)[0])


def _trial_row(t: FrozenTrial) -> dict[str, Any]:
    duration = (t.datetime_complete - t.datetime_start).total_seconds() \
        if t.datetime_complete and t.datetime_start else None
    note = ("reference defaults" if t.user_attrs.get(DEFAULTS_ATTR)
            else "surplus (study already full)" if t.user_attrs.get(SURPLUS_ATTR)
            else f"retry of trial {t.system_attrs['failed_trial']}"
            if "failed_trial" in t.system_attrs else "")
    row: dict[str, Any] = {
        "number": t.number,
        "state": t.state.name,
        "value": t.value,
        "last_step": t.last_step,
        "duration_s": None if duration is None else round(duration, 3),
        "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
        "note": note,
    }
    row.update({f"params_{k}": v for k, v in sorted(t.params.items())})
    return row


def summarize(study: optuna.Study) -> StudyResult:
    """A :class:`StudyResult` of the study as stored now (all workers' trials)."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    best = study.best_trial if counts[TrialState.COMPLETE] else None
    return StudyResult(
        study_name=study.study_name,
        direction=study.direction.name.lower(),
        best_params=dict(best.params) if best else {},
        best_value=best.value if best else None,
        best_number=best.number if best else None,
        n_complete=counts[TrialState.COMPLETE],
        n_pruned=counts[TrialState.PRUNED],
        n_failed=counts[TrialState.FAIL],
        n_running=counts[TrialState.RUNNING],
        trials_table=[_trial_row(t) for t in trials],
    )


def _open_study(name: str, storage: optuna.storages.BaseStorage, params: TuneParams,
                direction: str) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when another run created it first; (study, created)."""
    sampler = optuna.samplers.TPESampler(seed=params.seed)
    pruner = make_pruner(params.pruner)
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                    pruner=pruner, direction=direction, load_if_exists=False)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    stored = study.direction.name.lower()
    if stored != direction:
        raise ValueError(f"study {name!r} in {params.storage} was created to {stored}, "
                         f"not to {direction}; use another tune.study_prefix")
    return study, False


def _wait_for_first_trial(study: optuna.Study) -> None:
    deadline = time.monotonic() + _JOIN_WAIT_S
    while not study.get_trials(deepcopy=False) and time.monotonic() < deadline:
        time.sleep(0.05)


def _this_worker() -> dict[str, Any]:
    import os
    import socket

    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": psutil.Process().create_time()}


def _worker_dead(worker: Mapping[str, Any] | None) -> bool:
    """True when ``worker`` ran on this host and that process is gone (another process under its pid
    started later, or none at all)."""
    import socket

    import psutil

    if not worker or worker.get("host") != socket.gethostname():
        return False  # unknown, or on another machine: left to the heartbeat
    try:
        return psutil.Process(int(worker["pid"])).create_time() != worker.get("started")
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials of workers on this host that are no longer alive, and retry each once
    with the same parameters (the storage's heartbeat-stale callback); returns their numbers."""
    import copy

    storage = study._storage
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _worker_dead(t.system_attrs.get(WORKER_ATTR)):
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed.append(t._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker got there first
    retry = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    numbers = []
    for trial_id in failed:
        frozen = copy.deepcopy(storage.get_trial(trial_id))
        numbers.append(frozen.number)
        if retry is not None:
            retry(study, frozen)
    if numbers:
        log.warning("study %s: trial(s) %s were left RUNNING by a process that no longer runs (killed); "
                    "failed them and retried each with the same parameters", study.study_name, numbers)
    return numbers


def _rank(study: optuna.Study, number: int) -> int:
    return sum(t.number < number for t in study.get_trials(deepcopy=False, states=_HOLDS_A_SLOT))


class _ProgressCallback:
    """Reports the study's finished trials to :mod:`components.progress` after each trial."""

    def __init__(self, name: str, n_total: int):
        self.name, self.n_total = name, n_total

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        finished = study.get_trials(deepcopy=False, states=FINISHED)
        done = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None]
        best = (max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min)(
            (t.value for t in done), default=None)
        message = f"trial {trial.number} {trial.state.name.lower()}" + (
            f"; best value {best:.4f}" if best is not None else "")
        report_progress(self.name, "trials", min(len(finished), self.n_total), self.n_total, message)


def run_study(name: str, objective: Callable[[optuna.Trial], float], params: TuneParams, *,
              direction: str = "maximize", defaults: Mapping[str, Any] | None = None,
              worker: int = 0) -> StudyResult:
    """Run study ``<study_prefix>-<name>`` in ``params.storage`` until it holds
    ``params.n_trials`` COMPLETE + PRUNED trials in total (or ``params.timeout_s`` passes).

    Creates the study or resumes it (finished trials are kept); any number of workers may call
    this at once on one study, each with its own ``worker`` index (it only varies the sampler
    seed). ``defaults`` (e.g. from :func:`components.tune.space.fixed_values`) are enqueued as
    the first trial when this call creates the study. ``objective(trial)`` returns the value to
    ``direction`` (``maximize``/``minimize``); it may raise ``optuna.TrialPruned`` (see
    :func:`components.tune.pruning.pruning_callback`); any other exception fails the trial and
    propagates; one that returns NaN fails only that trial, and a call gives up after
    ``2 * missing + 2`` trials so an always-failing objective cannot loop forever. A trial
    still RUNNING in another live worker, or in a killed one whose heartbeat is younger than
    ``grace_period``, keeps its slot, so the call can return with fewer finished trials than
    ``n_trials``; running again later completes them.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    full_name = study_name(params, name)
    storage = make_storage(params.storage, heartbeat_interval=params.heartbeat_interval,
                           grace_period=params.grace_period)
    study, created = _open_study(full_name, storage, params, direction)
    if created and defaults:
        study.enqueue_trial(dict(defaults), user_attrs={DEFAULTS_ATTR: True})
    elif defaults:
        _wait_for_first_trial(study)

    fail_dead_trials(study)
    existing = study.get_trials(deepcopy=False)
    study.sampler = optuna.samplers.TPESampler(
        seed=_sampler_seed(params.seed, worker, sum(t.state != TrialState.FAIL for t in existing)))
    n_finished = sum(t.state in FINISHED for t in existing)
    if n_finished < params.n_trials:
        n_total = params.n_trials

        me = _this_worker()

        def guarded(trial: optuna.Trial) -> float:
            study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, me)
            if _rank(study, trial.number) >= n_total:
                trial.set_user_attr(SURPLUS_ATTR, True)
                study.stop()
                raise _SurplusTrial(f"study {full_name} already holds {n_total} trials")
            return objective(trial)

        # The cap only binds when trials FAIL (e.g. an objective returning NaN every time).
        cap = 2 * (n_total - n_finished) + 2
        study.optimize(
            guarded, n_trials=cap, timeout=params.timeout_s, catch=(_SurplusTrial,),
            callbacks=[MaxTrialsCallback(n_total, states=FINISHED), _ProgressCallback(full_name, n_total)])
    result = summarize(study)
    if result.n_running:
        log.warning("study %s: %d trial(s) still RUNNING (another worker, or a killed one whose "
                    "heartbeat is younger than tune.grace_period=%ss); run again to finish them",
                    full_name, result.n_running, params.grace_period)
    return result
