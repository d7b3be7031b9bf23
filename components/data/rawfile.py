"""Opening a raw log safely, and the streamed per-line structural scan every reader runs first.

Two passes, neither of which loads the file into Python objects:

1. :func:`open_raw` — a byte pass in fixed-size chunks. Compression is detected by magic bytes,
   never by the file name (a gzip file called ``.txt`` works): gzip, bz2 and xz are streamed into a
   plain copy in ``work_dir``; zip and zstd are refused. The same pass finds the first NUL byte
   and the first invalid UTF-8 sequence (exact: an incremental decoder runs on every chunk that is
   not pure ASCII) and notes their line (newlines are counted only when there is such a problem).
   Empty files, and files with a NUL byte in their first 8 KiB (``binary``), are refused at once.
   ``encoding="latin-1"`` transcodes to a UTF-8 copy instead (MovieLens item files).
2. :func:`check_structure` — ONE streaming Polars query over the file's lines (``pl.scan_lines``
   when the byte pass found the text clean; else a lossy one-column ``scan_csv``) with a row
   index, whose aggregates only (no per-line column is kept) give the first line with the wrong
   field count (``str.count_matches``; naming a likely wrong delimiter), the first field longer
   than ``max_field_bytes`` (naming the column) and, when the layout declares field patterns
   (e.g. "an Int64 written in at most 18 digits"), how many data lines do not match them at once:
   only those lines need the reader's exact type checks (:func:`unmatched_fields`). It then
   raises the earliest problem of both passes.

:func:`checked_structure` (what the readers call) remembers a passed scan, and :func:`open_raw` a
clean byte pass of a plain file: stored under ``<validate.cache_dir>/structure/`` keyed by the
file's path, size, mtime and inode (plus the layout and field-size limit) and this module's code,
so preprocessing does not scan again a file the gate has just scanned (Kaggle-size Criteo, 7 days
of 1.6 GB: 7 × 1.8 s structure and 7 × 1.2 s byte pass of preprocessing's wall time). A changed
file, layout or checker scans afresh; a failed scan is never stored. Only the gate and
preprocessing use the store (``read_source(..., remember_structure=True)``), not ``predict``.

Lines are 1-based physical line numbers as an editor shows them, header line included. CRLF line
ends are lossless and accepted (the line scans drop the ``\\r``), as is a UTF-8 byte-order mark.
Memory is bounded by the streaming engine's batches, not by the number of lines.
"""

from __future__ import annotations

import atexit
import bz2
import codecs
import gzip
import hashlib
import json
import lzma
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
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
    crlf: bool
    byte_issue: DataFormatError | None = None


class _ByteChecker:
    """Fed the plain bytes chunk by chunk; remembers the offset of the first NUL / invalid UTF-8.

    Pure-ASCII chunks (``bytes.isascii``, the common case) skip the UTF-8 decoder; newlines are
    not counted here (the line of a problem is found afterwards, see :func:`_line_at`).
    """

    def __init__(self, check_utf8: bool) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")() if check_utf8 else None
        self.offset = 0
        self.crlf = False
        self.last_byte = b""
        self.issue: tuple[int, str] | None = None  # (byte offset, rule)

    def feed(self, chunk: bytes) -> None:
        if self.issue is None:
            hits = []
            nul = chunk.find(b"\x00")
            if nul >= 0:
                hits.append((nul, "nul_byte"))
            if self.decoder is not None:
                pending = len(self.decoder.getstate()[0])
                if pending or not chunk.isascii():
                    try:
                        self.decoder.decode(chunk)
                    except UnicodeDecodeError as e:
                        hits.append((max(e.start - pending, 0), "utf8"))
            if hits:
                pos, rule = min(hits)
                self.issue = (self.offset + pos, rule)
        if not self.crlf and (
            (self.last_byte == b"\r" and chunk[:1] == b"\n") or (b"\r" in chunk and b"\r\n" in chunk)
        ):
            self.crlf = True
        self.offset += len(chunk)
        self.last_byte = chunk[-1:]

    def finish(self) -> None:
        if self.issue is None and self.decoder is not None:
            try:
                self.decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                self.issue = (self.offset, "utf8")


def _line_at(read_chunks, offset: int) -> int:
    """1-based line of byte ``offset`` of the stream ``read_chunks()`` yields (error path only)."""
    newlines = seen = 0
    for chunk in read_chunks():
        take = min(len(chunk), offset - seen)
        newlines += chunk.count(b"\n", 0, take)
        seen += take
        if seen >= offset:
            break
    return newlines + 1


