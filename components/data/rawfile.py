"""Opening a raw log safely, and the streamed per-line structural scan every reader runs first.

Two passes, neither of which loads the file into Python objects:

1. :func:`open_raw` — a byte pass in fixed-size chunks. Compression is detected by magic bytes,
   never by the file name (a gzip file called ``.txt`` works): gzip, bz2 and xz are streamed into a
   plain copy in ``work_dir``; zip and zstd are refused. The same pass finds the first NUL byte
   and the first invalid UTF-8 sequence (exact, with an incremental decoder) and notes their line.
   Empty files, and files with a NUL byte in their first 8 KiB (``binary``), are refused at once.
   ``encoding="latin-1"`` transcodes to a UTF-8 copy instead (MovieLens item files).
2. :func:`check_structure` — Polars reads the plain text as ONE string column per line (separator
   NUL, which pass 1 guarantees is absent from every line it lets through; ``quote_char=None``;
   ``has_header=False``) with a row index, and vectorised ``str.count_matches`` /
   ``str.len_bytes`` aggregates, run on the streaming engine, find the first line with the wrong
   field count (naming a likely wrong delimiter) and the first field longer than
   ``max_field_bytes`` (naming the column). It then raises the earliest problem of both passes.

Lines are 1-based physical line numbers as an editor shows them, header line included. CRLF line
ends are lossless and accepted (Polars drops the ``\\r``), as is a UTF-8 byte-order mark.
"""

from __future__ import annotations

import atexit
import bz2
import codecs
import gzip
import hashlib
import lzma
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from components.data.errors import DataFormatError

CHUNK_BYTES = 1 << 20
BINARY_SNIFF_BYTES = 8192
LINE_INDEX = "__i"  # 0-based physical line index in the frames of :func:`scan_lines`

_STREAM_OPENERS = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}
_SEPARATOR_NAMES = {
    "\t": "tab",
    ",": "comma",
    ";": "semicolon",
    "|": "pipe",
    "::": "'::'",
    " ": "space",
}

_default_work_dir: Path | None = None


def default_work_dir() -> Path:
    """A per-process temporary directory for decompressed copies, removed when Python exits."""
    global _default_work_dir
    if _default_work_dir is None or not _default_work_dir.exists():
        _default_work_dir = Path(tempfile.mkdtemp(prefix="ctrflow-raw-"))
        atexit.register(shutil.rmtree, _default_work_dir, True)
    return _default_work_dir


def separator_name(sep: str) -> str:
    """Human name of a field separator ("tab", "comma", ...)."""
    return _SEPARATOR_NAMES.get(sep, repr(sep))


def detect_compression(path: Path) -> str | None:
    """Compression of ``path`` by its magic bytes: gzip, bz2, xz, zip, zstd, or None (plain)."""
    with open(path, "rb") as fh:
        head = fh.read(10)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] == b"1AY&SY":
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return None


@dataclass(frozen=True)
class RawFile:
    """A raw input file opened by :func:`open_raw`.

    ``source`` is the path as given (used in every error message); ``plain`` is the uncompressed
    UTF-8 text that readers scan (``source`` itself when it was already plain UTF-8).
    ``byte_issue`` is the first NUL / invalid-UTF-8 problem of the byte pass, if any; it is raised
    by :func:`check_structure` unless a structural problem comes earlier in the file.
    """

    source: Path
    plain: Path
    compression: str | None
    text_bytes: int  # decompressed bytes, before any transcoding
    lines: int
    crlf: bool
    byte_issue: DataFormatError | None = None


