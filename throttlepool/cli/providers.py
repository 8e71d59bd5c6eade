"""From settings to an adapter: provider name, model, base URL and the key from the env."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..adapters import Adapter, is_provider_name, make_adapter
from ..errors import ConfigError, ThrottlepoolError

#: Environment variables each SDK reads its key from, in the SDK's own order of preference.
KEY_VARS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "google-generativeai": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}
#: ``extract=`` each provider gets unless ``--extract`` says otherwise: the reply's text.
DEFAULT_EXTRACT = {"openai": "text", "anthropic": "text", "gemini": "text",
                   "google-generativeai": "text"}
PROVIDER_NAMES = ("openai", "anthropic", "gemini", "google-generativeai", "http",
                  "python:MODULE:FUNCTION")


def split_provider(provider: str) -> tuple[str, str | None]:
    """``"python:pkg.mod:fn"`` -> ``("python", "pkg.mod:fn")``; others pass through."""
    name, sep, target = provider.partition(":")
    if name == "python":
        if not sep or ":" not in target:
            raise ConfigError("the python provider is written python:MODULE:FUNCTION, "
                              f"e.g. python:mypkg.calls:ask (got {provider!r})")
        return name, target
    return provider, None


#: Stands in for a missing key in a dry run, which builds the client but sends nothing.
DRY_RUN_KEY = "dry-run-sends-nothing"


def key_hint(provider: str) -> str:
    """Where the provider's key comes from, for messages: ``OPENAI_API_KEY``."""
    names = KEY_VARS.get(split_provider(provider)[0])
    return " or ".join(names) if names else "--api-key or --header 'Authorization: ...'"


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


def missing_key(provider: str, env: Mapping[str, str] | None = None) -> str | None:
    """The variables to set when the provider needs a key and none is set, else None."""
    names = KEY_VARS.get(split_provider(provider)[0])
    env = os.environ if env is None else env
    if not names or any(env.get(var) for var in names):
        return None
    return " or ".join(names)


def looks_like_provider(text: str) -> bool:
    """A provider name (or alias, or ``python:...``): what ``-p`` meant before ``--param``."""
    name = text.strip().lower()
    return name.startswith("python:") or is_provider_name(name)


