"""What the header pacer (:class:`~throttlepool._pacing.HeaderBudget`) remembers.

Two kinds of record, kept apart from the pacer's policy so each module stays readable:

* :class:`HeaderBucket`: the server's budget in one unit (requests, tokens, input or output
  tokens) as its rate headers describe it: a token bucket re-synced from each response, and
  what those responses taught about a sliding window (its limit, its length, the bound on it).
* :class:`SentCall` and :class:`MergedCalls`: the calls the pacer let go, which may still count
  at the server: they seed a window learned later and keep the learned log exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter

from .limiter import REQUESTS, Cost, Limit, Ticket

# A level this close to the need is enough: waiting out 1e-17 s would not move a clock.
_EPSILON = 1e-9


@dataclass
class HeaderBucket:
    """The server's budget in one unit, as its headers describe it.

    Until a 429 or the headers say otherwise the budget is assumed to return steadily (a
    token bucket, like OpenAI's or llmock's). Resets that do not grow with the spend, or a
    429 whose wait is about as long as the server's full reset, show the server frees its
    budget in bursts (a sliding window): with the limit known, :class:`HeaderBudget` then
    gates this unit by the learned window; without it a spent budget waits for the server's
    full reset and then returns whole.
    """

    unit: str = REQUESTS
    level: float = float("inf")  # unknown until a response says otherwise
    capacity: float = float("inf")
    rate: float = 0.0
    stamp: float = 0.0
    full_at: float = float("inf")
    bursty: bool = False
    window: float = 0.0  # the longest reset seen: a sliding window's length
    #: The least reset of an admitted call plus the time since it was let go: the call left
    #: no earlier than it was stamped, so the server's window is no longer than that.
    bound: float = float("inf")
    resolution: float = 0.0  # the coarsest reset header seen (``window`` may be this long)
    _least_spend: tuple[float, float] | None = None  # (spent, reset): the least spend

    def learned(self) -> Limit | None:
        """The server's sliding-window limit in ``unit``, once a 429 and headers showed it."""
        if not self.bursty or self.window <= 0 or not 0 < self.capacity < float("inf"):
            return None
        # Millisecond resets already give the window (the longest is the robust figure).
        # A coarse one is a time of day read when the answer arrives: up to a second over
        # the window, or short of it by up to the way back (stamped at 0.0 for 1 s,
        # answered at 0.26: it reads 0.74). The bound is never short: where known, it is
        # the window.
        coarse = self.resolution >= 0.5 and self.bound < float("inf")
        return Limit(self.capacity, self.bound if coarse else self.window, self.unit)

    def horizon(self) -> float:
        """How long after its answer the server may still count a call (0: unknown)."""
        return max(self.window, self.bound if self.bound < float("inf") else 0.0)

    def note_admitted(self, reset: float | None, since: float) -> None:
        """A call let go ``since`` seconds ago was admitted with ``reset``: the server counts
        it until then, one window after its stamp, which is no earlier than we let it go.

        Whole-second reset times (Anthropic's, rounded up) make the longest reset up to a
        second longer than the window; the least of these bounds comes within the way out
        of the window (the rounding left is the least of many, about nothing).
        """
        if reset is not None and reset + since < self.bound - 0.001:
            self.bound = reset + since

    def note_reset(self, reset: float | None, now: float) -> None:
        """The server's budget is whole again ``reset`` from now (any response may say so)."""
        if reset is None:
            return
        # A sliding window resets a call it just admitted after exactly its length; no reset
        # is longer (ceil-rounded headers only make the learned window a little longer).
        self.window = max(self.window, reset)
        # A response can arrive out of order; the latest of the full resets holds.
        self.full_at = now + reset if self.full_at == float("inf") else max(
            self.full_at, now + reset)

    def refill(self, now: float) -> float:
        if self.level == float("inf") or now <= self.stamp:
            return self.level
        if self.bursty:
            if now >= self.full_at:
                self.level, self.full_at = self.capacity, float("inf")
        else:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.level

    def wait_for(self, amount: float, now: float) -> float:
        # A call larger than the whole budget (an estimate with max_tokens above the server's
        # output limit, which charges what is generated) goes once the budget is whole: the
        # level never rises past capacity, so waiting for more would never end.
        amount = min(amount, self.capacity)
        level = self.refill(now)
        if level >= amount - _EPSILON:  # refills summed in floats fall short by an ulp
            return 0.0
        if self.bursty and self.full_at != float("inf"):
            return self.full_at - now
        if self.rate <= 0:
            return float("inf")
        return (amount - level) / self.rate

    def _compare_resets(self, spent: float, reset: float, resolution: float) -> None:
        """Tell a sliding window from a token bucket by how the reset follows the spend.

        A token bucket is whole again after ``spent / rate``: twice the spend, twice the
        reset. A sliding window is whole again when its newest call leaves, one window after
        it was admitted, however much was spent. So a reset that barely grew while the spend
        doubled is a window, known without meeting a 429. A reset rounded up to the header's
        ``resolution`` r is off by up to r, so a bucket's (at least doubled) reset could pass
        for an unchanged one while its true value is under 5r/3; resets under 3r (and under
        50 ms) are too coarse to compare.
        """
        if reset < max(0.05, 3 * resolution):
            return
        if self._least_spend is None or spent < self._least_spend[0]:
            self._least_spend = (spent, reset)
            return
        spent0, reset0 = self._least_spend
        if spent >= 2 * spent0 and reset <= 1.25 * reset0:
            self.bursty = True

    def sync(self, remaining: float, limit: float | None, reset: float | None,
             in_flight: float, now: float, resolution: float = 0.001) -> None:
        self.level = remaining - in_flight
        self.stamp = now
        self.resolution = max(self.resolution, resolution)
        self.note_reset(reset, now)
        if limit is not None and limit > 0:
            self.capacity = limit
            spent = limit - remaining
            if reset is not None and reset > 0 and spent > 0:
                self.rate = spent / reset
                self._compare_resets(spent, reset, resolution)
            elif self.rate <= 0:
                self.rate = limit / 60.0  # the per-minute convention of RPM/TPM headers
        elif reset is not None and reset > 0:
            self.rate = max(self.rate, 1.0 / reset)


