"""The live progress line: fields fitted by priority, honest ETA, rates that are rates, log
lines above the bar, and the engine saying what it waits for; on the fake clock."""

from __future__ import annotations

import io
import logging
import sys
import threading
from typing import Any

import pytest

from tests.cli.test_cli_progress_pty import Screen
from throttlepool import ThreadedBatchRunner
from throttlepool._progress_line import RATE_LIMIT, Rate, Rates, RateWindow, eta, fields, fit
from throttlepool.outcome import Outcome, RunStats
from throttlepool.progress import LiveProgress
from throttlepool.testing import FakeClock

PER_MINUTE = ((120.0, 60.0, "requests"), (10_000.0, 60.0, "tokens"))


def _waiting_stats(clock: FakeClock) -> RunStats:
    """The issue's run: 116 of 200 done in 3 s, the limiter's next slot 41 s away."""
    return RunStats(total=200, done=110, failed=6, calls=120, rate_limited=3,
                    input_tokens=2400, output_tokens=1200, started=clock.now() - 19.0,
                    waiting_for=RATE_LIMIT, waiting_until=clock.now() + 41.0,
                    limits=PER_MINUTE)


def _line(stats: RunStats, clock: FakeClock, width: int, active: float = 3.0) -> str:
    rates = Rates(*[Rate(0.0, 10.0)] * 5)
    parts = fields(stats, now=clock.now(), active=active, rates=rates, desc="questions.txt")
    return fit(parts, width - 1, (stats.finished + stats.not_attempted) / 200)


def test_eighty_columns_keep_the_wait_the_time_and_the_limits() -> None:
    clock = FakeClock(1000.0)
    line = _line(_waiting_stats(clock), clock, 80)
    assert len(line) < 80
    for part in ("116/200", "rate limit: next slot in 41s", "00:19<00:4", "failed=6",
                 "req/min(10s)=0/120"):
        assert part in line, line
    assert "in_flight" not in line  # the least important goes first


def test_wide_terminals_show_every_field_and_a_bar() -> None:
    clock = FakeClock(1000.0)
    line = _line(_waiting_stats(clock), clock, 200)
    for part in ("questions.txt:", "58%", "|####", "429s=3", "tok/min(10s)=0/10k",
                 "item/s(10s)=0.0", "ok=110", "in_flight=0"):
        assert part in line, line
    assert line.index("116/200") < line.index("|") < line.index("00:19")


@pytest.mark.parametrize("width", [20, 40, 60, 80, 120, 200])
def test_no_width_is_exceeded_and_the_count_always_shows(width: int) -> None:
    clock = FakeClock(1000.0)
    line = _line(_waiting_stats(clock), clock, width)
    assert len(line) <= width - 1 and "116/200" in line


def test_the_eta_counts_the_wait_and_the_windows_the_limit_implies() -> None:
    clock = FakeClock(1000.0)
    stats = _waiting_stats(clock)
    # 84 left, none in flight, 120/min: the wait in force (41 s), then all within a window;
    # the throughput alone (116 items in 3 active s) would say about 2 s.
    estimate = eta(stats, clock.now(), active=3.0)
    assert estimate is not None and 41.0 <= estimate <= 41.0 + 3.0
    # 300 more to admit at 120/min: two more windows after the first slot.
    stats.total = 416
    estimate = eta(stats, clock.now(), active=3.0)
    assert estimate is not None and estimate >= 41.0 + 2 * 60.0
    # The wait is over and nothing binds: the throughput decides.
    stats.total, stats.waiting_for, stats.waiting_until, stats.limits = 200, None, None, ()
    assert eta(stats, clock.now(), active=3.0) == pytest.approx(84 * 3.0 / 116)


def test_rates_are_per_interval_and_leave_out_checkpointed_items() -> None:
    clock = FakeClock(0.0)
    meter = RateWindow(interval=10.0)
    stats = RunStats(total=1000, from_checkpoint=500, done=500)  # a resumed run
    meter.sample(stats, clock.now())
    for _ in range(20):  # 8 items and calls a second, 100 tokens each
        clock.advance(1.0)
        stats.done += 8
        stats.calls += 8
        stats.input_tokens += 800
        rates = meter.sample(stats, clock.now())
    assert rates.items.span == pytest.approx(10.0) and rates.items.label == "(10s)"
    assert rates.items.value == pytest.approx(8.0)  # not (500 + 160) / 20 s
    assert rates.requests.value == pytest.approx(480.0)
    assert rates.tokens.value == pytest.approx(48_000.0)


