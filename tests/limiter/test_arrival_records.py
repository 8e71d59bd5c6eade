"""The answered calls' records (limiter.arrivals): what is kept, and what it costs to keep.

A limit over a long window keeps every answered call of the window (100,000s in a run of
no-op calls): the records must hold exactly the calls a simple list would, and add no
object per call beyond the permit, which the collector would count (see
``AnsweredArrivals.keep``).
"""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from throttlepool.limiter import ONE_REQUEST, Permit
from throttlepool.limiter.arrivals import AnsweredArrivals
from throttlepool.limiter.margin import AdmissionMargin

PERIOD = 1.0
FLOOR = 0.125


def _arrivals() -> AnsweredArrivals:
    return AnsweredArrivals([PERIOD], AdmissionMargin([PERIOD], FLOOR))


def test_keeping_an_answered_call_adds_no_collected_object() -> None:
    """Before: one tuple per call, 1,000 calls counted 1,000 towards the next collection."""
    arrivals = _arrivals()
    permits = [Permit(ONE_REQUEST, i / 1000) for i in range(1000)]
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for i, permit in enumerate(permits):
            t = i / 1000
            arrivals.keep(permit, t, 0.0005, 0.0001, i % 7 == 0, t + 0.0005)
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert grown < 50
    assert len(list(arrivals.kept())) == 1000


# One answered call: (start, duration, lag, first on its thread, seconds until the next
# call's answer). Dyadic times, so the model's sums and the records' are the same floats.
_call = st.tuples(
    st.integers(0, 64).map(lambda k: k / 64),
    st.integers(1, 32).map(lambda k: k / 256),
    st.integers(0, 8).map(lambda k: k / 256),
    st.booleans(),
    st.integers(0, 64).map(lambda k: k / 64),
)


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(_call, max_size=120), provisional=st.sets(st.integers(0, 119)))
def test_records_keep_what_a_list_keeps(
    calls: list[tuple[float, float, float, bool, float]], provisional: set[int]
) -> None:
    """Against a plain list with the same rule: drop from the oldest while its answer is
    before now less the longest window and the margin; keep each call not provisional."""
    arrivals = _arrivals()
    model: list[tuple[Permit, float, float, float, bool, float]] = []
    now = 0.0
    for i, (offset, duration, lag, first, gap) in enumerate(calls):
        now += gap
        started = now - duration - offset
        permit = Permit(ONE_REQUEST, started, provisional=i in provisional)
        arrivals.keep(permit, started, duration, lag, first, now)
        horizon = now - PERIOD - FLOOR
        while model and model[0][5] < horizon:
            model.pop(0)
        if not permit.provisional:
            model.append((permit, started, duration, lag, first, started + duration))
        assert list(arrivals.kept()) == model


class _Restamps:
    """A backend that records where each restamp would count its ticket from."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def restamp(self, ticket: Permit, now: float, at: float | None = None) -> list[Permit]:
        assert at is not None
        self.at.append(at)
        return []


_TIMES = st.floats(0.0, 5.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(fastest=st.none() | st.floats(0.001, 2.0), started=_TIMES,
       duration=st.floats(0.001, 3.0), lag=st.floats(0.0, 0.5), late=st.floats(0.0, 1.0))
def test_a_warm_call_counts_from_the_bound_rebound_would_give_it(
        fastest: float | None, started: float, duration: float, lag: float, late: float) -> None:
    """``answered`` counts a warm call from the bound ``rebound`` would give it
    (``_latest_arrival``): its start plus the larger of its own lag and its time beyond the
    fastest call, never after now; its start while no fastest call is known. The call is
    kept for ``rebound``."""
    arrivals = _arrivals()
    if fastest is not None:
        arrivals.margin.ended(fastest)
    backend = _Restamps()
    permit = Permit(ONE_REQUEST, started - 1.0)  # far from any bound: always restamped
    now = started + duration + late
    arrivals.answered(backend, permit, started, duration, lag, now)  # type: ignore[arg-type]
    latest = arrivals._latest_arrival(started, duration, lag, False)
    assert backend.at == [started if latest is None else min(latest, now)]
    assert [k[:4] for k in arrivals.kept()] == [(permit, started, duration, lag)]
