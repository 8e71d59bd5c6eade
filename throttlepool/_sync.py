"""Sync facades over the async engine: a run through the bridge, Ctrl-C, and streaming.

The first Ctrl-C stops dispatch and drains the calls in flight (the run is recorded as
interrupted); a second one aborts at once. The handler is installed only in the main thread
and only for the run; the previous one is restored after it.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

from ._channel import OutcomeChannel, pump
from ._run_engine import RunEngine
from .bridge import Bridge
from .errors import RunStopped, StoreError
from .outcome import Outcome, RunStats

T = TypeVar("T")


class CtrlC:
    """Owns SIGINT for one run when in the main thread: first stop, second abort."""

    def __init__(self, engine: RunEngine, bridge: Bridge) -> None:
        self.engine = engine
        self.bridge = bridge
        self.interrupts = 0
        self._previous: Any = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.interrupts += 1
        if self.interrupts > 1:
            raise KeyboardInterrupt
        print("\nthrottlepool: stopping; waiting for calls in flight "
              "(Ctrl-C again to abort)", file=sys.stderr)
        engine = self.engine
        self.bridge.call_soon(
            lambda: engine.request_stop(RunStopped("interrupted"), interrupted=True))

    def install(self) -> None:
        """Take SIGINT (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:
            self._previous = None

    def restore(self) -> None:
        """Give SIGINT back to its previous handler (main thread only: a stream aborted from
        another thread gives it back when its consumer, on the main thread, stops)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def abort(self) -> None:
        """From another thread: abort the run at once (it is recorded as interrupted)."""
        if not self.engine.finished:
            self.bridge.call_soon(self.engine.abort)


def flush_quietly(engine: RunEngine) -> None:
    """Push the checkpoint's last rows out; the run raises a store error itself."""
    store = engine.ledger.store
    if store is not None:
        try:
            store.flush()
        except StoreError:
            pass  # the run raises it (or already did); do not mask its error here


def run_blocking(engine: RunEngine, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` (which drives ``engine``) through a bridge, with Ctrl-C handling."""
    bridge = Bridge()
    ctrl_c = CtrlC(engine, bridge)
    ctrl_c.install()
    try:
        return bridge.run(main)
    finally:
        flush_quietly(engine)
        ctrl_c.restore()


class StreamIterator(Iterator[Outcome[Any]]):
    """The consumer side of ``imap``/``as_completed``; starts the run on first ``next``."""

    def __init__(self, engine: RunEngine, channel: OutcomeChannel, owner: object = None) -> None:
        # The runner, when the caller keeps only this stream: its finaliser shuts the thread
        # pool the run's calls go to.
        self._owner = owner
        self._engine = engine
        self._channel = channel
        self._bridge = Bridge("throttlepool-imap")
        self._ctrl_c = CtrlC(engine, self._bridge)
        channel.on_space = lambda: self._bridge.call_soon(engine.notify_space)
        self._thread: threading.Thread | None = None

    @property
    def engine(self) -> RunEngine | None:
        """The run's engine, once started."""
        return self._engine if self._thread is not None else None

    @property
    def stats(self) -> RunStats | None:
        """The run's live statistics (None before the first ``next``)."""
        return self._engine.stats if self._thread is not None else None

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C stopped the run (calls in flight were drained)."""
        return self._engine.interrupted

    @property
    def stopped(self) -> BaseException | None:
        """Why dispatch stopped early (fatal error, interrupt, deadline), or None."""
        return self._engine.stop_reason

    @property
    def run_id(self) -> str | None:
        """The checkpoint's run id, when a store is used."""
        return self._engine.run_id

    def __next__(self) -> Outcome[Any]:
        if self._thread is None:
            self._ctrl_c.install()
            engine = self._engine
            self._thread = self._bridge.start(pump(engine, self._channel),
                                              after=lambda: flush_quietly(engine))
        try:
            return self._channel.get()  # type: ignore[no-any-return]
        except StopIteration:
            self._ctrl_c.restore()
            raise
        except BaseException:  # the run's error, or a second Ctrl-C while we wait
            self.abort()
            raise

    def abort(self, wait: float = 5.0) -> None:
        """Stop at once, without waiting for calls in flight (their answers are lost); the
        run is recorded as interrupted. For a consumer that is itself being aborted. Before
        the first ``next`` it makes the run, when iterated, abort before any call."""
        # Sent whether or not a run thread is seen: ``__next__`` on another thread sets
        # ``_thread`` only once that thread already runs calls (an abort that looked at it was
        # once lost), and a stream not yet started must not run once it is iterated. The loop
        # keeps the callback until it runs; the engine keeps an abort that comes before it.
        self._ctrl_c.abort()
        thread = self._bridge.thread  # set before the thread starts
        if thread is not None and thread.is_alive():
            thread.join(wait)  # the engine records the run's status on its way out
        self._ctrl_c.restore()

    def close(self) -> None:
        """Stop the run early; calls in flight finish and are checkpointed."""
        if self._thread is not None and self._thread.is_alive():
            engine = self._engine
            self._bridge.call_soon(
                lambda: engine.request_stop(RunStopped("the consumer stopped iterating")))
            while self._thread.is_alive():
                try:
                    self._channel.get()
                except BaseException:
                    break
            self._thread.join()
        self._ctrl_c.restore()

    def __del__(self) -> None:
        self._ctrl_c.restore()
        if self._thread is None:
            self._bridge.discard()