class _ByteChecker:
    """Fed the plain bytes chunk by chunk; remembers the first NUL / invalid UTF-8 and its line."""

    def __init__(self, file: Path, check_utf8: bool) -> None:
        self.file = file
        self.decoder = codecs.getincrementaldecoder("utf-8")() if check_utf8 else None
        self.offset = 0
        self.newlines = 0
        self.crlf = False
        self.last_byte = b""
        self.issue: DataFormatError | None = None

    def feed(self, chunk: bytes) -> None:
        if self.issue is None:
            hits = []
            nul = chunk.find(b"\x00")
            if nul >= 0:
                hits.append((nul, "nul_byte"))
            if self.decoder is not None:
                pending = len(self.decoder.getstate()[0])
                try:
                    self.decoder.decode(chunk)
                except UnicodeDecodeError as e:
                    hits.append((max(e.start - pending, 0), "utf8"))
            if hits:
                pos, rule = min(hits)
                self._set_issue(
                    rule, self.newlines + chunk.count(b"\n", 0, pos) + 1, self.offset + pos
                )
        if not self.crlf and (b"\r\n" in self.last_byte + chunk[:1] or b"\r\n" in chunk):
            self.crlf = True
        self.newlines += chunk.count(b"\n")
        self.offset += len(chunk)
        self.last_byte = chunk[-1:]

    def finish(self) -> None:
        if self.issue is None and self.decoder is not None:
            try:
                self.decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                self._set_issue("utf8", self.newlines + 1, self.offset)

    def _set_issue(self, rule: str, line: int, offset: int) -> None:
        if rule == "nul_byte":
            detail = f"NUL byte at byte offset {offset}: text logs never contain NUL bytes"
        else:
            detail = f"invalid UTF-8 byte sequence at byte offset {offset} (the file must be UTF-8)"
        self.issue = DataFormatError(self.file, rule, detail, line=line)

    @property
    def lines(self) -> int:
        return self.newlines + (1 if self.last_byte not in (b"", b"\n") else 0)


def _plain_copy_path(source: Path, work_dir: Path, tag: str) -> Path:
    st = source.stat()
    key = hashlib.sha1(
        f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}|{tag}".encode()
    ).hexdigest()[:12]
    name = source.name
    for suffix in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(suffix)
    return work_dir / f"{name}.{key}.plain"


