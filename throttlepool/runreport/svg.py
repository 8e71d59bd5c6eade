"""Small hand-written SVG charts: lines, steps and bars on one axis pair; no dependency and
no script, so a report renders anywhere, offline, and its charts can be checked as text."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from .data import Points, nice_step

WIDTH, HEIGHT = 960, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 30, 34
FONT = "font-family:system-ui,sans-serif;font-size:11px"


@dataclass
class Series:
    """One thing drawn: ``line`` (straight segments), ``step`` (flat then up), or ``bars``
    (each point starts a bar ``bar_width`` wide; ``offset``/``share`` place side-by-side bars)."""

    label: str
    points: Points
    color: str
    kind: str = "line"
    bar_width: float = 0.0
    offset: float = 0.0
    share: float = 1.0


@dataclass
class Marker:
    """A dashed reference line: horizontal at ``y`` (a limit) or vertical at ``x``."""

    label: str
    color: str
    y: float | None = None
    x: float | None = None


def fmt_number(v: float) -> str:
    """1.2k, 3.5M, 0.25, 12."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 1 or a == 0:
        return f"{v:.4g}"
    return f"{v:.2g}"


def fmt_clock(seconds: float) -> str:
    """Elapsed time as m:ss or h:mm:ss."""
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_seconds(seconds: float) -> str:
    """A latency: 850 ms, 1.2 s."""
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400)


