"""Prefect artifacts of a pipeline run: what the UI shows a person besides task names and logs.

- ``ctrflow-summary`` (markdown): headline table, baseline gate, promotion decision, report path;
- ``ctrflow-models`` (table): every model's metrics as numbers;
- ``ctrflow-report`` (link): the HTML report;
- one progress artifact per training / tuning task, updated after every evaluation or trial
  (:mod:`components.progress` reports it; :func:`progress_artifact` listens).

The contents come from components/report/run_summary.py; this module only publishes them.
Artifact keys must be lowercase letters, digits and dashes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from components.progress import Progress, observed
from components.report.run_summary import run_summary

SUMMARY_KEY, TABLE_KEY, REPORT_KEY = "ctrflow-summary", "ctrflow-models", "ctrflow-report"


def artifact_key(text: str) -> str:
    """``text`` as a valid Prefect artifact key (lowercase, digits, dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "ctrflow"


def publish_run_summary(params, title: str) -> dict:
    """Create the summary, table and link artifacts of the finished run; returns the summary."""
    summary = run_summary(params, title=title)
    create_markdown_artifact(summary["markdown"], key=SUMMARY_KEY,
                             description="Headline table, gates and promotion of this run")
    create_table_artifact(summary["table"], key=TABLE_KEY, description="Test metrics of every model")
    create_link_artifact(f"file://{summary['report_html']}", link_text="HTML report", key=REPORT_KEY,
                         description="The run's full report (on the machine that ran it)")
    return summary


@contextmanager
def progress_artifact(stage: str) -> Iterator[None]:
    """Inside the block, each :func:`components.progress.report` updates a progress artifact of the
    reporting task (one per model or study), created at its first report."""
    ids: dict[str, object] = {}

    def update(p: Progress) -> None:
        description = f"{stage}: {p.task} — {p.done:g}/{p.total:g} {p.kind}. {p.message}".strip()
        if p.task not in ids:
            ids[p.task] = create_progress_artifact(
                p.percent, key=artifact_key(f"{stage}-{p.task}-progress"), description=description)
        else:
            update_progress_artifact(ids[p.task], p.percent, description=description)

    with observed(update):
        yield
