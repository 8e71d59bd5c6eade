"""How little each warm call's two steps do (issue 16 point 5): fast calls keep no record
once no re-bound can come; and neither step lets an open call's entry leave its window
early, or a reservation queued behind it be placed from its grant."""

from __future__ import annotations

from typing import Any

import pytest

from throttlepool.limiter import ONE_REQUEST, Permit, RateLimiter
from throttlepool.limiter.arrivals import AnsweredArrivals
from throttlepool.limiter.margin import AdmissionMargin
from throttlepool.limiter.pauses import NoPauses
from throttlepool.testing import FakeClock


@pytest.mark.parametrize("margin", [0.0, None])
def test_a_reservation_queued_behind_an_open_warm_call_waits_a_window_from_its_start(
        margin: float | None) -> None:
    """A warm call granted at 0 starts at 0.1 and stays open; the next reservation of a full
    1/1s window, made then, is placed a window after the call's start, not its grant. (A
    limiter that counted warm calls from their grant until their answer placed it at 1.0,
    and a hold of the open call when it came due did not re-place a reservation already
    due: the server could count both within one second, a 429. Found in review.)"""
    clock = FakeClock()
    limiter = RateLimiter("1/1s", margin=margin, clock=clock)
    permit = limiter.acquire()
    clock.advance(0.1)
    limiter.call_started(permit)
    queued = limiter.reserve()
    assert queued.admit_at >= 1.1
    clock.set(queued.admit_at)  # no step between: the waiter wakes when it is due
    assert limiter.admitted(queued)


def test_a_call_counted_from_its_grant_is_held_before_that_entry_leaves() -> None:
    """A warm call that started after its grant and stays open: the next reservation of a
    full window waits for it, as counted from its start it would (a server may count it at
    any instant until it answers)."""
    clock = FakeClock()
    limiter = RateLimiter("1/1s", margin=0.0, clock=clock)
    permit = limiter.acquire()
    clock.advance(0.1)
    limiter.call_started(permit)
    clock.set(1.0)  # a whole window after the grant; the call is still open
    assert limiter.reserve().admit_at >= 1.1


class _Restamps:
    def restamp(self, ticket: Permit, now: float, at: float | None = None) -> list[Permit]:
        return []


def test_answered_calls_are_not_kept_once_no_rebound_can_come() -> None:
    """Once the fastest call re-bounded the kept calls at under the least re-bound step (1
    ms), no later call can be faster by a step: keeping calls for a re-bound is wasted.
    Before: every answered call of the window was kept."""
    arrivals = AnsweredArrivals([60.0], AdmissionMargin([60.0], 0.01))
    backend: Any = _Restamps()

    def answer(at: float, duration: float) -> None:
        arrivals.ended(backend, Permit(ONE_REQUEST, at), at, at + duration, 0.0, False,
                       NoPauses(), at + duration)

    answer(0.0, 0.2)
    answer(1.0, 0.1)
    assert len(list(arrivals.kept())) == 2  # a call 1 ms faster would re-bound them
    answer(2.0, 0.0005)
    answer(3.0, 0.0004)
    answer(4.0, 0.002)
    assert list(arrivals.kept()) == []
