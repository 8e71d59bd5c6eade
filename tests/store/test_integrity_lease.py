"""Issue 12 item 3 (and the display half of 4): one process owns a run at a time.

Real CLI processes on one checkpoint file, a Python function that logs every call (by pid) to
a file and can be held at a gate, ``kill -9``, and lease rows written by hand to stand for an
owner on another host.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from throttlepool.errors import RunInUse
from throttlepool.outcome import Outcome, RunStats, Status
from throttlepool.store import SQLiteStore, item_key, list_runs, run_status

N = 40
RUN = ["run", "in.jsonl", "-p", "python:tp_gate_calls:ask", "--db", "x.db", "--run-name", "r",
       "-b", "5", "-q"]
# Each call appends its process id to calls.log first, then waits until gate.open exists:
# the test decides when calls may finish, so two processes surely overlap.
GATE_MODULE = '''
import os, time

def ask(item):
    fd = os.open("calls.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"%d\\n" % os.getpid())
    os.close(fd)
    while not os.path.exists("gate.open"):
        time.sleep(0.01)
    return {"echo": item}
'''
OTHER_HOST = "other-box"


def env() -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("THROTTLEPOOL_")}
    full["THROTTLEPOOL_NO_TIKTOKEN"] = "1"
    return full


def start(cwd: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "throttlepool", *RUN, *extra], cwd=cwd,
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "throttlepool", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=120)


def calls(cwd: Path) -> list[int]:
    log = cwd / "calls.log"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def wait_for(predicate: object, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "tp_gate_calls.py").write_text(GATE_MODULE)
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(N)))
    return tmp_path


def open_gate(cwd: Path) -> None:
    (cwd / "gate.open").write_text("")


def test_two_processes_on_one_run_pay_once_and_the_second_names_the_holder(
        work: Path) -> None:
    procs = [start(work, "-o", "a.jsonl"), start(work, "-o", "b.jsonl")]
    try:
        # The owner is held at the gate; the other one must give up by itself.
        wait_for(lambda: any(p.poll() is not None for p in procs), timeout=45)
    finally:
        open_gate(work)
    results = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], (codes, results)
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    err = results[loser][1]
    assert "run in use" in err
    assert f"pid {procs[winner].pid} on host {socket.gethostname()}" in err
    assert "--run-name" in err
    made = calls(work)
    assert len(made) == N  # never 2x
    assert set(made) == {procs[winner].pid}


def test_kill_9_of_the_owner_then_status_says_interrupted_and_a_rerun_resumes_at_once(
        work: Path) -> None:
    owner = start(work, "-o", "a.jsonl")
    try:
        assert wait_for(lambda: len(calls(work)) >= 1), "the owner never started calling"
        alive = cli(work, "status", "--db", "x.db")
        assert alive.returncode == 0, alive.stderr
        assert f"running (pid {owner.pid} on {socket.gethostname()})" in alive.stdout
        owner.send_signal(signal.SIGKILL)
        owner.communicate(timeout=30)
    finally:
        if owner.poll() is None:
            owner.kill()
    before = len(calls(work))
    shown = cli(work, "status", "--db", "x.db")
    assert f"interrupted (owner pid {owner.pid} gone)" in shown.stdout, shown.stdout
    one = cli(work, "status", "r", "--db", "x.db", "--json")
    info = json.loads(one.stdout)
    assert info["status"] == "interrupted" and info["recorded_status"] == "running"
    assert info["owner"]["pid"] == owner.pid

    open_gate(work)
    t0 = time.monotonic()
    rerun = cli(work, *RUN, "-o", "a.jsonl")
    elapsed = time.monotonic() - t0
    assert rerun.returncode == 0, rerun.stderr
    # At once: a dead owner on this host frees the run without waiting out the 30 s lease.
    assert elapsed < 25, elapsed
    rows = [json.loads(line) for line in (work / "a.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok"] * N
    assert len(calls(work)) <= before + N  # the killed calls, then at most each item once
    assert cli(work, "status", "--db", "x.db").stdout.splitlines()[1].split()[-1] == "completed"


def set_lease(db: Path, *, age: float, ttl: float = 30.0, pid: int = 4242) -> None:
    now = time.time()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        run_id = conn.execute("SELECT id FROM runs WHERE name = 'r'").fetchone()[0]
        conn.execute("UPDATE runs SET status = 'running', finished = NULL")
        conn.execute(
            "INSERT OR REPLACE INTO leases (run_id, host, machine, pid, token, since, "
            "heartbeat, expires, released) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (run_id, OTHER_HOST, f"{OTHER_HOST}|boot|pid:[1]", pid, "their-token",
             "2026-01-01T00:00:00+00:00", now - age, now - age + ttl))
    finally:
        conn.close()


def test_a_live_lease_of_another_host_is_refused_and_an_expired_one_taken_over(
        work: Path) -> None:
    open_gate(work)
    first = cli(work, *RUN, "-o", "a.jsonl")
    assert first.returncode == 0, first.stderr
    assert len(calls(work)) == N

    set_lease(work / "x.db", age=2)
    assert "running (pid 4242 on other-box)" in cli(work, "status", "--db", "x.db").stdout
    refused = cli(work, *RUN, "-o", "b.jsonl")
    assert refused.returncode == 2, refused.stderr
    assert "run in use" in refused.stderr and "pid 4242 on host other-box" in refused.stderr
    assert "since 2026-01-01T00:00:00+00:00" in refused.stderr

    set_lease(work / "x.db", age=100)  # its owner stopped renewing 70 s ago
    shown = cli(work, "status", "--db", "x.db").stdout
    assert "interrupted (owner pid 4242 on other-box silent since" in shown, shown
    taken = cli(work, *RUN, "-o", "c.jsonl")
    assert taken.returncode == 0, taken.stderr
    assert len(calls(work)) == N  # all from the checkpoint
    lease = run_status(str(work / "x.db"), "r")["owner"]
    assert lease["host"] == socket.gethostname() and lease["released"] is not None


def test_a_0_1_checkpoint_is_migrated_and_keeps_its_rows(work: Path) -> None:
    open_gate(work)
    assert cli(work, *RUN, "-o", "a.jsonl").returncode == 0
    # What 0.1 wrote: the same tables without leases, schema version 1.
    conn = sqlite3.connect(work / "x.db", isolation_level=None)
    conn.execute("DROP TABLE IF EXISTS leases")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    again = cli(work, *RUN, "-o", "b.jsonl")
    assert again.returncode == 0, again.stderr
    assert len(calls(work)) == N
    conn = sqlite3.connect(work / "x.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 2  # 3 added samples
    assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == N
    assert conn.execute("SELECT count(*) FROM leases").fetchone()[0] == 1
    conn.close()


def ok(i: int) -> Outcome[int]:
    return Outcome(i, i, Status.OK, value=i, key=item_key({"f": "t"}, i))


def test_one_process_two_stores_one_run_and_a_lost_lease_stops_recording(
        tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    a = SQLiteStore(db, lease_ttl=0.6)
    b = SQLiteStore(db)
    try:
        rid = a.begin_run("r", {})
        assert a.begin_run("r", {}) == rid  # the owner may reopen its own run
        with pytest.raises(RunInUse, match=f"pid {os.getpid()} on host"):
            b.begin_run("r", {})
        a.record(rid, ok(0))
        a.finish_run(rid, RunStats(total=1, done=1), "completed")
        a.flush()
        assert b.begin_run("r", {}) == rid  # released by finish_run
        b.finish_run(rid, RunStats(total=1, done=1), "completed")
        b.flush()

        rid = a.begin_run("r", {})
        # Another host took the run over (a's renewals stalled past the expiry).
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("UPDATE leases SET token = 'theirs', host = ?, machine = ?, pid = 4242, "
                     "expires = ? WHERE run_id = ?",
                     (OTHER_HOST, OTHER_HOST, time.time() + 60, rid))
        conn.close()

        def refused() -> bool:
            try:
                a.record(rid, ok(1))
            except RunInUse:
                return True
            return False

        assert wait_for(refused, timeout=20)
        assert [r["status_detail"] for r in list_runs(db)] == ["running (pid 4242 on other-box)"]
    finally:
        b.close()
        a.close()


def test_status_of_a_finished_run_says_why_it_stopped(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    with SQLiteStore(db) as s:
        rid = s.begin_run("r", {})
        s.finish_run(rid, RunStats(total=3, done=1), "stopped",
                     reason="LimiterUnavailable: redis at localhost:6379 is unreachable")
    shown = cli(tmp_path, "status", "--db", "x.db")
    assert "stopped (LimiterUnavailable: redis at localhost:6379 is unreachable)" in shown.stdout
    assert run_status(db, "r")["status"] == "stopped"
