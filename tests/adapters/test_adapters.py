"""Adapters without a server: estimates, usage, hints, and classification of real SDK errors."""

from __future__ import annotations

import email.utils
import hashlib
import json
import sys
import threading
import time
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
import requests

from throttlepool.adapters import (
    CallableAdapter,
    HttpAdapter,
    as_adapter,
    load_callable,
    make_adapter,
    to_jsonable,
)
from throttlepool.adapters import tokens as tok
from throttlepool.adapters.common import classify_http, classify_transport, server_hint
from throttlepool.classify import ErrorKind
from throttlepool.errors import ConfigError, MissingExtra
from throttlepool.outcome import Usage

warnings.filterwarnings("ignore", category=FutureWarning)  # google-generativeai is deprecated

LOOPBACK = "http://127.0.0.1:9/v1"  # port 9 (discard): nothing is ever sent in this file
RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}
PER_DAY = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
    {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "50"}]}


# -- tokens ------------------------------------------------------------------------------

def test_count_tokens_reads_only_prompt_text() -> None:
    messages = [{"role": "system", "content": "abcd" * 3},
                {"role": "user", "content": [{"type": "text", "text": "abcdefgh"}]}]
    assert tok.count_tokens(messages) == 5  # 20 chars / 4; "role"/"type" values not counted
    assert tok.count_tokens("abcde") == 1  # rounded down, as servers charge (§2.5)
    assert tok.count_tokens(None) == 0
    assert tok.count_tokens(["ab", "cd"], tokenizer=len) == 4


