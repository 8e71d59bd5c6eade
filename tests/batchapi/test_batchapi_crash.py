"""kill -9 the batch-mode driver at each step, run it again: every item recorded once, and
the simulator saw no custom id submitted twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from throttlepool.sim import Simulator
from throttlepool.sim.batches import batches_of

WORKER = str(Path(__file__).with_name("batch_worker.py"))
N = 20  # 3 chunks of at most 7


def _run(sim: Simulator, db: Path, *extra: str, timeout: float = 60.0
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, WORKER, sim.openai_base_url, str(db), str(N),
                           *extra], capture_output=True, text=True, timeout=timeout)


def _check(sim: Simulator, db: Path) -> None:
    submitted = Counter(s["custom_id"] for s in batches_of(sim).submissions())
    assert submitted == Counter(f"item-{i}" for i in range(N)), submitted
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT idx, status, value FROM items ORDER BY idx").fetchall()
        states = conn.execute("SELECT state FROM batchapi_chunks").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(i, "ok") for i in range(N)]
    assert all(f"question {i}" in r[2] for i, r in enumerate(rows))
    assert {s for (s,) in states} == {"done"}


@pytest.mark.parametrize("step", ["intent", "upload", "create"])
def test_killed_after_a_step_then_resumed_submits_nothing_twice(
        sim: Simulator, tmp_path: Path, step: str) -> None:
    batches_of(sim).configure(delay=0.3)
    db = tmp_path / "cp.db"
    killed = _run(sim, db, "--die-after", step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    before = len(batches_of(sim).submissions())
    assert before == (7 if step == "create" else 0)  # the batch created just before dying
    resumed = _run(sim, db)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["done", str(N), "0"]
    _check(sim, db)


def test_killed_while_polling_then_resumed_collects_the_running_batches(
        sim: Simulator, tmp_path: Path) -> None:
    batches_of(sim).configure(delay=1.0)
    db = tmp_path / "cp.db"
    proc = subprocess.Popen([sys.executable, WORKER, sim.openai_base_url, str(db), str(N)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(batches_of(sim).submissions()) < N:  # all three batches created: polling
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=10)
    resumed = _run(sim, db)
    assert resumed.returncode == 0, resumed.stderr
    _check(sim, db)


def test_ctrl_c_leaves_the_batches_running_and_says_how_to_resume(
        sim: Simulator, tmp_path: Path) -> None:
    batches_of(sim).configure(delay=1.5)
    db = tmp_path / "cp.db"
    code = (
        "import sys, openai\n"
        "from throttlepool.adapters.openai import OpenAIAdapter\n"
        "from throttlepool.batchapi import BatchApiRunner\n"
        f"c = openai.OpenAI(base_url={sim.openai_base_url!r}, api_key='k')\n"
        f"r = BatchApiRunner(OpenAIAdapter(c, model='m'), store={str(db)!r}, run_name='rn',"
        " poll_interval=0.05, progress=lambda p: print('poll', flush=True))\n"
        "res = r.run(['a', 'b'])\n"
        "print('interrupted', res.interrupted, res.stopped, flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "poll"
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "interrupted True" in out and "run name 'rn'" in out and "cancel rn" in out
    (batch_id,) = {s["batch_id"] for s in batches_of(sim).submissions()}
    assert batch_id in out
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM runs").fetchone() == ("interrupted",)
