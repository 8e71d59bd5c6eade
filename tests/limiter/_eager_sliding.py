"""The eager sliding-window log as it was before its order was fixed lazily (throttlepool
f94b1e3, limiter/sliding.py, verbatim but for its imports): the reference the lazy log
must match admission for admission (see test_sliding_lazy).

The exact sliding-window log: no window of a limit's period ever admits more than its amount.

Reservations are scheduled ahead in FIFO order: each gets the earliest time at which admitting
it keeps every window within every limit, given all earlier reservations. Because admission
times never decrease, checking the one window that ends at the candidate time is enough: any
later window that contains the candidate holds a subset of the same entries.
"""

from __future__ import annotations

import contextlib
import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from operator import attrgetter

from throttlepool.errors import ConfigError, CostExceedsLimit
from throttlepool.limiter.limits import Cost, Limit
from throttlepool.limiter.ticket import BackendBase, Ticket, replace_in_order

# Float sums of token weights drift; a freed amount within this of the need counts as enough.
_EPSILON = 1e-9
#: Entries at the log's newest end searched first for a restamped ticket (see _tail_start).
_TAIL = 256
#: Entries walked from the newest before a search by time (see _index_of).
_WALK = 16
_ADMIT_AT = attrgetter("admit_at")


class _Window:
    """The log of one limit: admitted tickets in time order and their summed weight.

    Each admission occupies ``period + margin``: the margin absorbs the jitter between our
    decision and the moment the server stamps the request's arrival.
    """

    __slots__ = ("limit", "log", "span", "unit", "used")

    def __init__(self, limit: Limit, margin: float = 0.0) -> None:
        self.limit = limit
        self.unit = limit.unit
        self.span = limit.period + margin
        self.log: deque[Ticket] = deque()
        self.used = 0.0

    def weight(self, ticket: Ticket) -> float:
        return ticket.cost.of(self.unit)

    def expire(self, now: float) -> None:
        horizon = now - self.span
        log = self.log
        while log and log[0].admit_at <= horizon:
            self.used -= self.weight(log.popleft())
        if not log:
            self.used = 0.0

    def earliest(self, w: float, start: float) -> float:
        """Earliest t >= start at which w more units fit in (t - period, t]."""
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

    def _check(self, cost: Cost) -> None:
        if cost is self._fits:
            return  # the same (immutable) cost as last time: most often every call's
        for win in self._windows:
            w = cost.of(win.limit.unit)
            if w > win.limit.amount:
                raise CostExceedsLimit(w, str(win.limit))
        self._fits = cost

    def _place(self, ticket: Ticket, now: float) -> None:
        t = now
        if self._last_admit > t:
            t = self._last_admit
        if self._paused_until > t:
            t = self._paused_until
        cost = ticket.cost
        windows = self._windows
        # Every call of a run takes this step: the checks that almost always pass (nothing
        # yet to expire, room in the window) are made here before calling out.
        for win in windows:
            log = win.log
            if log and log[0].admit_at <= now - win.span:
                win.expire(now)
            elif not log:
                win.used = 0.0
            w = cost.of(win.unit)
            if w > 0:
                if win.used + w - win.limit.amount > _EPSILON:
                    t = max(t, win.earliest(w, t))
                # It joins this log before a later window has fixed its time: no later step
                # reads it here, and at any time it is the newest entry, as it must be.
                log.append(ticket)
                win.used += w
        ticket.admit_at = t
        self._last_admit = t
        if t > now:
            self._pending.append(ticket)

    def record(self, cost: Cost, at: float) -> Ticket:
        """Count a call already made at ``at`` without scheduling it (the log learns its past).

        A pacer that learns the server's window only after some calls went out seeds a new
        log with them: they count whatever the windows held, in time order.
        """
        ticket = Ticket(cost, at)
        for win in self._windows:
            w = win.weight(ticket)
            if w > 0:
                _insert_sorted_from_tail(win.log, ticket)
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
            # The queued tickets are exactly the log entries admitted after now (a tail).
            log = win.log
            while log and log[-1].admit_at > now:
                win.used -= win.weight(log.pop())
        self._last_admit = max(
            (win.log[-1].admit_at for win in self._windows if win.log), default=float("-inf")
        )
        return replace_in_order(queued, self._place, now)

    def settle(self, ticket: Ticket, actual: Cost, now: float) -> Iterable[Ticket]:
        self._check(actual)
        for win in self._windows:
            win.expire(now)
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
                # The estimate had no weight in this unit, yet the call used some.
                _insert_sorted(win.log, ticket)
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
        stamp = now if at is None else min(at, now)
        if stamp == ticket.admit_at or (at is None and stamp < ticket.admit_at):
            return []
        cost = ticket.cost
        placed = ticket.admit_at  # where it sits in every log
        for win in self._windows:
            if cost.of(win.unit) <= 0:
                continue
            log = win.log
            # The newest entry (one call at a time) still in time order: no walk.
            if log and log[-1] is ticket and (len(log) < 2 or log[-2].admit_at <= stamp):
                continue
            # Most often a call in flight, as many entries back as calls started since: a
            # few back, walk; further (64 calls in flight walked 64 entries twice), search.
            i = len(log)
            stop = i - _WALK
            for entry in reversed(log):
                i -= 1
                if entry is ticket:
                    break
                if i <= stop:
                    i = _index_of(log, ticket, placed)
                    break
            else:
                continue  # already expired out of this window (or cancelled)
            if i < 0:
                continue
            if ((i + 1 == len(log) or log[i + 1].admit_at >= stamp)
                    and (i == 0 or log[i - 1].admit_at <= stamp)):
                continue  # still in time order where it is (most often: the newest entry)
            del log[i]
            # Its time changes after every log has it in place: a later log is searched by
            # the time it is at there.
            if log[-1].admit_at <= stamp:  # an open call held: most often the newest now
                log.append(ticket)
            else:
                _insert_sorted_from_tail(log, ticket, stamp)
        ticket.admit_at = stamp
        if stamp > self._last_admit:
            self._last_admit = stamp
        if not self._pending and self._last_admit <= now:
            return []  # _reschedule's first case (no limit binds), without the call
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
            win.expire(now)
        return [(win.limit, win.used) for win in self._windows]


