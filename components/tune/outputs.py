"""Write a study's results: ``trials.csv`` and ``trials.json`` (one row per trial) and ``best.json``.

Each file is written under a hidden temporary name in the same directory and renamed into place,
so an interrupted write never leaves a half file or destroys the previous good one.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from components.repro import TIMING_FIELDS, without_timings
from components.tune.study import StudyResult

_FIXED_COLUMNS = ("number", "state", "value", "last_step", "duration_s", "datetime_start",
                  "datetime_complete", "note")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def trials_csv(rows: list[dict]) -> str:
    """CSV text of ``rows``: the fixed columns (those the rows have, when they drop the timings),
    then ``params_*`` sorted; empty cell for None."""
    keys = {k for r in rows for k in r}
    fixed = [c for c in _FIXED_COLUMNS if c not in TIMING_FIELDS or not rows or c in keys]
    params = sorted(keys - set(_FIXED_COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*fixed, *params], lineterminator="\n",
                            restval="")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def write_study_outputs(result: StudyResult, out_dir: str | Path, *,
                        timings: bool = True) -> dict[str, Path]:
    """Write ``trials.csv``, ``trials.json`` and ``best.json`` into ``out_dir`` (created);
    returns their paths by name. All three texts are built first (a value JSON cannot hold, e.g.
    NaN, raises ValueError before any file changes); ``best.json`` is written last.

    ``timings=False`` leaves out each trial's ``duration_s``, ``datetime_start`` and
    ``datetime_complete`` (components/repro.py): for tables inside a DVC out, which two identical
    runs must write byte for byte; the study database keeps them."""
    if not timings:
        result = replace(result, trials_table=without_timings(result.trials_table))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    best = {k: v for k, v in asdict(result).items() if k != "trials_table"}
    paths = {"trials_csv": out / "trials.csv", "trials_json": out / "trials.json",
             "best": out / "best.json"}
    # Serialise everything before touching a file: a bad value fails with all files intact.
    texts = {"trials_csv": trials_csv(result.trials_table),
             "trials_json": json.dumps(result.trials_table, indent=2, allow_nan=False) + "\n",
             "best": json.dumps(best, indent=2, allow_nan=False) + "\n"}
    for key in ("trials_csv", "trials_json", "best"):
        _atomic_write_text(paths[key], texts[key])
    return paths
