"""Tickets and the backend seam every limiter algorithm and storage implements."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from .limits import Cost, Limit

#: Seconds ahead a shared backend stamps a call still open (see :meth:`LimiterBackend.hold`).
#: The holding process renews it at each of its limiter steps; a process that died leaves
#: its open calls counted this long beyond their windows.
OPEN_CALL_HOLD = 10.0
#: How often a reservation waiting on another process's open call asks again (seconds).
OPEN_CALL_POLL = 0.05


class Ticket:
    """One reservation: what it costs and when it is admitted.

    ``provisional`` tickets were not recorded (a shared backend said "try again at
    ``admit_at``"); the limiter asks the backend again when that time comes. ``placed`` is
    the time by which the in-memory log positions it (``admit_at`` until a restamp moves it;
    see limiter.sliding); other backends ignore it.
    """

    __slots__ = ("admit_at", "cost", "estimated", "handle", "placed", "provisional", "waker")

    def __init__(self, cost: Cost, admit_at: float, provisional: bool = False) -> None:
        self.cost = cost
        self.estimated = cost  # the caller's estimate, before any calibration
        self.admit_at = admit_at
        self.placed = admit_at
        self.provisional = provisional
        self.waker: Any = None
        self.handle: Any = None

    def __repr__(self) -> str:
        return f"Ticket(cost={self.cost}, admit_at={self.admit_at:.6f})"


class LimiterBackend(Protocol):
    """An algorithm plus its storage. Called only with the limiter's lock held.

    Methods that change other reservations return the tickets whose ``admit_at`` moved
    earlier, so the limiter can wake their waiters.
    """

    @property
    def limits(self) -> Sequence[Limit]:
        """The limits enforced."""
        ...

    def reserve(self, cost: Cost, now: float) -> Ticket:
        """Record a reservation at the earliest admissible time (FIFO) and return it."""
        ...

    def settle(self, ticket: Ticket, actual: Cost, now: float) -> Iterable[Ticket]:
        """Replace a reservation's estimated cost with the actual one."""
        ...

    def cancel(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        """Withdraw a reservation whose call was never made."""
        ...

    def pause_until(self, until: float, now: float) -> Iterable[Ticket]:
        """Admit nothing before ``until`` (a server's Retry-After)."""
        ...

    @property
    def paused_until(self) -> float:
        """The clock time before which nothing is admitted (-inf: no pause)."""
        ...

    @property
    def margin(self) -> float:
        """Seconds each admission counts beyond its window (see :class:`AdmissionMargin`)."""
        ...

    def set_margin(self, margin: float, now: float) -> Iterable[Ticket]:
        """Count every admission for ``margin`` seconds beyond its window from now on."""
        ...

    def restamp(self, ticket: Ticket, now: float, at: float | None = None
                ) -> Iterable[Ticket]:
        """Count an admitted ticket from ``at`` (default ``now``; never later than ``now``).

        Later than its current stamp: its call went late. Earlier: the caller has learned
        that the server counted it no later than ``at`` plus the margin (a thread's first
        call, first counted from its answer), or the call held open (see :meth:`hold`) has
        answered. Redis and SQLite read ``at`` as ``now - at`` seconds before their own clock
        (Redis's ``TIME``, the host's wall clock). An in-process backend may
        ignore an earlier ``at`` when ``at`` is None.
        """
        ...

    def hold(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        """The ticket's call is open: the server may count it any time until it answers, so
        it counts from ``now`` until a later :meth:`restamp`. A shared backend stamps it
        :data:`OPEN_CALL_HOLD` ahead, since other processes cannot see it is open."""
        ...

    def ping(self) -> None:
        """Raise :class:`~throttlepool.errors.LimiterUnavailable` if the storage is unreachable."""
        ...

    def close(self) -> None:
        """Release the storage (connections, files)."""
        ...


class BackendBase:
    """The optional capabilities of a :class:`LimiterBackend`, with defaults that do nothing.

    A backend subclasses this and implements ``limits``, ``reserve``, ``settle``, ``cancel``
    and ``pause_until``; a backend that cannot move a ticket later or lengthen its windows
    keeps these (its admissions count from their grant, for exactly their window).
    """

    _margin: float = 0.0

    @property
    def paused_until(self) -> float:
        """The clock time before which nothing is admitted; by default unknown (+inf), so a
        limiter without limits still asks this backend (a shared pause lives there)."""
        return float("inf")

    @property
    def margin(self) -> float:
        """Seconds each admission counts beyond its window."""
        return self._margin

    def set_margin(self, margin: float, now: float) -> Iterable[Ticket]:
        """Count every admission for ``margin`` seconds beyond its window from now on."""
        self._margin = margin
        return []

    def restamp(self, ticket: Ticket, now: float, at: float | None = None
                ) -> Iterable[Ticket]:
        """Count an admitted ticket from ``at`` on; by default it keeps its grant time."""
        return []

    def hold(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        """Count an open call from ``now`` on: in one process, every step of the limiter
        renews it (see ``RateLimiter``), so a restamp to now is enough."""
        return self.restamp(ticket, now)

    def ping(self) -> None:
        """Nothing to reach: an in-process backend is always available."""

    def close(self) -> None:
        """Nothing to release."""


def replace_in_order(
    queued: Iterable[Ticket], place: Callable[[Ticket, float], None], now: float
) -> list[Ticket]:
    """Re-place queued tickets in FIFO order; return those whose admission moved earlier."""
    moved = []
    for ticket in queued:
        before = ticket.admit_at
        place(ticket, now)
        if ticket.admit_at < before:
            moved.append(ticket)
    return moved
