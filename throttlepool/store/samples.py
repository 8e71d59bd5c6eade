"""A run's time series for its report: a ``samples`` row about once a second.

:class:`SampleRecorder` wraps the run's progress sink (the engine already calls it on every
outcome) and queues each row on the store's writer, so it needs no thread, no timer and no
engine change. Between two outcomes nothing is sampled: a row holds the run's cumulative
counters, so a gap only lowers the time resolution, never the totals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from ..outcome import Outcome, RunStats
from ..progress import ProgressSink
from .base import Store
from .sqlite import SQLiteStore
from .writer import SqlOp

log = logging.getLogger("throttlepool.store")

# Cumulative counters of the session (reset when a run is resumed), then two levels.
CUMULATIVE = ("done", "failed", "not_attempted", "calls", "retries", "rate_limited",
              "rate_limit_wait", "input_tokens", "output_tokens", "cache_hits",
              "from_checkpoint", "cost_usd")
LEVELS = ("in_flight", "retrying")
SAMPLE_FIELDS = CUMULATIVE + LEVELS
INSERT_SAMPLE = (f"INSERT INTO samples (run_id, session, t, {', '.join(SAMPLE_FIELDS)}) "
                 f"VALUES ({', '.join('?' * (3 + len(SAMPLE_FIELDS)))})")
SELECT_SAMPLES = (f"SELECT session, t, {', '.join(SAMPLE_FIELDS)} FROM samples "
                  "WHERE run_id = ? ORDER BY session, t")

Snapshot = tuple[float, tuple[Any, ...]]


def snapshot(stats: RunStats, now: float) -> Snapshot:
    """``(now, counters)`` in the column order of ``SAMPLE_FIELDS``."""
    return now, tuple(getattr(stats, name) for name in SAMPLE_FIELDS)


class SampleRecorder:
    """A :class:`ProgressSink` that forwards to ``inner`` and samples the run's counters.

    It writes a row at the start, at most one per ``interval`` seconds while outcomes arrive,
    the last state before a quiet gap (so a burst after a long wait is not smeared over the
    wait), and one at the end. A checkpoint that cannot be written stops the sampling only;
    the engine learns of the failure from its own writes.
    """

    def __init__(self, inner: ProgressSink | None, submit: Callable[[SqlOp], None],
                 run_id: Callable[[], str | None], *, interval: float = 1.0,
                 now: Callable[[], float] = time.time) -> None:
        self.inner = inner
        self._submit = submit
        self._run_id = run_id
        self.interval = interval
        self._now = now
        self._session = 0.0
        self._last = float("-inf")  # time of the last row written
        self._held: Snapshot | None = None  # the latest state not written yet
        self._broken = False
        self.rows = 0

    def _write(self, snap: Snapshot) -> None:
        run_id = self._run_id()
        if self._broken or run_id is None:
            return
        try:
            self._submit(SqlOp(INSERT_SAMPLE, (run_id, self._session, snap[0], *snap[1])))
        except StoreError as exc:
            self._broken = True
            log.debug("run samples stopped: %s", exc)
            return
        self._last = snap[0]
        self.rows += 1

    def start(self, total: int | None, stats: RunStats) -> None:
        """Begin a session: its first row (all counters as they start)."""
        self._session = self._now()
        self._write(snapshot(stats, self._session))
        if self.inner is not None:
            self.inner.start(total, stats)

    def update(self, stats: RunStats, outcome: Outcome[Any] | None) -> None:
        """Write a row when ``interval`` has passed since the last one."""
        now = self._now()
        if now - self._last < self.interval:
            self._held = snapshot(stats, now)
        else:
            held = self._held
            if held is not None and now - held[0] >= self.interval:
                self._write(held)
            self._held = None
            self._write(snapshot(stats, now))
        if self.inner is not None:
            self.inner.update(stats, outcome)

    def close(self, stats: RunStats) -> None:
        """The last row: the session's totals."""
        held = self._held
        now = self._now()
        if held is not None and now - held[0] >= self.interval:
            self._write(held)
        self._held = None
        self._write(snapshot(stats, now))
        if self.inner is not None:
            self.inner.close(stats)


def with_samples(progress: ProgressSink | None, store: Store | None,
                 run_id: Callable[[], str | None]) -> ProgressSink | None:
    """``progress`` wrapped in a :class:`SampleRecorder` when ``store`` is a SQLite store;
    ``run_id()`` gives the run's id once the engine has begun it."""
    if not isinstance(store, SQLiteStore):
        return progress
    return SampleRecorder(progress, store.writer.submit, run_id)
