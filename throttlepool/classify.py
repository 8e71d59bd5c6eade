"""Decide what an error means for the run: retry it, fail the item, or stop the run.

A classifier is any ``Callable[[BaseException], Verdict]``. :func:`default_classifier`
understands exceptions that carry an HTTP status (``status_code``, ``response.status_code`` or
an integer ``code``) and the timeout and connection errors of the standard library, requests
and httpx; provider adapters add their SDK's specifics on top of it.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import CallTimeout
from .hints import retry_after_from_headers


class ErrorKind(enum.StrEnum):
    """How the runner treats an error."""

    RATE_LIMITED = "rate_limited"  # retry; a server hint pauses all dispatch
    TRANSIENT = "transient"  # retry with backoff: 5xx, 408/409, timeouts, connection errors
    PERMANENT = "permanent"  # fail this item, never retry: 400/404/422, request too large
    FATAL = "fatal"  # stop the whole run: bad credentials, exhausted quota


@dataclass(frozen=True, slots=True)
class Verdict:
    """A classified error: its kind, the server's suggested wait, and a short reason."""

    kind: ErrorKind
    retry_after: float | None = None
    reason: str = ""

    @property
    def retryable(self) -> bool:
        return self.kind in (ErrorKind.RATE_LIMITED, ErrorKind.TRANSIENT)


Classifier = Callable[[BaseException], Verdict]

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
FATAL_STATUS = frozenset({401, 403})

_TIMEOUT_NAMES = frozenset({"Timeout", "TimeoutException", "ReadTimeout", "ConnectTimeout",
                            "WriteTimeout", "PoolTimeout", "APITimeoutError", "DeadlineExceeded"})
_CONNECTION_NAMES = frozenset({"ConnectionError", "ConnectError", "RemoteProtocolError",
                               "NetworkError", "APIConnectionError", "ChunkedEncodingError",
                               "ProtocolError", "ReadError", "WriteError"})


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, if any."""
    for attr in ("status_code", "status", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    if isinstance(value, int) and 100 <= value <= 599:
        return value
    code = getattr(exc, "code", None)
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
        return code
    return None


def headers_of(exc: BaseException) -> Mapping[str, str] | None:
    """Response headers attached to an exception (``exc.response.headers`` or ``exc.headers``)."""
    response = getattr(exc, "response", None)
    headers: Any = getattr(response, "headers", None)
    if headers is None:
        headers = getattr(exc, "headers", None)
    return headers if isinstance(headers, Mapping) or hasattr(headers, "get") else None


def _mro_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def is_timeout(exc: BaseException) -> bool:
    """A timeout from the standard library, requests, httpx or an SDK."""
    return isinstance(exc, (TimeoutError, socket.timeout, CallTimeout)) or bool(
        _mro_names(exc) & _TIMEOUT_NAMES
    )


def is_connection_error(exc: BaseException) -> bool:
    """A refused, reset or broken connection from stdlib, requests, httpx or an SDK."""
    return isinstance(exc, ConnectionError) or bool(_mro_names(exc) & _CONNECTION_NAMES)


def classify_status(status: int, retry_after: float | None = None, reason: str = "") -> Verdict:
    """The verdict for a bare HTTP status."""
    if status == 429:
        return Verdict(ErrorKind.RATE_LIMITED, retry_after, reason or "429 rate limited")
    if status in RETRYABLE_STATUS or status >= 500:
        return Verdict(ErrorKind.TRANSIENT, retry_after, reason or f"{status} server error")
    if status in FATAL_STATUS:
        return Verdict(ErrorKind.FATAL, None, reason or f"{status} not authorized")
    return Verdict(ErrorKind.PERMANENT, None, reason or f"{status} rejected")


def default_classifier(exc: BaseException) -> Verdict:
    """Classify by HTTP status, then timeouts and connection errors; anything else is permanent."""
    status = status_of(exc)
    if status is not None:
        return classify_status(status, retry_after_from_headers(headers_of(exc)))
    if is_timeout(exc):
        return Verdict(ErrorKind.TRANSIENT, None, "timeout")
    if is_connection_error(exc):
        return Verdict(ErrorKind.TRANSIENT, None, "connection error")
    return Verdict(ErrorKind.PERMANENT, None, type(exc).__name__)


def retry_on(*exc_types: type[BaseException]) -> Classifier:
    """A classifier that retries the given exception types and uses the default for the rest."""

    def classify(exc: BaseException) -> Verdict:
        if isinstance(exc, exc_types):
            return Verdict(ErrorKind.TRANSIENT, None, type(exc).__name__)
        return default_classifier(exc)

    return classify
