"""The SQLite checkpoint store: one file, WAL, one writer thread with group commits."""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import os
import secrets
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from ..cost.meter import price_outcome
from ..cost.pricing import Pricing
from ..errors import CheckpointMismatch, StoreError
from ..outcome import Outcome, RunStats, Source, Status
from .codec import ITEM_COLUMNS, row_outcome, to_jsonable
from .lease import LEASE_TTL, RELEASE, LeaseKeeper
from .redact import redact_obj
from .schema import MEMORY, errors_named, open_connection, parse_spec
from .writer import FINISH_RUN, ItemOp, SqlOp, Writer

_CHUNK = 512
_open_stores: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


def utc_now() -> str:
    """The current UTC time as ISO-8601 text (seconds)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _settings_json(settings: Mapping[str, Any]) -> str:
    try:
        plain = to_jsonable(dict(settings))
    except TypeError:
        plain = {k: repr(v) for k, v in settings.items()}
    return json.dumps(redact_obj(plain), sort_keys=True, ensure_ascii=False)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(_diff(a, b, f"{prefix}{k}."))
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


class _RunState:
    """What ``prior`` needs about one run, kept in memory so the hot path is a dict lookup."""

    __slots__ = ("chunk", "chunk_base", "id", "keys", "name", "pricing", "settings_diff")

    def __init__(self, run_id: str, name: str | None, keys: dict[int, str],
                 settings_diff: list[str], pricing: Pricing | None = None) -> None:
        self.id = run_id
        self.pricing = pricing
        self.name = name
        self.keys = keys
        self.settings_diff = settings_diff
        self.chunk: dict[int, tuple[Any, ...]] = {}
        self.chunk_base = -1


class SQLiteStore:
    """Checkpoints runs in one SQLite file (or ``:memory:``); see docs/persistence.md.

    ``synchronous="NORMAL"`` (default) keeps every commit across a process crash or
    ``kill -9``; only an OS crash or power loss can drop the last commits. ``"FULL"`` also
    survives those, at one fsync per group.

    Opening a file runs ``PRAGMA integrity_check``: a damaged file raises
    :class:`~throttlepool.errors.CheckpointDamaged` before anything is called. A run begun on
    a file is leased to this process (``lease_ttl`` seconds, renewed while it is live); another
    process beginning it gets :class:`~throttlepool.errors.RunInUse`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = MEMORY,
        *,
        group_size: int = 256,
        flush_interval: float = 0.05,
        max_pending: int = 1024,
        timeout: float = 10.0,
        synchronous: str = "NORMAL",
        lease_ttl: float = LEASE_TTL,
    ) -> None:
        self.path = parse_spec(path)
        self._lock = threading.RLock()
        self._conn = open_connection(self.path, timeout=timeout, synchronous=synchronous)
        # An in-memory database lives and dies with this process: nobody to lease it from.
        self._leases: LeaseKeeper | None = None
        if self.path == MEMORY:
            # One in-memory database cannot be shared by two connections: the writer uses
            # the same one, serialised by the same lock.
            wconn, wlock = self._conn, self._lock
        else:
            try:
                wconn = open_connection(self.path, timeout=timeout, synchronous=synchronous,
                                        check=False)
            except BaseException:
                self._conn.close()
                raise
            wlock = threading.RLock()
            me = weakref.ref(self)
            self._leases = LeaseKeeper(wconn, wlock, self.path, lease_ttl,
                                       owner_alive=lambda: me() is not None)
        self._wconn = wconn
        self.writer = Writer(wconn, wlock, self.path, group_size=group_size,
                             interval=flush_interval, max_pending=max_pending)
        self._runs: dict[str, _RunState] = {}
        self._closed = False
        _open_stores.add(self)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- Store protocol -------------------------------------------------------------------

    def begin_run(self, name: str | None, settings: Mapping[str, Any]) -> str:
        """Create the run, or reopen the run called ``name``; returns its run id."""
        self._check_open()
        self.writer.flush()  # an earlier run on this store may still have rows queued
        settings_text = _settings_json(settings)
        run_id = f"run-{_dt.datetime.now(_dt.UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
        with self._lock, errors_named(self.path):
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = None
                if name is not None:
                    row = conn.execute("SELECT id, settings FROM runs WHERE name = ?",
                                       (name,)).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO runs (id, name, created, settings, status) "
                        "VALUES (?, ?, ?, ?, 'running')",
                        (run_id, name, utc_now(), settings_text),
                    )
                    old_settings = settings_text
                else:
                    run_id, old_settings = row
                if self._leases is not None:
                    self._leases.take(conn, run_id, name if name is not None else run_id)
                if row is not None:
                    conn.execute("UPDATE runs SET status = 'running', finished = NULL "
                                 "WHERE id = ?", (run_id,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            keys: dict[int, str] = {}
            if row is not None:
                keys = dict(conn.execute("SELECT idx, key FROM items WHERE run_id = ?",
                                         (run_id,)).fetchall())
        diff = _diff(json.loads(old_settings or "{}"), json.loads(settings_text))
        self._runs[run_id] = _RunState(run_id, name, keys, diff, Pricing.from_settings(settings))
        return run_id

    def prior(self, run_id: str, index: int, key: str) -> Outcome[Any] | None:
        """The outcome recorded for item ``index`` of this run, if any."""
        state = self._runs.get(run_id)
        if state is None:
            raise StoreError(f"run {run_id!r} was not begun on {self.path}")
        recorded = state.keys.get(index)
        if recorded is None:
            return None
        if recorded != key:
            raise CheckpointMismatch(self._mismatch(state, index, recorded, key))
        base = index - index % _CHUNK
        if base != state.chunk_base:
            with self._lock, errors_named(self.path):
                rows = self._conn.execute(
                    f"SELECT {', '.join(ITEM_COLUMNS)} FROM items "
                    "WHERE run_id = ? AND idx >= ? AND idx < ?",
                    (run_id, base, base + _CHUNK),
                ).fetchall()
            state.chunk = {r[1]: r for r in rows}
            state.chunk_base = base
        row = state.chunk.get(index)
        return row_outcome(row) if row is not None else None

    def record(self, run_id: str, outcome: Outcome[Any]) -> None:
        """Queue an item's final outcome for the writer; skips not-attempted and loaded ones.

        An outcome not priced yet gets its cost here, from its usage and the run's pricing
        (``settings["identity"]`` and ``settings["pricing"]``, see cost/pricing.py).
        """
        if outcome.status is Status.NOT_ATTEMPTED or outcome.source is Source.CHECKPOINT:
            return
        if outcome.key is None:
            raise StoreError(f"outcome of item {outcome.index} has no key; cannot checkpoint it")
        state = self._runs.get(run_id)
        if state is not None and outcome.source is Source.CALL:
            price_outcome(state.pricing, outcome)
        if self._leases is not None:
            self._leases.check(run_id)  # a process that lost its run must stop paying for it
        ended = outcome.ended  # a Dask worker's call ended before its outcome arrived here
        self.writer.submit(ItemOp(run_id, outcome, time.time() if ended is None else ended))

    def finish_run(self, run_id: str, stats: RunStats, status: str,
                   reason: str | None = None) -> None:
        """Store the run's totals and final status, with why in ``totals["reason"]``."""
        totals = stats.as_dict()
        totals["throughput"] = (stats.finished / stats.wall_time) if stats.wall_time else None
        if reason is not None:
            totals["reason"] = reason
        self.writer.submit(SqlOp(FINISH_RUN, (status, json.dumps(totals), utc_now(), run_id)))
        released = self._leases.release(run_id) if self._leases is not None else None
        if released is not None:
            self.writer.submit(SqlOp(RELEASE, released))

    def recorded_cost(self, run_id: str) -> tuple[float, int]:
        """``(USD, items whose cost is unknown)`` the run's recorded outcomes cost: what a
        resumed run has already spent (a budget starts from it)."""
        self.flush()
        with self._lock, errors_named(self.path):
            usd, unknown = self._conn.execute(
                "SELECT coalesce(sum(cost), 0), coalesce(sum(cost IS NULL AND status = 'ok' "
                "AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL)), 0) "
                "FROM items WHERE run_id = ?", (run_id,)).fetchone()
        return float(usd), int(unknown)

    def flush(self) -> None:
        """Block until every recorded outcome is committed."""
        if not self._closed:
            self.writer.flush()

    def close(self) -> None:
        """Flush and release the database."""
        if self._closed:
            return
        self._closed = True
        _open_stores.discard(self)
        try:
            self.writer.close()
        finally:
            if self._leases is not None:
                self._leases.close()
            with self._lock:
                if self._wconn is not self._conn:
                    self._wconn.close()
                self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"checkpoint database {self.path} is closed")

    def _mismatch(self, state: _RunState, index: int, old: str, new: str) -> str:
        run = state.name if state.name is not None else state.id
        why = (f"; the run's settings changed too: {'; '.join(state.settings_diff[:5])}"
               if state.settings_diff else
               "; the item itself (or the function's identity) is not the same")
        # "record N (index I)": people count from 1; the CLI turns it into the file's line.
        return (
            f"record {index + 1} (index {index}) differs from the checkpointed input of run "
            f"{run!r} (recorded key {old[:12]}, now {new[:12]}){why}. A run resumes only with "
            f"the same input in the same order. To start over give a new run name (--run-name "
            f"NAME, or run_name= in Python); on the command line add --reuse and the new run "
            f"calls only the requests not answered ok before"
        )

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Run a read-only query on the store's connection (for reports and tests)."""
        with self._lock, errors_named(self.path):
            cur = self._conn.execute(sql, params)
            cols = [d[0] for d in cur.description or ()]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


@atexit.register
def _flush_open_stores() -> None:
    # A store the caller forgot to close still gets its queued outcomes committed.
    for store in list(_open_stores):
        try:
            store.close()
        except StoreError:
            pass