def ticks(lo: float, hi: float, count: int = 6, time_axis: bool = False) -> list[float]:
    """About ``count`` round values from ``lo`` to ``hi``."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / count
    if time_axis and raw >= 1:
        step = float(next((s for s in _TIME_STEPS if s >= raw), nice_step(raw / 86400) * 86400))
    else:
        step = nice_step(raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


class _Frame:
    def __init__(self, x_range: tuple[float, float], y_max: float, width: int,
                 height: int, top: int) -> None:
        self.x0, self.x1 = x_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1
        self.y_ticks = ticks(0.0, y_max if y_max > 0 else 1.0, 4)
        self.y1 = max(self.y_ticks[-1], y_max, 1e-9)
        if self.y_ticks[-1] < self.y1:
            self.y_ticks.append(self.y_ticks[-1] + (self.y_ticks[1] - self.y_ticks[0]
                                                    if len(self.y_ticks) > 1 else 1))
            self.y1 = self.y_ticks[-1]
        self.w, self.h = width, height
        self.top = top
        self.pw, self.ph = width - LEFT - RIGHT, height - top - BOTTOM

    def x(self, v: float) -> float:
        return LEFT + (v - self.x0) / (self.x1 - self.x0) * self.pw

    def y(self, v: float) -> float:
        return self.top + self.ph - v / self.y1 * self.ph


def _path(frame: _Frame, s: Series) -> str:
    pts = s.points
    parts: list[str] = []
    prev_y: float | None = None
    for x, y in pts:
        px, py = frame.x(x), frame.y(y)
        if not parts:
            parts.append(f"M{px:.1f},{py:.1f}")
        elif s.kind == "step" and prev_y is not None:
            parts.append(f"L{px:.1f},{prev_y:.1f}L{px:.1f},{py:.1f}")
        else:
            parts.append(f"L{px:.1f},{py:.1f}")
        prev_y = py
    return (f'<path class="series" data-points="{len(pts)}" d="{"".join(parts)}" fill="none" '
            f'stroke="{s.color}" stroke-width="1.8" stroke-linejoin="round"/>')


def _bars(frame: _Frame, s: Series) -> str:
    out = [f'<g class="series" data-points="{len(s.points)}" fill="{s.color}">']
    for x, y in s.points:
        if y <= 0:
            continue
        left = frame.x(x + s.bar_width * s.offset)
        right = frame.x(x + s.bar_width * (s.offset + s.share))
        top = frame.y(y)
        out.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{max(0.8, right - left - 0.6):.1f}"'
                   f' height="{max(0.0, frame.y(0) - top):.1f}"/>')
    out.append("</g>")
    return "".join(out)


def chart(name: str, title: str, series: Sequence[Series], *, x_range: tuple[float, float],
          x_label: str, y_label: str, markers: Sequence[Marker] = (), time_axis: bool = True,
          x_format: Callable[[float], str] | None = None, width: int = WIDTH,
          height: int = HEIGHT) -> str:
    """An ``<svg>`` with axes, round ticks, a legend, ``series`` and ``markers``."""
    y_max = max([y for s in series for _, y in s.points] +
                [m.y for m in markers if m.y is not None] + [0.0])
    legend = [(s.label, s.color, False) for s in series] + [
        (m.label, m.color, True) for m in markers if m.label]
    legend_w = sum(6.2 * len(label) + 22 for label, _, _ in legend)
    wrapped = LEFT + 7.2 * len(title) + 24 + legend_w > width - RIGHT
    top = TOP + 16 if wrapped else TOP
    height += top - TOP
    f = _Frame(x_range, y_max * 1.05, width, height, top)
    fmt_x = x_format or (fmt_clock if time_axis else fmt_number)
    out = [f'<svg class="chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(title)}" style="{FONT}">',
           f'<text x="{LEFT}" y="16" font-weight="600" font-size="13">{escape(title)}</text>']
    lx, ly = float(width - RIGHT), 32 if wrapped else 12
    for label, color, dashed in reversed(legend):
        lx -= 6.2 * len(label) + 22
        dash = ' stroke-dasharray="4 2"' if dashed else ""
        out.append(f'<line x1="{lx:.0f}" x2="{lx + 14:.0f}" y1="{ly}" y2="{ly}" '
                   f'stroke="{color}" stroke-width="{2 if dashed else 6}"{dash}/>'
                   f'<text x="{lx + 18:.0f}" y="{ly + 4}" fill="#333">{escape(label)}</text>')
    base = top + f.ph
    for v in f.y_ticks:
        py = f.y(v)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + f.pw}" y1="{py:.1f}" y2="{py:.1f}" '
                   f'stroke="#e3e3e3"/><text x="{LEFT - 6}" y="{py + 4:.1f}" '
                   f'text-anchor="end" fill="#555">{fmt_number(v)}</text>')
    for v in ticks(f.x0, f.x1, 8, time_axis):
        px = f.x(v)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{base}" y2="{base + 4}" '
                   f'stroke="#888"/><text x="{px:.1f}" y="{base + 16}" text-anchor="middle" '
                   f'fill="#555">{escape(fmt_x(v))}</text>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT + f.pw}" y1="{base}" y2="{base}" stroke="#888"/>')
    out.append(f'<text x="{LEFT + f.pw}" y="{height - 4}" text-anchor="end" fill="#555">'
               f'{escape(x_label)}</text>')
    out.append(f'<text transform="translate(12,{top + f.ph / 2:.0f}) rotate(-90)" '
               f'text-anchor="middle" fill="#555">{escape(y_label)}</text>')
    for s in series:
        if s.points:
            out.append(_bars(f, s) if s.kind == "bars" else _path(f, s))
    for m in markers:
        if m.y is not None:
            py = f.y(m.y)
            out.append(f'<line class="marker" x1="{LEFT}" x2="{LEFT + f.pw}" y1="{py:.1f}" '
                       f'y2="{py:.1f}" stroke="{m.color}" stroke-dasharray="6 4"/>')
        elif m.x is not None and f.x0 <= m.x <= f.x1:
            px = f.x(m.x)
            out.append(f'<line class="marker" x1="{px:.1f}" x2="{px:.1f}" y1="{top}" '
                       f'y2="{base}" stroke="{m.color}" stroke-dasharray="4 3"/>')
    out.append("</svg>")
    return "".join(out)


def empty(name: str, title: str, why: str, width: int = WIDTH, height: int = 70) -> str:
    """A box saying what is missing, in place of a chart."""
    return (f'<svg class="chart missing" data-chart="{escape(name)}" '
            f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'style="{FONT}"><text x="{LEFT}" y="16" font-weight="600" font-size="13">'
            f'{escape(title)}</text><rect x="{LEFT}" y="26" width="{width - LEFT - RIGHT}" '
            f'height="{height - 32}" fill="#f6f6f6" stroke="#ddd"/><text x="{LEFT + 10}" '
            f'y="{26 + (height - 32) / 2 + 4:.0f}" fill="#666">{escape(why)}</text></svg>')
