"""Launch torchrun from a stage: the command line, the streamed output, a rank's error.

:func:`torchrun_command` builds the ``python -m torch.distributed.run`` command for
``train.distributed`` (``--standalone`` on one machine; ``--nnodes/--node-rank/--rdzv-backend
c10d/--rdzv-endpoint`` across machines) running ``components.train.distributed``;
:func:`run_torchrun` runs it with stdout and stderr merged and passes every line to the stage's
``log`` as it comes, and raises :class:`DistributedTrainingFailed` naming the failing rank and its
error (each rank writes ``rank-<r>.error`` into the launcher's report directory) when a rank fails.

The command is ``python -m components.train.launch <torchrun args>``: this module's ``__main__``
asks Linux to kill torchrun when the stage process dies (``PR_SET_PDEATHSIG``), then runs
``torch.distributed.run.main`` unchanged; the ranks do the same towards torchrun
(:func:`components.train.distributed.die_with_parent`). So a ``kill -9`` of the stage leaves no
rank training on into the staged directory that the rerun continues.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from components.config import DistributedParams

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRY_MODULE = "components.train.distributed"


class DistributedTrainingFailed(RuntimeError):
    """A rank of the torchrun launch failed (the message names it and its error)."""


def torchrun_args(dist: DistributedParams, module_args: list[str]) -> list[str]:
    """torchrun's arguments for ``dist``, then ``-m components.train.distributed module_args``."""
    args = ["--nproc-per-node", str(dist.nproc), "--max-restarts", "0"]
    if dist.nnodes == 1:
        args = ["--standalone", *args]
    else:
        args += ["--nnodes", str(dist.nnodes), "--node-rank", str(dist.node_rank),
                 "--rdzv-backend", "c10d", "--rdzv-endpoint", str(dist.rdzv_endpoint)]
    return [*args, "-m", ENTRY_MODULE, *module_args]


def torchrun_command(dist: DistributedParams, module_args: list[str]) -> list[str]:
    """The full command: this interpreter running torchrun under the parent-death guard."""
    return [sys.executable, "-m", "components.train.launch", *torchrun_args(dist, module_args)]


def rank_env(threads: int) -> dict[str, str]:
    """The environment of torchrun and its ranks: this checkout's code first on ``PYTHONPATH`` (the
    ranks import the same ``components`` as the stage), unbuffered output, ``OMP_NUM_THREADS``."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def rank_threads(num_threads: int, nproc: int) -> int:
    """CPU threads per rank: ``train.num_threads`` when set, else ``max(1, cores // nproc)``."""
    return num_threads or max(1, (os.cpu_count() or 1) // max(1, nproc))


def rank_errors(report_dir: Path) -> list[tuple[int, str]]:
    """``(rank, error text)`` of every rank that wrote ``rank-<r>.error``, first written first (the
    first is the cause; later ones are usually peers losing their connection to it)."""
    files = sorted(report_dir.glob("rank-*.error"), key=lambda f: (f.stat().st_mtime_ns, f.name))
    return [(int(f.stem.removeprefix("rank-")), f.read_text()) for f in files]


def failure_message(returncode: int, world_size: int, report_dir: Path) -> str:
    """One clear message for a failed launch: the failing rank and its error's last line."""
    errors = rank_errors(report_dir)
    head = f"distributed training failed (torchrun, {world_size} ranks, exit status {returncode})"
    if not errors:
        return (f"{head}: no rank reported an error (killed by a signal or out of memory?); "
                f"torchrun's output above names the rank and its exit code")
    rank, text = errors[0]
    summary = text.split("\n\n", 1)[0].strip()
    others = [str(r) for r, _ in errors[1:]]
    also = f" (then rank(s) {', '.join(others)} failed too)" if others else ""
    return f"{head}: rank {rank}: {summary}{also}"


def run_torchrun(dist: DistributedParams, module_args: list[str], *, report_dir: Path,
                 threads: int, log: Callable[[str], object] = print, env: dict | None = None) -> None:
    """Run torchrun for ``dist`` (cwd: the current directory), passing each output line to ``log``;
    raise :class:`DistributedTrainingFailed` when it exits non-zero."""
    cmd = torchrun_command(dist, module_args)
    log(f"launching {dist.world_size} ranks ({dist.nproc} here, node {dist.node_rank} of "
        f"{dist.nnodes}, {threads} thread(s) each): {' '.join(cmd[1:])}")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1, env=env or rank_env(threads), errors="replace") as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log(line.rstrip("\n"))
            rc = proc.wait()
        except BaseException:
            proc.kill()  # the ranks follow torchrun (PR_SET_PDEATHSIG)
            proc.wait()
            raise
    if rc != 0:
        raise DistributedTrainingFailed(failure_message(rc, dist.world_size, report_dir))


def _guarded_main(argv: list[str]) -> int:
    from torch.distributed.run import main

    from components.train.distributed import die_with_parent

    die_with_parent()
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(_guarded_main(sys.argv[1:]))
