"""What the provider adapters share: error bodies to verdicts, server hints, JSON-able values.

Classification reads structured fields only (status, headers, the error body's ``code``,
``type``, ``message`` and ``details``), never ``str(exc)``, whose format changes between SDK
versions.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import urllib.parse
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from ..classify import (
    ErrorKind,
    Verdict,
    classify_status,
    endpoint_url,
    host_port,
    is_connection_error,
    is_timeout,
    status_of,
    transport_verdict,
)
from ..errors import ConfigError, MissingExtra
from ..hints import (
    RateInfo,
    rate_info_from_headers,
    retry_after_from_headers,
    retry_delay_from_body,
    retry_delay_from_message,
)
from ..outcome import Usage
from ..store.codec import to_jsonable as codec_to_jsonable
from .structured import classify_answer, json_answer
from .tokens import usage_from

#: OpenAI 429 codes/types that mean billing or spend limits: no retry can succeed.
QUOTA_CODES = frozenset({
    "insufficient_quota", "credit_balance_exhausted", "organization_spend_limit_exceeded",
    "project_spend_limit_exceeded", "organization_usage_limit_exceeded",
})

Extract = str | Callable[[Any], Any] | None

_ZERO_LIMIT_RE = re.compile(r"\blimit: 0(?![\d.])")


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header by case-insensitive name from any mapping (plain dicts included)."""
    if not headers:
        return None
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def require(module: str, package: str, extra: str) -> ModuleType:
    """Import an optional SDK or raise :class:`MissingExtra` with the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(package, extra) from exc


def error_object(body: Any) -> Mapping[str, Any]:
    """The inner ``error`` object of an OpenAI or Google error body (or the body itself)."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            return inner
    return {}


def _daily_quota(err: Mapping[str, Any]) -> bool:
    """Gemini: a per-day quota, or a quota of zero (free tier switched off) was hit."""
    details = err.get("details")
    for d in details if isinstance(details, list) else ():
        if not isinstance(d, Mapping) or not str(d.get("@type", "")).endswith("QuotaFailure"):
            continue
        for v in d.get("violations") or ():
            if not isinstance(v, Mapping):
                continue
            if "PerDay" in str(v.get("quotaId", "")) or str(v.get("quotaValue", "")) == "0":
                return True
    message = err.get("message")
    return isinstance(message, str) and _ZERO_LIMIT_RE.search(message) is not None


def server_hint(
    headers: Mapping[str, str] | None, body: Any = None, message: str | None = None
) -> float | None:
    """The server's suggested wait, by PROVIDERS.md §8 precedence; None when it gave none."""
    hint = retry_after_from_headers(headers)
    if hint is not None:
        return hint
    info = rate_info_from_headers(headers)
    resets = [
        reset for remaining, reset in (
            (info.remaining_requests, info.reset_requests),
            (info.remaining_tokens, info.reset_tokens),
        ) if remaining is not None and remaining <= 0 and reset is not None
    ]
    if resets:
        return max(resets)
    hint = retry_delay_from_body(body)
    if hint is not None:
        return hint
    err = error_object(body)
    text = err.get("message") if isinstance(err.get("message"), str) else message
    return retry_delay_from_message(text)


def classify_http(
    status: int,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    *,
    message: str | None = None,
    code: Any = None,
    type_: Any = None,
) -> Verdict:
    """The verdict for an HTTP error response, reading OpenAI and Gemini error bodies."""
    err = error_object(body)
    code = code if code is not None else err.get("code")
    type_ = type_ if type_ is not None else err.get("type")
    text = err.get("message") if isinstance(err.get("message"), str) else message or ""
    if status in (401, 403):
        return Verdict(ErrorKind.FATAL, None, f"{status} not authorized")
    if code in QUOTA_CODES or type_ in QUOTA_CODES:
        return Verdict(ErrorKind.FATAL, None, f"{status} quota exhausted ({code or type_})")
    if status == 429 and str(text).lstrip().startswith("Request too large"):
        return Verdict(ErrorKind.PERMANENT, None, "429 request too large for the token limit")
    if status == 429 and _daily_quota(err):
        return Verdict(ErrorKind.FATAL, None, "429 daily quota exhausted")
    hint = server_hint(headers, body, text)
    verdict = classify_status(status, hint)
    should_retry = header(headers, "x-should-retry")
    if should_retry == "false" and verdict.retryable:
        return Verdict(ErrorKind.PERMANENT, None, f"{status} and the server said not to retry")
    if should_retry == "true" and verdict.kind is ErrorKind.PERMANENT:
        return Verdict(ErrorKind.TRANSIENT, hint, f"{status} and the server said to retry")
    return verdict


