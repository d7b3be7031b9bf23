"""The validation rules of each raw format, as Great Expectations suites plus Polars checks.

A :class:`~components.data.formats.base.SourceTable` is judged at three levels; every rule has a
short name (``rule``) that error messages and ``validation.json`` use:

1. **Structure** (:func:`structure_failures`, Polars schema only, exhaustive, instant):
   ``columns`` (every declared column present, nothing undeclared), ``format_fields`` (the field
   names the format prescribes), ``dtype`` (line and label integer, numeric fields numeric,
   categorical fields String, Avazu ``hour`` String, MovieLens rating/timestamp integer, the time
   column integer, temporal or String). GX's type-list expectations misbehave on pandas/Arrow
   dtypes (toolchain.md §4), so dtypes are checked here and never in GX.
2. **Table aggregates** (:func:`aggregate_exprs` over *all* rows — or their batch partials,
   :func:`partial_aggregate_exprs`, in the gate's single parse — then
   judged in GX: :func:`table_expectations` on a one-row frame, :func:`null_fraction_expectations`
   on a one-row-per-column frame):
   ``min_rows`` (rows >= ``min_rows``), ``label_not_null`` (no null label; the first null's line is
   reported), ``both_classes`` (label mean strictly between 0 and 1), ``max_null_fraction`` (each
   non-label column null at most ``max_null_fraction`` of the time).
3. **Row values** (:func:`row_expectations`, GX column-map expectations run on pandas chunks):
   ``columns`` / ``column_count`` (ordered column list), ``label_in_set`` (label in {0,1});
   Criteo ``int_range`` (I1–I13 in [:data:`CRITEO_INT_MIN`, :data:`CRITEO_INT_MAX`]) and ``hex8``
   (C1–C26 match ``^[0-9a-f]{8}$`` where not null); Avazu ``hour_digits``, ``hour_month``,
   ``hour_day``, ``hour_hh``, ``hour_date`` (raw ``hour`` is YYMMDDHH and a real calendar hour),
   ``hour_of_day_range``, ``weekday_range``; MovieLens ``rating_range`` (1..5), ``id_positive``
   (user_id/item_id integral and >= 1), ``timestamp_range`` (>= 0), ``year_range``
   (1800..2100). The gate runs them on every row, or on a seeded sample when the input is larger
   than ``gx_max_rows`` (see :mod:`components.data.validate`).

Every expectation carries ``meta = {"rule", "column", "expect"}``: the rule name, the source column
it is about (for aggregates it differs from the GX column, e.g. ``label_mean`` → ``label``; the
null-fraction expectation names its columns through its unexpected rows) and a one-line statement
of what is expected, used in error details.
"""

from __future__ import annotations

import os

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations.expectations as gxe  # noqa: E402
import polars as pl  # noqa: E402
import polars.selectors as cs  # noqa: E402

from components.config import ValidateParams  # noqa: E402
from components.data.errors import DataFormatError  # noqa: E402
from components.data.formats.base import LABEL, LINE_COLUMN, SourceTable  # noqa: E402

# Criteo I1–I13 are counts. The Kaggle data has I2 down to -3 (the documented minimum) and its
# largest value is ~2.3e7 (I5); anything beyond a signed 32-bit integer is a corrupted field.
CRITEO_INT_MIN = -3
CRITEO_INT_MAX = 2**31 - 1
CRITEO_FIELDS = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
HEX8 = r"^[0-9a-f]{8}$"

AVAZU_FIELDS = [
    "hour_of_day", "weekday", "C1", "banner_pos",
    "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
    "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
    *(f"C{i}" for i in range(14, 22)),
]
AVAZU_HOUR = "hour"
# YYMMDDHH that is a real calendar hour: days per month, Feb 29 only in leap years (20YY, YY % 4
# == 0). A regex rather than GX's strftime expectation: that one maps every value through Python's
# strptime and breaks on pandas Categoricals (see validate._to_pandas).
_DAYS = r"(?:(?:0[13578]|1[02])(?:0[1-9]|[12]\d|3[01])|(?:0[469]|11)(?:0[1-9]|[12]\d|30)|02(?:0[1-9]|1\d|2[0-8]))"
AVAZU_CALENDAR_HOUR = rf"^(?:\d{{2}}{_DAYS}|(?:[02468][048]|[13579][26])0229)(?:[01]\d|2[0-3])$"
MOVIELENS_IDS = ("user_id", "item_id")
MOVIELENS_RATING = "rating"
MOVIELENS_TIMESTAMP = "timestamp"

