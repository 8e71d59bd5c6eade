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
    kind: str  # the dimension that blocks ("requests" or "tokens"), "" when admitted
    wait: float  # seconds until this request would be admitted; 0.0 when admitted
    used_requests: int  # in the window before this request
    used_tokens: int
    remaining_requests: int | None  # after this request (None: no limit configured)
    remaining_tokens: int | None
    reset_requests: float  # seconds until the budget is whole again (the window empties)
    reset_tokens: float


class _KeyWindow:
    __slots__ = ("costs", "times", "token_sum")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.costs: deque[int] = deque()
        self.token_sum = 0

    def prune(self, horizon: float) -> None:
        times, costs = self.times, self.costs
        while times and times[0] <= horizon:
            times.popleft()
            self.token_sum -= costs.popleft()


class Windows:
    """Per-key sliding-window logs of admitted requests and their token charges."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeyWindow] = {}

    def clear(self) -> None:
        """Forget every admission."""
        self._keys.clear()

    def admit(
        self, key: str, cost: int, now: float, rpm: int | None, tpm: int | None, window: float
    ) -> Decision:
        """Admit one request of `cost` tokens at `now` if both limits allow it (caller locks)."""
        kw = self._keys.get(key)
        if kw is None:
            kw = self._keys[key] = _KeyWindow()
        horizon = now - window
        kw.prune(horizon)
        times = kw.times
        used_req = len(times)
        used_tok = kw.token_sum
        full_reset = times[-1] - horizon if times else 0.0

        if tpm is not None and cost > tpm:
            return Decision(
                False,
                True,
                "tokens",
                0.0,
                used_req,
                used_tok,
                None if rpm is None else max(0, rpm - used_req),
                max(0, tpm - used_tok),
                full_reset,
                full_reset,
            )

        req_wait = 0.0
        if rpm is not None and used_req + 1 > rpm:
            # The (used_req - rpm)-th oldest admission must leave before a slot frees.
            req_wait = times[used_req - rpm] - horizon
        tok_wait = 0.0
        if tpm is not None and used_tok + cost > tpm:
            excess = used_tok + cost - tpm
            freed = 0
            for t, c in zip(times, kw.costs, strict=True):
                freed += c
                if freed >= excess:
                    tok_wait = t - horizon
                    break

        if req_wait > 0.0 or tok_wait > 0.0:
            kind = "requests" if req_wait >= tok_wait else "tokens"
            return Decision(
                False,
                False,
                kind,
                max(req_wait, tok_wait),
                used_req,
                used_tok,
                None if rpm is None else max(0, rpm - used_req),
                None if tpm is None else max(0, tpm - used_tok),
                full_reset,
                full_reset,
            )

        times.append(now)
        kw.costs.append(cost)
        kw.token_sum += cost
        reset = now - horizon  # this admission is the newest: the window empties after it
        return Decision(
            True,
            False,
            "",
            0.0,
            used_req,
            used_tok,
            None if rpm is None else rpm - used_req - 1,
            None if tpm is None else tpm - used_tok - cost,
            reset,
            reset,
        )


class _Sweep:
    """Admission times and charges of one key (or all keys), with an incremental max sweep."""

    __slots__ = ("costs", "done", "left", "max_count", "max_sum", "run_sum", "times", "window")

    def __init__(self) -> None:
        self.times = array("d")
        self.costs = array("q")
        self.window = -1.0
        self._restart()

    def _restart(self) -> None:
        self.left = 0
        self.done = 0
        self.run_sum = 0
        self.max_count = 0
        self.max_sum = 0

    def add(self, t: float, cost: int) -> None:
        self.times.append(t)
        self.costs.append(cost)

    def maxima(self, window: float) -> tuple[int, int]:
        # Each window's maximum is reached by the one ending at an admission, so a
        # two-pointer sweep over the (sorted) log is exact; resume where the last call stopped.
        if window != self.window:
            self.window = window
            self._restart()
        times, costs = self.times, self.costs
        left, run_sum = self.left, self.run_sum
        max_count, max_sum = self.max_count, self.max_sum
        for i in range(self.done, len(times)):
            run_sum += costs[i]
            horizon = times[i] - window
            while times[left] <= horizon:
                run_sum -= costs[left]
                left += 1
            count = i - left + 1
            if count > max_count:
                max_count = count
            if run_sum > max_sum:
                max_sum = run_sum
        self.left, self.run_sum, self.done = left, run_sum, len(times)
        self.max_count, self.max_sum = max_count, max_sum
        return max_count, max_sum


class AdmissionLog:
    """Every admission (time, key, charge) kept compactly, for exact window statistics."""

    def __init__(self) -> None:
        self._all = _Sweep()
        self._per_key: dict[str, _Sweep] = {}

    def clear(self) -> None:
        """Forget every admission."""
        self._all = _Sweep()
        self._per_key = {}

    def add(self, key: str, t: float, cost: int) -> None:
        """Record one admission; times must be non-decreasing (caller locks)."""
        self._all.add(t, cost)
        sweep = self._per_key.get(key)
        if sweep is None:
            sweep = self._per_key[key] = _Sweep()
        sweep.add(t, cost)

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
        return self._all.maxima(window), {k: s.maxima(window) for k, s in self._per_key.items()}
