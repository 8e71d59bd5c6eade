"""Retry policy: attempts, full-jitter exponential backoff, and server hints that win.

:class:`Retry` is pure (it computes delays from a random source it is given); used as a
decorator it also retries plain sync and async functions on its own.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from .classify import Classifier, ErrorKind, Verdict, default_classifier
from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigError, RetryHintTooLong

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Retry:
    """How many attempts an item gets and how long to wait between them.

    ``attempts`` counts every try, the first included. Without a server hint the wait before
    retry n (1-based) is uniform in ``[0, min(cap, base * multiplier ** (n - 1))]`` (full
    jitter). A hint (Retry-After, retryDelay) replaces the backoff, plus up to ``hint_jitter``
    of itself so paused workers do not all return in the same instant; a hint above
    ``max_hint`` fails the item instead of sleeping for hours.
    """

    attempts: int = 4
    base: float = 0.5
    cap: float = 30.0
    multiplier: float = 2.0
    max_hint: float = 120.0
    hint_jitter: float = 0.1
    classifier: Classifier | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"attempts must be at least 1, got {self.attempts}")
        if self.base < 0 or self.cap < 0 or self.multiplier < 1:
            raise ConfigError("backoff needs base >= 0, cap >= 0 and multiplier >= 1")
        if self.max_hint < 0 or not 0 <= self.hint_jitter <= 1:
            raise ConfigError("max_hint must be >= 0 and hint_jitter in [0, 1]")

    @classmethod
    def of(cls, retries: int | Retry | None) -> Retry:
        """``retries=N`` (N retries after the first attempt), a Retry, or None for no retries."""
        if isinstance(retries, Retry):
            return retries
        if retries is None:
            return cls(attempts=1)
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        return cls(attempts=retries + 1)

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff before retry ``retry_number`` (1-based)."""
        ceiling = min(self.cap, self.base * self.multiplier ** max(0, retry_number - 1))
        return rng.uniform(0.0, ceiling)

    def delay(self, attempt: int, verdict: Verdict, rng: random.Random) -> float | None:
        """Seconds to wait after failed attempt ``attempt`` (1-based), or None to give up.

        Raises :class:`RetryHintTooLong` when the server's hint exceeds ``max_hint``.
        """
        if not verdict.retryable or attempt >= self.attempts:
            return None
        hint = verdict.retry_after
        if hint is not None:
            if hint > self.max_hint:
                raise RetryHintTooLong(hint, self.max_hint)
            return hint + rng.uniform(0.0, hint * self.hint_jitter)
        return self.backoff(attempt, rng)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function so it retries by this policy."""
        return retrying(self)(fn)


def retrying(
    policy: Retry | None = None,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator factory: retry a sync or async function by ``policy`` on ``clock``."""
    policy = policy or Retry()
    classify = policy.classifier or default_classifier
    clk = clock or SYSTEM_CLOCK
    random_source = rng or random.Random()

    def next_delay(attempt: int, exc: BaseException) -> float | None:
        verdict = classify(exc)
        if verdict.kind is ErrorKind.FATAL:
            return None
        try:
            return policy.delay(attempt, verdict, random_source)
        except RetryHintTooLong as too_long:
            too_long.__cause__ = exc
            raise too_long from exc

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def arun(*args: P.args, **kwargs: P.kwargs) -> Any:
                attempt = 1
                while True:
                    try:
                        return await afn(*args, **kwargs)
                    except Exception as exc:
                        wait = next_delay(attempt, exc)
                        if wait is None:
                            raise
                    await clk.asleep(wait)
                    attempt += 1

            return cast(Callable[P, R], arun)

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            attempt = 1
            while True:
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    wait = next_delay(attempt, exc)
                    if wait is None:
                        raise
                clk.sleep(wait)
                attempt += 1

        return run

    return decorate


def AsyncRetry(max_retries: int = 3, base_delay: float = 1.0, max_delay: float = 30.0) -> Retry:
    """Seed 001's ``@AsyncRetry(max_retries=3, base_delay=1.0)``; works on sync functions too."""
    return Retry(attempts=max_retries + 1, base=base_delay, cap=max_delay)
