"""Trial 11 item 9: the live line's request rate never exceeds the limit when the calls kept
it (``req/min(10s)=693/360`` was shown for a run the server saw within 60 per 10 s). On the
fake clock, through the real display (LiveProgress.line), with calls admitted as a sliding
window admits them: bursts at the window's edges, a resume's earlier calls, draws at any
moment."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from throttlepool.outcome import RunStats
from throttlepool.progress import LiveProgress, status_line
from throttlepool.testing import FakeClock

RATE = re.compile(r"req/min(?:\((\d+)s\))?=([\d.]+)(k?)(?:/(\d+))?")


def shown_rate(line: str) -> tuple[float, str | None]:
    """(requests per minute, the window's seconds) the line shows."""
    match = RATE.search(line)
    assert match is not None, line
    value = float(match.group(2)) * (1000 if match.group(3) else 1)
    return value, match.group(1)


def admitted(wishes: list[float], amount: int, period: float) -> list[float]:
    """When a sliding window of ``amount`` per ``period`` admits calls wished at ``wishes``."""
    times: list[float] = []
    for wish in sorted(wishes):
        at = max(wish, times[-1] if times else 0.0)
        if len(times) >= amount:
            at = max(at, times[-amount] + period)
        times.append(at)
    return times


def drawn_rates(calls: list[float], draws: list[float], *, amount: int, period: float,
                earlier: int = 0) -> list[tuple[float, str | None]]:
    """The request rate the display shows at each of ``draws`` (seconds after the start)."""
    clock = FakeClock(1000.0)
    display = LiveProgress("q", file=io.StringIO(), mode="lines", interval=1e6,
                           clock=clock.now)
    stats = RunStats(total=len(calls), started=clock.now(), calls=earlier,
                     limits=((float(amount), period, "requests"),))
    display.start(len(calls), stats)
    shown = []
    try:
        for t in sorted(draws):
            clock.advance(1000.0 + t - clock.now())
            stats.calls = earlier + sum(1 for c in calls if c <= t)
            shown.append(shown_rate(display.line(clock.now())))
    finally:
        display.close(stats)
    return shown


def test_bursts_at_the_window_edges_are_not_shown_above_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The trial's run: 60 per 10 s, 120 calls, a burst at the start and the next as the
    # window frees 10 s later; drawn every 2 s (lines) and at the end.
    monkeypatch.setenv("COLUMNS", "200")
    calls = admitted([0.05] * 120, 60, 10.0)
    assert calls[60] == pytest.approx(10.05)
    shown = drawn_rates(calls, [0.5, 2.0, 4.0, 6.0, 8.0, 10.0, 10.5, 12.0, 14.0],
                        amount=60, period=10.0)
    assert max(rate for rate, _ in shown) <= 360.0, shown
    # Over 10 s it is exactly the limit: the window was full.
    assert shown[-1] == (360.0, "10"), shown


@settings(max_examples=40, deadline=None)
@given(amount=st.integers(1, 20), period=st.sampled_from([0.5, 1.0, 3.0, 10.0, 60.0]),
       wishes=st.lists(st.floats(0.0, 40.0), min_size=1, max_size=80),
       draws=st.lists(st.floats(0.0, 45.0), min_size=1, max_size=40),
       earlier=st.integers(0, 50))
def test_no_moment_shows_more_than_a_kept_limit(amount: int, period: float,
                                                wishes: list[float], draws: list[float],
                                                earlier: int) -> None:
    calls = admitted(wishes, amount, period)
    limit = amount * 60 / period
    for rate, _ in drawn_rates(calls, draws, amount=amount, period=period, earlier=earlier):
        assert rate <= limit * 1.0001 + 0.05, (rate, limit)  # + the line's rounding


def test_the_whole_run_line_does_not_stretch_a_burst_to_a_minute() -> None:
    stats = RunStats(total=100, calls=60, done=60, started=1.0,
                     limits=((60.0, 10.0, "requests"),))
    rate, _ = shown_rate(status_line(stats, now=3.0))  # 60 calls at once, 2 s ago
    assert rate <= 360.0
