"""The validation gate: a SourceTable is judged by Great Expectations before anything uses it.

:func:`validate_source` runs the rules of :mod:`components.data.expectations` at three levels, in
**one parse** of the rows (below):

1. **structure**: column set, format field names and dtypes, from the Polars schema. Exhaustive (a
   schema is the same for every row). A failure here stops the gate before any data is read.
2. **table aggregates**: over *all* rows, the row count, the label's null count / first null line /
   mean and every column's null count; GX then judges a
   one-row frame of those (``min_rows``, ``label_not_null``, ``both_classes``) and a
   one-row-per-column frame of null fractions (``max_null_fraction``; one expectation whose
   unexpected rows name the columns, so the suite stays small). These checks are always
   **exhaustive**.
3. **row values**: a GX suite of column-map expectations (``label_in_set``, ``int_range``,
   ``hex8``, ``hour_*``, ``rating_range``, …) runs on pandas chunks of at most
   ``params.gx_chunk_rows`` rows, converted from Polars through Arrow one chunk at a time (GX has
   no Polars datasource; toolchain.md §4; strings become pandas Categoricals, see
   :func:`_to_pandas`). Chunks are streamed with ``collect_batches``, so at most
   two chunks are buffered in Polars and one in pandas. When the table has at most
   ``params.gx_max_rows`` rows every row is checked (**exhaustive**); above that the suite runs on
   a uniform sample of exactly ``gx_max_rows`` rows drawn with ``params.seed`` (**sampled**; the
   report says so per check and overall). The per-chunk results are merged per expectation
   (counts summed, examples and first bad line from the first chunk that failed).

One parse (:func:`_one_pass`): Polars first counts the rows (a line count, no field is parsed), the
sample positions are drawn from that count, and then ONE streaming ``collect_batches`` over the
table feeds both levels — each batch adds its partial aggregates
(:func:`~components.data.expectations.partial_aggregate_exprs`) and hands its sampled rows to the
row suite. At Kaggle size that halves the gate's parsing (it used to parse every file twice: the
aggregates, then the sample). Should the parse yield another number of rows than the count (a
reader whose lines and rows differ), the gate falls back to :func:`_two_passes` (aggregates, then
the sample drawn from their exact count). Both give the same report (tests/test_validate.py).

One ephemeral GX context (``gx.get_context(mode="ephemeral")``: a pandas datasource, and per
suite a dataframe asset, a whole-dataframe batch definition and a ``ValidationDefinition``) is
built per call; GX's cost is mostly per expectation and per run, not per row. GX reports
unexpected rows by their ``LINE_COLUMN`` value (``SUMMARY`` result format with
``unexpected_index_column_names``), so failures name the file line.

Outputs:

- success: ``out_dir/validation.json`` (format, files, rows, every check with its rule, column,
  success, observed value, unexpected count, first bad line and scope; GX version; overall
  success) and ``out_dir/data_docs/`` (GX Data Docs built offline by the same context, from the
  merged results: ``index.html``, one page per suite and per validation of the three suites
  ``<format>_rows``, ``<format>_table``, ``<format>_null_fractions``). Both are written into a
  hidden temp dir beside ``out_dir`` that then replaces ``out_dir`` by rename; a stale
  ``<out_dir>.failed.json`` is removed. The Data Docs pages load their CSS/JS from public CDNs, so
  offline they show the content unstyled.
- failure: the same report goes to ``<out_dir.parent>/<out_dir.name>.failed.json`` (atomically;
  ``out_dir`` is not touched) and :class:`~components.data.errors.ValidationFailed` is raised with
  one :class:`~components.data.errors.DataFormatError` per broken expectation (file, first bad
  line, column, rule, detail such as ``label must be in {0,1}; found 2 (3 rows)``).
"""

from __future__ import annotations

