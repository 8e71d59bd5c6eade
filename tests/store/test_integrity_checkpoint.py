"""Issue 12, items 2 and 4: a checkpoint that cannot be written stops the paying at once and
loses no paid answer; a run's recorded status says what happened.

Real SQLite files, a second real process holding the write lock, the CLI as a subprocess,
a real redis-server that dies, real Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import pytest
from _services import RedisServer, private_redis  # noqa: F401 - fixture

from throttlepool import ThreadedBatchRunner
from throttlepool.errors import LimiterUnavailable, StoreError
from throttlepool.outcome import Status
from throttlepool.store import SQLiteStore

REPO = Path(__file__).resolve().parents[2]

# Holds the checkpoint's write lock from another process: "go" takes it, any line frees it.
LOCKER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
sys.stdin.readline()
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
print("released", flush=True)
"""


def recorded(db: Path, run_name: str) -> tuple[str, dict[str, Any], dict[int, Any]]:
    """The stored status, totals and ``{idx: value}`` of a run, read with plain sqlite3."""
    conn = sqlite3.connect(db)
    try:
        run_id, status, totals = conn.execute(
            "SELECT id, status, totals FROM runs WHERE name = ?", (run_name,)).fetchone()
        values = {idx: json.loads(v) if v is not None else None for idx, v in conn.execute(
            "SELECT idx, value FROM items WHERE run_id = ?", (run_id,))}
    finally:
        conn.close()
    return status, json.loads(totals) if totals else {}, values


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ---- item 2: a locked checkpoint -----------------------------------------------------------


