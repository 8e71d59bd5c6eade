"""The ``google-genai`` SDK (``from google import genai``) as an adapter.

google-genai does not retry unless the client was built with ``retry_options``; each call
passes per-request ``http_options`` with one attempt, so a user's retrying client is made
single-shot for throttlepool without touching the client itself. The async client
(``client.aio``) is awaited on the runner's event loop. Pickled, the adapter carries the
client's settings (key, base URL, API version, headers, timeout) and is rebuilt once per
process (:mod:`throttlepool.adapters.portable`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..classify import Verdict, default_classifier
from ..errors import ConfigError
from ..hints import RateInfo
from ..limiter.limits import Cost
from .answering import AnsweringSdkAdapter
from .base import CallResult
from .common import (
    Extract,
    classify_http,
    classify_setup,
    classify_transport,
    jsonable_params,
    make_extractor,
    name_endpoint,
    rate_info_with_hint,
    require,
    server_hint,
)
from .portable import SdkClient, genai_spec
from .streaming import GenAICollector, StreamBroken, acollect, collect, stream_verdict
from .structured import DEFAULT_JSON_RETRIES, Schema, check_json_retries
from .tokens import DEFAULT_OUTPUT_RESERVE, Tokenizer, count_tokens, first_number, usage_from
from .warm import signature_types

_METHODS = ("generate_content", "embed_content", "count_tokens", "generate_content_stream")


def _text(value: Any) -> Any:
    return value.text


def _embedding(value: Any) -> Any:
    vectors = [e.values for e in value.embeddings or ()]
    return vectors[0] if len(vectors) == 1 else vectors


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    dump = getattr(config, "model_dump", None)
    if callable(dump):
        return dict(dump(exclude_none=True))
    raise TypeError(f"config must be a dict or a google.genai config, got {type(config).__name__}")


def response_headers(value: Any) -> Mapping[str, str] | None:
    """The HTTP headers google-genai keeps on a response (``sdk_http_response.headers``)."""
    headers = getattr(getattr(value, "sdk_http_response", None), "headers", None)
    return headers if isinstance(headers, Mapping) else None


#: A call needs a model; an adapter without one serves what calls none (cancelling batches).
NO_MODEL = 'gemini needs a model: give model= (--model) or a "model" in each request'


class GenAIAdapter(AnsweringSdkAdapter):
    """Wraps a ``google.genai.Client`` (or its ``client.aio``) calling ``models.<method>``.

    A string item is the ``contents``; a dict item may give ``contents``, ``config`` (dict or
    ``types.GenerateContentConfig``) and ``model``. ``default_config`` is merged under each
    item's config. Without ``model``, every item must name its own (a request without one
    fails before it is sent); an adapter for cancelling batches needs none.

    ``stream=True`` (or ``method="generate_content_stream"``) calls
    ``generate_content_stream`` and reads it whole into the response ``generate_content``
    returns (text joined, usage of the last chunk), with ``ttft``; a stream broken midway is
    retried whole. ``extract="json"``, ``schema`` and ``json_retries`` as for
    :class:`~throttlepool.adapters.OpenAIAdapter`.
    """

    name = "gemini"

    def __init__(
        self,
        client: Any,
        *,
        model: str | None = None,
        method: str = "generate_content",
        extract: Extract = None,
        output_reserve: int = DEFAULT_OUTPUT_RESERVE,
        tokenizer: Tokenizer | None = None,
        config: Mapping[str, Any] | None = None,
        stream: bool = False,
        schema: Schema | None = None,
        json_retries: int = DEFAULT_JSON_RETRIES,
        **default_config: Any,
    ) -> None:
        types = require("google.genai.types", "google-genai", "gemini")
        # google-genai before 1.1x has no retry_options (and no retries to switch off).
        self._has_retry_options = "retry_options" in types.HttpOptions.model_fields
        if method not in _METHODS:
            raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
        self._client = SdkClient(client, genai_spec)
        genai_client = require("google.genai.client", "google-genai", "gemini")
        #: True for ``client.aio``: the runner awaits :meth:`acall` on its loop.
        self.is_async = isinstance(client, genai_client.AsyncClient)
        self.model = model
        if method == "generate_content_stream":
            method, stream = "generate_content", True
        if stream and method != "generate_content":
            raise ConfigError(f"stream=True applies to gemini generate_content, not {method!r}")
        self.method = method
        #: Every call goes through ``generate_content_stream``.
        self.stream = stream
        # config: generation settings named like this constructor's arguments (the CLI's -p).
        self.default_config = {**default_config, **(config or {})}
        self.output_reserve = output_reserve
        self._tokenizer = tokenizer
        named: dict[str, Callable[[Any], Any]] = {"text": _text, "embedding": _embedding}
        self._extract = make_extractor(extract, named, schema)
        #: Asks for an answer that is not the JSON asked for, apart from network retries.
        self.json_retries = check_json_retries(json_retries)
        self._warm(None)

    def _sdk_models(self, client: Any) -> list[Any]:
        """The method's signature, and the private model its parameters are checked with
        (``types._GenerateContentParameters``), which every request validates."""
        models = require("google.genai.models", "google-genai", "gemini")
        types = require("google.genai.types", "google-genai", "gemini")
        name = "generate_content_stream" if self.stream else self.method
        request = "_" + "".join(p.title() for p in self.method.split("_")) + "Parameters"
        roots = signature_types(getattr(models.Models, name))
        return [*roots, getattr(types, request)] if hasattr(types, request) else roots

    def identity(self) -> Mapping[str, Any]:
        """Provider, method, model and default config; never the key or the client's options."""
        return {
            "provider": self.name,
            "method": self.method,
            "model": self.model,
            "params": jsonable_params(self.default_config),
        }

    def request(self, item: Any) -> dict[str, Any]:
        """The keyword arguments one call sends for ``item`` (config as a dict)."""
        request = dict(item) if isinstance(item, Mapping) else {"contents": item}
        config = {**self.default_config, **_config_dict(request.get("config"))}
        request["config"] = config
        if not request.get("model"):
            if self.model is None:
                raise ConfigError(NO_MODEL)
            request["model"] = self.model
        return request

    def request_problem(self, item: Any) -> str | None:
        """Why the SDK would refuse the request for ``item`` before sending it, or None."""
        if self.model is None and not (isinstance(item, Mapping) and item.get("model")):
            return NO_MODEL
        if not isinstance(item, Mapping) or self.method == "count_tokens":
            return None
        return None if item.get("contents") else 'the request has no "contents", which gemini needs'

    def estimate(self, item: Any) -> Cost:
        """Prompt tokens plus ``max_output_tokens`` times ``candidate_count``."""
        request = self.request(item)
        config = request["config"]
        prompt = count_tokens(
            [request.get("contents"), config.get("system_instruction")],
            tokenizer=self._tokenizer,
        )
        if self.method != "generate_content":
            return Cost(1.0, float(prompt))
        output = first_number(config, "max_output_tokens", "maxOutputTokens")
        n = first_number(config, "candidate_count", "candidateCount") or 1.0
        reserved = (output if output is not None else self.output_reserve) * n
        return Cost(1.0, prompt + reserved, reserved)

    def _request(self, item: Any, timeout: float | None) -> dict[str, Any]:
        self._warm(None)
        request = self.request(item)
        config = request["config"]
        http_options = _config_dict(config.get("http_options"))
        # A per-call retry_options=None does not override the client's; one attempt does.
        if self._has_retry_options:
            http_options["retry_options"] = {"attempts": 1}
        if timeout is not None:
            http_options["timeout"] = max(1, math.ceil(timeout * 1000))  # milliseconds
        config["http_options"] = http_options
        return request

    def call(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """One HTTP attempt through ``client.models``; the value is the SDK response."""
        if self.is_async:  # off the runner's loop (a plain thread): a loop of its own
            return asyncio.run(self.acall(item, timeout))
        started = time.perf_counter()
        try:
            request = self._request(item, timeout)
            models = self._client.get().models
            if self.stream:
                # The request goes out on the first read: a failure before any chunk is the
                # call's own (429...), not a broken stream.
                whole = collect(models.generate_content_stream(**request), GenAICollector(),
                                started, answered=False)
                return self._result(whole.response, whole.ttft)
            result = getattr(models, self.method)(**request)
        except StreamBroken:
            raise
        except Exception as exc:
            name_endpoint(exc)
            raise
        return self._result(result)

    async def acall(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """One HTTP attempt through ``client.aio.models``, awaited on the running loop."""
        started = time.perf_counter()
        try:
            request = self._request(item, timeout)
            models = self._client.for_loop().models
            if self.stream:
                stream = await models.generate_content_stream(**request)
                whole = await acollect(stream, GenAICollector(), started, answered=False)
                return self._result(whole.response, whole.ttft)
            result = await getattr(models, self.method)(**request)
        except StreamBroken:
            raise
        except Exception as exc:
            name_endpoint(exc)
            raise
        return self._result(result)

    def _result(self, result: Any, ttft: float | None = None) -> CallResult[Any]:
        headers = response_headers(result)
        rate = rate_info_with_hint(headers, None) if headers else None
        value = self._extract(result) if self._extract is not None else result
        return CallResult(value, usage_from(result), rate, ttft)

    def classify(self, exc: BaseException) -> Verdict:
        """``errors.APIError`` by code and body; raw httpx/httpx2 transport errors retry."""
        errors = require("google.genai.errors", "google-genai", "gemini")
        setup = classify_setup(exc)
        if setup is not None:
            return setup
        if isinstance(exc, StreamBroken):
            return stream_verdict(exc, self.classify)
        if isinstance(exc, errors.APIError) and isinstance(exc.code, int):
            response = getattr(exc, "response", None)
            return classify_http(
                exc.code, getattr(response, "headers", None), exc.details, message=exc.message
            )
        return classify_transport(exc) or default_classifier(exc)

    def rate_info(self, exc: BaseException) -> RateInfo | None:
        """Headers of a failed call, with Gemini's ``RetryInfo`` as the hint when no header."""
        headers = getattr(getattr(exc, "response", None), "headers", None)
        details = getattr(exc, "details", None)
        hint = server_hint(headers, details, getattr(exc, "message", None))
        return rate_info_with_hint(headers, hint)
