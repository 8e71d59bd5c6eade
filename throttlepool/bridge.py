"""Sync-to-async bridges that never touch the caller's event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def _run_on_new_loop(coro: Coroutine[Any, Any, T]) -> T:
    # A private loop, never installed as the thread's current loop: the caller's loop
    # (or a legacy get_event_loop() loop) stays exactly as it was.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def in_running_loop() -> bool:
    """True when called from a thread whose event loop is running (Jupyter, async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop (Jupyter).

    Without a running loop it runs on a private loop in this thread; inside one it runs on a
    private loop in a helper thread and blocks until done. Exceptions propagate.
    """
    if not in_running_loop():
        return _run_on_new_loop(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = _run_on_new_loop(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="throttlepool-run_async", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


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
