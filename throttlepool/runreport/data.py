"""What a run report shows, read from a checkpoint: the run, its items, its samples."""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..batchapi.journal import DONE, Chunk, read_chunks
from ..errors import ConfigError
from ..limiter.limits import Limit
from ..store.report import run_status
from ..store.samples import CUMULATIVE, SAMPLE_FIELDS, SELECT_SAMPLES
from ..store.schema import errors_named, open_connection, parse_spec

Points = list[tuple[float, float]]

NO_SAMPLES = (
    "This run has no samples (it was checkpointed by a throttlepool older than schema 3, or "
    "without a SQLite checkpoint): calls, 429s, retries and calls in flight over time were "
    "not recorded. Completions, latency and tokens below come from the items' own times; "
    "the requests-per-window chart counts each item's first attempt only.")


@dataclass(slots=True)
class Item:
    """The times and costs of one recorded item, as the report needs them."""

    started: float
    finished: float
    ok: bool
    latency: float
    attempts: int
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None = None  # USD; None when unknown or not priced


@dataclass
class RunData:
    """Everything one report draws; times are seconds since ``t0`` (a Unix time)."""

    info: dict[str, Any]
    items: list[Item]
    samples: list[dict[str, float]]
    sessions: list[float]
    limits: list[Limit]
    t0: float
    duration: float
    notes: list[str] = field(default_factory=list)


def _limits(settings: dict[str, Any]) -> list[Limit]:
    out = []
    for text in settings.get("limits") or ():
        try:
            out.append(Limit.parse(str(text)))
        except ConfigError:
            continue  # a report still draws the rest
    return out


