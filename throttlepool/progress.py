"""Progress seam and the one live display the library and the CLI share.

:class:`LiveProgress` redraws on a timer as well as on outcomes, so time keeps moving while
every worker waits (a limiter's next slot, a server's Retry-After, an open breaker) and the
line says what it waits for and until when. On a terminal it is one line fitted to the width
(throttlepool/_progress_line.py) and drawn by tqdm; anything else written to stderr while it
shows -- ``-v`` messages, warnings, logging of ``throttlepool.*`` -- goes above it. Elsewhere
it writes a complete line every ``interval`` seconds.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TextIO

from tqdm import tqdm

from . import _progress_line as pl
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


def status_line(stats: RunStats, now: float | None = None) -> str:
    """Every field of the live line, unfitted: ``3/10 30% 00:02<00:05 failed=1 ...``; its
    rates are the whole run's so far."""
    now = time.monotonic() if now is None else now
    active = max(0.0, now - stats.started) if stats.started else 0.0
    chosen = sorted(pl.fields(stats, now=now, active=active, rates=pl.run_rates(stats, now),
                              desc=""), key=lambda f: f.order)
    return " ".join(f.text for f in chosen)


class _AboveBar:
    """Stands in for stderr while a bar shows: whole lines are written above the bar."""

    def __init__(self, owner: LiveProgress, real: TextIO) -> None:
        self._owner, self._real, self._pending = owner, real, ""
        self.encoding = getattr(real, "encoding", "utf-8")
        self.errors = getattr(real, "errors", "strict")

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            self._owner.write(lines)
        return len(text)

    def flush(self) -> None:
        self._real.flush()

    def isatty(self) -> bool:
        return self._real.isatty()

    def fileno(self) -> int:
        return self._real.fileno()

    def drain(self) -> None:
        if self._pending:
            self._owner.write(self._pending)
            self._pending = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class LiveProgress:
    """A live progress line on a terminal (``mode="bar"``) or a line every ``interval``
    seconds (``mode="lines"``, for logs and pipes); ``"off"`` shows nothing.

    ``limits`` ((amount, period seconds, unit) triples, the units of
    :mod:`throttlepool.limiter.limits`) are shown against
    the rates when the engine does not report its limiter's own (a Dask run).
    """

    def __init__(self, desc: str = "items", file: TextIO | None = None,
                 interval: float | None = None, *, mode: str = "bar",
                 limits: Sequence[tuple[float, float, str]] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.desc = desc
        self.file = file or sys.stderr
        self.mode = mode
        self.interval = interval if interval is not None else (0.2 if mode == "bar" else 2.0)
        self.limits = tuple(limits)
        self.clock = clock
        self.stats = RunStats()
        self.total: int | None = None
        self._rates = pl.RateWindow()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._last_draw = 0.0
        self._active = 0.0
        self._last_tick: float | None = None
        self._was_stalled = False
        self._shown = ""
        self._bar: tqdm[Any] | None = None
        self._redirect: _AboveBar | None = None
        self._restore: list[tuple[logging.StreamHandler[Any], Any]] = []

    # ---- the sink ------------------------------------------------------------------------

    def start(self, total: int | None, stats: RunStats) -> None:
        """The run begins: draw, then keep drawing on a timer until :meth:`close`."""
        self.stats, self.total = stats, total
        if self.mode == "off":
            return
        self._last_tick = self.clock()
        # The baseline: a resume's earlier calls, counted at the start, are not this session's.
        self._rates.sample(stats, self._last_tick, self.limits)
        if self.mode == "bar":
            # tqdm draws the line we fit (bar_format is just our text) and keeps log lines
            # written through tqdm.write above it.
            self._bar = tqdm(total=None, file=self.file, bar_format="{desc}", leave=True,
                             dynamic_ncols=False, mininterval=0, miniters=0, delay=0)
            self._take_stderr()
            self._draw()
        # Bars tick often enough for a smooth countdown; lines at their own pace.
        period = min(self.interval * 2.5, 0.5) if self.mode == "bar" else self.interval
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, args=(period,),
                                        name="throttlepool-progress", daemon=True)
        self._ticker.start()

    def update(self, stats: RunStats, outcome: Outcome[Any] | None) -> None:
        """Redraw the bar at most every ``interval`` seconds (lines keep their own timer)."""
        self.stats = stats
        if self.mode == "bar" and self.clock() - self._last_draw >= self.interval:
            self._draw()

    def close(self, stats: RunStats) -> None:
        """The run ended: stop the timer, draw the final state, give stderr back."""
        self.stats = stats
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(2.0)
        self._ticker = None
        if self.mode == "off":
            return
        with self._lock:
            if self.mode == "bar" and self._bar is not None:
                # bar.close() draws the final line itself: painted here too, it came twice
                now = self.clock()
                self._account(now)
                self._bar.set_description_str(self.line(now), refresh=False)
            else:
                self._draw()
            if self.mode == "bar":
                bar, self._bar = self._bar, None
                if bar is not None:
                    bar.close()  # draws the final line, leaves it in place and ends it
                else:
                    self.file.write("\n")
                    self.file.flush()
                self._shown = ""
                self._give_stderr_back()

    def write(self, text: str) -> None:
        """Write ``text`` (a log line) above the bar, then redraw the bar under it."""
        with self._lock:
            if self.mode == "bar" and self._bar is not None:
                tqdm.write(text, file=self.file)
            elif self.mode == "bar" and self._shown:
                self.file.write("\r\x1b[K" + text + "\n")
                self._paint(self._shown)
            else:
                self.file.write(text + "\n")
            self.file.flush()

    # ---- drawing -------------------------------------------------------------------------

    def _tick(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self._draw()
            except Exception:  # a closed or broken stream: the run matters more than its bar
                return

    def _draw(self) -> None:
        with self._lock:
            now = self.clock()
            self._account(now)
            if self.mode == "bar":
                self._paint(self.line(now))
            elif self.mode == "lines":
                stats = self.stats
                rates = self._rates.sample(stats, now, self.limits)
                parts = pl.fields(stats, now=now, active=self._active, rates=rates, desc=self.desc,
                                  fallback_limits=self.limits)
                text = " ".join(f.text for f in sorted(parts, key=lambda f: f.order))
                self.file.write(text + "\n")
                self.file.flush()
            self._last_draw = now

    def _account(self, now: float) -> None:
        """Count the time something was in flight: throughput is measured over that only."""
        if self._last_tick is not None and not self._was_stalled and self.stats.started:
            self._active += max(0.0, now - self._last_tick)
        self._last_tick = now
        self._was_stalled = pl.stalled(self.stats)

    def line(self, now: float) -> str:
        """The bar's line for ``now``, fitted to the terminal's width."""
        stats = self.stats
        rates = self._rates.sample(stats, now, self.limits)
        parts = pl.fields(stats, now=now, active=self._active, rates=rates, desc=self.desc,
                          fallback_limits=self.limits)
        total = stats.total if stats.total is not None else self.total
        fraction = (stats.finished + stats.not_attempted) / total if total else None
        # One column short of the width: a full line would leave the cursor pending a wrap.
        return pl.fit(parts, self._width() - 1, fraction)

    def _width(self) -> int:
        try:
            fd: int | None = self.file.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        return pl.terminal_width(fd)

    def _paint(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(text, refresh=True)
        else:
            self.file.write("\r" + text + "\x1b[K")
            self.file.flush()
        self._shown = text

    # ---- log lines above the bar ---------------------------------------------------------

    def _take_stderr(self) -> None:
        if self.file is not sys.stderr:
            return
        real = sys.stderr
        self._redirect = _AboveBar(self, real)
        sys.stderr = self._redirect
        ours = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                if name == "throttlepool" or name.startswith("throttlepool.")]
        for logger in (logging.getLogger(), *ours):
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is real:
                    self._restore.append((handler, handler.setStream(self._redirect)))

    def _give_stderr_back(self) -> None:
        redirect, self._redirect = self._redirect, None
        if redirect is None:
            return
        if sys.stderr is redirect:
            sys.stderr = self.file
        redirect.drain()
        for handler, stream in self._restore:
            handler.setStream(stream)
        self._restore.clear()


# The name the library has always exported for its tqdm display.
TqdmProgress = LiveProgress


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
        return LiveProgress(desc) if sys.stderr.isatty() else None
    if spec is True:
        return LiveProgress(desc)
    if spec is False:
        return None
    if hasattr(spec, "start") and hasattr(spec, "update") and hasattr(spec, "close"):
        return spec
    if callable(spec):
        return CallbackProgress(spec)
    raise TypeError(f"progress must be a bool, a callback or a ProgressSink, not {spec!r}")
