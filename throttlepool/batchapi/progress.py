"""What batch mode reports: each batch as last polled, the run's progress after each poll,
and the stop reason of an interrupted run whose batches go on at the provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import RunStopped


class BatchesLeftRunning(RunStopped):
    """The run was interrupted; its batches go on at the provider. The message says how to
    collect their results (run again) or cancel them. ``at_provider`` maps each item
    submitted and not answered yet to the id of the batch holding it (empty when the
    interruption came before any batch was created)."""

    def __init__(self, reason: str, at_provider: Mapping[int, str] | None = None) -> None:
        super().__init__(reason)
        self.at_provider: dict[int, str] = dict(at_provider or {})

    @property
    def batch_ids(self) -> list[str]:
        """The batches left running, in the order they were created."""
        return list(dict.fromkeys(self.at_provider.values()))


@dataclass(frozen=True, slots=True)
class BatchView:
    """One provider batch as last polled."""

    chunk: int
    batch_id: str | None
    state: str  # the journal's: intent, uploaded, creating, submitted, done
    status: str | None  # the provider's: validating, in_progress, ended, completed, ...
    total: int
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """What a progress display shows after each poll: batches, items, time waiting."""

    batches: list[BatchView]
    total: int
    done: int
    failed: int
    waiting: float  # seconds since this session started
    note: str | None = None  # a transient problem being retried, if any
    extra: dict[str, Any] = field(default_factory=dict)
    #: USD this session's answers cost, at the batch price (None: none priced yet).
    cost: float | None = None
    #: USD the whole input will have cost this session: ``cost`` plus the items not
    #: answered yet, at the mean cost of the answers so far or, before any, at their
    #: estimates with each request's max output tokens (as ``max_cost`` reserves them: an
    #: upper bound, ``projected_is_bound``). None when the price is unknown.
    projected_cost: float | None = None
    projected_is_bound: bool = False