def _byte_issue(source: Path, read_chunks, issue: tuple[int, str]) -> DataFormatError:
    offset, rule = issue
    if rule == "nul_byte":
        detail = f"NUL byte at byte offset {offset}: text logs never contain NUL bytes"
    else:
        detail = f"invalid UTF-8 byte sequence at byte offset {offset} (the file must be UTF-8)"
    return DataFormatError(source, rule, detail, line=_line_at(read_chunks, offset))


def _plain_copy_path(source: Path, work_dir: Path, tag: str) -> Path:
    st = source.stat()
    key = hashlib.sha1(
        f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}|{tag}".encode()
    ).hexdigest()[:12]
    name = source.name
    for suffix in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(suffix)
    return work_dir / f"{name}.{key}.plain"


def open_raw(path: str | Path, work_dir: Path | None = None, *, encoding: str = "utf-8",
             store_dir: str | Path | None = None) -> RawFile:
    """Open ``path`` for scanning: decompress / transcode to a plain UTF-8 copy if needed.

    ``store_dir``: a plain UTF-8 file whose byte pass found nothing is remembered there (its line
    ends and size, keyed like :func:`checked_structure`), and the pass is not run again for the
    same unchanged file (1.2 s of a 1.6 GB Criteo day; the gate runs it, preprocessing reuses it).

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
    checker = _ByteChecker(check_utf8=not transcode)
    clean_entry = None
    if compression is None and not transcode and store_dir is not None:
        clean_entry = Path(store_dir) / STRUCTURE_DIR / f"bytes-{_file_key(source)}.json"
        try:
            known = json.loads(clean_entry.read_text())
            return RawFile(source=source, plain=source, compression=None,
                           text_bytes=int(known["text_bytes"]), crlf=bool(known["crlf"]))
        except (OSError, ValueError, TypeError, KeyError):
            pass
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
    issue = None
    if checker.issue is not None:
        opener = _STREAM_OPENERS.get(compression, open)

        def read_chunks():
            with opener(source, "rb") as fh:
                while chunk := fh.read(CHUNK_BYTES):
                    yield chunk

        issue = _byte_issue(source, read_chunks, checker.issue)
        if issue.line == 1:
            raise issue
    elif clean_entry is not None and checker.offset:
        _store_json(clean_entry, source, {"text_bytes": checker.offset, "crlf": checker.crlf})
    return RawFile(
        source=source,
        plain=plain,
        compression=compression,
        text_bytes=checker.offset,
        crlf=checker.crlf,
        byte_issue=issue,
    )


def read_first_line(raw: RawFile, limit: int = 1 << 20) -> str:
    """The first line of the plain text (at most ``limit`` bytes), without BOM and line end."""
    with open(raw.plain, "rb") as fh:
        head = fh.read(limit)
    line = head.split(b"\n", 1)[0].removeprefix(b"\xef\xbb\xbf").removesuffix(b"\r")
    return line.decode("utf-8", errors="replace")


def scan_lines(path: Path) -> pl.LazyFrame:
    """Lazy frame of the file's physical lines: ``LINE_INDEX`` (0-based, UInt32) and ``line``.

    Tolerant of anything :func:`open_raw` lets through: a one-column ``scan_csv`` with separator
    NUL (a line holding a NUL is cut there), quotes not special, trailing ``\\r`` and a leading
    byte-order mark dropped, invalid UTF-8 becoming U+FFFD. :func:`check_structure` uses the
    faster :func:`_line_frame` on clean text.
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


def _line_frame(raw: RawFile) -> pl.LazyFrame:
    """The lines of ``raw`` as :func:`scan_lines` gives them, read by the fastest safe scanner.

    ``pl.scan_lines`` (about half the CPU of the one-column ``scan_csv``) when the byte pass found
    no NUL / invalid UTF-8 (it would fail on those) and there is no byte-order mark (it keeps it).
    """
    with open(raw.plain, "rb") as fh:
        bom = fh.read(3) == b"\xef\xbb\xbf"
    if raw.byte_issue is None and not bom:
        return pl.scan_lines(raw.plain, name="line", row_index_name=LINE_INDEX)
    return scan_lines(raw.plain)


