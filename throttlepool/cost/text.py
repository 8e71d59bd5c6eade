"""How a cost reads: ``$0.0042``, ``$12.30``; "unknown" never reads as $0."""

from __future__ import annotations

import math


def usd(amount: float | None) -> str:
    """``$12.30``; under a dollar ``$0.0042``, ``$0.000065``; ``?`` when unknown."""
    if amount is None:
        return "?"
    if amount == 0:
        return "$0"
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    # Two significant digits at least, in plain decimals: $0.0042, $0.000065.
    places = min(10, max(4, 1 - math.floor(math.log10(abs(amount)))))
    return f"${amount:.{places}f}"


def cost_text(amount: float | None, unknown: int = 0) -> str:
    """A run's cost: ``$1.20``, ``$1.20 + 3 unknown``, ``unknown (3 calls)``; ``-`` when
    nothing was priced or unknown (no usage reported)."""
    if amount is None and not unknown:
        return "-"
    if amount is None or (amount == 0 and unknown):
        return f"unknown ({unknown} item{'s' if unknown != 1 else ''})"
    return usd(amount) + (f" + {unknown} unknown" if unknown else "")


def cost_cell(amount: float | None, unknown: int = 0) -> str:
    """A table cell: ``$1.20``, ``$1.20+?`` (some unknown), ``?`` (all unknown), ``-``."""
    if amount is None and not unknown:
        return "-"
    if amount is None or (amount == 0 and unknown):
        return "?"
    return usd(amount) + ("+?" if unknown else "")
