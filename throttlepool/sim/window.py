"""Exact sliding-window admission per API key, and the admission log behind the stats.

An admission at time ``s`` counts against every window that contains ``s``; windows are
half-open, so at time ``now`` it still counts iff ``s > now - window``. Callers hold one lock
around :meth:`Windows.admit` so that admission times are non-decreasing.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one admission check, with everything the response headers need."""

    admitted: bool
    too_large: bool
    # the dimension that blocks ("requests", "tokens", "input_tokens" or "output_tokens");
    # "" when admitted
    kind: str
    wait: float  # seconds until this request would be admitted; 0.0 when admitted
    used_requests: int  # in the window before this request
    used_tokens: int
    remaining_requests: int | None  # after this request (None: no limit configured)
    remaining_tokens: int | None
    reset_requests: float  # seconds until the budget is whole again (the window empties)
    reset_tokens: float
    used_input: int = 0
    used_output: int = 0
    remaining_input: int | None = None
    remaining_output: int | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """The input- and output-token limits of one check (ITPM, OTPM), with this request's
    charges in each; a limit of None is not enforced."""

    itpm: int | None = None
    otpm: int | None = None
    input_cost: int = 0
    output_cost: int = 0


_NO_IO = Limits()


class _KeyWindow:
    __slots__ = ("costs", "input_sum", "inputs", "output_sum", "outputs", "times", "token_sum")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.costs: deque[int] = deque()
        self.inputs: deque[int] = deque()
        self.outputs: deque[int] = deque()
        self.token_sum = self.input_sum = self.output_sum = 0

    def prune(self, horizon: float) -> None:
        times = self.times
        while times and times[0] <= horizon:
            times.popleft()
            self.token_sum -= self.costs.popleft()
            self.input_sum -= self.inputs.popleft()
            self.output_sum -= self.outputs.popleft()


def _wait(times: deque[float], costs: deque[int], used: int, cost: int, limit: int | None,
          horizon: float) -> float:
    """Seconds until enough of the oldest charges leave for `cost` to fit under `limit`."""
    if limit is None or used + cost <= limit:
        return 0.0
    excess = used + cost - limit
    freed = 0
    for t, c in zip(times, costs, strict=True):
        freed += c
        if freed >= excess:
            return t - horizon
    return 0.0  # unreachable while cost <= limit


def _left(limit: int | None, used: int, cost: int = 0) -> int | None:
    return None if limit is None else max(0, limit - used - cost)


