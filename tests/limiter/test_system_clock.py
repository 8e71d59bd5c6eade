"""The real clock's waits on an event loop end by their deadline even when the loop's timer
fires late (Linux lets an epoll_wait timeout slip by a thousandth of it)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlepool import clock
from throttlepool.clock import (
    LOOP_TIMER_RESOLUTION,
    LOOP_TIMER_SLACK,
    WHOLE_WAIT,
    SystemClock,
    early_step,
)


@given(st.floats(min_value=1e-6, max_value=1e6))
def test_a_late_timer_still_fires_by_the_deadline_and_few_steps_reach_it(remaining: float
                                                                          ) -> None:
    steps = 0
    while (step := early_step(remaining)) is not None and remaining > WHOLE_WAIT:
        late_end = step * (1 + LOOP_TIMER_SLACK) + LOOP_TIMER_RESOLUTION
        assert step > 0 and late_end < remaining
        remaining -= late_end
        steps += 1
    assert steps <= 3
    assert early_step(remaining) == remaining  # the last step is the whole rest
    assert early_step(0.0) is None and early_step(-1.0) is None


class _RecordingLoop(asyncio.SelectorEventLoop):
    """Records how far ahead each timer is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float] = []

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None
                ) -> asyncio.TimerHandle:
        self.asked.append(when - self.time())
        return super().call_at(when, callback, *args, context=context)


def _waits(monkeypatch: pytest.MonkeyPatch, wait: Any) -> tuple[list[float], float]:
    """The timers a wait asked for, and how long it took by the loop's clock."""
    monkeypatch.setattr(clock, "WHOLE_WAIT", 0.05)  # the same steps, a 0.2 s test
    loop = _RecordingLoop()
    try:
        start = loop.time()
        loop.run_until_complete(wait())
        return loop.asked, loop.time() - start
    finally:
        loop.close()


@pytest.mark.parametrize("kind", ["asleep", "await_event"])
def test_a_long_wait_stops_short_of_its_deadline_then_waits_the_rest(
        monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    async def wait() -> None:
        if kind == "asleep":
            await SystemClock().asleep(0.2)
        else:
            assert await SystemClock().await_event(asyncio.Event(), 0.2) is False

    asked, took = _waits(monkeypatch, wait)
    # The first timer leaves room for its own lateness before the deadline; any later ones
    # are short; and the wait never ends before its deadline.
    assert asked[0] <= 0.2 * (1 - LOOP_TIMER_SLACK) - LOOP_TIMER_RESOLUTION
    assert all(a <= 0.05 for a in asked[1:])
    assert took >= 0.2


def test_an_event_set_during_a_long_wait_ends_it() -> None:
    async def wait() -> tuple[bool, float]:
        event = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, event.set)
        start = loop.time()
        got = await SystemClock().await_event(event, 30.0)
        return got, loop.time() - start

    got, took = asyncio.run(wait())
    assert got is True and took < 10.0


def test_a_wait_whose_time_is_up_still_yields_to_the_loop() -> None:
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async def wait() -> bool:
        task = asyncio.ensure_future(other())
        await SystemClock().asleep(0.0)
        got = await SystemClock().await_event(asyncio.Event(), 0.0)
        await task
        return got

    assert asyncio.run(wait()) is False
    assert ran == ["other"]
