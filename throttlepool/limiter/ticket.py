"""Tickets and the backend seam every limiter algorithm and storage implements."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from .limits import Cost, Limit


class Ticket:
    """One reservation: what it costs and when it is admitted.

    ``provisional`` tickets were not recorded (a shared backend said "try again at
    ``admit_at``"); the limiter asks the backend again when that time comes.
    """

    __slots__ = ("admit_at", "cost", "handle", "provisional", "reserved_cost", "waker")

    def __init__(self, cost: Cost, admit_at: float, provisional: bool = False) -> None:
        self.cost = cost
        self.reserved_cost = cost
        self.admit_at = admit_at
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
