"""The sliding log counts every entry exactly in its window, whichever way restamps move it
(its logs put back in time order lazily)."""

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
       st.integers(0, 4), st.integers(1, 8), st.integers(0, 2))
def test_restamps_put_in_order_far_from_the_newest_keep_every_window_exact(
        stamps: list[int], moves: list[tuple[int, int]], bound: int, tail: int,
        factor: int) -> None:
    """Moved tickets are put back in order by a re-sort of each log's tail or one by one,
    each found by a search on where it was placed (many entries share an instant; two limits
    keep two logs): every instant counts exactly the entries in each window."""
    periods = (10.0, 7.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sliding, "_DIRTY_BOUND", bound)
        mp.setattr(sliding, "_TAIL", tail)
        mp.setattr(sliding, "_REGION_FACTOR", factor)
        backend = SlidingWindowLog([Limit(1000, p) for p in periods])
        tickets = [backend.record(Cost(), float(t)) for t in sorted(stamps)]
        for index, at in moves:
            backend.restamp(tickets[index % len(tickets)], 30.0, float(at))
        for tenth in range(0, 400):
            t = tenth / 10
            for (_, used), period in zip(backend.usage(t), periods, strict=True):
                assert used == sum(1 for ticket in tickets if ticket.admit_at > t - period)
