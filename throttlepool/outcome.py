"""What a run produces: one :class:`Outcome` per item, gathered in a :class:`BatchResult`."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Status(enum.StrEnum):
    """Where an item ended up."""

    OK = "ok"
    FAILED = "failed"
    NOT_ATTEMPTED = "not_attempted"


class Source(enum.StrEnum):
    """Where an outcome's value came from."""

    CALL = "call"
    CHECKPOINT = "checkpoint"
    CACHE = "cache"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a call consumed, as the server reported them.

    The cache fields are Anthropic's (prompt caching), 0 where a provider reports none; its
    ``input_tokens`` counts only the tokens after the last cache breakpoint.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Outcome(Generic[T]):
    """An item's final value or error, with the attempts, time and cost (USD) it took."""

    index: int
    item: Any
    status: Status
    value: T | None = None
    error: BaseException | None = None
    attempts: int = 0
    latency: float = 0.0
    usage: Usage | None = None
    source: Source = Source.CALL
    key: str | None = None
    cost: float | None = None  # USD of its call(s); None: not priced or price unknown
    ttft: float | None = None  # seconds to a streamed answer's first token; None: not streamed
    # Unix time its last call ended (the run's engine, or the Dask worker that made it, sets
    # it; from the checkpoint, the time recorded there; from a cache, when it was taken)
    ended: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


@dataclass(slots=True)
class RunStats:
    """Counters of one run; the runner updates them, progress displays read them.

    ``waiting_for`` says what holds back the next call while one is awaited (``"rate
    limit"``, ``"server asked to wait (429)"``, ``"server rate budget"``, ``"circuit breaker
    open"``) and ``waiting_until`` when the earliest such wait ends, on the run's clock;
    ``limits`` are the limiter's (amount, period in seconds, unit) for estimates.
    """

    total: int | None = None
    done: int = 0
    failed: int = 0
    not_attempted: int = 0
    in_flight: int = 0
    queued: int = 0  # admitted calls waiting for a free thread (lookahead)
    retrying: int = 0
    calls: int = 0  # every call that reached the API, repeated ones included
    repeated_calls: int = 0  # calls whose answers were lost (a worker died): made again
    # calls an earlier session of the run made but never recorded (it was killed): made again
    repeated_after_resume: int = 0
    retries: int = 0
    rate_limited: int = 0
    rate_limit_wait: float = 0.0
    breaker_trips: int = 0
    cache_hits: int = 0
    from_checkpoint: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0  # of this session's calls, where their price is known
    cost_unknown: int = 0  # this session's answered calls whose price is unknown
    started: float = 0.0
    wall_time: float = 0.0
    # Live state for progress displays, not totals: the store does not record them.
    waiting_for: str | None = field(default=None, metadata={"live": True})
    waiting_until: float | None = field(default=None, metadata={"live": True})  # clock time
    limits: tuple[tuple[float, float, str], ...] = field(default=(), metadata={"live": True})

    @property
    def finished(self) -> int:
        """Items with a final outcome, successful or not."""
        return self.done + self.failed

    def as_dict(self) -> dict[str, Any]:
        """The run's totals by name (the live fields left out)."""
        return {name: getattr(self, name) for name, spec in self.__dataclass_fields__.items()
                if not spec.metadata.get("live")}


def repeated_calls_text(calls: int, items: int, repeated: int, after_resume: int = 0) -> str:
    """``" for 300 items; 22 repeated after a worker was lost"`` (and/or ``"; 4 repeated
    after a resume"``), to follow "322 calls" when calls were repeated (else nothing): the
    user pays for every call, so says each count."""
    if not repeated and not after_resume:
        return ""
    text = f" for {items} items"
    if repeated:
        text += f"; {repeated} repeated after a worker was lost"
    if after_resume:
        text += f"; {after_resume} repeated after a resume"
    return text


@dataclass
class BatchResult(Generic[T]):
    """Outcomes of a run, in input order."""

    outcomes: list[Outcome[T]]
    stats: RunStats = field(default_factory=RunStats)
    run_id: str | None = None
    stopped: BaseException | None = None
    interrupted: bool = False

    @property
    def results(self) -> list[T | None]:
        """Each item's value, or None where it failed; in input order."""
        return [o.value for o in self.outcomes]

    @property
    def errors(self) -> list[BaseException | None]:
        """Each item's error, or None where it succeeded; in input order."""
        return [o.error for o in self.outcomes]

    @property
    def success_count(self) -> int:
        return sum(1 for o in self.outcomes if o.status is Status.OK)

    @property
    def error_count(self) -> int:
        return len(self.outcomes) - self.success_count

    @property
    def all_succeeded(self) -> bool:
        return all(o.status is Status.OK for o in self.outcomes)

    def get_successful(self) -> list[T]:
        """The values of the items that succeeded, in input order."""
        return [o.value for o in self.outcomes if o.status is Status.OK]  # type: ignore[misc]

    def failed(self) -> list[Outcome[T]]:
        """Outcomes that did not succeed (failed or never attempted)."""
        return [o for o in self.outcomes if o.status is not Status.OK]

    def raise_first(self) -> None:
        """Raise the first error in input order, if any."""
        for o in self.outcomes:
            if o.error is not None:
                raise o.error

    def __len__(self) -> int:
        return len(self.outcomes)

    def __iter__(self) -> Iterator[Outcome[T]]:
        return iter(self.outcomes)

    def __getitem__(self, index: int) -> Outcome[T]:
        return self.outcomes[index]

    def summary(self) -> str:
        """One line for logs: counts, retries, 429s and throughput."""
        s = self.stats
        rate = s.finished / s.wall_time if s.wall_time > 0 else 0.0
        called = s.finished - s.from_checkpoint - s.cache_hits
        return (
            f"{self.success_count} ok, {self.error_count} failed of {len(self.outcomes)}; "
            f"{s.calls} calls"
            f"{repeated_calls_text(s.calls, called, s.repeated_calls, s.repeated_after_resume)}, "
            f"{s.retries} retries, {s.rate_limited} rate-limited; "
            f"{s.wall_time:.2f}s ({rate:.1f} items/s)"
        )


def values_or_raise(outcomes: Sequence[Outcome[T]]) -> list[T]:
    """Values in order; raises the first error in input order."""
    out: list[T] = []
    for o in outcomes:
        if o.error is not None:
            raise o.error
        out.append(o.value)  # type: ignore[arg-type]
    return out