# Columns of the one-row table-aggregate frame (table_expectations) and of the one-row-per-column
# null-fraction frame (null_fraction_expectations).
ROW_COUNT = "row_count"
LABEL_NULL_COUNT = "label_null_count"
LABEL_FIRST_NULL_LINE = "label_first_null_line"
LABEL_MEAN = "label_mean"
NULL_COUNT_PREFIX = "null_count__"
NULLS_COLUMN = "column"
NULL_COUNT = "null_count"
NULL_FRACTION = "null_fraction"


def _meta(rule: str, column: str | None, expect: str) -> dict:
    return {"rule": rule, "column": column, "expect": expect}


def expected_columns(table: SourceTable) -> list[str]:
    """The ordered column list of a table: line, label, fields, extras, then the time column."""
    cols = [LINE_COLUMN, LABEL, *(f.name for f in table.fields)]
    for extra in (*table.extra, table.time_column):
        if extra is not None and extra not in cols:
            cols.append(extra)
    return cols


def value_columns(table: SourceTable) -> list[str]:
    """Columns whose null fraction is bounded: every column except the line number and label."""
    return [c for c in expected_columns(table) if c not in (LINE_COLUMN, LABEL)]


# ---------------------------------------------------------------------------------------------
# 1. structure (Polars schema)


def _format_field_failures(table: SourceTable) -> list[tuple[str, str]]:
    """(column, detail) for each field name the format requires but the table lacks."""
    names = [f.name for f in table.fields]
    out: list[tuple[str, str]] = []
    if table.format == "criteo" and names != CRITEO_FIELDS:
        bad = next((i for i, (a, b) in enumerate(zip(names, CRITEO_FIELDS, strict=False)) if a != b),
                   min(len(names), len(CRITEO_FIELDS)))
        col = names[bad] if bad < len(names) else CRITEO_FIELDS[bad]
        out.append((col, f"Criteo fields must be I1..I13, C1..C26 in this order; found {names}"))
    elif table.format == "avazu":
        if sorted(names) != sorted(AVAZU_FIELDS):
            missing = [n for n in AVAZU_FIELDS if n not in names]
            extra = [n for n in names if n not in AVAZU_FIELDS]
            out.append(((missing or extra)[0],
                        f"Avazu fields must be {AVAZU_FIELDS} (any order); missing {missing}, unexpected {extra}"))
        if AVAZU_HOUR not in table.extra:
            out.append((AVAZU_HOUR, "Avazu needs the raw YYMMDDHH 'hour' string as an extra column"))
    elif table.format == "movielens":
        for name in MOVIELENS_IDS:
            if name not in names:
                out.append((name, f"MovieLens needs the field {name!r}; found {names}"))
        if MOVIELENS_RATING not in table.extra:
            out.append((MOVIELENS_RATING, "MovieLens needs the 1..5 'rating' as an extra column"))
    return out


def _dtype_failures(table: SourceTable, schema: pl.Schema) -> list[tuple[str, str]]:
    """(column, detail) for each column whose Polars dtype breaks the SourceTable contract."""
    out: list[tuple[str, str]] = []

    def need(col: str, ok: bool, what: str) -> None:
        if col in schema and not ok:
            out.append((col, f"{col} must be {what}; found dtype {schema[col]}"))

    need(LINE_COLUMN, schema.get(LINE_COLUMN, pl.Int64).is_integer(), "an integer line number")
    need(LABEL, schema.get(LABEL, pl.Int8).is_integer(), "an integer 0/1")
    for f in table.fields:
        if f.kind == "numeric":
            need(f.name, schema[f.name].is_numeric() if f.name in schema else True, "numeric")
        else:
            need(f.name, schema.get(f.name) == pl.String, "a String (categorical)")
    if table.time_column is not None:
        dt = schema.get(table.time_column, pl.Int64)
        need(table.time_column, dt.is_integer() or dt.is_temporal() or dt == pl.String,
             "a sortable time (integer, temporal or digit String)")
    if table.format == "avazu":
        need(AVAZU_HOUR, schema.get(AVAZU_HOUR) == pl.String, "the raw YYMMDDHH String")
    if table.format == "movielens":
        need(MOVIELENS_RATING, schema.get(MOVIELENS_RATING, pl.Int64).is_integer(), "an integer 1..5")
        need(MOVIELENS_TIMESTAMP, schema.get(MOVIELENS_TIMESTAMP, pl.Int64).is_integer(),
             "an integer unix time")
        for name in MOVIELENS_IDS:
            dt = schema.get(name, pl.Int64)
            need(name, dt.is_integer() or dt == pl.String, "an integer or digit String id")
    return out


