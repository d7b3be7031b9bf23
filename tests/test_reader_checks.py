"""The reader's one-pass checks: integer patterns, the typed fast path, the byte pass, batch encode.

Every expectation is written out by hand from the small inputs built in each test.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from components.data import rawfile, vocab
from components.data.errors import DataFormatError
from components.data.feature_map import MISSING_ID, OOV_ID
from components.data.formats import LINE_COLUMN, read_source
from components.data.formats.typecheck import as_integer, integer_pattern
from components.data.rawfile import LineLayout, check_structure, open_raw, unmatched_fields

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "raw"
CRITEO_LINES = (FIXTURES / "criteo_small.txt").read_bytes().splitlines()  # 8 lines, 40 fields
CRITEO_NAMES = ("label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27)))

CANDIDATES = [
    "", "0", "+5", "-5", "-0", "007", "99", "-99", "127", "300", "999999999999999999",
    "9223372036854775807", "12345678901234567890", "-", "+", " 5", "5 ", "1e3", "1.0",
    "260.0", "-2.00", "2.5", "1.", "\u0663", "0x10",
]


def matches(dtype, float_ints: bool = False) -> list[str]:
    pattern = "^" + integer_pattern(dtype, float_ints=float_ints) + "$"
    s = pl.Series("v", CANDIDATES)
    return s.filter(s.str.contains(pattern)).to_list()


def test_integer_pattern_matches_by_hand():
    assert matches(pl.Int64) == ["", "0", "+5", "-5", "-0", "007", "99", "-99", "127", "300",
                                 "999999999999999999"]
    assert matches(pl.Int8) == ["", "0", "+5", "-5", "-0", "99", "-99"]
    assert matches(pl.Int64, float_ints=True) == ["", "0", "+5", "-5", "-0", "007", "99", "-99",
                                                  "127", "300", "1.0", "260.0", "-2.00"]


@pytest.mark.parametrize("dtype,float_ints", [(pl.Int64, False), (pl.Int8, False), (pl.Int64, True)])
def test_integer_pattern_is_sound(dtype, float_ints):
    """Whatever the pattern accepts, the exact check accepts too (the pattern only saves work)."""
    accepted = [v for v in matches(dtype, float_ints) if v]
    values = pl.Series("v", accepted).to_frame().select(as_integer(pl.col("v"), dtype, float_ints=float_ints))
    assert values["v"].null_count() == 0


def criteo_file(tmp_path: Path, lines: list[bytes], name: str = "c.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def with_field(line: bytes, index: int, value: bytes) -> bytes:
    parts = line.split(b"\t")
    parts[index] = value
    return b"\t".join(parts)


def test_typed_fast_path_parses_signs_and_leading_zeros(tmp_path):
    lines = list(CRITEO_LINES)
    lines[1] = with_field(with_field(with_field(lines[1], 1, b"+5"), 2, b"007"), 3, b"-0")
    table = read_source("criteo", criteo_file(tmp_path, lines))
    assert table.meta["typed_scan"] is True
    row = table.lazy.filter(pl.col(LINE_COLUMN) == 2).collect().row(0, named=True)
    assert (row["label"], row["I1"], row["I2"], row["I3"], row["I5"]) == (1, 5, 7, 0, 250)


def test_unmatched_but_valid_value_uses_the_exact_path(tmp_path):
    lines = list(CRITEO_LINES)
    lines[2] = with_field(lines[2], 4, b"9223372036854775807")  # I4, 19 digits: valid Int64
    typed = read_source("criteo", criteo_file(tmp_path, CRITEO_LINES, "plain.txt")).lazy.collect()
    table = read_source("criteo", criteo_file(tmp_path, lines))
    assert table.meta["typed_scan"] is False
    df = table.lazy.collect()
    assert df.filter(pl.col(LINE_COLUMN) == 3)["I4"].item() == 9223372036854775807
    # every other cell is the same as on the typed fast path
    changed = pl.col(LINE_COLUMN) == 3
    assert df.filter(~changed).equals(typed.filter(~changed))
    assert df.drop("I4").equals(typed.drop("I4"))


def test_out_of_range_integer_counted_over_unmatched_lines_only(tmp_path):
    lines = list(CRITEO_LINES)
    lines[3] = with_field(lines[3], 6, b"12345678901234567890")  # I6 on line 4: > Int64 max
    lines[6] = with_field(lines[6], 6, b"99999999999999999999")  # I6 on line 7
    lines[5] = with_field(lines[5], 6, b"9000000000000000000")  # 19 digits, valid: unmatched only
    with pytest.raises(DataFormatError) as info:
        read_source("criteo", criteo_file(tmp_path, lines))
    err = info.value
    assert (err.line, err.column, err.rule) == (4, "I6", "integer")
    assert "'12345678901234567890'" in err.detail and "2 value(s)" in err.detail


def test_structure_report_counts_unmatched_lines(tmp_path):
    lines = list(CRITEO_LINES)
    lines[2] = with_field(lines[2], 1, b"9223372036854775807")  # I1 on line 3
    lines[5] = with_field(lines[5], 0, b"100")  # label on line 6: a valid Int8, but 3 digits
    raw = open_raw(criteo_file(tmp_path, lines))
    layout = LineLayout(
        "\t", 40, CRITEO_NAMES,
        field_patterns=(("label", integer_pattern(pl.Int8)), ("I1", integer_pattern(pl.Int64))),
    )
    report = check_structure(raw, layout)
    assert (report.lines, report.unmatched_lines, report.first_unmatched) == (8, 2, 3)
    df = unmatched_fields(raw, layout).collect()
    assert df[LINE_COLUMN].to_list() == [3, 6]
    assert df["I1"].to_list() == ["9223372036854775807", "1"]
    assert df["label"].to_list() == ["0", "100"]
    assert df["I3"].to_list() == ["1", "8"]
    assert df["I5"].to_list() == [None, "904"]  # empty field -> null, like scan_fields


def test_quick_pattern_covers_up_to_the_last_patterned_field():
    layout = LineLayout(",", 4, ("a", "b", "c", "d"), field_patterns=(("b", "[0-9]*"),))
    assert layout.quick_pattern() == r"^[^\x{2C}]*\x{2C}(?:[0-9]*)\x{2C}"
    last = LineLayout("\t", 2, ("a", "b"), field_patterns=(("b", "x"),))
    assert last.quick_pattern() == r"^[^\x{9}]*\x{9}(?:x)$"
    assert LineLayout("\t", 2, ("a", "b")).quick_pattern() is None
    with pytest.raises(ValueError, match="unknown columns"):
        LineLayout("\t", 2, ("a", "b"), field_patterns=(("z", "x"),)).quick_pattern()


def test_byte_order_mark_reads_like_plain(tmp_path):
    plain = read_source("criteo", criteo_file(tmp_path, CRITEO_LINES, "plain.txt")).lazy.collect()
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.txt").read_bytes())
    assert read_source("criteo", bom).lazy.collect().equals(plain)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7])
def test_crlf_detected_across_chunk_boundaries(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(rawfile, "CHUNK_BYTES", chunk)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"ab\tc\r\nde\tf\r\n")
    lone_cr = tmp_path / "cr.txt"
    lone_cr.write_bytes(b"a\rb\tc\nde\tf\n")  # a carriage return inside a field is not a line end
    assert open_raw(crlf).crlf is True
    assert open_raw(lone_cr).crlf is False


def test_nul_line_found_after_many_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(rawfile, "CHUNK_BYTES", 1000)
    path = tmp_path / "nul.txt"
    path.write_bytes(b"abc\n" * 2500 + b"ab\x00c\n" + b"abc\n" * 10)  # NUL on line 2501
    issue = open_raw(path).byte_issue
    assert (issue.rule, issue.line) == ("nul_byte", 2501) and "offset 10002" in issue.detail


def test_truncated_utf8_at_end_of_file(tmp_path, monkeypatch):
    monkeypatch.setattr(rawfile, "CHUNK_BYTES", 4)
    path = tmp_path / "cut.txt"
    path.write_bytes(b"ok\n" * 10 + "€".encode()[:2])  # 2 of the 3 bytes of a euro sign
    issue = open_raw(path).byte_issue
    assert (issue.rule, issue.line) == ("utf8", 11) and "offset 32" in issue.detail


@pytest.mark.parametrize("join_min", [2, 10_000])
def test_encode_frame_same_ids_with_join_or_replace(monkeypatch, join_min):
    monkeypatch.setattr(vocab, "JOIN_MIN_VALUES", join_min)
    table = pl.DataFrame(
        {"value": pl.Series([10, 20, 30], dtype=pl.UInt32), "id": pl.Series([2, 3, 4], dtype=pl.Int32),
         "count": [9, 8, 7]}
    )
    v = vocab.Vocabulary("C", table, min_count=1)
    small = vocab.Vocabulary("D", pl.DataFrame({"value": ["x"], "id": pl.Series([2], dtype=pl.Int32),
                                                 "count": [5]}), min_count=1)
    frame = pl.DataFrame({"D": ["x", None, "y", "x", "x"],
                          "C": pl.Series([20, None, 99, 10, 30], dtype=pl.UInt32)})
    out = vocab.encode_frame(frame, [v, small])
    assert out.columns == ["C", "D"] and out.schema["C"] == pl.Int32
    assert out["C"].to_list() == [3, MISSING_ID, OOV_ID, 2, 4]
    assert out["D"].to_list() == [2, MISSING_ID, OOV_ID, 2, 2]


def test_large_vocabularies_hash_lookup_integers_and_strings(monkeypatch):
    """Above JOIN_MIN_VALUES integer values go through the vocabulary's reused pandas index, other
    values through a join: both give replace_strict's ids, a null stays missing even when 0 is a
    kept value (the index is probed with nulls filled by 0)."""
    monkeypatch.setattr(vocab, "JOIN_MIN_VALUES", 2)
    ints = vocab.Vocabulary("I", pl.DataFrame({"value": pl.Series([0, 7, 5], dtype=pl.Int64),
                                               "id": pl.Series([2, 3, 4], dtype=pl.Int32), "count": [3, 2, 1]}),
                            min_count=1)
    strs = vocab.Vocabulary("S", pl.DataFrame({"value": ["a", "b"], "id": pl.Series([2, 3], dtype=pl.Int32),
                                               "count": [2, 1]}), min_count=1)
    frame = pl.DataFrame({"I": pl.Series([None, 0, 5, 6, 7], dtype=pl.Int64), "S": ["b", None, "z", "a", "a"]})
    for _ in range(2):  # the second batch reuses the index built by the first
        out = vocab.encode_frame(frame, [ints, strs])
        assert out.schema == pl.Schema({"I": pl.Int32, "S": pl.Int32})
        assert out["I"].to_list() == [MISSING_ID, 2, 4, OOV_ID, 3]
        assert out["S"].to_list() == [3, MISSING_ID, OOV_ID, 2, 2]
    reference = frame.select(ints.encode_expr(), strs.encode_expr())
    assert out.equals(reference)


def test_passed_structure_scan_is_stored_and_reused_until_the_file_changes(tmp_path, monkeypatch):
    """checked_structure: a passed scan is stored by file stat + layout; the same file is not scanned
    again, a changed file is, a failed scan is never stored, and without a store every call scans."""
    scans: list[str] = []
    real = rawfile.check_structure

    def counting(raw, layout, **kw):
        scans.append(raw.source.name)
        return real(raw, layout, **kw)

    monkeypatch.setattr(rawfile, "check_structure", counting)
    layout = LineLayout("\t", 3, ("a", "b", "c"), field_patterns=(("a", "[0-9]*"),))
    store = tmp_path / "cache"
    log = tmp_path / "log.txt"
    log.write_text("1\tx\ty\nz\tx\ty\n")
    first = rawfile.checked_structure(open_raw(log), layout, store_dir=store)
    again = rawfile.checked_structure(open_raw(log), layout, store_dir=store)
    assert scans == ["log.txt"] and first == again and (first.lines, first.unmatched_lines) == (2, 1)
    assert rawfile.checked_structure(open_raw(log), LineLayout("\t", 3), store_dir=store) is not None
    assert len(scans) == 2  # another layout: another entry

    log.write_text("1\tx\n")  # now a field is missing
    os.utime(log, ns=(1, 1))
    for _ in range(2):
        with pytest.raises(DataFormatError) as e:
            rawfile.checked_structure(open_raw(log), layout, store_dir=store)
        assert e.value.rule == "field_count" and e.value.line == 1
    assert len(scans) == 4
    rawfile.checked_structure(open_raw(log.with_name("log.txt")), LineLayout("\t", 2))
    rawfile.checked_structure(open_raw(log), LineLayout("\t", 2))
    assert len(scans) == 6  # no store: always scanned


def test_clean_byte_pass_is_stored_and_a_dirty_one_is_not(tmp_path, monkeypatch):
    """open_raw(store_dir=...): a plain file whose byte pass is clean is not read again while it is
    unchanged (same line ends and size reported); a file with a late NUL keeps its issue every time."""
    fed: list[int] = []
    real = rawfile._ByteChecker.feed

    def counting(self, chunk):
        fed.append(len(chunk))
        return real(self, chunk)

    monkeypatch.setattr(rawfile._ByteChecker, "feed", counting)
    store = tmp_path / "cache"
    clean = tmp_path / "clean.txt"
    clean.write_bytes(b"a\tb\r\nc\td\r\n")
    first = open_raw(clean, store_dir=store)
    second = open_raw(clean, store_dir=store)
    assert len(fed) == 1 and (second.crlf, second.text_bytes, second.byte_issue) == (True, 10, None)
    assert (first.crlf, first.text_bytes) == (second.crlf, second.text_bytes)
    clean.write_bytes(b"a\tb\nc\td\ne\tf\n")
    os.utime(clean, ns=(1, 1))
    assert open_raw(clean, store_dir=store).crlf is False and len(fed) == 2

    dirty = tmp_path / "dirty.txt"
    dirty.write_bytes(b"a\tb\n" * 3000 + b"c\x00\td\n")  # past the 8 KiB binary sniff
    for _ in range(2):
        assert open_raw(dirty, store_dir=store).byte_issue.rule == "nul_byte"
    assert len(fed) == 4
