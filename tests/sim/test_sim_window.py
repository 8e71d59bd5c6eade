"""The simulator's sliding window and statistics, checked against a brute-force reference."""

from __future__ import annotations

import random

import pytest

from throttlepool.sim.config import SimConfig
from throttlepool.sim.formats import ceil_ms, go_duration, proto_duration
from throttlepool.sim.window import AdmissionLog, Windows


def _fits(log: list[tuple[float, int]], t: float, cost: int, rpm: int, tpm: int, w: float) -> bool:
    """Brute force: would admitting (t, cost) keep every half-open window within limits?"""
    events = [*log, (t, cost)]
    for start, _ in events:  # the worst window starts at an admission
        inside = [c for s, c in events if start <= s < start + w]
        if len(inside) > rpm or sum(inside) > tpm:
            return False
    return True


def _max_in_any_window(log: list[tuple[float, int]], w: float) -> tuple[int, int]:
    best_n = best_c = 0
    for start, _ in log:
        inside = [c for s, c in log if start <= s < start + w]
        best_n, best_c = max(best_n, len(inside)), max(best_c, sum(inside))
    return best_n, best_c


@pytest.mark.parametrize("seed", range(6))
def test_windows_match_brute_force_and_waits_are_exact(seed: int) -> None:
    rng = random.Random(seed)
    rpm, tpm, w = rng.randint(1, 6), rng.randint(20, 80), rng.choice([1.0, 0.5, 2.0])
    windows, log = Windows(), AdmissionLog()
    admitted: list[tuple[float, int]] = []
    t = 0.0
    for _ in range(150):
        t += rng.choice([0.0, 0.001, 0.01, 0.05, 0.2, w / 3])
        cost = rng.randint(1, 30)
        d = windows.admit("k", cost, t, rpm, tpm, w)
        if cost > tpm:
            assert d.too_large and not d.admitted
            continue
        assert d.admitted == _fits(admitted, t, cost, rpm, tpm, w)
        if d.admitted:
            admitted.append((t, cost))
            log.add("k", t, cost)
            assert d.remaining_requests == rpm - sum(1 for s, _ in admitted if s > t - w)
            continue
        # The hint is exact: one microsecond early is still too early, the hint itself is enough.
        assert d.wait > 0
        assert not _fits(admitted, t + d.wait - 1e-6, cost, rpm, tpm, w)
        assert _fits(admitted, t + d.wait + 1e-9, cost, rpm, tpm, w)
        assert d.kind in ("requests", "tokens")
    (n, c), per_key = log.maxima(w)
    assert (n, c) == _max_in_any_window(admitted, w)
    assert n <= rpm and c <= tpm
    assert per_key["k"] == (n, c)


def test_admission_log_maxima_incremental_and_per_key() -> None:
    log = AdmissionLog()
    for t, key in [(0.0, "a"), (0.1, "b"), (0.5, "a"), (1.0, "a"), (1.05, "b"), (1.4, "a")]:
        log.add(key, t, 10)
    overall, per_key = log.maxima(1.0)
    # [0.1, 1.1) holds b, a, a, b; windows are half-open so 0.0 has left by t=1.0.
    assert overall == (4, 40)
    assert per_key == {"a": (3, 30), "b": (2, 20)}
    log.add("a", 1.45, 5)  # resumes the sweep: [0.5, 1.5) now has a, a, b, a, a
    assert log.maxima(1.0)[0] == (5, 45)
    assert log.maxima(2.0)[0] == (7, 65)  # a new window length restarts the sweep
    assert log.counts() == {"a": 5, "b": 2}
    assert log.first_last() == (0.0, 1.45)


def test_unlimited_dimensions_never_block() -> None:
    windows = Windows()
    for i in range(1000):
        d = windows.admit("k", 10**6, i * 1e-6, None, None, 60.0)
        assert d.admitted and d.remaining_requests is None and d.remaining_tokens is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.0004, "1ms"),
        (0.12, "120ms"),
        (0.9991, "1s"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (3.57, "3.57s"),
        (60.0, "1m0s"),
        (360.0, "6m0s"),
        (85656.648, "23h47m36.648s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_hint_rounding_never_undershoots() -> None:
    for s in (0.0001, 0.5, 1.0, 1.2341, 2.9999):
        assert ceil_ms(s) / 1000 >= s - 1e-9
    assert proto_duration(1.5) == "1.5s"
    assert proto_duration(53.0) == "53s"
    assert proto_duration(0.0123) == "0.013s"


@pytest.mark.parametrize(
    "bad",
    [
        {"rpm": 0},
        {"tpm": -5},
        {"window": 0},
        {"latency": -1},
        {"fail_rate": {"404": 0.1}},
        {"fail_rate": {"500": 1.5}},
        {"fail_rate": {"500": 0.6, "503": 0.6}},
    ],
)
def test_config_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**bad)  # type: ignore[arg-type]


def test_config_update_rejects_unknown_fields() -> None:
    cfg = SimConfig(rpm=5)
    assert cfg.updated({"tpm": 100}).tpm == 100
    with pytest.raises(ValueError, match="unknown config fields"):
        cfg.updated({"rpmm": 1})
