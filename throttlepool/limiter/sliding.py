"""The exact sliding-window log: no window of a limit's period ever admits more than its amount.

Reservations are scheduled ahead in FIFO order: each gets the earliest time at which admitting
it keeps every window within every limit, given all earlier reservations. Because admission
times never decrease, checking the one window that ends at the candidate time is enough: any
later window that contains the candidate holds a subset of the same entries.

A restamp (its arrival bound at each answer; a hold while open) only moves a ticket's time: each
log stays in order of ``Ticket.placed``, its time when last put in order, and the few steps
that read the order (a limit that binds, an entry to expire behind a moved one) put it back in
order first (see :meth:`SlidingWindowLog._settle_order`). Every log holds exactly the entries
it would hold kept in time order all along, so every admission is the same.
"""

from __future__ import annotations

import contextlib
import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter

from ..errors import ConfigError, CostExceedsLimit
from .limits import Cost, Limit
from .ticket import BackendBase, Ticket, replace_in_order

# Float sums of token weights drift; a freed amount within this of the need counts as enough.
_EPSILON = 1e-9
#: Restamped tickets left out of place at most, before the logs are put in order anyway (a
#: limit that never binds would otherwise keep every moved ticket listed).
_DIRTY_BOUND = 1024
#: A log's disordered tail longer than this many times the moved tickets (plus a few) is put
#: in order ticket by ticket, not re-sorted (a call held open a whole window moves an entry
#: a window back).
_REGION_FACTOR = 8
#: Entries at the log's newest end searched first (see _search).
_TAIL = 256
_PLACED = attrgetter("placed")
_Bisect = Callable[..., int]


class _Window:
    """The log of one limit: admitted tickets in order of ``placed`` (their time when the
    log was last in order) and their summed weight.

    Each admission occupies ``period + margin``: the margin absorbs the jitter between our
    decision and the moment the server stamps the request's arrival.
    """

    __slots__ = ("amount", "fit", "limit", "log", "span", "unit", "used")

    def __init__(self, limit: Limit, margin: float = 0.0) -> None:
        self.limit = limit
        self.unit = limit.unit
        self.amount = limit.amount
        #: The weight here of the log's last cost found to fit (see SlidingWindowLog._check).
        self.fit = 0.0
        self.span = limit.period + margin
        self.log: deque[Ticket] = deque()
        self.used = 0.0

    def weight(self, ticket: Ticket) -> float:
        return ticket.cost.of(self.unit)

    def expire(self, now: float) -> None:
        """Drop the oldest entries out of the window (those behind a moved one may stay: see
        :meth:`SlidingWindowLog._expire`)."""
        horizon = now - self.span
        log = self.log
        while log and log[0].admit_at <= horizon:
            self.used -= self.weight(log.popleft())
        if not log:
            self.used = 0.0

    def earliest(self, w: float, start: float) -> float:
        """Earliest t >= start at which w more units fit in (t - period, t]; the log must be
        in time order."""
        need = self.used + w - self.limit.amount
        if need <= _EPSILON:
            return start
        freed = 0.0
        for entry in self.log:
            freed += self.weight(entry)
            if freed >= need - _EPSILON:
                return max(start, self.leaves_at(entry))
        return start  # unreachable while w <= amount: freeing everything always suffices

    def leaves_at(self, ticket: Ticket) -> float:
        """The first instant at which :meth:`expire` drops ``ticket``.

        ``admit_at + span`` rounds; ``(admit_at + span) - span`` can then fall an ulp short of
        ``admit_at``, and the log would hand out an instant at which, by its own rule, the
        entry still counts (a second admission in the same window, one ulp apart).
        """
        t = ticket.admit_at + self.span
        while t - self.span < ticket.admit_at:
            t = math.nextafter(t, math.inf)
        return t


