"""Parsers of option values: one per kind, shared by flags, variables, files and the value
objects' own checks. Each raises ValueError with what it expected; callers add the name."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..limiter.limits import Limit
from ..limiter.url import check_limiter_url

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

Parser = Callable[[Any], Any]


def text(value: Any) -> str:
    """A string, as given."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def limiter_url(value: Any) -> str:
    """A limiter URL (``redis://host:6379/0``, ``sqlite:///path``) that can be opened."""
    return check_limiter_url(text(value))


def scheduler_address(value: Any) -> str:
    """A Dask scheduler address with a host and, when it has a port, a numeric one:
    ``tcp://host:8786``, ``host:8786``, ``tls://host:8786``."""
    address = text(value)
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or parts.netloc.endswith(":"):
        raise ValueError(f"{address!r} is not a Dask scheduler address: expected "
                         "tcp://host:8786 (a host and a port number)")
    return address


def integer(value: Any) -> int:
    """An int, or a string of digits (an environment variable); never a bool."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def positive_int(value: Any) -> int:
    """An integer >= 1."""
    n = integer(value)
    if n < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return n


def non_negative_int(value: Any) -> int:
    """An integer >= 0."""
    n = integer(value)
    if n < 0:
        raise ValueError(f"expected an integer >= 0, got {value!r}")
    return n


def number(value: Any) -> float:
    """A float, an int or a numeric string; never a bool."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def positive_float(value: Any) -> float:
    """A number > 0 (NaN is not)."""
    x = number(value)
    if not x > 0:
        raise ValueError(f"expected a positive number, got {value!r}")
    return x


def non_negative_float(value: Any) -> float:
    """A number >= 0 (NaN is not)."""
    x = number(value)
    if not x >= 0:
        raise ValueError(f"expected a number >= 0, got {value!r}")
    return x


def text_list(value: Any) -> tuple[str, ...]:
    """Repeatable options: a flag's tuple, a TOML list, or one string (an env variable,
    several entries separated by newlines)."""
    if isinstance(value, str):
        return tuple(part for part in value.splitlines() if part.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"expected a string or a list of strings, got {value!r}")


def limit_specs(value: Any) -> tuple[str, ...]:
    """Repeatable limit specs (``"16/second"``, ``"400000 input tokens/minute"``), each one
    parsed as the library parses ``limits=[...]``: a bad one is refused before anything runs."""
    specs = text_list(value)
    for spec in specs:
        try:
            Limit.parse(spec)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return specs


def params(value: Any) -> tuple[str, ...]:
    """``param``: ``key=value`` strings, or (in a config file) a table of request fields."""
    if isinstance(value, dict):
        return tuple(f"{k}={json.dumps(v)}" for k, v in value.items())
    return text_list(value)


def boolean(value: Any) -> bool:
    """A bool, or true/false, yes/no, on/off, 1/0 as text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {value!r}")


def checked(name: str, parse: Parser, value: Any) -> Any:
    """``parse(value)``, or a ConfigError that names the option: ``batch_size: expected ...``."""
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