def structure_failures(table: SourceTable, schema: pl.Schema) -> list[DataFormatError]:
    """Column-set, format field-name and dtype rules, judged on the Polars schema (exhaustive).

    ``schema`` is the table's schema *with* the line column. Value checks must not run when this
    returns failures: they would address missing or mistyped columns.
    """
    file = table.main_file
    expected = expected_columns(table)
    fails: list[DataFormatError] = []
    for col in expected:
        if col not in schema:
            fails.append(DataFormatError(
                file, "columns", f"column {col!r} is declared by the {table.format} reader but absent; "
                f"expected columns {expected}, found {list(schema)}", column=col))
    for col in schema:
        if col not in expected:
            fails.append(DataFormatError(
                file, "columns", f"undeclared column {col!r}; expected exactly {expected}", column=col))
    fails += [DataFormatError(file, "format_fields", d, column=c) for c, d in _format_field_failures(table)]
    fails += [DataFormatError(file, "dtype", d, column=c) for c, d in _dtype_failures(table, schema)]
    return fails


# ---------------------------------------------------------------------------------------------
# 2. table aggregates (Polars, exhaustive) judged in GX


def aggregate_exprs(table: SourceTable) -> list[pl.Expr]:
    """Expressions of the one-row aggregate frame (run them in one streaming ``select``).

    Columns: ``row_count``, ``label_null_count``, ``label_first_null_line`` (LINE_COLUMN of the
    first null label, null if none), ``label_mean`` (mean of the non-null labels, null if none) and
    ``null_count__<col>`` for every :func:`value_columns` column.
    """
    return _aggregates(table, pl.col(LABEL).cast(pl.Float64).mean().alias(LABEL_MEAN))


def _aggregates(table: SourceTable, label_stat: pl.Expr) -> list[pl.Expr]:
    """The aggregate columns in order, with ``label_stat`` (the label's mean, or its sum) fourth."""
    label = pl.col(LABEL)
    return [
        pl.len().cast(pl.Int64).alias(ROW_COUNT),
        label.null_count().cast(pl.Int64).alias(LABEL_NULL_COUNT),
        pl.col(LINE_COLUMN).filter(label.is_null()).min().cast(pl.Int64).alias(LABEL_FIRST_NULL_LINE),
        label_stat,
        *(pl.col(c).null_count().cast(pl.Int64).alias(NULL_COUNT_PREFIX + c) for c in value_columns(table)),
    ]


_LABEL_SUM = "__label_sum"


def partial_aggregate_exprs(table: SourceTable) -> list[pl.Expr]:
    """Per-batch partials of :func:`aggregate_exprs` that add up over batches (the label's sum
    instead of its mean); :func:`combine_partial_aggregates` turns the partial frames of every
    batch into the same one-row frame that :func:`aggregate_exprs` computes in one query."""
    return _aggregates(table, pl.col(LABEL).cast(pl.Float64).sum().alias(_LABEL_SUM))


