"""One run at a time per checkout (components/runlock.py), tested with real processes: refuse, wait,
stale take-over after SIGKILL, re-entrancy of the holder's children, the no-flock fallback, the CLI's
exit status 3, the flow taking the lock, and the scheduled deployment's Prefect concurrency limit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from components.runlock import ENV_VAR, RunLock, RunLockBusy
from tests.conftest import REPO_ROOT, VENV_BIN, write_params

# A process taking the lock at argv[1] as argv[2] (its name), on_busy argv[3]; it appends
# "<name> acquired|released <time>" to argv[4], prints HELD and holds the lock until the file
# argv[5] exists ("-": release at once). Extra argv: a command to run as a child while holding.
# NOFLOCK=1 in the environment makes flock unsupported (ENOLCK), as on some network filesystems.
HOLDER = textwrap.dedent("""
    import errno, fcntl, os, subprocess, sys, time
    if os.environ.get("NOFLOCK"):
        def flock(fd, op):
            raise OSError(errno.ENOLCK, "No locks available")
        fcntl.flock = flock
    from components.runlock import RunLock, RunLockBusy
    path, name, on_busy, log_file, release, *child = sys.argv[1:]
    def note(event):
        with open(log_file, "a") as f:
            f.write(f"{name} {event} {time.time():.6f}\\n")
    lock = RunLock(path, on_busy=on_busy, wait_timeout_s=float(os.environ.get("WAIT_S", "60")),
                   poll_s=0.05, command=f"test {name}", log=lambda m: print(m, file=sys.stderr, flush=True))
    try:
        lock.acquire()
    except RunLockBusy as e:
        print(e, file=sys.stderr, flush=True)
        sys.exit(3)
    note("acquired")
    print("HELD", lock.mode, flush=True)
    if child:
        proc = subprocess.run(child, capture_output=True, text=True)
        print("CHILD", proc.returncode, proc.stderr.replace("\\n", " | "), flush=True)
    while release != "-" and not os.path.exists(release):
        time.sleep(0.02)
    note("released")
    lock.release()
