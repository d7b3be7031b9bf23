"""Which failures the flow retries (components/transient.py), and the failed-stage message."""

from __future__ import annotations

import errno

import pytest

from components.config import Params
from components.train.gate import GateFailed
from components.transient import StageFailed, is_transient


class OperationalError(Exception):  # the class name SQLAlchemy / DB-API drivers use
    pass


@pytest.mark.parametrize("exc", [
    ConnectionResetError("peer reset"),
    TimeoutError("slow"),
    OSError(errno.EIO, "I/O error"),
    OSError(errno.ESTALE, "stale NFS handle"),
    OperationalError("server closed the connection unexpectedly"),
])
def test_transient_errors_are_retried(exc):
    assert is_transient(exc)
    try:  # also when wrapped, as the flow wraps every stage failure
        raise StageFailed("distill", exc) from exc
    except StageFailed as wrapped:
        assert is_transient(wrapped)


@pytest.mark.parametrize("exc", [
    GateFailed("baseline gate FAILED"),
    ValueError("bad parameter"),
    FileNotFoundError(errno.ENOENT, "no such file"),
    OSError(errno.ENOSPC, "no space left on device"),
    PermissionError(errno.EACCES, "read-only"),
    KeyError("x"),
    None,
])
def test_deterministic_errors_are_final(exc):
    assert not is_transient(exc)


def test_stage_failed_names_the_stage_and_the_cause():
    e = StageFailed("train-teacher", GateFailed("baseline gate FAILED: teacher valid AUC 0.70 vs LR 0.72"))
    assert str(e) == "stage train-teacher failed: GateFailed: baseline gate FAILED: teacher valid AUC 0.70 vs LR 0.72"
    assert isinstance(e.cause, GateFailed)


def test_stage_timeouts_name_known_stages_only():
    assert Params.model_validate({"run": {"stage_timeout_s": {"distill": 60}}}).run.stage_timeout_s == {"distill": 60}
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['train'\]"):
        Params.model_validate({"run": {"stage_timeout_s": {"train": 60}}})
    with pytest.raises(ValueError, match="> 0"):
        Params.model_validate({"run": {"stage_timeout_s": {"distill": 0}}})


def test_the_flow_retries_a_transient_failure_only(prefect_server):
    from prefect import flow, task

    from flows.pipeline import _options

    params = Params.model_validate({"run": {"retries": 2, "retry_delay_s": 0, "stage_timeout_s": {"evaluate": 30}}})
    opts = _options(params, "evaluate")
    assert opts["timeout_seconds"] == 30 and "timeout_seconds" not in _options(params, "report")
    calls = []

    @task
    def flaky(kind: str) -> str:
        calls.append(kind)
        if kind == "database" and calls.count(kind) < 3:  # the database is back at the third try
            raise StageFailed("distill", OperationalError("could not connect to server"))
        if kind == "gate":
            raise StageFailed("train-teacher", GateFailed("baseline gate FAILED"))
        return "ok"

    @flow
    def run(kind: str) -> str:
        return flaky.with_options(**{**opts, "retry_delay_seconds": 0})(kind)

    assert run("database") == "ok" and calls.count("database") == 3
    with pytest.raises(StageFailed, match="stage train-teacher failed: GateFailed"):
        run("gate")
    assert calls.count("gate") == 1  # a failed gate is final at once


def test_students_run_as_separate_tasks_in_parallel_when_allowed(prefect_server, monkeypatch):
    """run.parallel_students: 2 → the distill stage's entries run two at a time in their own tasks,
    and the summary gets them in distill_names order whatever order they finish in."""
    import threading

    from prefect import flow

    import flows.pipeline as fp
    from components.stages import StageResult

    params = Params.model_validate({"run": {"parallel_students": 2, "retries": 0},
                                    "distill": {"students": ["dagfm", "fsdnet", "kd_dagfm_plus"], "baselines": ["dagfm"]}})
    running, peak, lock = set(), [0], threading.Lock()
    # both tasks of a pair must be inside at once to pass (no timing luck: run one after the other,
    # the barrier breaks and the task fails)
    together = threading.Barrier(2, timeout=60)

    def one(_params, name):
        with lock:
            running.add(name)
            peak[0] = max(peak[0], len(running))
        together.wait()
        with lock:
            running.discard(name)
        return StageResult((), f"{name}: done", {"student": {"student": name, "test": None}})

    collected = []
    monkeypatch.setattr(fp, "_params", lambda path, overrides: params)
    monkeypatch.setattr(fp.stages, "distill_student_stage", one)
    monkeypatch.setattr(fp.stages, "distill_summary_stage",
                        lambda _p, summaries: collected.append([s["student"] for s in summaries])
                        or StageResult((), "distilled", {}))

    @flow
    def distill_only():
        return fp._distill(params, "params.yaml", {})

    assert distill_only() == "distilled"
    assert collected == [["dagfm", "fsdnet", "kd_dagfm_plus", "baseline_dagfm"]]
    assert peak[0] == 2  # two at a time, never more
