"""Pieces the limiter and pacer tests' server models share."""

from __future__ import annotations

from collections.abc import Callable

from throttlepool.adapters.base import CallResult
from throttlepool.hints import RateInfo
from throttlepool.sim.window import Windows
from throttlepool.testing import FakeClock


def most_in_window(times: list[float], window: float) -> int:
    """The most of ``times`` (server stamps, any order) in any window of ``window`` seconds."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def two_per_second_call(clock: FakeClock, starts: list[float]
                        ) -> Callable[[int], CallResult[int]]:
    """A call against a server of 2 requests per 1 s sliding window, on ``clock``: it notes
    its start in ``starts``, takes 0.4 s and answers with the server's rate headers."""
    server = Windows()

    def call(item: int) -> CallResult[int]:
        starts.append(clock.now())
        d = server.admit("k", 0, clock.now(), 2, None, 1.0)
        assert d.admitted
        clock.advance(0.4)
        return CallResult(item, rate=RateInfo(limit_requests=2,
                                              remaining_requests=d.remaining_requests,
                                              reset_requests=d.reset_requests))
    return call
