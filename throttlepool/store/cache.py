"""Response cache: an in-memory LRU in front of a SQLite table, with a TTL."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .codec import encode_value
from .schema import MEMORY, errors_named
from .sqlite import SQLiteStore
from .writer import UPSERT_CACHE, SqlOp

log = logging.getLogger("throttlepool.store")


class MemoryCache:
    """An LRU of JSON texts with a TTL; what :class:`SQLiteCache` keeps in front of disk."""

    def __init__(self, ttl: float | None = None, *, max_entries: int = 10_000,
                 time_fn: Callable[[], float] = time.time) -> None:
        if ttl is not None and ttl <= 0:
            raise ValueError("cache ttl must be positive (or None for no expiry)")
        self.ttl = ttl
        self.max_entries = max_entries
        self.time_fn = time_fn
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def fresh(self, created: float) -> bool:
        """Whether an entry created at ``created`` is still within the TTL."""
        return self.ttl is None or self.time_fn() - created < self.ttl

    def lookup(self, key: str) -> str | None:
        """The fresh JSON text under ``key``, or None (expired entries are dropped)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if not self.fresh(entry[1]):
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def remember(self, key: str, text: str, created: float) -> None:
        """Store ``text`` under ``key``, evicting the least recently used entries."""
        with self._lock:
            self._entries[key] = (text, created)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, key: str) -> tuple[bool, Any]:
        """``(True, value)`` on a fresh hit, ``(False, None)`` otherwise."""
        text = self._find(key)
        if text is None:
            self.misses += 1
            return False, None
        self.hits += 1
        return True, json.loads(text)

    def put(self, key: str, value: Any) -> None:
        """Remember a successful value under ``key`` (values that are not JSON are skipped)."""
        try:
            text = encode_value(value)
        except (TypeError, ValueError, RecursionError) as exc:
            log.debug("not caching item %s: %s", key, exc)
            return
        created = self.time_fn()
        self.remember(key, text, created)
        self._persist(key, text, created)

    def _find(self, key: str) -> str | None:
        return self.lookup(key)

    def _persist(self, key: str, text: str, created: float) -> None:
        """Memory only: nothing to write."""

    def __len__(self) -> int:
        return len(self._entries)


class SQLiteCache(MemoryCache):
    """Cache in the ``cache`` table of a store's file; hits are served from memory first.

    Values come back as JSON (a pydantic model comes back as its dict). Writes go through
    the store's writer thread, so ``put`` never waits on disk. ``time_fn`` is wall-clock time
    because entries outlive the process; tests inject their own.
    """

    def __init__(self, store: SQLiteStore | str | os.PathLike[str] = MEMORY,
                 ttl: float | None = None, *, max_entries: int = 10_000,
                 time_fn: Callable[[], float] = time.time) -> None:
        super().__init__(ttl, max_entries=max_entries, time_fn=time_fn)
        self._owns_store = not isinstance(store, SQLiteStore)
        self.store = store if isinstance(store, SQLiteStore) else SQLiteStore(store)

    def _find(self, key: str) -> str | None:
        """Memory first, then disk."""
        text = self.lookup(key)
        return text if text is not None else self._load(key)

    def _persist(self, key: str, text: str, created: float) -> None:
        """Queue the disk write to the store's writer thread; ``put`` never waits on disk."""
        self.store.writer.submit(SqlOp(UPSERT_CACHE, (key, text, created)))

    def purge(self) -> int:
        """Delete expired rows from disk; returns how many."""
        if self.ttl is None:
            return 0
        self.store.flush()
        cutoff = self.time_fn() - self.ttl
        with self.store._lock, errors_named(self.store.path):
            cur = self.store._conn.execute("DELETE FROM cache WHERE created <= ?", (cutoff,))
            return cur.rowcount

    def close(self) -> None:
        """Flush queued writes; closes the store only if this cache opened it."""
        if self._owns_store:
            self.store.close()
        else:
            self.store.flush()

    def _load(self, key: str) -> str | None:
        with self.store._lock, errors_named(self.store.path):
            row = self.store._conn.execute(
                "SELECT value, created FROM cache WHERE key = ?", (key,)).fetchone()
        if row is None or not self.fresh(row[1]):
            return None
        self.remember(key, row[0], row[1])
        return str(row[0])
