"""Dask execution against the simulator, with two worker processes sharing one Redis limit."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from _services import start_redis

from throttlepool import ThreadedBatchRunner
from throttlepool.errors import LimiterUnavailable
from throttlepool.outcome import Outcome, RunStats
from throttlepool.sim import SimConfig, Simulator
from throttlepool.store import SQLiteStore

pytest.importorskip("distributed")


def call_echo(item: Mapping[str, str]) -> str:
    """The wrapped call; module level so that worker processes can import it."""
    r = requests.post(item["url"] + "/echo", json={"prompt": item["prompt"]}, timeout=10)
    r.raise_for_status()
    return str(r.json()["result"])




class CountingStore:
    """A store that counts how often each index is recorded."""

    def __init__(self, path: Path) -> None:
        self.inner = SQLiteStore(path)
        self.recorded: dict[int, int] = {}

    def begin_run(self, name: str | None, settings: Mapping[str, Any]) -> str:
        return self.inner.begin_run(name, settings)

    def prior(self, run_id: str, index: int, key: str) -> Outcome[Any] | None:
        return self.inner.prior(run_id, index, key)

    def record(self, run_id: str, outcome: Outcome[Any]) -> None:
        self.recorded[outcome.index] = self.recorded.get(outcome.index, 0) + 1
        self.inner.record(run_id, outcome)

    def finish_run(self, run_id: str, stats: RunStats, status: str) -> None:
        self.inner.finish_run(run_id, stats, status)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def rows(self, run_id: str) -> list[dict[str, Any]]:
        self.inner.flush()
        return self.inner.query("SELECT idx, status FROM items WHERE run_id = ?", (run_id,))


class AtFinished:
    """A progress sink that runs ``action`` once, when ``n`` outcomes have arrived."""

    def __init__(self, n: int, action: Any) -> None:
        self.n, self.action, self.fired = n, action, False

    def start(self, total: int | None, stats: RunStats) -> None:
        pass

    def update(self, stats: RunStats, outcome: Outcome[Any] | None) -> None:
        if not self.fired and stats.finished >= self.n:
            self.fired = True
            self.action()

    def close(self, stats: RunStats) -> None:
        pass


def _items(sim: Simulator, n: int) -> list[dict[str, str]]:
    return [{"url": sim.url, "prompt": f"p{i}"} for i in range(n)]


def test_two_workers_share_one_redis_limit(client: Any, redis_url: str, tmp_path: Path
                                           ) -> None:
    n, limit = 160, 40
    # The margin covers the gap between our admission and the server's stamp: p99 about
    # 220 ms on this 2-core box at load 8 (measured for 0.1); 0.1 s met 2 429s once.
    with Simulator(SimConfig(rpm=limit, window=1.0, latency=0.02)) as sim:
        runner: ThreadedBatchRunner[str] = ThreadedBatchRunner(
            call_echo, executor="dask", scheduler=client, limiter_url=redis_url,
            limits=[f"{limit}/second"], margin=0.25, batch_size=4, progress=False,
            store=tmp_path / "ck.sqlite")
        t0 = time.monotonic()
        result = runner.run(_items(sim, n), run_name="shared")
        wall = time.monotonic() - t0
        runner.close()
        stats = sim.stats()
    assert result.all_succeeded, result.summary()
    assert result.results[7] == "echo: p7"  # input order
    assert stats["rate_limited"] == 0
    assert stats["accepted"] == n
    assert stats["max_requests_in_window"] <= limit
    # One budget: 40 at once, then 40 per 1.25 s, so ~3.8 s; two private budgets: ~1.2 s.
    # The upper bound is no speed check (the bench measures speed), only a stall's: at load
    # 4 on this 2-core box one run took 7.7 s.
    assert 3.0 <= wall < 15.0, wall


def test_redis_down_stops_dispatch_and_the_run_resumes(client: Any, tmp_path: Path) -> None:
    from throttlepool.distributed import run_on_dask

    n = 240
    server = start_redis(tmp_path / "r1", tcp=True)
    store = CountingStore(tmp_path / "ck.sqlite")
    with Simulator(SimConfig(latency=0.02)) as sim:
        items = _items(sim, n)
        kw: dict[str, Any] = dict(client=client, limits=["60/second"], batch_size=4,
                                  chunk_size=20, store=store, run_name="redis-down")
        with pytest.raises(LimiterUnavailable, match=r"unreachable.*resume"):
            run_on_dask(call_echo, items, limiter_url=server.url,
                        progress=AtFinished(70, server.stop), **kw)
        server.stop()
        run_id = store.inner.query("SELECT id, status FROM runs")[0]
        assert run_id["status"] == "stopped"
        done = store.rows(run_id["id"])
        assert 70 <= len(done) < n
        assert all(r["status"] == "ok" for r in done)
        # Resume on a fresh server: checkpointed items are not called again.
        server = start_redis(tmp_path / "r2", tcp=True)
        try:
            result = run_on_dask(call_echo, items, limiter_url=server.url, progress=False, **kw)
        finally:
            server.stop()
    assert result.all_succeeded
    assert result.stats.from_checkpoint == len(done)
    assert len(store.rows(run_id["id"])) == n
    assert store.recorded == dict.fromkeys(range(n), 1)
    store.close()


def test_a_killed_worker_still_completes_every_item_once(client: Any, redis_url: str,
                                                         tmp_path: Path) -> None:
    from throttlepool.distributed import run_on_dask

    n = 400
    pids = list(client.run(os.getpid).values())
    store = CountingStore(tmp_path / "ck.sqlite")

    def kill() -> None:
        os.kill(pids[0], signal.SIGKILL)

    with Simulator(SimConfig(latency=0.02)) as sim:
        result = run_on_dask(call_echo, _items(sim, n), client=client, limiter_url=redis_url,
                             limiter_name="kill", limits=["120/second"], batch_size=4,
                             chunk_size=20, store=store, run_name="kill",
                             progress=AtFinished(60, kill))
        calls = sim.stats()["accepted"]
    assert result.all_succeeded, result.summary()
    assert [o.index for o in result] == list(range(n))
    rows = store.rows(result.run_id or "")
    assert sorted(r["idx"] for r in rows) == list(range(n))
    assert store.recorded == dict.fromkeys(range(n), 1)
    print(f"killed worker {pids[0]}: {calls} calls for {n} items ({calls - n} paid twice)")
    store.close()


def test_cli_runs_on_the_cluster_with_a_shared_limit(client: Any, redis_url: str,
                                                    tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    inp, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    inp.write_text("".join(f"line {i}\n" for i in range(30)))
    with Simulator(SimConfig(rpm=20, window=1.0)) as sim:
        proc = subprocess.run(
            [sys.executable, "-m", "throttlepool", "run", str(inp), "--provider", "http",
             "--base-url", sim.url + "/echo", "--rpm", "1200", "--no-progress",
             "--dask-scheduler", client.scheduler.address, "--limiter-url", redis_url,
             "--db", str(tmp_path / "ck.db"), "--output", str(out)],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert sim.stats()["accepted"] == 30
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(30))
