#!/usr/bin/env python
"""Two CLI processes sharing one SQLite limiter file against the simulator (issue 16).

    PYTHONPATH=TREE python scripts/sqlite_limiter_trials.py TRIALS [--dir /tmp/sq16/x]

Each trial starts a simulator (6 requests per 1 s window, 0.3 s latency) in this process,
creates the limiter file with triggers that record every insert, move and delete of a row
(inside the backend's own transactions: no logging in the processes, which hid the fault),
runs two ``throttlepool run`` copies of 45 items each at ``--rate-limit 6/second`` and
prints the 429s the simulator sent beside the rows moved to before their own insert (a
handle that named another row). Run it from outside the tree (``python -m`` puts the
working directory first on the path) and beside a CPU burner to load the machine.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from throttlepool.limiter.sqlite_shared import _SCHEMA
from throttlepool.sim import SimConfig
from throttlepool.sim.server import Simulator

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
_HISTORY = f"""
CREATE TABLE hist (op TEXT, id INTEGER, old_ts REAL, new_ts REAL, at REAL);
CREATE TRIGGER hi AFTER INSERT ON admissions BEGIN
  INSERT INTO hist VALUES ('ins', new.id, NULL, new.ts, {_NOW}); END;
CREATE TRIGGER hu AFTER UPDATE ON admissions BEGIN
  INSERT INTO hist VALUES ('upd', new.id, old.ts, new.ts, {_NOW}); END;
CREATE TRIGGER hd AFTER DELETE ON admissions BEGIN
  INSERT INTO hist VALUES ('del', old.id, old.ts, NULL, {_NOW}); END;
"""


def trial(d: Path) -> tuple[int, int]:
    """One trial in directory ``d``: (429s sent, rows moved before their insert)."""
    d.mkdir(parents=True, exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    db = d / "lim.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(_SCHEMA + ";" + _HISTORY)
    con.close()
    sim = Simulator(SimConfig(rpm=6, window=1.0, latency=0.3)).start()
    procs = []
    for name in "ab":
        (d / f"in{name}.txt").write_text("".join(f"{name} prompt {i}\n" for i in range(45)))
        env = dict(os.environ, OPENAI_API_KEY="sk-test")
        with open(d / f"err{name}.txt", "w") as err:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "throttlepool", "run", str(d / f"in{name}.txt"),
                 "--model", "sim", "--base-url", sim.openai_base_url,
                 "--rate-limit", "6/second", "--limiter-url", f"sqlite:///{db}",
                 "--db", str(d / f"ck{name}.db"), "-o", str(d / f"out{name}.jsonl")],
                env=env, cwd=d, stdout=subprocess.DEVNULL, stderr=err))
    for p in procs:
        p.wait()
    sent_429 = int(sim.stats()["rate_limited"])
    sim.stop()
    born: dict[int, float] = {}
    stale = 0
    with sqlite3.connect(db) as con:
        for op, row, new_ts in con.execute("SELECT op, id, new_ts FROM hist ORDER BY rowid"):
            if op == "ins":
                born[row] = new_ts
            elif op == "upd" and new_ts < born[row] - 1e-3:
                stale += 1
    return sent_429, stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trials", type=int)
    parser.add_argument("--dir", default=f"/tmp/sqlite-trials-{int(time.time())}")
    args = parser.parse_args()
    hit = 0
    for k in range(args.trials):
        sent_429, stale = trial(Path(args.dir) / str(k))
        hit += sent_429 > 0
        print(f"trial {k}: 429s {sent_429}, rows moved before their insert {stale}", flush=True)
    print(f"trials with 429s: {hit} of {args.trials}")


if __name__ == "__main__":
    main()
