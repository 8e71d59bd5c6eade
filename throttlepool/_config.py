"""Run settings from flags, then ``THROTTLEPOOL_*`` environment variables, then a config file.

The file is the first ``throttlepool.toml`` (top-level keys, or a ``[tool.throttlepool]``
table) or ``pyproject.toml`` with a ``[tool.throttlepool]`` table found in the current
directory or its parents, or the file named by ``--config`` / ``THROTTLEPOOL_CONFIG``.
Keys are the flag names with ``_`` or ``-``: ``batch_size = 8``, ``rpm = 500``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .options import OPTIONS
from .store.redact import redact_text

ENV_PREFIX = "THROTTLEPOOL_"
CONFIG_ENV = "THROTTLEPOOL_CONFIG"


#: Every setting a flag, variable or file may give, with its parser (from the one table).
PARSERS: dict[str, Callable[[Any], Any]] = {option.name: option.parse for option in OPTIONS}

#: The settings that have a default when nothing gives them.
DEFAULTS: dict[str, Any] = {option.name: option.default for option in OPTIONS
                            if option.default is not None}


@dataclass
class Settings:
    """Resolved settings; ``sources`` says where each one came from (for ``-v``)."""

    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    file: Path | None = None

    def __getitem__(self, name: str) -> Any:
        return self.values.get(name)

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name``, or ``default`` when it is unset."""
        value = self.values.get(name)
        return default if value is None else value

    def describe(self) -> list[str]:
        """``name = value  (source)`` lines, for ``-v``, with URL passwords and keys masked.

        ``--limiter-url redis://:PASS@host`` and ``--base-url https://u:PASS@h/v1?key=K`` are
        settings too, so every line goes through the same redaction as error messages.
        """
        return [redact_text(f"{k} = {_shown(k, self.values[k])}  "
                            f"({self.sources.get(k, 'default')})")
                for k in sorted(self.values) if self.values[k] not in (None, ())]


def _shown(name: str, value: Any) -> str:
    if name == "api_key":
        return "'***'"
    if name == "header":  # a header value is often a key: show only the names
        return repr(tuple(f"{h.partition(':')[0].strip()}: ***" for h in value))
    return repr(value)


def env_name(name: str) -> str:
    """The environment variable of a setting: ``batch_size`` -> ``THROTTLEPOOL_BATCH_SIZE``."""
    return ENV_PREFIX + name.upper()


def find_config(start: Path) -> tuple[Path, dict[str, Any]] | None:
    """The nearest config file at or above ``start`` and its throttlepool table."""
    for directory in (start, *start.parents):
        for name in ("throttlepool.toml", "pyproject.toml"):
            path = directory / name
            if path.is_file():
                table = read_config(path)
                if table is not None:
                    return path, table
    return None


def read_config(path: Path) -> dict[str, Any] | None:
    """The throttlepool table of a TOML file (None for a pyproject.toml without one)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    tool = data.get("tool")
    if isinstance(tool, dict) and isinstance(tool.get("throttlepool"), dict):
        return dict(tool["throttlepool"])
    if path.name == "pyproject.toml":
        return None
    return {k: v for k, v in data.items() if k != "tool"}


def _parse(name: str, value: Any, where: str) -> Any:
    try:
        return PARSERS[name](value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_settings(
    flags: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    config: str | os.PathLike[str] | None = None,
) -> Settings:
    """Merge ``flags`` over the environment over the config file.

    A flag not given is None, or an empty tuple for a repeatable one (click's default): it
    leaves the environment's or the file's value in force.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = dict(DEFAULTS)
    sources: dict[str, str] = {}
    config = config or env.get(CONFIG_ENV) or None
    found: tuple[Path, dict[str, Any]] | None
    if config:
        path = Path(config)
        table = read_config(path)
        found = (path, table or {})
    else:
        found = find_config(cwd or Path.cwd())
    if found is not None:
        path, table = found
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in PARSERS:
                raise ConfigError(f"config file {path}: unknown setting {key!r}; known: "
                                  f"{', '.join(sorted(PARSERS))}")
            values[name] = _parse(name, value, f"config file {path}, setting {key!r}")
            sources[name] = f"config file {path}"
    for name in PARSERS:
        var = env_name(name)
        if var in env:
            values[name] = _parse(name, env[var], f"environment variable {var}")
            sources[name] = f"environment variable {var}"
    for name, value in flags.items():
        if value is None or value == ():
            continue
        if name not in PARSERS:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _parse(name, value, f"option --{name.replace('_', '-')}")
        sources[name] = "command line"
    return Settings(values, sources, found[0] if found else None)
