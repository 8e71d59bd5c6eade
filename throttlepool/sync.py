"""Sync facades over the async engine: a private loop per run, Ctrl-C handling, streaming."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

from .bridge import in_running_loop
from .channel import OutcomeChannel
from .engine import Engine
from .errors import RunStopped, StoreError
from .outcome import Outcome, RunStats

T = TypeVar("T")


class SyncDriver:
    """Runs a coroutine on a private loop; owns SIGINT for the run when in the main thread."""

    def __init__(self, engine_box: list[Engine],
                 loop_box: list[asyncio.AbstractEventLoop] | None = None) -> None:
        self.engine_box = engine_box
        self.loop_box = loop_box if loop_box is not None else []
        self.interrupts = 0

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.interrupts += 1
        if self.interrupts > 1 or not self.engine_box or not self.loop_box:
            raise KeyboardInterrupt
        print("\nthrottlepool: stopping; waiting for calls in flight "
              "(Ctrl-C again to abort)", file=sys.stderr)
        engine = self.engine_box[0]
        self.loop_box[0].call_soon_threadsafe(
            lambda: engine.request_stop(RunStopped("interrupted"), interrupted=True))

    def install(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None
        try:
            return signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:
            return None

    def run(self, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        previous = self.install()
        try:
            if in_running_loop():
                box: dict[str, Any] = {}

                def target() -> None:
                    try:
                        box["value"] = self.run_quietly(main)
                    except BaseException as exc:
                        box["error"] = exc

                thread = threading.Thread(target=target, name="throttlepool-run", daemon=True)
                thread.start()
                while thread.is_alive():
                    thread.join(0.1)  # short joins keep Ctrl-C responsive
                if "error" in box:
                    raise box["error"]
                return box["value"]  # type: ignore[no-any-return]
            return self.run_quietly(main)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def run_delivering_errors(self, main: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Thread target for streaming: errors reach the consumer through the channel."""
        try:
            self.run_quietly(main)
        except BaseException:  # already handed to the consumer; no second traceback
            pass

    def run_quietly(self, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``main()`` on a fresh loop that is never installed as the current loop."""
        loop = asyncio.new_event_loop()
        self.loop_box.append(loop)
        try:
            return loop.run_until_complete(main())
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            if self.engine_box and self.engine_box[0].cfg.store is not None:
                try:
                    self.engine_box[0].cfg.store.flush()
                except StoreError:
                    pass  # the run raises it (or already did); do not mask its error here
            loop.close()

    def abort(self) -> None:
        """From another thread: abort the run at once (it is recorded as interrupted)."""
        if not self.engine_box or not self.loop_box or self.engine_box[0].finished:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing to do
            self.loop_box[0].call_soon_threadsafe(self.engine_box[0].abort)


class StreamIterator(Iterator[Outcome[Any]]):
    """The consumer side of ``imap``/``as_completed``; starts the run on first ``next``."""

    def __init__(self, channel: OutcomeChannel, thread: threading.Thread,
                 driver: SyncDriver) -> None:
        self._channel = channel
        self._thread = thread
        self._driver = driver
        self._previous: Any = None
        self._started = False

    @property
    def engine(self) -> Engine | None:
        """The run's engine, once started."""
        return self._driver.engine_box[0] if self._driver.engine_box else None

    @property
    def stats(self) -> RunStats | None:
        """The run's live statistics (None before the first ``next``)."""
        return self.engine.stats if self.engine is not None else None

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C stopped the run (calls in flight were drained)."""
        return self.engine is not None and self.engine.interrupted

    @property
    def stopped(self) -> BaseException | None:
        """Why dispatch stopped early (fatal error, interrupt, deadline), or None."""
        return self.engine.stop_reason if self.engine is not None else None

    @property
    def run_id(self) -> str | None:
        """The checkpoint's run id, when a store is used."""
        return self.engine.run_id if self.engine is not None else None

    def __next__(self) -> Outcome[Any]:
        if not self._started:
            self._started = True
            self._previous = self._driver.install()
            self._thread.start()
        try:
            return self._channel.get()  # type: ignore[no-any-return]
        except StopIteration:
            self._restore()
            raise
        except BaseException:  # the run's error, or a second Ctrl-C while we wait
            self.abort()
            raise

    def abort(self, wait: float = 5.0) -> None:
        """Stop at once, without waiting for calls in flight (their answers are lost); the
        run is recorded as interrupted. For a consumer that is itself being aborted."""
        if self._started and self._thread.is_alive():
            self._driver.abort()
            self._thread.join(wait)  # the engine records the run's status on its way out
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def close(self) -> None:
        """Stop the run early; calls in flight finish and are checkpointed."""
        if self._started and self._thread.is_alive() and self._driver.engine_box:
            engine = self._driver.engine_box[0]
            loop = self._driver.loop_box[0]
            with contextlib.suppress(RuntimeError):  # the loop closed: the run is over
                loop.call_soon_threadsafe(
                    lambda: engine.request_stop(RunStopped("the consumer stopped iterating")))
            while self._thread.is_alive():
                try:
                    self._channel.get()
                except BaseException:
                    break
            self._thread.join()
        self._restore()

    def __del__(self) -> None:
        self._restore()
