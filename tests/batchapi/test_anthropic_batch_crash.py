"""kill -9 the Anthropic batch driver right after the batch is created (its id never
recorded: Message Batches have no metadata to find it by), and at the other steps, then run
it again: the simulator's log holds each item's request once and the checkpoint each item
once."""

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
from throttlepool.sim.anthropic_batches import anthropic_batches_of

WORKER = str(Path(__file__).with_name("batch_worker.py"))
N = 20  # 3 chunks of at most 7


def _run(sim: Simulator, db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, WORKER, sim.openai_base_url, str(db), str(N),
                           "--provider", "anthropic", *extra],
                          capture_output=True, text=True, timeout=60)


def _indices(sim: Simulator) -> Counter[int]:
    return Counter(int(s["custom_id"].rsplit("-", 1)[1])
                   for s in anthropic_batches_of(sim).submissions())


def _check(sim: Simulator, db: Path) -> None:
    submitted = anthropic_batches_of(sim).submissions()
    assert Counter(s["custom_id"] for s in submitted).most_common(1)[0][1] == 1
    assert _indices(sim) == Counter(range(N))  # each item sent once, in one batch
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT idx, status, value FROM items ORDER BY idx").fetchall()
        states = conn.execute("SELECT state FROM batchapi_chunks").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(i, "ok") for i in range(N)]
    assert all(f"question {i}" in r[2] for i, r in enumerate(rows))
    assert {s for (s,) in states} == {"done"}


@pytest.mark.parametrize("delay", [0.3, 0.01])  # resumed while running / after it ended
def test_killed_right_after_create_then_resumed_adopts_the_batch(
        sim: Simulator, tmp_path: Path, delay: float) -> None:
    anthropic_batches_of(sim).configure(delay=delay)
    db = tmp_path / "cp.db"
    killed = _run(sim, db, "--die-after", "create")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(anthropic_batches_of(sim).submissions()) == 7
    with sqlite3.connect(db) as conn:  # the crash left the chunk at "creating", no batch id
        assert conn.execute("SELECT state, batch_id FROM batchapi_chunks").fetchall() == [
            ("creating", None), ("intent", None), ("intent", None)]
    time.sleep(delay)
    resumed = _run(sim, db)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["done", str(N), "0"]
    _check(sim, db)


def test_another_runs_batch_of_the_same_size_is_not_adopted(
        sim: Simulator, tmp_path: Path) -> None:
    anthropic_batches_of(sim).configure(delay=0.01)
    other = _run(sim, tmp_path / "other.db", "--die-after", "create")  # another run, same shape
    assert other.returncode == -signal.SIGKILL
    db = tmp_path / "cp.db"
    assert _run(sim, db, "--die-after", "create").returncode == -signal.SIGKILL
    time.sleep(0.05)
    resumed = _run(sim, db)
    assert resumed.returncode == 0, resumed.stderr
    runs = Counter(s["custom_id"].split("-")[0] for s in anthropic_batches_of(sim).submissions())
    assert sorted(runs.values()) == [7, N]  # ours: each item once; the other run's 7 left alone


@pytest.mark.parametrize("step", ["intent", "upload"])
def test_killed_before_create_then_resumed_submits_nothing_twice(
        sim: Simulator, tmp_path: Path, step: str) -> None:
    anthropic_batches_of(sim).configure(delay=0.1)
    db = tmp_path / "cp.db"
    assert _run(sim, db, "--die-after", step).returncode == -signal.SIGKILL
    assert anthropic_batches_of(sim).submissions() == []
    resumed = _run(sim, db)
    assert resumed.returncode == 0, resumed.stderr
    _check(sim, db)
