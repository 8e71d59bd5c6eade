"""Stopping a Dask run: under a binding limit the driver keeps only about two seconds of
the limit's work in flight, so a Ctrl-C stops the calls within that, and an abort (a second
Ctrl-C, the consumer's error) leaves the workers making no more calls once the driver has
returned. Each call's times are the worker's, not the driver's receive times."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from throttlepool import ThreadedBatchRunner
from throttlepool.outcome import Outcome, RunStats
from throttlepool.sim import SimConfig, Simulator

pytest.importorskip("distributed")

LIMIT = 10  # calls a second: 40 items take 4 s, all dispatched at once they cannot stop


def call_echo(item: Mapping[str, str]) -> str:
    """The wrapped call; module level so that worker processes can import it."""
    r = requests.post(item["url"] + "/echo", json={"prompt": item["prompt"]}, timeout=10)
    r.raise_for_status()
    return str(r.json()["result"])


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


@pytest.fixture(scope="module")
def limited_sim() -> Any:
    with Simulator(SimConfig(rpm=LIMIT, window=1.0, latency=0.02)) as sim:
        yield sim


def _runner(client: Any, redis_url: str, **kw: Any) -> ThreadedBatchRunner[str]:
    return ThreadedBatchRunner(call_echo, executor="dask", scheduler=client,
                               limiter_url=redis_url, limits=[f"{LIMIT}/second"], margin=0.1,
                               batch_size=4, **kw)


def _items(sim: Simulator, n: int) -> list[dict[str, str]]:
    return [{"url": sim.url, "prompt": f"p{i}"} for i in range(n)]


def _ctrl_c_at(*delays: float, sim: Simulator) -> list[int]:
    """Press Ctrl-C (SIGINT to this process) after each delay; what the server had by then."""
    seen: list[int] = []

    def press() -> None:
        seen.append(sim.stats()["accepted"])
        os.kill(os.getpid(), signal.SIGINT)  # the runner's own handler takes it

    for delay in delays:
        threading.Timer(delay, press).start()
    return seen


def test_ctrl_c_on_dask_stops_the_calls_within_the_in_flight_bound(
        client: Any, redis_url: str, limited_sim: Simulator, tmp_path: Path) -> None:
    sim = limited_sim
    sim.reset()
    runner = _runner(client, redis_url, progress=False, store=tmp_path / "ck.sqlite")
    at_ctrl_c = _ctrl_c_at(1.2, sim=sim)
    result = runner.run(_items(sim, 40), run_name="stop")
    runner.close()
    time.sleep(0.3)  # a call a worker would still make after the driver returned
    after = sim.stats()["accepted"] - at_ctrl_c[0]
    assert result.interrupted
    assert result.stats.not_attempted > 0, result.summary()
    # the calls the workers had already taken (batch_size per chunk, two chunks in flight)
    assert after <= 8, after
    assert result.stats.calls == sim.stats()["accepted"]


def test_an_aborted_dask_run_leaves_no_calls_running_on_the_workers(
        client: Any, redis_url: str, limited_sim: Simulator) -> None:
    sim = limited_sim
    sim.reset()
    stream = _runner(client, redis_url, progress=False).imap(_items(sim, 40))
    # the abort a second Ctrl-C (or a consumer's own error) makes, from another thread
    threading.Timer(1.0, stream.abort).start()
    got = 0
    with contextlib.suppress(BaseException):
        for _ in stream:
            got += 1
    at_return = sim.stats()["accepted"]
    time.sleep(1.0)
    assert 0 < at_return < 40, at_return
    # only the calls the workers had already admitted may still land
    assert sim.stats()["accepted"] - at_return <= 8, (at_return, sim.stats()["accepted"])


def ended_at(i: int) -> float:
    """A call that takes ``i`` tenths of a second and answers the time it ended."""
    time.sleep(0.1 * i)
    return time.time()


def test_call_times_on_dask_are_the_calls_own(client: Any, tmp_path: Path) -> None:
    from throttlepool.distributed import run_on_dask

    n = 10  # one chunk, every call at once: they end 0.1 s apart, the chunk after 0.9 s
    result = run_on_dask(ended_at, range(n), client=client, batch_size=n, chunk_size=n,
                         store=tmp_path / "ck.sqlite", progress=False)
    assert result.all_succeeded, result.summary()
    with sqlite3.connect(tmp_path / "ck.sqlite") as conn:
        rows = conn.execute("SELECT idx, started, finished FROM items").fetchall()
    assert len(rows) == n
    for idx, started, finished in rows:
        # the call's own end (its answer), not when its chunk reached the driver
        assert abs(finished - result.results[idx]) < 0.05, (idx, finished, result.results[idx])
        assert started <= finished
