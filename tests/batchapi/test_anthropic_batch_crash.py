"""kill -9 the Anthropic batch driver right after the batch is created (its id never
recorded: Message Batches have no metadata to find it by), and at the other steps, then run
it again: the simulator's log holds each item's request once and the checkpoint each item
once."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.batchapi.conftest import CrashDriver, N

PROVIDER = "anthropic"


@pytest.mark.parametrize("delay", [0.3, 0.01])  # resumed while running / after it ended
def test_killed_right_after_create_then_resumed_adopts_the_batch(
        crash_driver: CrashDriver, tmp_path: Path, delay: float) -> None:
    crash_driver.route.configure(delay=delay)
    db = tmp_path / "cp.db"
    killed = crash_driver.run(db, "--die-after", "create")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(crash_driver.route.submissions()) == 7
    with sqlite3.connect(db) as conn:  # the crash left the chunk at "creating", no batch id
        assert conn.execute("SELECT state, batch_id FROM batchapi_chunks").fetchall() == [
            ("creating", None), ("intent", None), ("intent", None)]
    time.sleep(delay)
    resumed = crash_driver.run(db)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["done", str(N), "0"]
    crash_driver.check(db)


def test_another_runs_batch_of_the_same_size_is_not_adopted(
        crash_driver: CrashDriver, tmp_path: Path) -> None:
    crash_driver.route.configure(delay=0.01)
    other = crash_driver.run(tmp_path / "other.db", "--die-after", "create")  # same shape
    assert other.returncode == -signal.SIGKILL
    db = tmp_path / "cp.db"
    assert crash_driver.run(db, "--die-after", "create").returncode == -signal.SIGKILL
    time.sleep(0.05)
    resumed = crash_driver.run(db)
    assert resumed.returncode == 0, resumed.stderr
    runs = Counter(s["custom_id"].split("-")[0] for s in crash_driver.route.submissions())
    assert sorted(runs.values()) == [7, N]  # ours: each item once; the other run's 7 left alone


@pytest.mark.parametrize("step", ["intent", "upload"])
def test_killed_before_create_then_resumed_submits_nothing_twice(
        crash_driver: CrashDriver, tmp_path: Path, step: str) -> None:
    crash_driver.route.configure(delay=0.1)
    db = tmp_path / "cp.db"
    assert crash_driver.run(db, "--die-after", step).returncode == -signal.SIGKILL
    assert crash_driver.route.submissions() == []
    resumed = crash_driver.run(db)
    assert resumed.returncode == 0, resumed.stderr
    crash_driver.check(db)
