"""A planned response, and the small helpers that build and describe one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_JSON = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps(**kw) builds one per call
_SCRIPT_FIELDS = frozenset({"status", "headers", "body", "delay", "reset", "break_after",
                            "error_after"})


@dataclass(slots=True)
class Plan:
    """What to send back for one request, decided before any sleeping is done."""

    status: int
    headers: dict[str, str]
    body: bytes
    delay: float = 0.0
    reset: bool = False  # close the socket without answering
    digest: int | None = None  # identifies the request body, for duplicate counting
    counted: bool = True  # an API request (admin endpoints are not counted)
    events: list[bytes] | None = None  # a stream: sent one chunk each, after the headers
    first_delay: float = 0.0  # before the first event (time to first token)
    interval: float = 0.0  # before each later event
    break_after: int | None = None  # drop the connection after this many events (or half
    # of a plain body)
    error_event: bytes | None = None  # ... or, a stream, end it with this event instead


def encode(status: int, headers: dict[str, str], body: Any) -> Plan:
    """A Plan with `body` serialised: JSON for objects, text/html or text/plain for strings."""
    if isinstance(body, bytes | str):
        raw = body.encode() if isinstance(body, str) else body
        ctype = "text/html; charset=utf-8" if raw.lstrip().startswith(b"<") else "text/plain"
    else:
        raw = _JSON.encode(body).encode()
        ctype = "application/json"
    hdrs = {"content-type": ctype}
    hdrs.update(headers)
    return Plan(status, hdrs, raw)


def key_labels(keys: list[str]) -> dict[str, str]:
    """Printable labels for API keys: short ones as they are, long ones redacted."""
    # Stats are printed and served over HTTP; never echo a long (possibly real) key in full.
    labels: dict[str, str] = {}
    taken: set[str] = set()
    for key in keys:
        label = key if len(key) <= 16 else f"{key[:3]}...{key[-4:]}"
        if label in taken:
            label += "#" + hashlib.sha256(key.encode()).hexdigest()[:8]
        taken.add(label)
        labels[key] = label
    return labels


def validate_step(step: Mapping[str, Any]) -> dict[str, Any]:
    """Check one /__script step and normalise it; raises ValueError."""
    unknown = set(step) - _SCRIPT_FIELDS
    if unknown:
        raise ValueError(f"unknown script step fields {sorted(unknown)}")
    status = step.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"script status must be an HTTP status code, got {status!r}")
    headers = step.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise ValueError("script headers must be a mapping")
    delay = step.get("delay", 0.0)
    if not isinstance(delay, int | float) or delay < 0:
        raise ValueError(f"script delay must be a number >= 0, got {delay!r}")
    for name in ("break_after", "error_after"):
        n = step.get(name)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError(f"script {name} must be an int >= 0, got {n!r}")
    out = dict(step)
    out.update(
        status=status,
        headers={str(k).lower(): str(v) for k, v in headers.items()},
        delay=float(delay),
    )
    return out
