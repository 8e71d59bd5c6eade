"""Prompt estimates corrected by what the server counted: no window lost to a knife-edge.

An estimate a token above the server's charge costs a whole window at the edge: with room
for 16 calls of 60 tokens, calls reserved at 61 fit 15, and settling the first 15 to 60 still
leaves 900 + 61 > 960 for the 16th. So the error of recent estimates is learned from their
settlements, and each new prompt estimate is moved by the tightest correction that would
have covered every one of them: down by the smallest over-estimate when all were over, up by
the largest shortfall when some were under (a reservation below the charge risks a 429, so
under-estimates are corrected at once, from the first). The output part is never corrected:
it is a ceiling (``max_tokens``) or the server's count, not an estimate.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from .limits import Cost

#: Settlements remembered: enough to span several windows of a busy run.
_SAMPLES = 64
#: Over-estimates are trusted only once this many settlements agree.
_MIN_SAMPLES = 4


class EstimateCalibration:
    """Learns the error of prompt-token estimates from settlements (a pure policy)."""

    def __init__(self) -> None:
        self._errors: deque[float] = deque(maxlen=_SAMPLES)  # counted - estimated

    @property
    def correction(self) -> float:
        """Tokens to add to the next prompt estimate (negative: to take off)."""
        if not self._errors:
            return 0.0
        worst = max(self._errors)
        if worst < 0 and len(self._errors) < _MIN_SAMPLES:
            return 0.0
        return worst

    def observe(self, estimated: float, counted: float) -> None:
        """A call whose prompt was estimated at ``estimated`` was counted ``counted``."""
        self._errors.append(counted - estimated)

    def corrected(self, cost: Cost) -> Cost:
        """``cost`` with its prompt part moved by :attr:`correction` (never below zero)."""
        prompt = cost.prompt
        if prompt <= 0:
            return cost
        shift = max(self.correction, -prompt)
        if shift == 0:
            return cost
        return dataclasses.replace(cost, tokens=cost.tokens + shift,
                                   input_tokens=prompt + shift)
