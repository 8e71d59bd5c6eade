"""``run --reuse``: answers already paid for, found in the checkpoint by request key.

An item's key hashes the request and the call's identity (provider, model, parameters), so
an ok item of any run in the same database with that key holds the answer this request
would get. The items table has no index on ``key`` (and its schema is the store's), so the
keys of ok items are read once into memory: about 100 bytes an item, and one primary-key
lookup per hit.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ..store import SQLiteStore


class CheckpointAnswers:
    """A read-only :class:`~throttlepool.store.base.Cache` over the ok items of every run."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._where: dict[str, tuple[str, int]] | None = None
        self._lock = threading.Lock()

    def _index(self) -> dict[str, tuple[str, int]]:
        with self._lock:
            if self._where is None:
                rows = self._store.query(
                    "SELECT key, run_id, idx FROM items WHERE status = 'ok'")
                self._where = {r["key"]: (r["run_id"], r["idx"]) for r in rows}
            return self._where

    def get(self, key: str) -> tuple[bool, Any]:
        """``(True, value)`` when some run answered this exact request ok."""
        where = self._index().get(key)
        if where is None:
            return False, None
        rows = self._store.query(
            "SELECT value FROM items WHERE run_id = ? AND idx = ? AND key = ?", (*where, key))
        if not rows or rows[0]["value"] is None:
            return False, None
        return True, json.loads(rows[0]["value"])

    def put(self, key: str, value: Any) -> None:
        """Nothing: the run's own checkpoint records its new answers."""
