"""What the batch-mode tests of every provider share: the crash driver (batch_worker.py in a
process of its own, killed at a step and run again) with the checks after a resume, and the
interrupt-then-cancel sequence. A test module names its provider in ``PROVIDER``; a test
may instead parametrize ``crash_driver`` indirectly with the provider's name."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from throttlepool.batchapi import BatchApiRunner, BatchProgress
from throttlepool.sim import Simulator
from throttlepool.sim.anthropic_batches import anthropic_batches_of
from throttlepool.sim.batch_lifecycle import BatchRoute
from throttlepool.sim.batches import batches_of
from throttlepool.sim.gemini_batches import gemini_batches_of

WORKER = str(Path(__file__).with_name("batch_worker.py"))
N = 20  # 3 chunks of at most 7 (the worker's --max-requests)
ROUTES: dict[str, Callable[[Simulator], BatchRoute]] = {
    "openai": batches_of, "anthropic": anthropic_batches_of, "gemini": gemini_batches_of}


class CrashDriver:
    """batch_worker.py for one provider against the test's simulator."""

    def __init__(self, sim: Simulator, provider: str) -> None:
        self.sim = sim
        self.provider = provider
        self.route = ROUTES[provider](sim)

    def command(self, db: Path, *extra: str) -> list[str]:
        """The worker's command line for ``N`` items in checkpoint ``db``."""
        return [sys.executable, WORKER, self.sim.openai_base_url, str(db), str(N),
                "--provider", self.provider, *extra]

    def run(self, db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        """Run the worker to its end (or its death, with ``--die-after STEP``)."""
        return subprocess.run(self.command(db, *extra), capture_output=True, text=True,
                              timeout=60)

    def index(self, custom_id: str) -> int:
        """The item a custom id stands for (``item-3``, Anthropic's ``tp<tag>-3``)."""
        return int(custom_id.rsplit("-", 1)[1])

    def check(self, db: Path) -> None:
        """Each item submitted once, in one batch; recorded ok once; every chunk done."""
        submitted = Counter(s["custom_id"] for s in self.route.submissions())
        assert max(submitted.values(), default=0) == 1, submitted
        assert Counter(self.index(c) for c in submitted) == Counter(range(N)), submitted
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT idx, status, value FROM items ORDER BY idx").fetchall()
            states = conn.execute("SELECT state FROM batchapi_chunks").fetchall()
        assert [(r[0], r[1]) for r in rows] == [(i, "ok") for i in range(N)]
        assert all(f"question {i}" in r[2] for i, r in enumerate(rows))
        assert {s for (s,) in states} == {"done"}

    def kill_while_polling(self, db: Path) -> None:
        """Start the worker, kill -9 it once all its batches are created (it is polling)."""
        proc = subprocess.Popen(self.command(db), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while len(self.route.submissions()) < N:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def crash_driver(sim: Simulator, request: pytest.FixtureRequest) -> CrashDriver:
    """The crash driver for the module's ``PROVIDER`` (or the indirect parameter)."""
    provider = getattr(request, "param", None) or request.module.PROVIDER
    return CrashDriver(sim, provider)


def _stop_at_first_poll(progress: BatchProgress) -> None:
    raise KeyboardInterrupt  # as Ctrl-C would, once the batch is created


@pytest.fixture
def interrupt_and_cancel() -> Callable[[Callable[..., BatchApiRunner]], Any]:
    """``interrupt_and_cancel(make_runner)``: run two items on ``make_runner(progress=...)``,
    interrupted at the first poll (the batch left running), then cancel the run ``"r"``;
    returns the cancelled batch's id."""

    def go(make_runner: Callable[..., BatchApiRunner]) -> Any:
        with make_runner(progress=_stop_at_first_poll) as runner:
            assert runner.run(["a", "b"]).interrupted
            (batch_id,) = runner.cancel("r")
        return batch_id

    return go
