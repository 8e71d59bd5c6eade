"""Crash-test worker: run N items against a slow function with a checkpoint, until killed.

Usage: python tests/crash_worker.py DB CALL_LOG N [--batch-size B] [--standin]

Every call appends its index to CALL_LOG (O_APPEND, one write per call) *before* doing its
work, so the log counts every call that was started, including those a ``kill -9`` cuts off.
The store uses small groups so the documented bound (batch_size + max_pending) is tight.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throttlepool.outcome import Outcome, RunStats, Status
from throttlepool.store import SQLiteStore, item_key

RUN_NAME = "crash-test"
GROUP_SIZE = 16
MAX_PENDING = 64


def make_fn(log_path: str) -> Any:
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def slow(item: int) -> dict[str, int]:
        os.write(fd, f"{item}\n".encode())
        time.sleep(0.001 + (item % 3) * 0.0005)
        return {"item": item, "square": item * item}

    slow.__qualname__ = "crash_worker.slow"
    return slow


def run_with_runner(fn: Any, store: SQLiteStore, n: int, batch_size: int) -> int:
    from throttlepool.runner import ThreadedBatchRunner

    runner = ThreadedBatchRunner(fn, batch_size=batch_size, store=store, run_name=RUN_NAME,
                                 retries=0)
    result = runner.run(range(n))
    return 0 if result.all_succeeded else 1


def run_standin(fn: Any, store: SQLiteStore, n: int, batch_size: int) -> int:
    """A tiny stand-in for the runner: the same store calls, a bounded thread pool."""
    ident = {"fn": "crash_worker.slow"}
    rid = store.begin_run(RUN_NAME, {"batch_size": batch_size})
    stats = RunStats(total=n)
    inflight: dict[Future[Any], tuple[int, str, float]] = {}

    def settle(done: set[Future[Any]]) -> None:
        for fut in done:
            i, k, t0 = inflight.pop(fut)
            store.record(rid, Outcome(i, i, Status.OK, value=fut.result(), attempts=1,
                                      latency=time.monotonic() - t0, key=k))
            stats.done += 1
            stats.calls += 1

    with ThreadPoolExecutor(max_workers=batch_size) as pool:
        for i in range(n):
            k = item_key(ident, i)
            prior = store.prior(rid, i, k)
            if prior is not None and prior.status is Status.OK:
                stats.from_checkpoint += 1
                continue
            while len(inflight) >= batch_size:
                settle(wait(inflight, return_when=FIRST_COMPLETED).done)
            inflight[pool.submit(fn, i)] = (i, k, time.monotonic())
        while inflight:
            settle(wait(inflight, return_when=FIRST_COMPLETED).done)
    store.finish_run(rid, stats, "completed")
    store.flush()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("log")
    ap.add_argument("n", type=int)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--standin", action="store_true")
    args = ap.parse_args()
    fn = make_fn(args.log)
    store = SQLiteStore(args.db, group_size=GROUP_SIZE, flush_interval=0.02,
                        max_pending=MAX_PENDING)
    try:
        if args.standin:
            return run_standin(fn, store, args.n, args.batch_size)
        try:
            import throttlepool.runner  # noqa: F401
        except ImportError:
            return run_standin(fn, store, args.n, args.batch_size)
        return run_with_runner(fn, store, args.n, args.batch_size)
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
