"""Where each answered call counts from: the latest instant the server may have stamped it.

A call is granted, starts, and answers; the server stamps it somewhere in between. Once it
answers, its duration and the fastest call's bound that instant (see
:meth:`AnsweredArrivals.answered`), and a thread's first call, which may connect first, waits
for a warm call's duration before it is placed (:meth:`AnsweredArrivals.place_first_calls`).
The fastest duration only falls, and each fall moves the calls still counted to the bound it
gives (:meth:`AnsweredArrivals.rebound`). This bookkeeping runs under the
:class:`~throttlepool.limiter.core.RateLimiter`'s lock, which calls it; it lives here so the
limiter's module keeps to the lock, the waits and the calls still open.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable, Iterator

from .margin import AdmissionMargin
from .pauses import PauseSource
from .ticket import LimiterBackend, Ticket

_INF = float("inf")
#: The least fall of the fastest duration that re-bounds the answered calls (seconds).
_LEAST_REBOUND_STEP = 0.001
#: Floats kept for each answered call: start, duration, lag, first on its thread (1.0 or
#: 0.0) and answer.
_FIELDS = 5


class AnsweredArrivals:
    """The answered calls' arrival bounds, kept while their entries may still count.

    Not thread-safe: the owning limiter calls every method under its lock, with its backend
    of the moment (a limiter's backend may be swapped, e.g. wrapped to record its calls).
    """

    __slots__ = ("_answered", "_bounded_with", "_head", "_longest", "_records", "first_calls",
                 "margin")

    def __init__(self, periods: Iterable[float], margin: AdmissionMargin) -> None:
        self.margin = margin
        # Answered first calls awaiting a warm call's duration: (permit, start, duration, lag).
        self.first_calls: list[tuple[Ticket, float, float, float]] = []
        # Answered calls whose entries may still be in a window, in answer order. Each was
        # bounded with the fastest duration known then, which a stall before its send
        # inflates; a faster call re-bounds them later.
        self._answered: deque[Ticket] = deque()
        # In step with them, _FIELDS floats each from _head on (those before it are dropped,
        # and deleted in bulk). An array, not a tuple per call: a window of a minute holds
        # 100,000s of calls, and each object kept counts towards the collector's next pass;
        # a tuple per call made a third more collections of every generation in a run of
        # 100,000 no-op calls (the permit is the one object per call that stays).
        self._records = array("d")
        self._head = 0
        self._longest = max(periods, default=0.0)
        # The fastest duration the answered calls were last re-bounded with.
        self._bounded_with = float("inf")

    def _latest_arrival(self, started: float, duration: float, lag: float, first: bool
                        ) -> float | None:
        """The latest instant the server may have stamped an answered call, given the fastest
        duration now (None: no warm call known yet); a first call adds the fastest call's own
        way there (see :meth:`place_first_calls`)."""
        delay = self.margin.first_call_delay(duration)
        if delay is None:
            return None
        if first:
            return started + max(delay + self.margin.fastest_unobserved, lag)
        return started + (delay if delay > lag else lag)  # max(), without the call

    def ended(self, backend: LimiterBackend, permit: Ticket, started: float, answer: float,
              lag: float, first: bool, pauses: PauseSource, now: float) -> Iterable[Ticket]:
        """A call that started at ``started``, ``lag`` after its grant (``first``: its
        thread's first), answered at ``answer`` and is seen at ``now`` (no earlier): count it
        from its arrival bound; returns the tickets moved earlier.

        The one place an answered call is bounded, for the limiter and for the header
        pacer's learned log alike: its duration teaches the margin, a new fastest re-bounds
        the calls kept (:meth:`rebound`), first calls waiting for a warm call are placed
        (:meth:`place_first_calls`), then it is placed itself (:meth:`answered`); a first
        call counts from ``now`` until a warm call's duration places it. A pause during the
        call (limiter.pauses) may have held it before it was sent: it counts as starting
        after the pause, and its duration teaches nothing.
        """
        duration = answer - started
        paused = pauses.between(started, answer) if pauses.last_ended > started else 0.0
        if paused:
            started, duration = started + paused, duration - paused
        if first:
            moved = list(backend.restamp(permit, now, now))
            self.first_calls.append((permit, started, duration, lag))
            return moved
        # Every warm call takes this step: the margin is asked only for a new fastest, and
        # with nothing else to place the call's own moves are all there is to return.
        if not paused and 0 < duration < self.margin.shortest_duration:
            self.margin.ended(duration, lag)
            moved = self.rebound(backend, now)
        elif not self.first_calls:
            return self.answered(backend, permit, started, duration, lag, now)
        else:
            moved = []
        if self.first_calls:
            moved += self.place_first_calls(backend, now)
        moved += self.answered(backend, permit, started, duration, lag, now)
        return moved

    def answered(self, backend: LimiterBackend, permit: Ticket, started: float,
                 duration: float, lag: float, now: float) -> Iterable[Ticket]:
        """A warm call (not its thread's first) answered: count it from the latest instant
        the server may have stamped it, less the margin's floor, and keep it for
        :meth:`rebound`; returns the tickets moved earlier.

        Its own client work before the bytes left is at most the floor plus its hand-off
        delay ``lag`` (the same load slows both; see limiter.margin), so it counts from its
        start plus ``lag``: its own delay, not the largest of every recent call's. And a call
        spends the fastest call's duration at least on the server and on the way back, so it
        reached the server at most ``duration - fastest`` after it started (plus the fastest
        call's own way there, within the floor); on a loaded machine that is tens of
        milliseconds now and then, more than the floor plus its lag, and counted from its
        start alone such a call leaves our window while the server still counts it (a 429).
        The later of the two holds. A call held while open (see
        ``RateLimiter._hold_open_calls``) moves back to the same bound. A move earlier within
        half the floor is left alone (a shared backend would pay a round trip for each); a
        move later never is.
        """
        if permit.provisional:
            return ()
        # _latest_arrival's bound of a warm call, inline: every warm call takes this step.
        margin = self.margin
        fastest = margin.shortest_duration
        if fastest == _INF:  # no fastest call known yet: from its start (a held call moves back)
            at = started
        else:
            delay = duration - fastest  # max(this, lag, 0.0), without the calls
            if delay < lag:
                delay = lag
            at = started + delay if delay > 0.0 else started
            if at > now:
                at = now
        moved: Iterable[Ticket] = ()
        admit = permit.admit_at
        if not admit - margin.floor / 2 <= at <= admit:
            moved = backend.restamp(permit, now, at)
        if self._bounded_with > _LEAST_REBOUND_STEP:
            self.keep(permit, started, duration, lag, False, now)
        return moved

    def place_first_calls(self, backend: LimiterBackend, now: float) -> list[Ticket]:
        """Count each answered first call from the latest instant its answer allows once a
        warm call's duration is known: its start plus what it took beyond the fastest call
        plus that call's own hand-off delay (its way there, which the bound leaves out), and
        no earlier than its start plus its own hand-off delay. Known limit: the bound assumes
        the server's own time varies by less than half the margin's floor between calls; a
        first call whose connecting is not bounded otherwise may count too early beyond that
        (a 429 then widens the floor)."""
        moved: list[Ticket] = []
        for permit, started, duration, lag in self.first_calls:
            at = self._latest_arrival(started, duration, lag, True)
            if at is not None:
                moved += backend.restamp(permit, now, min(at, now))
                self.keep(permit, started, duration, lag, True, now)
        self.first_calls.clear()
        return moved

    def keep(self, permit: Ticket, started: float, duration: float, lag: float,
             first: bool, now: float) -> None:
        """Keep an answered call for :meth:`rebound` while its entry may count (and while a
        re-bound may still come: see :meth:`rebound`)."""
        if self._bounded_with <= _LEAST_REBOUND_STEP:
            return
        self._forget(now)
        if not permit.provisional and self._longest > 0:
            self._answered.append(permit)
            flag = 1.0 if first else 0.0
            self._records.extend((started, duration, lag, flag, started + duration))

    def _forget(self, now: float) -> None:
        """Drop the answered calls whose entries left every window by ``now``."""
        answered, records, head = self._answered, self._records, self._head
        horizon = now - self._longest - self.margin.floor
        while answered and records[head + _FIELDS - 1] < horizon:
            answered.popleft()
            head += _FIELDS
        if head and 2 * head >= len(records):  # amortised: moves fewer floats than dropped
            del records[:head]
            head = 0
        self._head = head

    def kept(self) -> Iterator[tuple[Ticket, float, float, float, bool, float]]:
        """The answered calls kept, oldest answer first: (permit, start, duration, lag, first
        on its thread, answer)."""
        records, k = self._records, self._head
        for permit in self._answered:
            started, duration, lag, first, answer = records[k:k + _FIELDS]
            k += _FIELDS
            yield permit, started, duration, lag, first == 1.0, answer

    def rebound(self, backend: LimiterBackend, now: float) -> list[Ticket]:
        """A call faster than any before: move each answered call's count later to the bound
        this duration gives (see :meth:`answered`, :meth:`place_first_calls`).

        The fastest duration stands for the server's time plus the way back, yet it includes
        the fastest call's own client work before its send, which no hand-off delay shows: a
        thread descheduled there for tens of ms (two cores shared with other busy processes;
        a captured 429 had every warm call of the first 0.2 s stalled 20-150 ms) inflates it
        and every call bounded with it counts that much too early. The fastest only falls as
        calls answer, so each fall by more than a quarter of the least floor (a floor that
        follows the load may fall before they leave) re-bounds the calls still counted;
        smaller falls are left to the floor (each re-bound walks them all), and
        falls under a millisecond, below any stamp's error, always are: with no floor every
        new fastest would walk the whole window, quadratic in the calls a window holds.
        """
        fastest = self.margin.fastest
        step = max(self.margin.least / 4, _LEAST_REBOUND_STEP)
        if fastest is None or fastest >= self._bounded_with - step:
            return []
        self._bounded_with = fastest
        moved: list[Ticket] = []
        for permit, started, duration, lag, first, answer in self.kept():
            latest = self._latest_arrival(started, duration, lag, first)
            at = answer if latest is None else min(latest, answer)
            if permit.admit_at < at:
                moved += backend.restamp(permit, now, at)
        if fastest <= _LEAST_REBOUND_STEP:
            # Durations are positive and every step is at least _LEAST_REBOUND_STEP: no
            # later fall can re-bound again, so nothing needs keeping (fast calls, e.g. a
            # local service, then pay no record each).
            self._answered.clear()
            del self._records[:]
            self._head = 0
        return moved
