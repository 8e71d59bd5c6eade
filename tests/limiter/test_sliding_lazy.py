"""The sliding log's lazy order: a restamp moves no entry, and every admission is the one the
eager log (kept in time order at every restamp) gives.

Times and weights are dyadic or whole, so both logs' sums are exact and any difference found
here is a real one, not float noise.
"""

from __future__ import annotations

from typing import Any

import pytest
from _eager_sliding import SlidingWindowLog as EagerLog
from hypothesis import example, given, settings
from hypothesis import strategies as st

from throttlepool.errors import CostExceedsLimit
from throttlepool.limiter import REQUESTS, TOKENS, Cost, Limit, SlidingWindowLog, sliding
from throttlepool.limiter.ticket import Ticket

QUARTER = 0.25

limit_sets = st.tuples(
    st.builds(Limit, st.integers(1, 4).map(float), st.sampled_from([1.0, 2.0, 4.0]),
              st.just(REQUESTS)),
    st.one_of(st.none(), st.builds(Limit, st.sampled_from([8.0, 16.0]),
                                   st.sampled_from([1.0, 3.0]), st.just(TOKENS))),
).map(lambda pair: [pair[0]] if pair[1] is None else [pair[0], pair[1]])

op = st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 8)),
    st.tuples(st.just("reserve"), st.integers(0, 10)),
    st.tuples(st.just("reserve"), st.integers(0, 10)),
    st.tuples(st.just("record"), st.integers(0, 10), st.integers(0, 24)),
    # A restamp to ``now`` less some quarters (None: to now, later only), as the arrival
    # bound (earlier, down to a call's start) and a hold (later) move an admitted ticket.
    st.tuples(st.just("restamp"), st.integers(0, 63), st.one_of(st.none(), st.integers(0, 24))),
    st.tuples(st.just("restamp"), st.integers(0, 63), st.one_of(st.none(), st.integers(0, 24))),
    st.tuples(st.just("hold"), st.integers(0, 63)),
    st.tuples(st.just("settle"), st.integers(0, 63), st.integers(0, 10)),
    st.tuples(st.just("cancel"), st.integers(0, 63)),
    st.tuples(st.just("usage"),),
    st.tuples(st.just("pause"), st.integers(0, 8)),
    st.tuples(st.just("margin"), st.integers(0, 4)),
)


#: Steps that act on the whole log; the others pick one of the tickets made so far.
_NEEDS_NO_TICKET = frozenset({"reserve", "record", "usage", "pause", "margin"})


def _step(backend: SlidingWindowLog | EagerLog, tickets: list[Ticket], action: tuple[Any, ...],
          now: float) -> object:
    """Apply one step to ``backend``; return what it says (moved tickets as indices)."""
    kind = action[0]
    if kind == "reserve":
        try:
            tickets.append(backend.reserve(Cost(tokens=float(action[1])), now))
        except CostExceedsLimit:
            return "too big"
        return None
    if kind == "record":
        at = now - QUARTER * action[2]
        tickets.append(backend.record(Cost(tokens=float(action[1])), at))
        return None
    if kind == "usage":
        return backend.usage(now)
    if kind == "pause":
        moved = backend.pause_until(now + QUARTER * action[1], now)
    elif kind == "margin":
        moved = backend.set_margin(QUARTER / 2 * action[1], now)
    else:
        ticket = tickets[action[1] % len(tickets)]
        if kind == "cancel":
            moved = backend.cancel(ticket, now)
        elif kind == "settle":
            try:
                moved = backend.settle(ticket, Cost(tokens=float(action[2])), now)
            except CostExceedsLimit:
                return "too big"
        elif ticket.admit_at > now:
            return "queued"  # a restamp or hold is of an admitted ticket only
        elif kind == "hold":
            moved = backend.hold(ticket, now)
        else:
            at = None if action[2] is None else now - QUARTER * action[2]
            moved = backend.restamp(ticket, now, at)
    index = {id(t): i for i, t in enumerate(tickets)}
    return sorted(index[id(t)] for t in moved)


@settings(max_examples=300, deadline=None)
# A hold moves the oldest entry past the next: the full window frees the next one first.
@example([Limit(2.0, 4.0)], [("reserve", 0), ("advance", 1), ("reserve", 0), ("advance", 1),
                             ("hold", 0), ("reserve", 0)], 1024, 2, 4)
# ... and, the window gone past the next, that one leaves while the moved one stays.
@example([Limit(4.0, 4.0)], [("reserve", 0), ("advance", 1), ("reserve", 0), ("advance", 1),
                             ("hold", 0), ("advance", 16), ("advance", 1), ("usage",)], 1024, 2,
         4)
@given(limit_sets, st.lists(op, max_size=60), st.sampled_from([0, 2, 1024]), st.integers(0, 2),
       st.integers(1, 4))
def test_the_lazy_log_admits_every_reservation_when_the_eager_log_does(
        limits: list[Limit], ops: list[tuple[Any, ...]], bound: int, factor: int,
        tail: int) -> None:
    """Any sequence of reservations, restamps (earlier, later, far back), holds, settles,
    cancels, pauses and expiry by time: after every step each ticket has the admission time
    the eager log gives it, and every step reports the same tickets moved and the same usage.
    The lazy log's order is put right by a re-sort or ticket by ticket (each forced here by a
    small factor; a bound of 0 puts it right at every restamp, 1024 only where it is read),
    from a search of the whole log or of its tail."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sliding, "_DIRTY_BOUND", bound)
        mp.setattr(sliding, "_REGION_FACTOR", factor)
        mp.setattr(sliding, "_TAIL", tail)
        lazy, eager = SlidingWindowLog(limits), EagerLog(limits)
        lazy_tickets: list[Ticket] = []
        eager_tickets: list[Ticket] = []
        now = 0.0
        for action in ops:
            if action[0] == "advance":
                now += QUARTER * action[1]
                continue
            if action[0] not in _NEEDS_NO_TICKET and not lazy_tickets:
                continue
            said = _step(lazy, lazy_tickets, action, now)
            assert said == _step(eager, eager_tickets, action, now), action
            assert ([t.admit_at for t in lazy_tickets]
                    == [t.admit_at for t in eager_tickets]), action


def test_a_restamp_far_back_moves_no_entry_until_a_binding_limit_reads_the_order() -> None:
    """A call held open as 100 others started: its restamp (to now, then back to its bound)
    leaves the log as it was, where the eager log took it out of the middle and put it back
    at the end; the reservation that finds the limit full puts the log in time order first,
    and is admitted when the oldest entry leaves."""
    backend = SlidingWindowLog([Limit(200, 10.0)])
    tickets = [backend.reserve(Cost(), i / 100) for i in range(200)]
    now = 2.0
    (win,) = backend._windows
    before = list(win.log)
    held = tickets[100]
    backend.hold(held, now)
    assert list(win.log) == before and held.admit_at == now
    backend.restamp(held, now, 1.5)
    assert list(win.log) == before and held.admit_at == 1.5
    assert backend.usage(now) == [(Limit(200, 10.0), 200.0)]
    assert list(win.log) == before  # counting reads no order
    late = backend.reserve(Cost(), now)
    assert late.admit_at == win.leaves_at(tickets[0])
    times = [t.admit_at for t in win.log]
    assert times == sorted(times) and held in win.log and win.log[-1] is late
    assert all(t.placed == t.admit_at for t in win.log)
