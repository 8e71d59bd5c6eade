"""Adaptive pacing from budget headers, and limits honoured against the simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _server_models import two_per_second_call

from throttlepool import ThreadedBatchRunner
from throttlepool._pacing import HeaderBudget
from throttlepool.hints import RateInfo
from throttlepool.limiter import Cost

ONE = Cost(1.0)


def test_no_headers_means_no_pacing() -> None:
    budget = HeaderBudget()
    for i in range(1, 1000):
        assert budget.admit(ONE, 0.0) == (i, 0.0)


def test_spent_budget_waits_for_refill_at_the_servers_rate() -> None:
    budget = HeaderBudget()
    seq, _ = budget.admit(ONE, 0.0)
    assert seq is not None
    budget.observe(seq, RateInfo(limit_requests=10, remaining_requests=0, reset_requests=2.0), 0.0)
    # 10 requests come back over 2 s: one every 0.2 s.
    assert budget.admit(ONE, 0.0) == (None, pytest.approx(0.2))
    seq2, wait = budget.admit(ONE, 0.2)
    assert seq2 == 2 and wait == 0.0
    assert budget.admit(ONE, 0.2)[0] is None


def test_calls_sent_after_the_response_are_not_counted_twice_or_forgotten() -> None:
    budget = HeaderBudget()
    first, _ = budget.admit(ONE, 0.0)
    for _ in range(4):
        budget.admit(ONE, 0.0)
    assert first is not None
    # The server counted the first call; the four sent after it are still to be counted.
    budget.observe(first, RateInfo(limit_requests=10, remaining_requests=5, reset_requests=1.0),
                   0.0)
    assert budget.admit(ONE, 0.0)[0] is not None  # 5 - 4 = 1 left
    assert budget.admit(ONE, 0.0)[0] is None


def test_an_older_response_does_not_overwrite_a_newer_one() -> None:
    budget = HeaderBudget()
    a, _ = budget.admit(ONE, 0.0)
    b, _ = budget.admit(ONE, 0.0)
    assert a is not None and b is not None
    budget.observe(b, RateInfo(limit_requests=10, remaining_requests=0, reset_requests=1.0), 0.0)
    budget.observe(a, RateInfo(limit_requests=10, remaining_requests=9, reset_requests=1.0), 0.0)
    assert budget.admit(ONE, 0.0)[0] is None


def test_tokens_are_paced_too_and_a_429_empties_the_bucket() -> None:
    budget = HeaderBudget()
    seq, _ = budget.admit(Cost(1.0, 100.0), 0.0)
    assert seq is not None
    budget.observe(seq, RateInfo(limit_tokens=1000, remaining_tokens=300, reset_tokens=7.0), 0.0)
    assert budget.admit(Cost(1.0, 300.0), 0.0)[0] is not None
    assert budget.admit(Cost(1.0, 100.0), 0.0) == (None, pytest.approx(1.0))  # 700 over 7 s
    nxt, _ = budget.admit(ONE, 0.0)
    assert nxt is not None
    budget.observe(nxt, RateInfo(limit_requests=5, remaining_requests=3, reset_requests=1.0), 0.0)
    budget.rate_limited(nxt, 0.0, None)
    assert budget.admit(ONE, 0.0)[0] is None


# ---- against the simulator ------------------------------------------------------------

LIMIT, WINDOW, ITEMS = 50, 2.0, 300  # "a run of a few hundred items" (issue 3)


@pytest.fixture(scope="module")
def sim() -> Iterator[object]:
    from throttlepool.sim import SimConfig, SimulatorProcess

    # A server process of its own: in ours it would stamp requests late while the client's
    # threads hold the interpreter lock, which no real server does.
    with SimulatorProcess(SimConfig(rpm=LIMIT, window=WINDOW, latency=0.01, jitter=0.005)) as s:
        yield s


def _run(sim: object, **limits: object) -> tuple[object, dict[str, object]]:
    result, stats, _ = _run_with(sim, **limits)
    return result, stats


def _run_with(sim: object, **limits: object) -> tuple[object, dict[str, object], object]:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters import OpenAIAdapter

    sim.reset()  # type: ignore[attr-defined]
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test")  # type: ignore[attr-defined]
    runner = ThreadedBatchRunner(OpenAIAdapter(client, model="m", extract="text"),
                                 batch_size=16, progress=False, **limits)  # type: ignore[arg-type]
    result = runner.run([f"item {i}" for i in range(ITEMS)])
    return result, sim.stats(), runner  # type: ignore[attr-defined]


def test_known_limit_sees_no_429_and_no_window_over_the_limit(sim: object) -> None:
    result, stats = _run(sim, limits=[f"{LIMIT}/{WINDOW}s"])
    assert result.all_succeeded  # type: ignore[attr-defined]
    assert result.results == [f"echo: item {i}" for i in range(ITEMS)]  # type: ignore[attr-defined]
    assert stats["max_requests_in_window"] <= LIMIT  # type: ignore[operator]
    assert stats["rate_limited"] == 0


def test_unknown_limit_is_found_from_headers_with_few_429s(sim: object) -> None:
    """The pacer learns the server's limit and window and installs them.

    The bound is the mechanism's, not luck's: once the window is learned each call counts
    from when it was let go until its answer, then from its arrival bound (the latest
    instant the server may have stamped it, as the known-limit limiter counts it: see
    _pacing_arrivals), so no call let go afterwards meets a 429, as with a known limit;
    before that, at most the calls in flight (``batch_size``) can be refused, since the first
    429 teaches the window if the headers have not already.
    """
    from throttlepool.limiter import Limit

    result, stats, runner = _run_with(sim)
    assert result.all_succeeded  # type: ignore[attr-defined]
    pacer = runner.pacer  # type: ignore[attr-defined]
    assert pacer.learned_limits == [Limit(LIMIT, WINDOW)]
    assert pacer.rate_limited_after_learning == 0
    assert stats["rate_limited"] <= 16  # type: ignore[operator]
    assert stats["max_requests_in_window"] <= LIMIT  # type: ignore[operator]


def test_a_call_larger_than_the_servers_whole_budget_waits_for_a_full_one_not_forever() -> None:
    """An anthropic call reserves prompt + max_tokens (1024 by default) of output; a server
    whose whole output budget is 300 charges what is generated, so the call must go once the
    budget is whole, not wait forever (a JSON retry hung for minutes)."""
    budget = HeaderBudget()
    small = Cost(1.0, 20.0, output_tokens=10.0)
    seq, _ = budget.admit(small, 0.0)
    assert seq is not None
    budget.observe(seq, RateInfo(limit_output_tokens=300, remaining_output_tokens=290,
                                 reset_output_tokens=2.0), 0.0)
    big = Cost(1.0, 1044.0, output_tokens=1024.0)
    now, admitted = 0.0, None
    for _ in range(100):
        admitted, wait = budget.admit(big, now)
        if admitted is not None:
            break
        assert 0 < wait < float("inf")
        now += wait
    assert admitted is not None and now <= 2.0 + 1e-9  # once the 300 are whole again


def test_with_the_limit_known_a_window_boundary_costs_no_round_trip() -> None:
    """A configured 2/s against a server of the same window (its headers teach the pacer the
    window after two answers); each call takes 0.4 s on a fake clock. The third call goes
    when the configured limit frees the first call's slot (1 s after it started, plus the
    margin), not when the first call's answer leaves the pacer's learned log (1.4 s)."""
    from throttlepool.limiter.margin import LOAD_FLOOR_MIN
    from throttlepool.testing import FakeClock

    clock, starts = FakeClock(), []
    call = two_per_second_call(clock, starts)
    runner = ThreadedBatchRunner(call, batch_size=1, limits=["2/1s"], clock=clock,
                                 progress=False)
    with runner:
        assert runner.run(range(4)).results == [0, 1, 2, 3]
    assert runner.pacer is not None and runner.pacer.requests.learned() is not None
    assert starts[:2] == [0.0, 0.4]
    # Handed off at once: the floor follows the load down to its least (limiter.margin).
    assert abs(starts[2] - (1.0 + LOAD_FLOOR_MIN)) < 1e-9
