"""The ``concurrent.futures`` executor behind ``preprocess.parallel`` for the stage functions
(``ctrflow preprocess``, ``dvc repro``); the Prefect flow picks the matching task runner instead
(flows/preprocess.py).

- ``none``: no executor: the steps run in the calling process, one unit after the other;
- ``process``: a local process pool of ``workers`` processes (0: one per core), started with
  ``spawn`` (no fork of a process whose Polars / torch threads already run);
- ``dask``: a Dask ``distributed`` client's executor, connected to ``dask_address`` (a running
  scheduler: the workers must see the input and ``preprocess.out_dir`` at the same paths), or to a
  ``LocalCluster`` of ``workers`` single-threaded worker processes started for the run.

Each fresh worker process imports the project (components.config pulls torch, scikit-learn and
SciPy: about 4 CPU-seconds), so a pool pays off on partitions that take longer than that to process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager


def pool_size(workers: int) -> int:
    """``workers``, or the machine's cores when 0."""
    return workers or os.cpu_count() or 1


@contextmanager
def parallel_executor(parallel) -> Iterator[Executor | None]:
    """The executor ``parallel`` (a :class:`~components.config.ParallelParams`) asks for, shut down on
    exit; None for ``runner: none``."""
    if parallel.runner == "none":
        yield None
    elif parallel.runner == "process":
        with ProcessPoolExecutor(pool_size(parallel.workers), mp_context=multiprocessing.get_context("spawn")) as ex:
            yield ex
    elif parallel.runner == "dask":
        from distributed import Client, LocalCluster

        cluster = None
        if parallel.dask_address:
            client = Client(parallel.dask_address)
        else:
            cluster = LocalCluster(n_workers=pool_size(parallel.workers), threads_per_worker=1, processes=True)
            client = Client(cluster)
        try:
            yield client.get_executor(pure=False)  # the same step twice (time split) must run twice
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    else:
        raise ValueError(f"preprocess.parallel.runner must be none, process or dask, not {parallel.runner!r}")
