"""DVC versioning after a run: push the outputs recorded in dvc.lock to the default remote.

After a successful scheduled run the flow has committed its outputs (`dvc commit`, the flow's
dvc-commit task); :func:`dvc_push_task` then stores them in the default DVC remote (`.dvc/config`
`core.remote`; out of the box the local directory `.dvcstore/`), so any version whose `dvc.lock` is
in git can be restored with `git checkout <rev> && dvc pull`.

A push that fails (remote unreachable, disk full) is retried twice and then **fails the task and so
the flow run**: the run is red in the Prefect UI with DVC's message, although its outputs are safe in
`dvc.lock` and the local cache (`.dvc/cache`), and `dvc push` by hand finishes the job. A run whose
versions silently never reach the remote would defeat the point of pushing. Without a default remote
there is nothing to push to: the task logs that and succeeds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

PUSH_RETRIES, PUSH_RETRY_DELAY_S = 2, 30


def _dvc() -> str:
    return shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))


def default_remote() -> tuple[str, str] | None:
    """(name, url) of the repo's default DVC remote, or None when there is none."""
    name = subprocess.run([_dvc(), "remote", "default"], capture_output=True, text=True)
    if name.returncode != 0 or not name.stdout.strip():
        return None
    name = name.stdout.strip()
    url = subprocess.run([_dvc(), "config", f"remote.{name}.url"], capture_output=True, text=True).stdout.strip()
    if url and "://" not in url and not Path(url).is_absolute():  # a local path, relative to .dvc/
        url = str((Path(".dvc") / url).resolve())
    return name, url or "?"


def push(stage_names: list[str]) -> str:
    """`dvc push` the outputs of ``stage_names`` to the default remote; returns what DVC said."""
    remote = default_remote()
    if remote is None:
        return "no default DVC remote (dvc remote add -d NAME URL): outputs are in dvc.lock and .dvc/cache only"
    name, url = remote
    proc = subprocess.run([_dvc(), "push", *stage_names], capture_output=True, text=True)
    said = " ".join((proc.stdout + " " + proc.stderr).split())
    if proc.returncode != 0:
        raise RuntimeError(
            f"dvc push to the default remote {name!r} ({url}) failed: {said or f'exit {proc.returncode}'}. "
            "The outputs are recorded in dvc.lock and kept in .dvc/cache; run `dvc push` once the remote "
            "is reachable.")
    return f"pushed to DVC remote {name!r} ({url}): {said or 'done'}"


@task(name="dvc-push", cache_policy=NO_CACHE, retries=PUSH_RETRIES, retry_delay_seconds=PUSH_RETRY_DELAY_S)
def dvc_push_task(stage_names: list[str]) -> str:
    """Push the outputs the flow recorded in dvc.lock to the default DVC remote (module docstring)."""
    message = push(stage_names)
    get_run_logger().info(message)
    return message
