"""The ``anthropic`` SDK as an adapter: the Messages API (or any method), sync or async client.

The user's client is kept (base URL, key, headers); the adapter only takes a copy with
``max_retries=0``: the SDK would otherwise retry 429s and 529s itself and honour any
``retry-after`` with no cap (BATCH-APIS.md §4.2), hidden from throttlepool's limiter.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..classify import ErrorKind, Verdict, default_classifier
from ..errors import ConfigError
from ..hints import RateInfo, rate_info_from_headers
from ..limiter.limits import Cost
from ..outcome import Usage
from .answering import AnsweringSdkAdapter
from .base import CallResult
from .common import (
    Extract,
    classify_setup,
    classify_stainless,
    classify_transport,
    connect_timeout,
    error_object,
    jsonable_params,
    make_extractor,
    name_endpoint,
    require,
    server_hint,
    stainless_rate_info,
)
from .function import callable_name
from .portable import SdkClient, anthropic_spec
from .streaming import AnthropicCollector, StreamBroken, acollect, collect, stream_verdict
from .structured import DEFAULT_JSON_RETRIES, Schema, check_json_retries
from .tokens import Tokenizer, count_tokens, first_number
from .warm import stainless_models

# method name -> (client attribute path, parameter a string item goes to, prompt fields)
_METHODS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "messages": ("messages.create", "messages", ("messages", "system", "tools")),
}
#: ``max_tokens`` when neither the adapter nor the item sets one; the Messages API needs it.
DEFAULT_MAX_TOKENS = 1024
#: Error codes (``error.details.error_code``) and types that mean billing or spend limits.
BILLING_CODES = frozenset({
    "billing_error", "enforced_spend_limit_reached", "contract_spend_limit_reached",
    "linked_organization_billing_unavailable", "linked_organization_spend_limit_reached",
})
_CREDIT_TEXT = "credit balance is too low"

AnthropicMethod = Callable[..., Any]


def _text(value: Any) -> Any:
    """The generated text of a Message: its text blocks joined (tool or thinking blocks
    carry no answer text)."""
    content = getattr(value, "content", None)
    if not isinstance(content, list):
        return content
    return "".join(b.text for b in content if getattr(b, "type", None) == "text")


def usage_of(value: Any) -> Usage | None:
    """Input, output and prompt-cache tokens of a Message (None when it has no usage)."""
    usage = value.get("usage") if isinstance(value, Mapping) else getattr(value, "usage", None)
    if usage is None:
        return None

    def field(name: str) -> int:
        raw = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
        return int(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else 0

    return Usage(field("input_tokens"), field("output_tokens"),
                 field("cache_creation_input_tokens"), field("cache_read_input_tokens"))


def _is_raw(result: Any) -> bool:
    return callable(getattr(result, "parse", None)) and hasattr(result, "headers")


def accepted_params(method: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword arguments an SDK method takes; None when it takes any (``**kwargs``)."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


def unknown_params(params: Mapping[str, Any], accepted: frozenset[str] | None) -> list[str]:
    """Fields of a request the SDK method would refuse (TypeError), sorted."""
    if accepted is None:
        return []
    return sorted(k for k in params if k not in accepted and k != "timeout")


class AnthropicAdapter(AnsweringSdkAdapter):
    """Wraps an ``anthropic.Anthropic`` or ``anthropic.AsyncAnthropic`` client for one method.

    ``method`` is ``"messages"``, a dotted path on the client (``"beta.messages.create"``), or
    a callable ``fn(client, **params)`` that receives the retry-free client. A string item
    becomes one user message; a dict item is the request's parameters, merged over
    ``default_params``. ``max_tokens`` (which the Messages API requires) defaults to
    :data:`DEFAULT_MAX_TOKENS`. With an ``AsyncAnthropic`` client the runner awaits the call
    on its event loop instead of a worker thread.

    ``stream=True`` (or ``"stream": True`` in a dict item, messages only) streams the reply:
    it is read whole into the Message the plain call returns (usage, cache tokens included)
    with ``ttft``, and a stream broken midway is retried whole. ``extract="json"``,
    ``schema`` and ``json_retries`` as for :class:`~throttlepool.adapters.OpenAIAdapter`. A
    parameter the installed SDK's method does not take (``temperature`` is missing from some
    versions' ``messages.create``) is a ConfigError when the adapter is built.
    """

    name = "anthropic"

    def __init__(
        self,
        client: Any,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        method: str | AnthropicMethod = "messages",
        extract: Extract = None,
        prompt_param: str | None = None,
        tokenizer: Tokenizer | None = None,
        system: str | None = None,
        request_params: Mapping[str, Any] | None = None,
        stream: bool = False,
        schema: Schema | None = None,
        json_retries: int = DEFAULT_JSON_RETRIES,
        **default_params: Any,
    ) -> None:
        sdk = require("anthropic", "anthropic", "anthropic")
        self._sdk_version = str(getattr(sdk, "__version__", "?"))
        self._client = SdkClient(client.with_options(max_retries=0), anthropic_spec)
        self._timeout: Any = sdk.Timeout
        #: True for an ``AsyncAnthropic`` client: the runner awaits :meth:`acall`.
        self.is_async = isinstance(client, sdk.AsyncAnthropic)
        self.model = model
        # request_params: fields named like this constructor's own arguments (model, method)
        # that still belong in the request body, as the CLI's --param gives them.
        self.default_params = {**default_params, **(request_params or {})}
        if max_tokens is not None:
            self.default_params["max_tokens"] = max_tokens
        self.system = system
        self._fn: AnthropicMethod | None = None
        self._prompt_fields: tuple[str, ...]
        if callable(method):
            self._fn = method
            self.method = callable_name(method)
            self._path, self._prompt_param, self._prompt_fields = "", "messages", (
                "messages", "system", "tools")
        elif method in _METHODS:
            self.method = method
            self._path, self._prompt_param, self._prompt_fields = _METHODS[method]
        else:
            self.method = method
            self._path, self._prompt_param, self._prompt_fields = method, "messages", (
                "messages", "system", "tools")
            self._resolve(method)  # fail now on a typo, not on the first item
        self._prompt_param = prompt_param or self._prompt_param
        self._tokenizer = tokenizer
        self._accepted = None if self._fn is not None else accepted_params(
            getattr(*self._resolve(self._path)))
        refused = unknown_params(self.params({}), self._accepted)
        if refused:
            raise ConfigError(self._refusal(refused))
        if stream and self.method not in _METHODS:
            raise ConfigError(f"stream=True applies to anthropic messages, not {self.method!r}")
        #: Every call streams (a dict item may also ask with ``"stream": True``).
        self.stream = stream
        # A rejected answer's usage as an accepted one's: with its prompt-cache tokens.
        self._extract = make_extractor(extract, {"text": _text}, schema, usage_of)
        #: Asks for an answer that is not the JSON asked for, apart from network retries.
        self.json_retries = check_json_retries(json_retries)
        self._warm(self._client.get())

    def _sdk_models(self, client: Any) -> list[Any]:
        method = None if self._fn is not None else getattr(*self._resolve(self._path, client))
        return stainless_models("anthropic", method)

    def _refusal(self, names: list[str]) -> str:
        shown = ", ".join(repr(n) for n in names)
        return (f"anthropic {self._sdk_version}'s {self._path} takes no {shown}: "
                "upgrade the anthropic package or leave it out")

    def _resolve(self, path: str, client: Any = None) -> tuple[Any, str]:
        *parents, leaf = path.split(".")
        target = self._client.get() if client is None else client
        for part in parents:
            target = getattr(target, part, None)
        if not callable(getattr(target, leaf, None)):
            raise ValueError(f"the anthropic client has no method {path!r}")
        return target, leaf

    def identity(self) -> Mapping[str, Any]:
        """Provider, method, model and default parameters; never the key, URL or headers."""
        params = self.default_params if self.system is None else {
            **self.default_params, "system": self.system}
        return {"provider": self.name, "method": self.method, "model": self.model,
                "params": jsonable_params(params)}

    def params(self, item: Any) -> dict[str, Any]:
        """The keyword arguments one call sends for ``item``."""
        params: dict[str, Any] = {}
        if self.model is not None:
            params["model"] = self.model
        if self._prompt_param == "messages":
            params["max_tokens"] = DEFAULT_MAX_TOKENS
        params.update(self.default_params)
        if isinstance(item, Mapping):
            params.update(item)
        elif self._prompt_param == "messages":
            params["messages"] = [{"role": "user", "content": str(item)}]
        else:
            params[self._prompt_param] = item
        if self.system is not None and self._prompt_param == "messages":
            params.setdefault("system", self.system)  # a request's own system prompt wins
        return params

    def request_problem(self, item: Any) -> str | None:
        """Why the SDK would refuse the request for ``item`` before sending it, or None."""
        if not isinstance(item, Mapping) or self._fn is not None or self.method not in _METHODS:
            return None
        params = self.params(item)
        refused = unknown_params(params, self._accepted)
        if refused:
            return self._refusal(refused)
        missing = [f for f in ("model", "messages") if f not in params]
        if not missing:
            return None
        names = " and ".join(f'"{f}"' for f in missing)
        return f"the request has no {names}, which anthropic {self.method} needs"

    def estimate(self, item: Any) -> Cost:
        """Prompt tokens plus ``max_tokens``.

        Anthropic charges output as it is generated, not ``max_tokens`` (BATCH-APIS.md §4.4),
        so the reservation is settled to the reported input and output tokens after the call
        (``Cost.output`` stays 0; ``output_tokens`` is what an OTPM limit reserves).
        """
        params = self.params(item)
        prompt = count_tokens([params.get(f) for f in self._prompt_fields],
                              tokenizer=self._tokenizer)
        output = first_number(params, "max_tokens") or 0.0
        return Cost(1.0, float(prompt) + output, output_tokens=output)

    def _request(
        self, item: Any, timeout: float | None, client: Any = None
    ) -> tuple[Callable[..., Any], dict[str, Any]]:
        client = self._client.get() if client is None else client
        self._warm(client)
        params = self.params(item)
        if self.stream and self._fn is None:
            params["stream"] = True
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
        """One HTTP attempt; the value is the Message (or ``extract`` of it)."""
        if self.is_async:  # off the runner's loop (Dask, a plain thread): a loop of its own
            return asyncio.run(self.acall(item, timeout))
        started = time.perf_counter()
        try:
            send, params = self._request(item, timeout)
            result = send(**params)
        except Exception as exc:
            name_endpoint(exc)  # "Connection error." alone does not say where
            raise
        rate = None
        if _is_raw(result):
            rate = self._rate(result.headers)
            result = result.parse()
        if not self._streams(params):
            return CallResult(*self._values(result), rate)
        whole = collect(result, AnthropicCollector(), started)
        return CallResult(*self._values(whole.response), rate, whole.ttft)

    def _streams(self, params: Mapping[str, Any]) -> bool:
        return self._fn is None and self.method in _METHODS and params.get("stream") is True

    async def acall(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """One HTTP attempt with an ``AsyncAnthropic`` client, awaited on the running loop."""
        started = time.perf_counter()
        try:
            send, params = self._request(item, timeout, self._client.for_loop())
            result = send(**params)
            if asyncio.iscoroutine(result) or asyncio.isfuture(result):
                result = await result
        except Exception as exc:
            name_endpoint(exc)
            raise
        rate = None
        if _is_raw(result):
            rate = self._rate(result.headers)
            result = result.parse()
            if asyncio.iscoroutine(result):
                result = await result
        if not self._streams(params):
            return CallResult(*self._values(result), rate)
        whole = await acollect(result, AnthropicCollector(), started)
        return CallResult(*self._values(whole.response), rate, whole.ttft)

    def _values(self, result: Any) -> tuple[Any, Usage | None]:
        value = self._extract(result) if self._extract is not None else result
        return value, usage_of(result)

    @staticmethod
    def _rate(headers: Any) -> RateInfo | None:
        info = rate_info_from_headers(headers)
        return None if info.empty else info

    def classify(self, exc: BaseException) -> Verdict:
        """Per PROVIDERS.md §1/§6: 429, 529 overloaded, billing, auth, 4xx, 5xx, timeouts."""
        sdk = require("anthropic", "anthropic", "anthropic")
        if isinstance(exc, StreamBroken):
            return stream_verdict(exc, self.classify)
        if isinstance(exc, sdk.APIStatusError):
            err = error_object(exc.body)
            code = getattr(exc, "error_code", None)
            type_ = getattr(exc, "type", None) or err.get("type")
            raw_message = err.get("message")
            message = raw_message if isinstance(raw_message, str) else str(exc)
            if exc.status_code == 402 or code in BILLING_CODES or type_ in BILLING_CODES:
                return Verdict(ErrorKind.FATAL, None,
                               f"{exc.status_code} billing or spend limit ({code or type_})")
            if exc.status_code == 400 and _CREDIT_TEXT in message.lower():
                return Verdict(ErrorKind.FATAL, None, "400 credit balance too low")
            if exc.status_code == 529 or type_ == "overloaded_error":
                hint = server_hint(exc.response.headers, exc.body)
                return Verdict(ErrorKind.TRANSIENT, hint, f"{exc.status_code} overloaded")
        return (classify_setup(exc) or classify_stainless(exc, sdk)
                or classify_transport(exc) or default_classifier(exc))

    def rate_info(self, exc: BaseException) -> RateInfo | None:
        """Rate-limit headers (and the body's hint) of a failed call."""
        return stainless_rate_info(exc)