def test_usage_from_each_shape() -> None:
    openai = pytest.importorskip("openai")
    chat = openai.types.chat.ChatCompletion.model_validate({
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
    assert tok.usage_from(chat) == Usage(7, 3)
    assert tok.usage_from({"usage": {"prompt_tokens": 4, "total_tokens": 4}}) == Usage(4, 0)
    assert tok.usage_from({"usage": {"input_tokens": 2, "output_tokens": 5}}) == Usage(2, 5)
    # Gemini: thinking tokens are in the total, not in candidates; they are billed as output.
    gemini = {"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2,
                                "totalTokenCount": 12}}
    assert tok.usage_from(gemini) == Usage(5, 7)
    assert tok.usage_from({"result": "x"}) is None


def test_tiktoken_is_never_loaded_without_a_cached_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("tiktoken")
    fake.__spec__ = types.SimpleNamespace(name="tiktoken")  # type: ignore[assignment]
    loaded: list[str] = []

    class Enc:
        def encode(self, text: str, disallowed_special: Any = ()) -> list[int]:
            return [0] * len(text.split())

    def get_encoding(name: str) -> Enc:
        loaded.append(name)
        return Enc()

    fake.get_encoding = get_encoding  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tiktoken", fake)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("THROTTLEPOOL_NO_TIKTOKEN", raising=False)
    tok.cached_tokenizer.cache_clear()
    try:
        assert tok.cached_tokenizer("cl100k_base") is None  # no cache file: no load at all
        assert loaded == []
        url = tok._TIKTOKEN_BASE + "cl100k_base.tiktoken"
        (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_text("x")
        tok.cached_tokenizer.cache_clear()
        counter = tok.cached_tokenizer("cl100k_base")
        assert counter is not None and counter("three little words") == 3
        # A load that hangs (tiktoken trying to download) is abandoned, not waited for.
        release = threading.Event()
        fake.get_encoding = lambda name: release.wait(10)  # type: ignore[attr-defined]
        monkeypatch.setattr(tok, "_LOAD_TIMEOUT", 0.2)
        tok.cached_tokenizer.cache_clear()
        start = time.monotonic()
        assert tok.cached_tokenizer("cl100k_base") is None
        assert time.monotonic() - start < 2
        release.set()
    finally:
        tok.cached_tokenizer.cache_clear()


def test_encoding_names() -> None:
    assert tok.encoding_name_for("gpt-4o-mini") == "o200k_base"
    assert tok.encoding_name_for("gpt-3.5-turbo") == "cl100k_base"
    assert tok.encoding_name_for(None) == "cl100k_base"


# -- hints and bodies ----------------------------------------------------------------------

def test_hint_precedence() -> None:
    assert server_hint({"retry-after-ms": "300", "retry-after": "5"}) == 0.3
    assert server_hint({"Retry-After": "2"}) == 2.0
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    hint = server_hint({"retry-after": date})
    assert hint is not None and 28 <= hint <= 31
    resets = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s",
              "x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "6m0s"}
    assert server_hint(resets) == 1.5  # only the exhausted dimension's reset counts
    assert server_hint({}, {"error": {"details": [RETRY_INFO]}}) == 2.5
    assert server_hint({}, {"message": "Please try again in 644ms."}) == 0.644
    assert server_hint({}, None) is None


@pytest.mark.parametrize(("status", "body", "kind"), [
    (429, {"error": {"code": "rate_limit_exceeded", "type": "requests", "message": "x"}},
     ErrorKind.RATE_LIMITED),
    (429, {"error": {"code": "insufficient_quota", "type": "insufficient_quota"}},
     ErrorKind.FATAL),
    (429, {"error": {"code": "project_spend_limit_exceeded", "type": "x"}}, ErrorKind.FATAL),
    (429, {"error": {"code": "rate_limit_exceeded", "type": "tokens",
                     "message": "Request too large for gpt-4o on tokens per min (TPM)"}},
     ErrorKind.PERMANENT),
    (429, {"error": {"code": 429, "details": [PER_DAY, RETRY_INFO]}}, ErrorKind.FATAL),
    (429, {"error": {"code": 429, "message": "Quota exceeded for metric: x, limit: 0, model: m"}},
     ErrorKind.FATAL),
    (429, {"error": {"code": 429, "message": "Quota exceeded, limit: 10, model: m"}},
     ErrorKind.RATE_LIMITED),
    (401, None, ErrorKind.FATAL), (403, None, ErrorKind.FATAL),
    (400, None, ErrorKind.PERMANENT), (404, None, ErrorKind.PERMANENT),
    (413, None, ErrorKind.PERMANENT), (422, None, ErrorKind.PERMANENT),
    (408, None, ErrorKind.TRANSIENT), (409, None, ErrorKind.TRANSIENT),
    (500, None, ErrorKind.TRANSIENT), (503, "<html>busy</html>", ErrorKind.TRANSIENT),
    (529, None, ErrorKind.TRANSIENT),
])
def test_classify_http_table(status: int, body: Any, kind: ErrorKind) -> None:
    assert classify_http(status, {}, body).kind is kind


def test_x_should_retry_is_obeyed() -> None:
    assert classify_http(500, {"x-should-retry": "false"}).kind is ErrorKind.PERMANENT
    assert classify_http(400, {"X-Should-Retry": "true"}).kind is ErrorKind.TRANSIENT


def test_transport_errors() -> None:
    httpx2 = pytest.importorskip("httpx2")
    core = pytest.importorskip("google.api_core.exceptions")
    for exc in (httpx2.ReadTimeout("t"), httpx2.ConnectTimeout("t"), httpx2.ConnectError("c"),
                httpx2.RemoteProtocolError("r"), requests.exceptions.ReadTimeout(),
                requests.exceptions.ConnectionError(), ConnectionResetError(),
                core.RetryError("Timeout of 3.0s exceeded", cause=None),
                requests.exceptions.RetryError()):
        verdict = classify_transport(exc)
        assert verdict is not None and verdict.kind is ErrorKind.TRANSIENT, exc
    assert classify_transport(ValueError()) is None


# -- each SDK's own exception objects ------------------------------------------------------

def _openai_error(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    openai = pytest.importorskip("openai")
    import httpx2

    client = openai.OpenAI(api_key="sk-test", base_url=LOOPBACK)
    request = httpx2.Request("POST", LOOPBACK + "/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, json=body, request=request)
    return client._make_status_error_from_response(response)


def test_openai_exceptions_classify() -> None:
    adapter = make_adapter("openai", api_key="sk-test", base_url=LOOPBACK, model="gpt-4o")
    exc = _openai_error(429, {"error": {"message": "Rate limit reached. Please try again in 1s.",
                                        "type": "requests", "code": "rate_limit_exceeded"}},
                        {"retry-after": "1", "x-ratelimit-remaining-requests": "0",
                         "x-ratelimit-reset-requests": "1s", "x-ratelimit-limit-requests": "60"})
    verdict = adapter.classify(exc)
    assert (verdict.kind, verdict.retry_after) == (ErrorKind.RATE_LIMITED, 1.0)
    info = adapter.rate_info(exc)
    assert info is not None and info.limit_requests == 60 and info.remaining_requests == 0
    quota = _openai_error(429, {"error": {"message": "You exceeded your current quota",
                                          "type": "insufficient_quota",
                                          "code": "insufficient_quota"}})
    assert adapter.classify(quota).kind is ErrorKind.FATAL
    assert adapter.classify(_openai_error(413, {"error": {"message": "big"}})).kind is (
        ErrorKind.PERMANENT)
    assert adapter.classify(_openai_error(529, {"error": {}})).kind is ErrorKind.TRANSIENT
    openai = sys.modules["openai"]
    import httpx2
    request = httpx2.Request("POST", LOOPBACK)
    assert adapter.classify(openai.APITimeoutError(request)).kind is ErrorKind.TRANSIENT
    assert adapter.classify(openai.APIConnectionError(request=request)).reason == (
        "connection error")


def test_genai_exceptions_classify() -> None:
    errors = pytest.importorskip("google.genai.errors")
    genai = pytest.importorskip("google.genai")
    import httpx2

    adapter = make_adapter("gemini", api_key="k", base_url="http://127.0.0.1:9", model="g")
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/models/g:generateContent")

    def error(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
        response = httpx2.Response(status, json=body, headers=headers or {}, request=request)
        with pytest.raises(errors.APIError) as info:
            errors.APIError.raise_for_response(response)
        return info.value

    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "retry in 9s",
                      "details": [RETRY_INFO]}}
    exc = error(429, body)
    verdict = adapter.classify(exc)
    assert (verdict.kind, verdict.retry_after) == (ErrorKind.RATE_LIMITED, 2.5)
    info = adapter.rate_info(exc)
    assert info is not None and info.retry_after == 2.5
    assert adapter.classify(error(429, body, {"retry-after": "7"})).retry_after == 7.0
    daily = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [PER_DAY]}}
    assert adapter.classify(error(429, daily)).kind is ErrorKind.FATAL
    assert adapter.classify(error(403, {"error": {"code": 403}})).kind is ErrorKind.FATAL
    assert adapter.classify(error(502, {"error": {"code": 502}})).kind is ErrorKind.TRANSIENT
    assert adapter.classify(httpx2.ReadTimeout("t")).kind is ErrorKind.TRANSIENT
    assert isinstance(genai, types.ModuleType)


def _requests_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers.update({"content-type": "application/json", **(headers or {})})
    response.request = requests.Request("POST", "http://127.0.0.1:9/x").prepare()
    response.url = "http://127.0.0.1:9/x"
    return response


def test_generativeai_exceptions_classify() -> None:
    core = pytest.importorskip("google.api_core.exceptions")
    pytest.importorskip("google.generativeai")
    from throttlepool.adapters.google_generativeai import GenerativeModelAdapter

    model = types.SimpleNamespace(model_name="models/g", generate_content=None)
    adapter = GenerativeModelAdapter(model)
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "x",
                      "details": [RETRY_INFO]}}
    exc = core.from_http_response(_requests_response(429, body))
    assert isinstance(exc, core.TooManyRequests)
    verdict = adapter.classify(exc)
    assert (verdict.kind, verdict.retry_after) == (ErrorKind.RATE_LIMITED, 2.5)
    exc = core.from_http_response(_requests_response(503, {"error": {"code": 503}},
                                                     {"Retry-After": "4"}))
    assert (adapter.classify(exc).kind, adapter.classify(exc).retry_after) == (
        ErrorKind.TRANSIENT, 4.0)
    plain = core.from_http_status(408, "timeout")  # no class for 408: plain GoogleAPICallError
    assert adapter.classify(plain).kind is ErrorKind.TRANSIENT
    retry = core.RetryError("Timeout of 3.0s exceeded", cause=core.ServiceUnavailable("x"))
    assert adapter.classify(retry).kind is ErrorKind.TRANSIENT
    assert adapter.classify(requests.exceptions.ReadTimeout()).reason == "timeout"


