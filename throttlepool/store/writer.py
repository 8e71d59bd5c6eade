"""The single writer thread: callers enqueue, it commits groups in one transaction each."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
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
# The writer waits for a locked database in slices of this many seconds (up to the
# connection's own busy timeout), so that close() can give up on a database that has already
# failed a write without sitting out the rest of the timeout.
_LOCK_SLICE = 0.1


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

    Producers append to a buffer under a lock and wake the thread only when a group is full
    (or when they ``kick`` it), so the writer does not compete for the GIL once per item. At
    most ``max_pending`` ops are ever accepted but not yet committed.

    Its health is public so that a producer can stop paying for work it cannot keep:
    ``accepted`` and ``rows`` count item ops accepted and committed (groups commit in order,
    so item op number *n* is committed once ``rows >= n``); ``problem`` is the error of a
    failed write, set from the first failed attempt on (while the writer retries) and cleared
    if a retry succeeds; subscribers are called on the writer thread after every group.
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
        self._stalled: StoreError | None = None  # a write failed; retrying
        self._closed = False
        self._closing = threading.Event()  # close() was called: do not retry a failed write
        self._listeners: list[Callable[[], None]] = []
        self.commits = 0
        self.rows = 0  # item ops committed
        self.accepted = 0  # item ops accepted
        self._busy_timeout = self._take_busy_timeout(conn)
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
            if isinstance(op, ItemOp):
                self.accepted += 1
            if len(self._buf) >= self.group_size:
                self._wake.set()

    def kick(self) -> None:
        """Commit what is queued now rather than at the next interval (a producer waits)."""
        self._wake.set()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` on the writer thread after every group (committed or not)."""
        with self._cv:
            self._listeners = [*self._listeners, listener]

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``."""
        with self._cv:
            self._listeners = [f for f in self._listeners if f is not listener]

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
        while not done.wait(0.1):
            if not self._thread.is_alive():
                break
            problem = self.problem
            if problem is not None:  # a failed write may be retried for long: do not wait
                raise problem
            if deadline is not None and time.monotonic() > deadline:
                raise StoreError(f"timed out flushing checkpoint database {self._path}")
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Commit what is queued and stop the thread.

        A write that has already failed once is not retried any more: its error is raised
        instead of waiting out the retries on a database that stays locked or full.
        """
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._buf.append(_STOP)
        self._closing.set()
        self._wake.set()
        self._thread.join()
        if self._error is not None:
            raise self._error

    @property
    def error(self) -> StoreError | None:
        """The error that stopped the writer, if one did."""
        return self._error

    @property
    def problem(self) -> StoreError | None:
        """Why writes are not being committed: a final error, or a failed attempt being
        retried; None while the writer is healthy."""
        return self._error or self._stalled

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
                listeners = self._listeners
            if batch:
                self._announce(listeners)
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
        delays = iter(_RETRY_DELAYS)
        while True:
            try:
                self._write(items, others)
            except sqlite3.Error as exc:
                problem = describe(exc, self._path)
                delay = next(delays, None)
                if delay is None or self._closing.is_set():
                    self._error = problem
                    log.error("checkpoint writes to %s stopped: %s", self._path, problem)
                    return
                log.warning("checkpoint write to %s failed (%s); retrying", self._path, exc)
                # Producers learn of it now, not after the retries: they stop paying for
                # calls whose outcomes cannot be kept.
                self._stalled = problem
                self._announce(self._listeners)
                if self._closing.wait(delay):
                    self._error = problem
                    return
                continue
            except Exception as exc:  # never let the thread die silently
                self._error = StoreError(f"checkpoint writer for {self._path} failed: {exc!r}")
                log.exception("checkpoint writer for %s failed", self._path)
                return
            self.commits += 1
            self.rows += len(items)
            if self._stalled is not None:
                log.warning("checkpoint writes to %s recovered", self._path)
                self._stalled = None
            return

    def _write(self, items: list[tuple[Any, ...]], others: list[SqlOp]) -> None:
        with self._lock:
            self._begin()
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

    def _begin(self) -> None:
        """``BEGIN IMMEDIATE``, waiting for a locked database up to the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline or (
                        self._closing.is_set() and self._stalled is not None):
                    raise

    @staticmethod
    def _take_busy_timeout(conn: sqlite3.Connection) -> float:
        """The connection's busy timeout (s); the connection then waits in short slices."""
        try:
            seconds = float(conn.execute("PRAGMA busy_timeout").fetchone()[0]) / 1000
            conn.execute(f"PRAGMA busy_timeout = {int(min(seconds, _LOCK_SLICE) * 1000)}")
        except sqlite3.Error:
            return 0.0
        return seconds

    @staticmethod
    def _announce(listeners: list[Callable[[], None]]) -> None:
        for listener in listeners:
            try:
                listener()
            except Exception:  # a listener's loop may be closed; the writer goes on
                log.debug("checkpoint writer listener failed", exc_info=True)

    @staticmethod
    def _row(op: ItemOp) -> tuple[Any, ...]:
        try:
            return outcome_row(op.run_id, op.outcome, op.finished)
        except Exception as exc:  # keep the row even if the outcome is odd
            o = op.outcome
            return (op.run_id, o.index, o.key or "", "failed", None,
                    "throttlepool.UnstorableOutcome", f"outcome could not be stored: "
                    f"{type(exc).__name__}", 0, 0.0, None, None, op.finished, op.finished)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc).lower()

