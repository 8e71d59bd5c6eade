"""The one way sync code runs the async core: a private loop that never touches the caller's.

:class:`Bridge` owns one event loop for one run. It runs a coroutine to completion in the
calling thread, or, when that thread's own loop is running (Jupyter, async code), in a helper
thread while the caller waits; ``start`` runs it in a helper thread for streaming. The loop is
never installed as any thread's current loop, so the caller's loop (or a legacy
``get_event_loop()`` loop) stays exactly as it was. ``call_soon`` reaches the loop from any
thread (Ctrl-C, a consumer closing a stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def in_running_loop() -> bool:
    """True when called from a thread whose event loop is running (Jupyter, async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Bridge:
    """A private event loop for one run, driven from sync code."""

    def __init__(self, name: str = "throttlepool-run") -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion and return its value (or raise its error)."""
        if not in_running_loop():
            return self._run_here(coro)
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = self._run_here(coro)
            except BaseException as exc:
                box["error"] = exc

        thread = self.start_thread(target)
        while thread.is_alive():
            thread.join(0.1)  # short joins keep Ctrl-C responsive
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    def start(self, coro: Coroutine[Any, Any, Any], after: Callable[[], None] | None = None
              ) -> threading.Thread:
        """Run ``coro`` in a helper thread, then ``after()``; the coroutine delivers its own
        errors (to a stream's consumer), so they are not raised again here."""

        def target() -> None:
            try:
                self._run_here(coro)
            except BaseException:  # already handed to the consumer; no second traceback
                pass
            finally:
                if after is not None:
                    after()

        return self.start_thread(target)

    def start_thread(self, target: Callable[[], None]) -> threading.Thread:
        """Start the daemon thread that will run this bridge's loop."""
        self._thread = threading.Thread(target=target, name=self.name, daemon=True)
        self._thread.start()
        return self._thread

    @property
    def thread(self) -> threading.Thread | None:
        """The helper thread, when the loop runs in one."""
        return self._thread

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Have ``fn()`` run on the loop, from any thread; nothing once the loop closed."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn)

    def discard(self) -> None:
        """Close the loop of a bridge that never ran (a stream never iterated)."""
        if self._thread is None and not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()

    def _run_here(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self.loop
        try:
            return loop.run_until_complete(coro)
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop (Jupyter).

    Without a running loop it runs on a private loop in this thread; inside one it runs on a
    private loop in a helper thread and blocks until done. Exceptions propagate.
    """
    return Bridge("throttlepool-run_async").run(coro)


async def gather_with_concurrency(
    aws: Iterable[Awaitable[T]], max_concurrency: int, *, return_exceptions: bool = False
) -> list[T | BaseException]:
    """``asyncio.gather`` with at most ``max_concurrency`` awaitables running at once.

    Awaitables are started lazily, so a generator of coroutines is never all in memory.
    Results come back in input order.
    """
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    source = iter(enumerate(aws))
    results: dict[int, T | BaseException] = {}
    failure: list[BaseException] = []

    async def worker() -> None:
        for index, aw in source:
            if failure:
                if asyncio.iscoroutine(aw):
                    aw.close()
                continue
            try:
                results[index] = await aw
            except Exception as exc:
                if not return_exceptions:
                    failure.append(exc)
                    continue
                results[index] = exc

    await asyncio.gather(*(worker() for _ in range(max_concurrency)))
    if failure:
        raise failure[0]
    return [results[i] for i in range(len(results))]
