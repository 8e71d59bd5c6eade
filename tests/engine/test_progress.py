"""Progress: the seam, callbacks of both styles, and the tqdm bar."""

from __future__ import annotations

import io
from typing import Any

import pytest

from throttlepool import ThreadedBatchRunner
from throttlepool.outcome import Outcome, RunStats, Status
from throttlepool.progress import CallbackProgress, TqdmProgress, make_progress, status_line
from throttlepool.testing import FakeClock, RecordingProgress, ScriptedCallable


def test_make_progress_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_progress(False) is None
    assert isinstance(make_progress(True), TqdmProgress)
    sink = RecordingProgress()
    assert make_progress(sink) is sink
    assert isinstance(make_progress(lambda stats: None), CallbackProgress)
    with pytest.raises(TypeError):
        make_progress(42)  # type: ignore[arg-type]
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: no bar by default
    assert make_progress(None) is None


def test_callback_style_is_detected_by_signature() -> None:
    seen: list[Any] = []
    stats = RunStats(total=3, done=2, failed=1)
    outcome = Outcome(0, "x", Status.OK)

    CallbackProgress(lambda done, total: seen.append((done, total))).update(stats, outcome)
    CallbackProgress(lambda s: seen.append(s.finished)).update(stats, outcome)

    def with_default(done: int, total: int | None = None) -> None:
        seen.append(("default", done, total))

    CallbackProgress(with_default).update(stats, outcome)
    # Counter-only updates (no outcome) do not call back: callbacks advance on completion.
    CallbackProgress(lambda s: seen.append("noise")).update(stats, None)
    assert seen == [(3, 3), 3, ("default", 3, 3)]


def test_status_line_shows_the_counters() -> None:
    stats = RunStats(total=10, done=4, failed=1, retrying=2, in_flight=3, rate_limited=5)
    line = status_line(stats)
    for part in ("ok=4", "failed=1", "retrying=2", "in_flight=3", "429s=5", "req/min"):
        assert part in line


def test_tqdm_bar_advances_on_completion_and_ends_at_the_total() -> None:
    out = io.StringIO()
    bar = TqdmProgress("cards", file=out, interval=0.0)
    fn = ScriptedCallable({2: [ValueError()]})
    with ThreadedBatchRunner(fn, batch_size=2, progress=bar, clock=FakeClock()) as runner:
        runner.run(range(9))
    text = out.getvalue()
    assert "cards" in text
    assert "9/9" in text
    assert "failed=1" in text and "ok=8" in text


def test_progress_updates_follow_completion_not_submission() -> None:
    import threading

    others_done = threading.Event()
    done: list[int] = []
    lock = threading.Lock()

    def fn(i: int) -> int:
        if i == 0:
            assert others_done.wait(20)  # the first item submitted finishes last
        with lock:
            done.append(i)
            if len(done) == 5:
                others_done.set()
        return i

    sink = RecordingProgress()
    with ThreadedBatchRunner(fn, batch_size=6, progress=sink) as runner:
        result = runner.run(range(6))
    assert result.all_succeeded
    assert sink.outcomes[-1] == 0
    assert sorted(sink.outcomes) == list(range(6))
    finished = [u["done"] + u["failed"] for u in sink.updates]
    assert finished == sorted(finished) and finished[-1] == 6
