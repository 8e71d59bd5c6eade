"""Checkpoint overhead: items/s with the store on vs off, for no-op and 10 ms calls.

    python bench/bench_store.py [--n 50000] [--slow-n 2000] [--batch-size 64]

Prints two tables: the store alone (``prior`` + ``record`` + final ``flush`` on the calling
thread, as the runner drives it) and whole runs through ``ThreadedBatchRunner``.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throttlepool.outcome import Outcome, Status
from throttlepool.store import SQLiteStore, item_key

IDENT = {"fn": "bench.noop"}


def bench_store_alone(n: int, path: str, resume: bool = False) -> tuple[float, float]:
    """(items/s until the last record returns, items/s including the final flush)."""
    keys = [item_key(IDENT, i) for i in range(n)]
    with SQLiteStore(path) as store:
        if resume:
            rid = store.begin_run("bench", {})
            for i in range(n):
                store.record(rid, Outcome(i, i, Status.OK, value={"i": i}, attempts=1,
                                          latency=0.001, key=keys[i]))
            store.flush()
        t0 = time.perf_counter()
        rid = store.begin_run("bench" if resume else None, {"batch_size": 1})
        for i in range(n):
            prior = store.prior(rid, i, keys[i])
            if prior is None:
                store.record(rid, Outcome(i, i, Status.OK, value={"i": i}, attempts=1,
                                          latency=0.001, key=keys[i]))
        t1 = time.perf_counter()
        store.flush()
        t2 = time.perf_counter()
    return n / (t1 - t0), n / (t2 - t0)


def noop(x: Any) -> Any:
    return x


def sleep10(x: Any) -> Any:
    time.sleep(0.010)
    return x


def bench_runner(fn: Any, n: int, batch_size: int, store: Any) -> tuple[float, float]:
    """(items/s wall, CPU µs per item of the whole process)."""
    from throttlepool.runner import ThreadedBatchRunner

    runner = ThreadedBatchRunner(fn, batch_size=batch_size, store=store, progress=False)
    c0, t0 = time.process_time(), time.perf_counter()
    result = runner.run(range(n))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    runner.close()
    assert result.all_succeeded and len(result) == n
    return n / elapsed, cpu / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=50_000, help="items for no-op runs")
    ap.add_argument("--slow-n", type=int, default=2_000, help="items for 10 ms runs")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="best of R")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tp-bench-"))
    print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
          f"{platform.machine()}, best of {args.repeat}")

    print(f"\nstore alone, {args.n} items (prior + record; then flush)")
    print(f"{'case':<28}{'record items/s':>16}{'incl. flush':>14}")
    for label, path, resume in (
        ("file, fresh run", None, False),
        (":memory:, fresh run", ":memory:", False),
        ("file, resume (all done)", None, True),
    ):
        best = (0.0, 0.0)
        for r in range(args.repeat):
            p = path or str(tmp / f"alone-{label[:4]}-{resume}-{r}.db")
            got = bench_store_alone(args.n, p, resume)
            best = max(best, got, key=lambda x: x[1])
        print(f"{label:<28}{best[0]:>16,.0f}{best[1]:>14,.0f}")

    try:
        import throttlepool.runner  # noqa: F401
    except ImportError:
        print("\n(throttlepool.runner not available yet: runner table skipped)")
        return
    print(f"\nThreadedBatchRunner, batch_size={args.batch_size}")
    print("(items/s wall clock; CPU µs per item of the whole process in brackets, which is")
    print(" steadier than wall clock on a loaded machine)")
    print(f"{'call':<8}{'items':>7}{'no checkpoint':>22}{'checkpoint':>22}{'ratio':>7}")
    for name, fn, n in (("no-op", noop, args.n), ("10 ms", sleep10, args.slow_n)):
        off = max((bench_runner(fn, n, args.batch_size, None) for _ in range(args.repeat)),
                  key=lambda x: x[0])
        on = max((bench_runner(fn, n, args.batch_size, str(tmp / f"run-{name}-{r}.db"))
                  for r in range(args.repeat)), key=lambda x: x[0])
        print(f"{name:<8}{n:>7}{off[0]:>12,.0f} ({off[1]:5.1f} µs){on[0]:>12,.0f} "
              f"({on[1]:5.1f} µs){on[0] / off[0]:>7.2f}")


if __name__ == "__main__":
    main()
