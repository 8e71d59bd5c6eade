"""The sliding log's restamp keeps its entries in time order, whichever way they move."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from throttlepool.limiter import Cost, Limit, SlidingWindowLog


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
