"""From settings to an adapter: provider name, model, base URL and the key from the env."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from ..adapters import Adapter, make_adapter
from ..errors import ConfigError, ThrottlepoolError

#: Environment variables each SDK reads its key from, in the SDK's own order of preference.
KEY_VARS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "google-generativeai": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}
#: ``extract=`` each provider gets unless ``--extract`` says otherwise: the reply's text.
DEFAULT_EXTRACT = {"openai": "text", "gemini": "text", "google-generativeai": "text"}
PROVIDER_NAMES = ("openai", "gemini", "google-generativeai", "http", "python:MODULE:FUNCTION")


def split_provider(provider: str) -> tuple[str, str | None]:
    """``"python:pkg.mod:fn"`` -> ``("python", "pkg.mod:fn")``; others pass through."""
    name, sep, target = provider.partition(":")
    if name == "python":
        if not sep or ":" not in target:
            raise ConfigError("the python provider is written python:MODULE:FUNCTION, "
                              f"e.g. python:mypkg.calls:ask (got {provider!r})")
        return name, target
    return provider, None


def api_key(provider: str, env: Mapping[str, str] | None = None) -> str | None:
    """The provider's key from its usual variables; a ConfigError names them if all unset."""
    names = KEY_VARS.get(provider)
    if not names:
        return None
    env = os.environ if env is None else env
    for var in names:
        if env.get(var):
            return env[var]
    raise ConfigError(f"no API key for the {provider} provider: set "
                      f"{' or '.join(names)} in the environment")


def build_adapter(provider: str, *, model: str | None = None, base_url: str | None = None,
                  extract: str | None = None, env: Mapping[str, str] | None = None
                  ) -> Adapter[Any]:
    """The adapter ``throttlepool run`` calls; every problem is a ThrottlepoolError."""
    name, target = split_provider(provider)
    options: dict[str, Any] = {"model": model, "base_url": base_url}
    if name == "python":
        options["target"] = target
        # Like `python -m`, let a module next to the user's data import: the console script
        # does not put the current directory on sys.path by itself.
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
    elif name == "http":
        if not base_url:
            raise ConfigError("the http provider needs --base-url, the endpoint's full URL "
                              "(e.g. http://127.0.0.1:8080/echo)")
        options["url"] = options.pop("base_url")
    if name in KEY_VARS:
        options["api_key"] = api_key(name, env)
    chosen = extract if extract is not None else DEFAULT_EXTRACT.get(name)
    if chosen not in (None, "raw"):
        options["extract"] = chosen
    try:
        return make_adapter(name, **options)
    except ThrottlepoolError:
        raise
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {target or name!r}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"provider {provider!r}: {exc}") from None


def request_preview(adapter: Adapter[Any], item: Any) -> Any:
    """What one call sends for ``item``: the SDK parameters or HTTP body when known."""
    for attr in ("params", "body", "request"):
        build = getattr(adapter, attr, None)
        if callable(build):
            try:
                return build(item)
            except Exception:  # a preview must never stop a dry run
                break
    return item
