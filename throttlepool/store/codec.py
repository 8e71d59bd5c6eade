"""Values to JSON and back, and outcomes to rows and back. JSON only: never pickle."""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import json
import math
import pathlib
import uuid
from collections.abc import Mapping
from typing import Any

from ..errors import ItemError
from ..outcome import Outcome, Source, Status, Usage
from .redact import redact_text

MAX_MESSAGE = 4000
UNENCODABLE = "throttlepool.UnencodableValue"


class StoredError(ItemError):
    """An item's error as loaded from a checkpoint: the original type name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoredError, (self.type_name, self.message))


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain JSON types; raises TypeError when there is no faithful encoding."""
    if _depth > 100:
        raise TypeError("value nests more than 100 levels deep")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise TypeError(f"float {value!r} is not valid JSON")
    d = _depth + 1
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"dict key of type {type(k).__name__} is not JSON")
            out[str(k) if not isinstance(k, str) else k] = to_jsonable(v, d)
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, d) for v in value]
    if isinstance(value, (set, frozenset)):
        return [to_jsonable(v, d) for v in sorted(value, key=repr)]
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, d)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID, pathlib.PurePath)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    dump = getattr(value, "model_dump", None)  # pydantic v2
    if callable(dump):
        return to_jsonable(dump(mode="json"), d)
    to_dict = getattr(value, "to_dict", None) or getattr(value, "dict", None)
    if callable(to_dict):
        return to_jsonable(to_dict(), d)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value), d)
    raise TypeError(f"a value of type {type(value).__qualname__} cannot be stored as JSON")


def _default(obj: Any) -> Any:
    # json.dumps calls this only for what it cannot encode itself, so plain values stay on
    # its C fast path.
    if isinstance(obj, Mapping):
        return dict(obj)
    return to_jsonable(obj)


def encode_value(value: Any) -> str:
    """JSON text of ``value``; raises TypeError/ValueError when it cannot be encoded.

    Never redacted: a value is the user's data, and a resumed run must give back exactly what
    a fresh run returned. Redaction is for error messages and settings.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      default=_default)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # An unpaired surrogate cannot be stored as UTF-8 text; JSON's \udXXX escape can,
            # and it reads back as the very same string.
            text = json.dumps(value, ensure_ascii=True, separators=(",", ":"),
                              allow_nan=False, default=_default)
    return text


def error_type_name(exc: BaseException) -> str:
    """``module.QualName`` of an exception, without the module for builtins."""
    t = type(exc)
    if isinstance(exc, StoredError):
        return exc.type_name
    if t.__module__ in ("builtins", "__main__"):
        return t.__qualname__
    return f"{t.__module__}.{t.__qualname__}"


def error_message(exc: BaseException) -> str:
    """The redacted, length-capped message of an exception."""
    msg = exc.message if isinstance(exc, StoredError) else str(exc)
    if len(msg) > MAX_MESSAGE:
        msg = msg[:MAX_MESSAGE] + "..."
    return redact_text(msg)


def outcome_row(run_id: str, outcome: Outcome[Any], finished: float) -> tuple[Any, ...]:
    """An ``items`` row (column order of ``ITEM_COLUMNS``); never raises for a bad value."""
    status = outcome.status.value
    value: str | None = None
    etype: str | None = None
    emsg: str | None = None
    if outcome.status is Status.OK:
        try:
            value = encode_value(outcome.value)
        except (TypeError, ValueError, RecursionError) as exc:
            # The row is still written (so the run knows the item was attempted), but as
            # failed: a checkpoint that cannot give the value back must not claim success.
            status = Status.FAILED.value
            etype = UNENCODABLE
            emsg = redact_text(f"the value could not be stored as JSON: {exc}")
    if outcome.error is not None:
        etype = error_type_name(outcome.error)
        emsg = error_message(outcome.error)
    usage = outcome.usage
    latency = float(outcome.latency or 0.0)
    return (
        run_id, outcome.index, outcome.key, status, value, etype, emsg, int(outcome.attempts),
        latency, usage.input_tokens if usage else None, usage.output_tokens if usage else None,
        finished - latency, finished, outcome.cost, outcome.ttft,
    )


ITEM_COLUMNS = (
    "run_id", "idx", "key", "status", "value", "error_type", "error_message", "attempts",
    "latency", "input_tokens", "output_tokens", "started", "finished", "cost", "ttft",
)


def row_outcome(row: Mapping[str, Any] | tuple[Any, ...]) -> Outcome[Any]:
    """The :class:`Outcome` of a stored ``items`` row, with source CHECKPOINT."""
    r = row if isinstance(row, Mapping) else dict(zip(ITEM_COLUMNS, row, strict=False))
    status = Status(r["status"])
    value = json.loads(r["value"]) if r["value"] is not None else None
    error: BaseException | None = None
    if r["error_type"] is not None or status is Status.FAILED:
        error = StoredError(r["error_type"] or "Error", r["error_message"] or "")
    usage = None
    if r["input_tokens"] is not None or r["output_tokens"] is not None:
        usage = Usage(r["input_tokens"] or 0, r["output_tokens"] or 0)
    return Outcome(
        index=r["idx"], item=None, status=status, value=value, error=error,
        attempts=r["attempts"] or 0, latency=r["latency"] or 0.0, usage=usage,
        source=Source.CHECKPOINT, key=r["key"], cost=r.get("cost"), ttft=r.get("ttft"),
        ended=r.get("finished"),
    )
