"""The progress line: its fields, fitted to the terminal's width by priority, and an honest ETA.

Pure functions of a :class:`~throttlepool.outcome.RunStats` snapshot and a clock reading, so
the display (throttlepool/progress.py) and the tests share them. Rates are rates: counts over
a sliding interval divided by its length, labelled with it; one shown against a limit is
over whole periods of that limit, so it never reads above a limit the calls kept
(:class:`RateWindow`); item rates leave out the items answered from the checkpoint or the
cache, which cost no time.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .cost.text import usd
from .limiter.limits import INPUT_TOKENS, OUTPUT_TOKENS, REQUESTS, TOKENS
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


# The columns a RateWindow follows, and per how many seconds each rate is shown.
_ITEMS, _REQUESTS, _TOKENS, _INPUT, _OUTPUT = range(5)
_UNITS = (None, REQUESTS, TOKENS, INPUT_TOKENS, OUTPUT_TOKENS)
_PER = (1.0, 60.0, 60.0, 60.0, 60.0)


def counts(stats: RunStats) -> tuple[int, int, int, int, int]:
    """What the rates count: items called, calls, tokens, input tokens, output tokens."""
    return (called(stats), stats.calls, stats.input_tokens + stats.output_tokens,
            stats.input_tokens, stats.output_tokens)


def shown_limits(limits: Sequence[tuple[float, float, str]]) -> dict[str, tuple[float, float]]:
    """Per unit, the (amount, period) of the limit the line shows: the lowest per minute."""
    shown: dict[str, tuple[float, float]] = {}
    for amount, period, unit in limits:
        if period > 0 and (unit not in shown
                           or amount / period < shown[unit][0] / shown[unit][1]):
            shown[unit] = (amount, period)
    return shown


def limit_window(period: float, interval: float = RATE_INTERVAL) -> float:
    """Seconds a rate shown against a limit of this ``period`` is measured over: a whole
    number of periods, as many as fit ``interval`` (at least one)."""
    return period * max(1, math.floor(interval / period + 1e-9))


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate (per second for items, per minute for the rest) over ``span`` seconds."""

    value: float = 0.0
    span: float = 0.0

    @property
    def label(self) -> str:
        """``(10s)``: the seconds it covers; nothing under a second."""
        return f"({self.span:.0f}s)" if self.span >= 1 else ""


@dataclass(frozen=True, slots=True)
class Rates:
    """The line's rates: items/s, then requests, tokens, input and output tokens a minute."""

    items: Rate = Rate()
    requests: Rate = Rate()
    tokens: Rate = Rate()
    input_tokens: Rate = Rate()
    output_tokens: Rate = Rate()


def _rate(count: int, column: int, span: float, window: float | None) -> Rate:
    """``count`` over ``span`` seconds; against a limit, over its whole ``window``."""
    if window is not None:  # never a shorter sample stretched: a burst would read as more
        return Rate(count * _PER[column] / window, window)
    return Rate(count * _PER[column] / span, span) if span > 0 else Rate()


def run_rates(stats: RunStats, now: float,
              limits: Sequence[tuple[float, float, str]] = ()) -> Rates:
    """The rates of the whole run so far (``stats.started`` to ``now``); one shown against a
    limit is over whole periods of it, as :class:`RateWindow`'s are."""
    span = max(0.0, now - stats.started) if stats.started else 0.0
    shown = shown_limits(stats.limits or limits)
    rates = []
    for column, count in enumerate(counts(stats)):
        unit = _UNITS[column]
        window = None
        if unit in shown and span > 0:
            period = shown[unit][1]
            window = period * max(1, math.ceil(span / period - 1e-9))
        rates.append(_rate(count, column, span, window))
    return Rates(*rates)


