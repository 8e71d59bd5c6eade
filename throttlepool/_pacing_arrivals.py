"""Where the header pacer's learned log counts an answered call from: its arrival bound.

Once :class:`~throttlepool._pacing.HeaderBudget` has learned a server's sliding window, it
keeps an exact log of our own calls. The server stamped each call somewhere between its
start and its answer; counted from its answer, every call would hold its slot a whole round
trip longer than the server does, and the first call of each window would wait that long
(about one call latency lost per window boundary). With the call's timing on its worker
thread (:class:`CallTiming`) the log counts it from the latest instant the server may have
stamped it instead, by exactly the known-limit limiter's means and safety argument
(:class:`~throttlepool.limiter.arrivals.AnsweredArrivals` over the learned log, with an
:class:`~throttlepool.limiter.margin.AdmissionMargin` whose floor lengthens every entry's
window): see those modules. A call without a timing (an async function, run on the loop,
whose start cannot be observed; a failure) still counts from its answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from .limiter import ONE_REQUEST, AdmissionMargin, SlidingWindowLog, Ticket
from .limiter.arrivals import AnsweredArrivals
from .limiter.pauses import PauseSource

_NAN = float("nan")


@dataclass(slots=True)
class CallTiming:
    """One attempt as its worker thread saw it, on the run's clock: when the call started
    and answered, and whether it was its thread's first (which may connect first).

    Filled in on the worker thread; read on the loop once the attempt's result is there."""

    started: float = _NAN
    ended: float = _NAN
    first_on_thread: bool = False

    @property
    def complete(self) -> bool:
        """True once both instants were taken (NaN compares false)."""
        return self.started <= self.ended


class LearnedArrivals:
    """The arrival bounds of the answered calls in one learned log (made with the log), or,
    before any window is learned, only the fastest warm call's duration they will need.

    A new log's bounds start from the fastest duration known (``fastest_from``): a warm call
    answered before the window was learned shows the server's time and the way back as well
    as one after, and without it the first warm call after learning, if stalled before its
    send, would be its own fastest and count from its start (a 429 in a model of the
    server).

    The floor follows the calls' hand-off delays (let go to started on the thread), as a
    runner's own limiter's does, and a 429 widens it (:meth:`widen`). The log's entries
    count for their window plus the floor only from the first bounded call on: an entry
    counted from its answer needs none (the server stamped it before), so a log whose calls
    are never timed counts each exactly as before.
    """

    def __init__(self, window: SlidingWindowLog | None, pauses: PauseSource,
                 fastest_from: AdmissionMargin | None = None) -> None:
        # No window: an empty log, whose restamps of the calls' stand-in tickets move nothing.
        window = window if window is not None else SlidingWindowLog([])
        periods = [lim.period for lim in window.limits]
        self.margin = AdmissionMargin(periods, follows_load=True)
        if fastest_from is not None and fastest_from.fastest is not None:
            self.margin.ended(fastest_from.fastest, fastest_from.fastest_unobserved)
        self._arrivals = AnsweredArrivals(periods, self.margin)
        self._window = window
        self._pauses = pauses
        self._engaged = False  # the log's margin is the floor (once a call is bounded)

    def answered(self, ticket: Ticket | None, let_go: float, timing: CallTiming,
                 now: float) -> None:
        """The call let go at ``let_go`` answered (seen at ``now``) with ``timing``: count its
        entry ``ticket`` from its arrival bound (None: no window yet, it only teaches the
        fastest duration)."""
        if ticket is None:
            ticket = Ticket(ONE_REQUEST, let_go)
        lag = timing.started - let_go
        if lag < 0.0:
            lag = 0.0
        margin, window = self.margin, self._window
        if margin.handed_off(lag, now) or not self._engaged:
            window.set_margin(margin.value, now)  # before any entry may count from a bound
            self._engaged = True
        self._arrivals.ended(window, ticket, timing.started, min(timing.ended, now), lag,
                             timing.first_on_thread, self._pauses, now)

    def widen(self, now: float) -> None:
        """A 429 met a call let go under this log: widen the floor (see AdmissionMargin)."""
        self.margin.widen()
        self._window.set_margin(self.margin.value, now)
        self._engaged = True
