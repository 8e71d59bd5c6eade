"""Issue 16's targets (and PRODUCT.md's), checked against one run's records."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Report
    from .workloads import RunRecord


def _rec(report: Report, workload: str, contender: str = "throttlepool") -> RunRecord | None:
    for r in report.records:
        if r.workload == workload and r.contender == contender and r.status == "ok":
            return r
    return None


PEER = "pyrate-limiter + threads"

# (workload, contender, minimum efficiency, most 429s as a fraction of items, must match
# pyrate-limiter's efficiency in the same run, the server's worst window must hold)
GOALS: tuple[tuple[str, str, float | None, float | None, bool, bool], ...] = (
    ("latency", "throttlepool", 0.97, None, False, False),
    ("rate-1s", "throttlepool", 0.97, 0.0, True, True),
    # Issue 16 and PRODUCT.md set no absolute efficiency for 6 s windows (0.99 on 60 s, 0.97
    # on 1 s); what they ask of it is pyrate-limiter's efficiency or better, with no 429.
    ("rate-6s", "throttlepool", None, 0.0, True, True),
    ("rate-60s", "throttlepool", 0.99, 0.0, True, True),
    ("rate-unknown-6s", "throttlepool", 0.95, 0.01, False, False),
    ("rate-unknown-60s", "throttlepool", 0.95, 0.01, False, False),
    ("token", "throttlepool", 0.95, None, True, False),
    ("token-knife", "throttlepool", 0.95, None, True, False),
    ("faulty", "throttlepool", None, None, False, False),
    ("shared-1s", "throttlepool, redis", 0.9, 0.0, False, True),
    ("shared-1s", "throttlepool, sqlite", 0.9, 0.0, False, True),
    ("shared-60s", "throttlepool, redis", 0.97, 0.0, False, True),
    ("shared-60s", "throttlepool, sqlite", 0.97, 0.0, False, True),
)


def _goal_text(goal: tuple[str, str, float | None, float | None, bool, bool]) -> str:
    workload, contender, eff, max429, beat, window = goal
    parts = []
    if eff is not None:
        parts.append(f"efficiency >= {eff}")
    if beat:
        parts.append("at least pyrate-limiter's")
    if max429 == 0:
        parts.append("zero 429s")
    elif max429 is not None:
        parts.append(f"429s < {max429:.0%} of items")
    if window:
        parts.append("no window over the limit")
    if not parts:
        parts.append("every item correct")
    return f"`{workload}` ({contender}): " + ", ".join(parts)


def _goal_check(report: Report, goal: tuple[str, str, float | None, float | None, bool, bool]
                ) -> tuple[str, bool | None]:
    workload, contender, eff, max429, beat, window = goal
    r = _rec(report, workload, contender)
    if r is None:
        return "not run", None
    ok = r.failed == 0
    if eff is not None:
        ok = ok and r.efficiency >= eff
    if max429 is not None:
        ok = ok and (r.rate_limited == 0 if max429 == 0 else r.rate_limited < max429 * r.items)
    if window and r.limit_per_window is not None:
        ok = ok and r.max_in_window <= r.limit_per_window
    limit = "none" if r.limit_per_window is None else r.limit_per_window
    measured = (f"{r.efficiency:.3f}, {r.rate_limited} 429s, worst window "
                f"{r.max_in_window}/{limit}, load {r.load:.2f}")
    if r.failed:
        measured += f", {r.failed} items failed"
    if beat:
        peer = _rec(report, workload, PEER)
        if peer is not None:
            ok = ok and r.efficiency >= peer.efficiency
            measured += f" (pyrate-limiter {peer.efficiency:.3f})"
    return measured, ok


def _overhead_rows(report: Report) -> list[tuple[str, str, bool | None]]:
    rows: list[tuple[str, str, bool | None]] = []
    by = {(t.name, t.batch_size): t.median for t in report.overhead}
    for bs in sorted({t.batch_size for t in report.overhead}):
        run, pool = by.get(("throttlepool run()", bs)), by.get(("ThreadPoolExecutor.map", bs))
        if run is not None and pool is not None:
            rows.append((f"no-op run() >= ThreadPoolExecutor.map, batch_size {bs}",
                         f"{run:,.0f} vs {pool:,.0f} items/s", run >= pool))
        limited = by.get(("throttlepool run(), limit set", bs))
        if run is not None and limited is not None and bs == 8:
            rows.append(("a configured limit costs <= 30% (batch_size 8)",
                         f"{limited:,.0f} vs {run:,.0f} items/s "
                         f"({1 - limited / run:.0%} cost)", limited >= 0.7 * run))
    if not rows:
        rows.append(("no-op overhead against ThreadPoolExecutor.map", "not run", None))
    return rows


def targets(report: Report) -> list[str]:
    """Each target of issue 16 / PRODUCT.md, the figure measured for it, met or missed."""
    rows: list[tuple[str, str, bool | None]] = []
    for goal in GOALS:
        measured, ok = _goal_check(report, goal)
        rows.append((_goal_text(goal), measured, ok))
    rows += _overhead_rows(report)
    s = report.scale
    rows.append(("1,000,000 items via imap under 150 MB peak RSS",
                 f"{s.peak_rss_mb:.1f} MB for {s.count:,} items" if s else "not run",
                 None if s is None or s.n != 1_000_000 else
                 (s.peak_rss_mb < 150 and s.count == 1_000_000)))
    lines = ["| target | measured | met? |", "|---|---|---|"]
    for target, measured, ok in rows:
        verdict = "n/a" if ok is None or measured == "not run" else ("yes" if ok else "**no**")
        lines.append(f"| {target} | {measured} | {verdict} |")
    return [*lines, ""]


def shortfalls(report: Report) -> list[str]:
    """For each server workload where throttlepool misses its target: the figures that
    show where the time went (attempts beyond one per item, 429s, pauses, machine load)."""
    lines = []
    for goal in GOALS:
        _, ok = _goal_check(report, goal)
        r = _rec(report, goal[0], goal[1])
        if ok is not False or r is None:
            continue
        x = r.extra
        lines.append(
            f"- `{r.workload}` ({r.contender}): wall {r.wall:.2f} s against an ideal of "
            f"{r.ideal:.2f} s (efficiency {r.efficiency:.3f}); {r.requests} requests reached "
            f"the server for {r.items} items, {r.rate_limited} answered 429, worst window "
            f"{r.max_in_window}/{r.limit_per_window or 'none'}; throttlepool counted "
            f"{x.get('attempts', '?')} attempts, {x.get('retries', '?')} retries, "
            f"{float(x.get('rate_limit_wait', 0.0)):.2f} s of rate-limit pauses; "
            f"1-minute load average after the run {r.load:.2f} on {report.machine['cores']} "
            f"cores{_per_call_work(report, r)}.")
    lines += _overhead_shortfall(report)
    if not lines:
        return []
    return ["Where throttlepool falls short, the measured figures behind it:", "", *lines, ""]


def _per_call_work(report: Report, r: RunRecord) -> str:
    """The work every request costs, which no scheduling removes: CPU per request in the
    client (whose threads share one GIL) and in the server, the sequential contender's time
    per call against the server's latency, and the best other contender in the same run."""
    parts = []
    wl = next((w for w in report.workloads if w.name == r.workload), None)
    if r.cpu > 0 and r.requests:
        per_request = r.cpu / r.requests
        parts.append(f"the client process used {1000 * per_request:.1f} ms of CPU per "
                     f"request and the server {1000 * r.server_cpu / r.requests:.1f} ms")
        if wl is not None and r.limit_per_window is None:  # latency-bound: rounds of calls
            c = wl.total_concurrency()
            rounds = -(-r.items // c)
            parts.append(f"the run took {1000 * (r.wall - r.ideal) / rounds:.0f} ms per round "
                         f"of {c} calls over the ideal, against {c} x "
                         f"{1000 * per_request:.1f} = {1000 * c * per_request:.0f} ms of client "
                         "CPU per round, which the GIL lets only one thread spend at a time")
    seq = _rec(report, r.workload, "sequential")
    if seq is not None and seq.items and wl is not None:
        parts.append(f"sequential took {1000 * seq.wall / seq.items:.1f} ms per call against "
                     f"the server's {1000 * wl.latency:.0f} ms")
    others = [o for o in report.records if o.workload == r.workload and o.status == "ok"
              and o.contender not in (r.contender, "sequential") and not o.failed]
    if others:
        best = max(others, key=lambda o: o.efficiency)
        parts.append(f"the best other contender, {best.contender}, reached {best.efficiency:.3f}")
    return "; " + "; ".join(parts) if parts else ""


def _overhead_shortfall(report: Report) -> list[str]:
    """When no-op run() trails ThreadPoolExecutor.map at batch_size 8: both ways' context
    switches per item, and the same two on one CPU (the cause check)."""
    by = {(t.name, t.batch_size): t for t in report.overhead}
    run, pool = by.get(("throttlepool run()", 8)), by.get(("ThreadPoolExecutor.map", 8))
    if run is None or pool is None or run.median >= pool.median:
        return []
    line = (f"- no-op run() at batch_size 8: {run.median:,.0f} items/s at "
            f"{run.median_switches:.2f} voluntary context switches per item, against "
            f"ThreadPoolExecutor.map's {pool.median:,.0f} at {pool.median_switches:.2f}")
    one = {t.name: t for t in report.one_cpu}
    run1, pool1 = one.get("throttlepool run()"), one.get("ThreadPoolExecutor.map")
    if run1 is not None and pool1 is not None:
        line += (f"; held to one CPU, {run1.median:,.0f} against {pool1.median:,.0f} items/s "
                 "(the switches cost where each wakes an idle CPU: see the overhead section)")
    return [line + "."]