@dataclass(slots=True)
class SentCall:
    """One call we let go: when it counts from (its answer, once there is one) and its cost."""

    stamp: float
    cost: Cost
    open: bool = True
    ticket: Ticket | None = field(default=None, repr=False)  # its entry in the learned log


#: Cost.of for REQUESTS, TOKENS, INPUT_TOKENS and OUTPUT_TOKENS, as C-level getters.
_UNIT_GETTERS = tuple(map(attrgetter, ("requests", "tokens", "prompt", "generated")))


class MergedCalls(SentCall):
    """Answered calls counted as one entry (see ``HeaderBudget._merge`` in ``_pacing``):
    ``cost`` is the sum of its members' costs, made only when read (members join far more
    often). Members that are the first one's very cost object (a plain function's calls
    all share one) are only counted: summing a cost's token properties takes a Python call
    each, which on the blind path cost more than everything else together."""

    def __init__(self, stamp: float, cost: Cost, after: int = 0) -> None:
        #: The last call let go before this entry was made (its place in dispatch order).
        self.after = after
        #: The first member's cost and how many members share that object; the others'
        #: costs; their sum once read (None: not summed since the last join).
        self.first, self.repeats = cost, 1
        self.members: list[Cost] = []
        self.total: Cost | None = None
        super().__init__(stamp, cost, open=False)

    @property
    def cost(self) -> Cost:
        return self.close()

    @cost.setter
    def cost(self, value: Cost) -> None:
        self.first, self.repeats, self.members, self.total = value, 1, [], None

    def close(self) -> Cost:
        """The members summed into one cost, which replaces them (on a read, and when the
        next entry starts: a closed entry holds one cost, not thousands)."""
        if self.total is None:
            # What Cost.of reads for each unit; the shared cost multiplied, not added once
            # per member (the same sum, up to the last bit of a fractional estimate).
            first, repeats, members = self.first, self.repeats, self.members
            requests, tokens, prompt, generated = (
                get(first) * repeats + sum(map(get, members)) for get in _UNIT_GETTERS)
            self.total = Cost(requests, tokens, input_tokens=prompt, output_tokens=generated)
            self.first, self.repeats, self.members = self.total, 1, []
        return self.total

    def join(self, cost: Cost, stamp: float) -> None:
        """Count ``cost`` in this entry, from ``stamp`` if that is later."""
        if cost is self.first:
            self.repeats += 1
        else:
            self.members.append(cost)
        self.total = None
        if stamp > self.stamp:
            self.stamp = stamp
