"""The default classifier: HTTP statuses, hints, timeouts and connection errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import requests

from throttlepool.classify import (
    ErrorKind,
    Verdict,
    classify_status,
    default_classifier,
    headers_of,
    is_connection_error,
    is_timeout,
    retry_on,
    status_of,
)
from throttlepool.errors import CallTimeout


class Response:
    def __init__(self, status_code: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status_code
        self.headers = headers or {}


class HTTPStatusError(Exception):
    def __init__(self, status_code: int | None = None, **kw: Any) -> None:
        super().__init__(f"status {status_code}")
        if status_code is not None:
            self.status_code = status_code
        for k, v in kw.items():
            setattr(self, k, v)


def test_status_from_attribute_response_and_code() -> None:
    assert status_of(HTTPStatusError(429)) == 429
    assert status_of(HTTPStatusError(response=Response(503))) == 503
    assert status_of(HTTPStatusError(code=404)) == 404
    assert status_of(HTTPStatusError(code="rate_limit_exceeded")) is None
    assert status_of(HTTPStatusError(code=True)) is None  # a bool is not a status
    assert status_of(HTTPStatusError(code=12345)) is None
    assert status_of(ValueError("x")) is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, ErrorKind.RATE_LIMITED),
        (408, ErrorKind.TRANSIENT), (409, ErrorKind.TRANSIENT), (500, ErrorKind.TRANSIENT),
        (502, ErrorKind.TRANSIENT), (503, ErrorKind.TRANSIENT), (504, ErrorKind.TRANSIENT),
        (529, ErrorKind.TRANSIENT),
        (400, ErrorKind.PERMANENT), (404, ErrorKind.PERMANENT), (422, ErrorKind.PERMANENT),
        (401, ErrorKind.FATAL), (403, ErrorKind.FATAL),
    ],
)
def test_status_classes(status: int, kind: ErrorKind) -> None:
    assert default_classifier(HTTPStatusError(status)).kind is kind
    assert classify_status(status).kind is kind
    assert default_classifier(HTTPStatusError(status)).retryable == (
        kind in (ErrorKind.RATE_LIMITED, ErrorKind.TRANSIENT))


def test_429_carries_the_servers_hint() -> None:
    exc = HTTPStatusError(429, response=Response(429, {"retry-after": "7"}))
    verdict = default_classifier(exc)
    assert verdict == Verdict(ErrorKind.RATE_LIMITED, 7.0, verdict.reason)
    exc_ms = HTTPStatusError(429, response=Response(429, {"retry-after-ms": "644",
                                                          "Retry-After": "1"}))
    assert default_classifier(exc_ms).retry_after == 0.644
    plain = HTTPStatusError(503)
    assert default_classifier(plain).retry_after is None
    assert headers_of(HTTPStatusError(429, headers={"retry-after": "2"})) == {"retry-after": "2"}


def test_requests_exceptions_by_class() -> None:
    assert default_classifier(requests.exceptions.ReadTimeout()).kind is ErrorKind.TRANSIENT
    assert is_timeout(requests.exceptions.ConnectTimeout())
    conn = requests.exceptions.ConnectionError("refused")
    assert is_connection_error(conn)
    assert default_classifier(conn).kind is ErrorKind.TRANSIENT
    assert default_classifier(requests.exceptions.ChunkedEncodingError()).kind is (
        ErrorKind.TRANSIENT)
    # An HTTPError carries its response: classified by its status.
    resp = requests.models.Response()
    resp.status_code = 401
    assert default_classifier(requests.exceptions.HTTPError(response=resp)).kind is (
        ErrorKind.FATAL)
    resp429 = requests.models.Response()
    resp429.status_code = 429
    resp429.headers["Retry-After"] = "3"
    verdict = default_classifier(requests.exceptions.HTTPError(response=resp429))
    assert (verdict.kind, verdict.retry_after) == (ErrorKind.RATE_LIMITED, 3.0)


def test_httpx_exceptions_by_class() -> None:
    request = httpx.Request("GET", "https://example.invalid")
    assert default_classifier(httpx.ReadTimeout("slow", request=request)).kind is (
        ErrorKind.TRANSIENT)
    assert default_classifier(httpx.ConnectError("down", request=request)).kind is (
        ErrorKind.TRANSIENT)
    response = httpx.Response(503, request=request)
    err = httpx.HTTPStatusError("boom", request=request, response=response)
    assert default_classifier(err).kind is ErrorKind.TRANSIENT


@pytest.mark.parametrize(
    "exc",
    [TimeoutError(), CallTimeout("slow"), ConnectionResetError(),
     ConnectionRefusedError(), BrokenPipeError(), ConnectionError()],
)
def test_stdlib_timeouts_and_connection_errors_are_transient(exc: BaseException) -> None:
    assert default_classifier(exc).kind is ErrorKind.TRANSIENT


@pytest.mark.parametrize("exc", [ValueError("bad"), KeyError("k"), TypeError(), RuntimeError()])
def test_anything_else_is_permanent(exc: BaseException) -> None:
    verdict = default_classifier(exc)
    assert verdict.kind is ErrorKind.PERMANENT
    assert not verdict.retryable
    assert type(exc).__name__ in verdict.reason


def test_retry_on_adds_types_and_keeps_defaults() -> None:
    classify = retry_on(KeyError)
    assert classify(KeyError("x")).kind is ErrorKind.TRANSIENT
    assert classify(HTTPStatusError(401)).kind is ErrorKind.FATAL
    assert classify(ValueError()).kind is ErrorKind.PERMANENT
