"""The ``openai`` SDK as an adapter: chat completions, embeddings, responses, or any method.

The user's client is kept (base URL, key, headers, organisation); the adapter only takes a
copy with ``max_retries=0`` so that every HTTP attempt passes through throttlepool's limiter.
An ``AsyncOpenAI`` client is awaited on the runner's event loop (:meth:`OpenAIAdapter.acall`).
Pickled (to a Dask worker), the adapter carries the client's settings and the receiving
process rebuilds the client once (:mod:`throttlepool.adapters.portable`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..classify import Verdict, default_classifier
from ..errors import ConfigError
from ..hints import RateInfo, rate_info_from_headers
from ..limiter.limits import Cost
from .answering import AnsweringSdkAdapter
from .base import CallResult
from .common import (
    Extract,
    classify_setup,
    classify_stainless,
    classify_transport,
    connect_timeout,
    jsonable_params,
    make_extractor,
    name_endpoint,
    require,
    stainless_rate_info,
)
from .function import callable_name
from .portable import SdkClient, openai_spec
from .streaming import (
    Collector,
    OpenAIChatCollector,
    OpenAIResponsesCollector,
    StreamBroken,
    acollect,
    collect,
    stream_verdict,
)
from .structured import DEFAULT_JSON_RETRIES, Schema, check_json_retries
from .tokens import (
    DEFAULT_OUTPUT_RESERVE,
    Tokenizer,
    cached_tokenizer,
    count_tokens,
    encoding_name_for,
    first_number,
    usage_from,
)
from .warm import stainless_models

# method name -> (client attribute path, parameter a string item goes to, prompt fields)
_METHODS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "chat": ("chat.completions.create", "messages", ("messages", "tools")),
    "embeddings": ("embeddings.create", "input", ("input",)),
    "responses": ("responses.create", "input", ("input", "instructions", "tools")),
    "completions": ("completions.create", "prompt", ("prompt", "suffix")),
}
_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
#: Methods whose streamed replies are gathered into one response.
_STREAMED: dict[str, Callable[[], Collector]] = {
    "chat": OpenAIChatCollector, "responses": OpenAIResponsesCollector}

OpenAIMethod = Callable[..., Any]


def _text(value: Any) -> Any:
    """The generated text of a chat completion, completion or Responses API response."""
    text = getattr(value, "output_text", None)
    if isinstance(text, str):
        return text
    choice = value.choices[0]
    message = getattr(choice, "message", None)
    return message.content if message is not None else choice.text


def _embedding(value: Any) -> Any:
    vectors = [d.embedding for d in value.data]
    return vectors[0] if len(vectors) == 1 else vectors


def _is_raw(result: Any) -> bool:
    return callable(getattr(result, "parse", None)) and hasattr(result, "headers")


def _rate(headers: Any) -> RateInfo | None:
    info = rate_info_from_headers(headers)
    return None if info.empty else info


class OpenAIAdapter(AnsweringSdkAdapter):
    """Wraps an ``openai.OpenAI`` or ``AsyncOpenAI`` client (or Azure / compatible client).

    ``method`` is ``"chat"``, ``"embeddings"``, ``"responses"``, ``"completions"``, a dotted
    path on the client (``"moderations.create"``), or a callable ``fn(client, **params)`` that
    receives the retry-free client. A string item becomes the method's prompt parameter; a dict
    item is the request's parameters, merged over ``default_params``.

    ``stream=True`` (or ``"stream": True`` in a dict item) streams chat completions and
    responses: the worker reads the stream whole and the value is the response the plain call
    returns, with its usage (``stream_options.include_usage`` is added) and ``ttft``. A
    stream that breaks midway is retried whole. ``extract="json"`` parses the model's JSON
    answer, checked against ``schema`` (a JSON Schema dict or a pydantic model), asking again
    up to ``json_retries`` times (:mod:`throttlepool.adapters.structured`).
    """

    name = "openai"

    def __init__(
        self,
        client: Any,
        *,
        model: str | None = None,
        method: str | OpenAIMethod = "chat",
        extract: Extract = None,
        prompt_param: str | None = None,
        output_reserve: int = DEFAULT_OUTPUT_RESERVE,
        tokenizer: Tokenizer | None = None,
        system: str | None = None,
        request_params: Mapping[str, Any] | None = None,
        stream: bool = False,
        schema: Schema | None = None,
        json_retries: int = DEFAULT_JSON_RETRIES,
        **default_params: Any,
    ) -> None:
        sdk = require("openai", "openai", "openai")
        self._client = SdkClient(client.with_options(max_retries=0), openai_spec)
        self._timeout: Any = sdk.Timeout
        #: True for an ``AsyncOpenAI`` client: the runner awaits :meth:`acall` on its loop.
        self.is_async = isinstance(client, sdk.AsyncOpenAI)
        self.model = model
        # request_params: fields named like this constructor's own arguments (model, method)
        # that still belong in the request body, as the CLI's --param gives them.
        self.default_params = {**default_params, **(request_params or {})}
        self.system = system
        self.output_reserve = output_reserve
        self._fn: OpenAIMethod | None = None
        self._prompt_fields: tuple[str, ...]
        if callable(method):
            self._fn = method
            self.method = callable_name(method)
            self._path, self._prompt_param, self._prompt_fields = "", "input", ("input",)
        elif method in _METHODS:
            self.method = method
            self._path, self._prompt_param, self._prompt_fields = _METHODS[method]
        else:
            self.method = method
            self._path, self._prompt_param, self._prompt_fields = method, "input", ("input",)
            self._resolve(method)  # fail now on a typo, not on the first item
        self._prompt_param = prompt_param or self._prompt_param
        self._tokenizer = tokenizer
        if stream and self.method not in _STREAMED:
            raise ConfigError(f"stream=True applies to openai {' and '.join(_STREAMED)}, "
                              f"not {self.method!r}")
        #: Every call streams (a dict item may also ask with ``"stream": True``).
        self.stream = stream
        named: dict[str, Callable[[Any], Any]] = {"text": _text, "embedding": _embedding}
        self._extract = make_extractor(extract, named, schema)
        #: Asks for an answer that is not the JSON asked for, apart from network retries.
        self.json_retries = check_json_retries(json_retries)
        self._warm(self._client.get())

    def _sdk_models(self, client: Any) -> list[Any]:
        method = None if self._fn is not None else getattr(*self._resolve(self._path, client))
        return stainless_models("openai", method)

    def _resolve(self, path: str, client: Any = None) -> tuple[Any, str]:
        *parents, leaf = path.split(".")
        target = self._client.get() if client is None else client
        for part in parents:
            target = getattr(target, part, None)
        if not callable(getattr(target, leaf, None)):
            raise ValueError(f"the openai client has no method {path!r}")
        return target, leaf

    def identity(self) -> Mapping[str, Any]:
        """Provider, method, model and default parameters; never the key, URL or headers."""
        return {
            "provider": self.name,
            "method": self.method,
            "model": self.model,
            "params": jsonable_params(self._identity_params()),
        }

    def _identity_params(self) -> dict[str, Any]:
        if self.system is None:
            return self.default_params
        return {**self.default_params, "system": self.system}

    def params(self, item: Any) -> dict[str, Any]:
        """The keyword arguments one call sends for ``item``."""
        params: dict[str, Any] = {}
        if self.model is not None:
            params["model"] = self.model
        params.update(self.default_params)
        if isinstance(item, Mapping):
            params.update(item)
        elif self._prompt_param == "messages":
            params["messages"] = [{"role": "user", "content": str(item)}]
        else:
            params[self._prompt_param] = item
        if self.system is not None:
            self._add_system(params)
        return params

    def _add_system(self, params: dict[str, Any]) -> None:
        """``system=``: a leading system message (chat) or ``instructions`` (responses),
        unless the request already has its own."""
        if self.method == "responses":
            params.setdefault("instructions", self.system)
            return
        messages = params.get("messages")
        if self._prompt_param != "messages" or not isinstance(messages, list):
            return
        first = messages[0] if messages else None
        if not (isinstance(first, Mapping) and first.get("role") in ("system", "developer")):
            params["messages"] = [{"role": "system", "content": self.system}, *messages]

    def request_problem(self, item: Any) -> str | None:
        """Why the SDK would refuse the request for ``item`` before sending it, or None.

        Only a dict item (a full request body) can lack the method's required fields.
        """
        if not isinstance(item, Mapping) or self._fn is not None:
            return None
        params = self.params(item)
        required = self._prompt_fields[0] if self.method in _METHODS else None
        missing = [f for f in ("model", required) if f is not None and f not in params]
        if not missing:
            return None
        names = " and ".join(f'"{f}"' for f in missing)
        return f"the request has no {names}, which openai {self.method} needs"

    def _count(self, obj: Any, model: Any) -> int:
        tokenizer = self._tokenizer or cached_tokenizer(encoding_name_for(str(model or "")))
        return count_tokens(obj, tokenizer=tokenizer)

    def estimate(self, item: Any) -> Cost:
        """Prompt tokens plus the output limit times ``n``, as OpenAI reserves (§2.5)."""
        params = self.params(item)
        prompt = self._count([params.get(f) for f in self._prompt_fields], params.get("model"))
        if self.method == "embeddings":
            return Cost(1.0, float(prompt))
        output = first_number(params, *_OUTPUT_FIELDS)
        if output is None:
            output = float(self.output_reserve)
        n = first_number(params, "n", "best_of") or 1.0
        return Cost(1.0, float(prompt) + output * n, output * n)

    def _streams(self, params: Mapping[str, Any]) -> bool:
        return self._fn is None and self.method in _STREAMED and params.get("stream") is True

    def _request(self, item: Any, timeout: float | None, client: Any
                 ) -> tuple[Callable[..., Any], dict[str, Any]]:
        self._warm(client)
        params = self.params(item)
        if self.stream and self._fn is None:
            params["stream"] = True
        if self._streams(params) and self.method == "chat":
            options = dict(params.get("stream_options") or {})
            options.setdefault("include_usage", True)  # else the stream carries no usage
            params["stream_options"] = options
        if timeout is not None:
            # The connect phase gives up first, so a host that never accepts is named.
            params["timeout"] = timeout if self._fn is not None else self._timeout(
                timeout, connect=connect_timeout(timeout))
        if self._fn is not None:
            fn = self._fn
            return (lambda **p: fn(client, **p)), params
        target, leaf = self._resolve(self._path, client)
        raw_target = getattr(target, "with_raw_response", None)
        method = getattr(raw_target, leaf, None) if raw_target is not None else None
        return method or getattr(target, leaf), params

    def call(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """One HTTP attempt; the value is what the SDK method returns (or ``extract`` of it)."""
        if self.is_async:  # off the runner's loop (a plain thread): a loop of its own
            return asyncio.run(self.acall(item, timeout))
        started = time.perf_counter()
        try:
            send, params = self._request(item, timeout, self._client.get())
            result = send(**params)
        except Exception as exc:
            name_endpoint(exc)  # "Connection error." alone does not say where
            raise
        rate: RateInfo | None = None
        if _is_raw(result):
            rate = _rate(result.headers)
            result = result.parse()
        if not self._streams(params):
            return self._result(result, rate)
        whole = collect(result, _STREAMED[self.method](), started)
        return self._result(whole.response, rate, whole.ttft)

    async def acall(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """One HTTP attempt with an ``AsyncOpenAI`` client, awaited on the running loop."""
        started = time.perf_counter()
        try:
            send, params = self._request(item, timeout, self._client.for_loop())
            result = send(**params)
            if asyncio.iscoroutine(result) or asyncio.isfuture(result):
                result = await result
        except Exception as exc:
            name_endpoint(exc)
            raise
        rate: RateInfo | None = None
        if _is_raw(result):
            rate = _rate(result.headers)
            result = result.parse()
            if asyncio.iscoroutine(result):
                result = await result
        if not self._streams(params):
            return self._result(result, rate)
        whole = await acollect(result, _STREAMED[self.method](), started)
        return self._result(whole.response, rate, whole.ttft)

    def _result(self, result: Any, rate: RateInfo | None,
                ttft: float | None = None) -> CallResult[Any]:
        value = self._extract(result) if self._extract is not None else result
        return CallResult(value, usage_from(result), rate, ttft)

    def classify(self, exc: BaseException) -> Verdict:
        """Per PROVIDERS.md §1: 429 vs quota vs too large, auth, 4xx, 5xx, timeouts."""
        sdk = require("openai", "openai", "openai")
        if isinstance(exc, StreamBroken):
            return stream_verdict(exc, self.classify)
        return (classify_setup(exc) or classify_stainless(exc, sdk)
                or classify_transport(exc) or default_classifier(exc))

    def rate_info(self, exc: BaseException) -> RateInfo | None:
        """Rate-limit headers (and the body's hint) of a failed call."""
        return stainless_rate_info(exc)
