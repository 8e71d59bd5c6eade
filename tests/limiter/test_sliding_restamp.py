"""The sliding log's restamp keeps its entries in time order, whichever way they move."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlepool.limiter import Cost, Limit, SlidingWindowLog, sliding


@given(st.lists(st.integers(0, 20), min_size=1, max_size=12),
       st.lists(st.tuples(st.integers(0, 11), st.integers(0, 25)), max_size=12))
def test_after_any_restamps_each_instant_counts_exactly_the_entries_in_its_window(
        stamps: list[int], moves: list[tuple[int, int]]) -> None:
    """Entries leave the log oldest first, so one left out of time order by a restamp (an
    entry moved later past its neighbours, or earlier) would be counted past its window."""
    period = 10.0
    backend = SlidingWindowLog([Limit(1000, period)])
    tickets = [backend.record(Cost(), float(t)) for t in sorted(stamps)]
    now = 30.0
    for index, at in moves:
        backend.restamp(tickets[index % len(tickets)], now, float(at))
    for tenth in range(0, 400):
        t = tenth / 10
        (_, used), = backend.usage(t)
        assert used == sum(1 for ticket in tickets if ticket.admit_at > t - period)


@given(st.lists(st.integers(0, 20), min_size=1, max_size=60),
       st.lists(st.tuples(st.integers(0, 59), st.integers(0, 25)), max_size=20),
       st.integers(1, 4), st.integers(1, 8))
def test_a_restamp_found_by_its_time_far_from_the_newest_keeps_every_window_exact(
        stamps: list[int], moves: list[tuple[int, int]], walk: int, tail: int) -> None:
    """Past the few newest entries a restamped ticket is found, and put back, by a search
    on time (many entries share an instant; two limits keep two logs, each searched by where
    the ticket was before the first one moved it): every instant counts exactly the entries
    in each window, as with a walk."""
    periods = (10.0, 7.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sliding, "_WALK", walk)
        mp.setattr(sliding, "_TAIL", tail)
        backend = SlidingWindowLog([Limit(1000, p) for p in periods])
        tickets = [backend.record(Cost(), float(t)) for t in sorted(stamps)]
        for index, at in moves:
            backend.restamp(tickets[index % len(tickets)], 30.0, float(at))
        for tenth in range(0, 400):
            t = tenth / 10
            for (_, used), period in zip(backend.usage(t), periods, strict=True):
                assert used == sum(1 for ticket in tickets if ticket.admit_at > t - period)
