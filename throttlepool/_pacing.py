"""Adaptive pacing: with no limit given, follow the server's own budget headers.

Each dimension (requests, tokens, and Anthropic's input and output tokens) is a token bucket
whose level is re-synced from every fresh response: ``x-ratelimit-remaining-*`` minus what we
dispatched after that request (the server could not have counted those yet). Between
responses the level refills at ``(limit - remaining) / reset``, the average rate at which the
server's budget returns. A 429 empties the bucket; its hint pauses the limiter through the
retry path. Servers that send no headers are not paced (429 hints still pause dispatch).

A server that turns out to free its budget in bursts (a sliding window) is paced by what it
told us instead: its limit and its window (the reset on a call it just admitted: the time
until that call leaves its window) become an exact sliding-window log over our own calls,
seeded with the calls already made. Each call counts from when we let it go until its answer
arrives, and from then on from the latest instant the server may have stamped it (its arrival
bound, as the known-limit limiter places it: see _pacing_arrivals; from its answer when its
timing on the worker thread is not known); the server stamped it in between, so no window of
the server's can hold more than the limit and, with the key to ourselves, there is no 429
after the window is learned (no 429 per window reset, no wait for a full reset either).
An answered call counts what the server counted (the output it generated, not max_tokens);
with whole-second reset times the window is the least "reset + time since it was let go"
(a time of day read on a late answer falls short of the window), and an answered call is
remembered at least that long.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from ._pacing_arrivals import CallTiming, LearnedArrivals
from ._pacing_calls import CallRecords
from ._pacing_records import HeaderBucket, SentCall
from .errors import CostExceedsLimit
from .hints import RateInfo
from .limiter import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REQUESTS,
    TOKENS,
    Cost,
    Limit,
    SlidingWindowLog,
    Ticket,
)
from .limiter.pauses import NoPauses, PauseSource

#: The token kinds a server may limit, each with a bucket of its own.
_TOKEN_UNITS = (TOKENS, INPUT_TOKENS, OUTPUT_TOKENS)
#: (remaining, limit, reset) of one unit, as a response's headers give them.
_Figures = tuple[float | None, float | None, float | None]


class Pacer(Protocol):
    """Gates dispatch by what responses said about the budget."""

    def admit(self, cost: Cost, now: float) -> tuple[int | None, float]:
        """``(seq, 0)`` when a call may go now (``seq`` identifies it), else ``(None, wait)``."""
        ...

    def observe(self, seq: int, info: RateInfo | None, now: float,
                actual: Cost | None = None, timing: CallTiming | None = None) -> None:
        """The call ``seq`` finished; ``info`` is what its response said (None: nothing),
        ``actual`` what the server counted for it (its usage, when reported), ``timing``
        when it ran on its worker thread (given for an answered call only)."""
        ...

    @property
    def times_calls(self) -> bool:
        """True when :meth:`observe` would use a call's timing (a call pays for none before)."""
        ...

    def rate_limited(self, seq: int, now: float, retry_after: float | None) -> None:
        """The call ``seq`` was rejected with a 429 (``retry_after``: the server's hint)."""
        ...

    def cancel(self, seq: int, now: float) -> None:
        """The call ``seq`` was admitted but never made (withdrawn before it started)."""
        ...