def open_raw(path: str | Path, work_dir: Path | None = None, *, encoding: str = "utf-8") -> RawFile:
    """Open ``path`` for scanning: decompress / transcode to a plain UTF-8 copy if needed.

    Streams in ``CHUNK_BYTES`` chunks (memory stays flat). Raises :class:`DataFormatError` with
    rule ``missing_file``, ``empty``, ``compression`` (unsupported or corrupt stream) or
    ``binary`` (NUL in the first 8 KiB), and also for a NUL / invalid UTF-8 on line 1. Later
    NUL / UTF-8 problems are kept in ``RawFile.byte_issue`` (see :func:`check_structure`).
    ``encoding`` is ``"utf-8"`` (checked) or ``"latin-1"`` (transcoded to UTF-8 in ``work_dir``).
    """
    source = Path(path)
    if not source.is_file():
        what = "is a directory, not a file" if source.is_dir() else "does not exist"
        raise DataFormatError(source, "missing_file", f"the input {what}")
    if source.stat().st_size == 0:
        raise DataFormatError(source, "empty", "the file is empty (0 bytes)")
    compression = detect_compression(source)
    if compression in ("zip", "zstd"):
        raise DataFormatError(
            source,
            "compression",
            f"{compression} archives are not supported; decompress it first "
            "(gzip, bz2 and xz are read directly)",
        )
    encoding = encoding.lower().replace("_", "-")
    if encoding not in ("utf-8", "utf8", "latin-1", "latin1", "iso-8859-1"):
        raise ValueError(
            f"encoding must be utf-8 or latin-1 (single-byte, chunk-safe), got {encoding!r}"
        )
    transcode = encoding not in ("utf-8", "utf8")
    checker = _ByteChecker(source, check_utf8=not transcode)
    if compression is None and not transcode:
        plain = source
        with open(source, "rb") as fh:
            while chunk := fh.read(CHUNK_BYTES):
                checker.feed(chunk)
    else:
        plain = _plain_copy_path(
            source, work_dir or default_work_dir(), f"{compression}|{encoding}"
        )
        plain.parent.mkdir(parents=True, exist_ok=True)
        tmp = plain.with_name(f"{plain.name}.{uuid.uuid4().hex}.tmp")
        opener = _STREAM_OPENERS.get(compression, open)
        try:
            with opener(source, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(CHUNK_BYTES):
                    checker.feed(chunk)
                    dst.write(chunk.decode(encoding).encode("utf-8") if transcode else chunk)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            tmp.unlink(missing_ok=True)
            raise DataFormatError(
                source,
                "compression",
                f"the {compression} stream is corrupt or truncated after {checker.offset} "
                f"decompressed bytes ({type(e).__name__}: {e})",
            ) from None
        tmp.replace(plain)
    checker.finish()
    if checker.offset == 0:
        raise DataFormatError(source, "empty", f"the file decompresses ({compression}) to 0 bytes")
    with open(plain, "rb") as fh:
        head = fh.read(BINARY_SNIFF_BYTES)
    nul = head.find(b"\x00")
    if nul >= 0:
        raise DataFormatError(
            source,
            "binary",
            f"NUL byte at byte offset {nul} (within the first 8 KiB): this is a "
            "binary file, not a text log",
        )
    if checker.issue is not None and checker.issue.line == 1:
        raise checker.issue
    return RawFile(
        source=source,
        plain=plain,
        compression=compression,
        text_bytes=checker.offset,
        lines=checker.lines,
        crlf=checker.crlf,
        byte_issue=checker.issue,
    )


def read_first_line(raw: RawFile, limit: int = 1 << 20) -> str:
    """The first line of the plain text (at most ``limit`` bytes), without BOM and line end."""
    with open(raw.plain, "rb") as fh:
        head = fh.read(limit)
    line = head.split(b"\n", 1)[0].removeprefix(b"\xef\xbb\xbf").removesuffix(b"\r")
    return line.decode("utf-8", errors="replace")


def scan_lines(path: Path) -> pl.LazyFrame:
    """Lazy frame of the file's physical lines: ``LINE_INDEX`` (0-based, UInt32) and ``line``.

    The separator is NUL (never present once :func:`open_raw` passed), so each line is one field;
    quotes are not special; trailing ``\\r`` is dropped; invalid UTF-8 becomes U+FFFD.
    """
    return pl.scan_csv(
        path,
        separator="\x00",
        has_header=False,
        quote_char=None,
        schema={"line": pl.String},
        encoding="utf8-lossy",
        empty_string_is_null=False,
        truncate_ragged_lines=True,
        row_index_name=LINE_INDEX,
    )


@dataclass(frozen=True)
class LineLayout:
    """What every line of a delimited file must look like."""

    separator: str  # "\t", ",", "|", "::" (multi-character separators are allowed)
    fields: int  # expected number of fields per line
    column_names: tuple[str, ...] = ()  # names of the fields, for error messages
    skip_quoted: bool = False  # CSV with quoting: do not field-count lines containing '"'

    def column(self, index: int) -> str | None:
        return self.column_names[index] if 0 <= index < len(self.column_names) else None


@dataclass(frozen=True)
class StructureReport:
    """Result of a passed structural scan."""

    lines: int  # physical lines in the file (header included)


def _line_text(path: Path, index: int) -> str:
    df = scan_lines(path).filter(pl.col(LINE_INDEX) == index).select("line").head(1).collect()
    return df.item() if df.height else ""


def _field_count_error(raw: RawFile, layout: LineLayout, index: int, n_bad: int) -> DataFormatError:
    text = _line_text(raw.plain, index)
    sep_name = separator_name(layout.separator)
    expected = f"expected {layout.fields} {sep_name}-separated fields"
    more = f" ({n_bad} lines have a wrong field count)" if n_bad > 1 else ""
    if text == "":
        return DataFormatError(
            raw.source, "field_count", f"the line is empty; {expected}{more}", line=index + 1
        )
    found = text.count(layout.separator) + 1
    if found == 1:
        guesses = sorted(
            ((text.count(s), s) for s in _SEPARATOR_NAMES if s != layout.separator and s in text),
            reverse=True,
        )
        if guesses:
            n, s = guesses[0]
            return DataFormatError(
                raw.source,
                "delimiter",
                f"expected {sep_name}-separated, line looks {separator_name(s)}-separated "
                f"({n + 1} {separator_name(s)}-separated fields, no {sep_name}){more}",
                line=index + 1,
            )
    return DataFormatError(
        raw.source, "field_count", f"found {found} fields, {expected}{more}", line=index + 1
    )


def _utf8_column(raw: RawFile, layout: LineLayout, line: int) -> str | None:
    text = _line_text(raw.plain, line - 1)
    pos = text.find("\ufffd")
    if pos < 0 or text.count(layout.separator) + 1 != layout.fields:
        return None
    return layout.column(text.count(layout.separator, 0, pos))


def check_structure(
    raw: RawFile, layout: LineLayout, *, max_field_bytes: int = 65_536
) -> StructureReport:
    """Streamed structural scan; raises :class:`DataFormatError` for the FIRST bad line.

    Rules, by line: ``nul_byte`` / ``utf8`` (from :func:`open_raw`'s byte pass, with the column
    where it can be told), ``field_count`` (also for an empty line), ``delimiter`` (a line with
    no expected separator but another common one), ``field_size`` (a field longer than
    ``max_field_bytes``, naming its column). At equal lines the rules rank in that order.
    """
    lines = scan_lines(raw.plain)
    line = pl.col("line")
    bad_count = line.str.count_matches(layout.separator, literal=True) != layout.fields - 1
    if layout.skip_quoted:
        bad_count = bad_count & ~line.str.contains('"', literal=True)
    long_line = line.str.len_bytes() > max_field_bytes
    idx = pl.col(LINE_INDEX)
    stats = (
        lines.select(
            pl.len().alias("lines"),
            idx.filter(bad_count).min().alias("first_count"),
            bad_count.sum().alias("n_count"),
            idx.filter(long_line).min().alias("first_long"),
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )

    found: list[tuple[int, int, DataFormatError | None]] = []  # (line, rank, error)
    if raw.byte_issue is not None:
        found.append((raw.byte_issue.line or 0, 0, raw.byte_issue))
    if stats["first_count"] is not None:
        found.append((stats["first_count"] + 1, 1, None))
    if stats["first_long"] is not None:
        sizes = pl.element().str.len_bytes()
        parts = line.str.split(layout.separator).list.eval(sizes)
        hit = (
            lines.filter(long_line)
            .select(idx, parts.list.max().alias("size"), parts.list.arg_max().alias("field"))
            .filter(pl.col("size") > max_field_bytes)
            .sort(LINE_INDEX)
            .head(1)
            .collect()
        )
        if hit.height:
            i, size, field = hit.row(0)
            found.append(
                (
                    i + 1,
                    2,
                    DataFormatError(
                        raw.source,
                        "field_size",
                        f"field {field + 1} is {size} bytes long, more than max_field_bytes={max_field_bytes}",
                        line=i + 1,
                        column=layout.column(field) or f"field {field + 1}",
                    ),
                )
            )
    if found:
        line_no, rank, err = min(found, key=lambda t: (t[0], t[1]))
        if rank == 1:
            raise _field_count_error(raw, layout, line_no - 1, stats["n_count"])
        if err.rule == "utf8" and err.column is None:
            column = _utf8_column(raw, layout, line_no)
            if column is not None:
                err = DataFormatError(err.file, err.rule, err.detail, line=err.line, column=column)
        raise err
    return StructureReport(lines=stats["lines"])


def scan_fields(
    path: Path,
    names: Sequence[str],
    separator: str,
    *,
    header_lines: int = 0,
    line_column: str = "__line",
    quote_char: str | None = None,
) -> pl.LazyFrame:
    """Lazy String columns ``names`` of a delimited file that passed :func:`check_structure`.

    Adds ``line_column`` (UInt64, 1-based physical line). Empty fields are null. Single-byte
    separators use ``pl.scan_csv``; multi-character ones (MovieLens ``::``) split each line with
    ``str.split_exact``, vectorised.
    """
    if len(separator) == 1:
        lf = pl.scan_csv(
            path,
            separator=separator,
            has_header=False,
            skip_rows=header_lines,
            quote_char=quote_char,
            schema=dict.fromkeys(names, pl.String),
            row_index_name=line_column,
            row_index_offset=header_lines + 1,
        )
        return lf.with_columns(pl.col(line_column).cast(pl.UInt64))
    split = (
        pl.col("line").str.split_exact(separator, len(names) - 1).struct.rename_fields(list(names))
    )
    lf = (
        scan_lines(path)
        .filter(pl.col(LINE_INDEX) >= header_lines)
        .select(
            (pl.col(LINE_INDEX).cast(pl.UInt64) + 1).alias(line_column), split.alias("__fields")
        )
        .unnest("__fields")
    )
    return lf.with_columns(
        pl.when(pl.col(n).str.len_bytes() > 0).then(pl.col(n)).alias(n) for n in names
    )
