"""The server-backed workloads, their ideal times, and one measured run of one contender."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from throttlepool.sim import SimConfig
from throttlepool.sim import SimulatorProcess as RemoteSim

from .peers import CONTENDERS, Ctx, Known, NotConfigurable

REPLY_PREFIX = "echo: "
NO_LIMIT_RPM = 1_000_000  # a limit that exists (and is configured) but never binds


@dataclass(frozen=True)
class Workload:
    """One server setting, item set and client knowledge; run by every contender."""

    name: str
    title: str
    n: int
    concurrency: int
    latency: float
    window: float
    rpm: int | None = None  # server's request limit per window
    tpm: int | None = None  # server's token limit per window
    client_knows: bool = True
    prompt_chars: int = 40
    max_tokens: int = 64
    timeout: float = 10.0
    fail_rate: dict[str, float] = field(default_factory=dict)
    hang_seconds: float = 30.0
    ideal_note: str = ""
    processes: int = 1  # client processes sharing one budget (concurrency is per process)
    contenders: tuple[str, ...] = ()  # the contenders that run it; () for every one

    def items(self) -> list[str]:
        """Distinct prompts of exactly ``prompt_chars`` characters."""
        out = []
        for i in range(self.n):
            head = f"item {i:06d} "
            out.append((head + "lorem ipsum " * 20)[: self.prompt_chars])
        return out

    def charge(self) -> int:
        """Tokens the simulator charges one request at admission: prompt // 4 + max_tokens."""
        return self.prompt_chars // 4 + self.max_tokens

    def usage(self) -> int:
        """Tokens one request actually uses (the simulator's usage.total_tokens)."""
        completion = min(self.max_tokens, max(1, (len(REPLY_PREFIX) + self.prompt_chars) // 4))
        return max(1, self.prompt_chars // 4) + completion

    def estimate(self) -> int:
        """Tokens a client reserves per request by the documented rule (PROVIDERS.md §2.5):
        ceil(prompt chars / 4) + max_tokens. One above :meth:`charge` when the prompt's length
        is not a multiple of 4 (the knife-edge); throttlepool's OpenAIAdapter computes the same
        when tiktoken is not installed."""
        return math.ceil(self.prompt_chars / 4) + self.max_tokens

    def total_concurrency(self) -> int:
        """Calls in flight at once over every client process."""
        return self.concurrency * self.processes

    def per_window(self) -> int | None:
        """Requests the server admits per window (the binding one of rpm and tpm)."""
        caps = []
        if self.rpm is not None:
            caps.append(self.rpm)
        if self.tpm is not None:
            caps.append(self.tpm // self.charge())
        return min(caps) if caps else None

    def known(self) -> Known | None:
        if not self.client_knows:
            return None
        return Known(self.window, self.rpm, self.tpm, self.estimate())

    def sim_config(self, seed: int = 0) -> SimConfig:
        return SimConfig(rpm=self.rpm, tpm=self.tpm, window=self.window, latency=self.latency,
                         jitter=0.0, fail_rate=dict(self.fail_rate),
                         hang_seconds=self.hang_seconds, seed=seed)

    def ideal(self) -> float:
        """The fastest the server allows: see :func:`ideal_time`."""
        return ideal_time(self.n, self.total_concurrency(), self.latency, self.per_window(),
                          self.window)


def admission_times(n: int, concurrency: int, latency: float, per_window: int | None,
                    window: float) -> list[float]:
    """Earliest admission times of ``n`` calls of fixed ``latency``, ``concurrency`` in flight
    at once, at most ``per_window`` admissions in any half-open window of ``window`` seconds.

    ``t_i = max(t_{i-1}, t_{i-C} + latency, t_{i-L} + window)`` with ``t_0 = 0``: the first
    window admits ``L`` at once (``C`` at a time), then ``L`` more each time the window slides
    past earlier admissions.
    """
    t: list[float] = []
    for i in range(n):
        a = t[-1] if t else 0.0
        if i >= concurrency:
            a = max(a, t[i - concurrency] + latency)
        if per_window is not None and i >= per_window:
            a = max(a, t[i - per_window] + window)
        t.append(a)
    return t


def ideal_time(n: int, concurrency: int, latency: float, per_window: int | None,
               window: float) -> float:
    """The last ideal admission plus the latency; ``ceil(n / C) * latency`` when no limit
    binds.

    With ``n = q * L + r`` items (``0 <= r < L``) and the limit binding, the last admission
    comes ``q - 1`` windows after the start when ``r == 0`` and ``q`` windows after it when
    ``r > 0``: a partial last window costs a whole window's wait (the server admits nothing
    earlier), plus the time its ``r`` items need at ``C`` in flight. So the ideal is about
    ``(ceil(n / L) - 1) * W + ceil(r' / C) * d`` with ``r'`` the items of the last window,
    and a contender's lateness at each of the ``ceil(n / L) - 1`` window boundaries is what
    efficiency measures; sizes are whole multiples of ``L`` so that no single boundary
    weighs more than the others.
    """
    t = admission_times(n, concurrency, latency, per_window, window)
    return (t[-1] if t else 0.0) + latency


def ideal_schedule(wl: Workload) -> list[float]:
    """Ideal completion times of the workload's items (for the plot)."""
    t = admission_times(wl.n, wl.total_concurrency(), wl.latency, wl.per_window(), wl.window)
    return [x + wl.latency for x in t]


@dataclass
class RunRecord:
    """Figures of one contender on one workload."""

    workload: str
    contender: str
    status: str = "ok"  # "ok", "n/a: <reason>" or "error: <reason>"
    wall: float = 0.0
    ideal: float = 0.0
    items: int = 0
    correct: int = 0
    failed: int = 0
    requests: int = 0
    rate_limited: int = 0
    max_in_window: int = 0
    max_tokens_in_window: int = 0
    limit_per_window: int | None = None
    peak_concurrency: int = 0
    stamps: list[float] = field(default_factory=list)  # completion times since start
    extra: dict[str, Any] = field(default_factory=dict)  # the contender's own counters
    load: float = 0.0  # 1-minute load average right after the run
    cpu: float = 0.0  # CPU seconds of the client process (every thread) during the run
    server_cpu: float = 0.0  # CPU seconds of the simulator's process during the run

    @property
    def efficiency(self) -> float:
        return self.ideal / self.wall if self.wall > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["efficiency"] = self.efficiency
        return d


def new_record(wl: Workload, name: str) -> RunRecord:
    """An empty record of ``name`` on ``wl``, with the ideal and the limit filled in."""
    return RunRecord(wl.name, name, ideal=wl.ideal(), items=wl.n,
                     limit_per_window=wl.per_window() if wl.rpm != NO_LIMIT_RPM else None)


def server_figures(rec: RunRecord, sim: RemoteSim, results: list[Any], items: list[str]) -> None:
    """Correct items from ``results``; requests, 429s and window maxima from the server's log;
    the 1-minute load average now."""
    stats = sim.stats()
    expected = [REPLY_PREFIX + x for x in items]
    rec.correct = sum(1 for r, e in zip(results, expected, strict=True) if r == e)
    rec.failed = len(items) - rec.correct
    rec.requests = int(stats["requests"])
    rec.rate_limited = int(stats["rate_limited"])
    rec.max_in_window = int(stats["max_requests_in_window"])
    rec.max_tokens_in_window = int(stats["max_tokens_in_window"])
    rec.peak_concurrency = int(stats["peak_concurrency"])
    rec.load = os.getloadavg()[0]


def _server_cpu(sim: RemoteSim) -> float:
    """User and system CPU seconds the simulator's process has used so far (0 if unknown)."""
    try:
        import psutil
    except ImportError:
        return 0.0
    if sim.pid is None:
        return 0.0
    times = psutil.Process(sim.pid).cpu_times()
    return float(times.user + times.system)


def run_contender(sim: RemoteSim, wl: Workload, name: str, items: list[str]) -> RunRecord:
    """Reset the simulator, run one contender over the items, read its figures."""
    rec = new_record(wl, name)
    sim.reset()
    ctx = Ctx(sim.openai_base_url, items, wl.concurrency, wl.max_tokens, wl.timeout, wl.known())
    server_cpu0 = _server_cpu(sim)
    cpu0 = time.process_time()
    ctx.t0 = time.perf_counter()
    try:
        results = CONTENDERS[name](ctx)
    except NotConfigurable as exc:
        rec.status = f"n/a: {exc}"
        return rec
    rec.wall = time.perf_counter() - ctx.t0
    rec.cpu = time.process_time() - cpu0
    rec.server_cpu = _server_cpu(sim) - server_cpu0
    server_figures(rec, sim, results, items)
    rec.stamps = sorted(s - ctx.t0 for s in ctx.stamps)
    rec.extra = dict(ctx.extra)
    return rec


def warm_up(sim: RemoteSim, wl: Workload, contenders: list[str]) -> None:
    """Two calls through every contender first: imports, SDK lazy models and pydantic
    validators are built before anything is timed, so no contender pays them alone."""
    sim.configure(rpm=None, tpm=None, fail_rate={})
    try:
        for name in contenders:
            ctx = Ctx(sim.openai_base_url, ["warm up a", "warm up b"], 2, 16, 10.0,
                      Known(1.0, requests=1000))
            CONTENDERS[name](ctx)
    finally:  # the workload's own limits and faults again
        sim.configure(rpm=wl.rpm, tpm=wl.tpm, fail_rate=dict(wl.fail_rate))


def log_record(rec: RunRecord, log: Any) -> None:
    """One line per run on the console, as the report's table row."""
    if rec.status != "ok":
        log(f"  {rec.workload:<16} {rec.contender:<32} {rec.status}")
        return
    limit = "-" if rec.limit_per_window is None else str(rec.limit_per_window)
    log(f"  {rec.workload:<16} {rec.contender:<32} wall {rec.wall:7.2f}s  ideal "
        f"{rec.ideal:6.2f}s  eff {rec.efficiency:5.3f}  req {rec.requests:4d}  429 "
        f"{rec.rate_limited:3d}  failed {rec.failed:3d}  worst window {rec.max_in_window}/{limit}"
        f"  load {rec.load:.2f}")


def run_workload(wl: Workload, contenders: list[str], log: Any = print) -> list[RunRecord]:
    """Start a simulator for the workload and run every contender that applies in turn."""
    chosen = [c for c in contenders if not wl.contenders or c in wl.contenders]
    if wl.processes > 1:
        from .bench_scaleout import run_shared_workload

        return run_shared_workload(wl, chosen, log)
    records = []
    items = wl.items()
    with RemoteSim(wl.sim_config()) as sim:
        warm_up(sim, wl, chosen)
        for name in chosen:
            rec = run_contender(sim, wl, name, items)
            records.append(rec)
            log_record(rec, log)
    return records
