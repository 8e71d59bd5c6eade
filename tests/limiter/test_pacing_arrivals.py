"""The pacer's learned log counts an answered call from its arrival bound, not its answer.

Counted from its answer, a call holds its slot in the learned window a round trip longer
than the server does: every window boundary cost about one call latency (rate-unknown-6s:
call k + limit admitted ~0.22 s after call k's stamp + 6 s). With the call's timing on its
worker thread the log places it as the known-limit limiter does (limiter.arrivals), and a
model of a server that stamps each call between its start and its answer never sees a
window over the limit.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

import pytest
from _server_models import most_in_window, two_per_second_call
from hypothesis import example, given, settings
from hypothesis import strategies as st

from throttlepool import ThreadedBatchRunner
from throttlepool._pacing import HeaderBudget
from throttlepool._pacing_arrivals import CallTiming
from throttlepool.hints import RateInfo
from throttlepool.limiter import Cost, Limit
from throttlepool.limiter.margin import DEFAULT_FLOOR, LOAD_FLOOR_MIN
from throttlepool.sim.window import Windows
from throttlepool.testing import FakeClock

ONE = Cost(1.0)


def _learned_three_per_two_seconds() -> HeaderBudget:
    pacer = HeaderBudget()
    seqs = [pacer.admit(ONE, 0.0)[0] for _ in range(3)]
    for seq, at, remaining in zip(seqs, (0.1, 0.5, 0.9), (2, 1, 0), strict=True):
        assert seq is not None
        pacer.observe(seq, RateInfo(limit_requests=3, remaining_requests=remaining,
                                    reset_requests=2.0), at)
    assert pacer.learned_limits == [Limit(3, 2.0)]
    return pacer


def test_a_timed_answered_call_counts_from_its_arrival_bound_not_its_answer() -> None:
    """Three warm calls of 0.2 s each, let go and started at 2.2, 2.6 and 3.0: each counts
    from its start (its duration is the fastest, so it reached the server no later, within
    the margin's floor), and the next window's first call goes at 2.2 + 2.0 + the floor,
    not at its answer 2.4 + 2.0 (one latency later)."""
    pacer = _learned_three_per_two_seconds()
    for let_go in (2.2, 2.6, 3.0):  # the seeds leave at 0.1, 0.5, 0.9 + 2.0 + the floor
        seq, _ = pacer.admit(ONE, let_go)
        assert seq is not None
        pacer.observe(seq, None, let_go + 0.2,
                      timing=CallTiming(let_go, let_go + 0.2, first_on_thread=False))
    floor = DEFAULT_FLOOR
    assert pacer.admit(ONE, 4.0) == (None, pytest.approx(0.2 + floor))
    assert pacer.admit(ONE, 4.2 + floor)[0] is not None


def test_an_untimed_answer_still_counts_from_the_answer() -> None:
    """An async function's call (no start seen on a thread) keeps the answer as its bound."""
    pacer = _learned_three_per_two_seconds()
    for let_go in (2.2, 2.6, 3.0):
        seq, _ = pacer.admit(ONE, let_go)
        assert seq is not None
        pacer.observe(seq, None, let_go + 0.2)
    assert pacer.admit(ONE, 4.0) == (None, pytest.approx(0.4))


def test_through_the_runner_a_window_boundary_costs_the_floor_not_a_round_trip() -> None:
    """No configured limit: 2 per 1 s learned from the headers after two answers (seeded at
    their answers), each call 0.4 s on a fake clock, one thread. The fifth call goes when
    the third (started at 1.4, warm) leaves the server's window plus the floor, not when its
    answer (1.8) would have left the learned log: the worker thread timed it for the pacer."""
    clock, starts = FakeClock(), []
    call = two_per_second_call(clock, starts)
    runner = ThreadedBatchRunner(call, batch_size=1, clock=clock, progress=False)
    with runner:
        assert runner.run(range(6)).results == list(range(6))
    assert runner.pacer is not None and runner.pacer.learned_limits == [Limit(2, 1.0)]
    assert starts[4] == pytest.approx(1.4 + 1.0 + LOAD_FLOOR_MIN)  # was 1.8 + 1.0
    # The second call (seeded at its answer, 0.8) counts the floor more once calls are bounded.
    assert starts[:4] == pytest.approx([0.0, 0.4, 1.4, 1.8 + LOAD_FLOOR_MIN])


@dataclass
class ThreadedServerModel:
    """Workers (threads) against a sliding-window server (requests only), on a virtual clock.

    A call is let go by the pacer, started on its thread up to ``handoff`` later and stamped
    by the server after its own client work and way there (under half the floor, plus on a
    thread's first call a connection of up to a second, plus, for a ``stall_share`` of the
    calls, a stall before the send of up to half a second); its answer comes after the
    server's time and the way back, which vary by less than half the floor, and the loop
    sees it up to ``loopback`` later. The bound's stated assumptions (limiter.arrivals,
    limiter.margin) hold: the server's time varies by less than half the floor, and the
    fastest warm call was not stalled (stalls begin once an unstalled warm call answered;
    they only lengthen calls, so the fastest stays an unstalled one).
    """

    limit: int
    window: float
    workers: int
    items: int
    handoff: float
    server_time: float
    stall_share: float
    loopback: float
    seed: int = 0
    timed: bool = True  # False: every answer is observed without its timing
    finished: float = 0.0
    pacer: HeaderBudget = field(default_factory=HeaderBudget)
    stamps: list[float] = field(default_factory=list)
    rejected_after_learning: int = 0

    def run(self) -> ThreadedServerModel:
        rng, server = random.Random(self.seed), Windows()
        half = DEFAULT_FLOOR / 2 * 0.99
        events: list[tuple[float, int, str, tuple[object, ...]]] = []
        tie = 0

        def push(at: float, kind: str, *payload: object) -> None:
            nonlocal tie
            tie += 1
            heapq.heappush(events, (at, tie, kind, payload))

        todo, warm, waiting = self.items, [False] * self.workers, set()
        calm = False  # an unstalled warm call has answered: stalls may begin
        for worker in range(self.workers):
            push(0.0, "try", worker)
        while events:
            now, _, kind, payload = heapq.heappop(events)
            self.finished = now
            assert now < 10_000, "the batch never finishes"
            if kind == "try":
                (worker,) = payload
                if todo == 0:
                    continue
                seq, wait = self.pacer.admit(ONE, now)
                if seq is None:
                    waiting.add(worker)
                    push(now + wait, "wake", worker)
                    continue
                todo -= 1
                learned = bool(self.pacer.learned_limits)
                started = now + rng.uniform(0.0, self.handoff)
                first = not warm[worker]  # type: ignore[index]
                warm[worker] = True  # type: ignore[index]
                way = rng.uniform(0.0, half)
                stalled = calm and rng.random() < self.stall_share
                if stalled:
                    way += rng.uniform(0.0, 0.5)
                if first:
                    way += rng.uniform(0.0, 1.0)
                timing = CallTiming(started, math.nan, first)
                push(started + way, "arrive", worker, seq, timing, (learned, first or stalled))
            elif kind == "wake":
                (worker,) = payload
                if worker in waiting:
                    waiting.discard(worker)
                    push(now, "try", worker)
            elif kind == "arrive":
                worker, seq, timing, learned = payload
                d = server.admit("k", 0, now, self.limit, None, self.window)
                if d.admitted:
                    self.stamps.append(now)
                info = RateInfo(limit_requests=self.limit,
                                remaining_requests=d.remaining_requests,
                                reset_requests=math.ceil(d.reset_requests * 1000 - 1e-6) / 1000,
                                retry_after=None if d.admitted else d.wait)
                answer = now + self.server_time + rng.uniform(0.0, half)
                timing.ended = answer  # type: ignore[attr-defined]
                push(answer + rng.uniform(0.0, self.loopback), "answer", worker, seq, timing,
                     info, learned)
            else:
                worker, seq, timing, info, (learned, slowed) = payload  # type: ignore[misc]
                assert isinstance(info, RateInfo) and isinstance(seq, int)
                if info.retry_after is None:
                    calm = calm or not slowed
                    self.pacer.observe(seq, info, now, actual=ONE,
                                       timing=timing if self.timed else None)  # type: ignore[arg-type]
                    push(now, "try", worker)
                else:
                    self.pacer.observe(seq, info, now)
                    self.pacer.rate_limited(seq, now, info.retry_after)
                    self.rejected_after_learning += bool(learned)
                    todo += 1
                    push(now + info.retry_after, "try", worker)
                for waiter in list(waiting):
                    waiting.discard(waiter)
                    push(now, "try", waiter)
        return self

    def max_in_window(self) -> int:
        return most_in_window(self.stamps, self.window)


@settings(max_examples=60, deadline=None)
# Call 10, the first warm call after learning, stalled 0.38 s before its send: bounded with
# its own duration as the fastest it counted from its start (a 429), where the warm call
# answered before learning showed the server's 0.05 s.
@example(limit=10, window=2.0, workers=8, handoff=0.0, server_time=0.05, stall_share=0.1,
         loopback=0.0, seed=31272)
@given(
    limit=st.integers(1, 30),
    window=st.sampled_from([0.5, 1.0, 2.0, 6.0]),
    workers=st.integers(1, 20),
    handoff=st.sampled_from([0.0, 0.002, 0.05]),
    server_time=st.sampled_from([0.0, 0.05, 0.2, 1.0]),
    stall_share=st.sampled_from([0.0, 0.1, 0.5]),
    loopback=st.sampled_from([0.0, 0.01, 0.2]),
    seed=st.integers(0, 2**16),
)
def test_once_learned_no_server_window_holds_more_than_the_limit(
    limit: int, window: float, workers: int, handoff: float, server_time: float,
    stall_share: float, loopback: float, seed: int,
) -> None:
    """Calls bounded by their timing never make the server refuse a call let go after the
    window was learned, whatever the stalls, connections, hand-offs and late answers."""
    model = ThreadedServerModel(limit=limit, window=window, workers=workers,
                                items=6 * limit + 20, handoff=handoff,
                                server_time=server_time, stall_share=stall_share,
                                loopback=loopback, seed=seed).run()
    assert model.rejected_after_learning == 0
    assert model.pacer.rate_limited_after_learning == 0


def test_a_busy_learned_window_stays_within_the_limit_and_gains_on_answers() -> None:
    """Many windows at 16 threads: none over the limit, and faster than counting from the
    answers (the same model with every timing withheld)."""
    kwargs = dict(limit=20, window=1.0, workers=16, items=400, handoff=0.002,
                  server_time=0.2, stall_share=0.05, loopback=0.005, seed=7)
    model = ThreadedServerModel(**kwargs).run()  # type: ignore[arg-type]
    assert model.rejected_after_learning == 0
    assert model.max_in_window() <= model.limit
    untimed = ThreadedServerModel(**kwargs, timed=False).run()  # type: ignore[arg-type]
    assert untimed.max_in_window() <= untimed.limit
    # 20 windows' boundaries, each about a latency (0.2 s) shorter.
    assert model.finished < untimed.finished - 10 * 0.2
