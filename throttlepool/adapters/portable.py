"""SDK clients that travel to other processes (Dask workers) as their settings, not as objects.

An SDK client holds locks and connection pools, which cannot be pickled. What makes it *that*
client is a handful of constructor settings: base URL, key, organisation and project,
default headers and query, timeout, API version. :class:`ClientSpec` records them when an
adapter is pickled, and the receiving process rebuilds the client from them once and reuses
it for every later adapter with the same settings (:func:`client_for`). An async client is
rebuilt once per event loop instead, since its pooled connections belong to one loop.

google-generativeai keeps its settings in process-wide state (``genai.configure``);
:class:`GenerativeAIConfig` carries that state and applies it once per process.

The key travels inside the pickle (the cluster's own wire) and nowhere else: ``repr`` masks
it, and adapters never put it in ``identity()`` (which reaches the checkpoint).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import pickle
import socket
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .common import require

#: Settings that are credentials: masked in ``repr``; a missing one is looked up in ``env``.
SECRETS = frozenset({"api_key", "auth_token"})
#: Headers google-genai builds itself from its other settings (the key among them).
_GENAI_OWN_HEADERS = frozenset({"content-type", "x-goog-api-key", "user-agent",
                                "x-goog-api-client"})


def _plain_timeout(timeout: Any) -> Any:
    """An SDK ``Timeout`` as a dict of floats: the worker may not have httpx2's class."""
    if timeout is None or isinstance(timeout, (int, float)):
        return timeout
    parts = {k: getattr(timeout, k, None) for k in ("connect", "read", "write", "pool")}
    return {"timeout_parts": parts}


def _sdk_timeout(module: Any, timeout: Any) -> Any:
    if isinstance(timeout, Mapping) and "timeout_parts" in timeout:
        parts = timeout["timeout_parts"]
        return module.Timeout(parts["read"], connect=parts["connect"], write=parts["write"],
                              pool=parts["pool"])
    return timeout


@dataclass(frozen=True)
class ClientSpec:
    """How to rebuild one SDK client elsewhere: its class and its constructor settings.

    ``env`` names the variables the SDK reads a missing key from, for the error a worker
    raises when neither the spec nor its environment has one.
    """

    sdk: str  # "openai", "anthropic", "google-genai": names the extra and the messages
    cls: str  # "module:Class" of the client to construct
    settings: Mapping[str, Any]
    env: tuple[str, ...] = ()
    is_async: bool = False
    needs_key: bool = True
    _key: bytes = field(default=b"", repr=False, compare=False)

    def __repr__(self) -> str:
        shown = {k: ("***" if k in SECRETS and v else v) for k, v in self.settings.items()}
        return f"ClientSpec({self.cls}, {shown})"

    @property
    def cache_key(self) -> bytes:
        """Equal for specs that build the same client (a digest, so no key is kept twice)."""
        if not self._key:
            raw = pickle.dumps((self.cls, sorted(self.settings.items())))
            object.__setattr__(self, "_key", hashlib.sha256(raw).digest())
        return self._key

    def missing(self) -> str | None:
        """The setting this process lacks to build the client, or None."""
        if not self.needs_key or any(self.settings.get(k) for k in SECRETS):
            return None
        if any(os.environ.get(var) for var in self.env):
            return None
        names = " or ".join(self.env) if self.env else "api_key"
        return f"no API key: the client had none and {names} is not set"

    def build(self) -> Any:
        """A new client from the settings; ConfigError names a setting this process lacks."""
        problem = self.missing()
        if problem is not None:
            raise ConfigError(f"cannot rebuild the {self.sdk} client on "
                              f"{socket.gethostname()} (pid {os.getpid()}): {problem}")
        module_name, _, name = self.cls.partition(":")
        extra = {"openai": "openai", "anthropic": "anthropic", "google-genai": "gemini"}
        module = require(module_name, self.sdk, extra.get(self.sdk, self.sdk))
        settings = dict(self.settings)
        if self.sdk == "google-genai":
            http = dict(settings.pop("http_options", None) or {})
            client = module.Client(**settings, http_options=http or None)
            return client.aio if self.is_async else client
        if "timeout" in settings:
            settings["timeout"] = _sdk_timeout(importlib.import_module(self.sdk),
                                               settings["timeout"])
        return getattr(module, name)(**settings)


