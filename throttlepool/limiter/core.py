"""The limiter mechanism: one lock around a backend, shared by threads and asyncio tasks.

The backend computes each reservation's admission time under the lock; waiting happens
outside it, on the injected clock (limiter.waiting), and a waiter whose time moves earlier
(a refund by ``settle``, a cancelled reservation) is woken instead of sleeping out its old
wait.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable

from ..clock import SYSTEM_CLOCK, Clock
from .arrivals import AnsweredArrivals
from .calibration import EstimateCalibration
from .limits import INPUT_TOKENS, ONE_REQUEST, TOKENS, Cost, Limit, LimitSpec, build_limits
from .margin import DEFAULT_FLOOR, AdmissionMargin
from .pauses import CollectorPauses, NoPauses, PauseSource
from .sliding import SlidingWindowLog
from .ticket import LimiterBackend, Ticket
from .waiting import Waiting, wake

Permit = Ticket


class RateLimiter(Waiting):
    """A rate limiter usable as ``with limiter:``, ``async with limiter:`` or ``acquire()``.

    By default an exact sliding-window log over every given limit::

        limiter = RateLimiter("500/minute", "10/second", tpm=200_000)
        limiter = RateLimiter(rpm=50, itpm=400_000, otpm=80_000)  # Anthropic's split
        with limiter:                       # one request
            call()
        permit = limiter.acquire(Cost(tokens=1200))
        limiter.settle(permit, Cost(tokens=830))   # actual usage refunds the rest

    ``margin`` (seconds) lengthens the time each admission counts: a server stamps a request
    when it arrives, a little after we decide, and the margin covers that delay. It is the
    floor of an :class:`AdmissionMargin`, which widens with the delays observed between a
    grant and its call's start (:meth:`call_started`) and after a 429; ``None``: a floor
    that follows those delays too (10-20 ms); a number: a fixed floor.
    """

    # Every call reads these in code left cold since the last call: attributes in slots are
    # one load from the object, not one from its dict's values as well.
    __slots__ = ("__weakref__", "_arrivals", "_counts_prompts", "_least_margin", "_local",
                 "_lock", "_now", "_oldest_open", "_open_calls", "_open_first_calls",
                 "_shortest", "_unstamped", "backend", "calibration", "clock", "margin",
                 "pauses")

    def __init__(
        self,
        *limits: LimitSpec,
        rpm: float | None = None,
        tpm: float | None = None,
        rps: float | None = None,
        itpm: float | None = None,
        otpm: float | None = None,
        safety: float = 1.0,
        margin: float | None = 0.0,
        backend: LimiterBackend | None = None,
        clock: Clock | None = None,
    ) -> None:
        if backend is not None and (limits or rpm or tpm or rps or itpm or otpm):
            raise TypeError("give either limits or a backend, not both")
        floor = DEFAULT_FLOOR if margin is None else margin
        own = None
        if backend is None:
            backend = own = SlidingWindowLog(
                build_limits(limits, rpm=rpm, tpm=tpm, rps=rps, safety=safety,
                             itpm=itpm, otpm=otpm), margin=floor
            )
        self.backend: LimiterBackend = backend
        self.margin = AdmissionMargin([lim.period for lim in self.backend.limits],
                                      max(floor, self.backend.margin),
                                      follows_load=margin is None and own is not None)
        self.clock = clock or SYSTEM_CLOCK
        self._now = self.clock.now  # every call reads it three times, in cold code
        #: Stop-the-world pauses (see limiter.pauses); measured on the system clock only.
        self.pauses: PauseSource = (CollectorPauses.shared() if self.clock is SYSTEM_CLOCK
                                    else NoPauses())
        #: Prompt estimates follow what the server counted (see limiter.calibration).
        self.calibration = EstimateCalibration()
        self._counts_prompts = any(lim.unit in (TOKENS, INPUT_TOKENS)
                                   for lim in self.backend.limits)
        self._lock = threading.Lock()
        # Threads' first calls not answered yet, with their hand-off delays.
        self._open_first_calls: dict[Permit, tuple[Permit, float]] = {}
        # Other calls not answered yet, oldest stamp first (see _hold_open_calls), each with
        # its hand-off delay (see AnsweredArrivals.answered).
        self._open_calls: dict[Permit, tuple[Permit, float, float]] = {}
        self._shortest = min((lim.period for lim in self.backend.limits), default=0.0)
        # The stamp of the oldest open call, or earlier (inf: none open): most steps find
        # nothing yet to hold and skip looking.
        self._oldest_open = float("inf")
        # Open warm calls still counted from their grant, with their starts (see
        # call_started): only with our own in-process log, which no other process reserves in.
        self._unstamped: dict[Permit, float] = {}
        # Our own log, which no other limiter shares (a log given may be), else None.
        self._local: SlidingWindowLog | None = own
        # (It only rises: this stays a lower bound; less a microsecond, so that the hold's
        # horizon and the entry's span, computed apart, cannot round the wrong way.)
        self._least_margin = self.margin.least - 1e-6
        # Where answered calls count from (see limiter.arrivals).
        self._arrivals = AnsweredArrivals([lim.period for lim in self.backend.limits],
                                          self.margin)
        self._apply_margin(self.clock.now())

    @property
    def limits(self) -> list[Limit]:
        """The limits this limiter enforces."""
        return list(self.backend.limits)

    def unrestricted(self) -> bool:
        """True while no limit is configured and no pause is in force: nothing to reserve."""
        return not self.backend.limits and self.backend.paused_until <= self.clock.now()

    def reserve(self, cost: Cost = ONE_REQUEST) -> Permit:
        """Record a reservation without waiting; ``permit.admit_at`` says when it is admitted."""
        with self._lock:
            now = self._now()
            if self._open_first_calls or self._oldest_open <= now - self._shortest:
                self._hold_open_calls(now)
            if not self._counts_prompts:  # every call's case: _reserve's first, inline
                permit = self.backend.reserve(cost, now)
            else:
                permit = self._reserve(cost, now)
            if not self._unstamped or permit.admit_at <= now:
                return permit
            moved = self._stamp_open_calls(now)
        wake(moved)
        return permit

    def _reserve(self, cost: Cost, now: float) -> Permit:
        """The backend's reservation of ``cost`` with its prompt estimate calibrated."""
        if not self._counts_prompts:
            return self.backend.reserve(cost, now)
        permit = self.backend.reserve(self.calibration.corrected(cost), now)
        permit.estimated = cost
        return permit

    def _stamp_open_calls(self, now: float) -> list[Ticket]:
        """A reservation queued: count every open call still counted from its grant from its
        start, as every call is counted while anything is queued (see :meth:`call_started`);
        the queued reservations are re-placed by the backend. Returns the tickets moved."""
        moved: list[Ticket] = []
        for permit, start in self._unstamped.items():
            if permit.admit_at < start:  # (a call held open since counts from later already)
                moved += self.backend.restamp(permit, now, start)
        self._unstamped.clear()
        return moved

    def _hold_open_calls(self, now: float) -> None:
        # A thread's first call may still be connecting: the server may count it any time
        # until it answers, so while it is open it counts from now. (A reservation already
        # past its admission time is not re-placed by this: a first call open for more than
        # a whole window can still be counted by the server after its entry expired.)
        if self._open_first_calls:
            for permit, _ in self._open_first_calls.values():
                self.backend.hold(permit, now)
        # Any other call still unanswered a whole window after its stamp may not have reached
        # the server yet either: it counts from now until its answer bounds its arrival (see
        # call_ended). Stamps only move later, so the oldest is first in the dict.
        # Every locked step that may expire entries (a reservation, a restamp) holds them
        # first, with the same now: an entry leaves after period + margin, held after period.
        horizon = now - self._shortest
        if self._oldest_open > horizon or self._shortest <= 0:
            return  # nothing open that long, or no window (no limit yet) to hold it in
        calls = self._open_calls
        while calls:
            key, (permit, since, lag) = next(iter(calls.items()))
            if since > horizon:  # a call just held is stamped now, after the horizon
                break
            del calls[key]
            calls[key] = (permit, now, lag)
            self.backend.hold(permit, now)
        self._oldest_open = next(iter(calls.values()))[1] if calls else float("inf")

    def _check(self, permit: Permit) -> float:
        """Seconds until ``permit`` is admitted; re-asks the backend for a provisional one."""
        with self._lock:
            now = self.clock.now()
            self._hold_open_calls(now)
            if permit.provisional and permit.admit_at <= now:
                fresh = self.backend.reserve(permit.cost, now)
                permit.admit_at, permit.provisional = fresh.admit_at, fresh.provisional
                permit.handle = fresh.handle
            return permit.admit_at - now

    def admitted(self, permit: Permit) -> bool:
        """True when ``permit`` may proceed now (no wait needed)."""
        if permit.provisional:
            return False
        with self._lock:
            now = self.clock.now()
            self._hold_open_calls(now)
            return permit.admit_at <= now

    def try_acquire(self, cost: Cost = ONE_REQUEST) -> Permit | None:
        """Admit ``cost`` now if possible, else reserve nothing and return None."""
        with self._lock:
            now = self.clock.now()
            self._hold_open_calls(now)
            permit = self._reserve(cost, now)
            if permit.admit_at <= now and not permit.provisional:
                return permit
            if not permit.provisional:
                wake(self.backend.cancel(permit, now))
            return None

    def settle(self, permit: Permit, actual: Cost | None = None, *, tokens: float | None = None
               ) -> None:
        """Replace the reserved cost with the actual one (e.g. tokens the server counted).

        An ``actual`` with the server's ``input_tokens`` also teaches the calibration of
        prompt estimates how far off this one was.
        """
        if actual is None:
            actual = permit.cost if tokens is None else dataclasses.replace(permit.cost,
                                                                          tokens=tokens)
        with self._lock:
            estimated = permit.estimated.prompt
            if actual.input_tokens is not None and estimated > 0:
                self.calibration.observe(estimated, actual.input_tokens)
            now = self.clock.now()
            self._hold_open_calls(now)
            moved = self.backend.settle(permit, actual, now)
        wake(moved)

    def restamp(self, permit: Permit) -> None:
        """Count an admitted permit from now on (its call starts later than it was granted)."""
        if permit.provisional:
            return
        with self._lock:
            now = self.clock.now()
            self._hold_open_calls(now)
            moved = self.backend.restamp(permit, now)
        wake(moved)

    def call_started(self, permit: Permit, *, first_on_thread: bool = False,
                     ready: float = float("-inf")) -> float:
        """The permit's call starts now: count it from now (or, while nothing is queued in
        our own log, from its grant until a reservation queues: see below), learn the
        hand-off delay; returns the start time for :meth:`call_ended`. A thread's first call
        counts from the latest instant until it answers (see :meth:`call_ended`).
        ``ready``: when the thread starting it became free; a job that waited in the pool's
        queue for a thread (lookahead) counts its hand-off delay from then, not from its
        grant, so waiting behind busy threads does not widen the margin."""
        with self._lock:
            now = self._now()
            if permit.provisional:
                return now
            # The calls below run on every call's thread: the common case pays no more.
            if self._open_first_calls or self._oldest_open <= now - self._shortest:
                self._hold_open_calls(now)
            granted = permit.admit_at  # the hold restamps it
            local = self._local
            if (local is not None and local is self.backend and not first_on_thread
                    and not local._pending
                    and local._last_admit <= now and now - granted <= self._least_margin):
                # Nothing is queued: no reservation's time depends on when this entry leaves
                # the log, and none can until one queues, which restamps it first
                # (_stamp_open_calls). Counted from its grant meanwhile, it still counts in
                # every window it counts in from its start: it leaves a window of period P a
                # margin m after P from the grant, and a call open that long is held from
                # P after its start (_hold_open_calls), which comes first while its hand-off
                # delay is within m, and m never falls below the margin's least. So its one
                # restamp is at its answer (call_ended).
                start = now
                moved: Iterable[Ticket] = ()
                self._unstamped[permit] = start
            else:
                # Every call is restamped at its start while anything is queued: a
                # reservation queued behind its entry is then placed a window after the
                # start, not after the grant (a hold when the call had been open a window
                # came too late to re-place one already due).
                moved = self.backend.hold(permit, now)
                if moved:
                    moved = list(moved)
                # The call leaves only once a shared store has taken the hold (an SQLite
                # write may wait tens of ms for the file's lock under load): it starts now,
                # and counted from when this step began it would leave our window that much
                # too early.
                start = self._now()
            queued = ready > granted
            lag = start - (ready if queued else granted)
            if lag < 0.0:
                lag = 0.0
            # A queued job's start skips the thread's wake-up, the delay that shows the
            # machine's load: the floor follows only calls handed to a waiting thread.
            if not queued and self.margin.handed_off(lag, start):
                moved = [*moved, *self._apply_margin(start)]
            if first_on_thread:
                self._open_first_calls[permit] = (permit, lag)
            else:
                if not self._open_calls:
                    self._oldest_open = start  # (an answered call's stamp may linger: earlier)
                self._open_calls[permit] = (permit, start, lag)
        if moved:
            wake(moved)
        return start

    def call_ended(self, permit: Permit, started: float, *, first_on_thread: bool) -> None:
        """The permit's call, started at ``started``, answered now.

        A thread's first call may open a connection or initialise its SDK before the server
        sees it: it counts from its answer until a later call's duration shows how long the
        server takes at least, then from as late as its extra delay may have reached (see
        :meth:`AdmissionMargin.first_call_delay`), which frees its budget sooner.
        """
        with self._lock:
            now = self._now()
            if self._open_first_calls or self._oldest_open <= now - self._shortest:
                self._hold_open_calls(now)
            if first_on_thread:
                if permit.provisional:
                    return
                _, lag = self._open_first_calls.pop(permit, (permit, 0.0))
            else:
                held = self._open_calls.pop(permit, None)
                lag = 0.0 if held is None else held[2]
                if self._unstamped:
                    self._unstamped.pop(permit, None)
            moved = self._arrivals.ended(self.backend, permit, started, now, lag,
                                         first_on_thread, self.pauses, now)
        if moved:
            wake(moved)

    def widen_margin(self) -> None:
        """Lengthen the margin each admission counts for (after a server still said 429)."""
        with self._lock:
            self.margin.widen()
            now = self.clock.now()
            self._hold_open_calls(now)
            moved = self._apply_margin(now)
        wake(moved)

    def _apply_margin(self, now: float) -> Iterable[Ticket]:
        value = self.margin.value
        if value == self.backend.margin:
            return []
        return self.backend.set_margin(value, now)

    def cancel(self, permit: Permit) -> None:
        """Withdraw a reservation whose call was not made; its budget goes to the next."""
        if permit.provisional:
            return
        with self._lock:
            self._open_calls.pop(permit, None)
            self._unstamped.pop(permit, None)
            now = self.clock.now()
            self._hold_open_calls(now)
            moved = self.backend.cancel(permit, now)
        wake(moved)

    def pause_until(self, until: float) -> None:
        """Admit nothing before clock time ``until`` (e.g. now + a server's Retry-After)."""
        with self._lock:
            now = self.clock.now()
            self._hold_open_calls(now)
            moved = self.backend.pause_until(until, now)
        wake(moved)

    def pause_for(self, seconds: float) -> None:
        """Admit nothing for the next ``seconds``."""
        self.pause_until(self.clock.now() + seconds)

    def __repr__(self) -> str:
        return f"RateLimiter({', '.join(str(lim) for lim in self.limits)})"
