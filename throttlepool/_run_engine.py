"""What the sync facades, the streams and ``arun`` need of whatever drives a run.

The local :class:`~throttlepool._engine.Engine` and the Dask driver
(:class:`~throttlepool.distributed.driver.DaskEngine`) both satisfy :class:`RunEngine`, so
``run``, ``arun``, ``imap``, ``aimap`` and ``as_completed`` (bridge, Ctrl-C, bounded
channel) work the same on threads or a cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._ledger import RunLedger
    from .outcome import RunStats


class RunEngine(Protocol):
    """One run of items, driven by ``await run()`` on some event loop."""

    @property
    def ledger(self) -> RunLedger:
        """The run's statistics, checkpoint rows and display."""

    @property
    def stats(self) -> RunStats:
        """The run's live statistics."""

    @property
    def run_id(self) -> str | None:
        """The checkpoint's run id, once the run began (with a store)."""

    @property
    def stop_reason(self) -> BaseException | None:
        """Why dispatch stopped early, or None."""

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C (or an abort) stopped the run."""

    @property
    def finished(self) -> bool:
        """True once the run's ending is recorded."""

    def request_stop(self, reason: BaseException, *, interrupted: bool = False) -> None:
        """Stop dispatching; calls in flight finish and are delivered. Loop thread only."""

    def abort(self) -> None:
        """Stop now without waiting for calls in flight. Loop thread only."""

    def notify_space(self) -> None:
        """The consumer took outcomes; dispatch held back by a full output may go on."""

    async def run(self) -> RunStats:
        """Drive every item to an outcome (or stop); the run's statistics."""