_clients: dict[bytes, Any] = {}
_loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bytes, Any]] = (
    weakref.WeakKeyDictionary())
_lock = threading.Lock()


def client_for(spec: ClientSpec) -> Any:
    """This process's client for ``spec``: built on first use, then shared.

    An async client is per running event loop (its connections belong to that loop).
    """
    with _lock:
        if spec.is_async:
            cache = _loop_clients.setdefault(asyncio.get_running_loop(), {})
        else:
            cache = _clients
        client = cache.get(spec.cache_key)
        if client is None:
            client = cache[spec.cache_key] = spec.build()
        return client


def _exact_class(client: Any, sdk: str, names: tuple[str, ...]) -> str:
    cls = type(client)
    module = require(sdk, sdk, sdk)
    for name in names:
        if cls is getattr(module, name, None):
            return f"{sdk}:{name}"
    raise TypeError(
        f"a {cls.__module__}.{cls.__qualname__} client cannot be sent to other processes "
        f"(only {' and '.join(f'{sdk}.{n}' for n in names)} are rebuilt there); on Dask, "
        "pass method=fn(client, **params) building your own client, or run locally")


def openai_spec(client: Any) -> ClientSpec:
    """The settings of an ``openai.OpenAI`` or ``AsyncOpenAI`` client (SDK retries off)."""
    cls = _exact_class(client, "openai", ("OpenAI", "AsyncOpenAI"))
    settings = {
        "api_key": client.api_key, "organization": client.organization,
        "project": client.project, "base_url": str(client.base_url),
        "timeout": _plain_timeout(client.timeout), "max_retries": 0,
        "default_headers": dict(client._custom_headers) or None,
        "default_query": dict(client._custom_query) or None,
    }
    return ClientSpec("openai", cls, settings, ("OPENAI_API_KEY",),
                      is_async=cls.endswith("AsyncOpenAI"))


def anthropic_spec(client: Any) -> ClientSpec:
    """The settings of an ``anthropic.Anthropic`` or ``AsyncAnthropic`` client."""
    cls = _exact_class(client, "anthropic", ("Anthropic", "AsyncAnthropic"))
    settings = {
        "api_key": client.api_key, "auth_token": client.auth_token,
        "base_url": str(client.base_url), "timeout": _plain_timeout(client.timeout),
        "max_retries": 0, "default_headers": dict(client._custom_headers) or None,
        "default_query": dict(client._custom_query) or None,
    }
    return ClientSpec("anthropic", cls, settings, ("ANTHROPIC_API_KEY",),
                      is_async=cls.endswith("AsyncAnthropic"))


def genai_spec(client: Any) -> ClientSpec:
    """The settings of a ``google.genai.Client`` or its ``client.aio``."""
    require("google.genai", "google-genai", "gemini")
    from google.genai import client as genai_client

    if not isinstance(client, (genai_client.Client, genai_client.AsyncClient)):
        raise TypeError(f"expected a google.genai Client, got {type(client).__name__}")
    api = client._api_client
    options = api._http_options
    headers = {k: v for k, v in (options.headers or {}).items()
               if k.lower() not in _GENAI_OWN_HEADERS}
    http = {"base_url": options.base_url,
            "api_version": options.api_version, "headers": headers or None,
            "timeout": options.timeout}
    settings: dict[str, Any] = {"http_options": {k: v for k, v in http.items() if v}}
    if api.vertexai:  # Vertex authenticates with the worker's own Google credentials
        settings.update(vertexai=True, project=api.project, location=api.location)
    else:
        settings["api_key"] = api.api_key
    return ClientSpec("google-genai", "google.genai:Client", settings,
                      ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
                      is_async=isinstance(client, genai_client.AsyncClient),
                      needs_key=not api.vertexai)