def parse_value(text: str) -> Any:
    """A ``--param`` value: JSON when it parses (``0.2``, ``true``, ``{"a": 1}``), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(entries: Iterable[str]) -> dict[str, Any]:
    """``["temperature=0.2", "response_format.type=json_object"]`` -> a nested dict."""
    out: dict[str, Any] = {}
    for entry in entries:
        key, sep, raw = entry.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param expects NAME=VALUE, got {entry!r} (the provider is "
                              "-P/--provider)")
        target = out
        *parents, leaf = key.split(".")
        for part in parents:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise ConfigError(f"--param {key}: {part!r} is already set to a value")
            target = nested
        target[leaf] = parse_value(raw)
    return out


def parse_headers(entries: Iterable[str]) -> dict[str, str]:
    """``["X-Team: ml"]`` -> ``{"X-Team": "ml"}``; a ConfigError names a malformed one."""
    headers: dict[str, str] = {}
    for entry in entries:
        name, sep, value = entry.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise ConfigError(f"--header expects 'Name: value', got {entry.partition(':')[0]!r}"
                              "...")
        headers[name.strip()] = value.strip()
    return headers


@dataclass(frozen=True)
class RequestOptions:
    """What the command line adds to every request body (``--system``, ``-p``...)."""

    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """No option was given."""
        return (self.system is None and self.temperature is None and self.max_tokens is None
                and not self.params)

    def for_provider(self, name: str) -> dict[str, Any]:
        """The adapter options that carry these settings for provider ``name``."""
        sampling: dict[str, Any] = (
            {} if self.temperature is None else {"temperature": self.temperature})
        if name == "openai":
            body = {**sampling, **({"max_tokens": self.max_tokens} if self.max_tokens else {})}
            return {"system": self.system, "request_params": {**body, **self.params}}
        if name == "anthropic":  # max_tokens is required there: its own argument
            return {"system": self.system, "max_tokens": self.max_tokens,
                    "request_params": {**sampling, **self.params}}
        if name == "gemini":
            config = {**sampling, **({"max_output_tokens": self.max_tokens}
                                     if self.max_tokens else {})}
            if self.system is not None:
                config["system_instruction"] = self.system
            return {"config": {**config, **self.params}}
        if name == "google-generativeai":
            config = {**sampling, **({"max_output_tokens": self.max_tokens}
                                     if self.max_tokens else {})}
            merged = {**config, **self.params}
            return {"system_instruction": self.system,
                    "generation_config": merged or None}
        if name == "http":
            body = {**sampling, **({"max_tokens": self.max_tokens} if self.max_tokens else {})}
            if self.system is not None:
                body["system"] = self.system
            return {"body": {**body, **self.params}}
        raise ConfigError(f"--system, --temperature, --max-tokens and --param do not apply to "
                          f"--provider {name}: the function builds its own request")


#: Providers whose adapters read the model's text answer: streaming and structured output.
ANSWERING = ("openai", "anthropic", "gemini")


def load_schema(path: str) -> dict[str, Any]:
    """The JSON Schema in file ``path``; a ConfigError names the file (and line) if unusable."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            schema = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"--schema {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--schema {path}: not UTF-8 text") from None
    except ValueError as exc:
        where = (f" at line {exc.lineno} column {exc.colno}"
                 if isinstance(exc, json.JSONDecodeError) else "")
        raise ConfigError(f"--schema {path}: not valid JSON{where}") from None
    if not isinstance(schema, dict):
        raise ConfigError(f"--schema {path}: a JSON Schema is a JSON object, "
                          f"got {type(schema).__name__}")
    return schema


def answer_options(name: str, *, stream: bool = False, schema: str | None = None,
                   json_retries: int | None = None) -> dict[str, Any]:
    """The adapter options for ``--stream``, ``--schema`` and ``--json-retries``."""
    flags = (("--stream", stream), ("--schema", schema), ("--json-retries", json_retries))
    given = [flag for flag, value in flags if value not in (None, False)]
    if given and name not in ANSWERING:
        verb = "apply" if len(given) > 1 else "applies"
        raise ConfigError(f"{' and '.join(given)} {verb} to --provider "
                          f"{', '.join(ANSWERING)} only, not {name}")
    options: dict[str, Any] = {"json_retries": json_retries}
    if stream:
        options["stream"] = True
    if schema is not None:
        options["schema"] = load_schema(schema)
    return options


def build_adapter(provider: str, *, model: str | None = None, base_url: str | None = None,
                  extract: str | None = None, env: Mapping[str, str] | None = None,
                  request: RequestOptions | None = None, key: str | None = None,
                  headers: Mapping[str, str] | None = None, dry_run: bool = False,
                  stream: bool = False, schema: str | None = None,
                  json_retries: int | None = None) -> Adapter[Any]:
    """The adapter ``throttlepool run`` calls; every problem is a ThrottlepoolError.

    ``key`` (``--api-key``) wins over the environment; a dry run without any key gets a
    stand-in, since it sends nothing. ``model`` may be None: a command that calls no model
    (``cancel``) needs none, and ``run`` checks for one itself (preflight.check_model).
    ``schema`` is a JSON Schema file's path (read here, before any call) and implies
    ``extract="json"``.
    """
    name, target = split_provider(provider)
    options: dict[str, Any] = {"model": model, "base_url": base_url}
    options.update(answer_options(name, stream=stream, schema=schema,
                                  json_retries=json_retries))
    if schema is not None:
        if extract not in (None, "json"):
            raise ConfigError(f"--schema implies --extract json, not --extract {extract}")
        extract = "json"
    if request is not None and not request.empty:
        options.update(request.for_provider(name))
    if headers:
        if name != "http":
            raise ConfigError("--header applies to --provider http only (the SDK providers "
                              "send their own headers)")
        options["headers"] = dict(headers)
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
    if key is not None:
        if name == "python":
            raise ConfigError("--api-key does not apply to --provider python: the function "
                              "brings its own client")
        options["api_key"] = key
    elif name in KEY_VARS:
        options["api_key"] = (DRY_RUN_KEY if dry_run and missing_key(name, env)
                              else api_key(name, env))
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
