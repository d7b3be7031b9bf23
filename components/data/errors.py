"""Typed errors of the data layer.

Every error that bad input can cause names the file, the line (1-based, as an editor shows it)
and the column where it can, and the rule that was broken, so a user can open the file at the
right place instead of reading a parser's stack trace.
"""

from __future__ import annotations

from pathlib import Path


class CtrflowDataError(Exception):
    """Base class of every data-layer error raised on bad input."""


class DataFormatError(CtrflowDataError):
    """A raw file breaks a structural or content rule.

    Attributes hold the location so callers (CLI, validation report) can print or serialise it.
    """

    def __init__(
        self,
        file: str | Path,
        rule: str,
        detail: str,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = str(file)
        self.rule = rule
        self.detail = detail
        self.line = line
        self.column = column
        where = self.file
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: rule '{rule}' broken: {detail}")

    def __reduce__(self):
        # picklable with its fields (raised in a process-pool or Dask worker, re-raised by the caller)
        return type(self), (self.file, self.rule, self.detail, self.line, self.column)

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "rule": self.rule,
            "detail": self.detail,
        }


class ValidationFailed(CtrflowDataError):
    """The validation gate rejected the input; `failures` lists every broken rule."""

    def __init__(self, file: str | Path, failures: list[DataFormatError]) -> None:
        self.file = str(file)
        self.failures = failures
        lines = "\n".join(f"  - {f}" for f in failures[:20])
        more = f"\n  … and {len(failures) - 20} more" if len(failures) > 20 else ""
        super().__init__(f"validation of {self.file} failed ({len(failures)} rule(s) broken):\n{lines}{more}")

    def __reduce__(self):
        return type(self), (self.file, self.failures)
