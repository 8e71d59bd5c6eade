"""``max_cost``: a budget gate that reserves each admitted call's projected cost.

Like the token limiter's reservations (limiter/core.py): before a call is admitted, its
estimate (estimated tokens x price) is reserved; once it is answered the reservation is
settled to what the call cost, or given back when the call was not billed (refused,
rate-limited). A call is admitted only while ``spent + reserved + estimate <= max_cost``, so
the calls in flight can never together pass the cap on their estimates. Pure policy: no
clock, no threads; the engine calls it from its one event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..outcome import Usage
from .pricing import Pricing, item_model
from .text import usd

BUDGET_REACHED = "budget reached"


@dataclass(slots=True)
class Reservation:
    """One admitted call's share of the budget, until settled or cancelled."""

    amount: float
    open: bool = True


class BudgetGate:
    """Admits calls while their projected spend stays within ``max_cost`` USD.

    ``spent`` starts at what the run already spent (a resumed run's recorded cost), so a
    resume with the same cap stops at once and a higher cap goes on where it left off.
    """

    def __init__(self, max_cost: float, spent: float = 0.0) -> None:
        if isinstance(max_cost, bool) or not isinstance(max_cost, int | float) or not (
                max_cost >= 0):
            raise ConfigError(f"max_cost must be a number of USD >= 0, not {max_cost!r}")
        self.max_cost = float(max_cost)
        self.spent = float(spent)
        self.reserved = 0.0
        self.unknown = 0  # calls settled without a known cost (their reservation kept)
        self.refused = 0

    @property
    def remaining(self) -> float:
        """USD not yet spent or reserved."""
        return max(0.0, self.max_cost - self.spent - self.reserved)

    def reserve(self, estimate: float | None) -> Reservation | None:
        """Reserve ``estimate`` USD for a call about to be admitted; None when it would pass
        the cap (the run stops as ``budget reached``). An unknown estimate (None) reserves
        nothing: a model without a price cannot be budgeted, the caller says so up front."""
        amount = max(0.0, float(estimate or 0.0))
        # A tiny tolerance: 0.1 + 0.2 must not refuse a call that lands exactly on the cap.
        if self.spent + self.reserved + amount > self.max_cost * (1 + 1e-9):
            self.refused += 1
            return None
        self.reserved += amount
        return Reservation(amount)

    def settle(self, reservation: Reservation, actual: float | None) -> None:
        """The call was answered and cost ``actual`` USD; None (unknown) keeps the estimate
        as spent, the safe side of a cap."""
        if not reservation.open:
            return
        reservation.open = False
        self.reserved = max(0.0, self.reserved - reservation.amount)
        if actual is None:
            self.unknown += 1
            self.spent += reservation.amount
        else:
            self.spent += max(0.0, actual)

    def cancel(self, reservation: Reservation) -> None:
        """The call was not billed (not sent, refused, rate-limited): give its share back."""
        if reservation.open:
            reservation.open = False
            self.reserved = max(0.0, self.reserved - reservation.amount)

    def reason(self) -> str:
        """Why dispatch stopped, for the run's status: ``budget reached ($0.50 of $0.50)``."""
        # Significant digits: a cheap model's spend is $0.000031, which 4 decimals make $0.0000.
        return (f"{BUDGET_REACHED} ({usd(self.spent)} spent, {usd(self.reserved)} reserved, "
                f"of max_cost {usd(self.max_cost)})")


class RunBudget:
    """A run's ``max_cost``: a :class:`BudgetGate` with the run's :class:`Pricing`, taking the
    limiter's estimate (``tokens`` of which ``output`` are the reply's) and the call's usage,
    so that each engine site is one call: ``reserve`` before admission, ``settle`` after an
    answer, ``cancel`` after a call that was not billed.

    A model whose price is unknown cannot be budgeted: refused here, before any call.
    """

    def __init__(self, pricing: Pricing, max_cost: float, spent: float = 0.0) -> None:
        if not pricing.known():
            raise ConfigError(
                f"max_cost needs a price for {pricing.model or 'the calls'}: "
                f"{pricing.describe()}")
        self.pricing = pricing
        self.gate = BudgetGate(max_cost, spent)

    def estimate(self, tokens: float, output: float, item: Any = None) -> float | None:
        """USD a call estimated at ``tokens`` (``output`` of them the reply's) would cost."""
        return self.pricing.estimate(max(0.0, tokens - output), output, item_model(item))

    def reserve(self, estimate: Any, item: Any = None) -> Reservation | None:
        """Reserve the call's projected cost (``estimate`` has ``tokens`` and ``output``, as
        the limiter's ``Cost``); None: the budget is reached, stop dispatch."""
        return self.gate.reserve(self.estimate(float(estimate.tokens),
                                               float(estimate.output), item))

    def settle(self, reservation: Reservation, usage: Usage | None, item: Any = None) -> None:
        """The call was answered: its reservation becomes what its usage cost."""
        self.gate.settle(reservation, self.pricing.cost(usage, item_model(item)))

    def cancel(self, reservation: Reservation) -> None:
        """The call was not billed: give its reservation back."""
        self.gate.cancel(reservation)

    def charge(self, usage: Usage, item: Any = None) -> None:
        """A billed call that had no reservation of its own (a Dask worker's rejected
        answer, reported with its chunk): its price counts as spent."""
        self.gate.settle(Reservation(0.0), self.pricing.cost(usage, item_model(item)))

    def reason(self) -> str:
        """Why dispatch stopped (the run's recorded reason)."""
        return self.gate.reason()
