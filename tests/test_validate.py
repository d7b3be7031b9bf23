"""The GX validation gate: rules, line mapping, chunking, sampling and atomic outputs.

Tables are built directly as Polars frames (no raw readers): LINE_COLUMN is the row position + 3
(as if the log had a 2-line preamble), so a test that expects "line 5" proves the reported line
comes from LINE_COLUMN, not from the row position.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import great_expectations as gx
import polars as pl
import pytest

from components.config import ValidateParams
from components.data.errors import DataFormatError, ValidationFailed
from components.data.expectations import AVAZU_FIELDS, CRITEO_FIELDS
from components.data.formats.base import LABEL, LINE_COLUMN, FieldSpec, SourceTable
from components.data.validate import _exception_message, _row_chunks, validate_source

LINE_OFFSET = 3  # LINE_COLUMN = row index + LINE_OFFSET
HEX_POOL = ["0a1b2c3d", "deadbeef", "00000000", "ffffffff"]
PARAMS = ValidateParams(min_rows=10)
CRITEO_SPECS = tuple(FieldSpec(c, "numeric" if c.startswith("I") else "categorical") for c in CRITEO_FIELDS)


def _line(n: int) -> pl.Expr:
    return (pl.int_range(n) + LINE_OFFSET).cast(pl.UInt64).alias(LINE_COLUMN)


def criteo_frame(n: int) -> pl.DataFrame:
    """label = 1 on every 4th row; I* null on every 5th row, else (i*k) % 50 - 3;
    C* null on rows with i % 10 == 9, else a valid hex code."""
    i = pl.int_range(n)
    ints = [pl.when(i % 5 == 0).then(None).otherwise((i * k) % 50 - 3).cast(pl.Int64).alias(f"I{k}")
            for k in range(1, 14)]
    hexes = [pl.when(i % 10 == 9).then(None)
             .otherwise(pl.lit(pl.Series(HEX_POOL)).gather((i + k) % len(HEX_POOL))).alias(f"C{k}")
             for k in range(1, 27)]
    return pl.select(_line(n), (i % 4 == 0).cast(pl.Int8).alias(LABEL), *ints, *hexes)


def set_cell(df: pl.DataFrame, column: str, line: int, value) -> pl.DataFrame:
    """Put ``value`` into ``column`` on the row whose LINE_COLUMN is ``line``."""
    dtype = df.schema[column]
    return df.with_columns(
        pl.when(pl.col(LINE_COLUMN) == line).then(pl.lit(value, dtype=dtype)).otherwise(pl.col(column))
        .alias(column))


def criteo_table(df: pl.DataFrame, header_lines: int = 0) -> SourceTable:
    return SourceTable("criteo", (Path("train.txt"),), df.lazy(), CRITEO_SPECS, header_lines=header_lines)


def avazu_table(n: int) -> tuple[pl.DataFrame, SourceTable]:
    i = pl.int_range(n)
    hour = pl.format("1410{}{}", (21 + i % 9).cast(pl.String), (i % 24).cast(pl.String).str.zfill(2))
    df = pl.select(
        _line(n), (i % 3 == 0).cast(pl.Int8).alias(LABEL),
        *[(i % 7).cast(pl.String).alias(f) for f in AVAZU_FIELDS],
        hour.alias("hour"),
    ).with_columns(pl.col("hour").str.slice(6, 2).alias("hour_of_day"))
    specs = tuple(FieldSpec(f, "categorical") for f in AVAZU_FIELDS)
    return df, SourceTable("avazu", (Path("avazu.csv"),), df.lazy(), specs, extra=("hour",))


def movielens_table(df: pl.DataFrame) -> SourceTable:
    specs = (FieldSpec("user_id", "categorical"), FieldSpec("item_id", "categorical"),
             FieldSpec("gender", "categorical"), FieldSpec("year", "categorical"))
    return SourceTable("movielens", (Path("u.data"),), df.lazy(), specs,
                       extra=("rating", "timestamp"), time_column="timestamp")


def movielens_frame(n: int) -> pl.DataFrame:
    i = pl.int_range(n)
    rating = (i % 5 + 1).cast(pl.Int64)
    return pl.select(
        _line(n), (rating >= 4).cast(pl.Int8).alias(LABEL),
        (i % 9 + 1).cast(pl.String).alias("user_id"), (i % 11 + 1).cast(pl.String).alias("item_id"),
        pl.when(i % 2 == 0).then(pl.lit("M")).otherwise(pl.lit("F")).alias("gender"),
        (1990 + i % 9).cast(pl.String).alias("year"),
        rating.alias("rating"), (874_965_758 + i * 60).cast(pl.Int64).alias("timestamp"))


def failures_of(table: SourceTable, tmp_path: Path, params: ValidateParams = PARAMS) -> list[DataFormatError]:
    with pytest.raises(ValidationFailed) as exc:
        validate_source(table, params, tmp_path / "v")
    assert exc.value.file == str(table.main_file)
    return exc.value.failures


def only(failures: list[DataFormatError]) -> DataFormatError:
    assert len(failures) == 1, [str(f) for f in failures]
    return failures[0]


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("good") / "validation"
    return validate_source(criteo_table(criteo_frame(40)), PARAMS, out), out


def test_good_criteo_passes_and_writes_report_and_data_docs(good_run):
    report, out = good_run
    assert report["success"] is True and report["failures"] == []
    assert report["format"] == "criteo" and report["files"] == ["train.txt"] and report["rows"] == 40
    assert report["gx_version"] == gx.__version__
    assert report["gx"] == {"sampled": False, "rows_checked": 40, "chunk_rows": 200_000, "chunks": 1,
                            "max_rows": 2_000_000, "seed": None}
    assert report["sampled_checks"] == []
    assert all(c["success"] and c["exception"] is None for c in report["checks"])
    assert {"min_rows", "both_classes", "max_null_fraction", "label_in_set", "hex8", "int_range",
            "columns", "dtype"} <= set(report["exhaustive_checks"])
    assert json.loads((out / "validation.json").read_text()) == report

    by = {(c["rule"], c["column"], c["expectation"]): c for c in report["checks"]}
    mean = by[("both_classes", "label", "expect_column_values_to_be_between")]
    assert mean["observed_value"] == 0.25 and mean["scope"] == "exhaustive"   # 10 of 40 rows
    assert by[("min_rows", None, "expect_column_values_to_be_between")]["observed_value"] == 40
    i1 = by[("max_null_fraction", "I1", "expect_column_values_to_be_between")]
    assert (i1["observed_value"], i1["unexpected_count"]) == (0.2, 8)        # rows 0,5,...,35
    c7 = by[("max_null_fraction", "C7", "expect_column_values_to_be_between")]
    assert (c7["observed_value"], c7["success"]) == (0.1, True)               # rows 9,19,29,39
    label = by[("label_in_set", "label", "expect_column_values_to_be_in_set")]
    assert label["success"] and label["element_count"] == 40 and label["unexpected_count"] == 0
    assert label["first_bad_line"] is None
    hex_c3 = by[("hex8", "C3", "expect_column_values_to_match_regex")]
    assert hex_c3["element_count"] == 40 and hex_c3["scope"] == "exhaustive"
    # 13 int_range + 26 hex8 + label + 2 column checks; 4 table checks + 39 null fractions
    assert sum(c["level"] == "rows" for c in report["checks"]) == 42
    assert sum(c["level"] == "table" for c in report["checks"]) == 4 + 39

    index = (out / "data_docs" / "index.html").read_text()
    assert all(f"criteo_{s}" in index for s in ("rows", "table", "null_fractions"))
    pages = list((out / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 3
    assert not (out.parent / "validation.failed.json").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["validation"]   # no temp dirs left


def test_bad_criteo_values_name_rule_column_and_first_line(tmp_path):
    df = criteo_frame(40)
    for column, line, value in [(LABEL, 17, 2), (LABEL, 5, 2), (LABEL, 30, 2), ("C3", 9, "xyz"),
                                ("C11", 12, "DEADBEEF"), ("I2", 7, -4), ("I5", 30, 2**31)]:
        df = set_cell(df, column, line, value)
    fails = failures_of(criteo_table(df), tmp_path)
    assert all(f.file == "train.txt" for f in fails)
    assert {(f.rule, f.column, f.line) for f in fails} == {
        ("label_in_set", LABEL, 5), ("hex8", "C3", 9), ("hex8", "C11", 12),
        ("int_range", "I2", 7), ("int_range", "I5", 30)}
    detail = {f.column: f.detail for f in fails}
    assert detail[LABEL] == "label must be in {0,1}; found 2 (3 rows)"
    assert detail["C3"] == "C3 must be 8 lowercase hex chars (^[0-9a-f]{8}$) or empty; found 'xyz' (1 row)"
    assert detail["C11"].endswith("found 'DEADBEEF' (1 row)")
    assert detail["I2"] == f"I2 must be an integer in [-3, {2**31 - 1}]; found -4 (1 row)"
    assert detail["I5"].endswith(f"found {2**31} (1 row)")


def test_single_class_and_too_few_rows(tmp_path):
    df = criteo_frame(8).with_columns(pl.lit(0, dtype=pl.Int8).alias(LABEL))
    fails = {f.rule: f for f in failures_of(criteo_table(df), tmp_path)}
    assert set(fails) == {"both_classes", "min_rows"}
    assert (fails["both_classes"].column, fails["both_classes"].line) == (LABEL, None)
    assert fails["both_classes"].detail.endswith("observed label mean 0 (only class 0)")
    assert (fails["min_rows"].column, fails["min_rows"].detail) == (None, "at least 10 rows; found 8 rows")


def test_null_labels_and_mostly_null_fields(tmp_path):
    df = set_cell(set_cell(criteo_frame(40), LABEL, 21, None), LABEL, 33, None)
    df = df.with_columns(pl.lit(None, dtype=pl.String).alias("C7"), pl.lit(None, dtype=pl.Int64).alias("I4"))
    params = ValidateParams(min_rows=10, max_null_fraction=0.5)
    fails = failures_of(criteo_table(df), tmp_path, params)
    assert {(f.rule, f.column, f.line) for f in fails} == {
        ("label_not_null", LABEL, 21), ("max_null_fraction", "I4", None), ("max_null_fraction", "C7", None)}
    detail = {f.column: f.detail for f in fails}
    assert detail[LABEL] == "label must never be null; found 2 null label(s)"
    assert detail["C7"] == "C7 null in at most 0.5 of the rows; observed 1"


def test_structure_rules_stop_the_gate_before_reading_data(tmp_path):
    df = criteo_frame(40).with_columns(pl.col("C5").str.len_bytes().alias("C5"))   # UInt32, not String
    df = df.drop("I13").with_columns(pl.lit(1).alias("junk"))
    fails = failures_of(criteo_table(df), tmp_path)
    got = {(f.rule, f.column) for f in fails}
    assert got == {("columns", "I13"), ("columns", "junk"), ("dtype", "C5")}
    report = json.loads((tmp_path / "v.failed.json").read_text())
    assert report["rows"] is None and report["gx"] is None and report["success"] is False


def test_misnamed_criteo_fields_break_format_fields(tmp_path):
    df = criteo_frame(40).rename({"C26": "C27"})
    specs = CRITEO_SPECS[:-1] + (FieldSpec("C27", "categorical"),)
    table = SourceTable("criteo", (Path("train.txt"),), df.lazy(), specs)
    f = only(failures_of(table, tmp_path))
    assert (f.rule, f.column) == ("format_fields", "C27")


def test_line_column_absent_is_derived_from_row_position(tmp_path):
    df = set_cell(criteo_frame(40), LABEL, 5, 2).drop(LINE_COLUMN)   # row index 2
    f = only(failures_of(criteo_table(df, header_lines=1), tmp_path))
    assert (f.rule, f.line) == ("label_in_set", 4)                  # 1 header line + row 3
    report = json.loads((tmp_path / "v.failed.json").read_text())
    assert report["line_source"] == "row_position"


def test_avazu_hour_with_day_00_is_a_bad_day(tmp_path):
    df, table = avazu_table(30)
    assert validate_source(table, PARAMS, tmp_path / "ok")["success"] is True
    bad = set_cell(set_cell(df, "hour", 14, "14103200"), "hour_of_day", 20, "24")
    bad = set_cell(set_cell(bad, "hour", 25, "14043105"), "hour", 26, "15022901")   # Apr 31, Feb 29 2015
    table = SourceTable("avazu", table.files, bad.lazy(), table.fields, extra=("hour",))
    fails = {f.rule: f for f in failures_of(table, tmp_path)}
    # day 00 breaks the day rule and is no calendar date; hour_of_day 24 is out of range;
    # 31 April and 29 Feb 2015 have valid day numbers but are no calendar dates
    assert set(fails) == {"hour_day", "hour_date", "hour_of_day_range"}
    assert (fails["hour_day"].column, fails["hour_day"].line) == ("hour", 14)
    assert fails["hour_day"].detail == "hour must have a day 01..31 (YYMMDDHH); found '14103200' (1 row)"
    assert (fails["hour_date"].column, fails["hour_date"].line) == ("hour", 14)
    assert fails["hour_date"].detail.endswith("found '14103200', '14043105', '15022901' (3 rows)")
    assert (fails["hour_of_day_range"].column, fails["hour_of_day_range"].line) == ("hour_of_day", 20)


def test_movielens_rating_6_and_bad_ids(tmp_path):
    df = movielens_frame(30)
    assert validate_source(movielens_table(df), PARAMS, tmp_path / "ok")["success"] is True
    bad = set_cell(set_cell(df, "rating", 11, 6), "item_id", 25, "0")
    fails = failures_of(movielens_table(bad), tmp_path)
    got = {(f.rule, f.column, f.line) for f in fails}
    assert got == {("rating_range", "rating", 11), ("id_positive", "item_id", 25)}


def test_failed_gate_keeps_previous_outputs_byte_identical(tmp_path, good_run, monkeypatch):
    out = tmp_path / "validation"
    shutil.copytree(good_run[1], out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValidationFailed):
        validate_source(criteo_table(set_cell(criteo_frame(40), "C3", 9, "xyz")), PARAMS, out)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    failed = json.loads((tmp_path / "validation.failed.json").read_text())
    assert failed["success"] is False and failed["rows"] == 40
    assert failed["failures"] == [{"file": "train.txt", "line": 9, "column": "C3", "rule": "hex8",
                                   "detail": "C3 must be 8 lowercase hex chars (^[0-9a-f]{8}$) or empty; "
                                             "found 'xyz' (1 row)"}]
    hex_c3 = next(c for c in failed["checks"] if c["rule"] == "hex8" and c["column"] == "C3")
    assert (hex_c3["success"], hex_c3["unexpected_count"], hex_c3["first_bad_line"]) == (False, 1, 9)
    assert hex_c3["observed_value"] == ["xyz"]
    # the next good run (out_dir given relative, as params.yaml does) replaces the outputs and
    # removes the stale failure report
    monkeypatch.chdir(tmp_path)
    validate_source(criteo_table(criteo_frame(40)), PARAMS, Path("validation"))
    assert (out / "data_docs" / "index.html").is_file()
    assert not (tmp_path / "validation.failed.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["validation"]


def test_gx_exception_info_is_read_flat_or_per_metric():
    assert _exception_message({"raised_exception": False, "exception_message": None}) is None
    assert _exception_message({"raised_exception": True, "exception_message": "boom"}) == "boom"
    nested = {"MetricConfigurationID(x)": {"exception_traceback": "...", "exception_message": "bad ~"}}
    assert _exception_message(nested) == "bad ~"
    assert _exception_message({}) is None and _exception_message(None) is None


def test_row_chunks_have_exact_sizes_in_order():
    df = pl.DataFrame({"a": range(25)})
    frames = [df.slice(0, 3), df.slice(3, 10), df.slice(13, 0), df.slice(13, 12)]  # uneven batches
    chunks = list(_row_chunks(frames, 7, df.schema))
    assert [c.height for c in chunks] == [7, 7, 7, 4]
    assert pl.concat(chunks)["a"].to_list() == list(range(25))
    empty = list(_row_chunks([], 7, df.schema))
    assert [c.height for c in empty] == [0] and empty[0].columns == ["a"]


def test_chunked_gx_run_reports_the_line_in_the_third_chunk(tmp_path):
    # 21 rows in chunks of 7: rows 14..20 are the 3rd chunk; row 16 is line 19
    df = set_cell(criteo_frame(21), LABEL, 19, 7)
    df = set_cell(set_cell(df, "C3", 5, "xyz"), "C3", 22, "nothex!!")   # chunks 1 and 3
    fails = failures_of(criteo_table(df), tmp_path, ValidateParams(min_rows=10, gx_chunk_rows=7))
    by_rule = {f.rule: f for f in fails}
    assert set(by_rule) == {"label_in_set", "hex8"}
    assert (by_rule["label_in_set"].line, by_rule["label_in_set"].detail) == (
        19, "label must be in {0,1}; found 7 (1 row)")
    assert (by_rule["hex8"].line, by_rule["hex8"].column) == (5, "C3")
    assert "(2 rows)" in by_rule["hex8"].detail                      # counts summed over chunks
    report = json.loads((tmp_path / "v.failed.json").read_text())
    assert report["gx"]["chunks"] == 3 and report["gx"]["rows_checked"] == 21


def test_sampling_above_gx_max_rows(tmp_path):
    df = criteo_frame(60).with_columns(pl.lit("xyz").alias("C3"))   # every row breaks hex8
    df = set_cell(df, "C8", 30, None)
    params = ValidateParams(min_rows=10, gx_max_rows=20, gx_chunk_rows=200_000)
    fails = failures_of(criteo_table(df), tmp_path, params)
    f = only(fails)
    assert (f.rule, f.column) == ("hex8", "C3")
    assert f.detail.endswith("(20 rows in the sample)")             # exactly gx_max_rows sampled
    report = json.loads((tmp_path / "v.failed.json").read_text())
    assert report["rows"] == 60                                    # the count is exhaustive
    assert report["gx"] == {"sampled": True, "rows_checked": 20, "chunk_rows": 200_000, "chunks": 1,
                            "max_rows": 20, "seed": 2024}
    assert {"label_in_set", "hex8", "int_range"} <= set(report["sampled_checks"])
    assert {"min_rows", "both_classes", "max_null_fraction"} <= set(report["exhaustive_checks"])
    scopes = {(c["rule"], c["column"]): c["scope"] for c in report["checks"]}
    assert scopes[("hex8", "C3")] == "sampled" and scopes[("max_null_fraction", "C8")] == "exhaustive"
    c8 = next(c for c in report["checks"] if c["rule"] == "max_null_fraction" and c["column"] == "C8")
    assert c8["observed_value"] == pytest.approx(7 / 60)            # rows 9,19,..,59 + line 30
    # the sample is seeded: the same input gives the same first bad line
    again = only(failures_of(criteo_table(df), tmp_path, params))
    assert again.line == f.line and LINE_OFFSET <= f.line < 60 + LINE_OFFSET


@pytest.mark.realdata
def test_real_criteo_sample_passes_on_a_seeded_sample(shared_data, tmp_path):
    path = shared_data / "criteo" / "criteo_kaggle_train_sample117k.txt.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    schema = {LABEL: pl.Int8, **{c: pl.Int64 if c.startswith("I") else pl.String for c in CRITEO_FIELDS}}
    with gzip.open(path, "rb") as fh:
        df = pl.read_csv(fh, separator="\t", has_header=False, new_columns=list(schema), schema=schema)
    df = df.select(pl.int_range(1, pl.len() + 1).cast(pl.UInt64).alias(LINE_COLUMN), pl.all())
    table = SourceTable("criteo", (path,), df.lazy(), CRITEO_SPECS)
    params = ValidateParams(gx_max_rows=20_000, gx_chunk_rows=10_000)
    report = validate_source(table, params, tmp_path / "v")
    assert report["success"] is True and report["rows"] == 117_139
    assert report["gx"]["sampled"] is True and report["gx"]["chunks"] == 2
    mean = next(c for c in report["checks"] if c["rule"] == "both_classes" and c["observed_value"] is not None)
    assert mean["observed_value"] == pytest.approx(30_141 / 117_139)   # SOURCES.md: 30,141 positives


@pytest.mark.realdata
@pytest.mark.parametrize(("fmt", "relpath", "rows"), [
    ("avazu", "avazu/avazu_train_head10k.csv.gz", 9_999),
    ("movielens", "movielens/ml-100k", None),
])
def test_real_avazu_and_movielens_samples_pass_through_the_readers(shared_data, tmp_path, fmt, relpath, rows):
    formats = pytest.importorskip("components.data.formats")
    path = shared_data / relpath
    if not path.exists():
        pytest.skip(f"{path} not found")
    table = formats.read_source(fmt, path)
    report = validate_source(table, ValidateParams(), tmp_path / "v")
    assert report["success"] is True and report["format"] == fmt
    assert report["gx"]["sampled"] is False and report["gx"]["rows_checked"] == report["rows"]
    if rows is not None:
        assert report["rows"] == rows          # 10,000 lines minus the header


@pytest.mark.parametrize("max_rows", [30, 2_000_000])  # sampled / every row
def test_one_parse_gives_the_two_pass_report(tmp_path, monkeypatch, max_rows):
    """The gate parses a raw file once (aggregates and GX rows from the same batches) and reports
    exactly what the aggregates-then-sample form reports."""
    from components.data import validate as V
    from components.data.formats import read_source
    from components.data.generate import generate

    raw = tmp_path / "day.txt"
    generate("criteo", 120, 7, raw)
    lines = raw.read_text().splitlines(keepends=True)
    bad = {n: (15, "xyz") for n in range(3, 121, 6)} | {40: (0, "2"), 77: (3, "-9")}
    for n, (col, value) in bad.items():
        cells = lines[n - 1].rstrip("\n").split("\t")
        cells[col] = value
        lines[n - 1] = "\t".join(cells) + "\n"
    raw.write_text("".join(lines))
    params = ValidateParams(min_rows=10, gx_max_rows=max_rows, gx_chunk_rows=7)

    def report(name: str) -> dict:
        with pytest.raises(ValidationFailed):
            validate_source(read_source("criteo", raw), params, tmp_path / name)
        return json.loads((tmp_path / f"{name}.failed.json").read_text())

    parses = []
    real = pl.LazyFrame.collect_batches
    monkeypatch.setattr(pl.LazyFrame, "collect_batches", lambda self, *a, **k: parses.append(1) or real(self, *a, **k))
    one = report("one")
    assert len(parses) == 1  # one streaming parse; the row count is Polars' line count
    monkeypatch.setattr(V, "_one_pass", lambda *a, **k: None)  # as when the counts disagree
    two = report("two")
    assert len(parses) == 2  # the fallback's row query (its aggregates are a separate collect)
    assert one["rows"] == two["rows"] == 120 and one["gx"] == two["gx"]
    assert one["gx"]["rows_checked"] == min(120, max_rows) and one["gx"]["chunks"] == -(-min(120, max_rows) // 7)
    assert one["checks"] == two["checks"] and one["failures"] == two["failures"]
    rules = {f["rule"] for f in one["failures"]}
    assert "hex8" in rules and (max_rows < 120 or {"label_in_set", "int_range"} <= rules)


def test_one_pass_declines_when_the_parse_disagrees_with_the_count(tmp_path):
    from components.data.validate import _one_pass

    df = criteo_frame(40)
    table = criteo_table(df)
    lf = table.lazy
    assert _one_pass(lf, table, PARAMS, lf.collect_schema(), counted=41) is None
    aggregates, sampled, _run, _merge, checked = _one_pass(lf, table, PARAMS, lf.collect_schema(), counted=40)
    assert (int(aggregates["row_count"][0]), sampled, checked) == (40, False, 40)
    assert aggregates.columns[:4] == ["row_count", "label_null_count", "label_first_null_line", "label_mean"]
