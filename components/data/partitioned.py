"""The gate and the reader for a partitioned raw log (components/data/partitions.py).

:func:`validate_partitions` runs the validation gate (:func:`components.data.validate.validate_source`)
on each partition of the window **on its own**, so a failure names the partition file, its line,
column and rule. A partition that passed is cached by content: ``<validate.cache_dir>/<sha256 of the
file>.<key>/`` holds its ``validation.json`` and ``data_docs/``, where ``<key>`` hashes everything
else the verdict depends on (format, the ``validate`` and ``schema`` sections, the MovieLens rating
keys, the Great Expectations version and the gate's source code). The next run finds it there and
does not validate that partition again; failed partitions are never cached (they are re-validated).

Outputs (``validate.out_dir``), published atomically once every partition passed:

- ``validation.json``: the summary — ``partitioned: true``, ``files``, total ``rows``, ``window``,
  ``partitions`` (name, path, sha256, date, rows, ``cached``: whether this run reused the verdict,
  ``report``: the partition's own report) and every partition's checks tagged with ``partition``;
- ``data_docs/partitions/<name>/``: that partition's ``validation.json`` and GX ``data_docs/`` (hard
  links to the cache entry where the filesystem allows, else copies). Under ``data_docs/`` like the
  single-file Data Docs, so dvc.yaml's two outs (the deterministic summary, the time-stamped docs) hold
  for both kinds of input.

On failure ``<out_dir>.failed.json`` holds the summary with every failure (each names its file) and
:class:`~components.data.errors.ValidationFailed` is raised; ``out_dir`` is left untouched.

:func:`read_partitions` opens the window's partitions with the format's reader and concatenates
them lazily into one :class:`~components.data.formats.base.SourceTable` whose extra column
:data:`PARTITION_COLUMN` is the partition's position in the window and whose ``LINE_COLUMN`` stays
the line in that partition's file; ``meta["partitions"]`` lists the partitions in order.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import polars as pl

from components.atomic_dir import link_tree, replace_dir
from components.data.errors import DataFormatError, ValidationFailed
from components.data.formats.base import LINE_COLUMN, SourceTable
from components.data.partitions import Partition, window_record

PARTITION_COLUMN = "__partition"
VALIDATE_CACHE_VERSION = 1
_GATE_SOURCES = ("validate.py", "validation_files.py", "expectations.py", "rawfile.py", "formats")


def _gate_code_hash() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _GATE_SOURCES:
        p = here / name
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def cache_key(params) -> str:
    """What a partition's verdict depends on besides its bytes (module docstring), hashed."""
    from components.data.validation_files import gx_version

    record = {
        "version": VALIDATE_CACHE_VERSION,
        "format": params.data.format,
        "validate": params.validation.model_dump(mode="json", exclude={"out_dir", "cache_dir", "workers"}),
        "schema": params.schema_spec.model_dump(mode="json"),
        "rating": [params.preprocess.rating_threshold, params.preprocess.drop_neutral_rating],
        "gx": gx_version(),
        "code": _gate_code_hash(),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]




def _write_json(path: Path, data: dict) -> None:
    from components.data.validation_files import write_report

    write_report(path, data)


