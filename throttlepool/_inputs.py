"""Input readers: JSONL, a CSV column, plain text lines or stdin, turned into requests.

Each record becomes one request: a prompt string, or a dict of request parameters that the
adapter sends as they are. A bad record raises :class:`~throttlepool.errors.InputError`
naming the file, line and field. :class:`Records` reads lazily and can be iterated again
(stdin is spooled to a temporary file first), so a run validates everything before its first
call and then streams the same records with bounded memory.

Input is UTF-8, with or without a byte-order mark. A JSONL record is refused (as a bad record)
when it nests deeper than :data:`MAX_DEPTH` levels or holds ``NaN``/``Infinity``, which no API
accepts; any record is refused when its request text is larger than
``InputSpec.max_record_bytes`` (:data:`MAX_RECORD_BYTES` unless raised).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import string
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from ._jsontext import nests_deeper_than, parse_json
from .errors import ConfigError, InputError

FORMATS = ("jsonl", "csv", "text")
STDIN = "-"
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
               ".txt": "text", ".text": "text"}
#: Deepest nesting of objects and arrays a JSONL record may have. Real request bodies stay
#: far below it; the checkpoint's encoder stops at 100 and json.loads at the stack's end.
MAX_DEPTH = 64
#: Largest request text (a JSONL line, a prompt) in bytes unless raised: 1 MB is about
#: 250,000 tokens, above every chat model's context, so a bigger record is a mistake.
MAX_RECORD_BYTES = 1_000_000
_BOM = "\ufeff"


def detect_format(path: str, explicit: str | None = None) -> str:
    """The input format: ``explicit`` if given, else by extension (text when unknown)."""
    if explicit:
        fmt = explicit.lower()
        if fmt not in FORMATS:
            raise ConfigError(f"unknown input format {explicit!r}; choose one of "
                              f"{', '.join(FORMATS)}")
        return fmt
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower(), "text")


class Template:
    """A prompt template with ``{field}`` placeholders filled from each record."""

    def __init__(self, text: str) -> None:
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ConfigError(f"bad --template {text!r}: {exc}") from None
        names = [name for _, name, _, _ in parsed if name is not None]
        if any(name == "" or name.isdigit() for name in names):
            raise ConfigError(f"--template {text!r}: use named placeholders like {{title}}, "
                              "not {} or {0}")
        self.text = text
        # "{a.b}" and "{a[0]}" look up field "a" first; that is the one a record may lack.
        self.fields = tuple(dict.fromkeys(n.split(".")[0].split("[")[0] for n in names))

    def render(self, record: Mapping[str, Any], source: str, line: int) -> str:
        """The prompt for ``record``; a placeholder it lacks is an InputError."""
        for name in self.fields:
            if name not in record or record[name] is None:
                raise InputError(f"the record has no value for template placeholder "
                                 f"{{{name}}}", source=source, line=line, field=name)
        try:
            return self.text.format_map(record)
        except (KeyError, IndexError, AttributeError, TypeError, ValueError) as exc:
            raise InputError(f"cannot fill the template: {exc}", source=source,
                             line=line) from None


@dataclass(frozen=True)
class InputSpec:
    """Where requests come from and how a record becomes a request."""

    path: str
    format: str | None = None
    column: str | None = None
    field: str = "prompt"
    template: str | None = None
    limit: int | None = None
    max_record_bytes: int | None = MAX_RECORD_BYTES


class BadRecord:
    """A record that could not become a request; run with ``skip_bad`` it fails as an item.

    Plain attributes (not the exception) so that checkpoint keys of bad records are stable.
    """

    def __init__(self, error: InputError) -> None:
        self.message = str(error)
        self.source = error.source
        self.line = error.line
        self.field = error.field

    def error(self) -> InputError:
        """The InputError this record stands for."""
        err = InputError("bad record", source=self.source, line=self.line, field=self.field)
        err.args = (self.message,)
        return err

    def __repr__(self) -> str:
        return f"BadRecord({self.message!r})"


class Records:
    """The requests of one input, read lazily; ``len()`` is known after :meth:`validate`."""

    def __init__(self, spec: InputSpec, *, skip_bad: bool = False,
                 stdin: IO[bytes] | None = None) -> None:
        if spec.limit is not None and spec.limit < 0:
            raise ConfigError(f"--limit must be >= 0, got {spec.limit}")
        if spec.max_record_bytes is not None and spec.max_record_bytes < 1:
            raise ConfigError(f"the record size limit must be >= 1 byte, got "
                              f"{spec.max_record_bytes}")
        self.spec = spec
        self.skip_bad = skip_bad
        self.format = detect_format(spec.path, spec.format)
        self.template = Template(spec.template) if spec.template else None
        self.name = "<stdin>" if spec.path == STDIN else spec.path
        self._stdin = stdin
        self._spool: str | None = None
        self._count: int | None = None
        if spec.path == STDIN and spec.format is None:
            self.format = "jsonl" if self._peek_stdin().lstrip()[:1] in ("{", '"') else "text"

    # -- files -----------------------------------------------------------------------------

    def _peek_stdin(self) -> str:
        path = self._spooled()
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            return fh.read(4096)

    def _spooled(self) -> str:
        if self._spool is None:
            src = self._stdin if self._stdin is not None else sys.stdin.buffer
            fd, path = tempfile.mkstemp(prefix="throttlepool-stdin-", suffix=".spool")
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out)
            self._spool = path
        return self._spool

    def _path(self) -> str:
        return self._spooled() if self.spec.path == STDIN else self.spec.path

    def _open(self) -> IO[str]:
        path = self._path()
        try:
            return open(path, encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise InputError(f"cannot read input: {exc.strerror or exc}",
                             source=self.name) from None

    def close(self) -> None:
        """Remove the spooled copy of stdin, if any."""
        if self._spool is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._spool)
            self._spool = None

    # -- records ---------------------------------------------------------------------------

    def _render(self, record: Mapping[str, Any], line: int) -> Any:
        # Returned, not raised: raising would end the reading generator at the bad record.
        assert self.template is not None
        try:
            return self.template.render(record, self.name, line)
        except InputError as exc:
            return exc

    def _too_big(self, text: str, line: int) -> InputError | None:
        limit = self.spec.max_record_bytes
        # A character is at most 4 bytes of UTF-8: most records never need encoding.
        if limit is None or len(text) * 4 <= limit:
            return None
        size = len(text.encode("utf-8", "surrogatepass"))
        if size <= limit:
            return None
        return InputError(f"the record is {size:,} bytes, more than the limit of {limit:,} "
                          "bytes for one request (raise it with --max-record-size)",
                          source=self.name, line=line)

    def _jsonl(self, fh: IO[str]) -> Iterator[tuple[int, Any]]:
        for line_no, text in enumerate(fh, 1):
            if not text.strip():
                continue
            # Files joined with `cat` carry each file's byte-order mark into a line.
            text = text.removeprefix(_BOM).rstrip("\r\n")
            record = self._too_big(text, line_no) or self._parse_json(text, line_no)
            if isinstance(record, InputError):
                yield line_no, record
            else:
                yield line_no, self._jsonl_request(record, line_no)

    def _parse_json(self, text: str, line: int) -> Any:
        """The record on ``line``, or the InputError saying why it cannot be a request."""
        deep = f"the record nests deeper than {MAX_DEPTH} levels"
        if nests_deeper_than(text, MAX_DEPTH):
            return InputError(deep, source=self.name, line=line)
        try:
            record, problem, path = parse_json(text)
        except json.JSONDecodeError as exc:
            return InputError(f"malformed JSON: {exc.msg} at column {exc.colno}",
                              source=self.name, line=line)
        except RecursionError:  # json_depth should have caught it; never a traceback
            return InputError(deep, source=self.name, line=line)
        if problem is not None:
            return InputError(problem, source=self.name, line=line, field=path or None)
        return record

    def _jsonl_request(self, record: Any, line: int) -> Any:
        field = self.spec.field
        if isinstance(record, str):
            return record if self.template is None else self._render({"text": record}, line)
        if not isinstance(record, dict):
            return InputError(f"expected a JSON object or string, got {type(record).__name__}",
                              source=self.name, line=line)
        if self.template is not None:
            return self._render(record, line)
        if field and field in record:
            prompt = record[field]
            if not isinstance(prompt, str):
                return InputError(f"the prompt must be a string, got {type(prompt).__name__}",
                                  source=self.name, line=line, field=field)
            return prompt
        return record  # a full request body, sent as the call's parameters

    def _csv(self, fh: IO[str]) -> Iterator[tuple[int, Any]]:
        # The csv module refuses cells over 128 KiB; the record size limit is ours to enforce.
        wanted = self.spec.max_record_bytes or sys.maxsize
        if csv.field_size_limit() < wanted:
            csv.field_size_limit(min(wanted, 2**31 - 1))
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        if not header:
            return
        column = self.spec.column
        if self.template is not None:
            missing = [f for f in self.template.fields if f not in header]
            if missing:
                raise InputError(f"the CSV has no column for template placeholder "
                                 f"{{{missing[0]}}} (columns: {', '.join(header)})",
                                 source=self.name, line=1, field=missing[0])
        else:
            if column is None:
                column = "prompt" if "prompt" in header or len(header) != 1 else header[0]
            if column not in header:
                raise InputError(f"the CSV has no column {column!r} (columns: "
                                 f"{', '.join(header)}); choose one with --column",
                                 source=self.name, line=1, field=column)
        line = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(f"malformed CSV: {exc}", source=self.name,
                                 line=reader.line_num) from None
            line, start = reader.line_num, line + 1
            if None in row:  # more cells than the header has columns
                yield start, InputError(f"the row has {len(header) + len(row[None])} cells, "
                                        f"the header {len(header)}", source=self.name,
                                        line=start)
                continue
            if self.template is not None:
                yield start, self._checked(self._render(row, start), start)
                continue
            assert column is not None
            value = row.get(column)
            if value is None:
                yield start, InputError(f"the row has no cell for column {column!r}",
                                        source=self.name, line=start, field=column)
                continue
            yield start, self._checked(value, start)

    def _checked(self, prompt: Any, line: int) -> Any:
        if isinstance(prompt, str):
            return self._too_big(prompt, line) or prompt
        return prompt

    def _text(self, fh: IO[str]) -> Iterator[tuple[int, Any]]:
        for line_no, text in enumerate(fh, 1):
            prompt = text.rstrip("\r\n")
            if not prompt.strip():
                continue
            if self.template is not None:
                yield line_no, self._checked(self._render({"text": prompt}, line_no), line_no)
            else:
                yield line_no, self._checked(prompt, line_no)

    def lines(self) -> Iterator[tuple[int, Any]]:
        """``(line, request)`` pairs; a bad record's request is its InputError (not raised)."""
        readers = {"jsonl": self._jsonl, "csv": self._csv, "text": self._text}
        limit = self.spec.limit
        with self._open() as fh:
            rows = readers[self.format](fh)
            n = 0
            while limit is None or n < limit:
                try:
                    line, request = next(rows)
                except StopIteration:
                    return
                except UnicodeDecodeError as exc:
                    raise self._not_utf8(exc) from None
                n += 1
                yield line, request

    def _not_utf8(self, exc: UnicodeDecodeError) -> InputError:
        """Where the text stops being UTF-8: the decoder read ahead, so look again by line."""
        with open(self._path(), "rb") as fh:
            if fh.read(2) in (b"\xff\xfe", b"\xfe\xff"):
                return InputError("the input is UTF-16 text (it starts with a UTF-16 "
                                  "byte-order mark); save it as UTF-8", source=self.name, line=1)
            fh.seek(0)
            offset = 0
            for line, raw in enumerate(fh, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as bad:
                    return InputError(f"not valid UTF-8 text ({bad.reason} at byte "
                                      f"{offset + bad.start:,} of the file)",
                                      source=self.name, line=line)
                offset += len(raw)
        return InputError(f"not valid UTF-8 text ({exc.reason})", source=self.name)

    def validate(self) -> int:
        """Read every record once; returns their number, or raises the first InputError.

        With ``skip_bad`` bad records are counted (they become failed items) instead.
        """
        count = 0
        for _, request in self.lines():
            if isinstance(request, InputError) and not self.skip_bad:
                raise request
            count += 1
        self._count = count
        return count

    def __len__(self) -> int:
        if self._count is None:
            self.validate()
        assert self._count is not None
        return self._count

    def __iter__(self) -> Iterator[Any]:
        """The requests in order (bad ones as :class:`BadRecord` when ``skip_bad``)."""
        for _, request in self.lines():
            if isinstance(request, InputError):
                if not self.skip_bad:
                    raise request
                yield BadRecord(request)
            else:
                yield request

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