class SlidingWindowLog(BackendBase):
    """In-memory backend: exact sliding-window logs for any number of limits."""

    __slots__ = ("_dirty", "_dirty_floor", "_fits", "_last_admit", "_margin", "_paused_until",
                 "_pending", "_windows", "limits")

    def __init__(self, limits: Sequence[Limit], margin: float = 0.0) -> None:
        if margin < 0:
            raise ConfigError(f"window margin must be >= 0, got {margin!r}")
        self.limits = list(limits)
        self._margin = margin
        self._windows = [_Window(lim, margin) for lim in self.limits]
        self._pending: deque[Ticket] = deque()
        self._last_admit = float("-inf")
        self._paused_until = float("-inf")
        self._fits: Cost | None = None  # the last cost found within every limit
        # Tickets restamped since the logs were last in time order, and a time at or before
        # every one's placed and admit_at: the logs are in order before it.
        self._dirty: list[Ticket] = []
        self._dirty_floor = math.inf

    def _check(self, cost: Cost) -> None:
        if cost is self._fits:
            return  # the same (immutable) cost as last time: most often every call's
        weights = [cost.of(win.unit) for win in self._windows]
        for win, w in zip(self._windows, weights, strict=True):
            if w > win.amount:
                raise CostExceedsLimit(w, str(win.limit))
        for win, w in zip(self._windows, weights, strict=True):
            win.fit = w
        self._fits = cost

    def _place(self, ticket: Ticket, now: float) -> None:
        t = self._last_admit
        if t < now:
            t = now
        paused = self._paused_until
        if paused > t:
            t = paused
        cost = ticket.cost
        # Its weights are known when it is the cost last checked, as every call's is (a
        # plain function's calls share one cost).
        fits = cost is self._fits
        # Every call of a run takes this step: the checks that almost always pass (nothing
        # yet to expire, room in the window) are made here before calling out.
        for win in self._windows:
            log = win.log
            if log:
                horizon = now - win.span
                if log[0].admit_at <= horizon or self._dirty_floor <= horizon:
                    self._expire(win, now)
            else:
                win.used = 0.0
            w = win.fit if fits else cost.of(win.unit)
            if w > 0:
                used = win.used + w
                if used - win.amount > _EPSILON:
                    t = self._place_late(ticket, now, t)
                    break
                # It joins this log before a later window has fixed its time: at any time
                # it is the newest entry, as it must be.
                log.append(ticket)
                win.used = used
        ticket.placed = ticket.admit_at = t
        self._last_admit = t
        if t > now:
            self._pending.append(ticket)

    def _place_late(self, ticket: Ticket, now: float, t: float) -> float:
        """A limit binds: put the logs in order, then find the ticket's time from ``t`` on
        in each window it has not joined yet, and join them."""
        ticket.placed = math.inf  # the newest in the logs it joined, whatever the re-sort
        self._settle_order()
        for win in self._windows:
            log = win.log
            if log and log[-1] is ticket:
                continue  # joined before: room there at any time from ``t`` on
            self._expire(win, now)
            w = ticket.cost.of(win.unit)
            if w > 0:
                if win.used + w - win.limit.amount > _EPSILON:
                    t = win.earliest(w, t)
                log.append(ticket)
                win.used += w
        return t

    def _expire(self, win: _Window, now: float) -> None:
        """Drop every entry out of ``win``'s window, as a log in time order would: one
        behind a moved entry too (it would count longer than the eager log counts it, and a
        later restamp of it would then count where that log has none)."""
        win.expire(now)
        if self._dirty_floor <= now - win.span:
            self._settle_order()
            win.expire(now)

    def _settle_order(self) -> None:
        """Put every log back in time order (``placed = admit_at`` for every entry).

        Every entry placed before the dirty floor is in place: re-sort each log from there
        (nearly sorted: Timsort runs through it), or, when that tail dwarfs the moved tickets,
        take each out and put it back by bisection. All logs are taken apart before any
        ticket's ``placed`` changes: the same ticket is found by it in every log.
        """
        dirty = self._dirty
        floor = self._dirty_floor
        self._dirty_floor = math.inf
        if not dirty:
            return
        parts: list[tuple[deque[Ticket], list[Ticket], bool]] = []
        for win in self._windows:
            log = win.log
            n = len(log)
            i = _search(log, floor, bisect_left)
            if n - i <= _REGION_FACTOR * len(dirty) + 16:
                tail = [log.pop() for _ in range(n - i)]
                tail.reverse()
                parts.append((log, tail, True))
            else:
                parts.append((log, _take_out(log, dirty), False))
        for ticket in dirty:
            ticket.placed = ticket.admit_at
        dirty.clear()
        for log, entries, whole in parts:
            if whole:
                entries.sort(key=_PLACED)
                log.extend(entries)
            else:
                for ticket in entries:
                    log.insert(_search(log, ticket.placed, bisect_right), ticket)

    def record(self, cost: Cost, at: float) -> Ticket:
        """Count a call already made at ``at`` without scheduling it (the log learns its past).

        A pacer that learns the server's window only after some calls went out seeds a new
        log with them: they count whatever the windows held, in time order.
        """
        ticket = Ticket(cost, at)
        for win in self._windows:
            w = win.weight(ticket)
            if w > 0:
                win.log.insert(_search(win.log, at, bisect_right), ticket)
                win.used += w
        self._last_admit = max(self._last_admit, at)
        return ticket

    def reserve(self, cost: Cost, now: float) -> Ticket:
        if cost is not self._fits:
            self._check(cost)
        ticket = Ticket(cost, now)
        self._place(ticket, now)
        return ticket

    def _remove(self, ticket: Ticket) -> None:
        for win in self._windows:
            w = win.weight(ticket)
            if w > 0:
                try:
                    win.log.remove(ticket)
                except ValueError:
                    continue  # already expired out of this window
                win.used -= w

    def _reschedule(self, now: float) -> list[Ticket]:
        """Re-place every not-yet-admitted ticket in FIFO order; return those moved earlier."""
        pending = self._pending
        while pending and pending[0].admit_at <= now:
            pending.popleft()
        if not pending and self._last_admit <= now:
            # Nothing queued and no floor ahead of now: every entry is admitted (at or before
            # now), so there is nothing to re-place, and a floor at or before now holds back
            # nothing. The common case of a restamp when the limit does not bind.
            return []
        # No early return when nothing is queued: a cancelled last reservation must not
        # leave its admission time behind as the FIFO floor (_last_admit) for the next one.
        queued = list(pending)
        pending.clear()
        for win in self._windows:
            # The queued tickets are exactly the log entries admitted after now, a tail: each
            # was placed after every admitted one, and a restamp moves none past now.
            log = win.log
            while log and log[-1].admit_at > now:
                win.used -= win.weight(log.pop())
        # Out of order, the newest entry may not be the latest; both are at or before now,
        # which holds back nothing (see _place), the same floor.
        self._last_admit = max(
            (win.log[-1].admit_at for win in self._windows if win.log), default=float("-inf")
        )
        return replace_in_order(queued, self._place, now)

    def settle(self, ticket: Ticket, actual: Cost, now: float) -> Iterable[Ticket]:
        self._check(actual)
        for win in self._windows:
            self._expire(win, now)
            old, new = win.weight(ticket), actual.of(win.limit.unit)
            if old == new or ticket.admit_at <= now - win.span:
                continue  # unchanged, or already out of this window
            if old > 0 and new > 0:
                win.used += new - old
            elif old > 0:
                # Settled to nothing: leave the log, which holds exactly the weighted tickets
                # (a weightless entry would stay a FIFO floor, and a later settle re-insert it).
                with contextlib.suppress(ValueError):
                    win.log.remove(ticket)
                    win.used -= old
            else:
                # The estimate had no weight in this unit, yet the call used some: it joins
                # where the other logs have it (by placed, in the order of this one).
                win.log.insert(_search(win.log, ticket.placed, bisect_right), ticket)
                win.used += new
        ticket.cost = actual
        return self._reschedule(now)

    def cancel(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        self._remove(ticket)
        with contextlib.suppress(ValueError):
            self._pending.remove(ticket)
        return self._reschedule(now)

    def pause_until(self, until: float, now: float) -> Iterable[Ticket]:
        if until <= self._paused_until:
            return []
        self._paused_until = until
        return self._reschedule(now)

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def restamp(self, ticket: Ticket, now: float, at: float | None = None
                ) -> Iterable[Ticket]:
        """Move an admitted ticket's time to ``at`` (default ``now``, never later).

        Later: it counts longer and no window can gain room. Earlier: the caller vouches for
        the server's count (see :meth:`LimiterBackend.restamp`). Queued tickets are
        re-placed either way, because the entry frees its budget at another time.
        """
        # Every call's answer takes this step: min() and a fresh list each cost a call.
        stamp = now if at is None or at > now else at
        admit = ticket.admit_at
        if stamp == admit or (at is None and stamp < admit):
            return ()
        # No log moves it: each keeps it where it was placed until an order is read (see
        # _settle_order). Listed once as it leaves its place (a return to it lists it again).
        placed = ticket.placed
        floor = placed if placed < stamp else stamp
        if floor < self._dirty_floor:
            self._dirty_floor = floor
        ticket.admit_at = stamp
        if stamp > self._last_admit:
            self._last_admit = stamp
        if placed == admit:
            dirty = self._dirty
            dirty.append(ticket)
            if len(dirty) > _DIRTY_BOUND:
                self._settle_order()
        if not self._pending and self._last_admit <= now:
            return ()  # _reschedule's first case (no limit binds), without the call
        return self._reschedule(now)

    #: An open call counts from now: every step of the limiter renews it (one process).
    hold = restamp

    def set_margin(self, margin: float, now: float) -> Iterable[Ticket]:
        """Count every admission for ``margin`` seconds beyond its window from now on; the
        queued reservations are re-placed by the new spans."""
        if margin < 0:
            raise ConfigError(f"window margin must be >= 0, got {margin!r}")
        self._margin = margin
        for win in self._windows:
            win.span = win.limit.period + margin
        return self._reschedule(now)

    def usage(self, now: float) -> list[tuple[Limit, float]]:
        """Units currently counted in each limit's window."""
        for win in self._windows:
            self._expire(win, now)
        return [(win.limit, win.used) for win in self._windows]


def _search(log: deque[Ticket], at: float, bisect: _Bisect) -> int:
    """``bisect`` of ``log`` (in order of placed) for ``at``, from its last :data:`_TAIL`
    entries when they begin before ``at`` (deque indexing near an end is cheap; a search of
    the whole log hops through its middle)."""
    n = len(log)
    lo = n - _TAIL
    if lo <= 0 or log[lo].placed >= at:
        lo = 0
    return bisect(log, at, lo, n, key=_PLACED)


def _take_out(log: deque[Ticket], tickets: Iterable[Ticket]) -> list[Ticket]:
    """Remove each of ``tickets`` found in ``log`` (by its placed, then identity); return
    those removed."""
    taken = []
    for ticket in dict.fromkeys(tickets):
        n = len(log)
        i = _search(log, ticket.placed, bisect_left)
        while i < n and log[i].placed == ticket.placed:
            if log[i] is ticket:
                del log[i]
                taken.append(ticket)
                break
            i += 1
    return taken