@dataclass(frozen=True)
class LineLayout:
    """What every line of a delimited file must look like.

    ``field_patterns`` (column name → regular expression in Rust ``regex`` syntax, unanchored,
    never matching the separator) describe values the reader knows to be valid without looking
    closer, e.g. ``(?:[+-]?[0-9]{1,18})?`` for an Int64 column (see
    :func:`components.data.formats.typecheck.integer_pattern`). :func:`check_structure` counts
    the data lines (those after ``header_lines``) whose fields do not all match; only those need
    the reader's exact checks (:func:`unmatched_fields`). Single-character separators only.
    """

    separator: str  # "\t", ",", "|", "::" (multi-character separators are allowed)
    fields: int  # expected number of fields per line
    column_names: tuple[str, ...] = ()  # names of the fields, for error messages
    skip_quoted: bool = False  # CSV with quoting: do not field-count lines containing '"'
    field_patterns: tuple[tuple[str, str], ...] = ()  # (column name, regex of surely-valid values)
    header_lines: int = 0  # leading lines exempt from field_patterns (still field-counted)

    def column(self, index: int) -> str | None:
        return self.column_names[index] if 0 <= index < len(self.column_names) else None

    def quick_pattern(self) -> str | None:
        """Anchored regex a data line matches when every patterned field matches its pattern.

        Covers the line up to its last patterned field (followed by the separator, or the line end
        when that is the last field); None when there are no patterns.
        """
        if not self.field_patterns:
            return None
        if len(self.separator) != 1:
            raise ValueError("field_patterns need a single-character separator")
        patterns = dict(self.field_patterns)
        unknown = sorted(set(patterns) - set(self.column_names))
        if unknown:
            raise ValueError(f"field_patterns name unknown columns {unknown}")
        sep = f"\\x{{{ord(self.separator):X}}}"
        generic = f"[^{sep}\"]*" if self.skip_quoted else f"[^{sep}]*"
        last = max(self.column_names.index(n) for n in patterns)
        parts = [f"(?:{patterns[n]})" if n in patterns else generic for n in self.column_names[: last + 1]]
        return "^" + sep.join(parts) + ("$" if last == self.fields - 1 else sep)


@dataclass(frozen=True)
class StructureReport:
    """Result of a passed structural scan."""

    lines: int  # physical lines in the file (header included)
    unmatched_lines: int = 0  # data lines not matching the layout's field_patterns (0 if none)
    first_unmatched: int | None = None  # 1-based line of the first of them


STRUCTURE_DIR = "structure"


@cache
def _checker_code() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _file_key(path: Path, *extra) -> str:
    """Key of a file's current version (path, size, mtime, inode) + ``extra`` + this module's code."""
    st = path.stat()
    record = [str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, *extra, _checker_code()]
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()[:32]


