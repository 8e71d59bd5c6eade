"""Limits and costs: ``"500/minute"``, ``"200000 tokens/minute"``, ``rpm=``/``tpm=``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import ConfigError

REQUESTS = "requests"
TOKENS = "tokens"

_PERIODS = {
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_UNITS = {
    "": REQUESTS, "request": REQUESTS, "requests": REQUESTS, "req": REQUESTS,
    "call": REQUESTS, "calls": REQUESTS,
    "token": TOKENS, "tokens": TOKENS, "tok": TOKENS,
}
_LIMIT_RE = re.compile(
    r"^\s*(?P<amount>\d[\d_,]*(?:\.\d+)?)\s*(?P<unit>[a-z]*)\s*"
    r"(?:/|per)\s*(?P<count>\d+(?:\.\d+)?)?\s*(?P<period>[a-z]+)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``amount`` units of ``unit`` in any window of ``period`` seconds."""

    amount: float
    period: float
    unit: str = REQUESTS

    def __post_init__(self) -> None:
        if not self.amount > 0:
            raise ConfigError(f"limit amount must be positive, got {self.amount!r}")
        if not self.period > 0:
            raise ConfigError(f"limit period must be positive, got {self.period!r}")
        if self.unit not in (REQUESTS, TOKENS):
            raise ConfigError(f"limit unit must be 'requests' or 'tokens', got {self.unit!r}")

    @classmethod
    def parse(cls, text: str) -> Limit:
        """Parse ``"20/second"``, ``"500 per minute"``, ``"200000 tokens/minute"``, ``"10/5s"``."""
        m = _LIMIT_RE.match(text)
        if not m:
            raise ConfigError(
                f"cannot parse limit {text!r}: expected e.g. '500/minute' or "
                "'200000 tokens/minute'"
            )
        unit = _UNITS.get(m["unit"].lower())
        if unit is None:
            raise ConfigError(f"unknown unit {m['unit']!r} in limit {text!r}")
        period = _PERIODS.get(m["period"].lower())
        if period is None:
            raise ConfigError(f"unknown period {m['period']!r} in limit {text!r}")
        count = float(m["count"]) if m["count"] else 1.0
        amount = float(m["amount"].replace("_", "").replace(",", ""))
        try:
            return cls(amount, period * count, unit)
        except ConfigError as exc:  # "0/second", "5/0s": say which text was wrong
            raise ConfigError(f"bad limit {text!r}: {exc}") from None

    def scaled(self, factor: float) -> Limit:
        """This limit times a safety factor (e.g. 0.8), never below one unit."""
        return Limit(max(1.0, self.amount * factor), self.period, self.unit)

    def __str__(self) -> str:
        unit = " tokens" if self.unit == TOKENS else ""
        return f"{self.amount:g}{unit}/{self.period:g}s"


@dataclass(frozen=True, slots=True)
class Cost:
    """What one call spends: one request and an estimate of its tokens.

    ``output`` is the part of ``tokens`` reserved for the reply (``max_tokens`` times ``n``).
    Servers such as OpenAI charge it whatever the reply's length, so settling after the call
    replaces only the prompt estimate with the server's count.
    """

    requests: float = 1.0
    tokens: float = 0.0
    output: float = 0.0

    def of(self, unit: str) -> float:
        return self.tokens if unit == TOKENS else self.requests


ONE_REQUEST = Cost()

LimitSpec = Limit | str


def build_limits(
    limits: Iterable[LimitSpec] | LimitSpec | None = None,
    *,
    rpm: float | None = None,
    tpm: float | None = None,
    rps: float | None = None,
    safety: float = 1.0,
) -> list[Limit]:
    """Combine ``limits=[...]`` with the ``rpm``/``tpm``/``rps`` shorthands into Limit objects."""
    if not 0 < safety <= 1:
        raise ConfigError(f"safety factor must be in (0, 1], got {safety!r}")
    specs: list[LimitSpec]
    if limits is None:
        specs = []
    elif isinstance(limits, (str, Limit)):
        specs = [limits]
    else:
        specs = list(limits)
    out = [s if isinstance(s, Limit) else Limit.parse(s) for s in specs]
    for name, value, period, unit in (
        ("rpm", rpm, 60.0, REQUESTS),
        ("tpm", tpm, 60.0, TOKENS),
        ("rps", rps, 1.0, REQUESTS),
    ):
        if value is not None:
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")
            out.append(Limit(float(value), period, unit))
    return [lim.scaled(safety) if safety != 1.0 else lim for lim in out]


def describe(limits: Iterable[Limit]) -> Mapping[str, str]:
    """Limits as plain strings, for settings records and summaries."""
    return {f"limit{i}": str(lim) for i, lim in enumerate(limits)}
