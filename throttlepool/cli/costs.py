"""What the CLI says about money: the run's cost line, a budget stop, the dry run's range."""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .._config import Settings
from ..adapters import Adapter
from ..cost import BUDGET_REACHED, Pricing, item_model
from ..cost.text import usd
from ..outcome import Outcome, Source, Status
from ..store import redact_text


def run_pricing(settings: Settings, adapter: Adapter[Any]) -> Pricing:
    """How this run's calls are priced: the table's price for the provider and model, or
    ``--price-in``/``--price-out``, at the batch price in ``--mode batch``."""
    model = settings["model"] or adapter.identity().get("model")
    return Pricing(adapter.name, str(model) if model else None, settings["price_in"],
                   settings["price_out"], settings["mode"] or "online")


@dataclass
class CostTally:
    """The cost of this session's answered calls, counted as the outcomes are delivered:
    how many were priced, and which models had no price (an unknown cost is never $0)."""

    pricing: Pricing
    spent: float = 0.0
    priced: int = 0
    unknown: int = 0
    unknown_models: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome[Any]) -> None:
        """Count one delivered outcome (checkpointed and cached ones cost nothing now)."""
        if (outcome.source is not Source.CALL or outcome.status is not Status.OK
                or outcome.usage is None):
            return
        if outcome.cost is not None:
            self.priced += 1
            self.spent += outcome.cost
            return
        self.unknown += 1
        model = item_model(outcome.item) or self.pricing.model or ""
        self.unknown_models[model] = self.unknown_models.get(model, 0) + 1

    def line(self, session_cost: float = 0.0) -> str | None:
        """``cost $0.0123 (12 items priced, 1 unknown: model x has no price; ...)``; None
        when no call reported usage (a plain function, an endpoint without usage).

        ``session_cost``: the run's own count (``RunStats.cost_usd``), which also prices the
        answers rejected as invalid JSON that the server billed; what it adds is named.
        """
        rejected = session_cost - self.spent if session_cost > self.spent + 1e-12 else 0.0
        spent = self.spent + rejected
        if not self.priced and not self.unknown and not rejected:
            return None
        mode = " at the batch price" if self.pricing.batch else ""
        priced = f"{self.priced} item{'s' if self.priced != 1 else ''} priced{mode}"
        if rejected:
            priced += f", {usd(rejected)} of it for rejected answers"
        if not self.unknown:
            return f"cost {usd(spent)} ({priced})"
        why = (f"{self.unknown} unknown: {_no_price(self.unknown_models)}; give --price-in "
               f"and --price-out")
        if not self.priced:
            return f"cost unknown ({why})"
        return f"cost {usd(spent)} + unknown ({priced}, {why})"


def budget_stop(stopped: BaseException | None) -> bool:
    """Whether the run stopped because ``--max-cost`` was reached."""
    return stopped is not None and str(stopped).startswith(BUDGET_REACHED)


def budget_advice(stopped: BaseException, argv: list[str], max_cost: float | None,
                  left: int, needed: float | None = None) -> str:
    """``budget reached (...): 40 items not sent; to go on with a higher cap: ...``.

    ``needed``: the cap the rest of the run fits under (what it spent plus the unsent
    items' projected cost, see :func:`resume_cap`); without it the cap is doubled."""
    higher = f"{_round_up(needed)}" if needed else _higher_cap(max_cost)
    again = redact_text(shlex.join(["throttlepool", *_with_max_cost(argv, higher)]))
    items = f"{left} item{'s were' if left != 1 else ' was'} not sent"
    return (f"{stopped}: {items}; to resume with a higher cap (the answers so far are "
            f"kept and not paid again), run:\n  {again}")


