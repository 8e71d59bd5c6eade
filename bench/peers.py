"""The contenders: one function each, all wrapping the same openai sync client call.

Every contender gets the same :class:`Ctx`: a fresh ``openai.OpenAI`` client (SDK defaults:
``max_retries=2``, which honour ``retry-after``), the same items, the same concurrency and, when
the workload says the client knows it, the server's limit. Each one is configured the way its
own documentation recommends for that limit; where it has no way to express the limit it
returns :data:`NOT_CONFIGURABLE` with the reason, and the report shows that row as such.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import openai

MODEL = "gpt-4o-mini"
API_KEY = "sk-bench-not-a-real-key"

Result = str | BaseException


class NotConfigurable(Exception):
    """The contender has no documented way to express this workload's limit."""


@dataclass(frozen=True)
class Known:
    """A limit the client is told about: per ``window`` seconds, requests or tokens."""

    window: float
    requests: int | None = None
    tokens: int | None = None
    reserve: int = 1  # tokens one request reserves (prompt estimate + max_tokens)

    def requests_per_second(self) -> float:
        """The request rate a requests-only limiter should use (tokens turned into requests)."""
        if self.requests is not None:
            return self.requests / self.window
        assert self.tokens is not None
        return self.tokens / self.reserve / self.window


@dataclass
class Ctx:
    """What one contender run gets."""

    base_url: str
    items: list[str]
    concurrency: int
    max_tokens: int
    timeout: float
    known: Known | None
    t0: float = 0.0
    stamps: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # contender's own counters
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self) -> openai.OpenAI:
        """A fresh client: own connection pool, SDK default retries, the workload's timeout."""
        return openai.OpenAI(base_url=self.base_url, api_key=API_KEY, timeout=self.timeout)

    def stamp(self) -> None:
        """Record one completion (success or final failure) for the completions-over-time plot."""
        now = time.perf_counter()
        with self._lock:
            self.stamps.append(now)

    def caller(self) -> Callable[[str], Result]:
        """``call(prompt)``: the legacy code's one line, errors returned rather than raised."""
        client = self.client()
        max_tokens = self.max_tokens

        def call(prompt: str) -> Result:
            try:
                resp = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": prompt}],
                    max_tokens=max_tokens,
                )
                value: Result = resp.choices[0].message.content or ""
            except Exception as exc:  # one failed item never stops the others
                value = exc
            self.stamp()
            return value

        return call


def sequential(ctx: Ctx) -> list[Result]:
    """The legacy loop: ``[call(x) for x in items]``."""
    call = ctx.caller()
    return [call(x) for x in ctx.items]


def thread_pool(ctx: Ctx) -> list[Result]:
    """``ThreadPoolExecutor(max_workers=C).map``; limits left to the SDK's own 429 retries."""
    call = ctx.caller()
    with ThreadPoolExecutor(max_workers=ctx.concurrency) as pool:
        return list(pool.map(call, ctx.items))


def tqdm_thread_map(ctx: Ctx) -> list[Result]:
    """tqdm's ``thread_map`` (bar disabled so it does not write to the report's terminal)."""
    from tqdm.contrib.concurrent import thread_map

    call = ctx.caller()
    return list(thread_map(call, ctx.items, max_workers=ctx.concurrency, disable=True))


def pyrate_threads(ctx: Ctx) -> list[Result]:
    """pyrate-limiter's blocking ``try_acquire`` in front of a thread pool (README quickstart).

    The default in-memory bucket is an exact sliding-window log. A token limit is expressed
    with ``weight=`` (the request's reservation), as its README's "Weight" section shows.
    """
    from pyrate_limiter import Duration, Limiter, Rate

    known = ctx.known
    if known is None:
        raise NotConfigurable("pyrate-limiter needs the rate; the limit is unknown to the client")
    call = ctx.caller()
    period = int(Duration.SECOND * known.window)
    if known.tokens is not None:
        limiter, weight = Limiter(Rate(known.tokens, period)), known.reserve
    else:
        assert known.requests is not None
        limiter, weight = Limiter(Rate(known.requests, period)), 1

    def limited(prompt: str) -> Result:
        limiter.try_acquire("openai", weight=weight)
        return call(prompt)

    with ThreadPoolExecutor(max_workers=ctx.concurrency) as pool:
        return list(pool.map(limited, ctx.items))


