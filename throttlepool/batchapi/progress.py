"""What batch mode reports: each batch as last polled, the run's progress after each poll,
and the stop reason of an interrupted run whose batches go on at the provider."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import RunStopped


class BatchesLeftRunning(RunStopped):
    """The run was interrupted; its batches go on at the provider. The message says how to
    collect their results (run again) or cancel them."""


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