def _insert_sorted(log: deque[Ticket], ticket: Ticket) -> None:
    for i, entry in enumerate(log):
        if entry.admit_at > ticket.admit_at:
            log.insert(i, ticket)
            return
    log.append(ticket)


def _tail_start(log: deque[Ticket], at: float) -> int:
    """An index from which to search ``log`` (in time order) for time ``at``: the start of
    its last :data:`_TAIL` entries when they begin before ``at`` (deque indexing near an end
    is cheap; a search of the whole log would hop through its middle), else 0."""
    lo = len(log) - _TAIL
    return lo if lo > 0 and log[lo].admit_at < at else 0


def _index_of(log: deque[Ticket], ticket: Ticket, at: float) -> int:
    """Where ``ticket``, placed at ``at``, is in ``log`` (-1: not there)."""
    n = len(log)
    i = bisect_left(log, at, _tail_start(log, at), n, key=_ADMIT_AT)
    while i < n:
        entry = log[i]
        if entry is ticket:
            return i
        if entry.admit_at != at:
            break
        i += 1
    # Not where its time says: gone from the log (expired, cancelled), or the log is out of
    # time order, which would be a bug; an entry still counts wherever it is, so look.
    for i, entry in enumerate(reversed(log)):
        if entry is ticket:
            return n - 1 - i
    return -1


def _insert_sorted_from_tail(log: deque[Ticket], ticket: Ticket, at: float | None = None
                             ) -> None:
    """Insert after every entry at or before ``at`` (default: the ticket's time); the log is
    in time order."""
    if at is None:
        at = ticket.admit_at
    i = len(log)
    stop = i - _WALK if i > _WALK else 0
    while i > stop and log[i - 1].admit_at > at:
        i -= 1
    if i == stop and i > 0 and log[i - 1].admit_at > at:
        i = bisect_right(log, at, _tail_start(log, at), i, key=_ADMIT_AT)
    log.insert(i, ticket)
