"""What two identical runs may write differently (docs/reproducibility.md cites this module).

From a clean state, two runs with the same params.yaml on the same machine (same torch build, same
``torch.get_num_threads()``, CPU) write byte-identical data and model outputs: every file under the
DVC outs ``data/raw``, ``data/processed``, ``data/teacher_logits``, ``data/validation/validation.json``,
``models/teacher`` and ``models/students``, so ``dvc repro --force`` twice records the same
``dvc.lock`` hashes for them. Wall-clock measurements stay out of those files: they are written
only to the metrics, the report and the logs, and :data:`TIMING_FIELDS` names every such field.

:data:`ALLOWED_TO_DIFFER` lists, per file, what may differ between two runs and why;
tests/test_reproducibility.py compares two runs against it.
"""

from __future__ import annotations

from typing import Any

# Keys holding a wall-clock measurement or a date. Dropped (:func:`without_timings`) from anything
# written into a DVC data/model out; kept in metrics/, reports/ and the logs.
TIMING_FIELDS = frozenset({
    "samples_per_s",        # training throughput of an evaluation segment / epoch
    "seconds",              # wall time of an evaluation segment
    "train_samples_per_s",  # metrics/teacher.json: mean of the above
    "train_seconds",        # metrics/teacher.json: wall time of the teacher's fit
    "duration_s",           # an Optuna trial's wall time
    "datetime_start",       # an Optuna trial's start (local time)
    "datetime_complete",    # an Optuna trial's end
})

# Files (glob patterns relative to the run's root) that may differ between two identical runs.
# value: the JSON keys (dotted; "*" = any list item or dict key) that may differ, or None when the
# whole file may differ; and why. Every other output file must be byte-identical.
ALLOWED_TO_DIFFER: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "metrics/teacher.json": (
        ("train_samples_per_s", "train_seconds", "tuning.trials.*.duration_s",
         "tuning.trials.*.datetime_start", "tuning.trials.*.datetime_complete"),
        "wall-clock training throughput and time (and of each teacher trial when tuned)"),
    "metrics/teacher_curve.csv": (
        ("samples_per_s", "seconds"), "throughput and wall time of each evaluation segment (columns)"),
    "metrics/profile.json": (
        ("models.*.latency", "models.*.achieved_gflops_per_s", "models.*.time_breakdown",
         "models.*.vs_teacher.p50_latency_ratio", "models.*.vs_teacher.throughput_ratio",
         "models.*.vs_teacher.speedup_per_flop", "host"),
        "measured CPU latency/throughput, profiler times and op ranking (FLOPs, parameters and file "
        "sizes are exact)"),
    "reports/report.md": (None, "renders metrics/profile.json's latencies and the teacher's samples/s"),
    "reports/report.html": (None, "the same, plus figures drawn from those timings"),
    "data/validation/data_docs/**": (
        None, "Great Expectations HTML: its run id (directory name) is the validation's start time and "
              "each page embeds the build time; validation.json beside it is byte-identical"),
    "optuna/*.db": (
        None, "the Optuna SQLite study: trial start/end datetimes and heartbeats; the trials' params "
              "and values are equal (models/students/*/study/trials.csv is byte-identical)"),
    ".prefect/**": (None, "Prefect's run database and logs: run ids and times"),
    ".ctrflow/run.lock": (None, "the run lock: holder pid, host and start time"),
    "data/validation-cache/structure/**": (
        None, "the readers' store of passed byte passes / structure scans (not a stage output): one entry "
              "per file version, named by a hash of the file's absolute path, size, mtime and inode"),
    "data/validation-cache/sha256-by-stat.json": (
        None, "the store of the partitions' sha256s by absolute path, size, mtime and inode (not a stage "
              "output)"),
}

# Of those, the files whose NAMES depend on where and when the run's input files were written (two runs
# in two directories hold different ones): left out of the comparison of the two runs' file lists.
PATH_KEYED = ("data/validation-cache/structure/", "data/validation-cache/sha256-by-stat.json")


def without_timings(obj: Any) -> Any:
    """``obj`` (JSON-like) with every :data:`TIMING_FIELDS` key removed, recursively."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k not in TIMING_FIELDS}
    if isinstance(obj, list | tuple):
        return [without_timings(v) for v in obj]
    return obj
