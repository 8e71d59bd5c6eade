"""Issue 14 item 2 in the progress display: a run limited in input and output tokens apart
(ITPM/OTPM) shows each kind's rate against its own limit, by name, and its ETA counts each
kind's windows; on the fake clock, and once through the CLI against the simulator."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import run_cli
from throttlepool._progress_line import RateWindow, eta, fields, fit
from throttlepool.outcome import RunStats
from throttlepool.progress import status_line
from throttlepool.sim import Simulator
from throttlepool.testing import FakeClock

IO_LIMITS = ((50.0, 60.0, "requests"), (400_000.0, 60.0, "input_tokens"),
             (80_000.0, 60.0, "output_tokens"))


def test_the_line_names_the_input_and_output_limits() -> None:
    clock = FakeClock(0.0)
    stats = RunStats(total=100, started=0.0, limits=IO_LIMITS)
    meter = RateWindow(interval=10.0)
    meter.sample(stats, clock.now())
    clock.advance(60.0)  # limits per minute: their rates are over whole minutes
    stats.done = stats.calls = 45
    stats.input_tokens, stats.output_tokens = 12_300, 3100
    rates = meter.sample(stats, clock.now())
    parts = fields(stats, now=clock.now(), active=60.0, rates=rates, desc="q.txt")
    line = fit(parts, 79, 0.45)
    assert "in 12.3k/400k tok/min(60s), out 3.1k/80k" in line, line
    assert "req/min(60s)=45/50" in line, line
    # The two kinds say more than their sum, which no limit counts: not shown beside them.
    assert "tok/min(60s)=" not in line, line


def test_one_kind_limited_still_shows_both_and_a_tokens_limit_keeps_its_field() -> None:
    stats = RunStats(total=4, done=1, calls=1, input_tokens=600, output_tokens=60,
                     started=1.0, limits=((1000.0, 60.0, "output_tokens"),
                                          (90_000.0, 60.0, "tokens")))
    line = status_line(stats, now=61.0)
    assert "in 600 tok/min(60s), out 60/1k" in line, line
    assert "tok/min(60s)=660/90k" in line, line


def test_the_eta_counts_output_token_windows_not_requests() -> None:
    # 10 calls so far at 100 output tokens each; 90 left at 1000 output tokens a minute
    # need 9000 tokens: 8 more windows after the first. Read as requests, 90 of "1000"
    # would fit in the first window (the ETA would be the throughput's ~1 s).
    stats = RunStats(total=100, done=10, calls=10, input_tokens=50, output_tokens=1000,
                     started=0.0, limits=((1000.0, 60.0, "output_tokens"),))
    estimate = eta(stats, now=1.0, active=1.0)
    assert estimate is not None and estimate >= 8 * 60.0


def test_the_cli_progress_shows_the_input_and_output_limits(sim: Simulator,
                                                             tmp_path: Path) -> None:
    (tmp_path / "q.txt").write_text("".join(f"question {i}\n" for i in range(4)),
                                    encoding="utf-8")
    r = run_cli(["run", "q.txt", "-m", "gpt-4o-mini", "--base-url", sim.openai_base_url,
                 "--no-db", "--itpm", "400000", "--otpm", "80000", "-o", "out.jsonl"],
                tmp_path, env={"OPENAI_API_KEY": "sk-test-io"})
    assert r.returncode == 0, r.stderr
    # Not a terminal: periodic lines, and the final one when the run ends.
    assert re.search(r"in [\d.]+k?/400k tok/min\S*, out [\d.]+k?/80k", r.stderr), r.stderr
