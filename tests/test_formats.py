"""Raw-format readers on hand-written real-format fixtures (and, when present, the real samples).

Expected values are read off the fixture files in tests/fixtures/raw by hand.
"""

from __future__ import annotations

import bz2
import gzip
import shutil
import time
from pathlib import Path

import polars as pl
import pytest

from components.config import Params
from components.data.formats import FORMATS, LINE_COLUMN, read_source
from components.data.formats import criteo as criteo_fmt
from components.data.rawfile import LineLayout, check_structure, open_raw

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "raw"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def params(**sections) -> Params:
    return Params.model_validate(sections)


def row_at(df: pl.DataFrame, line: int) -> dict:
    return df.filter(pl.col(LINE_COLUMN) == line).row(0, named=True)


def real(rel: str) -> Path:
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"real data sample {path} absent (never copied into the repo)")
    return path


# --------------------------------------------------------------------------------------------
# Criteo


def test_criteo_plain_columns_dtypes_values(tmp_path):
    table = read_source("criteo", FIXTURES / "criteo_small.txt", work_dir=tmp_path)
    assert isinstance(table.lazy, pl.LazyFrame)
    df = table.lazy.collect()
    assert df.columns == [
        LINE_COLUMN,
        "label",
        *[f"I{i}" for i in range(1, 14)],
        *[f"C{i}" for i in range(1, 27)],
    ]
    assert df.schema[LINE_COLUMN] == pl.UInt64
    assert df.schema["label"] == pl.Int8
    assert df.schema["I1"] == pl.Int64 and df.schema["C1"] == pl.String
    assert df.height == 8
    assert df[LINE_COLUMN].to_list() == list(range(1, 9))
    assert df["label"].to_list() == [0, 1, 0, 1, 0, 0, 1, 0]
    line2 = row_at(df, 2)
    assert line2["I1"] == 7 and line2["I2"] == -1 and line2["I3"] is None and line2["I5"] == 250
    assert line2["C3"] == "203f00d1" and line2["C22"] is None and line2["C26"] is None
    line1 = row_at(df, 1)
    assert (
        line1["I1"] is None
        and line1["I5"] == 1450
        and line1["C1"] == "aa000001"
        and line1["C19"] is None
    )
    assert row_at(df, 6)["I2"] == -2
    assert table.numeric == [f"I{i}" for i in range(1, 14)]
    assert table.categorical == [f"C{i}" for i in range(1, 27)]
    assert table.time_column is None and table.header_lines == 0
    assert table.meta["variant"] == "kaggle" and table.meta["compression"] is None
    assert df["I1"].null_count() == 3


@pytest.mark.parametrize("name", ["criteo.txt.gz", "criteo_gzip_named.txt", "no_suffix"])
def test_criteo_gzip_any_name_equals_plain(tmp_path, name):
    plain = read_source("criteo", FIXTURES / "criteo_small.txt", work_dir=tmp_path).lazy.collect()
    gz = tmp_path / name
    gz.write_bytes(gzip.compress((FIXTURES / "criteo_small.txt").read_bytes()))
    table = read_source("criteo", gz, work_dir=tmp_path / "work")
    assert table.meta["compression"] == "gzip"
    assert table.main_file == gz
    assert table.lazy.collect().equals(plain)
    assert list((tmp_path / "work").glob("*.plain")), "decompressed copy goes to work_dir"


def test_criteo_bz2_equals_plain(tmp_path):
    path = tmp_path / "criteo.bz2"
    path.write_bytes(bz2.compress((FIXTURES / "criteo_small.txt").read_bytes()))
    plain = read_source("criteo", FIXTURES / "criteo_small.txt").lazy.collect()
    assert read_source("criteo", path, work_dir=tmp_path).lazy.collect().equals(plain)


def test_criteo_crlf_is_lossless(tmp_path):
    data = (FIXTURES / "criteo_small.txt").read_bytes()
    path = tmp_path / "crlf.txt"
    path.write_bytes(data.replace(b"\n", b"\r\n"))
    table = read_source("criteo", path, work_dir=tmp_path)
    df = table.lazy.collect()
    assert table.meta["crlf"] is True
    assert df.equals(read_source("criteo", FIXTURES / "criteo_small.txt").lazy.collect())
    assert row_at(df, 4)["C26"] == "41af00d3"  # last field has no trailing \r


