"""The one result row shape, shared by ``run -o`` and ``export`` (docs/output.md).

A row is ``index, line, <the input's own fields>, status, output, error_type, error, attempts,
latency, ttft, input_tokens, output_tokens, cost_usd, started, finished``: the same columns in
JSONL
and CSV.
An input field named like a result column is renamed ``input.NAME``; a record that is a plain
string (a text line, a JSONL string) is the column ``input``. Times are ISO-8601 UTC.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterator, Mapping
from typing import IO, Any

from .._inputs import BadRecord, Records
from ..errors import InputError
from ..outcome import Outcome, Status
from .codec import error_message, error_type_name, to_jsonable
from .keys import KeyMaker

LEAD_COLUMNS = ("index", "line")
RESULT_COLUMNS = ("status", "output", "error_type", "error", "attempts", "latency", "ttft",
                  "input_tokens", "output_tokens", "cost_usd", "started", "finished")
RESERVED = frozenset(LEAD_COLUMNS + RESULT_COLUMNS)
STATUSES = tuple(s.value for s in Status)


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO-8601 UTC with milliseconds, e.g. ``2025-01-01T12:00:00.250+00:00``."""
    if seconds is None:
        return None
    moment = _dt.datetime.fromtimestamp(float(seconds), _dt.UTC)
    return moment.isoformat(timespec="milliseconds")


def column_name(field: str) -> str:
    """The column of an input field: its own name, or ``input.NAME`` if a result column has it."""
    return f"input.{field}" if field in RESERVED else field


def columns(input_fields: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Every column of a row, in order, for inputs with these (already renamed) fields."""
    return [*LEAD_COLUMNS, *input_fields, *RESULT_COLUMNS]


def plain(value: Any) -> Any:
    """``value`` as JSON types; what has no JSON form is shown by its repr."""
    try:
        return to_jsonable(value)
    except TypeError:
        return repr(value)


def result_fields(status: str, *, value: Any = None, error_type: str | None = None,
                  error: str | None = None, attempts: int = 0, latency: float | None = None,
                  input_tokens: int | None = None, output_tokens: int | None = None,
                  cost: float | None = None, finished: float | None = None,
                  ttft: float | None = None) -> dict[str, Any]:
    """The result columns; ``started`` is ``finished - latency`` as in the checkpoint;
    ``cost_usd`` null where the cost is unknown (never 0 for "unknown"); ``ttft`` null
    unless the answer was streamed."""
    started = None if finished is None else finished - float(latency or 0.0)
    return {
        "status": status,
        "output": value if status == Status.OK.value else None,
        "error_type": error_type,
        "error": error,
        "attempts": attempts,
        "latency": None if latency is None else round(float(latency), 3),
        "ttft": None if ttft is None else round(float(ttft), 3),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost,
        "started": iso_time(started),
        "finished": iso_time(finished),
    }


def outcome_fields(outcome: Outcome[Any], finished: float | None) -> dict[str, Any]:
    """The result columns of an outcome; its error as the checkpoint stores it (redacted)."""
    usage = outcome.usage
    error = outcome.error
    return result_fields(
        outcome.status.value,
        value=plain(outcome.value) if outcome.status is Status.OK else None,
        error_type=None if error is None else error_type_name(error),
        error=None if error is None else error_message(error),
        attempts=outcome.attempts,
        latency=outcome.latency if outcome.status is not Status.NOT_ATTEMPTED else None,
        input_tokens=usage.input_tokens if usage else None,
        output_tokens=usage.output_tokens if usage else None,
        cost=outcome.cost, finished=finished, ttft=outcome.ttft)


def stored_fields(item: Mapping[str, Any]) -> dict[str, Any]:
    """The result columns of a checkpoint ``items`` row (``value`` still JSON text)."""
    value = json.loads(item["value"]) if item["value"] is not None else None
    return result_fields(
        item["status"], value=value, error_type=item["error_type"],
        error=item["error_message"], attempts=item["attempts"] or 0,
        latency=item["latency"], input_tokens=item["input_tokens"],
        output_tokens=item["output_tokens"], cost=item.get("cost"), finished=item["finished"],
        ttft=item.get("ttft"))


def csv_cell(value: Any) -> Any:
    """A CSV cell: empty for null, plain text for strings and numbers, JSON for the rest."""
    if value is None:
        return ""
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    return json.dumps(value, ensure_ascii=False)


class InputRows:
    """The line number, own fields and request of each input record, by index, read alongside
    a run or an export (a second reader of the same file: the checkpoint keeps no input).

    Indexes are asked for in increasing order; asking for an earlier one reads again.
    """

    def __init__(self, records: Records) -> None:
        self.records = records
        self._iter: Iterator[tuple[int, int, dict[str, Any], Any]] | None = None
        self._last = -1
        self._columns: list[str] | None = None

    def columns(self) -> list[str]:
        """The input-field columns: every field of every record, in first-seen order."""
        if self._columns is None:
            seen: dict[str, None] = {}
            for _, _, fields, _ in self._read():
                for name in fields:
                    seen.setdefault(name, None)
            self._columns = list(seen)
        return self._columns

    def at(self, index: int) -> tuple[int | None, dict[str, Any], Any]:
        """``(line, fields, request)`` of the record at ``index``; ``(None, {}, None)`` past
        the end of the input."""
        if self._iter is None or index <= self._last:
            self._iter = self._read()
            self._last = -1
        for i, line, fields, request in self._iter:
            self._last = i
            if i == index:
                return line, fields, request
        self._iter = None
        return None, {}, None

    def _read(self) -> Iterator[tuple[int, int, dict[str, Any], Any]]:
        records = self.records
        with records._open() as fh:  # the same file (stdin: its spooled copy) Records reads
            raw = _raw_records(records.format, fh)
            here: tuple[int, Any] = (0, None)
            for index, (line, request) in enumerate(records.lines()):
                while here[0] < line:
                    here = next(raw, (line, None))
                fields = {} if isinstance(request, InputError) else _fields(here[1])
                yield index, line, fields, request


def _raw_records(fmt: str, fh: IO[str]) -> Iterator[tuple[int, Any]]:
    """``(first line, record as read)`` of every line or CSV row that can hold a record."""
    if fmt == "csv":
        import csv

        reader = csv.DictReader(fh)
        _ = reader.fieldnames  # reads the header
        line = reader.line_num
        for row in reader:
            yield line + 1, {k: v for k, v in row.items() if k is not None}
            line = reader.line_num
        return
    for line_no, text in enumerate(fh, 1):
        text = text.removeprefix("\ufeff").rstrip("\r\n")
        if not text.strip():
            continue
        if fmt == "text":
            yield line_no, text
            continue
        try:
            yield line_no, json.loads(text)
        except (ValueError, RecursionError):
            yield line_no, None


def _fields(record: Any) -> dict[str, Any]:
    if isinstance(record, dict):
        return {column_name(str(k)): v for k, v in record.items()}
    if isinstance(record, str):
        return {"input": record}
    return {}


def mismatched_lines(inputs: InputRows, identity: Mapping[str, Any],
                     stored: Mapping[int, str]) -> list[int]:
    """Lines of ``inputs`` whose request does not hash to the key the run stored at that index:
    the file changed since the run, or it is another run's input."""
    key = KeyMaker(identity)
    lines: list[int] = []
    for index, line, _, request in inputs._read():
        want = stored.get(index)
        if want is None or isinstance(request, InputError | BadRecord):
            continue
        if key(request) != want:
            lines.append(line)
    return lines
