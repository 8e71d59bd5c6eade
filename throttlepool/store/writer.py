"""The single writer thread: callers enqueue, it commits groups in one transaction each."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import StoreError
from ..outcome import Outcome
from .codec import ITEM_COLUMNS, outcome_row
from .schema import describe

log = logging.getLogger("throttlepool.store")

UPSERT_ITEM = (
    f"INSERT INTO items ({', '.join(ITEM_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(ITEM_COLUMNS))}) "
    "ON CONFLICT(run_id, idx) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ITEM_COLUMNS[2:])
)
UPSERT_CACHE = (
    "INSERT INTO cache (key, value, created) VALUES (?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value, created = excluded.created"
)
FINISH_RUN = "UPDATE runs SET status = ?, totals = ?, finished = ? WHERE id = ?"

_RETRY_DELAYS = (0.05, 0.25, 1.0)


@dataclass(slots=True)
class ItemOp:
    """An outcome to upsert into ``items``."""

    run_id: str
    outcome: Outcome[Any]
    finished: float


@dataclass(slots=True)
class SqlOp:
    """Any other statement to run in the next group (cache upserts, run totals)."""

    sql: str
    params: tuple[Any, ...]


class _Stop:
    pass


_STOP = _Stop()
Op = ItemOp | SqlOp | threading.Event | _Stop


class Writer:
    """Owns one connection; commits a group when ``group_size`` ops wait or ``interval`` passes.

    Producers append to a buffer under a lock and wake the thread only when a group is full,
    so the writer does not compete for the GIL once per item. At most ``max_pending`` ops are
    ever accepted but not yet committed: that number, plus the calls in flight, bounds what a
    ``kill -9`` can make a resumed run call again.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        lock: threading.Lock | threading.RLock,
        path: str,
        *,
        group_size: int = 256,
        interval: float = 0.05,
        max_pending: int = 1024,
    ) -> None:
        if group_size < 1 or max_pending < group_size or interval <= 0:
            raise ValueError("need group_size >= 1, max_pending >= group_size, interval > 0")
        self._conn = conn
        self._lock = lock
        self._path = path
        self.group_size = group_size
        self.interval = interval
        self.max_pending = max_pending
        self._cv = threading.Condition(threading.Lock())
        self._buf: list[Op] = []
        self._pending = 0  # ops accepted and not yet committed (buffered + being written)
        self._wake = threading.Event()
        self._error: StoreError | None = None
        self._closed = False
        self.commits = 0
        self.rows = 0
        self._thread = threading.Thread(target=self._run, name="throttlepool-store-writer",
                                        daemon=True)
        self._thread.start()

    # -- producer side ------------------------------------------------------------------

    def submit(self, op: ItemOp | SqlOp) -> None:
        """Queue ``op``; waits only if ``max_pending`` ops are already uncommitted."""
        with self._cv:
            while True:
                if self._error is not None:
                    raise self._error
                if self._closed:
                    raise StoreError(f"checkpoint database {self._path} is closed")
                if self._pending < self.max_pending:
                    break
                self._wake.set()
                self._cv.wait(0.5)
            self._buf.append(op)
            self._pending += 1
            if len(self._buf) >= self.group_size:
                self._wake.set()

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything submitted before this call is committed."""
        if self._error is not None:
            raise self._error
        if not self._thread.is_alive():
            return
        done = threading.Event()
        with self._cv:
            self._buf.append(done)
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(0.5):
            if not self._thread.is_alive():
                break
            if deadline is not None and time.monotonic() > deadline:
                raise StoreError(f"timed out flushing checkpoint database {self._path}")
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Commit what is queued and stop the thread."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._buf.append(_STOP)
        self._wake.set()
        self._thread.join()
        if self._error is not None:
            raise self._error

    @property
    def error(self) -> StoreError | None:
        """The error that stopped the writer, if one did."""
        return self._error

    # -- writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._cv:
                ops, self._buf = self._buf, []
            if not ops:
                continue
            batch = [op for op in ops if isinstance(op, (ItemOp, SqlOp))]
            if batch:
                self._commit(batch)
            with self._cv:
                self._pending -= len(batch)
                self._cv.notify_all()
            stop = False
            for op in ops:
                if isinstance(op, threading.Event):
                    op.set()
                elif isinstance(op, _Stop):
                    stop = True
            if stop:
                return

    def _commit(self, batch: list[ItemOp | SqlOp]) -> None:
        if self._error is not None:
            return  # already failed: producers are told; just drain
        items: list[tuple[Any, ...]] = []
        others: list[SqlOp] = []
        for op in batch:
            if isinstance(op, ItemOp):
                items.append(self._row(op))
            else:
                others.append(op)
        for attempt in range(len(_RETRY_DELAYS) + 1):
            try:
                with self._lock:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        if items:
                            self._conn.executemany(UPSERT_ITEM, items)
                        for sop in others:
                            self._conn.execute(sop.sql, sop.params)
                        self._conn.execute("COMMIT")
                    except BaseException:
                        if self._conn.in_transaction:
                            self._conn.execute("ROLLBACK")
                        raise
                self.commits += 1
                self.rows += len(items)
                return
            except sqlite3.Error as exc:
                if attempt < len(_RETRY_DELAYS):
                    log.warning("checkpoint write to %s failed (%s); retrying", self._path, exc)
                    time.sleep(_RETRY_DELAYS[attempt])
                    continue
                self._error = describe(exc, self._path)
                log.error("checkpoint writes to %s stopped: %s", self._path, self._error)
            except Exception as exc:  # never let the thread die silently
                self._error = StoreError(f"checkpoint writer for {self._path} failed: {exc!r}")
                log.exception("checkpoint writer for %s failed", self._path)
                return

    @staticmethod
    def _row(op: ItemOp) -> tuple[Any, ...]:
        try:
            return outcome_row(op.run_id, op.outcome, op.finished)
        except Exception as exc:  # keep the row even if the outcome is odd
            o = op.outcome
            return (op.run_id, o.index, o.key or "", "failed", None,
                    "throttlepool.UnstorableOutcome", f"outcome could not be stored: "
                    f"{type(exc).__name__}", 0, 0.0, None, None, op.finished, op.finished)