def test_criteo_unlabelled_test_format(tmp_path):
    lines = (FIXTURES / "criteo_small.txt").read_text().splitlines()
    path = tmp_path / "test.txt"
    path.write_text("".join(line.split("\t", 1)[1] + "\n" for line in lines))
    table = read_source("criteo", path, work_dir=tmp_path, require_label=False)
    df = table.lazy.collect()
    assert table.meta["variant"] == "kaggle_unlabelled"
    assert (
        df.columns
        == read_source("criteo", FIXTURES / "criteo_small.txt").lazy.collect_schema().names()
    )
    assert df.schema["label"] == pl.Int8 and df["label"].null_count() == 8
    assert row_at(df, 2)["I1"] == 7 and row_at(df, 2)["C3"] == "203f00d1"


def test_criteo_labelled_file_with_require_label_false_keeps_labels():
    df = read_source("criteo", FIXTURES / "criteo_small.txt", require_label=False).lazy.collect()
    assert df["label"].sum() == 3


def test_criteo_deepctr_csv_float_integers(tmp_path):
    header = ",".join(criteo_fmt.COLUMNS)
    ints = ["1", "", "-1", "260.0", "3.0", "17668.0"] + [""] * 8
    cats = ["0a0b0c0d"] + [""] * 25
    path = tmp_path / "deepctr.csv"
    path.write_text(
        header + "\n" + ",".join(ints + cats) + "\n" + ",".join(["0"] + ["2.0"] * 13 + cats) + "\n"
    )
    table = read_source("criteo", path)
    df = table.lazy.collect()
    assert table.meta["variant"] == "deepctr_csv" and table.header_lines == 1
    assert df[LINE_COLUMN].to_list() == [2, 3]
    first = row_at(df, 2)
    assert first["label"] == 1 and first["I1"] is None and first["I2"] == -1 and first["I3"] == 260
    assert first["I5"] == 17668 and first["C1"] == "0a0b0c0d" and first["C2"] is None
    assert df.schema["I3"] == pl.Int64
    assert row_at(df, 3)["I13"] == 2


# --------------------------------------------------------------------------------------------
# Avazu


def test_avazu_fields_labels_and_derived_time(tmp_path):
    table = read_source("avazu", FIXTURES / "avazu_small.csv", work_dir=tmp_path)
    df = table.lazy.collect()
    assert "id" not in df.columns and "click" not in df.columns
    assert [f.name for f in table.fields][:4] == ["hour_of_day", "weekday", "C1", "banner_pos"]
    assert len(table.fields) == 23 and table.numeric == []
    assert table.extra == ("hour",) and table.time_column == "__time" and table.header_lines == 1
    assert df[LINE_COLUMN].to_list() == [2, 3, 4, 5, 6]
    assert df["label"].to_list() == [0, 1, 0, 0, 1]
    assert (
        df.schema["label"] == pl.Int8
        and df.schema["hour"] == pl.String
        and df.schema["__time"] == pl.Int64
    )
    # 2014-10-21 is a Tuesday (0 = Monday), 10-26 Sunday, 10-20 Monday, 10-29 Wednesday, 10-31 Friday
    assert df["weekday"].to_list() == ["1", "6", "0", "2", "4"]
    assert df["hour_of_day"].to_list() == ["0", "23", "12", "7", "19"]
    assert df["hour"].to_list()[1] == "14102623"
    assert df["__time"].to_list() == [14102100, 14102623, 14102012, 14102907, 14103119]
    line3 = row_at(df, 3)
    assert (
        line3["site_id"] == "s0000002" and line3["C20"] == "100001" and line3["device_type"] == "1"
    )
    assert row_at(df, 2)["C20"] == "-1" and df.schema["C14"] == pl.String


def test_avazu_test_format_without_click(tmp_path):
    lines = (FIXTURES / "avazu_small.csv").read_text().splitlines()
    path = tmp_path / "test.csv"
    path.write_text(
        "".join(
            ",".join(p for i, p in enumerate(line.split(",")) if i != 1) + "\n" for line in lines
        )
    )
    df = read_source("avazu", path, require_label=False).lazy.collect()
    assert df["label"].null_count() == 5
    assert row_at(df, 6)["weekday"] == "4" and row_at(df, 6)["site_id"] == "s0000004"


# --------------------------------------------------------------------------------------------
# MovieLens


