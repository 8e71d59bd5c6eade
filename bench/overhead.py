"""In-memory figures, no server: no-op items per second, and peak RSS for 1,000,000 items."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def noop(x: Any) -> Any:
    return x


@dataclass
class Throughput:
    """Items per second of one way of running no-op calls; median (and all) of R repeats."""

    name: str
    batch_size: int
    n: int
    rates: list[float] = field(default_factory=list)
    #: Voluntary context switches of the whole process per item, one figure per run: each is a
    #: thread that blocked and was woken again (on a VM, waking an idle CPU is costly).
    switches: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def median_switches(self) -> float:
        return statistics.median(self.switches) if self.switches else 0.0


def _time(fn: Callable[[], int], n: int) -> tuple[float, float]:
    """Items per second of one run, and the process's voluntary context switches per item."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    t0 = time.perf_counter()
    got = fn()
    elapsed = time.perf_counter() - t0
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before
    if got != n:
        raise AssertionError(f"expected {n} results, got {got}")
    return n / elapsed, switches / n


def _pool_map(n: int, batch_size: int) -> Callable[[], int]:
    def go() -> int:
        with ThreadPoolExecutor(max_workers=batch_size) as pool:
            return sum(1 for _ in pool.map(noop, range(n)))
    return go


def _runner_run(n: int, batch_size: int) -> Callable[[], int]:
    from throttlepool import ThreadedBatchRunner

    def go() -> int:
        with ThreadedBatchRunner(noop, batch_size=batch_size, progress=False) as runner:
            result = runner.run(range(n))
        assert result.all_succeeded
        return len(result)
    return go


def _runner_imap(n: int, batch_size: int) -> Callable[[], int]:
    from throttlepool import ThreadedBatchRunner

    def go() -> int:
        with ThreadedBatchRunner(noop, batch_size=batch_size, progress=False) as runner:
            return sum(1 for _ in runner.imap(range(n)))
    return go


def _runner_limited(n: int, batch_size: int) -> Callable[[], int]:
    """With a limit configured that never binds: the limiter's bookkeeping on every call."""
    from throttlepool import ThreadedBatchRunner

    def go() -> int:
        with ThreadedBatchRunner(noop, batch_size=batch_size, progress=False,
                                 limits=[f"{10 * n}/minute"]) as runner:
            result = runner.run(range(n))
        assert result.all_succeeded
        return len(result)
    return go


WAYS: dict[str, Callable[[int, int], Callable[[], int]]] = {
    "ThreadPoolExecutor.map": _pool_map,
    "throttlepool run()": _runner_run,
    "throttlepool imap()": _runner_imap,
    "throttlepool run(), limit set": _runner_limited,
}


#: The ways the one-CPU check runs (see measure_one_cpu).
ONE_CPU_WAYS = ("ThreadPoolExecutor.map", "throttlepool run()")


def _measure_here(n: int, repeats: int, batch_sizes: tuple[int, ...],
                  ways: tuple[str, ...] = tuple(WAYS)) -> list[Throughput]:
    """Interleaved repeats (A B C D, A B C D, ...) in this process, so drift hits every way
    alike."""
    out = [Throughput(name, bs, n) for bs in batch_sizes for name in ways]
    for t in out:  # warm-up: imports, thread start-up, first-run allocations
        _time(WAYS[t.name](min(n, 2000), t.batch_size), min(n, 2000))
    for _ in range(repeats):
        for t in out:
            rate, switches = _time(WAYS[t.name](n, t.batch_size), n)
            t.rates.append(rate)
            t.switches.append(switches)
    return out


_OVERHEAD_CHILD = r"""
import json, os, sys
from bench.overhead import _measure_here
n, repeats, sizes = int(sys.argv[1]), int(sys.argv[2]), tuple(json.loads(sys.argv[3]))
ways = tuple(json.loads(sys.argv[4]))
if sys.argv[5] == "one-cpu":  # before any thread starts: every thread inherits the mask
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
print(json.dumps([[t.rates, t.switches] for t in _measure_here(n, repeats, sizes, ways)]))
"""


def _measure_in_children(n: int, repeats: int, processes: int, batch_sizes: tuple[int, ...],
                         ways: tuple[str, ...], cpus: str) -> list[Throughput]:
    out = [Throughput(name, bs, n) for bs in batch_sizes for name in ways]
    root = str(Path(__file__).resolve().parent.parent)
    for _ in range(processes):
        child = subprocess.run(
            [sys.executable, "-c", _OVERHEAD_CHILD, str(n), str(repeats),
             json.dumps(batch_sizes), json.dumps(ways), cpus],
            capture_output=True, text=True, cwd=root)
        if child.returncode != 0:
            raise RuntimeError(f"overhead child failed: {child.stderr[-2000:]}")
        for t, (rates, switches) in zip(out, json.loads(child.stdout.splitlines()[-1]),
                                        strict=True):
            t.rates += rates
            t.switches += switches
    return out


