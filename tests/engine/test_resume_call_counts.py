"""Calls repeated after a resume are counted: a run whose process is killed (SIGKILL) mid-run
leaves calls that reached the API unrecorded; its resume makes them again and says so.

The dying call kills its own process right after its answer arrived, one call at a time, so
which calls reached the simulator is known exactly: a kill from outside (or a concurrent
call) could land between a call being journalled and its request arriving, which the
journal counts as made (it over-counts by at most the calls admitted but not yet sent).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import clean_env

from throttlepool.sim import SimConfig, Simulator
from throttlepool.store import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = '''
import os, signal, sys
import requests
from throttlepool import ThreadedBatchRunner

url, db, n, die_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def call(i):
    r = requests.post(url + "/echo", json={"prompt": f"p{i}"}, timeout=10)
    r.raise_for_status()
    if i == die_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return r.json()["result"]

with ThreadedBatchRunner(call, batch_size=1, store=db, run_name="killed",
                         progress=False) as runner:
    result = runner.run(range(n))
print(result.summary())
print(result.stats.calls, result.stats.from_checkpoint,
      getattr(result.stats, "repeated_after_resume", 0))
'''


def test_calls_a_killed_run_lost_are_counted_when_it_resumes(tmp_path: Path) -> None:
    n, die_at = 120, 61
    script, db = tmp_path / "run.py", tmp_path / "ck.sqlite"
    script.write_text(SCRIPT)
    env = clean_env({"PYTHONPATH": str(ROOT)})
    with Simulator(SimConfig(latency=0.01)) as sim:
        killed = subprocess.run([sys.executable, str(script), sim.url, str(db), str(n),
                                 str(die_at)], env=env, capture_output=True, text=True,
                                timeout=120)
        assert killed.returncode == -9, killed.stderr
        resumed = subprocess.run([sys.executable, str(script), sim.url, str(db), str(n), "-1"],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        received = sim.stats()["accepted"]
    summary, counts = resumed.stdout.splitlines()[-2:]
    calls, from_checkpoint, repeated = map(int, counts.split())
    assert 0 < from_checkpoint <= die_at  # the killed run recorded part of what it called
    assert received > n  # calls were made twice
    # Every call the simulator received is reported: by the killed run's checkpointed
    # outcomes, or by the resume (its own calls and those the killed run lost).
    assert from_checkpoint + calls == received
    assert repeated == received - n
    said = f"{calls} calls for {n - from_checkpoint} items; {repeated} repeated after a resume"
    assert said in summary
    store = SQLiteStore(db)
    try:
        totals = store.query("SELECT json_extract(totals, '$.repeated_after_resume') AS rep "
                             "FROM runs")
    finally:
        store.close()
    assert [t["rep"] for t in totals] == [repeated]
    status = subprocess.run(
        [sys.executable, "-m", "throttlepool", "status", "killed", "--db", str(db)],
        env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert said in status.stdout, status.stdout
    # A completed run's journal is gone; a second resume calls nothing and repeats nothing.
    assert not (tmp_path / "ck.sqlite-calls").exists()
