"""Adaptive pacing: with no limit given, follow the server's own budget headers.

Each dimension (requests, tokens) is a token bucket whose level is re-synced from every fresh
response: ``x-ratelimit-remaining-*`` minus what we dispatched after that request (the
server could not have counted those yet). Between responses the level refills at
``(limit - remaining) / reset``, the average rate at which the server's budget returns. A 429
empties the bucket; its hint pauses the limiter through the retry path. Servers that send no
headers are not paced (429 hints still pause dispatch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .hints import RateInfo
from .limiter import Cost


class Pacer(Protocol):
    """Gates dispatch by what responses said about the budget."""

    def admit(self, cost: Cost, now: float) -> tuple[int | None, float]:
        """``(seq, 0)`` when a call may go now (``seq`` identifies it), else ``(None, wait)``."""
        ...

    def observe(self, seq: int, info: RateInfo | None, now: float) -> None:
        """The call ``seq`` finished; ``info`` is what its response said (None: nothing)."""
        ...

    def rate_limited(self, seq: int, now: float, retry_after: float | None) -> None:
        """The call ``seq`` was rejected with a 429 (``retry_after``: the server's hint)."""
        ...


@dataclass
class _Bucket:
    """The server's budget in one unit, as its headers describe it.

    Until a 429 says otherwise the budget is assumed to return steadily (a token bucket,
    like OpenAI's or llmock's). A 429 whose wait is about as long as the server's full reset
    shows the server frees its budget in bursts (a sliding window): from then on a spent
    budget waits for the server's full reset and then returns whole.
    """

    level: float = float("inf")  # unknown until a response says otherwise
    capacity: float = float("inf")
    rate: float = 0.0
    stamp: float = 0.0
    full_at: float = float("inf")
    bursty: bool = False

    def note_reset(self, reset: float | None, now: float) -> None:
        """The server's budget is whole again ``reset`` from now (any response may say so)."""
        if reset is None:
            return
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
        level = self.refill(now)
        if level >= amount:
            return 0.0
        if self.bursty and self.full_at != float("inf"):
            return self.full_at - now
        if self.rate <= 0:
            return float("inf")
        return (amount - level) / self.rate

    def sync(self, remaining: float, limit: float | None, reset: float | None,
             in_flight: float, now: float) -> None:
        self.level = remaining - in_flight
        self.stamp = now
        self.note_reset(reset, now)
        if limit is not None and limit > 0:
            self.capacity = limit
            spent = limit - remaining
            if reset is not None and reset > 0 and spent > 0:
                self.rate = spent / reset
            elif self.rate <= 0:
                self.rate = limit / 60.0  # the per-minute convention of RPM/TPM headers
        elif reset is not None and reset > 0:
            self.rate = max(self.rate, 1.0 / reset)


class HeaderBudget:
    """A :class:`Pacer` that keeps a request bucket and a token bucket synced to headers."""

    def __init__(self) -> None:
        self.requests = _Bucket()
        self.tokens = _Bucket()
        self._seq = 0
        self._fresh = 0  # the newest dispatch whose response has synced the buckets
        self._tokens_sent = 0.0
        self._tokens_at: dict[int, float] = {}  # seq -> tokens sent up to it, until it ends
        self._open: dict[int, float] = {}  # calls without an answer yet: seq -> tokens

    def admit(self, cost: Cost, now: float) -> tuple[int | None, float]:
        wait = max(self.requests.wait_for(cost.requests, now),
                   self.tokens.wait_for(cost.tokens, now) if cost.tokens else 0.0)
        if wait > 0:
            return None, min(wait, 60.0)
        self.requests.level -= cost.requests
        self.tokens.level -= cost.tokens
        self._seq += 1
        self._open[self._seq] = cost.tokens
        if self._fresh:  # bookkeeping starts with the first headers; plain calls skip it
            self._tokens_sent += cost.tokens
            self._tokens_at[self._seq] = self._tokens_sent
        return self._seq, 0.0

    def observe(self, seq: int, info: RateInfo | None, now: float) -> None:
        tokens_upto = self._tokens_at.pop(seq, None)
        self._open.pop(seq, None)
        if info is None:
            return
        if seq <= self._fresh:  # older than one already seen: only its reset time still counts
            self.requests.note_reset(info.reset_requests, now)
            self.tokens.note_reset(info.reset_tokens, now)
            return
        self._fresh = seq
        # Not yet counted by the server: calls sent after this one, and, to be safe, earlier
        # calls still unanswered (a slow one may reach the server after this one did).
        stragglers = [t for s, t in self._open.items() if s < seq]
        later_requests = self._seq - seq + len(stragglers)
        # An untracked call predates tracking, so every tracked token was sent after it.
        later_tokens = (self._tokens_sent - (tokens_upto if tokens_upto is not None else 0.0)
                        + sum(stragglers))
        if info.remaining_requests is not None:
            self.requests.sync(info.remaining_requests, info.limit_requests,
                               info.reset_requests, later_requests, now)
        if info.remaining_tokens is not None:
            self.tokens.sync(info.remaining_tokens, info.limit_tokens, info.reset_tokens,
                             later_tokens, now)

    def rate_limited(self, seq: int, now: float, retry_after: float | None) -> None:
        self._tokens_at.pop(seq, None)
        self._open.pop(seq, None)
        for bucket in (self.requests, self.tokens):
            if bucket.level == float("inf"):
                continue
            # A token bucket frees its next unit long before it is full again (llmock: 0.5 s
            # against 60 s); a sliding window after a burst frees its first slot about when
            # it is whole again. Only the latter is worth waiting for in whole windows.
            if (retry_after is not None and bucket.full_at != float("inf")
                    and retry_after >= 0.5 * (bucket.full_at - now)):
                bucket.bursty = True
            bucket.level = min(bucket.level, 0.0)
            bucket.stamp = now
