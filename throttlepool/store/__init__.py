"""Checkpoint store and response cache; ``open_store``/``open_cache`` resolve the runner's specs."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError
from .base import Cache, Store
from .cache import MemoryCache, SQLiteCache
from .codec import StoredError, to_jsonable
from .keys import canonical_json, item_key
from .redact import redact_obj, redact_text
from .report import export_run, iter_outcomes, list_runs, run_status
from .sqlite import SQLiteStore

__all__ = [
    "Cache",
    "MemoryCache",
    "SQLiteCache",
    "SQLiteStore",
    "Store",
    "StoredError",
    "canonical_json",
    "export_run",
    "item_key",
    "iter_outcomes",
    "list_runs",
    "open_cache",
    "open_store",
    "redact_obj",
    "redact_text",
    "run_status",
    "to_jsonable",
]


def open_store(spec: Store | str | os.PathLike[str] | None) -> Store | None:
    """None: no checkpoint; a path, ``sqlite:///path`` or ``:memory:``: SQLiteStore; a Store: it."""
    if spec is None:
        return None
    if isinstance(spec, (str, os.PathLike)):
        return SQLiteStore(spec)
    if isinstance(spec, Store):
        return spec
    raise ConfigError(
        f"store must be a path, 'sqlite:///path', ':memory:', a Store or None, not {spec!r}")


def open_cache(spec: Cache | bool | str | os.PathLike[str] | None, store: Store | None = None,
               ttl: float | None = None, **kwargs: Any) -> Cache | None:
    """None/False → no cache; True → in the store's file (or in memory); a path → that file."""
    if spec is None or spec is False:
        return None
    if spec is True:
        if isinstance(store, SQLiteStore):
            return SQLiteCache(store, ttl, **kwargs)
        return MemoryCache(ttl, **kwargs)
    if isinstance(spec, (str, os.PathLike)):
        return SQLiteCache(spec, ttl, **kwargs)
    if isinstance(spec, Cache):
        return spec
    raise ConfigError(f"cache must be True/False, a path, a Cache or None, not {spec!r}")
