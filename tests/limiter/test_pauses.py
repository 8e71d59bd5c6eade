"""CollectorPauses: the collector's pauses that overlap a call, summed."""

from __future__ import annotations

import gc
import random
from types import SimpleNamespace

import pytest

from throttlepool.limiter import pauses as pauses_mod
from throttlepool.limiter.pauses import CollectorPauses


@pytest.fixture
def tracker() -> CollectorPauses:
    made = CollectorPauses()
    gc.callbacks.remove(made._observe)  # fed by hand below, not by real collections
    return made


def _feed(tracker: CollectorPauses, monkeypatch: pytest.MonkeyPatch,
          spans: list[tuple[float, float]]) -> None:
    for began, ended in spans:
        monkeypatch.setattr(pauses_mod, "time", SimpleNamespace(monotonic=lambda t=began: t))
        tracker._observe("start", {})
        monkeypatch.setattr(pauses_mod, "time", SimpleNamespace(monotonic=lambda t=ended: t))
        tracker._observe("stop", {})


def _expected(spans: list[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(e, end) - max(b, start)) for b, e in spans)


def test_no_pause_yet_is_zero(tracker: CollectorPauses) -> None:
    assert tracker.between(0.0, 100.0) == 0.0


def test_sums_the_overlaps_of_the_kept_pauses(tracker: CollectorPauses,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    spans, t = [], 10.0
    for _ in range(150):  # more than the ring keeps: the oldest are overwritten
        t += rng.uniform(0.01, 0.5)
        length = rng.choice([0.0005, 0.003, 0.05, 0.2])  # the shortest is not notable
        spans.append((t, t + length))
        t += length
    _feed(tracker, monkeypatch, spans)
    kept = [s for s in spans if s[1] - s[0] >= pauses_mod._NOTABLE][-pauses_mod._KEPT:]
    oldest = kept[0][0]
    for _ in range(500):
        start = rng.uniform(oldest, t + 1.0)
        end = start + rng.uniform(0.0, 3.0)
        assert tracker.between(start, end) == pytest.approx(_expected(kept, start, end))
    assert tracker.between(t + 0.1, t + 5.0) == 0.0  # started after the newest pause
