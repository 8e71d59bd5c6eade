"""The report page: a summary, the charts over time, the latency distribution, the settings."""

from __future__ import annotations

import datetime as _dt
import json
from html import escape
from typing import Any

from .. import __version__
from ..cost.text import cost_text, usd
from ..limiter.limits import TOKENS, Limit
from .data import (
    RunData,
    event_window_counts,
    histogram,
    per_bin,
    percentile,
    steps,
    thin,
    window_counts,
)
from .svg import Marker, Series, chart, empty, fmt_clock, fmt_number, fmt_seconds, ticks

OK, FAILED, CALLS, LIMIT = "#2e7d32", "#c62828", "#1565c0", "#444"
R429, RETRY, TOK_IN, TOK_OUT = "#ef6c00", "#7b1fa2", "#00838f", "#ad1457"
FLIGHT, RESUME = "#455a64", "#9e9e9e"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:980px;
color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:28px 0 8px}
.sub{color:#666;font-size:13px;margin-bottom:16px}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 12px 3px 0;text-align:left;
vertical-align:top}th{color:#555;font-weight:500}
.grid{display:grid;grid-template-columns:repeat(4,1fr);gap:8px;margin:12px 0}
.kpi{background:#f6f7f9;border-radius:6px;padding:8px 10px}.kpi b{display:block;font-size:18px}
.kpi span{color:#666;font-size:12px}.note{background:#fff8e1;border-left:3px solid #f9a825;
padding:8px 12px;font-size:13px;margin:8px 0}svg.chart{display:block;margin:6px 0 14px}
code{font-size:12px;background:#f3f3f3;padding:1px 4px;border-radius:3px}
"""


def _utc(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _x_label(d: RunData) -> str:
    return f"time since {_utc(d.t0)} (m:ss)" if d.items or d.samples else "time"


def _resumes(d: RunData) -> list[Marker]:
    return [Marker("resumed" if n == 1 else "", RESUME, x=s)
            for n, s in enumerate(d.sessions[1:], 1)]


def completions(d: RunData) -> str:
    """Cumulative ok and failed items over time."""
    if not d.items:
        return empty("completions", "Items finished", "no item outcome recorded")
    ok = [i.finished for i in d.items if i.ok]
    bad = [i.finished for i in d.items if not i.ok]
    series = [Series(f"ok ({len(ok)})", thin(steps(ok)), OK, "step")]
    if bad:
        series.append(Series(f"failed ({len(bad)})", thin(steps(bad)), FAILED, "step"))
    return chart("completions", "Items finished over time", series, x_range=(0, d.duration),
                 x_label=_x_label(d), y_label="items", markers=_resumes(d))


def _bin_edges(d: RunData) -> list[float]:
    # Samples come about once a second: a finer bin would show their spacing, not the run.
    width = max(1.0, next(iter(ticks(0, d.duration, 60, True)[1:2]), d.duration / 60))
    n = int(d.duration / width) + 1
    return [k * width for k in range(n + 1)]


def against_limit(d: RunData, limit: Limit | None) -> str:
    """Requests (or tokens) in the trailing window of ``limit``, with the limit drawn."""
    tokens = limit is not None and limit.unit == TOKENS
    window = limit.period if limit is not None else 1.0
    what = "tokens" if tokens else "requests"
    name = f"limit-{limit}" if limit is not None else "calls-per-second"
    title = (f"{what.capitalize()} in any {window:g} s window against the limit {limit}"
             if limit is not None else "Calls per second (no limit configured)")
    if d.samples:
        ts = [s["t"] for s in d.samples]
        cum = [s["input_tokens"] + s["output_tokens"] if tokens else s["calls"]
               for s in d.samples]
        pts = window_counts(ts, cum, window, ts)
        label = "tokens (reported usage)" if tokens else "calls started (with retries)"
    elif d.items:
        if tokens:
            done = [i.finished for i in d.items]
            weights = [float((i.input_tokens or 0) + (i.output_tokens or 0)) for i in d.items]
            at = [d.duration * k / 600 for k in range(601)]
            cum_pts = steps(done, weights)
            pts = window_counts([p[0] for p in cum_pts], [p[1] for p in cum_pts], window, at)
            label = "tokens (by item finish time)"
        else:
            starts = sorted(i.started for i in d.items)
            at = sorted(set(starts) | {d.duration * k / 600 for k in range(601)})
            pts = event_window_counts(starts, window, at)
            label = "items started (first attempts only)"
    else:
        return empty(name, title, "nothing recorded")
    markers = [Marker(f"limit {fmt_number(limit.amount)}", LIMIT, y=limit.amount)] if limit else []
    return chart(name, title, [Series(label, thin(pts), TOK_IN if tokens else CALLS)],
                 x_range=(0, d.duration), x_label=_x_label(d),
                 y_label=f"{what} per {window:g} s", markers=markers + _resumes(d))


def _per(width: float) -> str:
    return f"per {width:g} s" if width < 60 else f"per {width / 60:g} min"


def rate_limited(d: RunData) -> str:
    """429s and retries per time bin."""
    title = "429s and retries"
    edges = _bin_edges(d)
    width = edges[1] - edges[0]
    if not d.samples:
        retried = [i.finished for i in d.items if i.attempts > 1]
        if not retried:
            return empty("retries", title, "not recorded for this run (no samples), and no "
                         "recorded item needed more than one attempt")
        counts = [(e, float(sum(1 for t in retried if e <= t < e + width))) for e in edges[:-1]]
        return chart("retries", f"{title}: items that needed retries (no samples: 429s "
                     "not recorded)", [Series("items retried", counts, RETRY, "bars", width)],
                     x_range=(0, d.duration), x_label=_x_label(d),
                     y_label=_per(width))
    ts = [s["t"] for s in d.samples]
    r429 = per_bin(ts, [s["rate_limited"] for s in d.samples], edges)
    retries = per_bin(ts, [s["retries"] for s in d.samples], edges)
    total429 = int(d.samples[-1]["rate_limited"])
    total_retries = int(d.samples[-1]["retries"])
    wait = d.samples[-1]["rate_limit_wait"]
    return chart("retries", f"{title} (paused {wait:.1f} s for 429s in all)",
                 [Series(f"429s ({total429})", r429, R429, "bars", width, 0, 0.5),
                  Series(f"retries ({total_retries})", retries, RETRY, "bars", width, 0.5, 0.5)],
                 x_range=(0, d.duration), x_label=_x_label(d),
                 y_label=_per(width), markers=_resumes(d))


def in_flight(d: RunData) -> str:
    """Calls in flight (and items waiting to retry) over time."""
    title = "Calls in flight"
    if not d.samples:
        return empty("in-flight", title, "not recorded for this run (no samples)")
    pts = [(s["t"], s["in_flight"]) for s in d.samples]
    retrying = [(s["t"], s["retrying"]) for s in d.samples]
    series = [Series("in flight", thin(pts), FLIGHT, "step")]
    if any(y for _, y in retrying):
        series.append(Series("waiting to retry", thin(retrying), RETRY, "step"))
    return chart("in-flight", title, series, x_range=(0, d.duration), x_label=_x_label(d),
                 y_label="calls", markers=_resumes(d))


def latency(d: RunData) -> str:
    """The distribution of item latency (first attempt to final answer) with percentiles."""
    title = "Latency per item (first attempt to outcome, retries and waits included)"
    values = sorted(i.latency for i in d.items if i.latency > 0)
    if not values:
        return empty("latency", title, "no latency recorded")
    bins, width = histogram(values)
    marks = [Marker(f"p{int(q * 100)} {fmt_seconds(percentile(values, q))}", c,
                    x=percentile(values, q))
             for q, c in ((0.5, OK), (0.9, R429), (0.99, FAILED))]
    top = bins[-1][0] + width
    return chart("latency", title, [Series(f"items ({len(values)})", bins, CALLS, "bars", width)],
                 x_range=(0, top), x_label="seconds", y_label="items", markers=marks,
                 time_axis=False)


def tokens(d: RunData) -> str:
    """Cumulative input and output tokens over time, by item finish time."""
    title = "Tokens used (cumulative)"
    used = [i for i in d.items if i.input_tokens is not None or i.output_tokens is not None]
    if not used:
        return empty("tokens", title, "no token usage reported")
    times = [i.finished for i in used]
    tin = steps(times, [float(i.input_tokens or 0) for i in used])
    tout = steps(times, [float(i.output_tokens or 0) for i in used])
    return chart("tokens", title, [
        Series(f"input ({fmt_number(tin[-1][1])})", thin(tin), TOK_IN, "step"),
        Series(f"output ({fmt_number(tout[-1][1])})", thin(tout), TOK_OUT, "step")],
        x_range=(0, d.duration), x_label=_x_label(d), y_label="tokens", markers=_resumes(d))


def spend(d: RunData) -> str:
    """Cumulative cost (USD) over time, by item finish time."""
    title = "Cost (USD, cumulative)"
    priced = [i for i in d.items if i.cost is not None]
    if not priced:
        unknown = int((d.info.get("items") or {}).get("cost_unknown") or 0)
        why = (f"cost unknown: {unknown} items have usage but their model has no price"
               if unknown else "no cost recorded (no usage reported, or an older checkpoint)")
        return empty("cost", title, why)
    curve = steps([i.finished for i in priced], [float(i.cost or 0.0) for i in priced])
    return chart("cost", title, [Series(f"spent ({usd(curve[-1][1])})", thin(curve), CALLS,
                                        "step")],
                 x_range=(0, d.duration), x_label=_x_label(d), y_label="USD",
                 markers=_resumes(d))


def _kpis(d: RunData) -> str:
    info = d.info
    counts = info.get("counts") or {}
    totals = info.get("totals") if isinstance(info.get("totals"), dict) else {}
    totals = totals or {}
    lat = sorted(i.latency for i in d.items if i.latency > 0)
    last = d.samples[-1] if d.samples else {}
    calls = last.get("calls", totals.get("calls"))
    cells = [
        ("ok", counts.get("ok", 0)), ("failed", counts.get("failed", 0)),
        ("of total", totals.get("total") if totals.get("total") is not None else "?"),
        ("calls", calls if calls is not None else "?"),
        ("429s", last.get("rate_limited", totals.get("rate_limited", "?"))),
        ("retries", last.get("retries", totals.get("retries", "?"))),
        ("span (first start to last finish)", fmt_clock(d.duration) if d.items else "-"),
        ("items/s over the span", f"{len(d.items) / d.duration:.2f}" if d.items else "-"),
        ("median latency", fmt_seconds(percentile(lat, 0.5)) if lat else "-"),
        ("p99 latency", fmt_seconds(percentile(lat, 0.99)) if lat else "-"),
        ("input tokens", fmt_number(sum(i.input_tokens or 0 for i in d.items))),
        ("output tokens", fmt_number(sum(i.output_tokens or 0 for i in d.items))),
        ("cost", cost_text((info.get("items") or {}).get("cost_usd"),
                           int((info.get("items") or {}).get("cost_unknown") or 0))),
    ]
    body = "".join(f'<div class="kpi"><b>{escape(_show(v))}</b><span>{escape(k)}</span></div>'
                   for k, v in cells)
    return f'<div class="grid">{body}</div>'


def _show(v: Any) -> str:
    if isinstance(v, float):
        return fmt_number(v)
    return str(v)


def _cell(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else _show(v)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td><code>{escape(_cell(v))}</code></td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


def render(d: RunData) -> str:
    """The whole HTML page."""
    info = d.info
    name = info.get("name") or info.get("id")
    status = info.get("status_detail") or info.get("status") or "?"
    settings = info.get("settings") if isinstance(info.get("settings"), dict) else {}
    totals = info.get("totals") if isinstance(info.get("totals"), dict) else {}
    limits: list[Limit | None] = [*d.limits] or [None]
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>throttlepool report: {escape(str(name))}</title><style>{CSS}</style></head>",
        f"<body><h1>Run {escape(str(name))}</h1><div class=\"sub\">{escape(str(status))} "
        f"&middot; id <code>{escape(str(info.get('id')))}</code> &middot; created "
        f"{escape(str(info.get('created')))} &middot; finished "
        f"{escape(str(info.get('finished') or '-'))}"
        f"{f' &middot; {len(d.sessions)} sessions (resumed)' if len(d.sessions) > 1 else ''}"
        "</div>",
        _kpis(d),
        *(f'<div class="note">{escape(n)}</div>' for n in d.notes),
        "<h2>Progress</h2>", completions(d),
        "<h2>Rate limits</h2>", *(against_limit(d, lim) for lim in limits),
        rate_limited(d), in_flight(d),
        "<h2>Latency, tokens and cost</h2>", latency(d), tokens(d), spend(d),
    ]
    errors = info.get("errors") or []
    if errors:
        parts += ["<h2>Failures</h2>",
                  _table([(str(e.get("error_type")), e.get("n")) for e in errors])]
    parts += ["<h2>Settings (as recorded, secrets redacted)</h2>",
              _table(sorted((settings or {}).items()))]
    if totals:
        parts += ["<h2>Totals of the last session</h2>", _table(sorted(totals.items()))]
    parts.append(f'<p class="sub">Written by throttlepool {escape(__version__)} on '
                 f"{_utc(_dt.datetime.now(_dt.UTC).timestamp())}.</p></body></html>\n")
    return "".join(parts)
