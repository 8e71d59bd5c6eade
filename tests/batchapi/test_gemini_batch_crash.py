"""kill -9 the Gemini batch driver after the intent, after the upload and right after the
batch is created (its name never recorded: it is found again by its display name), then run
it again: the simulator's log holds each item's request once and the checkpoint each item
once. (Killed while polling: test_batchapi_crash.py, for OpenAI and Gemini.)"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.batchapi.conftest import CrashDriver, N

PROVIDER = "gemini"


@pytest.mark.parametrize("delay", [0.3, 0.01])  # resumed while running / after it ended
def test_killed_right_after_create_then_resumed_adopts_the_batch(
        crash_driver: CrashDriver, tmp_path: Path, delay: float) -> None:
    crash_driver.route.configure(delay=delay)
    db = tmp_path / "cp.db"
    killed = crash_driver.run(db, "--die-after", "create")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(crash_driver.route.submissions()) == 7
    with sqlite3.connect(db) as conn:  # the crash left the chunk at "creating", no batch name
        assert [r[:2] for r in conn.execute(
            "SELECT state, batch_id FROM batchapi_chunks ORDER BY chunk")] == [
            ("creating", None), ("intent", None), ("intent", None)]
    time.sleep(delay)
    resumed = crash_driver.run(db)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["done", str(N), "0"]
    crash_driver.check(db)


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
