"""Cost: a price table (genai-prices, offline), a run's :class:`Pricing`, the engine's
:class:`CostMeter` hook, and the ``max_cost`` :class:`BudgetGate`."""

from __future__ import annotations

from .budget import BUDGET_REACHED, BudgetGate, Reservation, RunBudget
from .meter import CostMeter, price_outcome
from .prices import TablePrice, candidates, lookup
from .pricing import BATCH, ONLINE, Pricing, item_model

__all__ = [
    "BATCH",
    "BUDGET_REACHED",
    "ONLINE",
    "BudgetGate",
    "CostMeter",
    "Pricing",
    "Reservation",
    "RunBudget",
    "TablePrice",
    "candidates",
    "item_model",
    "lookup",
    "price_outcome",
]
