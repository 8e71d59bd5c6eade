"""What the CLI shows on stderr: a tqdm bar (terminal) or periodic lines, then a summary."""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, TextIO

from ..outcome import Outcome, RunStats, Status

RATE_WINDOW = 60.0  # rpm/tpm limits are per minute, so the live rate is the last minute's count


def _short(n: float) -> str:
    """``1234567`` -> ``1.2M``; counts for a narrow status line."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def duration(seconds: float) -> str:
    """``75.3`` -> ``1m15s``; ``4.21`` -> ``4.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class RateMeter:
    """Requests and tokens of the last minute, from the run's cumulative counters."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: deque[tuple[float, int, int]] = deque()

    def sample(self, stats: RunStats) -> tuple[int, int]:
        """Record the counters now; returns (requests, tokens) in the trailing minute."""
        now = self._clock()
        tokens = stats.input_tokens + stats.output_tokens
        samples = self._samples
        samples.append((now, stats.calls, tokens))
        # Keep one sample at or before the window start: it is the baseline to subtract.
        while len(samples) > 1 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()
        base_t, base_calls, base_tokens = samples[0]
        if base_t > now - RATE_WINDOW:  # the run is younger than a minute: count from zero
            return stats.calls, tokens
        return stats.calls - base_calls, tokens - base_tokens


class CliProgress:
    """A :class:`~throttlepool.progress.ProgressSink` with live rates against the limits.

    ``mode`` is ``"bar"`` (tqdm), ``"lines"`` (one line every ``interval`` seconds, for logs
    and pipes) or ``"off"``. It also keeps the run's stats for the summary.
    """

    def __init__(self, mode: str, *, rpm: float | None = None, tpm: float | None = None,
                 interval: float = 2.0, file: TextIO | None = None, desc: str = "items") -> None:
        self.mode = mode
        self.rpm, self.tpm = rpm, tpm
        self.interval = interval
        self.file = file or sys.stderr
        self.desc = desc
        self.stats = RunStats()
        self.total: int | None = None
        self._meter = RateMeter()
        self._bar: Any = None
        self._last = 0.0
        self._started = time.monotonic()

    @staticmethod
    def auto_mode(enabled: bool, stream: TextIO | None = None) -> str:
        """``bar`` on a terminal, ``lines`` otherwise, ``off`` when disabled."""
        if not enabled:
            return "off"
        return "bar" if (stream or sys.stderr).isatty() else "lines"

    def status(self, stats: RunStats) -> str:
        """``ok=120 failed=2 retrying=1 in_flight=5 req/min=118/120 tok/min=3.1k/10k``."""
        requests, tokens = self._meter.sample(stats)
        rpm = f"{requests}/{_short(self.rpm)}" if self.rpm else f"{requests}"
        parts = [f"ok={stats.done}", f"failed={stats.failed}", f"retrying={stats.retrying}",
                 f"in_flight={stats.in_flight}", f"req/min={rpm}"]
        if self.tpm or tokens:
            parts.append(f"tok/min={_short(tokens)}" + (f"/{_short(self.tpm)}" if self.tpm
                                                        else ""))
        if stats.rate_limited:
            parts.append(f"429s={stats.rate_limited}")
        return " ".join(parts)

    def start(self, total: int | None, stats: RunStats) -> None:
        """The run begins."""
        self.stats, self.total = stats, total
        self._started = time.monotonic()
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.desc, file=self.file, unit="item",
                             dynamic_ncols=True, mininterval=0.2, smoothing=0.1)

    def _eta(self, stats: RunStats) -> str:
        elapsed = time.monotonic() - self._started
        finished = stats.finished + stats.not_attempted - stats.from_checkpoint
        if self.total is None or finished <= 0 or elapsed <= 0:
            return "?"
        left = self.total - stats.finished - stats.not_attempted
        return duration(left * elapsed / finished)

    def update(self, stats: RunStats, outcome: Outcome[Any] | None) -> None:
        """Redraw at most every 0.2 s (bar) or ``interval`` seconds (lines)."""
        now = time.monotonic()
        wait = 0.2 if self.mode == "bar" else self.interval
        if self.mode == "off" or now - self._last < wait:
            return
        self._last = now
        self._draw(stats)

    def _draw(self, stats: RunStats) -> None:
        if self._bar is not None:
            self._bar.n = stats.finished + stats.not_attempted
            self._bar.set_postfix_str(self.status(stats), refresh=False)
            self._bar.refresh()
        elif self.mode == "lines":
            done = stats.finished + stats.not_attempted
            of = f"/{self.total}" if self.total is not None else ""
            elapsed = duration(time.monotonic() - self._started)
            print(f"[{elapsed}] {self.desc} {done}{of} {self.status(stats)} "
                  f"eta={self._eta(stats)}", file=self.file, flush=True)

    def close(self, stats: RunStats) -> None:
        """The run ended: draw the final state."""
        if self._bar is not None:
            self._draw(stats)
            self._bar.close()
            self._bar = None


def summary(stats: RunStats, failures: Counter[str], *, total: int,
            checkpoint: str | None = None, run_name: str | None = None,
            output: str | None = None) -> list[str]:
    """The end-of-run lines: ok, failed by error type, retries, 429s, time, throughput."""
    wall = stats.wall_time
    ok = stats.done
    failed = sum(failures.values())
    not_attempted = max(0, total - ok - failed)
    by_type = ", ".join(f"{name} {n}" for name, n in failures.most_common())
    lines = [f"{ok} ok, {failed} failed" + (f" ({by_type})" if by_type else "")
             + (f", {not_attempted} not attempted" if not_attempted else "") + f" of {total}"]
    rate = (stats.calls / wall) if wall > 0 else 0.0
    lines.append(f"{stats.calls} calls, {stats.retries} retries, {stats.rate_limited} "
                 f"rate-limited (429); {duration(wall)} wall, {rate:.1f} calls/s "
                 f"({rate * 60:.0f}/min)")
    if stats.from_checkpoint or stats.cache_hits:
        lines.append(f"{stats.from_checkpoint} from the checkpoint, {stats.cache_hits} cached")
    if stats.input_tokens or stats.output_tokens:
        lines.append(f"tokens: {stats.input_tokens} in, {stats.output_tokens} out")
    if checkpoint:
        lines.append(f"checkpoint: {checkpoint} (run {run_name!r})")
    if output:
        lines.append(f"results: {output}")
    return lines


def failure_name(outcome: Outcome[Any]) -> str | None:
    """The error type a failed item is counted under in the summary."""
    if outcome.status is not Status.FAILED:
        return None
    return type(outcome.error).__name__ if outcome.error is not None else "error"
