"""kill -9 a real process mid-run several times; resume; nothing lost, nothing twice."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import crash_worker

WORKER = Path(__file__).resolve().parents[1] / "crash_worker.py"
N = 3000
BATCH = 4
KILLS = 4
# Documented bound (docs/persistence.md): a kill re-executes at most the calls in flight
# (batch_size) plus the outcomes accepted but not yet committed (max_pending).
BOUND_PER_KILL = BATCH + crash_worker.MAX_PENDING


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _committed(db: Path) -> dict[int, str]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT idx, status FROM items"))
    except sqlite3.OperationalError:  # killed before the schema was created
        return {}
    finally:
        conn.close()


def _start(db: Path, log: Path, mode: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(db), str(log), str(N), "--batch-size", str(BATCH),
         *mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--standin"], []], ids=["standin", "runner"])
def test_kill_9_then_resume(tmp_path: Path, mode: list[str]) -> None:
    rng = random.Random(1234)
    db, log = tmp_path / "crash.db", tmp_path / "calls.log"
    kills = 0
    committed_before: dict[int, str] = {}
    for _ in range(KILLS):
        start_calls = _lines(log)
        proc = _start(db, log, mode)
        # Kill at a random point of this attempt's progress (measured in calls made).
        target = start_calls + rng.randint(50, N // (KILLS + 1))
        deadline = time.monotonic() + 60
        while _lines(log) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.random() * 0.02)
        if proc.poll() is not None:  # finished (or failed) before we could kill it
            _out, err = proc.communicate()
            assert proc.returncode == 0, err.decode()[-2000:]
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        committed = _committed(db)
        # Nothing committed before is ever lost by a later kill.
        assert set(committed_before) <= set(committed)
        committed_before = committed
    proc = _start(db, log, mode)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT idx, status, value FROM items ORDER BY idx").fetchall()
    conn.close()
    assert [r[0] for r in rows] == list(range(N))  # every item exactly once
    assert {r[1] for r in rows} == {"ok"}
    assert rows[7][2] == '{"item":7,"square":49}'

    calls = Counter(int(x) for x in log.read_text().split())
    assert set(calls) == set(range(N))
    extra = sum(calls.values()) - N
    assert kills >= 3, f"only {kills} kills landed before the run finished"
    assert extra <= kills * BOUND_PER_KILL, (extra, kills, BOUND_PER_KILL)
