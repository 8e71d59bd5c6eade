"""Issue 12 item 5: a damaged checkpoint is refused before any call (exit 2, how to recover).

A real CLI run fills a real checkpoint file; the test then damages the file's bytes (an
index page, a truncation, garbage) and runs again, counting calls in a log file.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from throttlepool.errors import CheckpointDamaged
from throttlepool.outcome import Outcome, Status
from throttlepool.store import SQLiteStore, item_key

N = 200
RUN = ["run", "in.jsonl", "-p", "python:tp_count_calls:ask", "--db", "x.db", "--run-name", "r",
       "-q", "-o", "out.jsonl"]
COUNT_MODULE = '''
import os

def ask(item):
    fd = os.open("calls.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"1\\n")
    os.close(fd)
    return {"echo": item}
'''


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THROTTLEPOOL_")}
    env["THROTTLEPOOL_NO_TIKTOKEN"] = "1"
    return subprocess.run([sys.executable, "-m", "throttlepool", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def calls(cwd: Path) -> int:
    log = cwd / "calls.log"
    return len(log.read_text().split()) if log.exists() else 0


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A finished run of N items in x.db (its WAL merged into the file by the last close)."""
    (tmp_path / "tp_count_calls.py").write_text(COUNT_MODULE)
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(N)))
    first = cli(tmp_path, *RUN)
    assert first.returncode == 0, first.stderr
    assert calls(tmp_path) == N
    assert not (tmp_path / "x.db-wal").exists()
    return tmp_path


def page_of(db: Path, name: str) -> tuple[int, int]:
    """(offset, size) of the root page of table or index ``name`` in the file."""
    conn = sqlite3.connect(db)
    try:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                            (name,)).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return (root - 1) * size, size


def scribble(db: Path, offset: int, length: int, seed: int) -> None:
    """Overwrite ``length`` bytes at ``offset`` with seeded random bytes that differ."""
    with open(db, "r+b") as fh:
        fh.seek(offset)
        old = fh.read(length)
        rng = random.Random(seed)
        new = bytes((b + rng.randrange(1, 256)) % 256 for b in old)
        fh.seek(offset)
        fh.write(new)


def expect_damaged(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "throttlepool: the checkpoint is damaged: checkpoint database x.db" in r.stderr
    assert ".dump" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bytes_in_the_runs_name_index_cells_stop_before_any_call(
        work: Path, seed: int) -> None:
    # The bytes of the index entries, not the page header: every page still parses (this is
    # what made 0.1 start a second run of the same name and call all 200 items again).
    offset, size = page_of(work / "x.db", "runs_name")
    with open(work / "x.db", "rb") as fh:
        fh.seek(offset + 5)
        content_start = int.from_bytes(fh.read(2), "big")
    scribble(work / "x.db", offset + content_start, size - content_start, seed)
    expect_damaged(cli(work, *RUN))
    assert calls(work) == N  # zero calls
    expect_damaged(cli(work, "status", "--db", "x.db"))
    conn = sqlite3.connect(work / "x.db")
    assert conn.execute("SELECT count(*) FROM runs NOT INDEXED").fetchone()[0] == 1
    conn.close()


@pytest.mark.parametrize("damage", ["whole index page", "truncated", "garbage", "header"])
def test_a_damaged_or_foreign_file_stops_before_any_call(work: Path, damage: str) -> None:
    db = work / "x.db"
    if damage == "whole index page":
        offset, size = page_of(db, "sqlite_autoindex_items_1")
        scribble(db, offset, size, 7)
    elif damage == "truncated":
        os.truncate(db, db.stat().st_size // 2)
    elif damage == "garbage":
        db.write_bytes(random.Random(3).randbytes(20_000))
    else:
        scribble(db, 0, 100, 5)
    expect_damaged(cli(work, *RUN))
    assert calls(work) == N


def test_damage_met_in_the_middle_of_a_run_is_checkpoint_damaged(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    ident = {"f": "t"}
    big = "x" * 20_000  # a value on a chain of overflow pages, read only when it is needed
    with SQLiteStore(db) as s:
        rid = s.begin_run("r", {})
        for i in range(3):
            s.record(rid, Outcome(i, i, Status.OK, value=big, key=item_key(ident, i)))
    s = SQLiteStore(db)
    try:
        rid = s.begin_run("r", {})  # the file is sound at open; it is damaged after
        conn = sqlite3.connect(db)
        pages = [p for (p,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'items' AND pagetype = 'overflow'")]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
        assert pages
        with open(db, "r+b") as fh:
            for page in pages:  # each overflow page starts with the number of the next one
                fh.seek((page - 1) * size)
                fh.write((0x7FFFFFF0).to_bytes(4, "big"))
        # Another process's commit makes the store drop the pages it had cached.
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("INSERT INTO cache (key, value, created) VALUES ('k', '1', 0)")
        other.close()
        with pytest.raises(CheckpointDamaged, match=r"x\.db is damaged"):
            s.prior(rid, 0, item_key(ident, 0))
    finally:
        s.close()
