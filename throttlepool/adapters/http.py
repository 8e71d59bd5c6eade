"""Any JSON-over-HTTP API through ``requests``, with one ``Session`` per worker thread.

``requests.Session`` is not documented as thread-safe and its connection pool is sized for
one thread, so each worker gets its own. No urllib3 ``Retry`` is mounted: it would sleep
inside the call, invisible to the rate limiter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import requests

from ..classify import ErrorKind, Verdict, default_classifier
from ..hints import RateInfo
from ..limiter.limits import Cost
from .base import Adapter, CallResult
from .common import (
    Extract,
    classify_http,
    classify_setup,
    classify_transport,
    connect_timeout,
    jsonable_params,
    make_extractor,
    name_endpoint,
    public_url,
    rate_info_with_hint,
    server_hint,
)
from .tokens import Tokenizer, count_tokens, first_number, usage_from

_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "maxOutputTokens")


def _response_body(response: Any) -> Any:
    """The JSON body of a response, its text if not JSON, None if empty."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _result(value: Any) -> Any:
    return value.get("result") if isinstance(value, Mapping) else value


class HttpAdapter(Adapter[Any]):
    """Sends each item as a JSON request to ``url`` and returns the decoded JSON reply.

    A dict item is the JSON body (merged over ``default_body``); any other item is put in the
    ``prompt_field`` of the body. ``headers`` (e.g. ``Authorization``) go on every request and
    never into ``identity()``. Non-2xx replies raise ``requests.HTTPError`` carrying the
    response, so status, headers and body classify the error.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        session_factory: Callable[[], Any] | None = None,
        prompt_field: str = "prompt",
        extract: Extract = None,
        output_reserve: int = 0,
        tokenizer: Tokenizer | None = None,
        body: Mapping[str, Any] | None = None,
        **default_body: Any,
    ) -> None:
        self.url = url
        self.method = method.upper()
        self._headers = dict(headers or {})
        self._factory: Callable[[], Any] = session_factory or requests.Session
        self.prompt_field = prompt_field
        # body: fields named like this constructor's arguments (method, url), e.g. the CLI's -p.
        self.default_body = {**default_body, **(body or {})}
        self.output_reserve = output_reserve
        self._tokenizer = tokenizer
        self._extract = make_extractor(extract, {"result": _result})
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._lock = threading.Lock()

    def session(self) -> Any:
        """This thread's session, created on first use."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._factory()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every session this adapter opened."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        # Sent to Dask workers: sessions and locks stay behind; each worker opens its own.
        state = self.__dict__.copy()
        for name in ("_local", "_sessions", "_lock"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
        self._sessions = []
        self._lock = threading.Lock()

    def identity(self) -> Mapping[str, Any]:
        """Method, URL (no query or credentials) and default body; never the headers."""
        return {
            "provider": self.name,
            "method": self.method,
            "url": public_url(self.url),
            "params": jsonable_params(self.default_body),
        }

    def body(self, item: Any) -> dict[str, Any]:
        """The JSON body one call sends for ``item``."""
        body = dict(self.default_body)
        if isinstance(item, Mapping):
            body.update(item)
        else:
            body[self.prompt_field] = item
        return body

    def estimate(self, item: Any) -> Cost:
        """Prompt tokens of the body's text plus its output limit (``max_tokens``...)."""
        body = self.body(item)
        output = first_number(body, *_OUTPUT_FIELDS)
        prompt = count_tokens(
            {k: v for k, v in body.items() if k not in _OUTPUT_FIELDS}, tokenizer=self._tokenizer
        )
        reserved = output if output is not None else self.output_reserve
        return Cost(1.0, prompt + reserved, reserved)

    def call(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """One request; raises ``requests.HTTPError`` (with ``.response``) on 4xx/5xx."""
        body = self.body(item)
        send: dict[str, Any] = {"params": body} if self.method in ("GET", "DELETE") else {
            "json": body}
        # (connect, read): a host that never accepts fails as a connect timeout, naming it.
        limits = None if timeout is None else (connect_timeout(timeout), timeout)
        try:
            response = self.session().request(
                self.method, self.url, headers=self._headers, timeout=limits, **send
            )
        except Exception as exc:
            name_endpoint(exc)
            raise
        response.raise_for_status()
        value = _response_body(response)
        rate = rate_info_with_hint(response.headers, None)
        result = self._extract(value) if self._extract is not None else value
        return CallResult(result, usage_from(value), rate)

    def classify(self, exc: BaseException) -> Verdict:
        """By status and body (OpenAI/Gemini error formats understood); transport errors retry."""
        setup = classify_setup(exc)
        if setup is not None:
            return setup
        response: Any = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return classify_http(status, response.headers, _response_body(response))
        transport = classify_transport(exc)
        if transport is not None:
            return transport
        if isinstance(exc, requests.RequestException):
            # InvalidURL, MissingSchema, InvalidHeader...: the request itself is wrong.
            return Verdict(ErrorKind.PERMANENT, None, type(exc).__name__)
        return default_classifier(exc)

    def rate_info(self, exc: BaseException) -> RateInfo | None:
        """Rate-limit headers of a failed call, with a body hint when no header gave one."""
        response = getattr(exc, "response", None)
        if response is None:
            return None
        headers = response.headers
        return rate_info_with_hint(headers, server_hint(headers, _response_body(response)))