@dataclass(frozen=True)
class GenerativeAIConfig:
    """google-generativeai's process-wide ``genai.configure`` state, as plain settings."""

    api_key: str | None
    transport: str | None
    api_endpoint: str | None
    default_metadata: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        key = "***" if self.api_key else None
        return (f"GenerativeAIConfig(api_key={key}, transport={self.transport!r}, "
                f"api_endpoint={self.api_endpoint!r})")

    @classmethod
    def current(cls) -> GenerativeAIConfig:
        """What ``genai.configure`` last set in this process."""
        from google.generativeai import client as gai_client

        manager = gai_client._client_manager
        config = manager.client_config
        options = config.get("client_options")
        return cls(getattr(options, "api_key", None), config.get("transport"),
                   getattr(options, "api_endpoint", None),
                   tuple(tuple(pair) for pair in manager.default_metadata))  # type: ignore[misc]

    def apply(self) -> None:
        """Make this the process's configuration, unless it already is."""
        with _lock:
            if GenerativeAIConfig.current() == self:
                return
            env = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS")
            if not self.api_key and not any(os.environ.get(v) for v in env):
                raise ConfigError(
                    f"cannot configure google-generativeai on {socket.gethostname()} "
                    f"(pid {os.getpid()}): no API key: genai.configure() had none and "
                    "GOOGLE_API_KEY is not set")
            genai = require("google.generativeai", "google-generativeai",
                            "google-generativeai")
            options: dict[str, Any] = {}
            if self.api_key:
                options["api_key"] = self.api_key
            if self.api_endpoint:
                options["api_endpoint"] = self.api_endpoint
            genai.configure(transport=self.transport, client_options=options or None,
                            default_metadata=self.default_metadata)


class SdkClient:
    """An adapter's SDK client: the user's own object where the adapter was built, rebuilt
    from its :class:`ClientSpec` in any process the adapter is unpickled in.

    ``spec_of`` reads the settings off the user's client; it runs only when the adapter is
    pickled (an Azure or custom client that cannot travel still works locally).
    """

    def __init__(self, client: Any, spec_of: Callable[[Any], ClientSpec]) -> None:
        self._client: Any = client
        self._spec_of: Callable[[Any], ClientSpec] | None = spec_of
        self._spec: ClientSpec | None = None
        self._init_loops()

    def _init_loops(self) -> None:
        # An async client's pooled connections belong to the loop that opened them: a second
        # loop (another runner, call() from a thread) gets a client with its own pool.
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary())
        self._loops_lock = threading.Lock()
        self._first_loop_taken = False

    @property
    def spec(self) -> ClientSpec:
        """The settings that rebuild this client elsewhere (read once, on first need)."""
        if self._spec is None:
            assert self._spec_of is not None
            self._spec = self._spec_of(self._client)
        return self._spec

    @property
    def local(self) -> Any:
        """The client as given (None in a process that rebuilt it from its spec)."""
        return self._client

    def get(self) -> Any:
        """The client for a call made from a thread."""
        if self._client is None:
            self._client = client_for(self.spec)
        return self._client

    def for_loop(self) -> Any:
        """The async client for the running event loop."""
        if self._client is None:
            return client_for(self.spec)
        loop = asyncio.get_running_loop()
        with self._loops_lock:
            client = self._loops.get(loop)
            if client is None:
                if not self._first_loop_taken:
                    client, self._first_loop_taken = self._client, True
                else:
                    client = self.spec.build()
                self._loops[loop] = client
            return client

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._client, self._spec_of, self._spec = None, None, state["spec"]
        self._init_loops()

    def __repr__(self) -> str:
        return f"SdkClient({self._spec!r})" if self._spec is not None else "SdkClient(local)"