def test_locked_checkpoint_stops_calls_at_once_and_keeps_every_paid_answer(
        tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    batch = 4
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert locker.stdin is not None and locker.stdout is not None
    started: list[tuple[float, int]] = []
    locked_at: list[float] = []
    guard = threading.Lock()

    def call(i: int) -> int:
        with guard:
            started.append((time.monotonic(), i))
        if i == 40:  # mid-run, all workers busy: another process takes the write lock
            assert locker.stdin is not None and locker.stdout is not None
            locker.stdin.write("go\n")
            locker.stdin.flush()
            assert locker.stdout.readline().strip() == "locked"
            locked_at.append(time.monotonic())
        time.sleep(0.02)
        return i * 2

    store = SQLiteStore(db, timeout=2.0)
    runner = ThreadedBatchRunner(call, batch_size=batch, retries=0, store=store,
                                 run_name="locked", progress=False)
    try:
        with pytest.raises(StoreError, match="locked") as info:
            runner.run(range(2000))
        raised_at = time.monotonic()
        assert locked_at, "the lock was never taken"
        # No new call once the checkpoint stopped committing: only the calls in flight.
        after = sorted(i for t, i in started if t > locked_at[0])
        assert len(after) <= batch, after
        # Promptly: one --db-timeout (2 s) of waiting for the lock, not the ~9 s of retries.
        assert raised_at - locked_at[0] < 7.0
        called = {i for _, i in started}
        error = info.value
        result = error.result  # type: ignore[attr-defined]
        assert len(result.outcomes) == 2000
        for i in called:  # every answer paid for is in the caller's hands
            assert result.outcomes[i].status is Status.OK and result.outcomes[i].value == 2 * i
        assert {o.status for o in result.outcomes[max(called) + 1:]} == {Status.NOT_ATTEMPTED}
        unrecorded = {o.index: o.value for o in error.unrecorded}  # type: ignore[attr-defined]
        assert unrecorded and set(unrecorded) <= called
        assert f"{len(unrecorded)} outcomes of this run" in str(error)

        # The other process lets go: the writer, still retrying, records them after all.
        locker.stdin.write("release\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "released"
        wait_until(lambda: store.writer.problem is None, 15, "the writer to recover")
        store.flush()
    finally:
        runner.close()
        store.close()
        locker.kill()
        locker.wait()
    status, totals, values = recorded(db, "locked")
    assert values == {i: 2 * i for i in called}  # every paid answer, nothing else
    assert status == "failed"
    assert "cannot be written" in totals["reason"] and "locked" in totals["reason"]


PY_CALLS = """
import os, time
def ask(item):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(item + "\\n")
    time.sleep(0.02)
    return "answer to " + item
"""


def test_cli_keeps_every_paid_answer_in_output_when_the_checkpoint_locks(
        tmp_path: Path) -> None:
    (tmp_path / "lockcalls.py").write_text(PY_CALLS)
    (tmp_path / "items.txt").write_text("".join(f"q{i}\n" for i in range(1000)))
    log, db, out = tmp_path / "calls.log", tmp_path / "runs.db", tmp_path / "out.jsonl"
    log.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("THROTTLEPOOL_")}
    env.update(CALL_LOG=str(log), PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "throttlepool", "run", "items.txt", "--provider",
         "python:lockcalls:ask", "--db", str(db), "--db-timeout", "2", "-b", "4",
         "--retries", "0", "-o", str(out), "--no-progress"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        wait_until(lambda: len(log.read_text().split()) >= 40 or proc.poll() is not None, 60,
                   "40 calls")
        conn.execute("BEGIN IMMEDIATE")  # this process now holds the checkpoint's lock
        calls_at_lock = len(log.read_text().split())
        _, err = proc.communicate(timeout=60)
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    called = log.read_text().split()
    assert len(called) - calls_at_lock <= 4, (calls_at_lock, len(called))
    assert proc.returncode == 2, err
    assert "checkpoint database" in err and "not recorded" in err, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(1000))
    by_input = {r["input"]: r for r in rows}
    for item in called:  # every answer paid for is in --output
        assert by_input[item]["status"] == "ok"
        assert by_input[item]["output"] == f"answer to {item}"
    assert {r["status"] for r in rows if r["input"] not in set(called)} == {"not_attempted"}


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 300 KB tmpfs (root only; skipped where it cannot be mounted), unmounted after."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)],
                                 capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_stops_calls_at_once_and_keeps_every_paid_answer(tiny_disk: Path) -> None:
    db = tiny_disk / "runs.db"
    batch = 4
    called: list[int] = []

    def call(i: int) -> str:
        called.append(i)
        time.sleep(0.002)
        return f"{i:06d}" + "x" * 3000  # the disk fills after some tens of answers

    store = SQLiteStore(db)
    runner = ThreadedBatchRunner(call, batch_size=batch, retries=0, store=store,
                                 run_name="full", progress=False)
    try:
        with pytest.raises(StoreError, match="full") as info:
            runner.run(range(2000))
    finally:
        runner.close()
        with contextlib.suppress(StoreError):
            store.close()
    _, _, values = recorded(db, "full")
    # At most the calls in flight were paid for and not recorded.
    assert len(set(called) - set(values)) <= batch, (len(called), len(values))
    assert all(values[i] == call_value(i) for i in values)
    error = info.value
    result = error.result  # type: ignore[attr-defined]
    for i in called:  # and the caller has every answer
        assert result.outcomes[i].value == call_value(i)
    unrecorded = {o.index for o in error.unrecorded}  # type: ignore[attr-defined]
    assert set(values) | unrecorded == set(called)


def call_value(i: int) -> str:
    return f"{i:06d}" + "x" * 3000


# ---- item 4: statuses that say what happened -------------------------------------------------


def test_input_iterator_raising_is_recorded_as_failed(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"

    def items() -> Iterator[int]:
        yield from range(10)
        raise ValueError("record 10 is unreadable")

    with ThreadedBatchRunner(lambda x: x, batch_size=2, store=str(db), run_name="gen",
                             progress=False) as runner, pytest.raises(ValueError):
        runner.run(items())
    status, totals, values = recorded(db, "gen")
    assert status == "failed"
    assert totals["reason"] == ("the input iterator raised ValueError: record 10 is "
                                "unreadable")
    assert values == {i: i for i in range(10)}


def test_adapter_crash_stops_the_calls_and_is_recorded_as_failed(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    calls: list[int] = []

    def estimate(item: int) -> float:
        if item == 5:
            raise RuntimeError("estimator bug")
        return 1.0

    def call(item: int) -> int:
        calls.append(item)
        time.sleep(0.005)
        return item

    with ThreadedBatchRunner(call, batch_size=2, store=str(db), run_name="crash",
                             estimate=estimate, progress=False) as runner, \
            pytest.raises(RuntimeError, match="estimator bug"):
        runner.run(range(200))
    assert len(calls) <= 5 + 2  # it stopped paying: the other worker only finished its call
    status, totals, _ = recorded(db, "crash")
    assert status == "failed"
    assert totals["reason"] == "RuntimeError: estimator bug"


@pytest.mark.service
def test_limiter_dying_mid_run_is_recorded_as_failed(
        tmp_path: Path, private_redis: RedisServer) -> None:  # noqa: F811
    db = tmp_path / "runs.db"

    def call(item: int) -> int:
        if item == 20:
            private_redis.stop()  # Redis dies under the run
        return item

    with ThreadedBatchRunner(call, batch_size=2, rps=1000, limiter_url=private_redis.url,
                             store=str(db), run_name="redis", progress=False) as runner, \
            pytest.raises(LimiterUnavailable):
        runner.run(range(500))
    status, totals, values = recorded(db, "redis")
    assert status == "failed"
    assert totals["reason"].startswith("LimiterUnavailable: the shared rate limiter")
    assert len(values) < 500


class Unauthorized(Exception):
    def __init__(self) -> None:
        super().__init__("HTTP 401 invalid key")
        self.status_code = 401
        self.response = SimpleNamespace(status_code=401, headers={})


@pytest.mark.parametrize(("case", "reason"), [
    ("deadline", "run deadline reached"),
    ("fatal", "stopped by a fatal error"),
])
def test_a_stop_is_recorded_as_stopped_with_why(tmp_path: Path, case: str, reason: str) -> None:
    db = tmp_path / "runs.db"

    def call(item: int) -> int:
        if case == "fatal" and item == 3:
            raise Unauthorized()
        time.sleep(0.02)
        return item

    with ThreadedBatchRunner(call, batch_size=2, store=str(db), run_name=case,
                             deadline=0.3 if case == "deadline" else None,
                             progress=False) as runner:
        result = runner.run(range(200))
    assert result.stopped is not None
    status, totals, _ = recorded(db, case)
    assert status == "stopped"
    assert totals["reason"].startswith(reason)


SIGINT_WORKER = """
import sys, threading, time
from throttlepool import ThreadedBatchRunner
lock, started = threading.Lock(), []
def call(i):
    with lock:
        started.append(i)
        if len(started) == 4:
            print("started", flush=True)
    time.sleep(60)
    return i
runner = ThreadedBatchRunner(call, batch_size=4, retries=0, store=sys.argv[1],
                             run_name="sig", progress=False)
try:
    runner.run(range(40))
except KeyboardInterrupt:
    print("aborted", flush=True)
    sys.exit(130)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("surface", ["run", "cli"])
def test_second_ctrl_c_records_the_run_as_interrupted(tmp_path: Path, surface: str) -> None:
    db = tmp_path / "runs.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("THROTTLEPOOL_")}
    env["PYTHONPATH"] = str(REPO)
    if surface == "run":
        args = ["-c", SIGINT_WORKER, str(db)]
    else:
        # One line from the first call only: four threads printing at once interleave.
        (tmp_path / "slowcalls.py").write_text(
            "import threading, time\nlock, calls = threading.Lock(), []\n"
            "def ask(item):\n    with lock:\n        calls.append(item)\n"
            "        if len(calls) == 1:\n            print('started', flush=True)\n"
            "    time.sleep(60)\n    return item\n")
        (tmp_path / "items.txt").write_text("".join(f"q{i}\n" for i in range(40)))
        args = ["-m", "throttlepool", "run", "items.txt", "--provider", "python:slowcalls:ask",
                "--db", str(db), "--run-name", "sig", "-b", "4", "--no-progress",
                "-o", str(tmp_path / "out.jsonl")]
    proc = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []

    def pump(stream: IO[str]) -> None:
        for line in stream:
            err_lines.append(line)

    threading.Thread(target=pump, args=(proc.stderr,), daemon=True).start()
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started", "".join(err_lines)
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: any("stopping" in line for line in err_lines), 20,
                   f"the first Ctrl-C to be acknowledged: {''.join(err_lines)}")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(err_lines)
    status, totals, _ = recorded(db, "sig")
    assert status == "interrupted"
    assert totals["reason"] == "aborted before the calls in flight finished"
