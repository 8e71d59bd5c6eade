"""Configuration of the rate-limited API simulator."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: "break" drops the connection midway: after `stream_break_after` events of a stream, or
#: halfway through a plain body.
FAULT_KINDS: frozenset[str] = frozenset({"500", "503", "529", "reset", "hang", "break"})


@dataclass
class SimConfig:
    """Limits, latency and faults of a simulated API server."""

    rpm: int | None = None  # requests admitted per window and key; None: unlimited
    tpm: int | None = None  # tokens (charges) admitted per window and key
    itpm: int | None = None  # input (prompt) tokens admitted per window and key
    otpm: int | None = None  # output (generated) tokens admitted per window and key
    window: float = 60.0  # seconds
    latency: float = 0.0  # seconds before an admitted request is answered (refusals are quick)
    jitter: float = 0.0  # latency varies by uniform(-jitter, +jitter), never below 0
    fail_rate: dict[str, float] = field(default_factory=dict)  # {"500"|"503"|"529"|...: p}
    hang_seconds: float = 30.0  # a hang answers (200) after this long, past client timeouts
    seed: int = 0  # of the fault and jitter draws; reset() reseeds
    per_key: bool = True  # budgets per API key; False: one budget for everyone
    gemini_headers: bool = False  # real Gemini sends no x-ratelimit-*/retry-after headers
    first_token_delay: float = 0.0  # seconds between a stream's headers and its first event
    chunk_interval: float = 0.0  # seconds between a stream's later events
    stream_break_after: int = 2  # events a "break" fault lets through before it drops

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError when a field is out of range."""
        for name in ("rpm", "tpm", "itpm", "otpm"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an int or None, got {value!r}")
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if not (isinstance(self.window, int | float) and math.isfinite(self.window)):
            raise ValueError(f"window must be a finite number, got {self.window!r}")
        if self.window <= 0:
            raise ValueError(f"window must be > 0, got {self.window}")
        brk = self.stream_break_after
        if isinstance(brk, bool) or not isinstance(brk, int) or brk < 0:
            raise ValueError(f"stream_break_after must be an int >= 0, got {brk!r}")
        for name in ("latency", "jitter", "hang_seconds", "first_token_delay",
                     "chunk_interval"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.fail_rate, Mapping):
            raise ValueError(f"fail_rate must be a mapping, got {self.fail_rate!r}")
        self.fail_rate = {str(k): float(v) for k, v in self.fail_rate.items()}
        unknown = set(self.fail_rate) - FAULT_KINDS
        if unknown:
            raise ValueError(
                f"unknown fault kinds {sorted(unknown)}; expected some of {sorted(FAULT_KINDS)}"
            )
        for kind, p in self.fail_rate.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fail_rate[{kind!r}] must be in [0, 1], got {p}")
        if sum(self.fail_rate.values()) > 1.0 + 1e-9:
            raise ValueError("fail_rate probabilities must sum to at most 1")

    def updated(self, changes: Mapping[str, Any]) -> SimConfig:
        """Return a validated copy with `changes` applied; unknown fields raise ValueError."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        return dataclasses.replace(self, **dict(changes))

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-serialisable dict."""
        return dataclasses.asdict(self)
