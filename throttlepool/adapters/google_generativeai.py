"""The legacy ``google-generativeai`` SDK (``genai.GenerativeModel``) as an adapter.

Its default retry repeats a 503 for up to ten minutes, invisible to any rate limiter, so
every call passes ``request_options={"retry": None}``. Over REST its timeouts and connection
failures arrive as raw ``requests`` exceptions, and a 429 as ``TooManyRequests`` (not
``ResourceExhausted``), so errors are classified by ``e.code`` and ``e.details``.

The SDK's settings are process-wide (``genai.configure``). Pickled, the adapter carries them
with the model's own settings, and the receiving process applies them once
(:class:`throttlepool.adapters.portable.GenerativeAIConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..classify import Verdict, default_classifier
from ..hints import RateInfo
from ..limiter.limits import Cost
from .base import Adapter, CallResult
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
    to_jsonable,
)
from .portable import GenerativeAIConfig
from .tokens import DEFAULT_OUTPUT_RESERVE, Tokenizer, count_tokens, first_number, usage_from

_CALL_KEYS = ("generation_config", "safety_settings", "tools", "tool_config")
#: A GenerativeModel's own attributes that hold connections, rebuilt where it is used.
_MODEL_CLIENTS = ("_client", "_async_client")


def _text(value: Any) -> Any:
    return value.text


def _as_dict(config: Any) -> dict[str, Any]:
    """A generation config as a plain dict (it may be a dict, a TypedDict or a proto)."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    to_dict = getattr(type(config), "to_dict", None)
    if callable(to_dict):
        return dict(to_dict(config))
    return {k: v for k, v in vars(config).items() if not k.startswith("_") and v is not None}


def _error_body(exc: BaseException) -> dict[str, Any]:
    """An error-body-shaped dict from ``GoogleAPICallError.details`` and ``.message``."""
    details = getattr(exc, "details", None)
    message = getattr(exc, "message", None)
    return {"error": {
        "details": details if isinstance(details, list) else [],
        "message": message if isinstance(message, str) else "",
    }}


class GenerativeModelAdapter(Adapter[Any]):
    """Wraps a ``google.generativeai.GenerativeModel``; calls ``generate_content``.

    A string item (or list of parts) is the ``contents``; a dict item may give ``contents``
    and ``generation_config``, ``safety_settings``, ``tools``, ``tool_config``. Keyword
    arguments given here are the defaults for every call.
    """

    name = "google-generativeai"

    def __init__(
        self,
        model: Any,
        *,
        extract: Extract = None,
        output_reserve: int = DEFAULT_OUTPUT_RESERVE,
        tokenizer: Tokenizer | None = None,
        **defaults: Any,
    ) -> None:
        require("google.generativeai", "google-generativeai", "google-generativeai")
        unknown = set(defaults) - set(_CALL_KEYS)
        if unknown:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(unknown))}")
        self._model = model
        self.model = str(getattr(model, "model_name", "") or "")
        self.defaults = dict(defaults)
        self.output_reserve = output_reserve
        self._tokenizer = tokenizer
        self._extract = make_extractor(extract, {"text": _text})
        self._configured: GenerativeAIConfig | None = None  # set where it was unpickled

    def __getstate__(self) -> dict[str, Any]:
        # The model's settings, without its clients, and the process's genai.configure().
        state = self.__dict__.copy()
        model = self._model
        state["_model"] = (type(model), {k: v for k, v in vars(model).items()
                                         if k not in _MODEL_CLIENTS})
        # A copy that travelled keeps the settings it came with: Dask's scheduler unpickles
        # and pickles tasks again in a process where genai.configure() was never called.
        configured = self._configured
        state["_configured"] = configured if configured is not None else (
            GenerativeAIConfig.current())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        cls, fields = state["_model"]
        model = cls.__new__(cls)
        model.__dict__.update(fields)
        for name in _MODEL_CLIENTS:
            setattr(model, name, None)
        self.__dict__.update(state)
        self._model = model

    def identity(self) -> Mapping[str, Any]:
        """Provider, model, the model's and the adapter's generation settings; no key."""
        model_config = _as_dict(getattr(self._model, "_generation_config", None))
        params = jsonable_params({**model_config, **self.defaults})
        system = getattr(self._model, "_system_instruction", None)
        if system is not None:  # part of the work: another system prompt, other answers
            try:
                params["system_instruction"] = to_jsonable(system)
            except TypeError:
                params["system_instruction"] = str(system)
        return {
            "provider": self.name,
            "method": "generate_content",
            "model": self.model,
            "params": params,
        }

    def request(self, item: Any) -> dict[str, Any]:
        """The keyword arguments one call sends for ``item``."""
        request: dict[str, Any] = dict(self.defaults)
        if isinstance(item, Mapping):
            request.update(item)
        else:
            request["contents"] = item
        return request

    def request_problem(self, item: Any) -> str | None:
        """Why the SDK would refuse the request for ``item`` before sending it, or None."""
        if not isinstance(item, Mapping) or item.get("contents"):
            return None
        return 'the request has no "contents", which google-generativeai needs'

    def estimate(self, item: Any) -> Cost:
        """Prompt tokens plus ``max_output_tokens`` times ``candidate_count``."""
        request = self.request(item)
        prompt = count_tokens(
            [request.get("contents"), getattr(self._model, "_system_instruction", None)],
            tokenizer=self._tokenizer,
        )
        config = {
            **_as_dict(getattr(self._model, "_generation_config", None)),
            **_as_dict(request.get("generation_config")),
        }
        output = first_number(config, "max_output_tokens")
        n = first_number(config, "candidate_count") or 1.0
        reserved = (output if output is not None else self.output_reserve) * n
        return Cost(1.0, prompt + reserved, reserved)

    def call(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """One attempt of ``model.generate_content`` with the SDK's retry switched off."""
        request = self.request(item)
        contents = request.pop("contents", None)
        options: dict[str, Any] = dict(request.pop("request_options", None) or {})
        options["retry"] = None
        if timeout is not None:
            options["timeout"] = timeout
        try:
            if self._configured is not None:
                self._configured.apply()  # once per process: a no-op when already applied
            result = self._model.generate_content(contents, request_options=options, **request)
        except Exception as exc:
            name_endpoint(exc)
            raise
        value = self._extract(result) if self._extract is not None else result
        # This SDK gives no access to the headers of a successful response.
        return CallResult(value, usage_from(result), None)

    def classify(self, exc: BaseException) -> Verdict:
        """``GoogleAPICallError`` by ``code`` and ``details``; raw requests errors retry."""
        core = require("google.api_core.exceptions", "google-generativeai",
                       "google-generativeai")
        setup = classify_setup(exc)
        if setup is not None:
            return setup
        if isinstance(exc, core.GoogleAPICallError) and isinstance(exc.code, int):
            headers = getattr(getattr(exc, "response", None), "headers", None)
            return classify_http(exc.code, headers, _error_body(exc))
        return classify_transport(exc) or default_classifier(exc)

    def rate_info(self, exc: BaseException) -> RateInfo | None:
        """Headers of a failed REST call, with ``RetryInfo`` as the hint when no header."""
        headers = getattr(getattr(exc, "response", None), "headers", None)
        return rate_info_with_hint(headers, server_hint(headers, _error_body(exc)))