import datetime
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations as gx  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from great_expectations.core.expectation_validation_result import (  # noqa: E402
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.data_context.types.resource_identifiers import (  # noqa: E402
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)

from components.atomic_dir import replace_dir  # noqa: E402
from components.config import ValidateParams  # noqa: E402
from components.data.errors import DataFormatError, ValidationFailed  # noqa: E402
from components.data.expectations import (  # noqa: E402
    LABEL_FIRST_NULL_LINE,
    LABEL_NULL_COUNT,
    NULLS_COLUMN,
    ROW_COUNT,
    aggregate_exprs,
    combine_partial_aggregates,
    expected_columns,
    null_fraction_expectations,
    null_fraction_frame,
    partial_aggregate_exprs,
    row_expectations,
    structure_failures,
    table_expectations,
    table_frame,
)
from components.data.formats.base import LINE_COLUMN, SourceTable  # noqa: E402
from components.data.validation_files import (  # noqa: E402
    DOCS_DIR,
    FAILED_SUFFIX,
    REPORT_FILE,
)
from components.data.validation_files import plain as _plain  # noqa: E402
from components.data.validation_files import write_report as _write_json  # noqa: E402
from components.faults import pause_point

PARTIAL_UNEXPECTED = 20
RESULT_FORMAT = {
    "result_format": "SUMMARY",
    "unexpected_index_column_names": [LINE_COLUMN],
    "partial_unexpected_count": PARTIAL_UNEXPECTED,
}
_SAMPLE_INDEX = "__ctrflow_sample_row"


# ---------------------------------------------------------------------------------------------
# rows → pandas chunks


def _with_line(table: SourceTable) -> tuple[pl.LazyFrame, str]:
    """The table's frame with LINE_COLUMN (from the reader, else derived from row position)."""
    lf = table.lazy
    if LINE_COLUMN in lf.collect_schema():
        return lf, "reader"
    return lf.with_row_index(LINE_COLUMN, offset=1 + table.header_lines), "row_position"


def _sample_positions(rows: int, size: int, seed: int) -> np.ndarray:
    """Row positions (0-based, ascending) of a uniform sample of exactly ``size`` of ``rows`` rows (seeded)."""
    return np.sort(np.random.default_rng(seed).choice(rows, size=size, replace=False))


def _sampled(lf: pl.LazyFrame, rows: int, size: int, seed: int) -> pl.LazyFrame:
    """A uniform sample of exactly ``size`` of the ``rows`` rows, in file order (seeded)."""
    index = pl.Series(_SAMPLE_INDEX, _sample_positions(rows, size, seed), dtype=pl.UInt64)
    return (lf.with_row_index(_SAMPLE_INDEX)
            .filter(pl.col(_SAMPLE_INDEX).cast(pl.UInt64).is_in(index))
            .drop(_SAMPLE_INDEX))


def _row_chunks(frames: Iterable[pl.DataFrame], size: int, schema: pl.Schema) -> Iterator[pl.DataFrame]:
    """Re-cut consecutive ``frames`` into frames of exactly ``size`` rows (the last shorter; one
    empty frame of ``schema`` if there are no rows), in row order."""
    buffer: list[pl.DataFrame] = []
    buffered = 0
    emitted = False
    for batch in frames:
        buffer.append(batch)
        buffered += batch.height
        while buffered >= size:
            frame = pl.concat(buffer) if len(buffer) > 1 else buffer[0]
            yield frame.slice(0, size)
            emitted = True
            rest = frame.slice(size)
            buffer, buffered = ([rest] if rest.height else []), rest.height
    if buffered or not emitted:
        yield pl.concat(buffer) if buffer else pl.DataFrame(schema=schema)


def _to_pandas(frame: pl.DataFrame):
    """Polars → Arrow → pandas, strings as pandas Categoricals.

    GX's pandas engine filters the whole frame once per metric; with pandas 3's Arrow-backed
    ``str`` columns every filter copies every string buffer, which made a 200k-row Criteo chunk
    ~3.5x slower than with Categoricals (whose filters only take integer codes). Integer columns
    with nulls arrive as float64 (pandas has no nullable numpy int); the range rules do not mind.
    """
    return frame.to_arrow().to_pandas(strings_to_categorical=True)


# ---------------------------------------------------------------------------------------------
# merging chunk results


def _exception_message(info) -> str | None:
    """The message of an exception GX caught while evaluating an expectation, else None.

    ``exception_info`` is either flat (``raised_exception``, ``exception_message``) or, when a
    metric failed, a dict of such records keyed by metric id.
    """
    if not isinstance(info, dict):
        return None
    records = [info] if "raised_exception" in info or "exception_message" in info else [
        v for v in info.values() if isinstance(v, dict)]
    for rec in records:
        if rec.get("raised_exception", True) and rec.get("exception_message"):
            return str(rec["exception_message"])
    return None


class _Merged:
    """One expectation's results over all chunks: counts summed, first failing chunk's examples."""

    def __init__(self, result: ExpectationValidationResult) -> None:
        self.config = result.expectation_config
        self.success = True
        self.is_map = "unexpected_count" in (result.result or {})
        self.element_count = self.unexpected_count = self.missing_count = 0
        self.partial_list: list = []
        self.partial_index: list = []
        self.partial_counts: list = []
        self.first_line: int | None = None
        self.observed = None
        self.exception: str | None = None

    def add(self, result: ExpectationValidationResult) -> None:
        res = result.result or {}
        if self.exception is None:
            self.exception = _exception_message(result.exception_info)
        if self.is_map:
            self.element_count += int(res.get("element_count") or 0)
            self.missing_count += int(res.get("missing_count") or 0)
            unexpected = int(res.get("unexpected_count") or 0)
            self.unexpected_count += unexpected
            if unexpected and self.first_line is None:
                index = res.get("partial_unexpected_index_list") or []
                lines = [int(d[LINE_COLUMN]) for d in index if isinstance(d, dict) and LINE_COLUMN in d]
                self.first_line = min(lines) if lines else None
                self.partial_list = list(res.get("partial_unexpected_list") or [])
                self.partial_index = list(index)
                self.partial_counts = list(res.get("partial_unexpected_counts") or [])
        elif self.observed is None or (not result.success and self.success):
            self.observed = res.get("observed_value")
        self.success = self.success and bool(result.success)

    def result_dict(self) -> dict:
        if not self.is_map:
            return {"observed_value": self.observed}
        nonmissing = self.element_count - self.missing_count
        pct = (100.0 * self.unexpected_count / nonmissing) if nonmissing else 0.0
        return {
            "element_count": self.element_count,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": pct,
            "unexpected_percent_nonmissing": pct,
            "unexpected_percent_total": (100.0 * self.unexpected_count / self.element_count
                                         if self.element_count else 0.0),
            "missing_count": self.missing_count,
            "missing_percent": (100.0 * self.missing_count / self.element_count
                                if self.element_count else 0.0),
            "partial_unexpected_list": self.partial_list,
            "partial_unexpected_index_list": self.partial_index,
            "partial_unexpected_counts": self.partial_counts,
            "unexpected_index_column_names": [LINE_COLUMN],
        }

    def to_gx(self) -> ExpectationValidationResult:
        return ExpectationValidationResult(
            success=self.success and self.exception is None,
            expectation_config=self.config,
            result=self.result_dict(),
            exception_info={"raised_exception": self.exception is not None,
                            "exception_message": self.exception, "exception_traceback": None},
        )


class _SuiteMerge:
    """Merges the per-chunk ExpectationSuiteValidationResults of one suite."""

    def __init__(self) -> None:
        self.items: dict[str, _Merged] = {}
        self.first: ExpectationSuiteValidationResult | None = None
        self.chunks = 0

    def add(self, suite_result: ExpectationSuiteValidationResult) -> None:
        self.first = self.first or suite_result
        self.chunks += 1
        for r in suite_result.results:
            key = r.expectation_config.id or repr(r.expectation_config)
            if key not in self.items:
                self.items[key] = _Merged(r)
            self.items[key].add(r)

    def to_gx(self, extra_meta: dict) -> ExpectationSuiteValidationResult:
        results = [m.to_gx() for m in self.items.values()]
        ok = sum(r.success for r in results)
        meta = dict(self.first.meta) if self.first else {}
        meta.update(extra_meta)
        return ExpectationSuiteValidationResult(
            success=ok == len(results),
            results=results,
            suite_name=self.first.suite_name if self.first else "",
            statistics={"evaluated_expectations": len(results), "successful_expectations": ok,
                        "unsuccessful_expectations": len(results) - ok,
                        "success_percent": 100.0 * ok / len(results) if results else 100.0},
            meta=meta,
            batch_id=self.first.batch_id if self.first else None,
        )


# ---------------------------------------------------------------------------------------------
# GX context


class _GxRun:
    """One ephemeral GX context holding the three suites of a format (row values, table
    aggregates, null fractions), each with its own dataframe asset, whole-dataframe batch
    definition and ValidationDefinition."""

    def __init__(self, fmt: str, rows: list, table: list, nulls: list) -> None:
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = self.context.data_sources.add_pandas(f"{fmt}_source")
        self.rows = self._definition(source, f"{fmt}_rows", rows)
        self.table = self._definition(source, f"{fmt}_table", table)
        self.nulls = self._definition(source, f"{fmt}_null_fractions", nulls)

    def _definition(self, source, name: str, exps: list) -> gx.ValidationDefinition:
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(f"{name}_batch")
        suite = self.context.suites.add(gx.ExpectationSuite(name=name, expectations=exps))
        return self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}_validation", data=batch, suite=suite))

    def build_docs(self, results: list[ExpectationSuiteValidationResult], docs_dir: Path) -> None:
        """Replace the stored per-chunk results by the merged ones and build the Data Docs site."""
        store = self.context.validation_results_store
        for key in list(store.list_keys()):
            store.remove_key(key)
        run_id = RunIdentifier(run_name="ctrflow-validate",
                               run_time=datetime.datetime.now(datetime.UTC))
        for res in results:
            res.meta["run_id"] = run_id
            key = ValidationResultIdentifier(ExpectationSuiteIdentifier(name=res.suite_name), run_id,
                                             res.batch_id or "__none__")
            store.set(key, res)
        self.context.add_data_docs_site("ctrflow", {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        self.context.build_data_docs(site_names=["ctrflow"])


# ---------------------------------------------------------------------------------------------
# report


def _examples(values: list, limit: int = 3) -> str:
    seen: list = []
    for v in _plain(values):
        if v not in seen:
            seen.append(v)
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in seen[:limit])
    return shown + (", …" if len(seen) > limit else "")


def _row_check(m: _Merged, scope: str) -> dict:
    meta = m.config.meta or {}
    return {
        "level": "rows", "scope": scope if m.is_map else "exhaustive",  # a column list is per table
        "rule": meta.get("rule"), "column": meta.get("column"),
        "expectation": m.config.type, "expect": meta.get("expect"),
        "success": m.success and m.exception is None,
        "observed_value": _plain(m.observed if not m.is_map else m.partial_list[:5]),
        "unexpected_count": m.unexpected_count if m.is_map else None,
        "element_count": m.element_count if m.is_map else None,
        "first_bad_line": m.first_line,
        "exception": m.exception,
    }


def _row_detail(m: _Merged, sampled: bool) -> str:
    expect = (m.config.meta or {}).get("expect", m.config.type)
    if m.exception is not None:
        return f"{expect}; GX could not evaluate it: {m.exception}"
    if not m.is_map:
        return f"{expect}; observed {_plain(m.observed)}"
    n = m.unexpected_count
    where = " in the sample" if sampled else ""
    return f"{expect}; found {_examples(m.partial_list)} ({n:,} row{'s' if n != 1 else ''}{where})"


def _table_check(m: _Merged, aggregates: dict) -> dict:
    meta = m.config.meta or {}
    rule = meta.get("rule")
    null_label = rule == "label_not_null"
    return {
        "level": "table", "scope": "exhaustive", "rule": rule, "column": meta.get("column"),
        "expectation": m.config.type, "expect": meta.get("expect"),
        "success": m.success and m.exception is None,
        "observed_value": _plain(aggregates.get(m.config.kwargs.get("column"))),
        "unexpected_count": aggregates.get(LABEL_NULL_COUNT) if null_label else None,
        "element_count": None,
        "first_bad_line": aggregates.get(LABEL_FIRST_NULL_LINE) if null_label else None,
        "exception": m.exception,
    }


def _table_detail(check: dict) -> str:
    observed = check["observed_value"]
    if check["exception"] is not None:
        return f"{check['expect']}; GX could not evaluate it: {check['exception']}"
    if check["rule"] == "both_classes":
        note = {None: " (no labelled rows)", 0: " (only class 0)", 1: " (only class 1)"}.get(observed, "")
        return f"{check['expect']}; observed label mean {observed}{note}"
    if check["rule"] == "label_not_null":
        return f"{check['expect']}; found {check['unexpected_count']:,} null label(s)"
    if check["rule"] == "min_rows":
        return f"{check['expect']}; found {observed:,} rows"
    shown = f"{observed:.4g}" if isinstance(observed, float) else observed
    return f"{check['expect']}; observed {shown}"


def _null_checks(m: _Merged, nulls: pl.DataFrame) -> list[dict]:
    """One check per column from the single null-fraction expectation (its unexpected rows name
    the columns that broke it)."""
    meta = m.config.meta or {}
    broken = {d.get(NULLS_COLUMN) for d in m.partial_index if isinstance(d, dict)}
    if m.exception is not None:
        broken = set(nulls[NULLS_COLUMN].to_list())
    return [{
        "level": "table", "scope": "exhaustive", "rule": meta.get("rule"), "column": row[NULLS_COLUMN],
        "expectation": m.config.type, "expect": f"{row[NULLS_COLUMN]} {meta.get('expect')}",
        "success": row[NULLS_COLUMN] not in broken, "observed_value": _plain(row["null_fraction"]),
        "unexpected_count": row["null_count"], "element_count": None, "first_bad_line": None,
        "exception": m.exception,
    } for row in nulls.iter_rows(named=True)]


def _structure_check(e: DataFormatError) -> dict:
    return {"level": "structure", "scope": "exhaustive", "rule": e.rule, "column": e.column,
            "expectation": "polars_schema", "expect": e.detail, "success": False,
            "observed_value": None, "unexpected_count": None, "element_count": None,
            "first_bad_line": None, "exception": None}


def _base_report(table: SourceTable, params: ValidateParams, line_source: str) -> dict:
    return {
        "format": table.format,
        "files": [str(f) for f in table.files],
        "rows": None,
        "success": False,
        "gx_version": gx.__version__,
        "line_source": line_source,
        "gx": None,
        "exhaustive_checks": [],
        "sampled_checks": [],
        "checks": [],
        "failures": [],
        "params": params.model_dump(mode="json", exclude={"cache_dir"}),
        "data_docs": None,
    }


# ---------------------------------------------------------------------------------------------
# atomic outputs


def _failed_path(out_dir: Path) -> Path:
    return out_dir.parent / (out_dir.name + FAILED_SUFFIX)


def _fail(report: dict, failures: list[DataFormatError], table: SourceTable, out_dir: Path):
    report["success"] = False
    report["failures"] = [f.to_dict() for f in failures]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _write_json(_failed_path(out_dir), report)
    raise ValidationFailed(table.main_file, failures)


# ---------------------------------------------------------------------------------------------
# the gate


def _gx_run(table: SourceTable, params: ValidateParams, schema: pl.Schema) -> _GxRun:
    return _GxRun(table.format, row_expectations(table, schema), table_expectations(params),
                  null_fraction_expectations(params))


def _run_rows(run: _GxRun, frames: Iterable[pl.DataFrame], params: ValidateParams,
              schema: pl.Schema) -> tuple[_SuiteMerge, int]:
    """The row suite on ``frames`` re-cut into pandas chunks of ``gx_chunk_rows``: (merged results, rows)."""
    row_merge = _SuiteMerge()
    checked = 0
    for frame in _row_chunks(frames, params.gx_chunk_rows, schema):
        checked += frame.height
        pdf = _to_pandas(frame)
        del frame
        row_merge.add(run.rows.run(batch_parameters={"dataframe": pdf}, result_format=RESULT_FORMAT))
        del pdf
    return row_merge, checked


def _one_pass(lf: pl.LazyFrame, table: SourceTable, params: ValidateParams, schema: pl.Schema,
              counted: int) -> tuple | None:
    """Aggregates and row suite in ONE streaming parse of the table: each batch adds its partial
    aggregates and hands its sampled rows (the positions :func:`_sample_positions` draws for
    ``counted`` rows; every row when ``counted <= gx_max_rows``) to the row suite. The same rows,
    chunks and results as :func:`_two_passes`, at one parse instead of two. None when the parse
    yields another number of rows than ``counted`` (the sample would be drawn from the wrong range)."""
    sampled = counted > params.gx_max_rows
    picked = _sample_positions(counted, params.gx_max_rows, params.seed) if sampled else None
    partials: list[pl.DataFrame] = []
    partial_exprs = partial_aggregate_exprs(table)

    def frames() -> Iterator[pl.DataFrame]:
        start = 0
        for batch in lf.collect_batches(chunk_size=params.gx_chunk_rows, maintain_order=True):
            partials.append(batch.select(partial_exprs))
            if picked is None:
                yield batch
            else:
                lo, hi = np.searchsorted(picked, [start, start + batch.height])
                if hi > lo:
                    yield batch[picked[lo:hi] - start]
            start += batch.height

    run = _gx_run(table, params, schema)
    row_merge, checked = _run_rows(run, frames(), params, schema)
    aggregates = combine_partial_aggregates(partials, table)
    if int(aggregates[ROW_COUNT][0]) != counted:
        return None
    return aggregates, sampled, run, row_merge, checked


def _two_passes(lf: pl.LazyFrame, table: SourceTable, params: ValidateParams, schema: pl.Schema) -> tuple:
    """The aggregates in one streaming query, then the row suite on every row or a sample of them
    (a second parse): the form :func:`_one_pass` falls back to."""
    aggregates = lf.select(aggregate_exprs(table)).collect(engine="streaming")
    rows = int(aggregates[ROW_COUNT][0])
    sampled = rows > params.gx_max_rows
    row_lf = _sampled(lf, rows, params.gx_max_rows, params.seed) if sampled else lf
    run = _gx_run(table, params, schema)
    row_merge, checked = _run_rows(run, row_lf.collect_batches(chunk_size=params.gx_chunk_rows, maintain_order=True),
                                   params, schema)
    return aggregates, sampled, run, row_merge, checked


def validate_source(table: SourceTable, params: ValidateParams, out_dir: Path) -> dict:
    """Run the validation gate on ``table`` and return the report dict (see module docstring).

    Exhaustive: structure (columns, field names, dtypes) and the table aggregates (``min_rows``,
    ``label_not_null``, ``both_classes``, ``max_null_fraction``). Row-value rules run in GX on
    every row when ``rows <= params.gx_max_rows``, else on a seeded sample of ``gx_max_rows`` rows.
    Raises :class:`ValidationFailed` (after writing ``<out_dir>.failed.json``) when a rule breaks,
    and :class:`DataFormatError` (rule ``readable``) when Polars cannot read the table.
    """
    out_dir = Path(out_dir)
    file = table.main_file
    lf, line_source = _with_line(table)
    report = _base_report(table, params, line_source)

    broken = structure_failures(table, lf.collect_schema())
    if broken:
        report["checks"] = [_structure_check(e) for e in broken]
        report["exhaustive_checks"] = sorted({e.rule for e in broken})
        _fail(report, broken, table, out_dir)
    lf = lf.select(expected_columns(table))
    schema = lf.collect_schema()

    try:
        counted = int(lf.select(pl.len()).collect().item())  # Polars counts the lines: nothing is parsed
        judged = _one_pass(lf, table, params, schema, counted)
        if judged is None:  # the parse gave another row count than the line count: two passes
            judged = _two_passes(lf, table, params, schema)
        aggregates, sampled, run, row_merge, checked = judged
        rows = int(aggregates[ROW_COUNT][0])
    except pl.exceptions.PolarsError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataFormatError(file, "readable", f"Polars could not read the table: {first}") from e
    table_merge, null_merge = _SuiteMerge(), _SuiteMerge()
    table_merge.add(run.table.run(batch_parameters={"dataframe": table_frame(aggregates).to_pandas()},
                                  result_format={"result_format": "SUMMARY"}))
    nulls = null_fraction_frame(aggregates)
    null_merge.add(run.nulls.run(
        batch_parameters={"dataframe": nulls.to_pandas()},
        result_format={"result_format": "SUMMARY", "unexpected_index_column_names": [NULLS_COLUMN],
                       "partial_unexpected_count": max(PARTIAL_UNEXPECTED, nulls.height)}))
    agg_values = {k: _plain(v) for k, v in aggregates.row(0, named=True).items()}

    scope = "sampled" if sampled else "exhaustive"
    report["rows"] = rows
    report["gx"] = {"sampled": sampled, "rows_checked": checked, "chunk_rows": params.gx_chunk_rows,
                    "chunks": row_merge.chunks, "max_rows": params.gx_max_rows,
                    "seed": params.seed if sampled else None}

    failures: list[DataFormatError] = []
    checks: list[dict] = []
    table_checks = [_table_check(m, agg_values) for m in table_merge.items.values()]
    for m in null_merge.items.values():
        table_checks += _null_checks(m, nulls)
    for check in table_checks:
        checks.append(check)
        if not check["success"]:
            failures.append(DataFormatError(file, check["rule"], _table_detail(check),
                                            line=check["first_bad_line"], column=check["column"]))
    for m in row_merge.items.values():
        check = _row_check(m, scope)
        checks.append(check)
        if not check["success"]:
            failures.append(DataFormatError(file, check["rule"], _row_detail(m, sampled),
                                            line=m.first_line, column=check["column"]))
    report["checks"] = checks
    report["exhaustive_checks"] = sorted({"columns", "format_fields", "dtype",
                                          *(c["rule"] for c in checks if c["scope"] == "exhaustive")})
    report["sampled_checks"] = sorted({c["rule"] for c in checks if c["scope"] == "sampled"})
    if failures:
        _fail(report, failures, table, out_dir)

    report["success"] = True
    report["failures"] = []
    report["data_docs"] = f"{DOCS_DIR}/index.html"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex}"
    try:
        tmp_dir.mkdir()
        extra = {"ctrflow_rows": rows, "ctrflow_sampled": sampled, "ctrflow_chunks": row_merge.chunks}
        run.build_docs([table_merge.to_gx(extra), null_merge.to_gx(extra), row_merge.to_gx(extra)],
                       tmp_dir / DOCS_DIR)
        _write_json(tmp_dir / REPORT_FILE, report)
        pause_point("validate.write")  # tests: a kill before the new report is published
        replace_dir(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    _failed_path(out_dir).unlink(missing_ok=True)
    return _plain(report)
