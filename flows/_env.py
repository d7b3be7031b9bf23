"""Offline-safe defaults for Prefect, GX and DVC, applied before any of them is imported.

Measured in shared/design/toolchain.md: telemetry off (no DNS lookups from a machine without a
network), an absolute per-repo PREFECT_HOME (its SQLite DB and result store; DVC experiments run in
copies of the workspace, so the path must be absolute), and a startup timeout that survives two busy
cores. Values already set in the environment win, so a user's `PREFECT_API_URL` of a running server
is respected.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULTS = {
    "PREFECT_HOME": str(REPO_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "GX_ANALYTICS_ENABLED": "False",
    "DVC_NO_ANALYTICS": "1",
}


def apply() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


apply()