def _store_json(entry: Path, source: Path, data: dict) -> None:
    """Write a store entry atomically, naming the file version it describes (what
    :func:`stale_store_entries` checks); a store that cannot be written only costs the next scan."""
    from components.atomic_dir import write_json_atomic

    try:
        st = source.stat()
        write_json_atomic(entry, {"file": str(source.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                  **data})
    except OSError:
        pass


def stale_store_entries(store_dir: str | Path) -> list[Path]:
    """The entries of ``store_dir``'s structure store whose file is gone or has changed since (they
    can never match again: ``ctrflow gc`` removes them)."""
    stale = []
    directory = Path(store_dir) / STRUCTURE_DIR
    for entry in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            d = json.loads(entry.read_text())
            st = Path(d["file"]).stat()
            if (st.st_size, st.st_mtime_ns) == (d["size"], d["mtime_ns"]):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            pass
        stale.append(entry)
    return stale


def checked_structure(raw: RawFile, layout: LineLayout, *, max_field_bytes: int = 65_536,
                      store_dir: str | Path | None = None) -> StructureReport:
    """:func:`check_structure`, or the stored report of an earlier passed scan of the same file,
    layout and limits (module doc); ``store_dir`` None: always scan, store nothing."""
    if store_dir is None or raw.byte_issue is not None:
        return check_structure(raw, layout, max_field_bytes=max_field_bytes)
    entry = Path(store_dir) / STRUCTURE_DIR / f"{_file_key(raw.source, repr(layout), max_field_bytes)}.json"
    try:
        return StructureReport(**json.loads(entry.read_text())["report"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    report = check_structure(raw, layout, max_field_bytes=max_field_bytes)
    _store_json(entry, raw.source, {"report": asdict(report)})
    return report


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

    One streaming query of aggregates (count, first / number of bad lines) reads the file once;
    the offending lines are looked up again only to word an error. On success the report also
    counts the data lines that do not match ``layout.field_patterns``.
    """
    lines = _line_frame(raw)
    line = pl.col("line")
    idx = pl.col(LINE_INDEX)
    bad_count = line.str.count_matches(layout.separator, literal=True) != layout.fields - 1
    if layout.skip_quoted:
        bad_count = bad_count & ~line.str.contains('"', literal=True)
    long_line = line.str.len_bytes() > max_field_bytes
    # per-line flags first, aggregates second: each flag is computed once per line (an
    # expression used inside both a filter and a sum would be evaluated twice)
    flags = [idx, bad_count.alias("bad_count"), long_line.alias("long_line")]
    aggs = [
        pl.len().alias("lines"),
        idx.filter("bad_count").min().alias("first_count"),
        pl.col("bad_count").sum().alias("n_count"),
        idx.filter("long_line").min().alias("first_long"),
    ]
    quick = layout.quick_pattern()
    if quick is not None:
        flags.append(((idx >= layout.header_lines) & ~line.str.contains(quick)).alias("unmatched"))
        aggs += [
            idx.filter("unmatched").min().alias("first_unmatched"),
            pl.col("unmatched").sum().alias("n_unmatched"),
        ]
    stats = lines.select(flags).select(aggs).collect(engine="streaming").row(0, named=True)

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
    first = stats.get("first_unmatched")
    return StructureReport(
        lines=stats["lines"],
        unmatched_lines=int(stats.get("n_unmatched") or 0),
        first_unmatched=None if first is None else first + 1,
    )


def unmatched_fields(raw: RawFile, layout: LineLayout, *, line_column: str = "__line") -> pl.LazyFrame:
    """Lazy String columns (``layout.column_names``, empty = null) of the data lines that do not
    match ``layout.field_patterns``, with ``line_column`` (UInt64, 1-based physical line).

    For a file that passed :func:`check_structure`: each line is split on the separator with
    ``str.split_exact`` (the same fields as :func:`scan_fields` with ``quote_char=None``). The
    reader runs its exact type checks on these lines only; every other line is known valid.
    """
    quick = layout.quick_pattern()
    if quick is None or layout.skip_quoted:
        raise ValueError("unmatched_fields needs field_patterns and a layout without quoting")
    names = list(layout.column_names)
    split = pl.col("line").str.split_exact(layout.separator, len(names) - 1).struct.rename_fields(names)
    idx = pl.col(LINE_INDEX)
    lf = (
        _line_frame(raw)
        .filter((idx >= layout.header_lines) & ~pl.col("line").str.contains(quick))
        .select((idx.cast(pl.UInt64) + 1).alias(line_column), split.alias("__fields"))
        .unnest("__fields")
    )
    return lf.with_columns(pl.when(pl.col(n).str.len_bytes() > 0).then(pl.col(n)).alias(n) for n in names)


def scan_fields(
    path: Path,
    names: Sequence[str],
    separator: str,
    *,
    header_lines: int = 0,
    line_column: str = "__line",
    quote_char: str | None = None,
    dtypes: Mapping[str, pl.DataType] | None = None,
) -> pl.LazyFrame:
    """Lazy String columns ``names`` of a delimited file that passed :func:`check_structure`.

    Adds ``line_column`` (UInt64, 1-based physical line). Empty fields are null. Single-byte
    separators use ``pl.scan_csv``; multi-character ones (MovieLens ``::``) split each line with
    ``str.split_exact``, vectorised. ``dtypes`` (single-byte separators only) has the CSV parser
    read those columns as that dtype directly; only for columns whose every value is known to
    parse (e.g. all lines matched an integer ``field_patterns``), else the scan fails.
    """
    if len(separator) == 1:
        schema = {n: (dtypes or {}).get(n, pl.String) for n in names}
        lf = pl.scan_csv(
            path,
            separator=separator,
            has_header=False,
            skip_rows=header_lines,
            quote_char=quote_char,
            schema=schema,
            row_index_name=line_column,
            row_index_offset=header_lines + 1,
        )
        return lf.with_columns(pl.col(line_column).cast(pl.UInt64))
    if dtypes:
        raise ValueError("scan_fields: dtypes need a single-character separator")
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
