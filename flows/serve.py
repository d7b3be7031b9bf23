"""Scheduled retraining in one process: serve the pipeline flow as a Prefect deployment with a cron schedule.

The worker-based equivalent is prefect.yaml (`make deploy` + `make worker`, README "Run it every
night"); this module is for running everything from one command.

Schedules need a real Prefect server (the ephemeral one cannot schedule): start one with
`make server` (``prefect server start --background``), export
``PREFECT_API_URL=http://127.0.0.1:4200/api``, then ``ctrflow serve --cron "0 3 * * *"``. Runs then
appear in the Prefect UI at http://127.0.0.1:4200. Stop the serve process (SIGTERM) before the server.

One flow run at a time: the deployment carries a Prefect concurrency limit of 1 with the ENQUEUE
collision strategy (a run due while another is running waits in AwaitingConcurrencySlot and starts
when the slot frees, rather than being cancelled), and the flow itself holds the checkout's run lock
(components/runlock.py), which also keeps it apart from `ctrflow run` and `dvc repro`.
"""

from __future__ import annotations  # noqa: I001  (flows._env must run before prefect is imported)

from flows import _env  # noqa: F401
from flows.pipeline import pipeline
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

CONCURRENCY = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def build_deployment(name: str = "nightly", cron: str = "0 3 * * *", params_path: str = "params.yaml"):
    """The scheduled deployment (a RunnerDeployment; building it needs no server)."""
    return pipeline.to_deployment(name=name, cron=cron, parameters={"params_path": params_path, "dvc_push": True},
                                  concurrency_limit=CONCURRENCY)


def serve(name: str = "nightly", cron: str = "0 3 * * *", params_path: str = "params.yaml") -> None:
    """Block and run the pipeline on `cron` (UTC) until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(build_deployment(name, cron, params_path), limit=1)  # and this process runs one at a time