class HeaderBudget(CallRecords):
    """A :class:`Pacer` that keeps a request bucket and token buckets synced to headers:
    tokens, and input and output tokens apart where the server limits them apart (Anthropic's
    ITPM and OTPM; its ``tokens-*`` then only repeats the tightest of them and is not used).

    Once a dimension is learned to be a sliding window (see the module docstring), an exact
    :class:`SlidingWindowLog` of that limit gates it instead of its bucket, unless one of the
    ``configured`` limits (the runner's own limiter) is at least as strict: that limiter is
    exact too, and the dimension is left to it alone. ``pauses``: the process's pauses (the
    runner's limiter's source), which the learned log's arrival bounds allow for.
    """

    def __init__(self, configured: Sequence[Limit] = (),
                 pauses: PauseSource | None = None) -> None:
        self._configured = list(configured)
        self._pauses: PauseSource = pauses or NoPauses()
        self.requests = HeaderBucket(REQUESTS)
        self.tokens = HeaderBucket(TOKENS)
        self.input_tokens = HeaderBucket(INPUT_TOKENS)
        self.output_tokens = HeaderBucket(OUTPUT_TOKENS)
        super().__init__()
        self._fresh = 0  # the newest dispatch whose response has synced the buckets
        self._tokens_sent = dict.fromkeys(_TOKEN_UNITS, 0.0)
        # seq -> tokens of each kind sent up to it, until it ends
        self._tokens_at: dict[int, dict[str, float]] = {}
        self._window: SlidingWindowLog | None = None
        self._arrivals = LearnedArrivals(None, self._pauses)  # the learned log's arrival bounds
        self._learned_seq = 0  # the last call let go before the current window was learned
        #: 429s met by calls let go after their server's window was learned.
        self.rate_limited_after_learning = 0
        #: True once headers were seen (or a window is learned): a learned log bounds
        #: answered calls by their timing. An attribute, not a property: read on every call.
        self.times_calls = False

    @property
    def learned_limits(self) -> list[Limit]:
        """The server's sliding-window limits this pacer enforces (empty until one is learned;
        a limit a configured one covers is left to the configured one)."""
        return list(self._window.limits) if self._window is not None else []

    def _covered(self, bucket: HeaderBucket) -> bool:
        """True when a configured limit is at least as strict as ``bucket``'s learned window:
        no more per window, over a window as long (the learned one may be a header's
        rounding longer than the server's)."""
        learned = bucket.learned()
        return learned is not None and any(
            lim.unit == learned.unit and lim.amount <= learned.amount
            and lim.period >= learned.period - bucket.resolution
            for lim in self._configured)

    def _buckets(self) -> Iterator[HeaderBucket]:
        yield self.requests
        yield self.tokens
        yield self.input_tokens
        yield self.output_tokens

    def admit(self, cost: Cost, now: float) -> tuple[int | None, float]:
        if self._blind:  # no header yet, so no bucket or window to wait for
            seq = self._seq = self._seq + 1
            self._blind_open[seq] = (now, cost)
            if now >= self._forget_from:
                self._forget_blind(now)
            return seq, 0.0
        window = self._window
        learned = {lim.unit for lim in window.limits} if window is not None else set()
        learned |= {b.unit for b in self._buckets() if self._covered(b)}
        wait = max((bucket.wait_for(cost.of(bucket.unit), now)
                    for bucket in self._buckets()
                    if bucket.unit not in learned
                    and (bucket.unit == REQUESTS or cost.of(bucket.unit))), default=0.0)
        ticket = None
        if wait <= 0 and window is not None:
            ticket, wait = self._reserve(window, cost, now)
        if wait > 0:
            return None, min(wait, 60.0)
        for bucket in self._buckets():
            bucket.level -= cost.of(bucket.unit)
        self._seq += 1
        self._open[self._seq] = cost
        self._sent[self._seq] = SentCall(now, cost, ticket=ticket)
        self._forget(now)
        if self._fresh:  # bookkeeping starts with the first headers; plain calls skip it
            for unit in _TOKEN_UNITS:
                self._tokens_sent[unit] += cost.of(unit)
            self._tokens_at[self._seq] = dict(self._tokens_sent)
        return self._seq, 0.0

    def _reserve(self, window: SlidingWindowLog, cost: Cost, now: float
                 ) -> tuple[Ticket | None, float]:
        """A place in the learned log now, or the wait until there is one."""
        self._hold_open(window, now)
        try:
            ticket = window.reserve(cost, now)
        except CostExceedsLimit:
            return None, 0.0  # never admissible: let the server say so, once
        if ticket.admit_at > now:
            window.cancel(ticket, now)
            return None, ticket.admit_at - now
        return ticket, 0.0

    def _hold_open(self, window: SlidingWindowLog, now: float) -> None:
        """Count every call still unanswered a whole window after its entry from now.

        It may yet be counted by the server (this is what keeps the log exact, not a
        margin). Due before anything that expires the log at ``now`` (a reservation, a
        settlement): an entry expired first is gone, its restamp finds nothing, and the open
        call no longer counts (a settlement at 14.25 dropped a call let go at 13.61 that
        the server stamped at 14.41; the next call met a 429).
        """
        shortest = min(lim.period for lim in window.limits)
        for seq in self._open:
            sent = self._sent.get(seq)
            if (sent is not None and sent.ticket is not None
                    and sent.ticket.admit_at <= now - shortest):
                window.restamp(sent.ticket, now)  # sent.stamp stays when it was let go

    def _forget(self, now: float, horizon: float | None = None) -> None:
        """Drop answered calls that no window can count any more (dispatch order).

        ``horizon``: how long an answered call may still count, when the caller knows it
        (else it is asked of the buckets, only once the first entry is answered).
        """
        sent = self._sent
        gone: list[int] = []
        # One walk, then the deletions: asking next(iter()) after each deletion would step
        # over every hole left before it (k deletions, k * k steps).
        for seq, first in sent.items():
            if first.open:
                break
            if horizon is None:
                # Named, not iterated: this runs on almost every call.
                horizon = max(self.requests.horizon(), self.tokens.horizon(),
                              self.input_tokens.horizon(), self.output_tokens.horizon()
                              ) or self._UNKNOWN_HORIZON
            if first.stamp > now - horizon:
                break
            gone.append(seq)
        for seq in gone:
            del sent[seq]

    def _answered(self, seq: int, now: float, headers: bool = True,
                  timing: CallTiming | None = None) -> None:
        """The server stamped ``seq`` before now: count it from now on, or in the learned log
        from its arrival bound when its ``timing`` is known, never from earlier.

        Without ``headers`` and with no window learned, the call joins the newest merged
        entry (see :meth:`_merge`).
        """
        self._open.pop(seq, None)
        sent = self._sent.get(seq)
        if sent is None or not sent.open:
            return
        sent.open = False
        let_go, sent.stamp = sent.stamp, max(sent.stamp, now)
        if timing is not None and not (timing.complete and timing.started >= let_go):
            timing = None
        window = self._window
        if sent.ticket is not None and window is not None:
            if timing is not None:
                self._arrivals.answered(sent.ticket, let_go, timing, now)
            else:
                window.restamp(sent.ticket, now)
        elif window is None:
            if timing is not None:  # made once headers were seen: a window may follow
                self._arrivals.answered(None, let_go, timing, now)
            if not headers:
                del self._sent[seq]
                self._merge(sent.cost, sent.stamp)

    def _settle(self, seq: int, actual: Cost, now: float) -> None:
        """Count ``seq`` as what the server counted, not as reserved: a reply shorter than
        max_tokens frees the rest of its reservation in the learned window (Anthropic's OTPM
        charges the output generated; 6 tokens used of 30 reserved is 5 calls for 1).

        Prompt and total tokens only ever grow: OpenAI charges its TPM by its own estimate
        of the prompt (characters / 4), which the usage it reports may fall under.
        """
        sent = self._sent.get(seq)
        if sent is None:
            return
        est = sent.cost
        actual = Cost(actual.requests, max(est.tokens, actual.tokens), actual.output,
                      max(est.prompt, actual.prompt), actual.generated)
        sent.cost = actual
        if sent.ticket is not None and self._window is not None:
            self._hold_open(self._window, now)  # the settlement expires the log at now
            try:
                self._window.settle(sent.ticket, actual, now)
            except CostExceedsLimit:  # used more than the whole window: keep the reservation
                pass

    def _learn(self, now: float) -> None:
        """Install the sliding-window limits learned so far, seeded with the calls made."""
        limits = [lim for lim in (b.learned() for b in self._buckets() if not self._covered(b))
                  if lim is not None]
        if self._window is not None and not limits:
            self._window = None  # every learned limit is now a configured one's to enforce
            self.times_calls = bool(self._fresh)
            self._arrivals = LearnedArrivals(None, self._pauses, self._arrivals.margin)
        if not limits or (self._window is not None and self._window.limits == limits):
            return
        window = SlidingWindowLog(limits)
        for sent in sorted(self._sent.values(), key=lambda s: s.stamp):
            sent.ticket = window.record(sent.cost, sent.stamp)
        self._window = window
        self.times_calls = True
        self._arrivals = LearnedArrivals(window, self._pauses, self._arrivals.margin)
        self._learned_seq = self._seq

    def observe(self, seq: int, info: RateInfo | None, now: float,
                actual: Cost | None = None, timing: CallTiming | None = None) -> None:
        if self._blind:
            if info is None and timing is None:
                # Every call to a server without rate headers comes here: it joins the
                # newest merged entry from its answer on, counting its estimate (its usage,
                # ``actual``, is not settled into a merged entry: see _answered).
                call = self._blind_open.pop(seq, None)
                if call is not None:
                    sent_at, cost = call
                    stamp = now if now > sent_at else sent_at
                    self._merge(cost, stamp)
                return
            self._see_headers()
        self._observe_known(seq, info, now, actual, timing)

    def _observe_known(self, seq: int, info: RateInfo | None, now: float,
                       actual: Cost | None, timing: CallTiming | None) -> None:
        """:meth:`observe` once out of the blind form (its closures, apart from the blind
        path: a closure's variables cost the blind path a cell each on every call)."""
        tokens_upto = self._tokens_at.pop(seq, None)
        sent = self._sent.get(seq)
        let_go = sent.stamp if sent is not None and sent.open else None
        self._answered(seq, now, headers=info is not None, timing=timing)
        if actual is not None:
            self._settle(seq, actual, now)
        if info is None:
            return
        if actual is not None and let_go is not None:  # answered with usage: admitted
            self._bound_windows(info, now - let_go, actual)
        if seq <= self._fresh:  # older than one already seen: only its reset time still counts
            self.requests.note_reset(info.reset_requests, now)
            for bucket, (_, _, reset) in self._token_headers(info):
                bucket.note_reset(reset, now)
            self._learn(now)
            return
        self._fresh = seq
        self.times_calls = True
        # Not yet counted by the server: calls sent after this one, and, to be safe, earlier
        # calls still unanswered (a slow one may reach the server after this one did).
        stragglers = [c for s, c in self._open.items() if s < seq]
        later_requests = self._seq - seq + len(stragglers)
        if info.remaining_requests is not None:
            self.requests.sync(info.remaining_requests, info.limit_requests,
                               info.reset_requests, later_requests, now, info.reset_resolution)
        for bucket, (remaining, limit, reset) in self._token_headers(info):
            if remaining is None:
                continue
            unit = bucket.unit
            # An untracked call predates tracking, so every tracked token was sent after it.
            later = (self._tokens_sent[unit] - (tokens_upto or {}).get(unit, 0.0)
                     + sum(c.of(unit) for c in stragglers))
            bucket.sync(remaining, limit, reset, later, now, info.reset_resolution)
        self._learn(now)

    def _bound_windows(self, info: RateInfo, since: float, actual: Cost) -> None:
        """Each reset of an admitted call bounds its unit's window (see note_admitted); a
        unit the call did not spend may reset by an older call, and bounds nothing."""
        self.requests.note_admitted(info.reset_requests, since)
        for bucket, (_, _, reset) in self._token_headers(info):
            if actual.of(bucket.unit) > 0:
                bucket.note_admitted(reset, since)

    def _token_headers(self, info: RateInfo) -> list[tuple[HeaderBucket, _Figures]]:
        """Each token bucket with (remaining, limit, reset) from ``info``."""
        split = [
            (self.input_tokens, (info.remaining_input_tokens, info.limit_input_tokens,
                                 info.reset_input_tokens)),
            (self.output_tokens, (info.remaining_output_tokens, info.limit_output_tokens,
                                  info.reset_output_tokens)),
        ]
        if any(values[0] is not None for _, values in split):
            return split  # the combined figure is only the tightest of these
        return [(self.tokens, (info.remaining_tokens, info.limit_tokens, info.reset_tokens))]

    def rate_limited(self, seq: int, now: float, retry_after: float | None) -> None:
        if self._blind:  # no bucket or window to empty: only the call to forget
            self._blind_open.pop(seq, None)
            return
        self._tokens_at.pop(seq, None)
        self._open.pop(seq, None)
        sent = self._sent.pop(seq, None)  # refused unprocessed: the server did not count it
        window = self._window
        if window is not None and sent is not None and sent.ticket is not None:
            window.cancel(sent.ticket, now)
        if window is not None and seq > self._learned_seq:
            # Someone else spends this key's budget too: our log cannot see their calls, so
            # believe the server's wait before the next call.
            self.rate_limited_after_learning += 1
            self._arrivals.widen(now)  # as the limiter widens its own margin
            if retry_after is not None:
                window.pause_until(now + retry_after, now)
        for bucket in self._buckets():
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
        self._learn(now)

    def cancel(self, seq: int, now: float) -> None:
        if self._blind:
            self._blind_open.pop(seq, None)
            return
        # The buckets keep its cost until the next answer's headers re-sync them: a 429
        # since its admission may have emptied them already, and giving it back on top
        # would let calls go that the server refuses. (tokens_sent keeps it too: later
        # counts err high.)
        self._tokens_at.pop(seq, None)
        self._open.pop(seq, None)
        sent = self._sent.pop(seq, None)
        window = self._window
        if window is not None and sent is not None and sent.ticket is not None:
            window.cancel(sent.ticket, now)
