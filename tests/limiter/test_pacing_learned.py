"""The pacer learns a sliding-window server's limit and window, and then meets no 429.

A model of the simulator's server (its own exact window, ``throttlepool.sim.window``) is
driven by the pacer on a virtual clock: every call reaches the server some time after the
pacer lets it go and its answer comes back some time later, so the only thing the pacer can
rely on is the order "let go <= stamped by the server <= answered". Nothing sleeps.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field, replace

import pytest
from _server_models import most_in_window
from hypothesis import example, given, settings
from hypothesis import strategies as st

from throttlepool._pacing import HeaderBudget
from throttlepool.hints import RateInfo
from throttlepool.limiter import Cost, Limit
from throttlepool.sim.window import Windows

ONE = Cost(1.0)


def _ceil_ms(seconds: float) -> float:
    """What a duration header carries: whole milliseconds, rounded up (sim's go_duration)."""
    return math.ceil(seconds * 1000 - 1e-6) / 1000


@dataclass
class ServerModel:
    """A sliding-window server (requests only) and a batch of ``items`` calls against it."""

    limit: int
    window: float
    workers: int
    items: int
    uplink: tuple[float, float]  # seconds from "let go" to the server's stamp (min, max)
    downlink: tuple[float, float]  # seconds from the stamp to our answer
    seed: int = 0
    #: Anthropic's reset headers: a time of day rounded up to the whole second, read as
    #: seconds from when the answer arrives (else OpenAI's millisecond durations).
    absolute_resets: bool = False
    pacer: HeaderBudget = field(default_factory=HeaderBudget)
    rejected: list[tuple[int, bool]] = field(default_factory=list)  # (seq, learned when sent)
    stamps: list[float] = field(default_factory=list)
    now: float = 0.0

    def run(self) -> ServerModel:
        rng = random.Random(self.seed)
        server = Windows()
        events: list[tuple[float, int, str, object]] = []  # (time, tie, kind, payload)
        tie = 0

        def push(at: float, kind: str, payload: object) -> None:
            nonlocal tie
            tie += 1
            heapq.heappush(events, (at, tie, kind, payload))

        todo = self.items
        for worker in range(self.workers):
            push(0.0, "try", worker)
        waiting: set[int] = set()  # workers waiting for the budget: an answer wakes them
        learned_at_send: dict[int, bool] = {}
        while events:
            self.now, _, kind, payload = heapq.heappop(events)
            assert self.now < 10_000, "the batch never finishes"
            if kind == "try":
                worker = int(payload)  # type: ignore[call-overload]
                if todo == 0:
                    continue
                seq, wait = self.pacer.admit(ONE, self.now)
                if seq is None:
                    waiting.add(worker)
                    push(self.now + wait, "wake", worker)
                    continue
                todo -= 1
                learned_at_send[seq] = bool(self.pacer.learned_limits)
                push(self.now + rng.uniform(*self.uplink), "arrive", (worker, seq))
            elif kind == "wake":
                if int(payload) in waiting:  # type: ignore[call-overload]
                    waiting.discard(int(payload))  # type: ignore[call-overload]
                    push(self.now, "try", payload)
            elif kind == "arrive":
                worker, seq = payload  # type: ignore[misc]
                d = server.admit("k", 0, self.now, self.limit, None, self.window)
                if d.admitted:
                    self.stamps.append(self.now)
                info = RateInfo(limit_requests=self.limit,
                                remaining_requests=d.remaining_requests,
                                reset_requests=_ceil_ms(d.reset_requests),
                                retry_after=None if d.admitted else _ceil_ms(d.wait),
                                reset_resolution=1.0 if self.absolute_resets else 0.001)
                at = math.ceil(self.now + d.reset_requests)  # the time of day it names
                push(self.now + rng.uniform(*self.downlink), "answer", (worker, seq, info, at))
            else:  # an answer: observe it, wake every waiter (as the engine does)
                worker, seq, info, at = payload  # type: ignore[misc]
                if self.absolute_resets:
                    info = replace(info, reset_requests=max(0.0, at - self.now))
                self.pacer.observe(seq, info, self.now,
                                   actual=ONE if info.retry_after is None else None)
                if info.retry_after is not None:
                    self.pacer.rate_limited(seq, self.now, info.retry_after)
                    self.rejected.append((seq, learned_at_send[seq]))
                    todo += 1  # the item is retried after the server's wait
                    push(self.now + info.retry_after, "try", worker)
                else:
                    push(self.now, "try", worker)
                for waiter in list(waiting):
                    waiting.discard(waiter)
                    push(self.now, "try", waiter)
        return self

    def max_in_window(self) -> int:
        return most_in_window(self.stamps, self.window)


def test_no_429_per_window_reset_over_a_long_run() -> None:
    """40 windows of a bursty server: the 429s stay those met while learning (at most one
    per call in flight when the first one is answered), never one per window reset."""
    model = ServerModel(limit=50, window=2.0, workers=16, items=2000,
                        uplink=(0.001, 0.02), downlink=(0.005, 0.02)).run()
    assert len(model.rejected) <= model.workers
    assert model.max_in_window() <= model.limit


def test_the_window_is_learned_from_the_headers_and_installed() -> None:
    model = ServerModel(limit=50, window=2.0, workers=16, items=300,
                        uplink=(0.001, 0.01), downlink=(0.005, 0.015)).run()
    # The reset of a call just admitted is the window; the limit header is the amount.
    assert model.pacer.learned_limits == [Limit(50, 2.0)]
    assert [seq for seq, learned in model.rejected if learned] == []
    assert model.pacer.rate_limited_after_learning == 0
    # Paced by the window, not by full resets: 300 calls take about 300 / 50 windows.
    assert model.now <= (300 / 50) * 2.0 + 1.0


@settings(max_examples=60, deadline=None)
# A call's settlement applied before its answer (a merge once did) refused call 14 here.
@example(absolute=False, limit=2, window=0.5, workers=1, uplink=(0.0, 1.0),
         downlink=(0.0, 0.0), seed=1)
# Another call's settlement expired the log past an open call's entry: call 28 refused.
@example(absolute=False, limit=2, window=0.5, workers=2, uplink=(0.0, 1.0),
         downlink=(0.0, 0.0), seed=0)
# A whole-second reset read on a late answer (0.74 s for a 1 s window) taught a short window.
@example(absolute=True, limit=1, window=1.0, workers=3, uplink=(0.0, 1.767794703994023e-238),
         downlink=(0.0, 1.0), seed=0)
@given(
    absolute=st.booleans(),
    limit=st.integers(1, 40),
    window=st.sampled_from([0.5, 1.0, 2.0, 7.5]),
    workers=st.integers(1, 24),
    uplink=st.tuples(st.floats(0.0, 0.05), st.floats(0.0, 1.0)),
    downlink=st.tuples(st.floats(0.0, 0.05), st.floats(0.0, 3.0)),
    seed=st.integers(0, 2**16),
)
def test_once_learned_a_sliding_window_server_never_refuses(
    absolute: bool, limit: int, window: float, workers: int, uplink: tuple[float, float],
    downlink: tuple[float, float], seed: int,
) -> None:
    """Whatever the delays (up to seconds: a loaded machine, calls open for longer than the
    window), no call let go after the window was learned meets a 429."""
    model = ServerModel(limit=limit, window=window, workers=workers, items=6 * limit + 20,
                        uplink=(min(uplink), max(uplink)),
                        downlink=(min(downlink), max(downlink)), seed=seed,
                        absolute_resets=absolute).run()
    assert [seq for seq, learned in model.rejected if learned] == []
    assert model.pacer.rate_limited_after_learning == 0


def test_whole_second_reset_times_teach_the_window_not_a_second_more() -> None:
    """Anthropic's resets are times of day rounded up to the second: the longest of them is
    up to a second more than a 10 s window, a second lost at every window boundary (the
    trial's 80 items took 11.7 s where about 10.3 s is possible). Each admitted call's reset
    plus the time since it was let go bounds the window; the least of them comes within the
    way out once the calls' stamps fall at different fractions of a second."""
    model = ServerModel(limit=30, window=10.0, workers=8, items=120,
                        uplink=(0.001, 0.01), downlink=(0.05, 0.1),
                        absolute_resets=True).run()
    (learned,) = model.pacer.learned_limits
    assert 10.0 <= learned.period <= 10.1  # the longest reset: 10.93 s
    assert [seq for seq, was_learned in model.rejected if was_learned] == []
    assert model.max_in_window() <= model.limit
    # 4 windows of 30, 3 boundaries: the first still loses most of a second (its calls all
    # round alike), the later ones ~0.1 s; the longest reset lost ~1 s at each (33.4 s).
    assert model.now <= 3 * 10.0 + 1.5


def test_the_learned_log_waits_for_the_oldest_call_not_the_full_reset() -> None:
    pacer = HeaderBudget()
    seqs = [pacer.admit(ONE, 0.0)[0] for _ in range(3)]
    assert None not in seqs
    # Answers at 0.1, 0.5 and 0.9: the spend grows 1, 2, 3 while the reset stays 2 s.
    for seq, at, remaining in zip(seqs, (0.1, 0.5, 0.9), (2, 1, 0), strict=True):
        pacer.observe(seq, RateInfo(limit_requests=3, remaining_requests=remaining,  # type: ignore[arg-type]
                                    reset_requests=2.0), at)
    assert pacer.learned_limits == [Limit(3, 2.0)]  # learned without a 429
    # The first call counts until 0.1 + 2.0 (from its answer): not a whole reset from now.
    assert pacer.admit(ONE, 1.0) == (None, pytest.approx(1.1))
    assert pacer.admit(ONE, 2.1)[0] is not None
    assert pacer.admit(ONE, 2.1)[0] is None
    assert pacer.admit(ONE, 2.5)[0] is not None


def test_an_unanswered_call_keeps_counting_past_the_window() -> None:
    """A call that has had no answer for a whole window may still reach the server."""
    pacer = HeaderBudget()
    first, _ = pacer.admit(ONE, 0.0)
    second, _ = pacer.admit(ONE, 0.0)
    assert first is not None and second is not None
    pacer.observe(first, RateInfo(limit_requests=2, remaining_requests=1, reset_requests=1.0),
                  0.01)
    pacer.rate_limited(99, 0.02, 0.98)
    assert pacer.learned_limits == [Limit(2, 1.0)]
    assert pacer.admit(ONE, 0.5)[0] is None
    # At 1.5 the first call has left every window, the second is still out: one slot.
    assert pacer.admit(ONE, 1.5)[0] is not None
    assert pacer.admit(ONE, 1.5)[0] is None


def test_an_open_call_still_counts_after_another_calls_answer_is_settled() -> None:
    """Settling an answer expires the learned log at its time: a call open for more than a
    window must be counted from then before that, not dropped (the server may stamp it
    after the answered call; a fourth call would make four in a window of three)."""
    pacer = HeaderBudget()
    seqs = [pacer.admit(ONE, 0.0)[0] for _ in range(3)]
    for seq, at, remaining in zip(seqs, (0.1, 0.5, 0.9), (2, 1, 0), strict=True):
        pacer.observe(seq, RateInfo(limit_requests=3, remaining_requests=remaining,  # type: ignore[arg-type]
                                    reset_requests=2.0), at)
    assert pacer.learned_limits == [Limit(3, 2.0)]
    first, _ = pacer.admit(ONE, 2.1)
    second, _ = pacer.admit(ONE, 2.5)
    third, _ = pacer.admit(ONE, 2.95)
    assert None not in (first, second, third)
    assert third is not None
    pacer.observe(third, None, 4.2, actual=ONE)  # answered with usage; 4.2 > 2.1 + 2.0
    # The first and second are still out, the third counts from 4.2: the second's entry
    # (2.5) is the first to leave.
    assert pacer.admit(ONE, 4.2) == (None, pytest.approx(0.3))


def test_a_whole_second_reset_read_on_a_late_answer_does_not_shorten_the_window() -> None:
    """Anthropic's reset is a time of day (the call's stamp plus the window, rounded up),
    read when the answer arrives: stamped at 0.0 in a 1 s window and answered at 0.26, it
    reads 0.74 s. The window is no shorter than reset + time since the call was let go."""
    pacer = HeaderBudget()
    first, _ = pacer.admit(ONE, 0.0)
    assert first is not None
    pacer.observe(first, RateInfo(limit_requests=2, remaining_requests=1, reset_requests=0.74,
                                  reset_resolution=1.0), 0.26, actual=ONE)
    pacer.rate_limited(99, 0.3, 0.7)  # a 429 about as long as the reset: a sliding window
    (learned,) = pacer.learned_limits
    assert learned.period == pytest.approx(1.0)  # not 0.74


def test_an_answered_call_is_remembered_as_long_as_the_learned_window_may_count_it() -> None:
    """Late answers make every whole-second reset shorter than the bound (0.7 against 1.0):
    a call forgotten after the longest reset is missing when a tighter bound re-learns the
    window, and the log lets a fourth call into a window of three."""
    pacer = HeaderBudget()

    def info(remaining: int, reset: float) -> RateInfo:
        return RateInfo(limit_requests=3, remaining_requests=remaining, reset_requests=reset,
                        reset_resolution=1.0)

    first, _ = pacer.admit(ONE, 0.0)
    assert first is not None
    pacer.observe(first, info(2, 0.72), 0.3, actual=ONE)
    pacer.rate_limited(99, 0.35, 0.67)  # a sliding window: learned 3 per 1.02 s
    second, _ = pacer.admit(ONE, 0.4)
    assert second is not None
    pacer.observe(second, info(1, 0.7), 0.7, actual=ONE)  # 3 per 1.0 s; counts to 1.7
    third, _ = pacer.admit(ONE, 1.31)
    fourth, _ = pacer.admit(ONE, 1.5)  # 0.8 s after the second's answer: still counted
    assert third is not None and fourth is not None
    pacer.observe(third, info(0, 0.69), 1.61, actual=ONE)  # 3 per 0.99 s: re-learned
    (learned,) = pacer.learned_limits
    assert learned.period == pytest.approx(0.99)
    # The second (answered 0.7), third and fourth fill the window until 0.7 + 0.99.
    assert pacer.admit(ONE, 1.62) == (None, pytest.approx(0.07))


def test_a_token_bucket_server_is_not_taken_for_a_window() -> None:
    """llmock's headers: the reset grows with the spend (12 s, 24 s ... 60 s)."""
    pacer = HeaderBudget()
    seqs = [pacer.admit(ONE, 0.0)[0] for _ in range(5)]
    for i, seq in enumerate(seqs):
        pacer.observe(seq, RateInfo(limit_requests=5, remaining_requests=4 - i,  # type: ignore[arg-type]
                                    reset_requests=12.0 * (i + 1)), 0.01 * (i + 1))
    assert pacer.learned_limits == []
    assert not pacer.requests.bursty


def test_whole_second_resets_of_a_token_bucket_are_not_taken_for_a_window() -> None:
    """Anthropic's RFC 3339 resets are whole seconds, rounded up: a bucket refilling 2 per
    second reads 1 s after 1 call and still 1 s after 2, which looks like a window."""
    pacer = HeaderBudget()
    seqs = [pacer.admit(ONE, 0.0)[0] for _ in range(8)]
    for i, seq in enumerate(seqs):
        spent = i + 1
        pacer.observe(seq, RateInfo(limit_requests=120, remaining_requests=120 - spent,  # type: ignore[arg-type]
                                    reset_requests=float(math.ceil(spent / 2)),
                                    reset_resolution=1.0), 0.001 * spent)
    assert pacer.learned_limits == []
    assert not pacer.requests.bursty


def test_a_learned_window_a_configured_limit_covers_is_left_to_the_limiter() -> None:
    """The learned log counts each call from its answer; the configured limiter, exact and
    counting from each call's start, already enforces the same window: the pacer does not
    hold a call back a round trip at each window boundary (issue 16)."""
    pacer = HeaderBudget([Limit(3, 2.0)])
    seqs = [pacer.admit(ONE, 0.0)[0] for _ in range(3)]
    for seq, at, remaining in zip(seqs, (0.1, 0.5, 0.9), (2, 1, 0), strict=True):
        pacer.observe(seq, RateInfo(limit_requests=3, remaining_requests=remaining,  # type: ignore[arg-type]
                                    reset_requests=2.0), at)
    assert pacer.requests.learned() == Limit(3, 2.0)
    assert pacer.learned_limits == []
    assert pacer.admit(ONE, 2.05)[0] is not None  # counted from its answer: not before 2.1


def test_a_learned_window_stricter_than_the_configured_limit_still_paces() -> None:
    pacer = HeaderBudget([Limit(10, 2.0)])  # the server allows 3: the headers tighten it
    seqs = [pacer.admit(ONE, 0.0)[0] for _ in range(3)]
    for seq, at, remaining in zip(seqs, (0.1, 0.5, 0.9), (2, 1, 0), strict=True):
        pacer.observe(seq, RateInfo(limit_requests=3, remaining_requests=remaining,  # type: ignore[arg-type]
                                    reset_requests=2.0), at)
    assert pacer.learned_limits == [Limit(3, 2.0)]
    assert pacer.admit(ONE, 2.05) == (None, pytest.approx(0.05))


def _anthropic_answer(remaining_in: float, remaining_out: float, reset: float) -> RateInfo:
    return RateInfo(limit_input_tokens=300, remaining_input_tokens=remaining_in,
                    reset_input_tokens=reset, limit_output_tokens=400,
                    remaining_output_tokens=remaining_out, reset_output_tokens=reset,
                    reset_resolution=1.0)


def test_the_learned_window_counts_what_a_call_used_not_its_reservation() -> None:
    """Anthropic's OTPM charges the output generated: a call reserving max_tokens=30 that
    writes 6 must count 6 in the learned window, or 400 per 10 s admits 13 calls a window
    instead of 60 (the trial's 80 items: 55 s instead of about 10 s)."""
    reserve = Cost(1.0, 34.0, 0.0, None, 30.0)  # the anthropic adapter's estimate
    used = reserve.settled(4, 6)
    pacer = HeaderBudget()
    seqs = [pacer.admit(reserve, 0.0)[0] for _ in range(8)]
    for i, seq in enumerate(seqs):  # 8 answers: the spend grows, the reset stays 10 s
        assert seq is not None
        pacer.observe(seq, _anthropic_answer(300 - 4 * (i + 1), 400 - 6 * (i + 1), 10.0),
                      0.1 + 0.01 * i, actual=used)
    assert {lim.unit for lim in pacer.learned_limits} == {"input_tokens", "output_tokens"}
    admitted, now = 8, 0.2
    while (seq := pacer.admit(reserve, now)[0]) is not None:  # one at a time, 10 ms each
        admitted += 1
        now += 0.01
        pacer.observe(seq, None, now, actual=used)
    # 400 output tokens at 6 a call, with room for the next call's 30 reserved: 62 calls.
    assert admitted >= 60
    assert admitted <= 400 // 6


def test_a_settled_call_never_lets_the_learned_window_over_the_limit() -> None:
    """Settling to usage frees only what the call did not use: the server's window never
    holds more than its limit (modelled: each call uses 6 of the 30 it reserves)."""
    reserve = Cost(1.0, 34.0, 0.0, None, 30.0)
    used = reserve.settled(4, 6)
    pacer = HeaderBudget()
    first, _ = pacer.admit(reserve, 0.0)
    second, _ = pacer.admit(reserve, 0.0)
    assert first is not None and second is not None
    pacer.observe(first, _anthropic_answer(296, 394, 10.0), 0.1, actual=used)
    pacer.observe(second, _anthropic_answer(292, 388, 10.0), 0.1, actual=used)
    pacer.rate_limited(99, 0.2, 9.8)  # a 429 as long as the reset: a sliding window
    sent = []
    now = 0.2
    while now < 40.0:
        seq, wait = pacer.admit(reserve, now)
        if seq is None:
            now += max(wait, 0.01)
            continue
        sent.append(now)
        now += 0.05
        pacer.observe(seq, None, now, actual=used)  # answered 50 ms later
    assert len(sent) > 3 * 60  # about 66 a window over 4 windows, not 13
    stamps = [0.0, 0.0, *sent]
    for t in stamps:  # output tokens in any 10 s window the server keeps (counted at send)
        assert 6 * sum(1 for s in stamps if t - 10.0 < s <= t) <= 400


def test_a_prompt_counted_under_the_estimate_keeps_its_estimate_in_the_learned_window() -> None:
    """OpenAI charges its TPM by its own estimate of the prompt (characters / 4) plus
    max_tokens, not by the usage it reports: a call whose usage says 2 prompt tokens where
    the estimate (the charge) was 10 still counts 40 of a learned 400 per 10 s, not 32."""
    reserve = Cost(1.0, 40.0, 30.0)  # the openai adapter's: prompt 10 + max_tokens 30
    used = reserve.settled(2, 5)  # tokens 32: usage's prompt + the reserved output
    pacer = HeaderBudget()
    seqs = [pacer.admit(reserve, 0.0)[0] for _ in range(3)]
    for i, seq in enumerate(seqs):  # the spend grows 1, 2, 3 calls; the reset stays 10 s
        assert seq is not None
        pacer.observe(seq, RateInfo(limit_tokens=400, remaining_tokens=400 - 40 * (i + 1),
                                    reset_tokens=10.0), 0.1 + 0.01 * i, actual=used)
    assert pacer.learned_limits == [Limit(400, 10.0, "tokens")]
    admitted, now = 3, 0.2
    while (seq := pacer.admit(reserve, now)[0]) is not None:
        admitted += 1
        now += 0.01
        pacer.observe(seq, None, now, actual=used)
    assert admitted == 10  # 400 / 40; settled to usage it would be 12