def _monotone(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Cumulative counters restart at 0 in each session (a resume): carry them on."""
    base = dict.fromkeys(CUMULATIVE, 0.0)
    last = dict.fromkeys(CUMULATIVE, 0.0)
    session = None
    for row in rows:
        if row["session"] != session:
            if session is not None:
                base = {k: base[k] + last[k] for k in CUMULATIVE}
            session = row["session"]
        last = {k: float(row[k] or 0) for k in CUMULATIVE}
        for k in CUMULATIVE:
            row[k] = base[k] + last[k]
    return rows


def load(db: str | os.PathLike[str], run: str) -> RunData:
    """Read run ``run`` (name or id) of the checkpoint ``db``; raises StoreError if absent."""
    info = run_status(os.fspath(db), run)
    path = parse_spec(db)
    conn = open_connection(path)
    try:
        with errors_named(path):
            items = [Item(float(r[0] or r[1]), float(r[1]), r[2] == "ok", float(r[3] or 0),
                          int(r[4] or 0), r[5], r[6], r[7]) for r in conn.execute(
                "SELECT started, finished, status, latency, attempts, input_tokens, "
                "output_tokens, cost FROM items WHERE run_id = ? AND finished IS NOT NULL "
                "ORDER BY finished", (info["id"],))]
            has_samples = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'samples'").fetchone() is not None
            samples = []
            if has_samples:
                cur = conn.execute(SELECT_SAMPLES, (info["id"],))
                names = ("session", "t", *SAMPLE_FIELDS)
                samples = [dict(zip(names, r, strict=True)) for r in cur]
    finally:
        conn.close()
    samples = _monotone(samples)
    sessions = sorted({s["session"] for s in samples})
    starts = [i.started for i in items] + [s["t"] for s in samples]
    ends = [i.finished for i in items] + [s["t"] for s in samples]
    t0 = min(starts) if starts else 0.0
    duration = max(max(ends) - t0, 1.0) if ends else 1.0
    for s in samples:
        s["t"] -= t0
    sessions = [s - t0 for s in sessions]
    for i in items:
        i.started -= t0
        i.finished -= t0
    settings = info.get("settings") if isinstance(info.get("settings"), dict) else {}
    data = RunData(info, items, samples, sessions, _limits(settings or {}), t0, duration)
    if (settings or {}).get("mode") == "batch":
        data.notes.extend(batch_notes(read_chunks(path, str(info["id"]))))
    elif not samples:
        data.notes.append(NO_SAMPLES)
    if not items:
        data.notes.append("No item outcome is recorded for this run yet.")
    elif all(i.input_tokens is None and i.output_tokens is None for i in items):
        data.notes.append("No token usage was reported for this run's items.")
    return data


BATCH_RUN = (
    "A --mode batch run: its requests went through the provider's Batch API, so there are "
    "no per-call samples (calls, 429s and calls in flight over time); the charts below come "
    "from the items' own times, which are the times their batches were created and answered.")


def batch_notes(chunks: Sequence[Chunk]) -> list[str]:
    """What a batch run's report says about its provider batches: their ids, what each
    held, and how long each waited for the provider (created to answered)."""
    notes = [BATCH_RUN]
    for c in chunks[:20]:
        waited = f", waited {c.updated - c.created:.1f}s" if c.state == DONE else ""
        n = len(c.indices)
        notes.append(f"batch {c.batch_id or '(not created)'}: {n} request{'s' if n != 1 else ''},"
                     f" {c.status or c.state}{waited}")
    if len(chunks) > 20:
        notes.append(f"... and {len(chunks) - 20} more batches")
    return notes


# ---- derived series ---------------------------------------------------------------------


def value_at(ts: Sequence[float], ys: Sequence[float], t: float) -> float:
    """``ys`` at ``t``: the last sample at or before it (counters are sampled after they
    change, so a straight line between two samples would invent calls in a quiet gap)."""
    i = bisect.bisect_right(ts, t)
    return float(ys[i - 1]) if i else 0.0


def window_counts(ts: Sequence[float], cum: Sequence[float], window: float,
                  at: Sequence[float]) -> Points:
    """How much of a cumulative quantity fell in the trailing ``window`` at each of ``at``."""
    return [(t, max(0.0, value_at(ts, cum, t) - value_at(ts, cum, t - window)))
            for t in at]


def event_window_counts(events: Sequence[float], window: float, at: Sequence[float]) -> Points:
    """Events (sorted times) in the trailing ``window`` at each of ``at``."""
    return [(t, float(bisect.bisect_right(events, t) - bisect.bisect_right(events, t - window)))
            for t in at]


def per_bin(ts: Sequence[float], cum: Sequence[float], edges: Sequence[float]) -> Points:
    """``(bin start, increase of cum over the bin)`` for consecutive ``edges``."""
    vals = [value_at(ts, cum, e) for e in edges]
    return [(edges[i], max(0.0, vals[i + 1] - vals[i])) for i in range(len(edges) - 1)]


def steps(times: Sequence[float], weights: Sequence[float] | None = None) -> Points:
    """A cumulative step curve over sorted event ``times`` (each adds its weight or 1)."""
    out: Points = [(0.0, 0.0)]
    total = 0.0
    for n, t in enumerate(times):
        total += 1.0 if weights is None else weights[n]
        out.append((t, total))
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, nearest rank."""
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def histogram(sorted_values: Sequence[float], bins: int = 40) -> tuple[Points, float]:
    """``([(bin start, count)], bin width)``; the range stops near the 99.5th percentile so
    one straggler does not flatten the rest (the last bin counts everything beyond)."""
    if not sorted_values:
        return [], 1.0
    top = percentile(sorted_values, 0.995)
    if sorted_values[-1] <= top * 1.5:
        top = sorted_values[-1]
    width = nice_step(top / bins) if top > 0 else 1.0
    n = max(1, min(bins, math.ceil(top / width) + 1))
    counts = [0] * n
    for v in sorted_values:
        counts[min(n - 1, int(v / width))] += 1
    return [(k * width, float(c)) for k, c in enumerate(counts)], width


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``raw``."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * mag >= raw * 0.999999:
            return m * mag
    return 10 * mag


def thin(points: Points, limit: int = 1500) -> Points:
    """At most about ``limit`` points, keeping each bucket's highest (peaks stay visible)."""
    if len(points) <= limit:
        return points
    size = math.ceil(len(points) / limit)
    return [max(points[i:i + size], key=lambda p: p[1]) for i in range(0, len(points), size)]
