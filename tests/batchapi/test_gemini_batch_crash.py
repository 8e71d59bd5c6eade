"""kill -9 the Gemini batch driver after the intent, after the upload, right after the batch
is created (its name never recorded: it is found again by its display name) and while
polling, then run it again: the simulator's log holds each item's request once and the
checkpoint each item once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from throttlepool.sim import Simulator
from throttlepool.sim.gemini_batches import gemini_batches_of

WORKER = str(Path(__file__).with_name("batch_worker.py"))
N = 20  # 3 chunks of at most 7


def _command(sim: Simulator, db: Path, *extra: str) -> list[str]:
    return [sys.executable, WORKER, sim.openai_base_url, str(db), str(N),
            "--provider", "gemini", *extra]


def _run(sim: Simulator, db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(sim, db, *extra), capture_output=True, text=True,
                          timeout=60)


def _check(sim: Simulator, db: Path) -> None:
    submitted = gemini_batches_of(sim).submissions()
    assert Counter(s["custom_id"] for s in submitted) == Counter(
        f"item-{i}" for i in range(N))  # each item sent once, in one batch
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT idx, status, value FROM items ORDER BY idx").fetchall()
        states = conn.execute("SELECT state FROM batchapi_chunks").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(i, "ok") for i in range(N)]
    assert all(f"question {i}" in r[2] for i, r in enumerate(rows))
    assert {s for (s,) in states} == {"done"}


@pytest.mark.parametrize("delay", [0.3, 0.01])  # resumed while running / after it ended
def test_killed_right_after_create_then_resumed_adopts_the_batch(
        sim: Simulator, tmp_path: Path, delay: float) -> None:
    gemini_batches_of(sim).configure(delay=delay)
    db = tmp_path / "cp.db"
    killed = _run(sim, db, "--die-after", "create")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(gemini_batches_of(sim).submissions()) == 7
    with sqlite3.connect(db) as conn:  # the crash left the chunk at "creating", no batch name
        assert [r[:2] for r in conn.execute(
            "SELECT state, batch_id FROM batchapi_chunks ORDER BY chunk")] == [
            ("creating", None), ("intent", None), ("intent", None)]
    time.sleep(delay)
    resumed = _run(sim, db)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["done", str(N), "0"]
    _check(sim, db)


@pytest.mark.parametrize("step", ["intent", "upload"])
def test_killed_before_create_then_resumed_submits_nothing_twice(
        sim: Simulator, tmp_path: Path, step: str) -> None:
    gemini_batches_of(sim).configure(delay=0.1)
    db = tmp_path / "cp.db"
    assert _run(sim, db, "--die-after", step).returncode == -signal.SIGKILL
    assert gemini_batches_of(sim).submissions() == []
    resumed = _run(sim, db)
    assert resumed.returncode == 0, resumed.stderr
    _check(sim, db)


def test_killed_while_polling_then_resumed_polls_the_same_batches(
        sim: Simulator, tmp_path: Path) -> None:
    gemini_batches_of(sim).configure(delay=2.0)
    db = tmp_path / "cp.db"
    proc = subprocess.Popen(_command(sim, db), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while len({s["batch_id"] for s in gemini_batches_of(sim).submissions()}) < 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    resumed = _run(sim, db)
    assert resumed.returncode == 0, resumed.stderr
    _check(sim, db)