def combine_partial_aggregates(partials: list[pl.DataFrame], table: SourceTable) -> pl.DataFrame:
    """The :func:`aggregate_exprs` frame (same columns, order and dtypes) from the one-row frames of
    :func:`partial_aggregate_exprs` over consecutive batches (counts and the label sum added, the
    first null-label line the minimum; no batches: the frame of an empty table)."""
    nulls = [NULL_COUNT_PREFIX + c for c in value_columns(table)]
    if not partials:
        counts = {ROW_COUNT: 0, LABEL_NULL_COUNT: 0, **dict.fromkeys(nulls, 0)}
        first, label_sum = None, 0.0
    else:
        both = pl.concat(partials)
        counts = {c: int(both[c].sum()) for c in (ROW_COUNT, LABEL_NULL_COUNT, *nulls)}
        first, label_sum = both[LABEL_FIRST_NULL_LINE].min(), float(both[_LABEL_SUM].sum())
    labelled = counts[ROW_COUNT] - counts[LABEL_NULL_COUNT]
    return pl.DataFrame(
        {ROW_COUNT: [counts[ROW_COUNT]], LABEL_NULL_COUNT: [counts[LABEL_NULL_COUNT]],
         LABEL_FIRST_NULL_LINE: [first], LABEL_MEAN: [label_sum / labelled if labelled else None],
         **{c: [counts[c]] for c in nulls}},
        schema={ROW_COUNT: pl.Int64, LABEL_NULL_COUNT: pl.Int64, LABEL_FIRST_NULL_LINE: pl.Int64,
                LABEL_MEAN: pl.Float64, **dict.fromkeys(nulls, pl.Int64)},
    )  # fmt: skip


def table_frame(aggregates: pl.DataFrame) -> pl.DataFrame:
    """The one-row frame judged by :func:`table_expectations` (the aggregates minus null counts)."""
    return aggregates.select(ROW_COUNT, LABEL_NULL_COUNT, LABEL_FIRST_NULL_LINE, LABEL_MEAN)


def null_fraction_frame(aggregates: pl.DataFrame) -> pl.DataFrame:
    """One row per value column: ``column``, ``null_count``, ``null_fraction`` (0.0 when empty)."""
    rows = aggregates[ROW_COUNT][0]
    return (aggregates.select(cs.starts_with(NULL_COUNT_PREFIX))
            .unpivot(variable_name=NULLS_COLUMN, value_name=NULL_COUNT)
            .with_columns(pl.col(NULLS_COLUMN).str.strip_prefix(NULL_COUNT_PREFIX),
                          (pl.col(NULL_COUNT) / rows if rows else pl.lit(0.0)).alias(NULL_FRACTION)))


def table_expectations(params: ValidateParams) -> list[gxe.Expectation]:
    """GX expectations on :func:`table_frame`: ``min_rows``, ``label_not_null``, ``both_classes``."""
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column=ROW_COUNT, min_value=params.min_rows,
            meta=_meta("min_rows", None, f"at least {params.min_rows} rows")),
        gxe.ExpectColumnValuesToBeBetween(
            column=LABEL_NULL_COUNT, min_value=0, max_value=0,
            meta=_meta("label_not_null", LABEL, "label must never be null")),
        # A null mean (no labelled rows) must fail too: column-map expectations skip nulls.
        gxe.ExpectColumnValuesToNotBeNull(
            column=LABEL_MEAN, meta=_meta("both_classes", LABEL, "both classes present (needs labelled rows)")),
        gxe.ExpectColumnValuesToBeBetween(
            column=LABEL_MEAN, min_value=0, max_value=1, strict_min=True, strict_max=True,
            meta=_meta("both_classes", LABEL, "label mean strictly between 0 and 1 (both classes present)")),
    ]


def null_fraction_expectations(params: ValidateParams) -> list[gxe.Expectation]:
    """GX expectation on :func:`null_fraction_frame`: every column's null fraction is at most
    ``params.max_null_fraction`` (one expectation; its unexpected rows name the columns)."""
    return [gxe.ExpectColumnValuesToBeBetween(
        column=NULL_FRACTION, min_value=0, max_value=params.max_null_fraction,
        meta=_meta("max_null_fraction", None, f"null in at most {params.max_null_fraction:g} of the rows"))]


# ---------------------------------------------------------------------------------------------
# 3. row values (GX column-map expectations on pandas chunks)


def _between(col: str, lo, hi, rule: str, expect: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi,
                                             meta=_meta(rule, col, expect))