def _log_rows(out: list[Throughput], log: Callable[[str], None], label: str) -> None:
    for t in out:
        log(f"  {label}  {t.name:<32} batch_size {t.batch_size:3d}  "
            f"median {t.median:10,.0f} items/s  {t.median_switches:.2f} switches/item  (runs: "
            + ", ".join(f"{r:,.0f}" for r in t.rates) + ")")


def measure_overhead(n: int, repeats: int, processes: int = 1,
                     batch_sizes: tuple[int, ...] = (8, 64),
                     log: Callable[[str], None] = print) -> list[Throughput]:
    """``repeats`` interleaved runs of every way in each of ``processes`` fresh interpreters,
    one after another (1: in this one): what ran before in the bench's own process weighs on
    no way, and the figures are drawn from several processes, not one (their runs are listed
    process by process, so the spread between processes can be read off the report).
    """
    if processes <= 1:
        out = _measure_here(n, repeats, batch_sizes)
    else:
        out = _measure_in_children(n, repeats, processes, batch_sizes, tuple(WAYS), "all")
    _log_rows(out, log, "overhead")
    return out


def measure_one_cpu(n: int, repeats: int, processes: int = 1,
                    log: Callable[[str], None] = print) -> list[Throughput]:
    """The cause check of the batch_size-8 figure: ThreadPoolExecutor.map and run() again, in
    fresh processes held to one CPU (empty where the platform cannot pin a process).

    Each hand-off between run()'s event loop thread and a worker may wake a CPU that went
    idle (before lookahead, one round trip per 8 calls); ThreadPoolExecutor.map queues every
    item at once, and its threads rarely block. On one CPU a woken thread takes over a CPU
    that is already awake, so the gap between the two runs says what the cross-CPU wake-ups
    cost.
    """
    if not hasattr(os, "sched_setaffinity"):
        log("  one CPU   not measured: this platform cannot pin a process to a CPU")
        return []
    out = _measure_in_children(n, repeats, processes, (8,), ONE_CPU_WAYS, "one-cpu")
    _log_rows(out, log, "one CPU ")
    return out


_SCALE_CHILD = r"""
import json, resource, sys, time
import psutil
from throttlepool import ThreadedBatchRunner
n, batch_size = int(sys.argv[1]), int(sys.argv[2])
def noop(x):
    return x
def produce(n):  # lazily produced: never a list of n items
    for i in range(n):
        yield i
proc = psutil.Process()
runner = ThreadedBatchRunner(noop, batch_size=batch_size, progress=False)
base = proc.memory_info().rss
t0 = time.perf_counter()
count = ok = 0
for outcome in runner.imap(produce(n)):
    if outcome.value == count:
        ok += 1
    count += 1
elapsed = time.perf_counter() - t0
runner.close()
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a child of a large parent
# would report the parent's peak (measured: 276 MB here against 50 MB for the same child
# started from a shell).
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"n": n, "count": count, "in_order": ok, "seconds": elapsed,
                  "peak_rss_mb": peak_kb / 1024, "rss_before_mb": base / 2**20,
                  "rss_after_mb": proc.memory_info().rss / 2**20}))
"""


@dataclass
class Scale:
    n: int
    batch_size: int
    count: int
    in_order: int
    seconds: float
    peak_rss_mb: float
    rss_before_mb: float
    rss_after_mb: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def measure_scale(n: int, batch_size: int = 8, log: Callable[[str], None] = print) -> Scale:
    """Stream ``n`` lazily produced no-op items through ``imap`` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _SCALE_CHILD, str(n), str(batch_size)],
                          capture_output=True, text=True, check=True, timeout=900)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    s = Scale(n=data["n"], batch_size=batch_size, count=data["count"],
              in_order=data["in_order"], seconds=data["seconds"],
              peak_rss_mb=data["peak_rss_mb"], rss_before_mb=data["rss_before_mb"],
              rss_after_mb=data["rss_after_mb"])
    log(f"  scale     {s.count:,} items via imap  {s.seconds:.1f}s ({s.rate:,.0f}/s)  "
        f"peak RSS {s.peak_rss_mb:.1f} MB (after imports {s.rss_before_mb:.1f} MB)")
    return s
