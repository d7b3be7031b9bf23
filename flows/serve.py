"""Scheduled retraining: serve the pipeline flow as a Prefect deployment with a cron schedule.

Schedules need a real Prefect server (the ephemeral one cannot schedule): start one with
`make server` (``prefect server start --background``), export
``PREFECT_API_URL=http://127.0.0.1:4200/api``, then ``ctrflow serve --cron "0 3 * * *"``. Runs then
appear in the Prefect UI at http://127.0.0.1:4200. Stop the serve process (SIGTERM) before the server.
"""

from __future__ import annotations

from flows import _env  # noqa: F401
from flows.pipeline import pipeline


def serve(name: str = "nightly", cron: str = "0 3 * * *", params_path: str = "params.yaml") -> None:
    """Block and run the pipeline on `cron` (UTC) until interrupted."""
    pipeline.serve(name=name, cron=cron, parameters={"params_path": params_path})