class Windows:
    """Per-key sliding-window logs of admitted requests and their token charges."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeyWindow] = {}

    def clear(self) -> None:
        """Forget every admission."""
        self._keys.clear()

    def admit(
        self, key: str, cost: int, now: float, rpm: int | None, tpm: int | None, window: float,
        io: Limits = _NO_IO,
    ) -> Decision:
        """Admit one request of `cost` tokens at `now` if every limit allows it (caller locks);
        `io` adds the separate input- and output-token limits."""
        kw = self._keys.get(key)
        if kw is None:
            kw = self._keys[key] = _KeyWindow()
        horizon = now - window
        kw.prune(horizon)
        times = kw.times
        used_req = len(times)
        used_tok, used_in, used_out = kw.token_sum, kw.input_sum, kw.output_sum
        full_reset = times[-1] - horizon if times else 0.0

        too_large = ("tokens" if tpm is not None and cost > tpm else
                     "input_tokens" if io.itpm is not None and io.input_cost > io.itpm else
                     "output_tokens" if io.otpm is not None and io.output_cost > io.otpm else "")
        if too_large:
            return Decision(False, True, too_large, 0.0, used_req, used_tok,
                            _left(rpm, used_req), _left(tpm, used_tok), full_reset, full_reset,
                            used_in, used_out, _left(io.itpm, used_in),
                            _left(io.otpm, used_out))

        # The (used_req - rpm)-th oldest admission must leave before a request slot frees.
        req_wait = times[used_req - rpm] - horizon if rpm is not None and used_req >= rpm else 0.0
        tok_wait = _wait(times, kw.costs, used_tok, cost, tpm, horizon)
        in_wait = out_wait = 0.0
        if io is not _NO_IO:
            in_wait = _wait(times, kw.inputs, used_in, io.input_cost, io.itpm, horizon)
            out_wait = _wait(times, kw.outputs, used_out, io.output_cost, io.otpm, horizon)
        wait = max(req_wait, tok_wait, in_wait, out_wait)
        if wait > 0.0:
            kind = ("requests" if req_wait == wait else "tokens" if tok_wait == wait else
                    "input_tokens" if in_wait == wait else "output_tokens")
            return Decision(False, False, kind, wait, used_req, used_tok,
                            _left(rpm, used_req), _left(tpm, used_tok), full_reset, full_reset,
                            used_in, used_out, _left(io.itpm, used_in),
                            _left(io.otpm, used_out))

        times.append(now)
        kw.costs.append(cost)
        kw.inputs.append(io.input_cost)
        kw.outputs.append(io.output_cost)
        kw.token_sum += cost
        kw.input_sum += io.input_cost
        kw.output_sum += io.output_cost
        reset = now - horizon  # this admission is the newest: the window empties after it
        return Decision(True, False, "", 0.0, used_req, used_tok,
                        None if rpm is None else rpm - used_req - 1,
                        None if tpm is None else tpm - used_tok - cost, reset, reset,
                        used_in, used_out, _left(io.itpm, used_in, io.input_cost),
                        _left(io.otpm, used_out, io.output_cost))


class _Sweep:
    """Admission times and charges of one key (or all keys), with an incremental max sweep."""

    __slots__ = ("costs", "done", "inputs", "left", "maxes", "outputs", "sums", "times",
                 "window")

    def __init__(self) -> None:
        self.times = array("d")
        self.costs = array("q")
        self.inputs = array("q")
        self.outputs = array("q")
        self.window = -1.0
        self._restart()

    def _restart(self) -> None:
        self.left = 0
        self.done = 0
        self.sums = [0, 0, 0]  # tokens, input tokens, output tokens in the current window
        self.maxes = [0, 0, 0, 0]  # requests, then the same three

    def add(self, t: float, cost: int, input_cost: int, output_cost: int) -> None:
        self.times.append(t)
        self.costs.append(cost)
        self.inputs.append(input_cost)
        self.outputs.append(output_cost)

    def maxima(self, window: float) -> list[int]:
        # Each window's maximum is reached by the one ending at an admission, so a
        # two-pointer sweep over the (sorted) log is exact; resume where the last call stopped.
        if window != self.window:
            self.window = window
            self._restart()
        times, costs, inputs, outputs = self.times, self.costs, self.inputs, self.outputs
        left = self.left
        tok, inp, out = self.sums
        max_count, max_tok, max_in, max_out = self.maxes
        for i in range(self.done, len(times)):
            tok += costs[i]
            inp += inputs[i]
            out += outputs[i]
            horizon = times[i] - window
            while times[left] <= horizon:
                tok -= costs[left]
                inp -= inputs[left]
                out -= outputs[left]
                left += 1
            max_count = max(max_count, i - left + 1)
            max_tok, max_in, max_out = max(max_tok, tok), max(max_in, inp), max(max_out, out)
        self.left, self.done = left, len(times)
        self.sums = [tok, inp, out]
        self.maxes = [max_count, max_tok, max_in, max_out]
        return self.maxes


class AdmissionLog:
    """Every admission (time, key, charges) kept compactly, for exact window statistics."""

    def __init__(self) -> None:
        self._all = _Sweep()
        self._per_key: dict[str, _Sweep] = {}

    def clear(self) -> None:
        """Forget every admission."""
        self._all = _Sweep()
        self._per_key = {}

    def add(self, key: str, t: float, cost: int, input_cost: int = 0,
            output_cost: int = 0) -> None:
        """Record one admission; times must be non-decreasing (caller locks)."""
        self._all.add(t, cost, input_cost, output_cost)
        sweep = self._per_key.get(key)
        if sweep is None:
            sweep = self._per_key[key] = _Sweep()
        sweep.add(t, cost, input_cost, output_cost)

    def __len__(self) -> int:
        return len(self._all.times)

    def counts(self) -> dict[str, int]:
        """Admissions per key."""
        return {k: len(s.times) for k, s in self._per_key.items()}

    def first_last(self) -> tuple[float | None, float | None]:
        """Times of the first and last admission, or None when there are none."""
        times = self._all.times
        return (times[0], times[-1]) if times else (None, None)

    def maxima(self, window: float) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
        """Largest (request count, token charge) admitted in any window, overall and per key."""
        first = self._all.maxima(window)
        return (first[0], first[1]), {k: (m[0], m[1]) for k, s in self._per_key.items()
                                      for m in (s.maxima(window),)}

    def io_maxima(self, window: float) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
        """Largest (input, output) token charges admitted in any window, overall and per key."""
        first = self._all.maxima(window)
        return (first[2], first[3]), {k: (m[2], m[3]) for k, s in self._per_key.items()
                                      for m in (s.maxima(window),)}
