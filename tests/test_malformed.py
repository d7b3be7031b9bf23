"""Malformed raw files: each must end in a DataFormatError naming file, line, column and rule.

Every malformed file is derived from the hand-written fixtures inside tmp_path, with the defect
placed on a known line.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest

from components.config import Params
from components.data.errors import DataFormatError
from components.data.formats import read_source

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "raw"
CRITEO_LINES = (FIXTURES / "criteo_small.txt").read_bytes().splitlines()  # 8 lines, 40 fields each


def criteo_file(tmp_path: Path, lines: list[bytes], name: str = "bad.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def with_field(line: bytes, index: int, value: bytes) -> bytes:
    parts = line.split(b"\t")
    parts[index] = value
    return b"\t".join(parts)


def read_error(fmt: str, path: Path, **kw) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        read_source(fmt, path, **kw)
    return info.value


def criteo_error(tmp_path: Path, lines: list[bytes], **kw) -> DataFormatError:
    return read_error("criteo", criteo_file(tmp_path, lines), **kw)


# --------------------------------------------------------------------------------------------
# Structure


def test_wrong_field_count_on_line_7(tmp_path):
    lines = list(CRITEO_LINES)
    lines[6] = lines[6].rsplit(b"\t", 1)[0]  # 39 fields
    err = criteo_error(tmp_path, lines)
    assert (err.line, err.column, err.rule) == (7, None, "field_count")
    assert "found 39 fields, expected 40 tab-separated fields" in err.detail
    assert err.file.endswith("bad.txt")
    assert "bad.txt, line 7" in str(err) and "field_count" in str(err)


def test_too_many_fields(tmp_path):
    lines = list(CRITEO_LINES)
    lines[2] = lines[2] + b"\textra"
    err = criteo_error(tmp_path, lines)
    assert (err.line, err.rule) == (3, "field_count") and "found 41 fields" in err.detail


def test_wrong_delimiter_whole_file(tmp_path):
    lines = [line.replace(b"\t", b",") for line in CRITEO_LINES]
    err = criteo_error(tmp_path, lines)
    assert (err.line, err.rule) == (1, "delimiter")
    assert "expected tab-separated, line looks comma-separated" in err.detail


def test_wrong_delimiter_on_one_line(tmp_path):
    lines = list(CRITEO_LINES)
    lines[4] = lines[4].replace(b"\t", b";")
    err = criteo_error(tmp_path, lines)
    assert (err.line, err.rule) == (5, "delimiter") and "semicolon-separated" in err.detail


def test_blank_line_inside(tmp_path):
    lines = list(CRITEO_LINES)
    lines.insert(3, b"")
    err = criteo_error(tmp_path, lines)
    assert (err.line, err.rule) == (4, "field_count") and "empty" in err.detail


def test_header_on_headerless_format(tmp_path):
    header = "\t".join(
        ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
    ).encode()
    err = criteo_error(tmp_path, [header, *CRITEO_LINES])
    assert (err.line, err.rule) == (1, "no_header")


def test_first_field_not_integer_is_a_header(tmp_path):
    lines = list(CRITEO_LINES)
    lines[0] = with_field(lines[0], 0, b"click")
    assert criteo_error(tmp_path, lines).rule == "no_header"


def test_unlabelled_file_needs_require_label_false(tmp_path):
    lines = [line.split(b"\t", 1)[1] for line in CRITEO_LINES]
    err = criteo_error(tmp_path, lines)
    assert (err.line, err.rule) == (1, "field_count") and "found 39 fields" in err.detail


# --------------------------------------------------------------------------------------------
# Content: encoding, NUL bytes, binary, empty, field size


def test_non_utf8_bytes_on_line_5(tmp_path):
    lines = list(CRITEO_LINES)
    lines[4] = with_field(lines[4], 16, b"caf\xe9")  # latin-1 'é' in C3 (field 17)
    err = criteo_error(tmp_path, lines)
    assert (err.line, err.column, err.rule) == (5, "C3", "utf8")


def test_non_utf8_in_gzip(tmp_path):
    lines = list(CRITEO_LINES)
    lines[5] = with_field(lines[5], 2, b"\xff\xfe")
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))
    err = read_error("criteo", path, work_dir=tmp_path)
    assert (err.line, err.column, err.rule) == (6, "I2", "utf8")
    assert err.file.endswith("bad.gz")  # the user's file, not the decompressed copy


def test_first_bad_line_wins_across_rules(tmp_path):
    lines = list(CRITEO_LINES)
    lines[5] = with_field(lines[5], 16, b"\xe9")  # utf8 on line 6
    lines[2] = lines[2].rsplit(b"\t", 1)[0]  # field count on line 3
    assert (criteo_error(tmp_path, lines).line, criteo_error(tmp_path, lines).rule) == (
        3,
        "field_count",
    )


def test_binary_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    err = read_error("criteo", path)
    assert (
        err.rule == "binary" and err.line is None and "offset 8 " in err.detail
    )  # no line: not text


def test_nul_byte_after_the_first_8k(tmp_path):
    lines = list(CRITEO_LINES) * 6  # 48 lines, ~10 KiB
    lines[41] = with_field(lines[41], 20, b"ab\x00cd")
    err = criteo_error(tmp_path, lines)
    assert (err.line, err.rule) == (42, "nul_byte")


def test_empty_file_and_empty_gzip(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert read_error("criteo", empty).rule == "empty"
    gz = tmp_path / "empty.gz"
    gz.write_bytes(gzip.compress(b""))
    err = read_error("avazu", gz, work_dir=tmp_path)
    assert err.rule == "empty" and "gzip" in err.detail


def test_missing_file(tmp_path):
    err = read_error("criteo", tmp_path / "nope.txt")
    assert err.rule == "missing_file" and "does not exist" in err.detail


def test_two_megabyte_field(tmp_path):
    lines = list(CRITEO_LINES)
    lines[3] = with_field(lines[3], 18, b"a" * 2_000_000)  # C5
    err = criteo_error(tmp_path, lines)
    assert (err.line, err.column, err.rule) == (4, "C5", "field_size")
    assert "2000000 bytes" in err.detail and "65536" in err.detail


def test_field_size_limit_comes_from_params(tmp_path):
    lines = list(CRITEO_LINES)
    lines[1] = with_field(lines[1], 30, b"b" * 150)  # C17
    path = criteo_file(tmp_path, lines)
    assert read_source("criteo", path).lazy.collect().height == 8  # fine under the 64 KiB default
    err = read_error(
        "criteo", path, params=Params.model_validate({"validate": {"max_field_bytes": 100}})
    )
    assert (err.line, err.column, err.rule) == (2, "C17", "field_size")


def test_truncated_gzip(tmp_path):
    blob = gzip.compress(b"".join(line + b"\n" for line in CRITEO_LINES * 50))
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(blob[: len(blob) // 2])
    assert read_error("criteo", path, work_dir=tmp_path).rule == "compression"


def test_zip_archive_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train.txt", b"".join(line + b"\n" for line in CRITEO_LINES))
    path = tmp_path / "train.txt"
    path.write_bytes(buf.getvalue())
    err = read_error("criteo", path)
    assert err.rule == "compression" and "zip" in err.detail


# --------------------------------------------------------------------------------------------
# Typed values


@pytest.mark.parametrize("value", [b"abc", b"1.5"])
def test_non_integer_in_i3(tmp_path, value):
    lines = list(CRITEO_LINES)
    lines[5] = with_field(lines[5], 3, value)  # I3 on line 6
    lines[7] = with_field(lines[7], 3, b"x")  # a second bad value later
    err = criteo_error(tmp_path, lines)
    assert (err.line, err.column, err.rule) == (6, "I3", "integer")
    assert repr(value.decode()) in err.detail and "2 value(s)" in err.detail


def test_label_not_an_int8(tmp_path):
    lines = list(CRITEO_LINES)
    lines[4] = with_field(lines[4], 0, b"300")
    err = criteo_error(tmp_path, lines)
    assert (err.line, err.column, err.rule) == (5, "label", "integer")


def test_deepctr_csv_fractional_integer(tmp_path):
    header = (
        "label,"
        + ",".join(f"I{i}" for i in range(1, 14))
        + ","
        + ",".join(f"C{i}" for i in range(1, 27))
    )
    good = ",".join(["0"] + ["3.0"] * 13 + ["0a0b0c0d"] * 26)
    bad = ",".join(["1", "2.5"] + ["1.0"] * 12 + ["0a0b0c0d"] * 26)
    path = tmp_path / "deepctr.csv"
    path.write_text(f"{header}\n{good}\n{bad}\n")
    err = read_error("criteo", path)
    assert (err.line, err.column, err.rule) == (3, "I1", "integer")


# --------------------------------------------------------------------------------------------
# Avazu

AVAZU_LINES = (FIXTURES / "avazu_small.csv").read_text().splitlines()


def avazu_error(tmp_path: Path, lines: list[str], **kw) -> DataFormatError:
    path = tmp_path / "avazu.csv"
    path.write_text("".join(line + "\n" for line in lines))
    return read_error("avazu", path, **kw)


def test_avazu_missing_header(tmp_path):
    err = avazu_error(tmp_path, AVAZU_LINES[1:])
    assert (err.line, err.rule) == (1, "header") and "id,click,hour,C1" in err.detail


def test_avazu_renamed_header_column(tmp_path):
    err = avazu_error(tmp_path, [AVAZU_LINES[0].replace("site_id", "siteid"), *AVAZU_LINES[1:]])
    assert err.rule == "header" and "'site_id'" in err.detail and "'siteid'" in err.detail


def test_avazu_test_header_needs_require_label_false(tmp_path):
    header = AVAZU_LINES[0].replace("click,", "")
    err = avazu_error(tmp_path, [header])
    assert err.rule == "header" and "require_label=False" in err.detail


def test_avazu_field_count_counts_header_line(tmp_path):
    lines = list(AVAZU_LINES)
    lines[3] = lines[3] + ",extra"  # 4th physical line
    err = avazu_error(tmp_path, lines)
    assert (err.line, err.rule) == (
        4,
        "field_count",
    ) and "found 25 fields, expected 24 comma-separated" in err.detail


def test_avazu_bad_click(tmp_path):
    lines = list(AVAZU_LINES)
    lines[5] = lines[5].replace(",1,14103119,", ",yes,14103119,")
    err = avazu_error(tmp_path, lines)
    assert (err.line, err.column, err.rule) == (6, "click", "integer")


# --------------------------------------------------------------------------------------------
# MovieLens


def ml_copy(tmp_path: Path, variant: str = "ml-100k") -> Path:
    out = tmp_path / variant
    out.mkdir()
    for f in (FIXTURES / variant).iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def test_movielens_bad_user_id(tmp_path):
    d = ml_copy(tmp_path)
    lines = (d / "u.data").read_text().splitlines()
    lines[2] = lines[2].replace("2\t", "u2\t", 1)
    (d / "u.data").write_text("".join(line + "\n" for line in lines))
    err = read_error("movielens", d)
    assert (err.line, err.column, err.rule) == (3, "user_id", "integer") and err.file.endswith(
        "u.data"
    )


def test_movielens_unknown_item(tmp_path):
    d = ml_copy(tmp_path)
    (d / "u.data").write_text((d / "u.data").read_text() + "2\t99\t4\t900002000\n")
    err = read_error("movielens", d)
    assert (err.line, err.column, err.rule) == (11, "item_id", "unknown_id") and "99" in err.detail


def test_movielens_duplicate_user(tmp_path):
    d = ml_copy(tmp_path)
    (d / "u.user").write_text((d / "u.user").read_text() + "2|50|M|writer|40004\n")
    err = read_error("movielens", d)
    assert (err.line, err.column, err.rule) == (4, "user_id", "duplicate_id") and err.file.endswith(
        "u.user"
    )


def test_movielens_1m_wrong_field_count(tmp_path):
    d = ml_copy(tmp_path, "ml-1m")
    (d / "users.dat").write_text(
        (d / "users.dat").read_text().replace("2::M::35::12::20002", "2::M::35::12")
    )
    err = read_error("movielens", d)
    assert (err.line, err.rule) == (2, "field_count") and err.file.endswith("users.dat")


def test_movielens_not_a_dataset_dir(tmp_path):
    assert read_error("movielens", tmp_path).rule == "movielens_files"
    d = ml_copy(tmp_path)
    (d / "u.item").unlink()
    err = read_error("movielens", d)
    assert err.rule == "missing_file" and err.file.endswith("u.item")


# --------------------------------------------------------------------------------------------
# Schema


def test_schema_missing_declared_column(tmp_path):
    spec = {"label": "click", "categorical": ["country", "city"], "numeric": ["price"]}
    err = read_error(
        "schema", FIXTURES / "schema_small.csv", params=Params.model_validate({"schema": spec})
    )
    assert (err.column, err.rule) == (
        "city",
        "missing_column",
    ) and "schema.categorical" in err.detail


def test_schema_non_numeric_value(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("click,price\n1,2.5\n0,cheap\n")
    spec = {"label": "click", "numeric": ["price"]}
    err = read_error("schema", path, params=Params.model_validate({"schema": spec}))
    assert (err.line, err.column, err.rule) == (3, "price", "numeric")


# --------------------------------------------------------------------------------------------
# The byte pass across chunk boundaries


def test_utf8_check_is_exact_across_chunk_boundaries(tmp_path, monkeypatch):
    from components.data import rawfile

    monkeypatch.setattr(rawfile, "CHUNK_BYTES", 5)  # every multi-byte character straddles chunks
    good = tmp_path / "good.csv"
    good.write_text(
        "click,city\n" + "".join(f"{i % 2},Zürich→Köln€{i}\n" for i in range(30)), encoding="utf-8"
    )
    spec = {"label": "click", "categorical": ["city"]}
    p = Params.model_validate({"schema": spec})
    df = read_source("schema", good, params=p).lazy.collect()
    assert df.height == 30 and df["city"][3] == "Zürich→Köln€3"
    bad = tmp_path / "bad.csv"
    bad.write_bytes(
        good.read_bytes().replace("Köln€7\n".encode(), b"K\xf6ln\xe2\x82\xac7\n")
    )  # latin-1 ö, line 9
    err = read_error("schema", bad, params=p)
    assert (err.line, err.column, err.rule) == (9, "city", "utf8")


def test_avazu_tab_separated_is_named(tmp_path):
    err = avazu_error(tmp_path, [line.replace(",", "\t") for line in AVAZU_LINES])
    assert (err.line, err.rule) == (1, "header") and "line looks tab-separated" in err.detail
