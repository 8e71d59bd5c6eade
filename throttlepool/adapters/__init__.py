"""Provider adapters: how the runner calls a client, estimates its cost and reads its errors.

SDK modules are imported lazily, so ``import throttlepool.adapters`` works without any SDK
installed; constructing an adapter whose SDK is missing raises :class:`MissingExtra`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..classify import Classifier
from ..errors import ConfigError
from .base import Adapter, CallResult, Delegating
from .common import classify_http, server_hint, to_jsonable
from .function import CallableAdapter
from .http import HttpAdapter
from .tokens import count_tokens, usage_from

if TYPE_CHECKING:
    from .anthropic import AnthropicAdapter
    from .google_genai import GenAIAdapter
    from .google_generativeai import GenerativeModelAdapter
    from .openai import OpenAIAdapter

__all__ = [
    "PROVIDERS",
    "Adapter",
    "AnthropicAdapter",
    "CallResult",
    "CallableAdapter",
    "Delegating",
    "GenAIAdapter",
    "GenerativeModelAdapter",
    "HttpAdapter",
    "NotAnAdapter",
    "OpenAIAdapter",
    "as_adapter",
    "classify_http",
    "count_tokens",
    "is_provider_name",
    "load_callable",
    "make_adapter",
    "server_hint",
    "to_jsonable",
    "usage_from",
]

_LAZY = {
    "AnthropicAdapter": ".anthropic",
    "OpenAIAdapter": ".openai",
    "GenAIAdapter": ".google_genai",
    "GenerativeModelAdapter": ".google_generativeai",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_callable(target: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (or ``module:Class.method``)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected 'module:function', got {target!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{target!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _openai(options: dict[str, Any]) -> Adapter[Any]:
    from .common import require
    from .openai import OpenAIAdapter

    client = options.pop("client", None)
    if client is None:
        openai = require("openai", "openai", "openai")
        keys = {k: options.pop(k) for k in ("api_key", "base_url", "organization")
                if k in options}
        client = openai.OpenAI(**keys)
    return OpenAIAdapter(client, **options)


def _anthropic(options: dict[str, Any]) -> Adapter[Any]:
    from .anthropic import AnthropicAdapter
    from .common import require

    client = options.pop("client", None)
    if client is None:
        anthropic = require("anthropic", "anthropic", "anthropic")
        # base_url None: the SDK reads ANTHROPIC_BASE_URL itself, as the user's client would.
        keys = {k: options.pop(k) for k in ("api_key", "base_url") if k in options}
        client = anthropic.Anthropic(**keys)
    return AnthropicAdapter(client, **options)


def _gemini(options: dict[str, Any]) -> Adapter[Any]:
    from .common import require
    from .google_genai import GenAIAdapter

    client = options.pop("client", None)
    if client is None:
        genai = require("google.genai", "google-genai", "gemini")
        http: dict[str, Any] = {}
        if "base_url" in options:
            http["base_url"] = options.pop("base_url")
        if "api_version" in options:
            http["api_version"] = options.pop("api_version")
        client = genai.Client(api_key=options.pop("api_key", None), http_options=http or None)
    return GenAIAdapter(client, **options)


def _generativeai(options: dict[str, Any]) -> Adapter[Any]:
    from .common import require
    from .google_generativeai import GenerativeModelAdapter

    model = options.pop("client", None)
    if model is None:
        genai = require("google.generativeai", "google-generativeai", "google-generativeai")
        if "model" not in options:
            raise ConfigError("the google-generativeai provider needs a model")
        configure: dict[str, Any] = {}
        if "api_key" in options:
            configure["api_key"] = options.pop("api_key")
        if "base_url" in options:
            # REST is the only transport a plain HTTP endpoint (or the simulator) speaks.
            configure["transport"] = "rest"
            configure["client_options"] = {"api_endpoint": options.pop("base_url")}
        if configure:
            genai.configure(**configure)  # process-global, as in the SDK itself
        system = options.pop("system_instruction", None)
        model = genai.GenerativeModel(options.pop("model"), system_instruction=system)
    else:
        options.pop("model", None)
    return GenerativeModelAdapter(model, **options)


def _http(options: dict[str, Any]) -> Adapter[Any]:
    url = options.pop("url", None) or options.pop("base_url", None)
    if not url:
        raise ConfigError("the http provider needs a url")
    options.pop("model", None)
    api_key = options.pop("api_key", None)
    if api_key is not None:
        headers = dict(options.pop("headers", None) or {})
        if not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = f"Bearer {api_key}"
        options["headers"] = headers
    return HttpAdapter(url, **options)


def _python(options: dict[str, Any]) -> Adapter[Any]:
    target = options.pop("target", None) or options.pop("function", None)
    if target is None:
        raise ConfigError("the python provider needs target='module:function'")
    for unused in ("model", "base_url", "api_key"):  # CLI-wide options a function ignores
        options.pop(unused, None)
    fn = load_callable(target) if isinstance(target, str) else target
    return CallableAdapter(fn, **options)


#: Provider names the CLI accepts, and the factory behind each.
PROVIDERS: dict[str, Callable[[dict[str, Any]], Adapter[Any]]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "gemini": _gemini,
    "google-generativeai": _generativeai,
    "http": _http,
    "python": _python,
}
_ALIASES = {"google-genai": "gemini", "genai": "gemini", "requests": "http",
            "callable": "python", "generativeai": "google-generativeai"}
#: Names people try that have no adapter yet, and what to use meanwhile.
NOT_YET: dict[str, str] = {}


def is_provider_name(name: str) -> bool:
    """A provider name or alias :func:`make_adapter` accepts (``python`` included)."""
    return name in PROVIDERS or name in _ALIASES


def unknown_provider(provider: str) -> str:
    """The message for a provider name that is not known, with a "did you mean" when close."""
    known = [*PROVIDERS, *_ALIASES, *NOT_YET]
    close = difflib.get_close_matches(provider.lower(), known, n=1, cutoff=0.6)
    text = f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}"
    if provider.lower() in NOT_YET:
        return f"{text} ({provider} is not supported yet: {NOT_YET[provider.lower()]})"
    if close and close[0] in NOT_YET:
        return (f"{text} (did you mean {close[0]!r}? it is not supported yet: "
                f"{NOT_YET[close[0]]})")
    if close:
        return f"{text} (did you mean {_ALIASES.get(close[0], close[0])!r}?)"
    return text


def make_adapter(provider: str, **options: Any) -> Adapter[Any]:
    """Build the adapter for a provider name; options set to None are ignored.

    ``openai``: ``client`` or ``api_key``/``base_url``, then ``model``, ``method`` and request
    parameters. ``anthropic``: ``client`` or ``api_key``/``base_url``, then ``model``,
    ``max_tokens`` and request parameters. ``gemini``: ``client`` or
    ``api_key``/``base_url``/``api_version``, ``model``.
    ``google-generativeai``: ``client`` (a GenerativeModel) or ``model``/``api_key``/
    ``base_url``. ``http``: ``url``, ``method``, ``headers`` (``api_key`` becomes a Bearer
    ``Authorization`` header). ``python``: ``target`` (``module:function``).
    """
    name = _ALIASES.get(provider, provider)
    factory = PROVIDERS.get(name)
    if factory is None:
        raise ConfigError(unknown_provider(provider))
    return factory({k: v for k, v in options.items() if v is not None})


class NotAnAdapter(ConfigError, TypeError):
    """What was given as the call is neither an adapter nor a callable (nor a known model)."""


def as_adapter(obj: Any, *, estimate: Callable[[Any], float] | None = None,
               classifier: Classifier | None = None) -> Adapter[Any]:
    """The adapter for ``obj``, the one path every entry point takes.

    An adapter passes through (one that has the methods without deriving from
    :class:`Adapter` gets its defaults); a google-generativeai ``GenerativeModel`` is
    wrapped; a plain callable becomes a :class:`CallableAdapter` with ``estimate`` and
    ``classifier``. An SDK client alone raises: its adapter needs the model.
    """
    if isinstance(obj, Adapter):
        return obj if Adapter in type(obj).__mro__ else Delegating(obj)
    module = type(obj).__module__ or ""
    if module.startswith("google.generativeai") and hasattr(obj, "generate_content"):
        from .google_generativeai import GenerativeModelAdapter

        return GenerativeModelAdapter(obj)
    if module.startswith(("openai", "google.genai", "anthropic")):
        raise NotAnAdapter(
            f"wrap the {type(obj).__name__} client in an adapter that names the model, e.g. "
            "OpenAIAdapter(client, model=...), AnthropicAdapter(client, model=...) or "
            "GenAIAdapter(client, model=...)"
        )
    if callable(obj):
        return CallableAdapter(obj, estimate=estimate, classifier=classifier)
    raise NotAnAdapter(f"expected a callable or an adapter, got {type(obj).__name__}")