""")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["PYTHONPATH"] = str(REPO_ROOT)  # this checkout's code, also for the `ctrflow` script
    env.update(extra)
    return env


def start(tmp: Path, name: str, on_busy: str = "fail", release: str = "-", child=(), env=None):
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp / ".ctrflow/run.lock"), name, on_busy, str(tmp / "events"),
         release, *child],
        cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or _env())


def held(proc) -> str:
    """Block until proc holds the lock; its HELD line (with the lock mode)."""
    line = proc.stdout.readline()
    assert line.startswith("HELD"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return line.strip()


def finish(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def events(tmp: Path) -> list[tuple[str, str, float]]:
    rows = [line.split() for line in (tmp / "events").read_text().splitlines()]
    return [(n, e, float(t)) for n, e, t in rows]


def record(tmp: Path) -> dict:
    return json.loads((tmp / ".ctrflow/run.lock").read_text())


def test_second_run_refuses_naming_the_holder(tmp_path):
    a = start(tmp_path, "A", release=str(tmp_path / "go"))
    assert held(a) == "HELD flock"
    rec = record(tmp_path)
    assert rec["pid"] == a.pid and rec["host"] == socket.gethostname() and rec["command"] == "test A"

    rc, _, err = finish(start(tmp_path, "B", on_busy="fail"))
    assert rc == 3
    assert f"another ctrflow run holds {tmp_path / '.ctrflow/run.lock'}" in err
    assert f"pid {a.pid} on host {socket.gethostname()}" in err
    assert f"started {rec['started']}" in err and "command `test A`" in err
    assert "run.on_busy: fail" in err

    (tmp_path / "go").touch()
    assert finish(a)[0] == 0
    assert (tmp_path / ".ctrflow/run.lock").read_text() == ""  # a clean release empties the record
    assert [(n, e) for n, e, _ in events(tmp_path)] == [("A", "acquired"), ("A", "released")]


def test_second_run_waits_then_proceeds(tmp_path):
    a = start(tmp_path, "A", release=str(tmp_path / "go"))
    held(a)
    b = start(tmp_path, "B", on_busy="wait")
    waiting = b.stderr.readline()  # B announces that it waits (once), naming the holder
    assert "waiting for the run lock" in waiting and f"pid {a.pid}" in waiting, waiting
    assert [(n, e) for n, e, _ in events(tmp_path)] == [("A", "acquired")]  # B has not got it

    (tmp_path / "go").touch()
    assert finish(a)[0] == 0
    rc, out, err = finish(b)
    assert rc == 0, err
    assert "taking over" not in err  # A released cleanly
    ev = events(tmp_path)
    assert [(n, e) for n, e, _ in ev] == [("A", "acquired"), ("A", "released"), ("B", "acquired"),
                                          ("B", "released")]
    assert ev[1][2] <= ev[2][2]  # B acquired after A released


def test_wait_gives_up_after_the_timeout(tmp_path):
    a = start(tmp_path, "A", release=str(tmp_path / "go"))
    held(a)
    rc, _, err = finish(start(tmp_path, "B", on_busy="wait", env=_env(WAIT_S="0.2")))
    assert rc == 3
    assert f"pid {a.pid}" in err and "gave up after waiting" in err and "run.wait_timeout_s" in err
    (tmp_path / "go").touch()
    finish(a)


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    a = start(tmp_path, "A", release=str(tmp_path / "never"))
    held(a)
    a.send_signal(signal.SIGKILL)
    a.wait()
    assert record(tmp_path)["pid"] == a.pid  # the killed run's record is left behind

    rc, out, err = finish(start(tmp_path, "B", on_busy="fail"))
    assert rc == 0, err
    assert "HELD flock" in out
    assert f"taking over the run lock {tmp_path / '.ctrflow/run.lock'} left by pid {a.pid}" in err
    assert "no longer running" in err


def test_children_of_the_holder_reenter_and_a_forged_claim_does_not(tmp_path):
    # the holder's child (as `dvc commit` or a `dvc repro` stage started by `ctrflow run`) proceeds
    child = [sys.executable, "-c", HOLDER, str(tmp_path / ".ctrflow/run.lock"), "child", "fail",
             str(tmp_path / "events"), "-"]
    a = start(tmp_path, "A", release=str(tmp_path / "go"), child=child)
    held(a)
    child_line = a.stdout.readline()
    assert child_line.startswith("CHILD 0"), child_line
    assert [(n, e) for n, e, _ in events(tmp_path)] == [("A", "acquired"), ("child", "acquired"),
                                                        ("child", "released")]
    # an unrelated process claiming the holder's pid with the wrong token is refused
    forged = _env(**{ENV_VAR: f"{a.pid}:0123456789abcdef"})
    rc, out, err = finish(start(tmp_path, "B", on_busy="fail", env=forged))
    assert rc == 3 and f"pid {a.pid}" in err
    (tmp_path / "go").touch()
    assert finish(a)[0] == 0


def test_without_flock_support_the_excl_fallback_refuses_and_takes_over(tmp_path):
    noflock = _env(NOFLOCK="1")
    a = start(tmp_path, "A", release=str(tmp_path / "never"), env=noflock)
    assert held(a) == "HELD excl"
    rc, _, err = finish(start(tmp_path, "B", on_busy="fail", env=noflock))
    assert rc == 3 and f"pid {a.pid} on host {socket.gethostname()}" in err
    a.send_signal(signal.SIGKILL)
    a.wait()
    rc, out, err = finish(start(tmp_path, "C", on_busy="fail", env=noflock))
    assert rc == 0, err
    assert f"left by pid {a.pid}" in err and "no longer running" in err
    assert not (tmp_path / ".ctrflow/run.lock.excl").exists()  # C released it


def test_in_process_nesting_and_the_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = tmp_path / "run.lock"
    with RunLock(path, on_busy="fail") as outer:
        assert outer.mode == "flock"
        pid, token = os.environ[ENV_VAR].split(":")
        assert int(pid) == os.getpid() and token == outer.holder.token
        with RunLock(path, on_busy="fail") as inner:  # `ctrflow run` holds it, then the flow takes it
            assert inner.mode == "nested"
        assert ENV_VAR in os.environ
    assert ENV_VAR not in os.environ
    with pytest.raises(ValueError, match="on_busy"):
        RunLock(path, on_busy="maybe")


def test_cli_stage_refuses_with_exit_3_and_the_holders_child_stage_proceeds(tmp_path):
    write_params(tmp_path, run={"on_busy": "fail"})
    ctrflow = [str(VENV_BIN / "ctrflow"), "preprocess"]  # no input here: fails with exit 1 once it runs
    a = start(tmp_path, "A", release=str(tmp_path / "go"), child=ctrflow)
    held(a)
    child_line = a.stdout.readline()  # the stage run by the holder (as `dvc repro` under `ctrflow run`)
    assert child_line.startswith("CHILD 1") and "missing_file" in child_line, child_line

    r = subprocess.run(ctrflow, cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert r.returncode == 3
    assert f"error: another ctrflow run holds {tmp_path / '.ctrflow/run.lock'}: pid {a.pid}" in r.stderr
    assert "run.on_busy: fail" in r.stderr
    (tmp_path / "go").touch()
    assert finish(a)[0] == 0


def test_runlock_wrapper_holds_the_lock_for_its_whole_command(tmp_path):
    # `make repro` = python -m components.runlock dvc repro: the command's children re-enter the lock
    write_params(tmp_path)
    child = [sys.executable, "-c", HOLDER, str(tmp_path / ".ctrflow/run.lock"), "stage", "fail",
             str(tmp_path / "events"), str(tmp_path / "go")]
    wrapper = subprocess.Popen([sys.executable, "-m", "components.runlock", *child], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    assert held(wrapper) == "HELD reentrant"  # the stage runs inside the wrapper's lock
    assert record(tmp_path)["pid"] == wrapper.pid
    rc, _, err = finish(start(tmp_path, "B", on_busy="fail"))
    assert rc == 3 and f"pid {wrapper.pid}" in err and f"command `{sys.executable} -c" in err
    (tmp_path / "go").touch()
    assert finish(wrapper)[0] == 0


def test_the_flow_takes_the_lock(tmp_path, monkeypatch):
    from flows.pipeline import pipeline

    params = write_params(tmp_path, run={"on_busy": "fail"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    a = start(tmp_path, "A", release=str(tmp_path / "go"))
    held(a)
    try:
        with pytest.raises(RunLockBusy, match=f"pid {a.pid}"):
            pipeline.fn(params_path=str(params))  # the flow body, as a Prefect worker would run it
    finally:
        (tmp_path / "go").touch()
        finish(a)


def test_scheduled_deployment_has_a_concurrency_limit_of_one():
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.serve import build_deployment

    d = build_deployment(name="nightly", cron="0 3 * * *", params_path="params.yaml")
    assert d.concurrency_limit == 1
    assert d.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
    assert d.schedules[0].schedule.cron == "0 3 * * *"
    assert d.parameters == {"params_path": "params.yaml", "dvc_push": True}


def test_repo_params_have_the_run_section():
    from components.config import load_params

    run = load_params(REPO_ROOT / "params.yaml").run
    assert (run.on_busy, run.wait_timeout_s, run.poll_s, run.lock_file) == ("wait", 3600, 2, ".ctrflow/run.lock")

