"""Result rows, in input order, to stdout or to a JSONL/CSV file written atomically.

The file is written as ``.NAME.<host>-<pid>.<random>.tmp`` next to NAME and renamed into place
at the end, so a reader never sees half a file. A writer killed with ``kill -9`` leaves its
temp file behind; the next writer of the same NAME removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Mapping
from typing import IO, Any

from .._inputs import Records
from ..errors import OutputError
from ..outcome import Outcome
from ..store.rows import InputRows, columns, csv_cell, outcome_fields

OUTPUT_FORMATS = ("jsonl", "csv")


def output_format(path: str | None) -> str:
    """JSONL or CSV by the output file's extension (JSONL for stdout and other names)."""
    if path and os.path.splitext(path)[1].lower() in (".csv", ".tsv"):
        return "csv"
    return "jsonl"


def row(outcome: Outcome[Any], line: int | None = None,
        fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The result row of an outcome (docs/output.md); an item's index is its position in the
    input. ``line`` and the input's own ``fields`` are filled in by a :class:`ResultWriter`
    given the input when left out here.

    ``finished`` is when the item's last call ended (``Outcome.ended``: on every executor,
    and for an answer from the checkpoint the time recorded there, as ``export`` gives it),
    ``started`` that less its latency; both empty for an item not attempted.
    """
    return {"index": outcome.index, "line": line, **(fields or {}),
            **outcome_fields(outcome, outcome.ended)}


class ResultWriter:
    """Writes rows to stdout as they come, or to a temp file renamed into place on commit.

    Every fault writing the file is an :class:`OutputError` (never a bare OSError) saying
    that the answers are kept in the checkpoint; :meth:`close_partial` keeps the rows
    written so far. ``run_name`` and ``db`` only make that message name the export command.
    Given ``inputs`` (the run's records), every row gets its input line number and the input's
    own fields, and every row has the same columns (docs/output.md).
    """

    def __init__(self, path: str | None, inputs: Records | None = None, *,
                 run_name: str | None = None, db: str | None = None) -> None:
        self.path = path or None
        self.inputs = InputRows(inputs) if inputs is not None else None
        self.columns = columns()
        self.format = output_format(self.path)
        self.rows = 0
        self.run_name = run_name
        self.db = db
        self._tmp: str | None = None
        self._fd: int | None = None
        self._stdout: IO[str] | None = None
        self._good = 0  # bytes of whole rows in the temp file: what a partial close keeps
        self._line = io.StringIO()
        self._csv: Any = None

    def open(self) -> None:
        """Create the temp file next to the output (same filesystem, so rename is atomic)."""
        if self.format == "csv":
            self._csv = csv.writer(self._line)
        if self.path is None:
            self._stdout = sys.stdout
        else:
            try:
                self._fd, self._tmp = create_temp(self.path)
            except OSError as exc:
                raise OutputError(f"cannot create --output {self.path}: "
                                  f"{exc.strerror or exc}{missing_dir_note(self.path)}"
                                  ) from None
        if self.inputs is not None:
            self.columns = columns(self.inputs.columns())
        if self._csv is not None:
            self._put(self._encode_csv(self.columns))
            self.rows = 0

    def write(self, record: dict[str, Any]) -> None:
        """Append one row (of :func:`row`); an OSError (disk full, ...) becomes an OutputError."""
        assert self._fd is not None or self._stdout is not None, "open() first"
        if self.inputs is not None and record.get("line") is None:
            line, fields, _ = self.inputs.at(record["index"])
            record = {**record, **fields, "line": line}
        record = {c: record.get(c) for c in self.columns}
        if self._csv is not None:
            self._put(self._encode_csv([csv_cell(record[c]) for c in self.columns]))
        else:
            self._put(json.dumps(record, ensure_ascii=False) + "\n",
                      lambda: json.dumps(record, ensure_ascii=True) + "\n")

    def _encode_csv(self, cells: Any) -> str:
        self._line.seek(0)
        self._line.truncate()
        self._csv.writerow(cells)
        return self._line.getvalue()

    def _put(self, text: str, ascii_text: Any = None) -> None:
        if self._stdout is not None:
            try:
                try:
                    self._stdout.write(text)
                except UnicodeEncodeError:  # nothing was written: the text is encoded first
                    self._stdout.write(ascii_text() if ascii_text else
                                       text.encode("ascii", "backslashreplace").decode())
            except BrokenPipeError:
                raise  # `| head` closed the pipe: the CLI ends quietly, as Unix tools do
            except OSError as exc:
                raise self._error(exc, "cannot write") from None
            self.rows += 1
            return
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            # An unpaired surrogate: JSON escapes it as \udXXX, which reads back the same
            # string; CSV has no escape, so the cell shows it as the same \udXXX text.
            data = (ascii_text().encode("ascii") if ascii_text else
                    text.encode("utf-8", "backslashreplace"))
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:  # os.write may write part of it (a disk filling up)
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise self._error(exc, "cannot write") from None
        self._good += len(data)
        self.rows += 1

    def commit(self) -> None:
        """Flush and move the file into place."""
        if self._stdout is not None:
            stdout, self._stdout = self._stdout, None
            try:
                stdout.flush()
            except BrokenPipeError:
                raise
            except OSError as exc:
                raise self._error(exc, "cannot write") from None
            return
        if self._fd is None or self._tmp is None or self.path is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.close(fd)
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self._drop_temp()
            raise self._error(exc, "cannot write") from None
        self._tmp = None

    def close_partial(self) -> int:
        """Keep the whole rows written so far at the output path; returns their number.

        For a run that stopped on an exception. Never raises: a row cut short by a full disk
        is truncated away, and when nothing was written (or the rename fails) the temp file
        is removed and an existing output file is left as it was (then 0 is returned).
        """
        if self._stdout is not None:
            with contextlib.suppress(OSError, ValueError):
                self._stdout.flush()
            self._stdout = None
            return self.rows
        fd, self._fd = self._fd, None
        if fd is None or self._tmp is None or self.path is None:
            return 0
        kept = self.rows
        try:
            os.ftruncate(fd, self._good)
        except OSError:
            kept = 0
        with contextlib.suppress(OSError):
            os.close(fd)
        if kept:
            try:
                os.replace(self._tmp, self.path)
            except OSError:
                kept = 0
            else:
                self._tmp = None
        self._drop_temp()
        return kept

    def discard(self) -> None:
        """Drop everything written to the temp file; the output path is left untouched."""
        self._stdout = None
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._drop_temp()

    def _drop_temp(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None

    def _error(self, exc: OSError, doing: str) -> OutputError:
        """The sentence a user needs: which file, the OS's reason, where the answers are."""
        where = f"--output {self.path}" if self.path else "the results to stdout"
        reason = exc.strerror or str(exc)
        if self.db and self.run_name:
            how = (f"`throttlepool export {self.run_name} --db {self.db} -o PATH` writes them "
                   "elsewhere")
        else:
            how = "`throttlepool export RUN --db PATH` writes them"
        kept = (f"{self.rows} rows were written; the answers are kept in the checkpoint: "
                f"{how}")
        if self.db == "":
            kept = f"{self.rows} rows were written; no checkpoint was kept (--no-db)"
        return OutputError(f"{doing} {where}: {reason}; {kept}")


_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def missing_dir_note(path: str) -> str:
    """`` (the directory D does not exist)`` when that is why ``path`` cannot be created."""
    directory = os.path.dirname(os.path.abspath(path))
    return "" if os.path.isdir(directory) else f" (the directory {directory} does not exist)"


def temp_name(path: str) -> str:
    """``.NAME.<host>-<pid>.`` : the prefix of this process's temp files for ``path``."""
    return f".{os.path.basename(path)}.{_HOST}-{os.getpid()}."


def create_temp(path: str) -> tuple[int, str]:
    """A new temp file next to ``path`` (stale ones of dead writers removed first)."""
    remove_stale_temps(path)
    return tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                            prefix=temp_name(path), suffix=".tmp")


def remove_stale_temps(path: str) -> list[str]:
    """Remove temp files of ``path`` left by writers on this host that no longer run.

    Only names this scheme made on this host are considered: a live process's file (any
    other writer, on this host or another sharing the directory) is never touched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(re.escape(f".{os.path.basename(path)}.{_HOST}-") + r"(\d+)\.\w+\.tmp")
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as exc:  # EPERM: it exists, owned by someone else
        return exc.errno != errno.ESRCH
    return True

