"""docs/benchmarks.md and the completions-over-time plot, from the measured records."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .overhead import Scale, Throughput
from .targets import shortfalls, targets
from .workloads import RunRecord, Workload

PACKAGES = ("throttlepool", "openai", "httpx", "pyrate-limiter", "aiometer", "langchain-core",
            "tqdm", "matplotlib", "psutil")


def machine() -> dict[str, Any]:
    """Cores, CPU, Python, OS and the versions of every package involved."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}", "versions": versions}


@dataclass
class Report:
    command: str
    quick: bool
    machine: dict[str, Any]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    workloads: list[Workload] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)
    overhead: list[Throughput] = field(default_factory=list)
    overhead_repeats: int = 0
    overhead_processes: int = 1
    one_cpu: list[Throughput] = field(default_factory=list)  # the cause check at batch_size 8
    scale: Scale | None = None
    extra: dict[str, str] = field(default_factory=dict)  # section title -> preformatted text
    total_seconds: float = 0.0


def _fmt_eff(rec: RunRecord) -> str:
    """Efficiency; marked when items failed (a run that drops items is not comparable)."""
    if rec.status != "ok":
        return "-"
    return f"{rec.efficiency:.3f}" + (" †" if rec.failed else "")


def _worst(wl: Workload, r: RunRecord) -> str:
    """The server's worst window against the limit, e.g. ``12 / 12`` (tokens too if bound)."""
    limit = wl.per_window()
    text = f"{r.max_in_window} / {limit}" if r.limit_per_window is not None else \
        f"{r.max_in_window} / none"
    if wl.tpm:
        text += f" req, {r.max_tokens_in_window} / {wl.tpm} tok"
    over = r.limit_per_window is not None and r.max_in_window > r.limit_per_window
    return f"**{text}**" if over else text


