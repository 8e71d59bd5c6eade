"""Issue 11 leftover: ``run -o`` rows carry each item's real ``started``/``finished`` (its
first call's start and its last answer, ISO-8601 UTC), the same as ``export`` gives from the
checkpoint, and a rerun answered from the checkpoint writes the same times again. Through
the CLI against the simulator (the Dask executor: tests/distributed/test_dask_cli_providers.py)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from tests.helpers import read_jsonl, run_cli
from throttlepool.sim import Simulator
from throttlepool.store.report import export_rows

N = 5


def seconds(iso: object) -> float:
    assert isinstance(iso, str) and iso.endswith("+00:00"), iso
    return dt.datetime.fromisoformat(iso).timestamp()


def test_run_rows_carry_the_calls_times_as_export_and_a_resume_do(sim: Simulator,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "q.txt").write_text("".join(f"question {i}\n" for i in range(N)))
    # The plain HTTP provider: the same engine as the SDKs', a second sooner to start.
    args = ["run", "q.txt", "--provider", "http", "--base-url", f"{sim.url}/echo",
            "--extract", "result", "--db", "t.db", "--run-name", "r", "--no-progress",
            "--batch-size", "2"]
    env: dict[str, str] = {}
    before = time.time()
    first = run_cli([*args, "-o", "out.jsonl"], tmp_path, env=env)
    after = time.time()
    assert first.returncode == 0, first.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [r["status"] for r in rows] == ["ok"] * N
    for r in rows:
        started, finished = seconds(r["started"]), seconds(r["finished"])
        assert before - 0.001 <= started <= finished <= after + 0.001, r
        assert abs((finished - started) - float(r["latency"])) <= 0.002, r  # type: ignore[arg-type]
    times = [(r["started"], r["finished"]) for r in rows]
    _, exported = export_rows(str(tmp_path / "t.db"), "r")  # what `export` writes
    assert [(e["started"], e["finished"]) for e in exported] == times
    # The same command again: every answer comes from the checkpoint, with its times.
    again = run_cli([*args, "-o", "again.jsonl"], tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert "5 from the checkpoint" in again.stderr, again.stderr
    assert [(r["started"], r["finished"]) for r in read_jsonl(tmp_path / "again.jsonl")
            ] == times
