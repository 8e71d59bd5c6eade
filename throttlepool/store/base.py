"""The store seam: where a run's outcomes are checkpointed so a crash loses nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from ..outcome import Outcome, RunStats


@runtime_checkable
class Store(Protocol):
    """Persists runs and their item outcomes. The runner is its only caller.

    ``record`` is called from the runner's event loop for every final outcome and must not
    block on disk: implementations queue it for a writer thread and group-commit.
    """

    def begin_run(self, name: str | None, settings: Mapping[str, Any]) -> str:
        """Create the run, or reopen the run called ``name``; returns its run id."""
        ...

    def prior(self, run_id: str, index: int, key: str) -> Outcome[Any] | None:
        """The outcome recorded for item ``index`` of this run, if any.

        Raises :class:`~throttlepool.errors.CheckpointMismatch` when ``index`` was recorded
        with a different ``key`` (the input changed under the same run name).
        """
        ...

    def record(self, run_id: str, outcome: Outcome[Any]) -> None:
        """Queue an item's final outcome (``outcome.key`` is set) for a durable write."""
        ...

    def finish_run(self, run_id: str, stats: RunStats, status: str,
                   reason: str | None = None) -> None:
        """Mark the run finished (``completed``, ``stopped``, ``interrupted``, ``failed``),
        store totals and, unless completed, ``reason``: why (optional for older stores)."""
        ...

    def flush(self) -> None:
        """Block until every recorded outcome is committed."""
        ...

    def close(self) -> None:
        """Flush and release the database."""
        ...


@runtime_checkable
class SpendRecords(Protocol):
    """A store that can say what a run's recorded outcomes cost (a budget resumes from it)."""

    def recorded_cost(self, run_id: str) -> tuple[float, int]:
        """``(USD, items whose cost is unknown)`` of the run's recorded outcomes."""
        ...


@runtime_checkable
class Cache(Protocol):
    """Response cache keyed by item key; a hit costs no call and no rate-limit budget."""

    def get(self, key: str) -> tuple[bool, Any]:
        """``(True, value)`` on a fresh hit, ``(False, None)`` otherwise."""
        ...

    def put(self, key: str, value: Any) -> None:
        """Remember a successful value under ``key``."""
        ...
