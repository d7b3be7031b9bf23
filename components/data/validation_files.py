"""The gate's files without the gate: report names, JSON-ready values, atomic report writes.

:mod:`components.data.validate` (the gate itself) imports Great Expectations, about 4 s of CPU.
A process that only merges partition verdicts (:func:`components.data.partitioned.validate_partitions`
with ``validate.workers`` > 1: the workers judge, the parent publishes) needs none of GX but these
names and helpers (publishing a report directory is :func:`components.atomic_dir.replace_dir`), so
they live here and the parent never pays that import.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from importlib.metadata import version
from pathlib import Path

import numpy as np

REPORT_FILE = "validation.json"
DOCS_DIR = "data_docs"
FAILED_SUFFIX = ".failed.json"


def gx_version() -> str:
    """The installed Great Expectations version (package metadata: no import of GX)."""
    return version("great_expectations")


def plain(v):
    """JSON-ready copy: numpy scalars → Python, NaN → None, integral floats → int, Paths → str."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return None
        return int(v) if v.is_integer() and abs(v) < 2**53 else v
    if isinstance(v, Path):
        return str(v)
    return v


def write_report(path: Path, report: dict) -> None:
    """``report`` (made :func:`plain`) as indented JSON, through a uniquely named temp file + rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(plain(report), indent=2) + "\n")
    os.replace(tmp, path)
