"""Limits and costs: ``"500/minute"``, ``"200000 tokens/minute"``,
``"400000 input tokens/minute"``, ``rpm=``/``tpm=``/``itpm=``/``otpm=``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import ConfigError

REQUESTS = "requests"
TOKENS = "tokens"
#: Prompt tokens alone (Anthropic's ITPM) and generated tokens alone (its OTPM).
INPUT_TOKENS = "input_tokens"
OUTPUT_TOKENS = "output_tokens"
UNITS = (REQUESTS, TOKENS, INPUT_TOKENS, OUTPUT_TOKENS)

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
_KINDS = {"input": INPUT_TOKENS, "in": INPUT_TOKENS, "prompt": INPUT_TOKENS,
          "output": OUTPUT_TOKENS, "out": OUTPUT_TOKENS, "completion": OUTPUT_TOKENS}
_UNIT_WORDS = {REQUESTS: "", TOKENS: " tokens", INPUT_TOKENS: " input tokens",
               OUTPUT_TOKENS: " output tokens"}
_LIMIT_RE = re.compile(
    r"^\s*(?P<amount>\d[\d_,]*(?:\.\d+)?)\s*"
    r"(?:(?P<kind>input|output|in|out|prompt|completion)[\s_-]*)?(?P<unit>[a-z]*)\s*"
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
        if self.unit not in UNITS:
            raise ConfigError(f"limit unit must be one of {', '.join(UNITS)}, got {self.unit!r}")

    @classmethod
    def parse(cls, text: str) -> Limit:
        """Parse ``"20/second"``, ``"500 per minute"``, ``"200000 tokens/minute"``, ``"10/5s"``,
        ``"400000 input tokens/minute"``, ``"80000 output tokens/minute"``."""
        m = _LIMIT_RE.match(text)
        if not m:
            raise ConfigError(
                f"cannot parse limit {text!r}: expected e.g. '500/minute' or "
                "'200000 tokens/minute'"
            )
        unit = _UNITS.get(m["unit"].lower())
        if unit is None:
            raise ConfigError(f"unknown unit {m['unit']!r} in limit {text!r}")
        if m["kind"]:
            if unit != TOKENS:
                raise ConfigError(f"{m['kind']!r} goes with tokens, as in '80000 "
                                  f"{m['kind'].lower()} tokens/minute', in limit {text!r}")
            unit = _KINDS[m["kind"].lower()]
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
        return f"{self.amount:g}{_UNIT_WORDS[self.unit]}/{self.period:g}s"


@dataclass(frozen=True, slots=True)
class Cost:
    """What one call spends: one request and an estimate of its tokens.

    ``output`` is the part of ``tokens`` reserved for the reply (``max_tokens`` times ``n``)
    that servers such as OpenAI charge whatever the reply's length, so settling after the
    call replaces only the prompt estimate with the server's count. Input-token (ITPM) and
    output-token (OTPM) limits count ``input_tokens`` and ``output_tokens``; left None, they
    are the prompt part of ``tokens`` and the reserved ``output``. A server that charges the
    output as it is generated (Anthropic) gets ``output=0`` and ``output_tokens=max_tokens``.
    """

    requests: float = 1.0
    tokens: float = 0.0
    output: float = 0.0
    input_tokens: float | None = None
    output_tokens: float | None = None

    @property
    def generated(self) -> float:
        """Output tokens (OTPM): the reply's reservation, or what it generated once settled."""
        return self.output if self.output_tokens is None else self.output_tokens

    @property
    def prompt(self) -> float:
        """Input tokens (ITPM): the prompt's estimate, or the server's count once settled."""
        if self.input_tokens is not None:
            return self.input_tokens
        return max(0.0, self.tokens - (self.output or self.output_tokens or 0.0))

    def of(self, unit: str) -> float:
        """The units of ``unit`` this cost spends."""
        if unit == REQUESTS:
            return self.requests
        if unit == TOKENS:
            return self.tokens
        if unit == INPUT_TOKENS:
            return self.prompt
        if unit == OUTPUT_TOKENS:
            return self.generated
        return self.requests  # an unknown unit counts requests, as before

    def settled(self, input_tokens: float, output_tokens: float) -> Cost:
        """The cost the server counted, given the usage it reported.

        Tokens: the reported input plus the reserved ``output`` when the server charges
        that whatever the reply (else the reported output); each of input and output tokens
        exactly what was reported.
        """
        charged = input_tokens + (self.output if self.output else output_tokens)
        return Cost(self.requests, float(charged), self.output, float(input_tokens),
                    float(output_tokens))


ONE_REQUEST = Cost()

LimitSpec = Limit | str


def build_limits(
    limits: Iterable[LimitSpec] | LimitSpec | None = None,
    *,
    rpm: float | None = None,
    tpm: float | None = None,
    rps: float | None = None,
    safety: float = 1.0,
    itpm: float | None = None,
    otpm: float | None = None,
) -> list[Limit]:
    """Combine ``limits=[...]`` with the ``rpm``/``tpm``/``rps``/``itpm``/``otpm`` shorthands
    into Limit objects (``itpm``/``otpm``: input/output tokens per minute)."""
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
        ("itpm", itpm, 60.0, INPUT_TOKENS),
        ("otpm", otpm, 60.0, OUTPUT_TOKENS),
    ):
        if value is not None:
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")
            out.append(Limit(float(value), period, unit))
    return [lim.scaled(safety) if safety != 1.0 else lim for lim in out]


def counts_tokens(limits: Iterable[Limit]) -> bool:
    """Whether any limit counts tokens of some kind (calls then need an estimate)."""
    return any(lim.unit != REQUESTS for lim in limits)


def describe(limits: Iterable[Limit]) -> Mapping[str, str]:
    """Limits as plain strings, for settings records and summaries."""
    return {f"limit{i}": str(lim) for i, lim in enumerate(limits)}