def aiometer_to_thread(ctx: Ctx) -> list[Result]:
    """``aiometer.run_all`` of ``asyncio.to_thread`` calls, ``max_at_once`` and ``max_per_second``.

    ``asyncio.to_thread`` runs on the loop's default executor, which asyncio caps at
    ``min(32, cpu + 4)`` threads (6 on a 2-core machine); to give aiometer the same concurrency
    as every other contender the loop gets a default executor of ``C`` threads.
    """
    import aiometer

    call = ctx.caller()
    known = ctx.known
    if known is None:
        raise NotConfigurable("aiometer's max_per_second needs the rate; the limit is unknown")
    rate = known.requests_per_second()

    async def main() -> list[Result]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=ctx.concurrency))
        jobs = [functools.partial(asyncio.to_thread, call, x) for x in ctx.items]
        return await aiometer.run_all(jobs, max_at_once=ctx.concurrency, max_per_second=rate)

    return asyncio.run(main())


def langchain_batch(ctx: Ctx) -> list[Result]:
    """``RunnableLambda(call).batch(items, config={"max_concurrency": C})``.

    With a known limit, an ``InMemoryRateLimiter(requests_per_second=...)`` (default
    ``max_bucket_size=1``, "used to prevent bursts") is acquired before each call, as a chat
    model's ``rate_limiter=`` does. It counts requests only, so a token limit is turned into
    requests per second with each request's reservation.
    """
    from langchain_core.rate_limiters import InMemoryRateLimiter
    from langchain_core.runnables import RunnableLambda

    call = ctx.caller()
    known = ctx.known
    if known is None:
        raise NotConfigurable("InMemoryRateLimiter needs requests_per_second; limit unknown")
    limiter = InMemoryRateLimiter(requests_per_second=known.requests_per_second(),
                                  check_every_n_seconds=0.1)

    def fn(prompt: str) -> Result:
        limiter.acquire()
        return call(prompt)

    runnable: Any = RunnableLambda(fn)
    out: list[Result] = runnable.batch(ctx.items, config={"max_concurrency": ctx.concurrency},
                                       return_exceptions=True)
    return out


def throttlepool_runner(ctx: Ctx) -> list[Result]:
    """``ThreadedBatchRunner(OpenAIAdapter(client, ...))``: the limit when known, else adaptive."""
    from throttlepool import ThreadedBatchRunner
    from throttlepool.adapters import OpenAIAdapter

    adapter = OpenAIAdapter(ctx.client(), model=MODEL, extract="text", max_tokens=ctx.max_tokens)
    limits: list[str] = []
    known = ctx.known
    if known is not None and known.requests is not None:
        limits.append(f"{known.requests}/{known.window:g}s")
    if known is not None and known.tokens is not None:
        limits.append(f"{known.tokens} tokens/{known.window:g}s")
    runner: ThreadedBatchRunner[str] = ThreadedBatchRunner(
        adapter, batch_size=ctx.concurrency, limits=limits or None, timeout=ctx.timeout,
        retries=5, progress=lambda stats: ctx.stamp(),
    )
    with runner:
        result = runner.run(ctx.items)
    st = result.stats
    ctx.extra = {"attempts": st.calls, "retries": st.retries, "rate_limited": st.rate_limited,
                 "rate_limit_wait": st.rate_limit_wait}
    return [v if e is None else e for v, e in zip(result.results, result.errors, strict=True)]


Contender = Callable[[Ctx], list[Result]]

CONTENDERS: dict[str, Contender] = {
    "sequential": sequential,
    "ThreadPoolExecutor": thread_pool,
    "tqdm thread_map": tqdm_thread_map,
    "pyrate-limiter + threads": pyrate_threads,
    "aiometer + to_thread": aiometer_to_thread,
    "langchain batch": langchain_batch,
    "throttlepool": throttlepool_runner,
}
