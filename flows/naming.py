"""Flow-run names that say what ran: the teacher model, the data format and input, the start time.

``ctrflow-pipeline``'s ``flow_run_name``: e.g. ``dcnv2 on criteo:synthetic.txt 2026-12-06 03:00 UTC``
instead of Prefect's random ``muscular-carp``, so a list of nightly runs in the UI reads as a history.
A params file that does not load gets a plain ``ctrflow <time>`` name here: the flow itself then
fails with the message naming the key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path


def describe(params) -> str:
    """``<teacher> on <format>:<input name>`` of loaded params; for a partitioned input the training
    window's first and last partition, e.g. ``dcnv2 on criteo:parts[day_3..day_9]``."""
    text = f"{params.train.model} on {params.data.format}:{Path(params.data.input).name}"
    from components.data.partitions import window_partitions

    try:
        parts = window_partitions(params)
    except Exception:  # noqa: BLE001  (not generated yet, unreadable: the stages report it)
        parts = None
    if parts:
        first, last = parts[0].name, parts[-1].name
        text += f"[{first}..{last}]" if first != last else f"[{first}]"
    return text


def run_name() -> str:
    """The name of the current flow run of the pipeline (reads its parameters from Prefect's runtime)."""
    from prefect.runtime import flow_run

    from components.config import load_params

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        parameters = flow_run.parameters or {}
        params = load_params(parameters.get("params_path", "params.yaml"), parameters.get("overrides") or {})
        return f"{describe(params)} {when}"
    except Exception:  # noqa: BLE001  (a name must never stop the run; the flow reports the bad params)
        return f"ctrflow {when}"


def run_tags(params) -> list[str]:
    """Tags a pipeline run adds to itself: ``data:<format>`` and ``teacher:<model>``."""
    return [f"data:{params.data.format}", f"teacher:{params.train.model}"]


def tag_run(params) -> None:
    """Add :func:`run_tags` to the current flow run (beside the deployment's ``ctrflow``, ``nightly``),
    so the UI's run list can be filtered by data format and teacher. Never fails the run."""
    from prefect.client.orchestration import get_client
    from prefect.logging import get_logger
    from prefect.runtime import flow_run

    if not flow_run.id:  # the flow's body called outside a flow run (pipeline.fn in tests)
        return
    try:
        tags = sorted(set(flow_run.tags or []) | set(run_tags(params)))
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, tags=tags)
    except Exception as e:  # noqa: BLE001
        get_logger("ctrflow").warning(f"could not tag the flow run {flow_run.id}: {e}")
