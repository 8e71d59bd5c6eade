"""Stopping a run: fatal errors, the run deadline, and Ctrl-C in a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import pytest

from throttlepool import ThreadedBatchRunner
from throttlepool.errors import NotAttempted, RunStopped
from throttlepool.outcome import Status
from throttlepool.testing import FakeClock, FakeStore, ScriptedCallable

WORKER = Path(__file__).resolve().parents[1] / "sigint_worker.py"


class APIError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = SimpleNamespace(status_code=status, headers={})


# ---- fatal errors --------------------------------------------------------------------------


def test_fatal_error_stops_dispatch_and_leaves_the_rest_not_attempted() -> None:
    fn = ScriptedCallable({4: [APIError(401)]})
    runner = ThreadedBatchRunner(fn, batch_size=1, retries=5, clock=FakeClock(),
                                 progress=False)
    result = runner.run(range(10))
    runner.close()
    assert [o.status for o in result.outcomes] == (
        [Status.OK] * 4 + [Status.FAILED] + [Status.NOT_ATTEMPTED] * 5)
    assert fn.calls == [0, 1, 2, 3, 4]  # 401 is never retried, nothing after it is called
    assert isinstance(result.stopped, RunStopped)
    assert isinstance(result.stopped.cause, APIError)
    assert isinstance(result.errors[4], APIError)
    assert all(isinstance(e, NotAttempted) for e in result.errors[5:])
    assert result.stats.not_attempted == 5
    assert len(result) == 10


def test_fatal_error_with_calls_in_flight_drains_them() -> None:
    gate = threading.Event()
    calls: list[int] = []
    lock = threading.Lock()

    def fn(i: int) -> int:
        with lock:
            calls.append(i)
        if i == 0:
            # Wait until the others are in flight, then fail fatally.
            while True:
                with lock:
                    if len(calls) >= 4:
                        break
                time.sleep(0.001)
            raise APIError(403)
        assert gate.wait(20)
        return i

    def release_after_stop() -> None:
        while True:
            with lock:
                if len(calls) >= 4:
                    break
            time.sleep(0.001)
        time.sleep(0.02)
        gate.set()

    threading.Thread(target=release_after_stop, daemon=True).start()
    runner = ThreadedBatchRunner(fn, batch_size=4, progress=False)
    result = runner.run(range(200))
    runner.close()
    in_flight = set(calls) - {0}
    for o in result.outcomes:
        if o.index == 0:
            assert o.status is Status.FAILED
        elif o.index in in_flight:
            assert o.status is Status.OK  # calls in flight finished and were kept
        else:
            assert o.status is Status.NOT_ATTEMPTED
    assert len(calls) < 200
    assert isinstance(result.stopped, RunStopped)


def test_fatal_stop_is_recorded_and_a_resume_runs_the_rest() -> None:
    store = FakeStore()
    fn = ScriptedCallable({3: [APIError(401), 3]})
    runner = ThreadedBatchRunner(fn, batch_size=1, store=store, run_name="r",
                                 clock=FakeClock(), progress=False)
    first = runner.run(range(6))
    assert first.stopped is not None
    assert store.runs[first.run_id]["status"] == "stopped"
    fn.calls.clear()
    second = runner.run(range(6))
    runner.close()
    assert second.all_succeeded
    assert fn.calls == [3, 4, 5]


# ---- run deadline --------------------------------------------------------------------------


def test_run_deadline_stops_dispatch_and_keeps_what_finished() -> None:
    def fn(i: int) -> int:
        time.sleep(0.01)  # stands in for a slow API call
        return i

    runner = ThreadedBatchRunner(fn, batch_size=2, deadline=0.2, progress=False)
    result = runner.run(range(100_000))
    runner.close()
    assert isinstance(result.stopped, RunStopped)
    assert "deadline" in str(result.stopped)
    assert len(result.outcomes) == 100_000
    statuses = [o.status for o in result.outcomes]
    done = statuses.count(Status.OK)
    assert done > 0
    assert statuses[:done] == [Status.OK] * done
    assert set(statuses[done:]) == {Status.NOT_ATTEMPTED}
    assert result.results[:done] == list(range(done))
    assert not result.interrupted


# ---- Ctrl-C --------------------------------------------------------------------------------


def start_worker(seconds: float, n: int, batch: int) -> tuple[subprocess.Popen[str], list[str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(seconds), str(n), str(batch)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    err_lines: list[str] = []

    def pump(stream: IO[str]) -> None:
        with stream:  # closed at the child's end: no reader is left on it
            for line in stream:
                err_lines.append(line)

    threading.Thread(target=pump, args=(proc.stderr,), daemon=True).start()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "started", (line, "".join(err_lines))
    return proc, err_lines


def last_json(proc: subprocess.Popen[str], timeout: float) -> tuple[dict[str, Any], int]:
    # Not communicate(): it would read and close stderr under start_worker's pump thread,
    # which then raised "I/O operation on closed file" (a warning in a full suite). The
    # worker's stdout is a line and a summary, far below a pipe's buffer.
    proc.wait(timeout=timeout)
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.read()
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines, "the worker printed no summary"
    return json.loads(lines[-1]), proc.returncode


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_first_ctrl_c_drains_in_flight_calls_and_returns_a_result() -> None:
    proc, err = start_worker(seconds=0.3, n=40, batch=4)
    try:
        os.kill(proc.pid, signal.SIGINT)
        summary, code = last_json(proc, timeout=30)
    finally:
        proc.kill()
    assert code == 0, "".join(err)
    assert summary["interrupted"] is True
    assert summary["outcomes"] == 40
    # Every call that started finished and was kept; nothing else was called.
    assert summary["started"] == summary["finished"]
    assert summary["ok"] == summary["finished"]
    assert summary["statuses"]["ok"] == len(summary["ok"]) < 40
    assert summary["statuses"]["not_attempted"] == 40 - len(summary["ok"])
    assert "failed" not in summary["statuses"]
    assert summary["not_attempted_errors"] == ["NotAttempted"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_second_ctrl_c_aborts_at_once() -> None:
    # Calls take a minute: only an abort lets the process end within the timeout below.
    proc, err = start_worker(seconds=60.0, n=40, batch=4)
    try:
        os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 20
        while not any("stopping" in line.lower() for line in err):  # first one handled
            assert time.monotonic() < deadline, "first Ctrl-C was not acknowledged"
            assert proc.poll() is None
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGINT)
        summary, code = last_json(proc, timeout=20)
    finally:
        proc.kill()
    assert summary["aborted"] is True
    assert summary["finished"] == 0  # it did not wait for the calls in flight
    assert code == 130


class _JsonRetryAfterStop:
    """An async adapter: item "fatal" fails with a 401 at once; item "bad" answers with
    invalid JSON (retried at once, ``json_retries``) only after the 401 stopped the run."""

    name = "scripted"
    is_async = True
    enforces_timeout = False
    json_retries = 3

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fatal_raised: Any = None

    def identity(self) -> dict[str, Any]:
        return {}

    def estimate(self, item: Any) -> Any:
        from throttlepool.limiter import Cost
        return Cost(1.0)

    def call(self, item: Any, timeout: float | None) -> Any:
        raise NotImplementedError

    async def acall(self, item: Any, timeout: float | None) -> Any:
        import asyncio

        from throttlepool.adapters.structured import InvalidAnswer

        if self.fatal_raised is None:
            self.fatal_raised = asyncio.Event()
        self.calls.append(item)
        if item == "fatal":
            self.fatal_raised.set()
            raise APIError(401)
        # The 401's task handles it (and requests the stop) before this one resumes.
        await self.fatal_raised.wait()
        raise InvalidAnswer("not JSON", "hello")

    def classify(self, exc: BaseException) -> Any:
        from throttlepool.adapters.structured import InvalidAnswer
        from throttlepool.classify import ErrorKind, Verdict

        if isinstance(exc, InvalidAnswer):
            return Verdict(ErrorKind.INVALID_OUTPUT, None, "invalid JSON")
        return Verdict(ErrorKind.FATAL, None, "401")

    def rate_info(self, exc: BaseException) -> Any:
        return None


@pytest.mark.parametrize("breaker", [False, True])
def test_a_retry_without_backoff_starts_no_call_once_the_run_stopped(breaker: bool) -> None:
    """A retry that needs no wait (an invalid JSON answer) still checks the stop: a stopped
    run starts no new call, whatever the reason for the retry."""
    adapter = _JsonRetryAfterStop()
    runner = ThreadedBatchRunner(adapter, batch_size=2, retries=3, breaker=breaker,
                                 progress=False)
    with runner:
        result = runner.run(["bad", "fatal", "later"])
    assert isinstance(result.stopped, RunStopped)
    assert sorted(adapter.calls) == ["bad", "fatal"]  # before the fix: "bad" twice
    bad, fatal, later = result.outcomes
    assert (bad.status, bad.attempts) == (Status.FAILED, 1)
    assert (fatal.status, fatal.attempts) == (Status.FAILED, 1)
    assert later.status is Status.NOT_ATTEMPTED


def test_a_stream_aborted_from_another_thread_raises_there_nothing_and_gives_sigint_back() -> None:
    """``abort()`` is for a consumer being aborted from elsewhere: from a thread it once
    raised ``ValueError: signal only works in main thread`` (restoring SIGINT's handler),
    and the handler was then never given back."""
    before = signal.getsignal(signal.SIGINT)
    started, release = threading.Event(), threading.Event()

    def held(x: int) -> int:
        started.set()
        release.wait(10)  # no call returns before the abort: the run cannot end on its own
        return x

    stream = ThreadedBatchRunner(held, batch_size=2, progress=False).imap(range(1000))
    errors: list[BaseException] = []

    def abort_from_a_thread() -> None:
        started.wait(10)
        try:
            stream.abort()
        except BaseException as exc:  # the test records whatever escapes
            errors.append(exc)
        finally:
            release.set()

    aborter = threading.Thread(target=abort_from_a_thread)
    aborter.start()
    with contextlib.suppress(BaseException):  # the stream ends, or raises what stopped it
        for _ in stream:
            pass
    aborter.join(10)
    assert errors == []
    assert stream.interrupted  # the abort came while calls were held: it was not lost
    assert signal.getsignal(signal.SIGINT) is before


def test_an_abort_sent_while_the_first_next_is_still_starting_the_run_is_not_lost() -> None:
    """The first ``next`` starts the run's thread, which calls at once, and only then keeps
    it: an abort from another thread in between saw no thread and did nothing (the run went
    on to the end, not interrupted; once in five full suites, 1 in 10 in a loop)."""
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def held(x: int) -> int:
        calls.append(x)
        started.set()
        release.wait(10)
        return x

    stream = ThreadedBatchRunner(held, batch_size=2, progress=False).imap(range(50))
    bridge = stream._bridge  # the abort must land inside this one step of __next__
    start = bridge.start

    def start_then_abort(*args: Any, **kwargs: Any) -> threading.Thread:
        thread = start(*args, **kwargs)
        assert started.wait(10)  # the run is calling, the stream does not know its thread
        aborter = threading.Thread(target=lambda: (stream.abort(), release.set()))
        aborter.start()
        aborter.join(10)
        return thread

    bridge.start = start_then_abort  # type: ignore[method-assign]
    try:
        with contextlib.suppress(asyncio.CancelledError):
            for _ in stream:
                pass
    finally:
        release.set()
    assert stream.interrupted
    assert len(calls) <= 2  # the calls in flight when the abort came, nothing after
    assert isinstance(stream.stopped, RunStopped)


def test_a_stream_aborted_before_its_first_next_makes_no_call_and_is_interrupted() -> None:
    """An abort queued before the run's task exists reached the engine first and was
    dropped (``_task`` was None); the engine now keeps it."""
    store = FakeStore()
    fn = ScriptedCallable({})
    stream = ThreadedBatchRunner(fn, batch_size=2, store=store, run_name="r",
                                 progress=False).imap(range(20))
    stream.abort()
    with pytest.raises(asyncio.CancelledError):
        next(stream)
    assert fn.calls == []
    assert stream.interrupted
    assert stream.run_id is not None
    assert store.runs[stream.run_id]["status"] == "interrupted"
