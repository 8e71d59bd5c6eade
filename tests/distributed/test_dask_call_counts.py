"""True call counts on Dask: a worker that dies after a call, before its chunk reports, still
has that call (and the calls its rerun chunk repeats) counted, equal to what the server got.

The cluster runs one call at a time per worker (one thread, ``batch_size=1``) and the dying
call kills its own process a moment after its answer arrived, so which calls reached the
simulator is known exactly; a kill from outside could land while a request is half sent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from throttlepool import ThreadedBatchRunner
from throttlepool.sim import SimConfig, Simulator
from throttlepool.store import SQLiteStore

pytest.importorskip("distributed")


def call_then_maybe_die(item: Mapping[str, Any]) -> str:
    """The wrapped call; the item marked ``die`` kills its worker once, after its call."""
    r = requests.post(item["url"] + "/echo", json={"prompt": item["prompt"]}, timeout=10)
    r.raise_for_status()
    marker = Path(item["dir"]) / "died"
    if item.get("die") and not marker.exists():
        marker.touch()
        time.sleep(0.3)  # the call was reported (a Dask event) well before the worker dies
        os.kill(os.getpid(), signal.SIGKILL)
    return str(r.json()["result"])


@pytest.fixture(scope="module")
def dask_threads_per_worker() -> int:
    return 1  # one call at a time per worker: which calls reached the server is known


def test_calls_of_a_worker_that_died_before_reporting_are_counted(client: Any,
                                                                  tmp_path: Path) -> None:
    from throttlepool.distributed import run_on_dask

    n, die_at = 120, 37  # the 18th call of its chunk of 20
    db = tmp_path / "ck.sqlite"
    with Simulator(SimConfig(latency=0.005)) as sim:
        items = [{"url": sim.url, "prompt": f"p{i}", "dir": str(tmp_path), "die": i == die_at}
                 for i in range(n)]
        result = run_on_dask(call_then_maybe_die, items, client=client, batch_size=1,
                             chunk_size=20, store=db, run_name="died", progress=False)
        received = sim.stats()["accepted"]
    assert (tmp_path / "died").exists()  # the worker did die
    assert result.all_succeeded, result.summary()
    assert [o.value for o in result] == [f"echo: p{i}" for i in range(n)]
    assert received > n  # the lost chunk's calls were made again
    assert result.stats.calls == received
    assert result.stats.repeated_calls == received - n
    store = SQLiteStore(db)
    try:
        totals = store.query("SELECT calls, json_extract(totals, '$.repeated_calls') AS rep "
                             "FROM run_metrics JOIN runs USING (id)")
    finally:
        store.close()
    assert [(t["calls"], t["rep"]) for t in totals] == [(received, received - n)]
    said = f"{received} calls for {n} items; {received - n} repeated after a worker was lost"
    assert said in result.summary()
    status = subprocess.run(
        [sys.executable, "-m", "throttlepool", "status", "died", "--db", str(db)],
        capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert said in status.stdout, status.stdout


def test_a_runner_on_dask_counts_the_same(client: Any, tmp_path: Path) -> None:
    n, die_at = 60, 5
    with Simulator(SimConfig(latency=0.005)) as sim:
        items = [{"url": sim.url, "prompt": f"p{i}", "dir": str(tmp_path), "die": i == die_at}
                 for i in range(n)]
        with ThreadedBatchRunner(call_then_maybe_die, executor="dask", scheduler=client,
                                 batch_size=1, progress=False) as runner:
            stream = runner.imap(items)
            values = [o.value for o in stream]
        received = sim.stats()["accepted"]
    assert values == [f"echo: p{i}" for i in range(n)]
    assert stream.stats is not None
    assert received > n
    assert (stream.stats.calls, stream.stats.repeated_calls) == (received, received - n)


def slow_double(n: int) -> int:
    """A call that takes a while, so that chunks are mid-way when the run is aborted."""
    time.sleep(0.2)
    return 2 * n


def test_calls_of_chunks_the_driver_aborted_are_not_repeats_of_a_lost_worker(client: Any
                                                                             ) -> None:
    runner: ThreadedBatchRunner[Any] = ThreadedBatchRunner(
        slow_double, executor="dask", scheduler=client, batch_size=4, progress=False)
    with runner:
        stream = runner.as_completed(range(400))
        next(stream)  # the first chunk is back; the other chunks in flight are mid-way
        time.sleep(0.5)  # their calls are announced to the driver
        stream.abort()
    stats = stream.stats
    assert stats is not None and stream.interrupted
    assert stats.calls > stats.finished  # calls of the cancelled chunks are counted...
    assert stats.repeated_calls == 0  # ...but no worker was lost: nothing was made again


def test_a_resume_after_the_driver_was_killed_counts_every_call_repeated(
        client: Any, redis_url: str, tmp_path: Path) -> None:
    """SIGKILL the CLI's Dask driver while its workers are calling: the chunks it sent run
    on without it (their answers are lost), and the resume makes those calls again. It must
    say so: repeated after a resume == what the server received beyond one call per item."""
    from helpers import clean_env

    n = 40  # two chunks of 20, one per worker, two calls at once: 1 s each at 0.1 s a call
    (tmp_path / "in.txt").write_text("".join(f"line {i}\n" for i in range(n)))
    root = Path(__file__).resolve().parents[2]
    env = clean_env({"PYTHONPATH": str(root), "OPENAI_API_KEY": "sk-dask-resume-0123456789"})
    with Simulator(SimConfig(latency=0.1)) as sim:
        argv = [sys.executable, "-m", "throttlepool", "run", "in.txt", "--model", "sim",
                "--base-url", sim.openai_base_url, "--no-progress", "--batch-size", "2",
                "--rpm", "100000", "--dask-scheduler", client.scheduler.address,
                "--limiter-url", redis_url, "--db", "ck.db", "--output", "out.jsonl"]
        driver = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while sim.stats()["requests"] < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(driver.pid, signal.SIGKILL)  # mid-chunk: no chunk has reported yet
        driver.communicate(timeout=10)
        # the orphaned chunks finish on the workers (their calls are made and paid for)
        last, still = -1, 0
        while still < 4 and time.monotonic() < deadline:
            stats = sim.stats()
            still = still + 1 if stats["requests"] == last and not stats["in_flight"] else 0
            last = stats["requests"]
            time.sleep(0.1)
        resume = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=60)
        received = sim.stats()["requests"]
    assert resume.returncode == 0, resume.stderr
    assert received > n
    assert f"; {received - n} repeated after a resume" in resume.stderr, (received,
                                                                         resume.stderr)
