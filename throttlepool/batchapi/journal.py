"""What batch mode submitted, recorded in the checkpoint file before and after each step.

One row per chunk of a run (its own table in the store's SQLite file): the indices and custom
ids it holds are written *before* the upload (``intent``), then the file id (``uploaded``),
then ``creating`` just before the batch is created, then the batch id (``submitted``), and
``done`` once its results are recorded. A process killed anywhere finds, on resume, either a
chunk never submitted (upload it), one that may have been created (look the batch up by its
metadata before creating another) or a batch to poll. Every write commits at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import StoreError

INTENT, UPLOADED, CREATING, SUBMITTED, DONE = "intent", "uploaded", "creating", "submitted", "done"

_TABLE = """
CREATE TABLE IF NOT EXISTS batchapi_chunks (
    run_id TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    provider TEXT NOT NULL,
    state TEXT NOT NULL,
    indices TEXT NOT NULL,
    custom_ids TEXT NOT NULL,
    file_id TEXT,
    batch_id TEXT,
    status TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (run_id, chunk)
)
"""
_UPDATABLE = frozenset({"state", "file_id", "batch_id", "status"})
_COLUMNS = ("chunk, provider, state, indices, custom_ids, file_id, batch_id, status, created, "
            "updated")


@dataclass
class Chunk:
    """One provider batch of a run: planned, uploaded, created, submitted or done."""

    run_id: str
    chunk: int
    provider: str
    state: str
    indices: list[int]
    custom_ids: list[str]
    file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None
    created: float = 0.0
    updated: float = 0.0  # the last step's time (the results recorded, once done)


def _chunk(run_id: str, r: Sequence[Any]) -> Chunk:
    return Chunk(run_id, r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5], r[6], r[7],
                 r[8], r[9])


class Journal:
    """The batch chunks of every run in one SQLite file (the checkpoint's, or ``:memory:``)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            if path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_TABLE)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record batches in {path}: {exc}") from exc

    def chunks(self, run_id: str) -> list[Chunk]:
        """Every chunk of the run, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM batchapi_chunks WHERE run_id = ? ORDER BY chunk",
                (run_id,)).fetchall()
        return [_chunk(run_id, r) for r in rows]

    def live(self, run_id: str) -> list[Chunk]:
        """The chunks whose results are not recorded yet."""
        return [c for c in self.chunks(run_id) if c.state != DONE]

    def submissions(self, run_id: str) -> Counter[int]:
        """How many finished chunks held each index (its batch attempts so far)."""
        counts: Counter[int] = Counter()
        for c in self.chunks(run_id):
            if c.state == DONE:
                counts.update(c.indices)
        return counts

    def plan(self, run_id: str, provider: str,
             groups: Iterable[tuple[Sequence[int], Sequence[str]]]) -> list[Chunk]:
        """Record new chunks as intents (before anything is uploaded); returns them."""
        now = time.time()
        made: list[Chunk] = []
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                (top,) = self._conn.execute(
                    "SELECT coalesce(max(chunk), -1) FROM batchapi_chunks WHERE run_id = ?",
                    (run_id,)).fetchone()
                for n, (indices, ids) in enumerate(groups, top + 1):
                    self._conn.execute(
                        "INSERT INTO batchapi_chunks (run_id, chunk, provider, state, indices, "
                        "custom_ids, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, n, provider, INTENT, json.dumps(list(indices)),
                         json.dumps(list(ids)), now, now))
                    made.append(Chunk(run_id, n, provider, INTENT, list(indices), list(ids),
                                      created=now))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return made

    def update(self, chunk: Chunk, **fields: str | None) -> None:
        """Set ``state``, ``file_id``, ``batch_id`` or ``status`` of a chunk, committed."""
        if not set(fields) <= _UPDATABLE:
            raise ValueError(f"cannot update {sorted(set(fields) - _UPDATABLE)} of a chunk")
        for name, value in fields.items():
            setattr(chunk, name, value)
        names = sorted(fields)
        with self._lock:
            self._conn.execute(
                f"UPDATE batchapi_chunks SET {', '.join(f'{n} = ?' for n in names)}, "
                "updated = ? WHERE run_id = ? AND chunk = ?",
                (*(fields[n] for n in names), time.time(), chunk.run_id, chunk.chunk))

    def close(self) -> None:
        """Release the database."""
        with self._lock:
            self._conn.close()


def read_chunks(path: str, run_id: str) -> list[Chunk]:
    """The run's chunks in the checkpoint file at ``path``, read only (``status``,
    ``report``): none when the file has no batch journal."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM batchapi_chunks WHERE run_id = ? ORDER BY chunk",
            (run_id,)).fetchall()
    except sqlite3.Error:  # no such table: the run never was a batch run
        return []
    finally:
        conn.close()
    return [_chunk(run_id, r) for r in rows]


def at_provider(chunks: Iterable[Chunk]) -> dict[int, str]:
    """Each item index submitted and not answered yet, with the id of the batch holding it:
    the chunks created (or perhaps created, ``creating``) and not done."""
    return {i: c.batch_id or f"chunk {c.chunk}" for c in chunks
            if c.state != DONE and (c.batch_id or c.state == CREATING) for i in c.indices}

