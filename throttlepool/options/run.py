"""RunOptions: the value objects of one run together, built from objects or shorthands."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict, Unpack

from .._executors import Executor
from ..clock import Clock
from ..errors import ConfigError
from ..limiter import LimitSpec, RateLimiter
from ..progress import ProgressSpec
from ..retry import Retry
from .values import BreakerSpec, Budget, Checkpoint, Execution, Limits, field_names

#: Which value object takes each keyword (``limits`` is special: the object or its specs).
GROUPS: dict[str, type] = {"limits": Limits, "checkpoint": Checkpoint,
                           "execution": Execution, "budget": Budget}
_OWNER: dict[str, str] = {name: group for group, cls in GROUPS.items()
                          for name in field_names(cls)}
_OWNER["limits"] = "limits"  # limits=[...] is Limits.limits; limits=Limits(...) the object


class RunKwargs(TypedDict, total=False):
    """The keywords of ``ThreadedBatchRunner(fn, **options)``, ``generate_batch`` and
    ``batchable``: the value objects, or any of their fields as a shorthand (a shorthand
    given with its object overrides that field). Each field's meaning and default is its
    object's; this only lets type checkers and IDEs see the names (a test keeps the two in
    step)."""

    limits: Limits | Iterable[LimitSpec] | LimitSpec | None
    retry: Retry | None
    checkpoint: Checkpoint
    execution: Execution
    budget: Budget
    # Limits
    rpm: float | None
    tpm: float | None
    rps: float | None
    itpm: float | None
    otpm: float | None
    safety: float
    margin: float | None
    limiter: RateLimiter | None
    limiter_url: str | None
    limiter_name: str
    # Retry
    retries: int | Retry | None
    # Checkpoint
    store: Any
    run_name: str | None
    retry_failed: bool
    cache: Any
    cache_ttl: float | None
    # Execution
    batch_size: int
    timeout: float | None
    deadline: float | None
    breaker: BreakerSpec
    executor: str | Executor
    scheduler: Any
    progress: ProgressSpec
    desc: str
    seed: int | None
    window: int | None
    adaptive: bool | None
    clock: Clock | None
    # Budget
    max_cost: float | None
    price_in: float | None
    price_out: float | None
    mode: str


@dataclass(frozen=True)
class RunOptions:
    """Every option of a run: ``limits``, ``retry``, ``checkpoint``, ``execution``, ``budget``.

    Build it from the objects, from the everyday shorthands, or both (a shorthand then
    overrides that field of the object given with it)::

        RunOptions.from_kwargs(batch_size=16, rpm=500, retries=5, store="runs.db")
        RunOptions.from_kwargs(limits=Limits(rpm=500, safety=0.9), timeout=30)
    """

    limits: Limits = field(default_factory=Limits)
    retry: Retry = field(default_factory=Retry)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    execution: Execution = field(default_factory=Execution)
    budget: Budget = field(default_factory=Budget)

    @classmethod
    def from_kwargs(cls, **options: Unpack[RunKwargs]) -> RunOptions:
        """Objects and shorthands as ``ThreadedBatchRunner(fn, **options)`` takes them."""
        return cls().updated(**options)

    def updated(self, **options: Unpack[RunKwargs]) -> RunOptions:
        """These options with some replaced (objects or shorthands, as ``from_kwargs``)."""
        objects: dict[str, Any] = {}
        fields_of: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
        retries: Any = _UNSET
        for name, value in options.items():
            if name in GROUPS and isinstance(value, GROUPS[name]):
                objects[name] = value
            elif name == "retry":
                if value is not None and not isinstance(value, Retry):
                    raise ConfigError(f"retry: expected a Retry, got {value!r}")
                objects["retry"] = value
            elif name == "retries":
                retries = value
            elif name in _OWNER:
                fields_of[_OWNER[name]][name] = value
            elif name in GROUPS:  # the group's name, given something else than its object
                raise ConfigError(
                    f"{name}: expected a {GROUPS[name].__name__} object, got {value!r}"
                    f" (or give its fields as keywords: {', '.join(field_names(GROUPS[name]))})")
            else:
                raise ConfigError(_unknown(name))
        retry = objects.pop("retry", None) or (
            self.retry if retries is _UNSET else Retry.of(retries))
        groups = {group: objects.get(group, getattr(self, group)) for group in GROUPS}
        for group, changes in fields_of.items():
            if changes:
                groups[group] = replace(groups[group], **changes)
        return RunOptions(retry=retry, **groups)

    def for_workers(self) -> RunOptions:
        """What travels to the workers of a distributed run: the limits (shared through
        ``limiter_url``, never a local limiter), the retry policy, the per-call settings; not
        the checkpoint, the display, the executor, a clock or the run's deadline, which stay
        with the driver (a deadline on a worker would restart with each chunk)."""
        execution = replace(self.execution, progress=False, executor="threads",
                            scheduler=None, clock=None, deadline=None)
        return RunOptions(replace(self.limits, limiter=None), self.retry, Checkpoint(),
                          execution, self.budget)

    def runner_kwargs(self) -> RunKwargs:
        """These options as keywords: ``ThreadedBatchRunner(fn, **options.runner_kwargs())``
        (the objects themselves, so nothing is copied field by field)."""
        return RunKwargs(limits=self.limits, retry=self.retry, checkpoint=self.checkpoint,
                         execution=self.execution, budget=self.budget)


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def known_options() -> tuple[str, ...]:
    """Every keyword ``from_kwargs`` takes."""
    return tuple(sorted({*_OWNER, *GROUPS, "retry", "retries"}))


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, known_options(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown option {name!r}{hint}"
