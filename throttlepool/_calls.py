"""How one attempt reaches the wrapped call: the run's settings and the thread hand-off."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from ._pacing import Pacer
from ._pacing_arrivals import CallTiming
from ._pool import LoopHandoff, RunGate, WorkerPool
from ._reachability import Reachability
from .adapters.base import Adapter, CallResult
from .breaker import CircuitBreaker
from .clock import Clock
from .cost import RunBudget
from .errors import CallTimeout
from .limiter import Permit, RateLimiter, counts_tokens
from .store.base import Cache, Store

if TYPE_CHECKING:  # options/ builds executors, which run the engine that imports this
    from .options import RunOptions

_thread_state = threading.local()
_NEVER = float("-inf")


@dataclass
class RunConfig:
    """One run's options (``options``: the run's own run name) and the objects the runner
    resolved from them, shared by its runs (limiter, pool, breaker, store...) or made for
    this one (``budget``: its ``max_cost`` gate; ``settings``: what the checkpoint records)."""

    options: RunOptions
    adapter: Adapter[Any]
    limiter: RateLimiter
    pool: WorkerPool
    clock: Clock
    rng: random.Random
    breaker: CircuitBreaker | None = None
    store: Store | None = None
    cache: Cache | None = None
    pacer: Pacer | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    budget: RunBudget | None = None  # max_cost: reserve before admission, settle after
    reachability: Reachability = field(default_factory=Reachability)  # one per run
    on_call: Callable[[int], None] | None = None  # an item's index, as its call is sent
    #: Calls are settled to their usage only under a token limit.
    token_limited: bool = field(init=False)
    #: The adapter does not stop a call at its timeout itself: the runner abandons it.
    runner_enforces_timeout: bool = field(init=False)

    def __post_init__(self) -> None:
        self.token_limited = counts_tokens(self.limiter.limits)
        self.runner_enforces_timeout = not self.adapter.enforces_timeout


class Dispatcher:
    """Runs attempts for one run on one event loop."""

    def __init__(self, cfg: RunConfig, handoff: LoopHandoff, gate: RunGate | None = None
                 ) -> None:
        self.cfg = cfg
        self.handoff = handoff
        #: Lookahead (see _pool.py): jobs may wait in the pool's queue; ``gate`` withdraws
        #: those that must not start any more.
        self.gate = gate
        self._pool_submit = partial(cfg.pool.submit_gated, gate)
        self._acall: Callable[[Any, float | None], Awaitable[CallResult[Any]]] | None = (
            cfg.adapter.acall if cfg.adapter.is_async else None)
        # Made once per run: a call pays for no attribute chains or bound method.
        self._stamped_call = _stamped_call(cfg.limiter, cfg.adapter.call)
        self._timed_call = _timed_call(cfg.clock, cfg.adapter.call)
        self._plain_call = cfg.adapter.call
        self._timeout = cfg.options.execution.timeout
        # A thread's call is awaited as it is, unless the runner must abandon it at timeout.
        self._abandons = self._timeout is not None and cfg.runner_enforces_timeout
        self._new_future = partial(asyncio.Future, loop=handoff.loop)  # no Python frame
        #: ``start(item, permit, sending, timing)`` starts one attempt on a pool thread and
        #: returns its future, when awaiting that future is all the attempt needs (every
        #: sync call's case: no coroutine, no frame of its own); else it returns None and
        #: the attempt needs :meth:`call` (an async function, a timeout the runner enforces).
        self.start: Callable[
            [Any, Permit | None, Callable[[], None] | None, CallTiming | None],
            asyncio.Future[CallResult[Any]] | None] = (
                self._submit if self._acall is None and not self._abandons else _needs_call)

    async def call(self, item: Any, permit: Permit | None = None,
                   sending: Callable[[], None] | None = None,
                   timing: CallTiming | None = None) -> CallResult[Any]:
        """One attempt: on the loop for an async function, else on a pool thread;
        ``sending`` is called just before the adapter sends it (the run's call journal);
        a pool thread fills in ``timing`` (the pacer's learned log bounds the call by it).
        The caller tells ``cfg.reachability`` that an answer came."""
        if self._acall is not None:  # an async function: await it on the loop, no thread
            return await self._call_async(item, permit, sending)
        fut = self._submit(item, permit, sending, timing)
        if not self._abandons:
            return await fut
        timeout = self._timeout
        assert timeout is not None
        # At the timeout, one timer cancels the thread's future, as asyncio.wait_for would,
        # without wait_for's own future, callbacks and extra loop steps on every call.
        timer = self.handoff.loop.call_later(timeout, fut.cancel)
        try:
            return await fut
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not fut.cancelled() or (task is not None and task.cancelling()):
                # The function raised it, or the attempt itself is cancelled (an abort):
                # not a timeout.
                raise
            self.cfg.pool.abandon(fut)
            raise CallTimeout(f"call did not return within {timeout:g}s") from None
        finally:
            timer.cancel()

    def _submit(self, item: Any, permit: Permit | None, sending: Callable[[], None] | None,
                timing: CallTiming | None) -> asyncio.Future[CallResult[Any]]:
        submit, handoff, timeout = self._pool_submit, self.handoff, self._timeout
        fut: asyncio.Future[CallResult[Any]] = self._new_future()
        if permit is None and timing is not None:
            submit(handoff, fut, self._timed_call, timing, item, timeout, sending)
        elif permit is None and sending is None:
            submit(handoff, fut, self._plain_call, item, timeout)
        elif permit is None:
            submit(handoff, fut, _sent, sending, self._plain_call, item, timeout)
        else:
            submit(handoff, fut, self._stamped_call, permit, item, timeout, sending, timing)
        return fut

    async def _awaited(self, item: Any, sending: Callable[[], None] | None) -> CallResult[Any]:
        assert self._acall is not None
        timeout = self._timeout
        if sending is not None:
            sending()
        coro = self._acall(item, timeout)
        if timeout is None:
            return await coro
        try:
            return await asyncio.wait_for(coro, timeout)
        except TimeoutError:
            raise CallTimeout(f"call did not return within {timeout:g}s") from None

    async def _call_async(self, item: Any, permit: Permit | None,
                          sending: Callable[[], None] | None) -> CallResult[Any]:
        if permit is None:
            return await self._awaited(item, sending)
        # An awaited request leaves only when the loop gets to it, behind every other
        # coroutine and the SDK's own work, so its start cannot be observed as a thread's
        # can: it counts from its answer, when the server has surely counted it.
        limiter = self.cfg.limiter
        started = limiter.call_started(permit)
        try:
            return await self._awaited(item, sending)
        finally:
            limiter.call_ended(permit, started, first_on_thread=False)
            limiter.restamp(permit)


def _needs_call(item: Any, permit: Permit | None, sending: Callable[[], None] | None,
                timing: CallTiming | None) -> None:
    return None  # Dispatcher.start: this attempt is awaited through Dispatcher.call


def _sent(sending: Callable[[], None] | None,
          call: Callable[[Any, float | None], CallResult[Any]], item: Any,
          timeout: float | None) -> CallResult[Any]:
    # On the pool thread, so a call waiting for a thread is not yet counted as sent.
    if sending is not None:
        sending()
    return call(item, timeout)


def _stamped_call(
    limiter: RateLimiter, call: Callable[[Any, float | None], CallResult[Any]],
) -> Callable[[Permit, Any, float | None, Callable[[], None] | None, CallTiming | None],
              CallResult[Any]]:
    """The worker thread's side of a limited call: ``call`` stamped by ``limiter`` (and
    timed for the pacer when a ``timing`` is given)."""
    started_at, ended, state = limiter.call_started, limiter.call_ended, _thread_state
    now = limiter.clock.now

    def stamped(permit: Permit, item: Any, timeout: float | None,
                sending: Callable[[], None] | None, timing: CallTiming | None
                ) -> CallResult[Any]:
        # On the worker thread: the admission counts from when the call really starts, not
        # from when it was granted; a busy machine can put tens of ms between the two. A
        # thread's first call may also open a connection or initialise the SDK before the
        # server sees it; the limiter learns from its duration how late that may have been.
        first_on_thread = not getattr(state, "warm", False)
        # A job may have waited in the pool's queue for this thread (lookahead): that wait
        # is not hand-off delay, so the limiter counts it from when the thread was free.
        started = started_at(permit, first_on_thread=first_on_thread,
                             ready=getattr(state, "free_at", _NEVER))
        try:
            if sending is not None:
                sending()
            return call(item, timeout)
        finally:
            if first_on_thread:
                state.warm = True
            if timing is not None:
                timing.started, timing.ended = started, now()
                timing.first_on_thread = first_on_thread
            ended(permit, started, first_on_thread=first_on_thread)
            state.free_at = now()
    return stamped


def _timed_call(
    clock: Clock, call: Callable[[Any, float | None], CallResult[Any]],
) -> Callable[[CallTiming, Any, float | None, Callable[[], None] | None], CallResult[Any]]:
    """The worker thread's side of a call no limiter stamps: ``call`` timed for the pacer,
    as a limited call is stamped (its start on this thread, its answer, whether it is the
    thread's first: a first call may open a connection before the server sees it)."""
    now, state = clock.now, _thread_state

    def timed(timing: CallTiming, item: Any, timeout: float | None,
              sending: Callable[[], None] | None) -> CallResult[Any]:
        timing.first_on_thread = not getattr(state, "warm", False)
        timing.started = now()
        try:
            if sending is not None:
                sending()
            return call(item, timeout)
        finally:
            timing.ended = now()
            state.warm = True
    return timed