def resume_cap(outcomes: Iterable[Outcome[Any]], adapter: Adapter[Any],
               pricing: Pricing) -> float | None:
    """The ``--max-cost`` a resumed run fits under: what the run's answers cost plus each
    unsent item's projected cost, estimated as the run reserves it (None: unknown)."""
    needed = 0.0
    for outcome in outcomes:
        if outcome.status is Status.NOT_ATTEMPTED:
            estimate = adapter.estimate(outcome.item)
            tokens, output = float(estimate.tokens), float(estimate.output)
            cost = pricing.estimate(max(0.0, tokens - output), output, item_model(outcome.item))
        else:
            cost = outcome.cost or 0.0
        if cost is None:
            return None
        needed += cost
    return needed


def _round_up(usd_amount: float) -> str:
    """``0.0012345`` -> ``0.00124``: three significant digits, never below the amount."""
    digits = 3 - math.floor(math.log10(usd_amount)) - 1 if usd_amount > 0 else 0
    scale = 10 ** digits
    return f"{math.ceil(usd_amount * scale * (1 - 1e-12)) / scale:g}"


def _higher_cap(max_cost: float | None) -> str:
    if not max_cost:
        return "1"
    return f"{max_cost * 2:g}"


def _with_max_cost(argv: list[str], cap: str) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--max-cost":
            skip = True
        elif not arg.startswith("--max-cost="):
            out.append(arg)
    return [*out, "--max-cost", cap]


class CostRange:
    """The dry run's projection, summed request by request: each request's estimated input
    tokens with 0 to its reserved output tokens (``max_tokens``, else the adapter's reserve)."""

    def __init__(self, pricing: Pricing, max_cost: float | None = None) -> None:
        self.pricing = pricing
        self.low = self.high = 0.0
        self.unknown: set[str] = set()
        #: ``--max-cost``: how many requests, in input order, fit under it at their upper
        #: estimate (what the run reserves for each before sending it).
        self.max_cost = max_cost
        self.requests = self.fit = 0
        self._fitting = max_cost is not None

    def add(self, item: Any, tokens_in: float, tokens_out: float) -> None:
        """Count one request the run would send."""
        model = item_model(item)
        least = self.pricing.estimate(tokens_in, 0, model)
        most = self.pricing.estimate(tokens_in, tokens_out, model)
        self.requests += 1
        if least is None or most is None:
            self.unknown.add(model or self.pricing.model or "")
            self._fitting = False
            return
        if self._fitting and self.max_cost is not None:
            if self.high + most <= self.max_cost * (1 + 1e-9):
                self.fit += 1
            else:
                self._fitting = False
        self.low += least
        self.high += most

    def text(self) -> str:
        """``projected cost: $0.0010 to $0.0050 (...)``, or ``cost unknown: <why>``."""
        if self.unknown:
            head = (f"cost unknown: {_no_price(self.unknown)}; give --price-in and "
                    f"--price-out (USD per million tokens)")
            if self.low or self.high:
                return f"{head}; the priced requests: {usd(self.low)} to {usd(self.high)}"
            return head
        at = " at the batch price" if self.pricing.batch else ""
        return (f"projected cost{at}: {usd(self.low)} to {usd(self.high)} (estimated input "
                f"tokens, and 0 to each request's max output tokens; "
                f"{self.pricing.describe()})") + self._fit_text()

    def _fit_text(self) -> str:
        """``--max-cost $0.01: the first 12 of 40 requests fit ...`` (a new line)."""
        if self.max_cost is None:
            return ""
        if self.fit >= self.requests:
            return f"\n--max-cost {usd(self.max_cost)}: all {self.requests} requests fit"
        more = ("the run submits those and stops ('budget reached')" if self.pricing.batch else
                "answers that cost less than reserved free room for more as they come")
        return (f"\n--max-cost {usd(self.max_cost)}: the first {self.fit} of {self.requests} "
                f"requests fit, each reserved at its upper estimate; {more}")


def _no_price(models: Iterable[str]) -> str:
    """``no price for model x, y (not in the price table)``; ``no model named`` for ''."""
    names = sorted(m for m in models if m)
    parts = []
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        parts.append(f"no price for model {shown} (not in the price table)")
    if "" in models:
        parts.append("no model named (--model), so none to look up in the price table")
    return "; ".join(parts)
