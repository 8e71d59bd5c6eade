"""A sliding-window log in an SQLite file: one budget shared by processes on one host.

Every decision runs in a ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock
*before* reading, and the timestamp is read only after the lock is held. That serialises
check-then-insert across processes without any extra lock file, keeps timestamps monotonic
in commit order and makes the log exact under contention. One row per request holds its
weight in each unit (requests, tokens, input and output tokens), so memory is proportional
to requests in the window. A row's id is random, never SQLite's next rowid: that reuses the
id of a deleted newest row, and a late move of an answered call (its arrival bound) then
moved another process's row (issue 16).

Use a file of its own (not the checkpoint database) on a local filesystem: SQLite locking
over NFS is unreliable, so several machines must share a budget through Redis instead.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import CostExceedsLimit, LimiterUnavailable
from ..store.redact import redact_text
from .limits import INPUT_TOKENS, OUTPUT_TOKENS, UNITS, Cost, Limit
from .ticket import OPEN_CALL_HOLD, OPEN_CALL_POLL, BackendBase, Ticket

_EPSILON = 1e-9
# A row stamped further than this in the future means the wall clock stepped back (an open
# call's row is stamped OPEN_CALL_HOLD ahead).
_CLOCK_STEP = 3 * OPEN_CALL_HOLD

_SCHEMA = """
CREATE TABLE IF NOT EXISTS admissions (
    id INTEGER PRIMARY KEY,
    bucket TEXT NOT NULL,
    ts REAL NOT NULL,
    requests REAL NOT NULL,
    tokens REAL NOT NULL,
    input_tokens REAL NOT NULL DEFAULT 0,
    output_tokens REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS admissions_ts ON admissions (bucket, ts);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v REAL NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    bucket TEXT NOT NULL,
    span REAL NOT NULL,
    col TEXT NOT NULL,
    used REAL NOT NULL,
    horizon REAL NOT NULL,
    PRIMARY KEY (bucket, span, col)
)
"""

#: One column per unit kind: each limit sums its own (ITPM and OTPM charge separately).
_COLUMNS = UNITS
_ADDED_COLUMNS = (INPUT_TOKENS, OUTPUT_TOKENS)  # files made before ITPM/OTPM lack these
_NONE = (0.0,) * len(_COLUMNS)


def _column(unit: str) -> str:
    if unit not in _COLUMNS:
        raise ValueError(f"no column for unit {unit!r}")
    return unit


def _weights(cost: Cost) -> tuple[float, ...]:
    return tuple(cost.of(col) for col in _COLUMNS)


def _add_columns(db: sqlite3.Connection) -> None:
    have = {row[1] for row in db.execute("PRAGMA table_info(admissions)")}
    for col in _ADDED_COLUMNS:
        if col not in have:
            db.execute(f"ALTER TABLE admissions ADD COLUMN {col} REAL NOT NULL DEFAULT 0")


_LIST = ", ".join(_COLUMNS)
_SETS = ", ".join(f"{col} = ?" for col in _COLUMNS)
_INSERT = (f"INSERT INTO admissions (id, bucket, ts, {_LIST}) "
           f"VALUES (?, ?, ?, {', '.join('?' for _ in _COLUMNS)})")


class SQLiteWindowBackend(BackendBase):
    """Shared exact sliding-window log over any limits, in an SQLite file (one host).

    Every process that opens the same ``path`` and ``name`` with the same limits shares one
    budget; other names in the same file are independent budgets.
    Denied reservations come back *provisional*, with ``admit_at`` at the exact moment the
    windows (or a shared pause) allow them.
    """

    def __init__(self, path: str | os.PathLike[str], limits: Sequence[Limit],
                 name: str = "default", *, margin: float = 0.0, timeout: float = 30.0
                 ) -> None:
        self.path = os.fspath(path)
        self.name = name
        self._pause_key = f"pause:{name}"
        self.limits = list(limits)
        self._margin = margin
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._transaction() as db:
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                _add_columns(db)
                self._register(db, time.time())
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    # ---- plumbing ----------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> LimiterUnavailable:
        return LimiterUnavailable(redact_text(
            f"the shared rate limiter file {self.path} cannot be used "
            f"({type(exc).__name__}: {exc}); dispatch stops rather than exceed the shared "
            "budget (there is no per-process fallback)"
        ))

    def _transaction(self) -> _Txn:
        return _Txn(self._db)

    def _spans(self) -> set[tuple[float, str]]:
        """The (span, column) of each of our windows; limits of one unit and period share one."""
        return {(lim.period + self._margin, _column(lim.unit)) for lim in self.limits}

    def _register(self, db: sqlite3.Connection, now: float) -> None:
        """Create the running sum of each of our windows (other processes may share them)."""
        for lim in self.limits:
            span, col = lim.period + self._margin, _column(lim.unit)
            db.execute(
                "INSERT OR IGNORE INTO windows (bucket, span, col, used, horizon) "
                f"SELECT ?, ?, ?, coalesce(sum({col}), 0), ? FROM admissions "
                "WHERE bucket = ? AND ts > ?",
                (self.name, span, col, now - span, self.name, now - span))

    def _advance(self, db: sqlite3.Connection, now: float) -> dict[tuple[float, str], float]:
        """Expire rows out of every window of this bucket; the running sums, by (span, col).

        Each window subtracts only the rows that left it since its last advance, so an
        admission costs O(rows expired), not O(rows in the window).
        """
        if db.execute("DELETE FROM admissions WHERE bucket = ? AND ts > ?",
                      (self.name, now + _CLOCK_STEP)).rowcount:
            db.execute("DELETE FROM windows WHERE bucket = ?", (self.name,))  # clock stepped
        windows = db.execute("SELECT span, col, used, horizon FROM windows WHERE bucket = ?",
                             (self.name,)).fetchall()
        if any(horizon > now - span + _CLOCK_STEP for span, _, _, horizon in windows):
            db.execute("DELETE FROM windows WHERE bucket = ?", (self.name,))  # clock stepped
            windows = []
        # Register any window of ours not there yet: first use, or a new span after
        # set_margin (the rows of the old span do not count for the new one).
        if not self._spans() <= {(span, col) for span, col, _, _ in windows}:
            self._register(db, now)
            windows = db.execute("SELECT span, col, used, horizon FROM windows "
                                 "WHERE bucket = ?", (self.name,)).fetchall()
        sums: dict[tuple[float, str], float] = {}
        keep = 0.0  # rows stay twice the widest window: a margin that widens later counts them
        for span, col, used, horizon in windows:
            keep = max(keep, 2 * span)
            new = now - span
            if new > horizon:
                gone = db.execute(f"SELECT coalesce(sum({col}), 0) FROM admissions "
                                  "WHERE bucket = ? AND ts > ? AND ts <= ?",
                                  (self.name, horizon, new)).fetchone()[0]
                used = max(0.0, used - gone)
                db.execute("UPDATE windows SET used = ?, horizon = ? "
                           "WHERE bucket = ? AND span = ? AND col = ?",
                           (used, new, self.name, span, col))
            sums[(span, col)] = used
        db.execute("DELETE FROM admissions WHERE bucket = ? AND ts <= ?", (self.name, now - keep))
        return sums

    def _adjust(self, db: sqlite3.Connection, old_ts: float, new_ts: float,
                old: tuple[float, ...], new: tuple[float, ...]) -> None:
        """Move one row's weight in every window: counted before (old) and after (new)."""
        by_col = " ".join(f"WHEN '{col}' THEN ?" for col in _COLUMNS)
        db.execute(
            "UPDATE windows SET used = max(0, used "
            f"- CASE WHEN ? > horizon THEN (CASE col {by_col} ELSE 0 END) ELSE 0 END "
            f"+ CASE WHEN ? > horizon THEN (CASE col {by_col} ELSE 0 END) ELSE 0 END"
            ") WHERE bucket = ?",
            (old_ts, *old, new_ts, *new, self.name))

    def _check(self, cost: Cost) -> None:
        for lim in self.limits:
            w = cost.of(lim.unit)
            if w > lim.amount:
                raise CostExceedsLimit(w, str(lim))

    def _wait(self, db: sqlite3.Connection, now: float, cost: Cost,
              sums: dict[tuple[float, str], float]) -> float:
        """Seconds until ``cost`` fits every window and the pause is over (0: now)."""
        worst = 0.0
        row = db.execute("SELECT v FROM meta WHERE k = ?", (self._pause_key,)).fetchone()
        if row is not None and row[0] > now:
            worst = float(row[0]) - now
        for lim in self.limits:
            w = cost.of(lim.unit)
            if w <= 0:
                continue
            col = _column(lim.unit)
            span = lim.period + self._margin
            need = sums.get((span, col), 0.0) + w - lim.amount
            if need <= _EPSILON:
                continue
            freed = 0.0  # the deny path walks the window to find when enough has left it
            for ts, weight in db.execute(
                    f"SELECT ts, {col} FROM admissions WHERE bucket = ? AND ts > ? AND {col} > 0 "
                    "ORDER BY ts", (self.name, now - span)):
                freed += weight
                if freed >= need - _EPSILON:
                    wait = ts + span - now + 1e-6
                    if ts > now:  # a call still open: it leaves when it answers
                        wait = min(wait, OPEN_CALL_POLL)
                    worst = max(worst, wait)
                    break
        return worst

    # ---- the backend seam --------------------------------------------------------------

    def reserve(self, cost: Cost, now: float) -> Ticket:
        self._check(cost)
        try:
            with self._lock, self._transaction() as db:
                t = time.time()  # read only once the write lock is held
                wait = self._wait(db, t, cost, self._advance(db, t))
                if wait > 0:
                    return Ticket(cost, now + wait, provisional=True)
                weights = _weights(cost)
                row = secrets.randbits(63)  # unique across processes, forked ones too
                db.execute(_INSERT, (row, self.name, t, *weights))
                self._adjust(db, t, t, _NONE, weights)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        ticket = Ticket(cost, now)
        ticket.handle = row
        return ticket

    def _change(self, ticket: Ticket, weights: tuple[float, ...] | None, *,
                restamp: float | None = None) -> None:
        """Give an admitted row new weights (None: delete it) or, with ``restamp``, the
        timestamp that many seconds after the file's now (negative: before)."""
        if ticket.provisional or ticket.handle is None:
            return
        try:
            with self._lock, self._transaction() as db:
                row = db.execute(f"SELECT ts, {_LIST} FROM admissions WHERE id = ?",
                                 (ticket.handle,)).fetchone()
                if row is None:
                    return  # already out of every window
                ts, old = row[0], tuple(row[1:])
                if restamp is not None:
                    new_ts = time.time() + restamp
                    db.execute("UPDATE admissions SET ts = ? WHERE id = ?",
                               (new_ts, ticket.handle))
                    self._adjust(db, ts, new_ts, old, old)
                elif weights is None:
                    db.execute("DELETE FROM admissions WHERE id = ?", (ticket.handle,))
                    self._adjust(db, ts, ts, old, _NONE)
                else:
                    db.execute(f"UPDATE admissions SET {_SETS} WHERE id = ?",
                               (*weights, ticket.handle))
                    self._adjust(db, ts, ts, old, weights)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def settle(self, ticket: Ticket, actual: Cost, now: float) -> Iterable[Ticket]:
        self._check(actual)
        self._change(ticket, _weights(actual))
        ticket.cost = actual
        return []

    def cancel(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        self._change(ticket, None)
        ticket.handle = None
        return []

    def restamp(self, ticket: Ticket, now: float, at: float | None = None
                ) -> Iterable[Ticket]:
        """Count an admitted reservation from ``at`` (default ``now``) on, read on the wall
        clock as that long before its now (other processes stamp rows with theirs)."""
        offset = 0.0 if at is None else min(at - now, 0.0)
        self._change(ticket, None, restamp=offset)
        ticket.admit_at = now + offset
        return []

    def hold(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        """Stamp an open call's row :data:`OPEN_CALL_HOLD` ahead on the wall clock. The
        limiter renews its open calls at every step; a hold renewed within the last second is
        left as it is (a write transaction per open call per step otherwise)."""
        if ticket.admit_at - now > OPEN_CALL_HOLD - 1.0:
            return []
        self._change(ticket, None, restamp=OPEN_CALL_HOLD)
        ticket.admit_at = now + OPEN_CALL_HOLD
        return []

    def set_margin(self, margin: float, now: float) -> Iterable[Ticket]:
        """Count this process's admissions for ``margin`` seconds beyond their windows."""
        self._margin = margin
        return []

    def ping(self) -> None:
        """Raise :class:`LimiterUnavailable` if the file cannot be read."""
        try:
            with self._lock:
                self._db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def pause_until(self, until: float, now: float) -> Iterable[Ticket]:
        if until <= now:
            return []
        try:
            with self._lock, self._transaction() as db:
                target = time.time() + (until - now)
                db.execute("INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) "
                           "DO UPDATE SET v = max(v, excluded.v)", (self._pause_key, target))
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return []

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            with self._lock, self._transaction() as db:
                db.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    # ---- inspection --------------------------------------------------------------------

    def usage(self) -> list[tuple[Limit, float]]:
        """Units currently counted in each limit's window."""
        now = time.time()
        out = []
        with self._lock:
            for lim in self.limits:
                row = self._db.execute(
                    f"SELECT coalesce(sum({_column(lim.unit)}), 0) FROM admissions "
                    "WHERE bucket = ? AND ts > ?", (self.name, now - lim.period - self._margin)
                ).fetchone()
                out.append((lim, float(row[0])))
        return out

    def reset(self) -> None:
        """Forget every reservation and pause (tests, benchmarks)."""
        self._write("DELETE FROM admissions WHERE bucket = ?", (self.name,))
        self._write("DELETE FROM windows WHERE bucket = ?", (self.name,))
        self._write("DELETE FROM meta WHERE k = ?", (self._pause_key,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteWindowBackend({self.path!r}, name={self.name!r})"


class _Txn:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: object) -> None:
        if et is None:
            self.db.execute("COMMIT")
        else:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
