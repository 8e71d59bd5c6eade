"""Decide what an error means for the run: retry it, fail the item, or stop the run.

A classifier is any ``Callable[[BaseException], Verdict]``. :func:`default_classifier`
understands exceptions that carry an HTTP status (``status_code``, ``response.status_code`` or
an integer ``code``) and the timeout and connection errors of the standard library, requests
and httpx; provider adapters add their SDK's specifics on top of it.

Provider adapters, which call one endpoint, tell a failure to *connect* (refused, unknown
host, TLS handshake, connect timeout) apart from a connection lost after the server answered
(:func:`transport_verdict`): its verdict carries the ``host:port`` it could not reach in
``Verdict.unreachable``, which lets a run that never reached the server stop early
(:mod:`throttlepool._reachability`). The default classifier does not: a plain function may
call many hosts.
"""

from __future__ import annotations

import enum
import socket
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
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
    # The call succeeded but its answer is not the JSON asked for: asked again, on a budget
    # of its own (an adapter's ``json_retries``), apart from the network retries.
    INVALID_OUTPUT = "invalid_output"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A classified error: its kind, the server's suggested wait, and a short reason.

    ``unreachable`` is the ``host:port`` a connection could not even be opened to (refused,
    unknown host, TLS handshake failed, connect timeout); None for every other error.
    """

    kind: ErrorKind
    retry_after: float | None = None
    reason: str = ""
    unreachable: str | None = None

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
# Raised before a request was sent: the connection itself could not be opened. A reset or a
# dropped connection after that (ReadError, RemoteProtocolError...) means something answered.
_CONNECT_FAILURE_NAMES = frozenset({
    "ConnectError",  # httpx / httpx2 / httpcore: refused, unknown host, TLS handshake
    "ConnectTimeout",  # httpx, requests
    "NewConnectionError", "NameResolutionError", "ConnectTimeoutError",  # urllib3
    "SSLError",  # ssl, urllib3, requests: the TLS handshake failed
    "ConnectionRefusedError", "gaierror",
})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


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


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, urllib3's ``reason``, requests' ``args[0]``."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 16:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [current.__cause__, current.__context__, getattr(current, "reason", None),
                 current.args[0] if current.args else None]
        todo.extend(e for e in inner if isinstance(e, BaseException))


def _request_url(exc: BaseException) -> str | None:
    try:  # httpx raises RuntimeError from .request when it was never set
        request = getattr(exc, "request", None)
    except RuntimeError:
        return None
    url = getattr(request, "url", None)
    return str(url) if url else None


def endpoint_url(exc: BaseException) -> str | None:
    """The URL a transport error was raised for (full, as the client had it), if it says."""
    return next((url for e in _chain(exc) if (url := _request_url(e)) is not None), None)


def host_port(url: str) -> str | None:
    """``host:port`` of a URL (the scheme's default port when none is given); never userinfo."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    port = port if port is not None else _DEFAULT_PORTS.get(parts.scheme.lower())
    host = f"[{host}]" if ":" in host else host
    return host if port is None else f"{host}:{port}"


def _pool_address(exc: BaseException) -> str | None:
    # urllib3's MaxRetryError has .pool, NewConnectionError .conn: both know host and port.
    for holder in (getattr(exc, "pool", None), getattr(exc, "conn", None)):
        host, port = getattr(holder, "host", None), getattr(holder, "port", None)
        if isinstance(host, str) and host and isinstance(port, int):
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return None


def unreachable_address(exc: BaseException) -> str | None:
    """``host:port`` when ``exc`` says a connection could not be opened to it, else None.

    Only a transport error whose chain holds a connect-phase failure counts; the address comes
    from the request URL (httpx, requests, the SDKs built on them) or urllib3's pool. A bare
    ``ConnectionRefusedError`` names no address and so is not reported.
    """
    if not (is_connection_error(exc) or is_timeout(exc) or isinstance(exc, socket.gaierror)):
        return None
    chain = list(_chain(exc))
    if not any(_mro_names(e) & _CONNECT_FAILURE_NAMES for e in chain):
        return None
    url = endpoint_url(exc)
    address = host_port(url) if url else None
    return address or next((a for e in chain if (a := _pool_address(e)) is not None), None)


def transport_verdict(exc: BaseException) -> Verdict | None:
    """TRANSIENT for a timeout or connection error, else None; for adapters of one endpoint.

    A connect failure names the address it could not reach (``Verdict.unreachable``).
    """
    address = unreachable_address(exc)
    if address is not None:
        return Verdict(ErrorKind.TRANSIENT, None, f"cannot connect to {address}", address)
    if is_timeout(exc):
        return Verdict(ErrorKind.TRANSIENT, None, "timeout")
    if is_connection_error(exc):
        return Verdict(ErrorKind.TRANSIENT, None, "connection error")
    return None


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
    # Not transport_verdict: a plain function may call many hosts, so one that cannot be
    # reached says nothing about the run; only an adapter knows its one endpoint.
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