def workload_table(wl: Workload, recs: Sequence[RunRecord]) -> list[str]:
    limit = wl.per_window()
    shown_limit = "none" if wl.rpm is not None and limit and limit >= 10**6 else str(limit)
    procs = (f"{wl.processes} processes x concurrency {wl.concurrency} (one budget)"
             if wl.processes > 1 else f"batch_size / concurrency {wl.concurrency}")
    lines = [
        f"### {wl.title} (`{wl.name}`)",
        "",
        f"{wl.n} items, {procs}, latency {wl.latency:g} s, "
        f"window {wl.window:g} s, binding limit per window: {shown_limit}"
        + (f" (tpm {wl.tpm} per window)" if wl.tpm else "")
        + ("; **the client is not told the limit**" if not wl.client_knows else "")
        + (f"; client timeout {wl.timeout:g} s, faults {wl.fail_rate}" if wl.fail_rate else "")
        + ".",
        "",
        f"Ideal: {wl.ideal_note}.",
        "",
        "| contender | wall s | ideal s | efficiency | requests | 429s | items failed "
        "| worst window / limit | server peak concurrency | load 1m |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in recs:
        if r.status != "ok":
            lines.append(f"| {r.contender} | {r.status} | | | | | | | | |")
            continue
        lines.append(
            f"| {r.contender} | {r.wall:.2f} | {r.ideal:.2f} | {_fmt_eff(r)} | {r.requests} "
            f"| {r.rate_limited} | {r.failed} | {_worst(wl, r)} | {r.peak_concurrency} "
            f"| {r.load:.2f} |")
    return [*lines, ""]


PLOTTED = ("rate-1s", "rate-6s", "rate-60s", "rate-unknown-6s", "rate-unknown-60s",
           "token-knife")


def plot(report: Report, path: Path) -> bool:
    """Completions over time on the rate-bound workloads, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in PLOTTED if any(
        r.workload == n and r.status == "ok" for r in report.records)]
    if not names:
        return False
    cols = min(2, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 5 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        wl = next(w for w in report.workloads if w.name == name)
        from .workloads import ideal_schedule

        ideal = ideal_schedule(wl)
        ax.step(ideal, range(1, len(ideal) + 1), where="post", color="black",
                linestyle="--", label="ideal")
        for r in report.records:
            if r.workload == name and r.status == "ok":
                ax.step(r.stamps, range(1, len(r.stamps) + 1), where="post",
                        label=f"{r.contender} ({r.efficiency:.2f})")
        ax.set_title(f"{wl.title}: {wl.per_window()} per {wl.window:g} s, {wl.n} items")
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("items completed")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(report: Report, plot_name: str | None) -> str:
    m = report.machine
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/` from one real run; every figure below was measured in that run.",
        "",
        "Command:",
        "",
        "```",
        report.command,
        "```",
        "",
        f"Mode: {'quick' if report.quick else 'full'}; total {report.total_seconds:.0f} s.",
        "",
        "## Machine",
        "",
        f"- {m['cores']} cores, {m['cpu']}, {m['os']}, Python {m['python']}",
        "- load average (1/5/15 min) before: "
        + "/".join(f"{x:.2f}" for x in report.load_before)
        + ", after: " + "/".join(f"{x:.2f}" for x in report.load_after)
        + " (the machine is shared with other work; a load above the core count inflates "
        "wall times and lowers every efficiency)",
        "- " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        "",
        "## Targets (issue 16, PRODUCT.md)",
        "",
        *(["**Quick run**: smaller sizes, fewer contenders and no 60 s windows; the verdicts "
           "below are indicative only. The targets are judged on the full run.", ""]
          if report.quick else []),
        *targets(report),
        *shortfalls(report),
        "## How it is measured",
        "",
        "- The server is `throttlepool.sim` (exact sliding windows, OpenAI headers and 429s) "
        "in its own process on 127.0.0.1, so it does not share the client's GIL. It is "
        "reset (`/__reset`: windows, stats, fault generator reseeded) before each contender; "
        "latency has no jitter so the ideal is exact.",
        "- Every contender wraps the same call, "
        "`client.chat.completions.create(model=..., messages=[...], max_tokens=...)`, on a "
        "fresh `openai.OpenAI` client with the SDK's defaults (2 retries honouring "
        "`retry-after`) and the workload's timeout; throttlepool gets the same client through "
        "`OpenAIAdapter`, which turns the SDK's retries off and retries itself (`retries=5`).",
        "- Same items, same concurrency (`max_workers` / `max_at_once` / `max_concurrency` / "
        "`batch_size`) for all. Before the first timed run every contender makes two "
        "untimed calls (imports, SDK lazy models), so none pays a cold start alone.",
        "- Limits are configured as each peer documents: pyrate-limiter "
        "`Limiter(Rate(L, Duration.SECOND * W))` and blocking `try_acquire` (token limits "
        "with `weight=` the reservation); aiometer `max_per_second=L/W`; langchain-core "
        "`InMemoryRateLimiter(requests_per_second=L/W, check_every_n_seconds=0.1)` with its "
        "default `max_bucket_size=1`; a token limit becomes requests per second for the "
        "last two (they only count requests). ThreadPoolExecutor, `thread_map` and the "
        "sequential loop have no limiter: they rely on the SDK's retries. With the limit "
        "unknown, the peers that need a rate cannot be configured and are shown as such.",
        "- `asyncio.to_thread` uses the loop's default executor, capped at "
        "`min(32, cores + 4)` threads (6 here); the aiometer contender installs a default "
        "executor of `batch_size` threads so it gets the same concurrency as the others.",
        "- Token limits: each request's weight (pyrate-limiter) or reservation is the "
        "documented estimate ceil(prompt chars / 4) + max_tokens, the same as throttlepool's "
        "OpenAIAdapter without tiktoken. `token` has it equal to the server's charge; "
        "`token-knife` one token above it.",
        "- Shared budget (`shared-*`): four client processes started before the clock, warmed "
        "up with two calls while the server has no limit, then released together; each takes "
        "every fourth item. They share the limit through one redis-server on 127.0.0.1 "
        "started by the bench (stopped by PID) or one SQLite file: throttlepool with "
        "`limiter_url=`, pyrate-limiter with its `RedisBucket` or `SQLiteBucket` "
        "(`use_file_lock=True`). Wall time runs from the release to the last item.",
        "- Items failed = items whose final result is not exactly `echo: <prompt>`. "
        "Worst window = the simulator's exact maximum admitted over every window of its "
        "admission log, against the limit (bold when over it). Efficiency = ideal / wall; "
        "† marks a run that lost items, whose wall time is therefore not comparable. "
        "Load 1m = the 1-minute load average right after the run (the box is shared: above "
        "the core count every wall time is inflated).",
        "",
        "## Server workloads",
        "",
    ]
    for wl in report.workloads:
        recs = [r for r in report.records if r.workload == wl.name]
        if recs:
            lines += workload_table(wl, recs)
    if plot_name:
        lines += [f"![completions over time, rate-bound]({plot_name})", "",
                  "Completions over time on the rate-bound workloads; dashed: the ideal "
                  "schedule.", ""]
    lines += ["## Overhead (in memory, no server)", ""]
    if report.overhead:
        n = report.overhead[0].n
        lines += [
            f"No-op calls (`lambda x: x`), {n:,} items per run, median of "
            f"{report.overhead_repeats} runs, interleaved, in {report.overhead_processes} "
            "fresh processes one after another (all runs listed, process by process).",
            "",
            "| way | batch_size | median items/s | voluntary context switches per item | runs |",
            "|---|---:|---:|---:|---|",
        ]
        lines += _throughput_rows(report.overhead)
        lines.append("")
        lines += _one_cpu_lines(report)
    else:
        lines += ["Not run.", ""]
    lines += ["## Scale (lazily produced no-op items)", ""]
    s = report.scale
    if s is not None:
        lines += [
            f"A fresh interpreter streams a generator of {s.n:,} no-op items through "
            f"`ThreadedBatchRunner(noop, batch_size={s.batch_size}).imap(...)`; peak RSS is "
            "`VmHWM` from `/proc/self/status` of that process (interpreter and imports "
            "included; not `ru_maxrss`, which Linux keeps across execve from the parent).",
            "",
            "| items | in order | seconds | items/s | RSS after imports MB | peak RSS MB |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {s.count:,} | {s.in_order:,} | {s.seconds:.1f} | {s.rate:,.0f} | "
            f"{s.rss_before_mb:.1f} | {s.peak_rss_mb:.1f} |",
            "",
        ]
    else:
        lines += ["Not run.", ""]
    for title, text in report.extra.items():
        lines += [f"## {title}", "", text.rstrip(), ""]
    return "\n".join(lines)


def _throughput_rows(rows: list[Throughput]) -> list[str]:
    return [f"| {t.name} | {t.batch_size} | {t.median:,.0f} | {t.median_switches:.2f} | "
            + ", ".join(f"{r:,.0f}" for r in t.rates) + " |" for t in rows]


def _one_cpu_lines(report: Report) -> list[str]:
    if not report.one_cpu:
        return []
    return [
        "The same no-op runs at batch_size 8, each process held to one CPU "
        "(`os.sched_setaffinity`): what the cross-CPU wake-ups cost. Each hand-off between "
        "run()'s event loop thread and a worker thread may wake a CPU that went idle (costly "
        "on a virtual machine); ThreadPoolExecutor.map queues every item at once and its "
        "threads rarely block. run() once made one such round trip per batch_size calls "
        "(0.6 switches per item); with lookahead, calls wait in the pool's queue and a "
        "thread goes from one to the next (docs/architecture.md). On one CPU a woken thread "
        "runs on a CPU that is already awake.",
        "",
        "| way, one CPU | batch_size | median items/s | voluntary context switches per item "
        "| runs |",
        "|---|---:|---:|---:|---|",
        *_throughput_rows(report.one_cpu),
        "",
    ]


def write(report: Report, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.parent / "benchmarks-rate-bound.png"
    has_plot = plot(report, png)
    out.write_text(render(report, png.name if has_plot else None))
