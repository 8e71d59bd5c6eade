"""What every simulated Batch API shares: its settings, the log of submitted requests, which
requests fail, and how a batch moves from created to ended as time passes.

A batch is *validating* for the first tenth of ``delay``, then *running*; at ``delay`` it
ends *completed* with every request answered. ``expire_after`` (shorter than ``delay``)
ends it *expired* with the requests answered by then (a share proportional to the time
elapsed); a cancel ends it *cancelled* a moment later, with the share answered before the
cancel. Each provider's route (batches.py, anthropic_batches.py, gemini_batches.py) names
these phases in its own words and writes its own result format.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from throttlepool.sim.server import Simulator
    from throttlepool.sim.state import SimState

R = TypeVar("R", bound="BatchRoute")

VALIDATING, RUNNING = "validating", "running"
COMPLETED, EXPIRED, CANCELLED = "completed", "expired", "cancelled"


@dataclass
class BatchSimConfig:
    """How simulated batches behave.

    ``delay``: seconds from creation to completion (validating takes the first tenth);
    ``fail_rate``: chance that a request's first submission fails (HTTP 500, ``api_error``,
    code 13, in each provider's words); ``fail_ids``: custom ids (keys) whose first
    submission fails; ``expire_after``: seconds after which an unfinished batch expires (the
    requests answered by then, a share proportional to the time elapsed, have answers, the
    rest are expired); ``max_requests``: requests per batch.
    """

    delay: float = 0.2
    fail_rate: float = 0.0
    fail_ids: frozenset[str] = frozenset()
    expire_after: float | None = None
    max_requests: int = 50_000
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Ending:
    """How a batch ended: COMPLETED, EXPIRED or CANCELLED, and the share of its requests
    (in submission order) answered before that."""

    outcome: str
    share: float

    def answered(self, total: int) -> int:
        """How many of ``total`` requests got an answer."""
        return int(total * min(1.0, max(0.0, self.share)))


def phase(config: BatchSimConfig, started: float, cancel_at: float | None) -> str | Ending:
    """Where a batch created at monotonic ``started`` (cancelled at ``cancel_at``) is now:
    VALIDATING, RUNNING, or its Ending."""
    now = time.monotonic()
    elapsed = now - started
    delay = config.delay
    if cancel_at is not None:
        if now - cancel_at < min(delay / 10, 1.0):
            return RUNNING  # cancelling takes a moment, as it does for real (up to 10 min)
        return Ending(CANCELLED, (cancel_at - started) / delay if delay > 0 else 1.0)
    if config.expire_after is not None and elapsed >= config.expire_after < delay:
        return Ending(EXPIRED, config.expire_after / delay)
    if elapsed >= delay:
        return Ending(COMPLETED, 1.0)
    return VALIDATING if elapsed < delay / 10 else RUNNING


class BatchRoute:
    """The state every simulated Batch API keeps: settings, a lock, the submission log,
    the requests that failed once, a sequence and a seeded random order. Subclasses add
    their batches in :meth:`forget` and answer requests in ``handle``."""

    default_max_requests = 50_000
    #: What the endpoints are called, for the error when a simulator does not serve them.
    title = "batch"

    @classmethod
    def of(cls: type[R], sim: Simulator) -> R:
        """This route of a running simulator (to configure it or read its submissions)."""
        for route in sim.state.routes:
            if isinstance(route, cls):
                return route
        raise LookupError(f"this simulator serves no {cls.title} endpoints")

    def __init__(self, state: SimState) -> None:
        self._state = state
        self._lock = threading.Lock()
        #: What reset goes back to: the defaults, or what ``throttlepool sim`` was told.
        self.defaults = BatchSimConfig(max_requests=self.default_max_requests)
        self.reset()

    def reset(self) -> None:
        """Forget every batch and submission; back to the default behaviour."""
        with self._lock:
            self.config = dataclasses.replace(self.defaults)
            self._submitted: list[dict[str, Any]] = []
            self._failed_once: set[str] = set()
            self._seq = 0
            self._rng = random.Random(self.config.seed)
            self.forget()

    def forget(self) -> None:
        """Drop the route's own batches and files (called under the lock by reset)."""

    def configure(self, **changes: Any) -> BatchSimConfig:
        """Change how batches behave (``delay``, ``fail_rate``, ``fail_ids``,
        ``expire_after``, ``max_requests``; see :class:`BatchSimConfig`)."""
        with self._lock:
            for name, value in changes.items():
                if not hasattr(self.config, name):
                    raise ValueError(f"unknown batch sim setting {name!r}")
                setattr(self.config, name, frozenset(value) if name == "fail_ids" else value)
            return self.config

    def configure_defaults(self, **changes: Any) -> BatchSimConfig:
        """:meth:`configure`, kept across a reset (``POST /__reset``): the behaviour a
        simulator was started with (``throttlepool sim --batch-delay ...``)."""
        config = self.configure(**changes)
        with self._lock:
            self.defaults = dataclasses.replace(config)
        return config

    def submissions(self) -> list[dict[str, Any]]:
        """Every request of every batch created: batch id, custom id, request."""
        with self._lock:
            return [dict(s) for s in self._submitted]

    def log_submission(self, batch_id: str, custom_id: str, **request: Any) -> None:
        """Record one request of a batch just created."""
        self._submitted.append({"batch_id": batch_id, "custom_id": custom_id, **request})

    def next_seq(self) -> int:
        """A fresh number, for ids."""
        self._seq += 1
        return self._seq

    def fails_now(self, custom_id: str) -> bool:
        """Whether this submission of ``custom_id`` fails: its first one only, when it is
        in ``fail_ids`` or drawn by ``fail_rate``."""
        cfg = self.config
        fails = custom_id in cfg.fail_ids or self._rng.random() < cfg.fail_rate
        if fails and custom_id not in self._failed_once:
            self._failed_once.add(custom_id)
            return True
        return False

    def shuffled(self, rows: list[Any]) -> list[Any]:
        """``rows`` in a random order: a provider's results never follow the input."""
        self._rng.shuffle(rows)
        return rows


def rfc3339(when: float) -> str:
    """A Unix time as the RFC 3339 text Anthropic's and Google's APIs give times in."""
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
