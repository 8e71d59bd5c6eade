"""Scale-out benchmark: one shared limit across processes, and the cost of an acquire.

    python bench/bench_scaleout.py [--quick] [--limit 200] [--seconds 4] [--acquires 2000]

1. Aggregate throughput of 1, 2 and 4 worker processes (4 threads each) under ONE shared
   limit, on the SQLite and Redis backends: it must stay at the limit, not multiply.
2. p50/p99 latency of an uncontended, always-admitted acquire on each backend.

Starts its own redis-server (unix socket and 127.0.0.1) and stops it by PID.

:func:`run_shared_workload` is the server-backed side (``python -m bench --only shared-1s``):
four client processes, one budget through Redis or the SQLite shared limiter, one simulator;
its child processes are in :mod:`bench.shared_child`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from throttlepool.limiter import Cost, limiter_from_url


def start_redis(directory: Path, tcp: bool) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    if tcp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        extra, url = ["--port", str(port), "--bind", "127.0.0.1"], f"redis://127.0.0.1:{port}/0"
    else:
        sock = directory / "redis.sock"
        extra, url = ["--port", "0", "--unixsocket", str(sock)], f"unix://{sock}"
    proc = subprocess.Popen([binary, *extra, "--save", "", "--appendonly", "no",
                             "--dir", str(directory)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if redis.Redis.from_url(url, socket_connect_timeout=0.2).ping():
                return proc, url
        except (redis.ConnectionError, OSError):
            time.sleep(0.01)
    proc.terminate()
    raise SystemExit("redis-server did not start")


def _worker(url: str, name: str, limit: int, seconds: float, ready: Any, out: Any) -> None:
    lim = limiter_from_url(url, [f"{limit}/second"], name=name)
    count = [0] * 4
    ready.wait(60)
    stop_at = time.time() + seconds

    def loop(i: int) -> None:
        while time.time() < stop_at:
            lim.acquire()
            count[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(sum(count))


def throughput(url: str, procs: int, limit: int, seconds: float) -> float:
    """Admissions per second of ``procs`` processes x 4 threads under one shared limit."""
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    ready, out = ctx.Barrier(procs), ctx.Queue()
    name = uuid.uuid4().hex
    ps = [ctx.Process(target=_worker, args=(url, name, limit, seconds, ready, out))
          for _ in range(procs)]
    for p in ps:
        p.start()
    total = sum(out.get(timeout=120) for _ in ps)
    for p in ps:
        p.join()
    # The first window admits a full burst at once; count the steady rate after it.
    return (total - limit) / (seconds - 1.0) if seconds > 1 else total / seconds


def acquire_latency(url: str, n: int) -> tuple[float, float]:
    lim = limiter_from_url(url, ["100000000/second", "1000000000 tokens/second"],
                           name=uuid.uuid4().hex)
    for _ in range(50):
        lim.acquire(Cost(1, 100))
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        lim.acquire(Cost(1, 100))
        samples.append(time.perf_counter() - t)
    q = statistics.quantiles(samples, n=100)
    return q[49] * 1e6, q[98] * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=200, help="shared requests per second")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--acquires", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="2 s runs, 500 acquires")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.acquires = 2.0, 500
    with tempfile.TemporaryDirectory(prefix="tp-bench-") as tmp:
        d = Path(tmp)
        unix_proc, unix_url = start_redis(d, tcp=False)
        tcp_dir = d / "tcp"
        tcp_dir.mkdir()
        tcp_proc, tcp_url = start_redis(tcp_dir, tcp=True)
        try:
            backends = {
                "memory": "memory://",
                "sqlite (WAL file)": f"sqlite:///{d}/limits.sqlite",
                "redis (unix socket)": unix_url,
                "redis (TCP loopback)": tcp_url,
            }
            print(f"acquire latency, uncontended, {args.acquires} calls, weighted (1 req + "
                  "100 tokens, two limits)")
            print(f"{'backend':<24}{'p50 µs':>10}{'p99 µs':>10}")
            for label, url in backends.items():
                p50, p99 = acquire_latency(url, args.acquires)
                print(f"{label:<24}{p50:>10.0f}{p99:>10.0f}")
            print()
            print(f"aggregate throughput under ONE shared limit of {args.limit}/s "
                  f"(4 threads per process, {args.seconds:g} s, steady state after the "
                  "first window)")
            print(f"{'backend':<24}{'1 proc':>10}{'2 procs':>10}{'4 procs':>10}")
            for label in ("sqlite (WAL file)", "redis (TCP loopback)"):
                url = backends[label]
                rates = [throughput(url, n, args.limit, args.seconds) for n in (1, 2, 4)]
                print(f"{label:<24}" + "".join(f"{r:>10.1f}" for r in rates))
        finally:
            for proc in (unix_proc, tcp_proc):
                proc.terminate()
                proc.wait(5)


def run_shared_workload(wl: Any, contenders: list[str], log: Any = print) -> list[Any]:
    """Every contender on both shared backends: ``wl.processes`` client processes, each with
    ``wl.concurrency`` calls in flight, sharing ``wl.rpm`` per ``wl.window`` through one
    redis-server (127.0.0.1, started here, stopped by PID) or one SQLite file."""
    from throttlepool.sim import SimulatorProcess as RemoteSim

    from .shared_child import run_shared
    from .workloads import log_record

    records = []
    with tempfile.TemporaryDirectory(prefix="tp-bench-shared-") as tmp, \
            RemoteSim(wl.sim_config()) as sim:
        redis_dir = Path(tmp) / "redis"
        redis_dir.mkdir()
        redis_proc, redis_url = start_redis(redis_dir, tcp=True)
        try:
            for name in contenders:
                for backend in ("redis", "sqlite"):
                    url = redis_url if backend == "redis" else \
                        f"sqlite:///{Path(tmp) / f'limit-{uuid.uuid4().hex}.sqlite'}"
                    if backend == "redis":
                        import redis

                        redis.Redis.from_url(redis_url).flushall()
                    rec = run_shared(sim, wl, name, backend, url)
                    records.append(rec)
                    log_record(rec, log)
        finally:
            redis_proc.terminate()
            redis_proc.wait(5)
    return records


if __name__ == "__main__":
    main()
