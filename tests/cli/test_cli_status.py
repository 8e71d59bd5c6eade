"""Issue 13, item 8: `status` and `export` for people, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from throttlepool.cli import cli as cli_group
from throttlepool.cli.progress import summary
from throttlepool.outcome import Outcome, RunStats, Status
from throttlepool.store import SQLiteStore

FNS = '''
import os
FAIL_ONCE = os.path.join(os.path.dirname(__file__), "failed-once")

def flaky(prompt):
    if prompt == "b" and not os.path.exists(FAIL_ONCE):
        open(FAIL_ONCE, "w").close()
        raise ConnectionError("reset by peer")
    return prompt.upper()
'''


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THROTTLEPOOL_")}
    env["PYTHONPATH"] = str(cwd)
    return subprocess.run([sys.executable, "-m", "throttlepool", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def make_run(tmp_path: Path) -> None:
    (tmp_path / "fns.py").write_text(FNS)
    (tmp_path / "in.txt").write_text("a\nb\nc\n")
    r = cli(tmp_path, "run", "in.txt", "--provider", "python:fns:flaky", "--db", "t.db",
            "--run-name", "job", "-q", "-o", "out.jsonl")
    assert r.returncode == 0, r.stderr


def test_status_is_a_table_with_headers_and_a_readable_detail(tmp_path: Path) -> None:
    make_run(tmp_path)
    table = cli(tmp_path, "status", "--db", "t.db").stdout.splitlines()
    assert table[0].split() == ["NAME", "OK", "FAILED", "OF", "CALLS", "COST", "CREATED",
                                "FINISHED", "ID", "STATUS"]
    assert table[1].split()[:5] == ["job", "3", "0", "3", "4"]  # 4 calls: b was retried
    detail = cli(tmp_path, "status", "job", "--db", "t.db").stdout
    assert "3 ok, 0 failed, 0 not attempted, of 3" in detail
    assert "calls      4 (1 of them retries)" in detail
    assert "last session  4 calls" in detail
    assert "started" not in detail and "902." not in detail
    info = json.loads(cli(tmp_path, "status", "job", "--db", "t.db", "--json").stdout)
    assert "started" not in info["totals"]  # a monotonic clock reading means nothing later
    assert info["items"]["calls"] == info["totals"]["calls"] == 4
    assert info["items"]["first_started"].endswith("+00:00")


def test_calls_stay_the_attempts_recorded_after_a_resume(tmp_path: Path) -> None:
    make_run(tmp_path)
    again = cli(tmp_path, "run", "in.txt", "--provider", "python:fns:flaky", "--db", "t.db",
                "--run-name", "job", "-q", "-o", "out.jsonl")
    assert again.returncode == 0, again.stderr
    runs = json.loads(cli(tmp_path, "status", "--db", "t.db", "--json").stdout)
    assert runs[0]["calls"] == 4 and runs[0]["failed"] == 0 and runs[0]["total"] == 3
    detail = cli(tmp_path, "status", "job", "--db", "t.db").stdout
    assert "calls      4 (1 of them retries)" in detail and "last session  0 calls" in detail


def test_missing_directories_are_named_not_created_nor_a_traceback(tmp_path: Path) -> None:
    make_run(tmp_path)
    r = cli(tmp_path, "run", "in.txt", "--provider", "python:fns:flaky",
            "--db", "nowhere/sub/t.db", "-q")
    assert r.returncode == 2 and "nowhere/sub does not exist" in r.stderr, r.stderr
    assert not (tmp_path / "nowhere").exists()
    r = cli(tmp_path, "export", "job", "--db", "t.db", "-o", "missing/x.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"the directory {tmp_path / 'missing'} does not exist" in r.stderr, r.stderr


def test_the_runs_table_counts_the_calls_made_again_as_the_detail_does(tmp_path: Path) -> None:
    """Trial 11: a resume after a kill paid 240 calls for 120 items; the table said 120."""
    db = str(tmp_path / "t.db")
    store = SQLiteStore(db)
    run_id = store.begin_run("job", {})
    for i in range(3):
        store.record(run_id, Outcome(i, f"p{i}", Status.OK, value="x", attempts=1,
                                     key=f"k{i}"))
    stats = RunStats(total=3, done=3, calls=6, repeated_after_resume=3, wall_time=2.0)
    store.finish_run(run_id, stats, "completed")
    store.close()
    runner = CliRunner()
    table = runner.invoke(cli_group, ["status", "--db", db]).output.splitlines()
    assert table[1].split()[:5] == ["job", "3", "0", "3", "6"]
    detail = runner.invoke(cli_group, ["status", "job", "--db", db]).output
    assert "calls      6 (0 of them retries; 3 made again" in detail
    assert "last session  6 calls for 3 items; 3 repeated after a resume" in detail
    # the rate is this session's: 3 calls in 2 s, not the 6 that include the dead session's
    assert "6 calls for 3 items; 3 repeated after a resume" in summary(stats, Counter(),
                                                                       total=3)[1]
    assert summary(stats, Counter(), total=3)[1].endswith("2.0s wall, 1.5 calls/s")


def test_the_summary_gives_a_per_minute_rate_only_for_a_run_of_a_minute_or_more() -> None:
    """60 calls in 7.6 s under 60 per 10 s read "7.9 calls/s (474/min)" beside a limit of
    360/min: a minute's figure stretched from a burst the limit allows."""
    short = RunStats(calls=60, done=60, wall_time=7.6)
    assert "(474/min)" not in summary(short, Counter(), total=60)[1]
    long = RunStats(calls=600, done=600, wall_time=100.0)
    assert summary(long, Counter(), total=600)[1].endswith("6.0 calls/s (360/min)")


def test_status_and_export_take_the_input_file_for_its_latest_run(tmp_path: Path) -> None:
    """``throttlepool status prompts.jsonl`` (the help's example) names runs of that input,
    which the CLI calls ``prompts.jsonl-<hash>``: the newest one is shown."""
    db = str(tmp_path / "t.db")
    store = SQLiteStore(db)
    for name, n in (("prompts.jsonl-0000aaaa", 1), ("other.jsonl-0000cccc", 3),
                    ("prompts.jsonl-1111bbbb", 2)):
        run_id = store.begin_run(name, {})
        for i in range(n):
            store.record(run_id, Outcome(i, f"p{i}", Status.OK, value="x", attempts=1,
                                         key=f"k{i}"))
        store.finish_run(run_id, RunStats(total=n, done=n, calls=n), "completed")
        time.sleep(0.01)  # created times apart
    store.close()
    runner = CliRunner()
    detail = runner.invoke(cli_group, ["status", "prompts.jsonl", "--db", db])
    assert detail.exit_code == 0, detail.output
    assert "run prompts.jsonl-1111bbbb" in detail.output and "2 ok" in detail.output
    exported = runner.invoke(cli_group, ["export", "data/prompts.jsonl", "--db", db])
    assert exported.exit_code == 0 and len(exported.output.splitlines()) == 2
    missing = runner.invoke(cli_group, ["status", "nothing.jsonl", "--db", db])
    assert missing.exit_code != 0
