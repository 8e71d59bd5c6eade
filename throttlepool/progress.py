"""Progress seam: a tqdm bar on stderr, a callback, or anything with start/update/close."""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from .outcome import Outcome, RunStats


class ProgressSink(Protocol):
    """Receives the run's statistics as items finish (completion order, not input order)."""

    def start(self, total: int | None, stats: RunStats) -> None:
        """The run begins; ``total`` is None for inputs of unknown length."""
        ...

    def update(self, stats: RunStats, outcome: Outcome[Any] | None) -> None:
        """An item finished (``outcome``), or counters changed (``None``)."""
        ...

    def close(self, stats: RunStats) -> None:
        """The run ended."""
        ...


def status_line(stats: RunStats) -> str:
    """``failed=2 retrying=1 in_flight=8 rate=41.2/s`` for bars and log lines."""
    elapsed = time.monotonic() - stats.started if stats.started else 0.0
    rate = stats.calls / elapsed if elapsed > 0 else 0.0
    return (
        f"ok={stats.done} failed={stats.failed} retrying={stats.retrying} "
        f"in_flight={stats.in_flight} 429s={stats.rate_limited} calls/s={rate:.1f}"
    )


class TqdmProgress:
    """A tqdm bar that advances on completion and shows failures, retries and call rate.

    Redraws at most every ``interval`` seconds so a fast run is not slowed by its own bar.
    """

    def __init__(self, desc: str = "items", file: TextIO | None = None,
                 interval: float = 0.2) -> None:
        self.desc = desc
        self.file = file or sys.stderr
        self.interval = interval
        self._bar: Any = None
        self._last = 0.0

    def start(self, total: int | None, stats: RunStats) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=self.desc, file=self.file, unit="item",
                         dynamic_ncols=True, mininterval=self.interval, smoothing=0.1)

    def _draw(self, stats: RunStats) -> None:
        bar = self._bar
        bar.n = stats.finished + stats.not_attempted
        bar.set_postfix_str(status_line(stats), refresh=False)
        bar.refresh()

    def update(self, stats: RunStats, outcome: Outcome[Any] | None) -> None:
        now = time.monotonic()
        if self._bar is not None and now - self._last >= self.interval:
            self._last = now
            self._draw(stats)

    def close(self, stats: RunStats) -> None:
        if self._bar is not None:
            self._draw(stats)
            self._bar.close()
            self._bar = None


class CallbackProgress:
    """Calls ``fn(stats)``, or ``fn(finished, total)`` for two-argument callbacks (seed 001)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        try:
            params = [
                p for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            self._two_args = len(params) >= 2
        except (TypeError, ValueError):
            self._two_args = False

    def _call(self, stats: RunStats) -> None:
        if self._two_args:
            self.fn(stats.finished, stats.total)
        else:
            self.fn(stats)

    def start(self, total: int | None, stats: RunStats) -> None:
        return None

    def update(self, stats: RunStats, outcome: Outcome[Any] | None) -> None:
        if outcome is not None:
            self._call(stats)

    def close(self, stats: RunStats) -> None:
        return None


ProgressSpec = bool | None | ProgressSink | Callable[..., Any]


def make_progress(spec: ProgressSpec, desc: str = "items") -> ProgressSink | None:
    """None/"auto": a bar only when stderr is a terminal; True: always; False: none."""
    if spec is None:
        return TqdmProgress(desc) if sys.stderr.isatty() else None
    if spec is True:
        return TqdmProgress(desc)
    if spec is False:
        return None
    if hasattr(spec, "start") and hasattr(spec, "update") and hasattr(spec, "close"):
        return spec
    if callable(spec):
        return CallbackProgress(spec)
    raise TypeError(f"progress must be a bool, a callback or a ProgressSink, not {spec!r}")