def test_movielens_100k_join_label_and_neutral_drop(tmp_path):
    table = read_source("movielens", FIXTURES / "ml-100k", work_dir=tmp_path)
    df = table.lazy.collect()
    assert table.meta["variant"] == "100k" and table.meta["rating_threshold"] == 4
    assert df.columns == [
        LINE_COLUMN,
        "label",
        "user_id",
        "item_id",
        "gender",
        "age",
        "occupation",
        "zip",
        "genre",
        "year",
        "rating",
        "timestamp",
    ]
    assert table.extra == ("rating", "timestamp") and table.time_column == "timestamp"
    assert [f.name for f in table.fields] == [
        "user_id",
        "item_id",
        "gender",
        "age",
        "occupation",
        "zip",
        "genre",
        "year",
    ]
    # ratings 3 (lines 2, 7, 9) dropped
    assert df[LINE_COLUMN].to_list() == [1, 3, 4, 5, 6, 8, 10]
    assert df["label"].to_list() == [1, 1, 0, 0, 1, 1, 0]
    assert df.schema["rating"] == pl.Int64 and df.schema["user_id"] == pl.String
    first = row_at(df, 1)
    assert first == {
        LINE_COLUMN: 1,
        "label": 1,
        "user_id": "1",
        "item_id": "2",
        "gender": "F",
        "age": "31",
        "occupation": "engineer",
        "zip": "10001",
        "genre": "Drama",
        "year": "1996",
        "rating": 5,
        "timestamp": 900000100,
    }
    assert (
        row_at(df, 3)["genre"] == "Action" and row_at(df, 3)["year"] == "1997"
    )  # year from release date
    assert row_at(df, 5)["genre"] == "Animation" and row_at(df, 5)["occupation"] == "student"
    assert row_at(df, 6)["genre"] == "unknown" and row_at(df, 6)["year"] is None


def test_movielens_100k_without_neutral_drop_and_threshold(tmp_path):
    keep = read_source(
        "movielens", FIXTURES / "ml-100k", params=params(preprocess={"drop_neutral_rating": False})
    )
    df = keep.lazy.collect()
    assert df.height == 10 and df["label"].sum() == 4
    assert row_at(df, 2)["label"] == 0 and row_at(df, 2)["rating"] == 3
    strict = read_source(
        "movielens",
        FIXTURES / "ml-100k" / "u.data",
        params=params(preprocess={"drop_neutral_rating": False, "rating_threshold": 5}),
    ).lazy.collect()
    assert strict.filter(pl.col("label") == 1)[LINE_COLUMN].to_list() == [1, 8]


def test_movielens_1m_double_colon_files(tmp_path):
    table = read_source("movielens", FIXTURES / "ml-1m", work_dir=tmp_path)
    df = table.lazy.collect()
    assert table.meta["variant"] == "1m"
    assert df[LINE_COLUMN].to_list() == [1, 3, 4, 5]
    assert df["label"].to_list() == [1, 0, 1, 1]
    assert row_at(df, 1) == {
        LINE_COLUMN: 1,
        "label": 1,
        "user_id": "1",
        "item_id": "20",
        "gender": "F",
        "age": "18",
        "occupation": "4",
        "zip": "10001",
        "genre": "Drama",
        "year": "1996",
        "rating": 5,
        "timestamp": 960000100,
    }
    assert row_at(df, 5)["genre"] == "Animation" and row_at(df, 5)["year"] == "1995"
    assert row_at(df, 3)["genre"] == "Action"


# --------------------------------------------------------------------------------------------
# Schema-declared CSV / Parquet

SCHEMA = {
    "label": "click",
    "categorical": ["country", "note"],
    "numeric": ["price", "visits"],
    "time_column": "day",
}


def test_schema_csv(tmp_path):
    table = read_source(
        "schema", FIXTURES / "schema_small.csv", params=params(schema=SCHEMA), work_dir=tmp_path
    )
    df = table.lazy.collect()
    assert [(f.name, f.kind) for f in table.fields] == [
        ("country", "categorical"),
        ("price", "numeric"),
        ("visits", "numeric"),
        ("note", "categorical"),
    ]
    assert df.columns == [
        LINE_COLUMN,
        "label",
        "country",
        "price",
        "visits",
        "note",
        "day",
        "__time",
    ]
    assert df.schema["price"] == pl.Float64 and df.schema["visits"] == pl.Int64
    assert df[LINE_COLUMN].to_list() == [2, 3, 4, 5]
    assert df["label"].to_list() == [1, 0, 0, 1]
    assert row_at(df, 3)["note"] == "has, comma" and row_at(df, 3)["price"] == 4.0
    assert row_at(df, 4)["country"] is None and row_at(df, 4)["visits"] is None
    assert row_at(df, 2)["__time"] == 1704240000  # 2024-01-03T00:00Z
    assert table.extra == ("day",) and table.time_column == "__time"