def classify_transport(exc: BaseException) -> Verdict | None:
    """Timeouts, connection errors and exhausted inner retries; None if ``exc`` is none of them.

    A failure to open the connection names its address (``Verdict.unreachable``).
    """
    verdict = transport_verdict(exc)
    if verdict is not None:
        return verdict
    if any(cls.__name__ == "RetryError" for cls in type(exc).__mro__):
        # google.api_core / urllib3 retries ran out inside the client: the cause was transient.
        return Verdict(ErrorKind.TRANSIENT, None, "client retries exhausted")
    return None


def classify_setup(exc: BaseException) -> Verdict | None:
    """A setting this process lacks (no key on a worker, an SDK not installed): stop the run.

    Every later call would fail the same way; the error's message names the setting. An
    :class:`~throttlepool.adapters.structured.InvalidAnswer` is INVALID_OUTPUT.
    """
    if isinstance(exc, (ConfigError, MissingExtra)):
        return Verdict(ErrorKind.FATAL, None, str(exc))
    return classify_answer(exc)  # and a JSON answer that is not what was asked for


def classify_stainless(exc: BaseException, sdk: ModuleType) -> Verdict | None:
    """The errors of a Stainless-generated SDK (``openai``, ``anthropic``); None for others.

    Both share one exception tree: ``APIStatusError`` (status, headers, body, ``code``,
    ``type``), ``APIConnectionError`` (``APITimeoutError`` included) and
    ``APIResponseValidationError``.
    """
    if isinstance(exc, sdk.APIStatusError):
        return classify_http(
            exc.status_code, exc.response.headers, exc.body,
            message=getattr(exc, "message", None), code=getattr(exc, "code", None),
            type_=getattr(exc, "type", None),
        )
    if isinstance(exc, sdk.APIConnectionError):
        timeout = isinstance(exc, sdk.APITimeoutError)
        return classify_transport(exc) or Verdict(
            ErrorKind.TRANSIENT, None, "timeout" if timeout else "connection error")
    if isinstance(exc, sdk.APIResponseValidationError):
        return Verdict(ErrorKind.PERMANENT, None, "response did not match the schema")
    return None


def stainless_rate_info(exc: BaseException) -> RateInfo | None:
    """Rate-limit headers (and the body's hint) of a Stainless SDK's failed call."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    return rate_info_with_hint(headers, server_hint(headers, getattr(exc, "body", None)))


def public_url(url: str) -> str:
    """The URL without credentials or query string, which may hold a key."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def connect_timeout(timeout: float) -> float:
    """The connect phase's share of a call's ``timeout``, for clients that can set it apart.

    The runner cuts a call off at ``timeout`` with a bare ``CallTimeout``, which says
    nothing of where; a connect that gives up first raises the client's connect timeout,
    which names the host that never accepted (a blackholed address stops the run).
    """
    return timeout * 0.8


def name_endpoint(exc: BaseException) -> None:
    """Make a transport error's message name the URL it was raised for, in place.

    ``APIConnectionError: Connection error.`` says nothing of where; the same error then reads
    ``Connection error (http://127.0.0.1:9/v1/chat/completions)``. A message that already
    names ``host:port`` is left alone; the URL loses any user:password and query string.
    """
    if status_of(exc) is not None or not (is_connection_error(exc) or is_timeout(exc)):
        return
    url = endpoint_url(exc)
    if url is None:
        return
    try:
        shown = public_url(url)
    except ValueError:
        return
    text, address = str(exc), host_port(url)
    if (address and address in text) or (exc.args and not isinstance(exc.args[0], str)):
        return
    named = f"{text.rstrip('. ')} ({shown})" if text.strip() else shown
    try:
        exc.args = (named, *exc.args[1:])
        if isinstance(getattr(exc, "message", None), str):
            exc.message = named  # type: ignore[attr-defined]  # openai's APIError keeps one
    except (AttributeError, TypeError):  # an exception type that forbids it: keep it as is
        pass