def test_the_bar_keeps_time_on_a_timer_while_nothing_finishes() -> None:
    clock = FakeClock(100.0)
    out = io.StringIO()
    bar = LiveProgress("q", file=out, interval=0.05, clock=clock.now)
    stats = RunStats(total=10, started=100.0, waiting_for=RATE_LIMIT, waiting_until=130.0,
                     limits=((5.0, 60.0, "requests"),))
    drawn = threading.Event()
    real_paint = bar._paint

    def paint(text: str) -> None:
        real_paint(text)
        drawn.set()

    bar._paint = paint  # type: ignore[method-assign]
    bar.start(10, stats)
    for _ in range(3):  # no update() at all: only the timer draws
        clock.advance(5.0)
        drawn.clear()
        assert drawn.wait(10)
        drawn.clear()
        assert drawn.wait(10)  # a draw that surely saw the advanced clock
    bar.close(stats)
    texts = out.getvalue().split("\r")
    for second in (5, 10, 15):
        assert any(f"00:{second:02d}<" in t and f"next slot in {30 - second}s" in t
                   for t in texts), texts


def test_log_lines_and_warnings_go_above_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("throttlepool.test")
    logger.addHandler(handler)
    try:
        bar = LiveProgress("q", interval=0.0)
        stats = RunStats(total=3, done=1)
        bar.start(3, stats)
        bar.update(stats, None)
        print("item 1 failed: boom", file=sys.stderr)
        sys.stderr.write("partial ")
        sys.stderr.write("line\n")
        logger.warning("server asked to slow down")
        stats.done = 3
        bar.close(stats)
    finally:
        logger.removeHandler(handler)
    assert sys.stderr is out and handler.stream is out  # given back
    screen = Screen(80)
    screen.feed(out.getvalue(), 0.0)
    # Trailing blanks are what a terminal shows of a cleared line: nothing.
    lines = [line.rstrip() for line in screen.lines if line.strip()]
    assert lines[:3] == ["item 1 failed: boom", "partial line", "server asked to slow down"]
    assert lines[3].startswith("q: 3/3 100%") and len(lines) == 4


class _Watcher:
    """A sink that notes, at each outcome, what the other workers wait for."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, float | None]] = []
        self.started = 0.0

    def start(self, total: int | None, stats: RunStats) -> None:
        return None

    def update(self, stats: RunStats, outcome: Outcome[Any] | None) -> None:
        self.started = stats.started
        self.seen.append((stats.waiting_for, stats.waiting_until))

    def close(self, stats: RunStats) -> None:
        self.seen.append((stats.waiting_for, stats.waiting_until))


def test_the_engine_says_what_it_waits_for_and_until_when() -> None:
    # The real clock: on the fake one a wait passes before anything could observe it.
    watcher = _Watcher()
    with ThreadedBatchRunner(lambda x: x, batch_size=4, limits="2/3s", progress=watcher,
                             margin=0.0) as runner:
        runner.run(range(4))
    # Items 0 and 1 go at once; 2 and 3 wait for the window that ends 3 s after the start.
    reason, until = watcher.seen[0]
    assert reason == RATE_LIMIT and until is not None
    assert 2.9 <= until - watcher.started <= 3.5
    assert watcher.seen[-1] == (None, None)  # nothing waits once the run ended


def test_the_final_bar_line_is_drawn_once() -> None:
    # Trial 11: the last state was painted, then painted again by tqdm's close.
    clock = FakeClock(100.0)
    out = io.StringIO()
    bar = LiveProgress("q", file=out, interval=10.0, clock=clock.now)
    bar.start(10, RunStats(total=10, started=100.0))
    clock.advance(4.0)
    bar.close(RunStats(total=10, done=10, calls=10, started=100.0))
    finals = [t for t in out.getvalue().split("\r") if "10/10" in t]
    assert len(finals) == 1, finals
    assert out.getvalue().endswith("\n")
