"""The CLI's live progress in a real pseudo-terminal (80x24) against the simulator.

The run is ``python -m throttlepool``'s entry point with one change: the client's per-minute
limit is scaled to the same count per 6 s (``--rpm 60`` becomes 6 requests per 6 s), since
the CLI can only say per minute. The limiter, the engine and the display run unchanged, and
a 6 s wait shows everything a 60 s one does (a dozen redraws, a countdown), in a tenth of
the time on a shared box. The simulator enforces the same 6-per-6 s budget.

The terminal's output is replayed through a small emulator (carriage return, line feed,
erase-line) that records every screen line as it was drawn and when.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from throttlepool.sim import SimConfig, Simulator

WINDOW = 6.0  # seconds: the scaled limit's window (see the module docstring)
PER_WINDOW = 6
ITEMS = 2 * PER_WINDOW  # the second half waits for the first half's window to pass
COLUMNS = 80
ROOT = Path(__file__).resolve().parents[2]

SCALED_CLI = f"""
import sys
import throttlepool.options.values as values
from throttlepool.limiter import Limit
real = values.build_limits
def scaled(*args, **kwargs):
    return [Limit(lim.amount / 10, lim.period / 10, lim.unit) for lim in real(*args, **kwargs)]
values.build_limits = scaled
assert scaled(rpm=60)[0].period == {WINDOW}
from throttlepool.cli import main
sys.argv[0] = "throttlepool"
main()
"""


@dataclass
class Screen:
    """Replays terminal output: ``\\r``, ``\\n``, ``ESC[K`` and the wrap at the right margin;
    records each line as drawn, and the lines that wrapped."""

    width: int
    lines: list[str] = field(default_factory=lambda: [""])
    col: int = 0
    wrapped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    drawn: list[tuple[float, str]] = field(default_factory=list)  # (time, current line)
    _escape: str = ""

    def feed(self, text: str, when: float) -> None:
        for ch in text:
            if self._escape:
                self._escape += ch
                if ch.isalpha():
                    if self._escape == "\x1b[K":
                        self.lines[-1] = self.lines[-1][:self.col]
                    else:
                        self.unknown.append(self._escape)
                    self._escape = ""
            elif ch == "\x1b":
                self._escape = ch
            elif ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.lines.append("")
                self.col = 0
            elif ch >= " ":
                if self.col == self.width:  # auto-wrap, as xterm does
                    self.wrapped.append(self.lines[-1])
                    self.lines.append("")
                    self.col = 0
                line = self.lines[-1].ljust(self.col)
                self.lines[-1] = line[:self.col] + ch + line[self.col + 1:]
                self.col += 1
        self.drawn.append((when, self.lines[-1]))


def _chunks(fd: int, proc: subprocess.Popen[bytes], deadline: float
            ) -> Iterator[tuple[float, bytes]]:
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            yield time.monotonic(), data
        elif proc.poll() is not None:
            return
    proc.kill()
    pytest.fail("the CLI did not finish in time")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimConfig(rpm=PER_WINDOW, window=WINDOW, latency=0.05,
                       fail_rate={"500": 0.35}, seed=7)
    with Simulator(config) as sim:
        yield sim


def _args(sim: Simulator, tmp_path: Path) -> list[str]:
    (tmp_path / "in.txt").write_text("".join(f"question {i}\n" for i in range(ITEMS)))
    return [sys.executable, "-c", SCALED_CLI, "run", "in.txt", "--provider", "http",
            "--base-url", f"{sim.url}/echo", "--extract", "result", "--rpm", "60",
            "--retries", "0", "-b", "4", "-v", "--no-db", "-o", "out.jsonl"]


def _env() -> dict[str, str]:
    env = {**os.environ, "COLUMNS": str(COLUMNS), "LINES": "24", "TERM": "xterm",
           "PYTHONPATH": str(ROOT)}
    env.pop("CI", None)
    return env


def run_in_pty(sim: Simulator, tmp_path: Path) -> tuple[Screen, int]:
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    proc = subprocess.Popen(_args(sim, tmp_path), cwd=tmp_path, env=_env(),
                            stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    screen = Screen(COLUMNS)
    try:
        for when, data in _chunks(primary, proc, time.monotonic() + 90):
            screen.feed(data.decode("utf-8", "replace"), when)
    finally:
        os.close(primary)
    return screen, proc.wait(10)


BAR = re.compile(r"(\d+)/(\d+) .*?(\d\d):(\d\d)<(?:(\d\d):(\d\d)|\?)")
WAIT = re.compile(r"rate limit: next slot in (\d+)s")


def test_progress_keeps_time_and_says_why_during_a_limiter_wait(
        sim: Simulator, tmp_path: Path) -> None:
    screen, code = run_in_pty(sim, tmp_path)
    output = "\n".join(screen.lines)
    assert code in (0, 1), output
    # The bar never wraps (a wrapped bar leaves its first half behind at every redraw);
    # log lines may: the terminal wraps them and nothing redraws over them.
    assert not [line for line in screen.wrapped if "req/min" in line or BAR.search(line)]
    assert all(len(line) <= COLUMNS for line in screen.lines)
    assert not screen.unknown, screen.unknown

    waiting = [(when, line) for when, line in screen.drawn if WAIT.search(line)]
    assert waiting, output
    # The screen keeps changing through the wait: elapsed advances, the countdown falls.
    elapsed = [int(m[3]) * 60 + int(m[4]) for _, line in waiting if (m := BAR.search(line))]
    countdown = [int(m[1]) for _, line in waiting if (m := WAIT.search(line))]
    assert waiting[-1][0] - waiting[0][0] >= WINDOW / 2, waiting
    assert len(set(elapsed)) >= 3 and elapsed == sorted(elapsed), elapsed
    # A countdown only falls within one wait; another wait (a short one before the window's
    # long one, or the next window's) starts afresh. The long wait counts down second by second.
    waits: list[list[int]] = [[]]
    for value in countdown:
        if waits[-1] and value > waits[-1][-1]:
            waits.append([])
        waits[-1].append(value)
    assert max(len(set(wait)) for wait in waits) >= 3, countdown

    # An honest ETA: the first half was admitted at elapsed ~0, so the limit keeps the rest
    # waiting until elapsed WINDOW. Whole seconds shown on both sides: 2 s of tolerance.
    for _, line in waiting:
        m = BAR.search(line)
        assert m is not None and m[5] is not None, line
        shown_elapsed = int(m[3]) * 60 + int(m[4])
        eta = int(m[5]) * 60 + int(m[6])
        assert eta >= WINDOW - shown_elapsed - 2, line
        assert eta <= 2 * WINDOW - shown_elapsed + 2, line  # not a window too many

    # Log lines (-v failures) sit on lines of their own, never inside the bar's.
    failures = [line for line in screen.lines if "failed:" in line]
    assert failures, output  # the simulator fails about a third of the calls
    for line in failures:
        assert re.fullmatch(r"item \d+ failed: .*", line), line
        assert "req/min" not in line, line
    for line in screen.lines:
        if "req/min" in line:
            assert "failed:" not in line, line
    # The final state is left on the screen once (trial 11 saw it twice: painted, then
    # painted again by tqdm's close on a line of its own).
    finals = [line for line in screen.lines if BAR.search(line) and "req/min" in line]
    assert len(finals) == 1 and f"{ITEMS}/{ITEMS}" in finals[0], screen.lines


def test_periodic_lines_keep_coming_during_a_wait_without_a_terminal(
        sim: Simulator, tmp_path: Path) -> None:
    proc = subprocess.Popen(_args(sim, tmp_path), cwd=tmp_path, env=_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    stamped: list[tuple[float, str]] = []
    for raw in proc.stderr:
        stamped.append((time.monotonic(), raw.decode()))
    assert proc.wait(30) in (0, 1)
    during = [(when, line) for when, line in stamped if WAIT.search(line)]
    # Lines come every 2 s: a 6 s wait shows at least two, each with the time advanced.
    assert len(during) >= 2, stamped
    assert during[-1][0] - during[0][0] >= 1.5, during
    assert all("\r" not in line and "\x1b" not in line for _, line in stamped)
