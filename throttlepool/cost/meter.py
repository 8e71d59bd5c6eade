"""The engine's one-line hook: price each delivered outcome and add it to the run's stats."""

from __future__ import annotations

from typing import Any

from ..outcome import Outcome, RunStats, Source, Status, Usage
from .pricing import Pricing, item_model


def price_outcome(pricing: Pricing | None, outcome: Outcome[Any]) -> float | None:
    """Set ``outcome.cost`` from its usage if it has none yet (a call's fresh outcome);
    returns the cost, None when unknown or there is nothing to price."""
    if outcome.cost is None and pricing is not None and outcome.usage is not None:
        outcome.cost = pricing.cost(outcome.usage, item_model(outcome.item))
    return outcome.cost


class CostMeter:
    """Prices outcomes as the engine delivers them: ``meter.deliver(stats, outcome)``.

    Only the calls of this session count in ``stats.cost_usd`` (like its tokens); a call that
    reported usage but cannot be priced (a model the table lacks, no --price-in/--price-out)
    counts in ``stats.cost_unknown``. A call without usage (a plain function) has nothing to
    price. Outcomes from the checkpoint keep their recorded cost.
    """

    def __init__(self, pricing: Pricing | None) -> None:
        self.pricing = pricing

    def deliver(self, stats: RunStats, outcome: Outcome[Any]) -> None:
        """Price ``outcome`` and count it in ``stats``; call before the store records it."""
        if (outcome.source is not Source.CALL or outcome.status is not Status.OK
                or outcome.usage is None):
            return
        cost = price_outcome(self.pricing, outcome)
        if cost is None:
            stats.cost_unknown += 1
        else:
            stats.cost_usd += cost

    def count_billed(self, stats: RunStats, usage: Usage, item: Any) -> None:
        """Count in ``stats`` the tokens and price of an answer the server billed that no
        outcome reports (one rejected as not the JSON asked for, then asked again)."""
        stats.input_tokens += usage.input_tokens
        stats.output_tokens += usage.output_tokens
        if self.pricing is None:
            return
        price = self.pricing.cost(usage, item_model(item))
        if price is None:
            stats.cost_unknown += 1
        else:
            stats.cost_usd += price