def test_http_adapter_classifies_http_error() -> None:
    adapter = HttpAdapter("http://127.0.0.1:9/x")
    response = _requests_response(429, {"error": {"code": "insufficient_quota"}})
    exc = requests.HTTPError("429", response=response)
    assert adapter.classify(exc).kind is ErrorKind.FATAL
    assert adapter.classify(requests.exceptions.MissingSchema()).kind is ErrorKind.PERMANENT
    assert adapter.classify(requests.exceptions.ConnectTimeout()).reason == "timeout"


# -- construction, identity, registry -----------------------------------------------------

def test_identity_has_no_secrets() -> None:
    oa = make_adapter("openai", api_key="sk-SECRET", base_url=LOOPBACK, model="gpt-4o",
                      temperature=0)
    http = HttpAdapter("http://user:pw@127.0.0.1:9/x?key=SECRET",
                       headers={"Authorization": "Bearer SECRET"}, max_tokens=5)
    for adapter in (oa, http):
        text = json.dumps(dict(adapter.identity()))
        assert "SECRET" not in text and "pw" not in text
    assert oa.identity()["params"] == {"temperature": 0}
    hidden = make_adapter("openai", api_key="k", base_url=LOOPBACK, model="m",
                          extra_headers={"Authorization": "Bearer SECRET"})
    assert "SECRET" not in json.dumps(dict(hidden.identity()))


