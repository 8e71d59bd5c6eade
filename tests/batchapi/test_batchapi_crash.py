"""kill -9 the batch-mode driver at each step, run it again: every item recorded once, and
the simulator saw no custom id submitted twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.batchapi.conftest import CrashDriver, N
from throttlepool.sim import Simulator
from throttlepool.sim.batches import batches_of

PROVIDER = "openai"


@pytest.mark.parametrize("step", ["intent", "upload", "create"])
def test_killed_after_a_step_then_resumed_submits_nothing_twice(
        crash_driver: CrashDriver, tmp_path: Path, step: str) -> None:
    crash_driver.route.configure(delay=0.3)
    db = tmp_path / "cp.db"
    killed = crash_driver.run(db, "--die-after", step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    before = len(crash_driver.route.submissions())
    assert before == (7 if step == "create" else 0)  # the batch created just before dying
    resumed = crash_driver.run(db)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["done", str(N), "0"]
    crash_driver.check(db)


@pytest.mark.parametrize("crash_driver", ["openai", "gemini"], indirect=True)
def test_killed_while_polling_then_resumed_collects_the_running_batches(
        crash_driver: CrashDriver, tmp_path: Path) -> None:
    crash_driver.route.configure(delay=1.0)
    db = tmp_path / "cp.db"
    crash_driver.kill_while_polling(db)  # all three batches created
    resumed = crash_driver.run(db)
    assert resumed.returncode == 0, resumed.stderr
    crash_driver.check(db)


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
