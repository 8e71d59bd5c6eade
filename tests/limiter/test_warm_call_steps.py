"""How little each warm call's two steps do (issue 16 point 5): an in-process log restamps a
warm call once (at its answer), and fast calls keep no record once no re-bound can come;
neither lets an open call's entry leave its window early."""

from __future__ import annotations

from typing import Any

import pytest

from throttlepool.limiter import ONE_REQUEST, Permit, RateLimiter
from throttlepool.limiter.arrivals import AnsweredArrivals
from throttlepool.limiter.margin import AdmissionMargin
from throttlepool.limiter.pauses import NoPauses
from throttlepool.limiter.sliding import SlidingWindowLog
from throttlepool.testing import FakeClock


def test_an_in_process_log_restamps_a_warm_call_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a hold at its start and a restamp at its answer, two moves of one entry."""
    moves: list[float | None] = []
    restamp = SlidingWindowLog.restamp

    def counted(self: SlidingWindowLog, ticket: Permit, now: float, at: float | None = None
                ) -> Any:
        moves.append(at)
        return restamp(self, ticket, now, at)

    monkeypatch.setattr(SlidingWindowLog, "restamp", counted)
    monkeypatch.setattr(SlidingWindowLog, "hold", counted)
    clock = FakeClock()
    limiter = RateLimiter("100/1s", margin=None, clock=clock)
    permit = limiter.acquire()
    clock.advance(0.01)
    started = limiter.call_started(permit)
    clock.advance(0.002)
    limiter.call_ended(permit, started, first_on_thread=False)
    assert len(moves) == 1 and moves[0] is not None
    assert permit.admit_at == pytest.approx(0.012)  # its start plus its lag, by its answer


def test_a_call_counted_from_its_grant_is_held_before_that_entry_leaves() -> None:
    """A warm call that started after its grant and stays open: the next reservation of a
    full window waits for it, as counted from its start it would (a server may count it at
    any instant until it answers)."""
    clock = FakeClock()
    limiter = RateLimiter("1/1s", margin=0.0, clock=clock)
    permit = limiter.acquire()
    clock.advance(0.1)  # within the lag a call may start after its grant unstamped
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