def test_count_tokens_survives_self_referential_objects() -> None:
    from unittest import mock

    assert tok.count_tokens(mock.MagicMock()) == 0


def test_openai_estimate_reserves_output_times_n() -> None:
    adapter = make_adapter("openai", api_key="k", base_url=LOOPBACK, model="gpt-4o")
    cost = adapter.estimate({"messages": [{"role": "user", "content": "a" * 40}],
                             "max_tokens": 50, "n": 3})
    assert (cost.requests, cost.tokens) == (1.0, 10 + 150)
    assert adapter.estimate({"messages": [], "max_completion_tokens": 7}).tokens == 7
    emb = make_adapter("openai", api_key="k", base_url=LOOPBACK, model="e", method="embeddings")
    assert emb.estimate(["abcd", "efgh"]).tokens == 2


def test_openai_params_and_methods() -> None:
    adapter = make_adapter("openai", api_key="k", base_url=LOOPBACK, model="m", max_tokens=9)
    assert adapter.params("hi") == {"model": "m", "max_tokens": 9,
                                    "messages": [{"role": "user", "content": "hi"}]}
    assert adapter.params({"messages": [], "max_tokens": 1})["max_tokens"] == 1
    with pytest.raises(ValueError, match="no method"):
        make_adapter("openai", api_key="k", base_url=LOOPBACK, method="chat.nothing.create")
    with pytest.raises(ValueError, match="unknown extract"):
        make_adapter("openai", api_key="k", base_url=LOOPBACK, extract="nope")


def test_make_adapter_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown provider"):
        make_adapter("nope")
    with pytest.raises(ConfigError):
        make_adapter("http")
    python = make_adapter("python", target="os.path:basename")
    assert isinstance(python, CallableAdapter) and python.call("/a/b", None).value == "b"
    assert load_callable("json:dumps") is json.dumps
    with pytest.raises(ConfigError):
        load_callable("json")
    assert make_adapter("requests", url="http://127.0.0.1:9/x", model=None).name == "http"


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(MissingExtra, match=r"throttlepool\[openai\]"):
        make_adapter("openai", model="m")
    monkeypatch.setitem(sys.modules, "google.genai", None)
    with pytest.raises(MissingExtra, match=r"throttlepool\[gemini\]"):
        make_adapter("gemini", model="m")


def test_as_adapter() -> None:
    adapter = HttpAdapter("http://127.0.0.1:9/x")
    assert as_adapter(adapter) is adapter
    assert isinstance(as_adapter(len), CallableAdapter)
    openai = pytest.importorskip("openai")
    with pytest.raises(TypeError, match="OpenAIAdapter"):
        as_adapter(openai.OpenAI(api_key="k", base_url=LOOPBACK))
    with pytest.raises(TypeError):
        as_adapter(42)


def test_to_jsonable() -> None:
    import dataclasses
    import enum

    class Color(enum.Enum):
        RED = "red"

    @dataclasses.dataclass
    class Point:
        x: int

    value = {"a": (1, Point(2)), "b": Color.RED, "c": b"\x00", 3: None}
    assert to_jsonable(value) == {"a": [1, {"x": 2}], "b": "red", "c": "AA==", "3": None}
    with pytest.raises(TypeError, match="extract"):
        to_jsonable(object())


def test_http_adapter_session_per_thread() -> None:
    made: list[Any] = []

    def factory() -> Any:
        session = requests.Session()
        made.append(session)
        return session

    adapter = HttpAdapter("http://127.0.0.1:9/x", session_factory=factory)
    seen: list[Any] = []
    threads = [threading.Thread(target=lambda: seen.append(adapter.session())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert adapter.session() is adapter.session()
    assert len({id(s) for s in seen}) == 3 and len(made) == 4
    adapter.close()
    assert adapter._sessions == []