def _cached_report(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def judge_partition(params, path: str, entry: str) -> tuple[dict | None, list[dict]]:
    """Validate one partition file into its cache entry: (its report, or None, and its failures as
    dicts of :class:`DataFormatError`). A top-level function, so a process pool can run it."""
    from components.data.formats import read_source
    from components.data.validate import validate_source
    from components.data.validation_files import FAILED_SUFFIX

    try:
        table = read_source(params.data.format, Path(path), params=params, remember_structure=True)
        return validate_source(table, params.validation, Path(entry)), []
    except ValidationFailed as e:
        return None, [f.to_dict() for f in e.failures]
    except DataFormatError as e:
        return None, [e.to_dict()]
    finally:
        Path(f"{entry}{FAILED_SUFFIX}").unlink(missing_ok=True)


def _judge_all(params, parts: list[Partition], entries: dict[str, Path]) -> dict[str, tuple]:
    """Every partition of ``parts`` judged, in ``validate.workers`` processes (1: in this process)."""
    workers = min(params.validation.workers, len(parts))
    if workers <= 1:
        return {p.name: judge_partition(params, str(p.path), str(entries[p.name])) for p in parts}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {p.name: pool.submit(judge_partition, params, str(p.path), str(entries[p.name]))
                   for p in parts}
        return {name: f.result() for name, f in futures.items()}


def validate_partitions(params, parts: list[Partition], out_dir: str | Path) -> dict:
    """Validate each of ``parts`` (cached by content hash) and publish the summary (module doc).

    Every partition is judged (a bad one does not hide the next); raises
    :class:`ValidationFailed` naming the first bad partition file, with every failure of every bad
    partition (each :class:`DataFormatError` names its partition file, line, column and rule).
    """
    # no GX here: with validate.workers > 1 the workers judge and this process only publishes
    from components.data.validation_files import FAILED_SUFFIX, REPORT_FILE, gx_version

    out_dir = Path(out_dir)
    cache = Path(params.validation.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = cache_key(params)
    entries: list[dict] = []
    failures: list[DataFormatError] = []
    bad: list[str] = []
    todo: dict[str, Path] = {}
    cached: dict[str, dict] = {}
    for p in parts:
        entry = cache / f"{p.sha256}.{key}"
        report = _cached_report(entry / REPORT_FILE)
        if report is not None and report.get("success"):
            cached[p.name] = report
        else:
            todo[p.name] = entry
    judged = _judge_all(params, [p for p in parts if p.name in todo], todo)
    for p in parts:
        record = p.record(cached=p.name in cached, rows=None, success=False,
                          report=f"data_docs/partitions/{p.name}/{REPORT_FILE}")
        if p.name in cached:
            report = cached[p.name]
        else:
            report, errors = judged[p.name]
            if errors:
                failures += [DataFormatError(**e) for e in errors]
                bad.append(p.name)
        if report is not None:
            record.update(rows=report.get("rows"), success=True, checks=report.get("checks", []),
                          sampled=(report.get("gx") or {}).get("sampled", False))
        entries.append(record)

    summary = {
        "format": params.data.format,
        "partitioned": True,
        "input": str(params.data.input),
        "window": window_record(params.data.window),
        "files": [str(p.path) for p in parts],
        "rows": sum(e["rows"] or 0 for e in entries),
        "success": not failures,
        "gx_version": gx_version(),
        "gx": {"sampled": any(e.get("sampled") for e in entries)},
        "partitions": [{k: v for k, v in e.items() if k not in ("checks", "sampled")} for e in entries],
        "checks": [{**c, "partition": e["name"]} for e in entries for c in e.get("checks", [])],
        "failures": [f.to_dict() for f in failures],
        "failed_partitions": bad,
        "params": params.validation.model_dump(mode="json"),
        "data_docs": None,
    }
    failed_path = out_dir.parent / (out_dir.name + FAILED_SUFFIX)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if failures:
        _write_json(failed_path, summary)
        first = next(p for p in parts if p.name == bad[0])
        raise ValidationFailed(first.path, failures)

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        (tmp / "data_docs" / "partitions").mkdir(parents=True)
        for p in parts:
            link_tree(cache / f"{p.sha256}.{key}", tmp / "data_docs" / "partitions" / p.name)
        _write_json(tmp / REPORT_FILE, summary)
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed_path.unlink(missing_ok=True)
    return summary


def require_validated(report: dict, parts: list[Partition], report_path: Path) -> None:
    """Raise RuntimeError unless ``report`` (a passed partitioned summary) covers exactly ``parts``
    with the same bytes."""
    if not report.get("partitioned"):
        raise RuntimeError(f"{report_path} validated a single file, not the partitions of the window; "
                           f"run `ctrflow validate` first")
    done = {e["name"]: e["sha256"] for e in report.get("partitions", [])}
    missing = [p.name for p in parts if done.get(p.name) != p.sha256]
    if missing:
        raise RuntimeError(f"{report_path} does not cover partition(s) {', '.join(missing)} of the current "
                           f"window (new or rewritten); run `ctrflow validate` first")


def open_partition(params, part: Partition, require_label: bool = True,
                   work_dir: Path | None = None) -> SourceTable:
    """One partition through the format's reader, its lazy frame with ``LINE_COLUMN`` (UInt64: the
    line in the partition's file). The one way every path opens a partition, in this process or in a
    preprocessing worker (components/data/partwise.py), so all of them read the same rows."""
    from components.data.formats import read_source

    t = read_source(params.data.format, part.path, params=params, require_label=require_label,
                    work_dir=work_dir, remember_structure=True)
    lf = t.lazy
    if LINE_COLUMN not in lf.collect_schema():
        lf = lf.with_row_index(LINE_COLUMN, offset=1 + t.header_lines)
    return replace(t, lazy=lf.with_columns(pl.col(LINE_COLUMN).cast(pl.UInt64)))


def read_partitions(params, parts: list[Partition], require_label: bool = True) -> SourceTable:
    """The window's partitions as one lazy SourceTable (module docstring); ``meta["partition_tables"]``
    holds each partition's own table (:func:`open_partition`), in order."""
    if not parts:
        raise ValueError("no partitions to read")
    tables = [open_partition(params, p, require_label=require_label) for p in parts]
    lazy = pl.concat([t.lazy.with_columns(pl.lit(i, dtype=pl.UInt32).alias(PARTITION_COLUMN))
                      for i, t in enumerate(tables)], how="vertical_relaxed")
    first = tables[0]
    meta = {**first.meta, "partitions": list(parts), "window": window_record(params.data.window),
            "partition_tables": tuple(tables)}
    return SourceTable(first.format, tuple(p.path for p in parts), lazy, first.fields, first.extra,
                       first.time_column, first.header_lines, meta)