def rate_info_with_hint(headers: Mapping[str, str] | None, hint: float | None) -> RateInfo | None:
    """Rate headers plus the best hint (which may come from the body); None when empty."""
    info = rate_info_from_headers(headers)
    if hint is not None and info.retry_after is None:
        info = dataclasses.replace(info, retry_after=hint)
    return None if info.empty else info


def sdk_plain(value: Any) -> Any:
    """An SDK response as plain data, before the checkpoint's own JSON encoding.

    What the store's encoder does not know: google-genai's raw HTTP headers (not part of the
    answer), fields left unset (``None``), proto-plus messages and numpy arrays.
    """
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic: openai, anthropic and google-genai responses
        exclude = {"sdk_http_response"} if hasattr(value, "sdk_http_response") else None
        return dump(mode="json", exclude_none=True, exclude=exclude)
    if not isinstance(value, Mapping):
        to_dict = getattr(type(value), "to_dict", None)
        if callable(to_dict) and not callable(getattr(value, "to_dict", None)):
            return to_dict(value)  # proto-plus messages: a class-level to_dict only
        tolist = getattr(value, "tolist", None)
        if callable(tolist):  # numpy arrays
            return tolist()
    return value


def to_jsonable(value: Any) -> Any:
    """A JSON-serialisable copy of an SDK response or plain value (the checkpoint's encoder,
    :func:`throttlepool.store.codec.to_jsonable`, after :func:`sdk_plain`)."""
    try:
        return codec_to_jsonable(sdk_plain(value))
    except TypeError as exc:
        raise TypeError(f"{exc}; pass extract= to keep part of the response") from None


def make_extractor(
    extract: Extract, named: Mapping[str, Callable[[Any], Any]], schema: Any = None,
    usage_of: Callable[[Any], Usage | None] = usage_from,
) -> Callable[[Any], Any] | None:
    """Resolve ``extract=``: None (the SDK value), a callable, ``"json"``, ``"response"`` or a
    named field. ``usage_of`` reads a response's usage as the adapter's calls report it: a
    rejected JSON answer's usage is counted with it (billed all the same).

    Where the adapter knows the answer's text (``named["text"]``), ``"json"`` parses the
    model's JSON answer and checks it against ``schema`` (which implies ``"json"``); else
    it is the whole value made JSON-able, which ``"response"`` always is.
    """
    if schema is not None:
        if extract not in (None, "json"):
            raise ConfigError(f"schema= applies to extract='json', not extract={extract!r}")
        if "text" not in named:
            raise ConfigError("schema= needs an adapter that reads a model's text answer")
        extract = "json"
    if extract is None:
        return None
    if callable(extract):
        return extract
    if extract == "json":
        if "text" in named:
            return json_answer(named["text"], schema, usage_of)
        return to_jsonable
    if extract == "response":
        return to_jsonable
    try:
        return named[extract]
    except KeyError:
        choices = ", ".join(sorted({*named, "json", "response"}))
        raise ValueError(f"unknown extract {extract!r}; choose one of {choices}") from None


# Request options that carry credentials or transport settings, not the work requested.
_NOT_IDENTITY = frozenset({
    "api_key", "headers", "extra_headers", "extra_query", "http_options", "timeout",
    "request_options",
})


def jsonable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for ``identity()``: JSON-able, unconvertible values named by type, and
    without headers, keys or transport options (which may hold credentials)."""
    out: dict[str, Any] = {}
    for key, value in sorted(params.items()):
        if key in _NOT_IDENTITY:
            continue
        try:
            out[key] = to_jsonable(value)
        except TypeError:
            out[key] = f"<{type(value).__name__}>"
    return out