def test_schema_parquet(tmp_path):
    path = tmp_path / "log.data"  # Parquet recognised by magic bytes, not by suffix
    pl.DataFrame(
        {
            "click": [0, 1, 1],
            "ts": [30, 10, 20],
            "country": ["FR", None, "DE"],
            "visits": [1, 2, None],
            "score": [0.5, 1.5, 2.0],
        }
    ).write_parquet(path)
    spec = {
        "label": "click",
        "categorical": ["country"],
        "numeric": ["visits", "score"],
        "time_column": "ts",
    }
    table = read_source("schema", path, params=params(schema=spec))
    df = table.lazy.collect()
    assert table.meta["container"] == "parquet"
    assert df[LINE_COLUMN].to_list() == [1, 2, 3]
    assert (
        df.schema["label"] == pl.Int8
        and df.schema["visits"] == pl.Int64
        and df.schema["score"] == pl.Float64
    )
    assert df["__time"].to_list() == [30, 10, 20]
    assert row_at(df, 3)["country"] == "DE" and row_at(df, 2)["score"] == 1.5


# --------------------------------------------------------------------------------------------
# Registry


def test_registry_and_unknown_format():
    assert set(FORMATS) == {"criteo", "avazu", "movielens", "schema"}
    with pytest.raises(ValueError, match="known formats"):
        read_source("libsvm", FIXTURES / "criteo_small.txt")


# --------------------------------------------------------------------------------------------
# Real samples (skipped where ../shared/data is absent)


@pytest.mark.realdata
def test_real_criteo_train_sample():
    table = read_source("criteo", real("criteo/criteo_kaggle_train_sample117k.txt.gz"))
    counts = (
        table.lazy.select(pl.len(), pl.col("label").sum(), pl.col(LINE_COLUMN).max())
        .collect()
        .row(0)
    )
    assert counts == (117139, 30141, 117139)


@pytest.mark.realdata
def test_real_criteo_unlabelled_test_sample():
    table = read_source(
        "criteo", real("criteo/criteo_kaggle_test_sample18k_unlabeled.txt.gz"), require_label=False
    )
    n, nulls = table.lazy.select(pl.len(), pl.col("label").null_count()).collect().row(0)
    assert (n, nulls) == (18181, 18181)


@pytest.mark.realdata
def test_real_criteo_deepctr_csv():
    table = read_source("criteo", real("criteo/deepctr_criteo_sample200.csv"))
    assert table.lazy.select(pl.len(), pl.col("label").sum()).collect().row(0) == (200, 49)


@pytest.mark.realdata
def test_real_avazu_head():
    table = read_source("avazu", real("avazu/avazu_train_head10k.csv.gz"))
    n, pos, hours, weekdays = (
        table.lazy.select(
            pl.len(),
            pl.col("label").sum(),
            pl.col("hour_of_day").unique().sort(),
            pl.col("weekday").unique(),
        )
        .collect()
        .row(0)
    )
    assert (n, pos, hours, weekdays) == (
        9999,
        1706,
        "0",
        "1",
    )  # all rows: 2014-10-21 00h, a Tuesday


@pytest.mark.realdata
def test_real_movielens_100k():
    path = real("movielens/ml-100k")
    keep = read_source("movielens", path, params=params(preprocess={"drop_neutral_rating": False}))
    n, pos, no_user, no_genre = (
        keep.lazy.select(
            pl.len(),
            pl.col("label").sum(),
            pl.col("gender").null_count(),
            pl.col("genre").null_count(),
        )
        .collect()
        .row(0)
    )
    assert (n, pos, no_user, no_genre) == (100000, 55375, 0, 0)
    dropped = read_source("movielens", path).lazy.select(pl.len()).collect().item()
    assert dropped == 100000 - 27145


@pytest.mark.realdata
def test_real_structural_scan_is_fast(tmp_path):
    raw = open_raw(real("criteo/criteo_kaggle_train_sample117k.txt.gz"), tmp_path)
    layout = LineLayout("\t", 40, criteo_fmt.COLUMNS)
    check_structure(raw, layout)  # warm-up (Polars thread pool, file cache)
    start = time.perf_counter()
    report = check_structure(raw, layout)
    elapsed = time.perf_counter() - start
    assert report.lines == 117139
    assert elapsed < 2.0, f"structural scan of 117k lines took {elapsed:.2f}s"


def test_work_dir_copy_is_reused_not_duplicated(tmp_path):
    gz = tmp_path / "c.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "criteo_small.txt").read_bytes()))
    work = tmp_path / "work"
    read_source("criteo", gz, work_dir=work)
    read_source("criteo", gz, work_dir=work)
    assert len(list(work.iterdir())) == 1
    shutil.rmtree(work)
