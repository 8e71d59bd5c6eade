"""Run leases: one live process owns a run at a time, and a crashed owner's lease runs out.

A lease is a row of ``leases`` (host, pid, a random token, heartbeat and expiry times). The
store takes it in ``begin_run`` inside the same ``BEGIN IMMEDIATE`` that finds the run, so two
processes cannot both take it; a thread renews it every third of its lifetime; ``finish_run``
and ``close`` release it. A ``kill -9``'d owner stops renewing: its lease expires after
``ttl`` seconds, and on the same machine a dead pid frees it at once.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import RunInUse, StoreError

log = logging.getLogger("throttlepool.store")

LEASE_TTL = 30.0
HOST = socket.gethostname()
# Tokens of the leases held by live stores of this process: a lease row with this process's
# pid but a token not in here was left by a store that is gone (or by an earlier process
# that had the same pid).
_LIVE_TOKENS: set[str] = set()
_LIVE_LOCK = threading.Lock()

SELECT_LEASE = ("SELECT run_id, host, machine, pid, token, since, heartbeat, expires, released "
                "FROM leases WHERE run_id = ?")
_TAKE = ("INSERT INTO leases (run_id, host, machine, pid, token, since, heartbeat, expires, "
         "released) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT(run_id) DO UPDATE SET "
         "host = excluded.host, machine = excluded.machine, pid = excluded.pid, "
         "token = excluded.token, since = excluded.since, heartbeat = excluded.heartbeat, "
         "expires = excluded.expires, released = NULL")
_RENEW = ("UPDATE leases SET heartbeat = ?, expires = ? "
          "WHERE run_id = ? AND token = ? AND released IS NULL")
RELEASE = "UPDATE leases SET released = ? WHERE run_id = ? AND token = ? AND released IS NULL"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _machine() -> str:
    # Two pids can be compared only inside one pid namespace of one boot: containers that
    # share a hostname, or a rebooted host, must not call a live owner dead.
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return f"{HOST}|{_read('/proc/sys/kernel/random/boot_id')}|{pidns}"


MACHINE = _machine()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by another user
    # A killed process nobody has reaped yet still answers kill(0).
    stat = _read(f"/proc/{pid}/stat")
    return not (stat and stat[stat.rfind(")") + 2:][:1] in ("Z", "X"))


def iso(ts: float) -> str:
    """Unix time as ISO-8601 UTC text (seconds)."""
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Lease:
    """One row of ``leases``: who owns a run, since when, until when."""

    run_id: str
    host: str
    machine: str
    pid: int
    token: str
    since: str
    heartbeat: float
    expires: float
    released: float | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...] | None) -> Lease | None:
        """The lease of a ``SELECT_LEASE`` row (None for no row)."""
        return None if row is None else cls(*row)

    @property
    def owner(self) -> str:
        """``pid 123 on host box``."""
        return f"pid {self.pid} on host {self.host}"

    def gone(self, now: float) -> str | None:
        """Why no live process holds this lease any more; None while its owner may live."""
        if self.released is not None:
            return "released"
        if self.expires <= now:
            return "expired"
        if self.machine == MACHINE:
            if self.pid == os.getpid():
                with _LIVE_LOCK:
                    if self.token not in _LIVE_TOKENS:
                        return "dead"
            elif not pid_alive(self.pid):
                return "dead"
        return None


def in_use(lease: Lease, run: str, path: str, now: float) -> RunInUse:
    """The error for a second process that wants a run ``lease`` holds."""
    here = (" (this process: close the store or runner that began it first)"
            if lease.machine == MACHINE and lease.pid == os.getpid() else "")
    return RunInUse(
        f"run {run!r} in {path} is in use by {lease.owner}{here} since {lease.since} (lease "
        f"renewed "
        f"{max(0.0, now - lease.heartbeat):.0f}s ago, valid {max(0.0, lease.expires - now):.0f}s "
        f"more). Two processes on one run would pay for the same calls twice. Wait for it to "
        f"finish or stop it (a killed owner frees the run at once on its own host, and "
        f"everywhere once its lease expires), or use another --run-name (run_name=)",
        owner=lease.owner)


class LeaseKeeper:
    """Takes, renews and releases the leases of one store's runs.

    ``conn``/``lock`` are the connection renewals write on (the store's writer connection)
    and the lock that serialises its use. Renewals stop once ``owner_alive()`` is false (the
    store was dropped without ``close()``), so a forgotten store does not hold a run forever.
    """

    def __init__(self, conn: sqlite3.Connection, lock: Any, path: str,
                 ttl: float = LEASE_TTL, owner_alive: Callable[[], bool] = lambda: True
                 ) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self._conn, self._lock, self._path, self.ttl = conn, lock, path, ttl
        self._owner_alive = owner_alive
        self._held: dict[str, tuple[str, float]] = {}  # run_id -> (token, expiry we wrote)
        self._names: dict[str, str] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: dict[str, StoreError] = {}  # run_id -> why this store lost it

    def take(self, conn: sqlite3.Connection, run_id: str, run: str) -> None:
        """Take the lease of ``run_id`` inside the caller's write transaction on ``conn``.

        Raises :class:`RunInUse` while another live process (or store) holds it.
        """
        now = time.time()
        lease = Lease.from_row(conn.execute(SELECT_LEASE, (run_id,)).fetchone())
        with self._guard:
            mine = self._held.get(run_id)
        if lease is not None and (mine is None or mine[0] != lease.token):
            if lease.gone(now) is None:
                raise in_use(lease, run, self._path, now)
            if lease.released is None:
                log.warning("run %r: taking over the lease of %s (%s)", run, lease.owner,
                            lease.gone(now))
        token = mine[0] if mine is not None else secrets.token_hex(8)
        expires = now + self.ttl
        conn.execute(_TAKE, (run_id, HOST, MACHINE, os.getpid(), token, iso(now), now, expires))
        with self._guard:
            self._held[run_id] = (token, expires)
            self._names[run_id] = run
            self._errors.pop(run_id, None)
        with _LIVE_LOCK:
            _LIVE_TOKENS.add(token)
        if self._thread is None:
            self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                            name="throttlepool-store-lease")
            self._thread.start()

    def check(self, run_id: str) -> None:
        """Raise if this store no longer owns ``run_id`` (lost or run out unrenewed)."""
        error = self._errors.get(run_id)
        if error is None:
            held = self._held.get(run_id)
            if held is None or time.time() < held[1]:
                return
            error = self._lost(run_id, "it could not be renewed in time (is the database "
                                       "locked?)")
        raise error

    def release(self, run_id: str) -> tuple[float, str, str] | None:
        """Stop renewing ``run_id``; the parameters of ``RELEASE`` (None if not held)."""
        with self._guard:
            held = self._held.pop(run_id, None)
            self._names.pop(run_id, None)
        if held is None:
            return None
        with _LIVE_LOCK:
            _LIVE_TOKENS.discard(held[0])
        return (time.time(), run_id, held[0])

    def close(self) -> None:
        """Release every lease still held (best effort) and stop the renewal thread."""
        self._stop.set()
        if self._thread is not None:
            # A renewal waiting on a locked database gives up by itself (busy timeout);
            # the release below is conditional on our token, so the two cannot clash.
            self._thread.join(1.0)
        for run_id in list(self._held):
            params = self.release(run_id)
            if params is None:
                continue
            try:
                with self._lock:
                    self._conn.execute(RELEASE, params)
            except sqlite3.Error as exc:  # it expires by itself: never fail a close for it
                log.warning("could not release the lease of run %s in %s: %s", run_id,
                            self._path, exc)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if not self._owner_alive():
                for run_id in list(self._held):
                    self.release(run_id)  # in memory only: it expires in the file
                return
            self.renew()

    def renew(self) -> None:
        """Push every held lease's expiry ``ttl`` ahead; note a lease someone took over."""
        with self._guard:
            held = dict(self._held)
        for run_id, (token, _) in held.items():
            if self._stop.is_set():
                return
            now = time.time()
            try:
                with self._lock:
                    cur = self._conn.execute(_RENEW, (now, now + self.ttl, run_id, token))
            except sqlite3.Error as exc:
                log.warning("could not renew the lease of run %s in %s: %s", run_id,
                            self._path, exc)
                continue
            if cur.rowcount == 1:
                with self._guard:
                    if run_id in self._held:
                        self._held[run_id] = (token, now + self.ttl)
            elif run_id in self._held:
                self._lost(run_id, "another process took it over")

    def _lost(self, run_id: str, why: str) -> StoreError:
        with self._guard:
            error = self._errors.get(run_id)
            if error is None:
                run = self._names.get(run_id, run_id)
                error = self._errors[run_id] = RunInUse(
                    f"this process lost the lease of run {run!r} in {self._path}: {why}. It "
                    "stops here so that two processes do not pay for the same calls; run the "
                    "same command again once the other owner is done")
            return error
