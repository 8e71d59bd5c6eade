"""Every entry point on Dask: imap, as_completed, arun and aimap stream from a real cluster
(two worker processes) in input order with bounded memory; the response cache saves calls;
a cluster that cannot start says so in one sentence and records no run. Under a binding
limit the driver keeps only about two seconds of the limit's work in flight, so a Ctrl-C
stops the calls within that, and an abort (a second Ctrl-C, the consumer's error) leaves the
workers making no more calls once the driver has returned; each call's times are the
worker's, not the driver's receive times."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from _services import free_port

from throttlepool import ThreadedBatchRunner
from throttlepool.errors import ThrottlepoolError
from throttlepool.sim import SimConfig, Simulator

pytest.importorskip("distributed")


def call_echo(item: Mapping[str, str]) -> str:
    """The wrapped call; module level so that worker processes can import it."""
    r = requests.post(item["url"] + "/echo", json={"prompt": item["prompt"]}, timeout=10)
    r.raise_for_status()
    return str(r.json()["result"])


def double(n: int) -> int:
    """A call that needs no server."""
    time.sleep(0.002)
    return 2 * n



class Counted:
    """An input that counts the items taken from it."""

    def __init__(self, n: int) -> None:
        self.n, self.taken = n, 0

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            self.taken += 1
            yield i


def _runner(client: Any, **kw: Any) -> ThreadedBatchRunner[Any]:
    kw.setdefault("fn", double)
    return ThreadedBatchRunner(kw.pop("fn"), executor="dask", scheduler=client, batch_size=4,
                               progress=False, **kw)


def test_imap_on_dask_streams_in_input_order_and_reads_the_input_lazily(client: Any) -> None:
    n = 3000
    items = Counted(n)
    # chunks of 20, (8 threads + 2 workers) chunks in flight: 200 items ahead of the oldest
    # one not yet emitted, plus what the consumer's channel (window=40) holds.
    with _runner(client, window=40) as runner:
        stream = runner.imap(items)
        first = next(stream)
        time.sleep(2.0)  # a consumer that is slow: the driver must not read everything ahead
        taken_while_slow = items.taken
        rest = list(stream)
    outcomes = [first, *rest]
    assert [o.index for o in outcomes] == list(range(n))
    assert [o.value for o in outcomes] == [2 * i for i in range(n)]
    assert taken_while_slow <= 200 + 40 + 20 + 20, taken_while_slow
    assert stream.stats is not None and stream.stats.done == n


def test_as_completed_on_dask_delivers_each_item_once_while_the_run_goes_on(client: Any
                                                                          ) -> None:
    n = 400
    with _runner(client) as runner:
        stream = runner.as_completed(range(n))
        first = next(stream)
        assert stream.stats is not None
        finished_at_first = stream.stats.finished
        rest = list(stream)
    assert finished_at_first < n  # it streamed: the first outcome came before the end
    outcomes = [first, *rest]
    assert sorted(o.index for o in outcomes) == list(range(n))
    assert all(o.value == 2 * o.index for o in outcomes)


def test_arun_and_aimap_on_dask_in_input_order(client: Any) -> None:
    n = 300

    async def both() -> tuple[list[Any], list[int]]:
        with _runner(client) as runner:
            result = await runner.arun(range(n))
            streamed = [o.index async for o in runner.aimap(range(n))]
        return list(result.results), streamed

    values, streamed = asyncio.run(both())
    assert values == [2 * i for i in range(n)]
    assert streamed == list(range(n))


def test_the_response_cache_saves_every_call_of_a_second_dask_run(client: Any,
                                                                  tmp_path: Path) -> None:
    n = 60
    cache = tmp_path / "cache.sqlite"
    with Simulator(SimConfig(latency=0.01)) as sim:
        items = [{"url": sim.url, "prompt": f"p{i}"} for i in range(n)]
        with _runner(client, fn=call_echo, cache=cache) as runner:
            first = runner.run(items)
        with _runner(client, fn=call_echo, cache=cache) as runner:
            stream = runner.imap(items)
            second = list(stream)
        accepted = sim.stats()["accepted"]
    assert first.all_succeeded and first.stats.calls == n
    assert accepted == n  # the second run called nothing
    assert stream.stats is not None
    assert (stream.stats.cache_hits, stream.stats.calls) == (n, 0)
    assert [o.value for o in second] == [f"echo: p{i}" for i in range(n)]


def _runs_recorded(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
        except sqlite3.OperationalError:  # no runs table: nothing was ever begun
            return 0


def test_an_unreachable_scheduler_is_one_clear_error_and_no_run(tmp_path: Path) -> None:
    from throttlepool.distributed.dask import DaskExecutor

    address = f"tcp://127.0.0.1:{free_port()}"
    db = tmp_path / "ck.sqlite"
    runner: ThreadedBatchRunner[Any] = ThreadedBatchRunner(
        double, executor=DaskExecutor(address, connect_timeout=2.0), store=db,
        progress=False)
    with runner, pytest.raises(ThrottlepoolError) as caught:
        runner.run(range(10), run_name="never")
    assert type(caught.value).__name__ == "ClusterUnavailable"
    assert address in str(caught.value)
    assert _runs_recorded(db) == 0


def test_a_dask_stream_aborted_before_its_first_next_connects_to_nothing(
        tmp_path: Path) -> None:
    """An abort queued before the run's task existed was dropped (``_task`` was None): the
    run went on to connect (here: to no scheduler). It is kept now; nothing is begun."""
    from throttlepool.distributed.dask import DaskExecutor

    db = tmp_path / "ck.sqlite"
    runner: ThreadedBatchRunner[Any] = ThreadedBatchRunner(
        double, executor=DaskExecutor(f"tcp://127.0.0.1:{free_port()}", connect_timeout=2.0),
        store=db, progress=False)
    with runner:
        stream = runner.imap(range(10), run_name="aborted-early")
        stream.abort()
        with pytest.raises(asyncio.CancelledError):
            next(stream)
    assert stream.interrupted
    assert _runs_recorded(db) == 0


def test_the_cli_says_the_scheduler_is_unreachable_in_one_sentence(tmp_path: Path) -> None:
    inp, db = tmp_path / "in.txt", tmp_path / "ck.db"
    inp.write_text("a\nb\n")
    address = f"tcp://127.0.0.1:{free_port()}"
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "throttlepool", "run", str(inp), "--provider", "http",
         "--base-url", "http://127.0.0.1:9/echo", "--no-progress", "--dask-scheduler",
         address, "--db", str(db), "--output", str(tmp_path / "out.jsonl")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"cannot reach the Dask scheduler at {address}" in proc.stderr
    assert _runs_recorded(db) == 0
    # nothing listens there: said at once, not after the client's 10 s connect timeout
    assert time.monotonic() - began < 8


def test_a_function_the_workers_cannot_import_is_one_clear_error_and_no_run(
        client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A module only this process can import: cloudpickle sends its function by reference.
    (tmp_path / "only_on_the_driver.py").write_text("def shout(x):\n    return str(x).upper()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    shout = importlib.import_module("only_on_the_driver").shout
    db = tmp_path / "ck.sqlite"
    with _runner(client, fn=shout, store=db) as runner, pytest.raises(
            ThrottlepoolError) as caught:
        runner.run(["a", "b"], run_name="unloadable")
    assert type(caught.value).__name__ == "NotRunnableOnCluster"
    message = str(caught.value)
    assert "only_on_the_driver" in message and "\n" not in message
    assert _runs_recorded(db) == 0


LIMIT = 10  # calls a second: 40 items take 4 s, all dispatched at once they cannot stop


@pytest.fixture(scope="module")
def limited_sim() -> Any:
    with Simulator(SimConfig(rpm=LIMIT, window=1.0, latency=0.02)) as sim:
        yield sim


def _limited_runner(client: Any, redis_url: str, **kw: Any) -> ThreadedBatchRunner[str]:
    return ThreadedBatchRunner(call_echo, executor="dask", scheduler=client,
                               limiter_url=redis_url, limits=[f"{LIMIT}/second"], margin=0.1,
                               batch_size=4, **kw)


def _echo_items(sim: Simulator, n: int) -> list[dict[str, str]]:
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
    runner = _limited_runner(client, redis_url, progress=False, store=tmp_path / "ck.sqlite")
    at_ctrl_c = _ctrl_c_at(1.2, sim=sim)
    result = runner.run(_echo_items(sim, 40), run_name="stop")
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
    stream = _limited_runner(client, redis_url, progress=False).imap(_echo_items(sim, 40))
    # the abort a second Ctrl-C (or a consumer's own error) makes, from another thread, once
    # calls are under way (a fixed 1 s came before the first call on a loaded machine)
    def abort_once_calls_land() -> None:
        deadline = time.monotonic() + 60
        while sim.stats()["accepted"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        stream.abort()

    threading.Thread(target=abort_once_calls_land, daemon=True).start()
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
        # the call's own end (its answer), not when its chunk reached the driver (0.9 s
        # after the first call's end); a worker descheduled under load took 52 ms once
        assert abs(finished - result.results[idx]) < 0.25, (idx, finished, result.results[idx])
        assert started <= finished


@pytest.fixture(scope="module")
def slow_sim() -> Any:
    """Answers take 0.3 s: an abort finds calls on their way."""
    with Simulator(SimConfig(rpm=2 * LIMIT, window=1.0, latency=0.3)) as sim:
        yield sim


def _recorded_calls(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (stats,) = conn.execute("SELECT totals FROM runs").fetchone()
    return int(json.loads(stats)["calls"])


def test_an_aborted_dask_run_records_every_call_the_server_received(
        client: Any, redis_url: str, slow_sim: Simulator, tmp_path: Path) -> None:
    sim = slow_sim
    sim.reset()
    runner = ThreadedBatchRunner(call_echo, executor="dask", scheduler=client,
                                 limiter_url=redis_url, limits=[f"{2 * LIMIT}/second"],
                                 margin=0.1, batch_size=4, progress=False,
                                 store=tmp_path / "ck.sqlite")
    stream = runner.imap(_echo_items(sim, 60), run_name="aborted")

    def abort_mid_run() -> None:  # a second Ctrl-C, from another thread, calls under way
        while sim.stats()["accepted"] < 10:
            time.sleep(0.01)
        stream.abort()

    threading.Thread(target=abort_mid_run, daemon=True).start()
    with contextlib.suppress(BaseException):
        for _ in stream:
            pass
    time.sleep(0.5)  # a call a worker would still make after the driver returned
    runner.close()
    assert stream.interrupted
    received = sim.stats()["accepted"]
    assert 0 < received < 60, received
    # every call the server received is recorded: none is made after the abort unrecorded
    assert _recorded_calls(tmp_path / "ck.sqlite") == received


def _run_other_code(stale: bool) -> None:
    """On a worker: pretend it loaded other throttlepool code (or stop pretending)."""
    from throttlepool.distributed import chunk, fingerprint

    chunk.code_digest = (lambda: "0" * 16) if stale else fingerprint.code_digest  # type: ignore[attr-defined]


def test_workers_running_other_throttlepool_code_are_named_before_the_run(
        client: Any, caplog: pytest.LogCaptureFixture) -> None:
    workers = sorted(client.nthreads())
    client.run(_run_other_code, True, workers=workers[:1])
    try:
        with caplog.at_level("WARNING", logger="throttlepool.distributed"):
            result = _runner(client).run(range(4))
    finally:
        client.run(_run_other_code, False)
    assert result.all_succeeded
    warned = [r.getMessage() for r in caplog.records if "other throttlepool code" in r.getMessage()]
    assert len(warned) == 1 and workers[0] in warned[0] and workers[1] not in warned[0], warned