def _regex(col: str, regex: str, rule: str, expect: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToMatchRegex(column=col, regex=regex, meta=_meta(rule, col, expect))


def _criteo_rows(table: SourceTable, schema: pl.Schema) -> list[gxe.Expectation]:
    exps = [_between(c, CRITEO_INT_MIN, CRITEO_INT_MAX, "int_range",
                     f"{c} must be an integer in [{CRITEO_INT_MIN}, {CRITEO_INT_MAX}]")
            for c in table.numeric]
    exps += [_regex(c, HEX8, "hex8", f"{c} must be 8 lowercase hex chars ({HEX8}) or empty")
             for c in table.categorical]
    return exps


def _avazu_rows(table: SourceTable, schema: pl.Schema) -> list[gxe.Expectation]:
    h = AVAZU_HOUR
    exps: list[gxe.Expectation] = [
        _regex(h, r"^\d{8}$", "hour_digits", "hour must be 8 digits YYMMDDHH"),
        _regex(h, r"^\d{2}(?:0[1-9]|1[0-2])", "hour_month", "hour must have a month 01..12 (YYMMDDHH)"),
        _regex(h, r"^\d{4}(?:0[1-9]|[12]\d|3[01])", "hour_day", "hour must have a day 01..31 (YYMMDDHH)"),
        _regex(h, r"^\d{6}(?:[01]\d|2[0-3])$", "hour_hh", "hour must have an hour 00..23 (YYMMDDHH)"),
        _regex(h, AVAZU_CALENDAR_HOUR, "hour_date",
               "hour must be a real calendar date and hour (YYMMDDHH, 20YY leap years)"),
    ]
    for col, hi, rule in (("hour_of_day", 23, "hour_of_day_range"), ("weekday", 6, "weekday_range")):
        if col not in schema:
            continue
        expect = f"{col} must be in 0..{hi}"
        if schema[col].is_numeric():
            exps.append(_between(col, 0, hi, rule, expect))
        else:
            alts = "|".join(str(v) for v in range(hi + 1))
            exps.append(_regex(col, rf"^0?(?:{alts})$", rule, expect))
    return exps


def _movielens_rows(table: SourceTable, schema: pl.Schema) -> list[gxe.Expectation]:
    exps: list[gxe.Expectation] = [
        _between(MOVIELENS_RATING, 1, 5, "rating_range", "rating must be in 1..5"),
    ]
    for col in MOVIELENS_IDS:
        expect = f"{col} must be a positive integer id"
        if schema[col].is_numeric():
            exps.append(_between(col, 1, None, "id_positive", expect))
        else:
            exps.append(_regex(col, r"^[1-9]\d*$", "id_positive", expect))
    if MOVIELENS_TIMESTAMP in schema:
        exps.append(_between(MOVIELENS_TIMESTAMP, 0, None, "timestamp_range",
                             "timestamp must be a unix time >= 0"))
    if "year" in schema:
        if schema["year"].is_numeric():
            exps.append(_between("year", 1800, 2100, "year_range", "year must be in 1800..2100"))
        else:
            exps.append(_regex("year", r"^(?:18|19|20)\d\d$", "year_range", "year must be in 1800..2099"))
    return exps


_FORMAT_ROWS = {
    "criteo": _criteo_rows,
    "avazu": _avazu_rows,
    "movielens": _movielens_rows,
    "schema": lambda table, schema: [],
}


def row_expectations(table: SourceTable, schema: pl.Schema) -> list[gxe.Expectation]:
    """GX expectations judged on row chunks: ordered columns, label in {0,1}, format value rules.

    ``schema`` is the table's schema with the line column, after :func:`structure_failures`
    passed (so every referenced column exists with the right dtype).
    """
    if table.format not in _FORMAT_ROWS:
        raise ValueError(f"no validation suite for format {table.format!r}; known: {sorted(_FORMAT_ROWS)}")
    cols = expected_columns(table)
    exps: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchOrderedList(
            column_list=cols, meta=_meta("columns", None, f"columns exactly {cols}")),
        gxe.ExpectTableColumnCountToEqual(
            value=len(cols), meta=_meta("column_count", None, f"{len(cols)} columns")),
        gxe.ExpectColumnValuesToBeInSet(
            column=LABEL, value_set=[0, 1], meta=_meta("label_in_set", LABEL, "label must be in {0,1}")),
    ]
    return exps + _FORMAT_ROWS[table.format](table, schema)
