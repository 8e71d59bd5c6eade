"""The progress line: its fields, fitted to the terminal's width by priority, and an honest ETA.

Pure functions of a :class:`~throttlepool.outcome.RunStats` snapshot and a clock reading, so
the display (throttlepool/progress.py) and the tests share them. Rates are rates: counts over
a sliding interval divided by its length, labelled with it; item rates leave out the items
answered from the checkpoint or the cache, which cost no time.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .cost.text import usd
from .limiter.limits import INPUT_TOKENS, OUTPUT_TOKENS, TOKENS
from .outcome import RunStats

RATE_INTERVAL = 10.0  # seconds of history behind a live rate: short enough to see a stall
MIN_BAR = 8  # a narrower bar says nothing the count does not
MAX_BAR = 30
# Waits shorter than this are the limiter's ordinary pacing: not worth a flickering message.
SHOWN_WAIT = 1.0

# What RunStats.waiting_for may say, and how the line words it (the engine sets the key).
RATE_LIMIT = "rate limit"
SERVER_BUDGET = "server rate budget"
SERVER_429 = "server asked to wait (429)"
BREAKER = "circuit breaker open"
_NEXT_SLOT = (RATE_LIMIT, SERVER_BUDGET)


def short(n: float) -> str:
    """``1234567`` -> ``1.2M``, ``2474`` -> ``2.5k``, ``8.14`` -> ``8.1``."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}".replace(".0" + unit, unit)
    return f"{n:.1f}" if 0 < abs(n) < 10 and n != int(n) else f"{n:.0f}"


