"""One item's way to its outcome: admission, the call, and retries until it succeeds or fails.

Each attempt passes the breaker, then the limiter and the server's budget (as its headers
tell) at the same instant, and goes to the dispatcher (calls.py). A failure is classified:
a 429 pauses every dispatch, a fatal error stops the run, anything else retries by the
run's policy.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from ._calls import Dispatcher, RunConfig
from ._control import RunControl
from ._ledger import RunLedger
from ._pacing_arrivals import CallTiming
from ._pool import NotStarted
from ._progress_line import BREAKER, RATE_LIMIT, SERVER_429, SERVER_BUDGET
from .adapters.base import CallResult
from .adapters.structured import InvalidAnswer
from .breaker import BreakerState
from .classify import ErrorKind, Verdict, is_timeout
from .cost.budget import Reservation
from .errors import RetryHintTooLong, RunStopped
from .limiter import Cost, Permit
from .outcome import Outcome, RunStats, Source, Status, Usage

#: How long a withdrawn call waits before it is admitted again while a failure raised in
#: another run on the runner is not acted on yet (in this run's, it is acted on first).
_RECHECK = 0.001


class Attempts:
    """Drives items to outcomes for one run (loop thread only)."""

    def __init__(self, cfg: RunConfig, ledger: RunLedger, control: RunControl,
                 dispatch: Dispatcher) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.stats: RunStats = ledger.stats
        self.control = control
        self.dispatch = dispatch
        self._server_pause = float("-inf")  # clock time a server's 429 asked us to wait to
        # A limiter's limits are fixed when it is made: with any, every attempt reserves, and
        # asking unrestricted() each time would only say so again.
        self._limited = bool(cfg.limiter.limits)
        # With lookahead, admitted calls beyond batch_size wait for a thread: shown as queued.
        self._threads = (cfg.options.execution.batch_size if dispatch.gate is not None
                         else sys.maxsize)

    async def process(self, index: int, item: Any) -> Outcome[Any]:
        """The item's outcome: from the checkpoint or cache, else from calls."""
        cfg, stats, clock, control = self.cfg, self.stats, self.cfg.clock, self.control
        ledger = self.ledger
        key = None
        if ledger.keyed:  # no store and no cache: no key to make, nothing known
            key = ledger.key(item)
            known = ledger.known(index, item, key)
            if known is not None:  # the ledger revived its value (a schema= model's)
                return known
        adapter, limiter, breaker, pacer = cfg.adapter, cfg.limiter, cfg.breaker, cfg.pacer
        dispatch, reachability = self.dispatch, cfg.reachability
        cost = adapter.estimate(item)
        attempts = 0
        invalid = 0  # answers that were not the JSON asked for: a budget of their own
        first_start = 0.0
        last_error: BaseException | None = None
        while True:
            # A retry that needs no wait (an invalid JSON answer, a 429's shared pause) comes
            # straight back here, and an unrestricted limiter admits without awaiting: the
            # waits below are not the only place a stop must be seen.
            if control.stopping:
                return self._unfinished(index, item, attempts, last_error, key)
            # A closed breaker admits at once: no coroutine to make for its gate.
            if breaker is not None and (wait := breaker.admit()) != 0 and not await \
                    self._breaker_gate(wait):
                return self._unfinished(index, item, attempts, last_error, key)
            held = None
            if cfg.budget is not None:  # max_cost: the call's projected spend must fit
                held = cfg.budget.reserve(cost, item)
                if held is None:
                    control.request_stop(RunStopped(cfg.budget.reason()))
                    return self._unfinished(index, item, attempts, last_error, key)
            # Nothing to wait for (no limit, no pause, a pacer that admits now, as every call
            # to a server without rate headers): no coroutine to make for the admission.
            admission: tuple[Permit | None, int | None] | None
            if self._limited:
                # A limit that does not bind admits at once: no coroutine to make either.
                reserved = limiter.reserve(cost)
                now = clock.now()
                if reserved.provisional or reserved.admit_at > now or control.stopping:
                    admission = await self._admit(cost, reserved=reserved)
                elif pacer is None:
                    admission = reserved, None
                else:
                    seq, wait = pacer.admit(cost, now)
                    if seq is not None:
                        admission = reserved, seq
                    else:
                        limiter.cancel(reserved)  # (see _admit: not held through the wait)
                        admission = await self._admit(cost, wait)
            elif not limiter.unrestricted():
                admission = await self._admit(cost)
            elif pacer is None:
                admission = None, None
            else:
                seq, wait = pacer.admit(cost, clock.now())
                admission = (None, seq) if seq is not None else await self._admit(cost, wait)
            if admission is None:
                if held is not None and cfg.budget is not None:
                    cfg.budget.cancel(held)
                return self._unfinished(index, item, attempts, last_error, key)
            permit, seq = admission
            if attempts:
                stats.retrying -= 1
            else:
                first_start = clock.now()
            attempts += 1
            stats.calls += 1
            if stats.in_flight < self._threads:
                stats.in_flight += 1
            else:
                stats.queued += 1
            # The pacer's learned log bounds an answered call by when it ran (_pacing_arrivals).
            timing = (CallTiming() if seq is not None and pacer is not None
                      and pacer.times_calls else None)
            fut = None
            try:
                sending = (ledger.sending(index, key)
                           if ledger.journal is not None or ledger.on_call is not None else None)
                fut = dispatch.start(item, permit, sending, timing)
                result: CallResult[Any] = await (
                    fut if fut is not None else dispatch.call(item, permit, sending, timing))
                if not reachability.reached:
                    reachability.observe_success()
            except Exception as exc:
                self._answered()
                gate = dispatch.gate
                if exc.__class__ is NotStarted:
                    # Withdrawn from the pool's queue before it started: no call was made.
                    attempts -= 1
                    self._withdrawn(permit, held, seq)
                    if attempts:
                        stats.retrying += 1
                    if (gate is not None and gate.count.raised != gate.count.handled
                            and not control.stopping):
                        # A failure another run's loop has not acted on yet: do not spin.
                        await control.pause(asyncio.sleep(_RECHECK))
                    continue  # admitted again, or not if the run is stopping
                last_error = exc
                counted = gate is not None and _raised_on_thread(fut, exc)
                try:
                    delay, invalid = self._failed(exc, item, cost, permit, held, seq,
                                                  attempts, invalid)
                finally:
                    if counted and gate is not None:
                        gate.acted_on()  # its pause, breaker or stop is in place
                if delay is None or isinstance(delay, BaseException):
                    error = delay if isinstance(delay, BaseException) else exc
                    return Outcome(index, item, Status.FAILED, None, error, attempts,
                                   clock.now() - first_start, key=key)
                stats.retries += 1
                stats.retrying += 1
                if delay > 0 and not await control.pause(clock.asleep(delay)):
                    return self._unfinished(index, item, attempts, last_error, key)
                continue
            except BaseException as exc:  # not an Exception: the run ends with it
                if dispatch.gate is not None and _raised_on_thread(fut, exc):
                    dispatch.gate.acted_on()
                raise
            if stats.queued:  # (inline: every answered call comes this way)
                stats.queued -= 1  # one that waited took the freed thread
            else:
                stats.in_flight -= 1
            usage = result.usage
            if held is not None and cfg.budget is not None:
                cfg.budget.settle(held, usage, item)
            # After a success, inline: every answered call comes this way.
            if breaker is not None:
                breaker.record_success()
            if usage is not None:  # else nothing was counted: nothing to settle
                self._settle_tokens(permit, cost, usage)
            answered_at = clock.now()
            if pacer is not None and seq is not None:
                pacer.observe(seq, result.rate, answered_at,
                              None if usage is None else _counted(cost, usage), timing)
            if breaker is not None or (pacer is not None and seq is not None):
                control.notify()  # once: the waiters it wakes re-check everything
            if key is not None and cfg.cache is not None:
                cfg.cache.put(key, result.value)
            return Outcome(index, item, Status.OK, result.value, None, attempts,
                           answered_at - first_start, usage, Source.CALL, key,
                           ttft=result.ttft)

    def _failed(self, exc: Exception, item: Any, cost: Cost, permit: Permit | None,
                held: Reservation | None, seq: int | None, attempts: int, invalid: int
                ) -> tuple[float | BaseException | None, int]:
        """Account for a failed call and decide what follows (see :meth:`_after_failure`);
        returns that and the count of invalid answers so far."""
        cfg = self.cfg
        verdict = cfg.adapter.classify(exc)
        if permit is not None and verdict.kind is ErrorKind.RATE_LIMITED:
            # The server refused it unprocessed and did not count it: neither do we.
            cfg.limiter.cancel(permit)
        billed = exc.usage if isinstance(exc, InvalidAnswer) else None
        if billed is not None:  # an answer was rejected, but the server billed it
            self._count_billed(billed, item)
            self._settle_tokens(permit, cost, billed)
        if held is not None and cfg.budget is not None:
            # An answer that never came may still be billed: keep its estimate.
            if billed is not None:
                cfg.budget.settle(held, billed, item)
            elif is_timeout(exc):  # ours or the SDK's: the request may have gone
                cfg.budget.settle(held, None, item)
            else:
                cfg.budget.cancel(held)
        if verdict.kind is ErrorKind.INVALID_OUTPUT:
            invalid += 1
        return self._after_failure(exc, verdict, attempts - invalid, seq, invalid), invalid

    def _answered(self) -> None:
        """One admitted call is over (answered, failed or withdrawn)."""
        stats = self.stats
        if stats.queued:
            stats.queued -= 1  # one that waited took the freed thread
        else:
            stats.in_flight -= 1

    def _withdrawn(self, permit: Permit | None, held: Reservation | None, seq: int | None
                   ) -> None:
        """Undo the admission of a call that never started (see _pool.RunGate)."""
        cfg = self.cfg
        self.stats.calls -= 1
        if permit is not None:
            cfg.limiter.cancel(permit)
        if held is not None and cfg.budget is not None:
            cfg.budget.cancel(held)
        if seq is not None and cfg.pacer is not None:
            cfg.pacer.cancel(seq, cfg.clock.now())
        breaker = cfg.breaker
        if breaker is not None and breaker.state is BreakerState.HALF_OPEN:
            # It was the probe (a half-open breaker admits no other): free its slot.
            breaker.record_neutral()
            self.control.notify()

    def _settle_tokens(self, permit: Permit | None, cost: Cost, usage: Usage | None) -> None:
        """Settle a billed call's permit to the tokens the server counted."""
        cfg = self.cfg
        counted = _counted(cost, usage)
        if counted is not None and cfg.token_limited and permit is not None:
            cfg.limiter.settle(permit, counted)

    def _count_billed(self, usage: Usage, item: Any) -> None:
        """A rejected answer's tokens and price, in the run's totals: it was billed, yet no
        outcome reports it (the item's row keeps the usage of its final call)."""
        self.ledger.cost.count_billed(self.stats, usage, item)

    def _after_failure(
        self, exc: BaseException, verdict: Verdict, attempts: int, seq: int | None,
        invalid: int = 0,
    ) -> float | BaseException | None:
        """Seconds until the retry, None to fail with ``exc``, or the error to fail with.

        ``invalid``: answers so far that were not the JSON asked for; the adapter's
        ``json_retries`` bounds them, apart from the network retries ``attempts`` counts.
        """
        cfg, stats, control = self.cfg, self.stats, self.control
        if cfg.pacer is not None and seq is not None:
            cfg.pacer.observe(seq, cfg.adapter.rate_info(exc), cfg.clock.now())
            if verdict.kind is ErrorKind.RATE_LIMITED:
                cfg.pacer.rate_limited(seq, cfg.clock.now(), verdict.retry_after)
            control.notify()
        if cfg.breaker is not None:
            if verdict.kind is ErrorKind.TRANSIENT:
                cfg.breaker.record_failure()
            else:
                cfg.breaker.record_neutral()
            control.notify()
        if verdict.kind is ErrorKind.RATE_LIMITED:
            stats.rate_limited += 1
            if cfg.limiter.limits:
                # A 429 despite our own limit: the server's clock sees more jitter than the
                # margin allows for. Widen it; the headers may only ever tighten a limit.
                cfg.limiter.widen_margin()
        unreachable = cfg.reachability.observe_failure(exc, verdict)
        if unreachable is not None:  # no call ever reached the server: a wrong URL, not a blip
            control.request_stop(unreachable)
            return None
        if verdict.kind is ErrorKind.FATAL:
            control.request_stop(RunStopped(f"stopped by a fatal error: {verdict.reason}", exc))
            return None
        if verdict.kind is ErrorKind.INVALID_OUTPUT:
            return 0.0 if invalid <= getattr(cfg.adapter, "json_retries", 0) else None
        try:
            delay = cfg.options.retry.delay(attempts, verdict, cfg.rng)
        except RetryHintTooLong as too_long:
            too_long.__cause__ = exc
            return too_long
        if delay is not None and verdict.kind is ErrorKind.RATE_LIMITED:
            # One worker's 429 holds back every dispatch, not just its own retry.
            cfg.limiter.pause_until(cfg.clock.now() + delay)
            self._server_pause = max(self._server_pause, cfg.clock.now() + delay)
            stats.rate_limit_wait += delay
            return 0.0
        return delay

    async def _admit(self, cost: Cost, wait: float | None = None,
                     reserved: Permit | None = None
                     ) -> tuple[Permit | None, int | None] | None:
        """Wait until both our limiter and the server's budget (as its headers tell) admit
        ``cost``, at the same instant; None if the run stopped meanwhile. ``wait``: the
        pacer already asked for this wait; ``reserved``: the limiter's reservation, made
        already (the caller tried the case of no wait inline).

        The pacer is asked only once the limiter admits, and the permit goes back while the
        pacer makes us wait: a grant held through a long 429 pause would be spent twice.
        """
        limiter, pacer, clock = self.cfg.limiter, self.cfg.pacer, self.cfg.clock
        control = self.control
        while True:
            if wait is not None:
                # Each answer re-syncs the budget, so the wait ends early when one arrives.
                with control.shown_wait(SERVER_BUDGET, clock.now() + wait):
                    if not await control.pause(control.sleep_or_change(wait)):
                        return None
            permit, reserved = reserved, None
            now = None
            if permit is not None or self._limited or not limiter.unrestricted():
                if permit is None:
                    permit = limiter.reserve(cost)
                now = clock.now()
                # Admitted at once (a limit that does not bind): no wait to show or await.
                admitted = not permit.provisional and permit.admit_at <= now
                if not admitted:
                    now = None  # the wait below takes time: the pacer reads the clock anew
                    reason = SERVER_429 if permit.admit_at <= self._server_pause else RATE_LIMIT
                    with control.shown_wait(reason, permit.admit_at):
                        admitted = await control.pause(limiter.wait_async(permit))
                if not admitted or control.stopping:
                    limiter.cancel(permit)
                    return None
            if pacer is None:
                return permit, None
            # Admitted at once, the limiter's instant is the pacer's too (one clock read).
            seq, wait = pacer.admit(cost, clock.now() if now is None else now)
            if seq is not None:
                return permit, seq
            if permit is not None:
                limiter.cancel(permit)

    async def _breaker_gate(self, wait: float | None) -> bool:
        """Wait until the breaker admits a call; ``wait``: its first answer (not 0)."""
        breaker, clock, control = self.cfg.breaker, self.cfg.clock, self.control
        assert breaker is not None
        while True:
            if wait == 0:
                return True
            if control.stopping:
                return False
            pending = clock.asleep(wait) if wait is not None else control.changed()
            until = clock.now() + wait if wait is not None else None
            with control.shown_wait(BREAKER, until):
                if not await control.pause(pending):
                    return False
            wait = breaker.admit()

    def _unfinished(
        self, index: int, item: Any, attempts: int, error: BaseException | None, key: str | None
    ) -> Outcome[Any]:
        if attempts:
            self.stats.retrying -= 1  # it was waiting to retry: it will not any more
        if attempts and error is not None:
            return Outcome(index, item, Status.FAILED, None, error, attempts, key=key)
        return self.ledger.not_attempted(index, item, self.control.stop_reason, key)


def _counted(cost: Cost, usage: Usage | None) -> Cost | None:
    """What the server counted for a call estimated at ``cost`` that reported ``usage``."""
    if usage is None:
        return None
    # Prompt-cache writes count against input limits too (Anthropic's ITPM).
    written = usage.cache_creation_input_tokens
    return cost.settled(usage.input_tokens + written, usage.output_tokens)


def _raised_on_thread(fut: asyncio.Future[Any] | None, exc: BaseException) -> bool:
    """``exc`` is what the pool's thread raised (and counted, see _pool.RunGate)."""
    return (fut is not None and fut.done() and not fut.cancelled()
            and fut.exception() is exc)
