"""Result rows, in input order, to stdout or to a JSONL/CSV file written atomically."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import tempfile
from typing import IO, Any

from ..errors import ConfigError
from ..inputs import BadRecord
from ..outcome import Outcome, Status
from ..store.codec import to_jsonable
from ..store.redact import redact_text

COLUMNS = ("index", "status", "input", "output", "error", "attempts")
OUTPUT_FORMATS = ("jsonl", "csv")


def output_format(path: str | None) -> str:
    """JSONL or CSV by the output file's extension (JSONL for stdout and other names)."""
    if path and os.path.splitext(path)[1].lower() in (".csv", ".tsv"):
        return "csv"
    return "jsonl"


def _plain(value: Any) -> Any:
    try:
        return to_jsonable(value)
    except TypeError:
        return repr(value)


def error_text(error: BaseException | None) -> str | None:
    """``HTTPError: 500 Server Error ...`` with any secret masked."""
    if error is None:
        return None
    return redact_text(f"{type(error).__name__}: {error}")


def row(outcome: Outcome[Any]) -> dict[str, Any]:
    """One output row for an outcome; an item's index is its position in the input."""
    item = outcome.item
    return {
        "index": outcome.index,
        "status": outcome.status.value,
        "input": None if isinstance(item, BadRecord) else _plain(item),
        "output": _plain(outcome.value) if outcome.status is Status.OK else None,
        "error": error_text(outcome.error),
        "attempts": outcome.attempts,
    }


class ResultWriter:
    """Writes rows to stdout as they come, or to a temp file renamed into place on commit."""

    def __init__(self, path: str | None) -> None:
        self.path = path or None
        self.format = output_format(self.path)
        self.rows = 0
        self._tmp: str | None = None
        self._fh: IO[str] | None = None
        self._csv: Any = None

    def open(self) -> None:
        """Create the temp file next to the output (same filesystem, so rename is atomic)."""
        if self.path is None:
            self._fh = sys.stdout
        else:
            directory = os.path.dirname(os.path.abspath(self.path))
            try:
                fd, self._tmp = tempfile.mkstemp(
                    dir=directory, prefix=f".{os.path.basename(self.path)}.", suffix=".tmp")
            except OSError as exc:
                raise ConfigError(f"cannot write --output {self.path}: "
                                  f"{exc.strerror or exc}") from None
            self._fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        if self.format == "csv":
            self._csv = csv.writer(self._fh)
            self._csv.writerow(COLUMNS)

    def write(self, record: dict[str, Any]) -> None:
        """Append one row."""
        assert self._fh is not None, "open() first"
        if self._csv is not None:
            self._csv.writerow([_cell(record[c]) for c in COLUMNS])
        else:
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.rows += 1

    def commit(self) -> None:
        """Flush and move the file into place."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        fh.flush()
        if self._tmp is not None and self.path is not None:
            fh.close()
            os.replace(self._tmp, self.path)
            self._tmp = None

    def discard(self) -> None:
        """Drop everything written to the temp file; the output path is left untouched."""
        fh, self._fh = self._fh, None
        if fh is not None and fh is not sys.stdout:
            fh.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float):
        return value
    return json.dumps(value, ensure_ascii=False)