def clock_text(seconds: float) -> str:
    """``75`` -> ``01:15``, ``3725`` -> ``1:02:05`` (tqdm's style)."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def wait_text(stats: RunStats, now: float) -> str | None:
    """``rate limit: next slot in 41s``, or None while nothing worth saying is awaited."""
    reason = stats.waiting_for
    if reason is None:
        return None
    if stats.waiting_until is None:  # e.g. the breaker's half-open probe is out
        return f"{reason}: waiting" if stats.in_flight == 0 else None
    left = stats.waiting_until - now
    if left <= 0 or (left < SHOWN_WAIT and stats.in_flight > 0):
        return None
    seconds = f"{math.ceil(left)}s"
    return f"{reason}: next slot in {seconds}" if reason in _NEXT_SLOT else f"{reason}: {seconds}"


def stalled(stats: RunStats) -> bool:
    """Every worker waits and nothing is in flight: time that says nothing about throughput."""
    return stats.waiting_for is not None and stats.in_flight == 0


def called(stats: RunStats) -> int:
    """Items finished by a call in this run (not from the checkpoint or the cache)."""
    return max(0, stats.finished - stats.from_checkpoint - stats.cache_hits)


def limit_time(stats: RunStats, requests: int) -> float:
    """Seconds the configured limits need, beyond the first admission, for ``requests`` more.

    A window of ``period`` seconds holds ``amount`` at most, so the last of ``requests``
    comes ``floor((requests - 1) / amount)`` windows after the first; tokens count at the
    run's average per call so far.
    """
    if requests <= 0:
        return 0.0
    calls = stats.calls or 1
    per_call = {TOKENS: (stats.input_tokens + stats.output_tokens) / calls,
                INPUT_TOKENS: stats.input_tokens / calls,
                OUTPUT_TOKENS: stats.output_tokens / calls}
    need = 0.0
    for amount, period, unit in stats.limits:
        units = requests * per_call[unit] if unit in per_call else float(requests)
        if units > 0:
            need = max(need, max(0, math.ceil(units / amount - 1e-9) - 1) * period)
    return need


def eta(stats: RunStats, now: float, active: float) -> float | None:
    """Seconds to the end: the wait in force, then the longer of what the limits need for
    the items not yet admitted and what the observed throughput (over ``active`` seconds,
    when something was in flight) needs for the items left. None when unknown."""
    if stats.total is None:
        return None
    left = stats.total - stats.finished - stats.not_attempted
    if left <= 0:
        return 0.0
    done = called(stats)
    work = left * active / done if done > 0 and active > 0 else None
    to_admit = max(0, left - stats.in_flight)
    waited = 0.0
    if to_admit and stats.waiting_for is not None and stats.waiting_until is not None:
        waited = max(0.0, stats.waiting_until - now)
    limits = limit_time(stats, to_admit)
    if work is None and not (waited or limits):
        return None
    return waited + max(limits, work or 0.0)


def projected_cost(stats: RunStats) -> float | None:
    """USD the whole input will have cost this session: what was spent, plus the items left
    at the mean cost of the priced calls so far. None without a total or a priced call."""
    priced = called(stats) - stats.cost_unknown
    if stats.total is None or priced <= 0 or stats.cost_usd <= 0:
        return None
    left = max(0, stats.total - stats.finished - stats.not_attempted)
    return stats.cost_usd + left * stats.cost_usd / priced


def cost_field(stats: RunStats) -> str | None:
    """``cost=$0.0123 (~$1.20)``: spent so far and projected for the whole input; ``+?``
    when some calls have no price, ``cost=?`` when none has. None while nothing is priced."""
    if stats.cost_usd <= 0 and not stats.cost_unknown:
        return None
    if stats.cost_usd <= 0:
        return "cost=?"
    text = f"cost={usd(stats.cost_usd)}{'+?' if stats.cost_unknown else ''}"
    projected = projected_cost(stats)
    if projected is not None and projected > stats.cost_usd * 1.0001:
        text += f" (~{usd(projected)})"
    return text


class RateWindow:
    """Counters sampled over time; rates over the last ``interval`` seconds (or the run so far).

    ``io`` is the latest sample's (input, output) tokens per minute, over the same span.
    """

    def __init__(self, interval: float = RATE_INTERVAL) -> None:
        self.interval = interval
        self._samples: deque[tuple[float, int, int, int, int]] = deque()
        self.io: tuple[float, float] = (0.0, 0.0)

    def sample(self, stats: RunStats, now: float) -> tuple[float, float, float, float]:
        """Record now; returns (seconds covered, item/s, req/min, tok/min)."""
        samples = self._samples
        samples.append((now, called(stats), stats.calls, stats.input_tokens,
                        stats.output_tokens))
        # Keep one sample at or before the interval's start: the baseline to subtract.
        while len(samples) > 1 and samples[1][0] <= now - self.interval:
            samples.popleft()
        t0, items0, calls0, in0, out0 = samples[0]
        span = now - t0
        if span <= 0:
            self.io = (0.0, 0.0)
            return 0.0, 0.0, 0.0, 0.0
        _, items, calls, tokens_in, tokens_out = samples[-1]
        self.io = ((tokens_in - in0) * 60 / span, (tokens_out - out0) * 60 / span)
        return span, (items - items0) / span, (calls - calls0) * 60 / span, \
            (tokens_in + tokens_out - in0 - out0) * 60 / span


@dataclass(frozen=True, slots=True)
class Field:
    """One piece of the line: shown in ``order``, dropped first when ``priority`` is high."""

    order: int
    priority: int
    text: str


def fit(fields: Sequence[Field], width: int, fraction: float | None) -> str:
    """The most important fields that fit ``width`` columns, in display order, with a bar of
    ``fraction`` in the room left (placed after field order 2) when at least MIN_BAR fits."""
    chosen: list[Field] = []
    used = -1
    for f in sorted(fields, key=lambda f: f.priority):
        if used + 1 + len(f.text) <= width:
            chosen.append(f)
            used += 1 + len(f.text)
    chosen.sort(key=lambda f: f.order)
    room = width - used - 1 - 2  # a space and the two bar ends
    if fraction is not None and room >= MIN_BAR:
        size = min(room, MAX_BAR)
        filled = round(size * min(max(fraction, 0.0), 1.0))
        bar = Field(3, 0, "|" + "#" * filled + " " * (size - filled) + "|")
        chosen = sorted([*chosen, bar], key=lambda f: f.order)
    return " ".join(f.text for f in chosen)[:max(width, 0)]


def io_text(per_minute: dict[str, float], io: tuple[float, float], label: str) -> str | None:
    """``in 12.3k/400k tok/min(10s), out 3.1k/80k``: input and output tokens per minute,
    each against its own limit; None when the run limits neither kind apart."""
    if INPUT_TOKENS not in per_minute and OUTPUT_TOKENS not in per_minute:
        return None
    shown = []
    for (unit, word), rate in zip(((INPUT_TOKENS, "in"), (OUTPUT_TOKENS, "out")), io,
                                  strict=True):
        limit = f"/{short(per_minute[unit])}" if unit in per_minute else ""
        shown.append(f"{word} {short(rate)}{limit}")
    return f"{shown[0]} tok/min{label}, {shown[1]}"


def fields(stats: RunStats, *, now: float, active: float, rates: tuple[float, float, float, float],
           desc: str, fallback_limits: Sequence[tuple[float, float, str]] = (),
           io: tuple[float, float] = (0.0, 0.0)) -> list[Field]:
    """Every field of the line for this moment, most important first by priority;
    ``io``: input and output tokens per minute over the rates' span."""
    done = stats.finished + stats.not_attempted
    total = stats.total
    out = [Field(1, 0, f"{done}/{total}" if total is not None else f"{done}")]
    if desc:
        out.append(Field(0, 9, desc + ":"))
    if total:
        out.append(Field(2, 5, f"{100 * done / total:.0f}%"))
    left = eta(stats, now, active)
    elapsed = clock_text(now - stats.started) if stats.started else "00:00"
    out.append(Field(4, 2, f"{elapsed}<{clock_text(left) if left is not None else '?'}"))
    waiting = wait_text(stats, now)
    if waiting:
        out.append(Field(5, 1, waiting))
    if stats.failed:
        out.append(Field(6, 3, f"failed={stats.failed}"))
    span, items, requests, tokens = rates
    label = f"({span:.0f}s)" if span >= 1 else ""
    per_minute = {unit: amount * 60 / period for amount, period, unit in
                  (stats.limits or fallback_limits)}
    limit = f"/{short(per_minute['requests'])}" if "requests" in per_minute else ""
    out.append(Field(7, 4, f"req/min{label}={short(requests)}{limit}"))
    if stats.rate_limited:
        out.append(Field(8, 6, f"429s={stats.rate_limited}"))
    by_kind = io_text(per_minute, io, label)
    if by_kind:  # input/output limits bind apart: each is shown against its own
        out.append(Field(9, 4, by_kind))
    if TOKENS in per_minute or (not by_kind and (stats.input_tokens or stats.output_tokens)):
        limit = f"/{short(per_minute[TOKENS])}" if TOKENS in per_minute else ""
        out.append(Field(9, 7, f"tok/min{label}={short(tokens)}{limit}"))
    cost = cost_field(stats)
    if cost:
        out.append(Field(9, 4, cost))
    out.append(Field(10, 8, f"item/s{label}={items:.1f}"))
    if stats.retrying:
        out.append(Field(11, 10, f"retrying={stats.retrying}"))
    out.append(Field(12, 11, f"ok={stats.done}"))
    out.append(Field(13, 12, f"in_flight={stats.in_flight}"))
    return out


def terminal_width(fd: int | None, default: int = 80) -> int:
    """COLUMNS when set (as the user or a test asks), else the terminal's, else ``default``."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if fd is not None:
        try:
            return os.get_terminal_size(fd).columns or default
        except OSError:
            pass
    return default