class RateWindow:
    """Counters sampled over time; their rates over the last ``interval`` seconds.

    A rate the line shows against a limit of ``amount`` per ``period`` seconds is the count
    of the last :func:`limit_window` seconds (whole periods) divided by that window, counted
    from the oldest sample inside it. The limit admits at most ``amount`` in any ``period``,
    so the figure cannot exceed it while the limit held; a count over a little more than
    the window, or over the first second stretched to a minute, could (trial 11 saw
    ``req/min(10s)=693/360`` from a full window and the burst opening the next one). Rates
    without a limit are over the last ``interval`` seconds, or the run so far when shorter.
    """

    def __init__(self, interval: float = RATE_INTERVAL) -> None:
        self.interval = interval
        self._samples: deque[tuple[float, tuple[int, ...]]] = deque()

    def sample(self, stats: RunStats, now: float,
               limits: Sequence[tuple[float, float, str]] = ()) -> Rates:
        """Record now; the rates, against ``stats.limits`` (else ``limits``)."""
        shown = shown_limits(stats.limits or limits)
        windows = [limit_window(shown[unit][1], self.interval) if unit in shown else None
                   for unit in _UNITS]
        keep = max([self.interval, *(w for w in windows if w is not None)])
        self._record(now, counts(stats), keep)
        latest = self._samples[-1][1]
        rates = []
        for column, window in enumerate(windows):
            t0, base = self._oldest_since(now - (window or self.interval))
            rates.append(_rate(latest[column] - base[column], column, now - t0, window))
        return Rates(*rates)

    def _record(self, now: float, values: tuple[int, ...], keep: float) -> None:
        samples = self._samples
        # Samples at least keep/400 s apart: a long window holds a few hundred, not one a draw.
        if len(samples) >= 2 and now - samples[-2][0] < keep / 400:
            samples[-1] = (now, values)
        else:
            samples.append((now, values))
        while len(samples) > 1 and samples[0][0] < now - keep:
            samples.popleft()

    def _oldest_since(self, since: float) -> tuple[float, tuple[int, ...]]:
        """The oldest sample taken at or after ``since`` (the latest one if none is)."""
        for t, values in self._samples:
            if t >= since:
                return t, values
        return self._samples[-1]


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


def io_text(shown: dict[str, tuple[float, float]], rates: Rates) -> str | None:
    """``in 12.3k/400k tok/min(10s), out 3.1k/80k``: input and output tokens per minute,
    each against its own limit; None when the run limits neither kind apart."""
    if INPUT_TOKENS not in shown and OUTPUT_TOKENS not in shown:
        return None
    parts = []
    for unit, word, rate in ((INPUT_TOKENS, "in", rates.input_tokens),
                             (OUTPUT_TOKENS, "out", rates.output_tokens)):
        limit = f"/{short(_per_minute(shown[unit]))}" if unit in shown else ""
        parts.append((f"{word} {short(rate.value)}{limit}", rate.label))
    (first, label), (second, other) = parts
    # The output's window is named only when it is not the input's.
    return f"{first} tok/min{label}, {second}" + (f" tok/min{other}" if other != label else "")


def _per_minute(limit: tuple[float, float]) -> float:
    amount, period = limit
    return amount * 60 / period


def fields(stats: RunStats, *, now: float, active: float, rates: Rates, desc: str,
           fallback_limits: Sequence[tuple[float, float, str]] = ()) -> list[Field]:
    """Every field of the line for this moment, most important first by priority; each
    rate against the limit of its unit (``stats.limits``, else ``fallback_limits``)."""
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
    shown = shown_limits(stats.limits or fallback_limits)
    requests = rates.requests
    limit = f"/{short(_per_minute(shown[REQUESTS]))}" if REQUESTS in shown else ""
    out.append(Field(7, 4, f"req/min{requests.label}={short(requests.value)}{limit}"))
    if stats.rate_limited:
        out.append(Field(8, 6, f"429s={stats.rate_limited}"))
    by_kind = io_text(shown, rates)
    if by_kind:  # input/output limits bind apart: each is shown against its own
        out.append(Field(9, 4, by_kind))
    if TOKENS in shown or (not by_kind and (stats.input_tokens or stats.output_tokens)):
        limit = f"/{short(_per_minute(shown[TOKENS]))}" if TOKENS in shown else ""
        tokens = rates.tokens
        out.append(Field(9, 7, f"tok/min{tokens.label}={short(tokens.value)}{limit}"))
    cost = cost_field(stats)
    if cost:
        out.append(Field(9, 4, cost))
    out.append(Field(10, 8, f"item/s{rates.items.label}={rates.items.value:.1f}"))
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
