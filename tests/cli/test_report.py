"""``throttlepool report``: samples recorded during a real run against the simulator, the HTML
report built from a real SQLite file, an old checkpoint without samples, and the page opened
in headless Chromium (a screenshot that is not blank)."""

from __future__ import annotations

import io
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import Any

import pytest
from test_cli import run_cli, write_jsonl

from throttlepool.errors import StoreError
from throttlepool.outcome import RunStats
from throttlepool.runreport import report_html
from throttlepool.runreport.data import NO_SAMPLES
from throttlepool.sim import SimConfig, Simulator
from throttlepool.store.samples import SampleRecorder
from throttlepool.store.schema import SCHEMA_VERSION
from throttlepool.store.writer import SqlOp

N = 60
CHARTS = ("completions", "limit-1200/60s", "retries", "in-flight", "latency", "tokens")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A CLI run whose server limit binds (20 requests per 2 s): waits, 429s and retries.

    The runner learns the server's budget from its headers and avoids 429s; three scripted
    ones (as a server with another client on the same key sends) make sure there are some.
    """
    work = tmp_path_factory.mktemp("report")
    write_jsonl(work / "in.jsonl", N)
    with Simulator(SimConfig(rpm=20, window=2.0, latency=0.05, jitter=0.03)) as sim:
        body = {"error": {"message": "Rate limit reached", "type": "requests",
                          "code": "rate_limit_exceeded"}}
        sim.script([{"status": 429, "headers": {"retry-after": "0.5"}, "body": body}] * 3)
        r = run_cli(["run", "in.jsonl", "--model", "sim", "--base-url", sim.openai_base_url,
                     "-b", "8", "--rpm", "1200", "--db", "runs.db", "--run-name", "r1",
                     "-o", "out.jsonl"], work, env={"OPENAI_API_KEY": "sk-test-report"},
                    timeout=120)
        assert r.returncode == 0, r.stderr
        yield work, sim.stats()


def samples(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM samples ORDER BY t")]
    finally:
        conn.close()


def test_a_run_records_its_counters_over_time(recorded: tuple[Path, dict[str, Any]]) -> None:
    work, server = recorded
    rows = samples(work / "runs.db")
    assert len(rows) >= 3
    assert [r["t"] for r in rows] == sorted(r["t"] for r in rows)
    last = rows[-1]
    # Every call the server saw is counted, its 429s among them, and the last row is the end.
    assert last["calls"] == server["requests"]
    assert last["rate_limited"] > 0 and last["retries"] >= last["rate_limited"]
    assert last["done"] == N and last["in_flight"] == 0
    assert rows[0]["calls"] <= 8  # the first row is the start, not the end
    conn = sqlite3.connect(work / "runs.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    conn.close()


def svg_charts(html: str) -> dict[str, str]:
    return dict(re.findall(r'<svg class="chart[^"]*" data-chart="([^"]+)"(.*?)</svg>', html,
                           re.S))


def test_report_is_one_self_contained_html_file(recorded: tuple[Path, dict[str, Any]]) -> None:
    work, _ = recorded
    r = run_cli(["report", "r1", "--db", "runs.db", "-o", "report.html"], work)
    assert r.returncode == 0, r.stderr
    html = (work / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)\s*=|url\(|@import', html, re.I)  # nothing to fetch
    assert "sk-test-report" not in html
    charts = svg_charts(html)
    assert set(CHARTS) <= set(charts), sorted(charts)
    for name in CHARTS:
        drawn = [int(n) for n in re.findall(r'class="series" data-points="(\d+)"', charts[name])]
        assert drawn and max(drawn) > 1, name
    assert re.search(r'<path class="series" data-points="\d+" d="M[\d.]+,[\d.]+(L[\d.]+,[\d.]+)'
                     r'{5,}', charts["completions"])
    assert "<rect" in charts["retries"] and "<rect" in charts["latency"]
    assert "limit 1200" in charts["limit-1200/60s"]
    assert "429s (" in charts["retries"] and "429s (0)" not in charts["retries"]
    assert escape(NO_SAMPLES) not in html


def test_an_old_checkpoint_without_samples_still_gets_a_report(
        recorded: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    work, _ = recorded
    db = tmp_path / "old.db"
    shutil.copy(work / "runs.db", db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TABLE samples")  # what schema 2 wrote
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    html = report_html(db, "r1")
    assert escape(NO_SAMPLES) in html
    charts = svg_charts(html)
    assert 'class="series"' in charts["completions"] and 'class="series"' in charts["latency"]
    assert 'class="series"' in charts["limit-1200/60s"]  # from the items' start times
    assert "missing" in re.search(r'<svg class="(chart[^"]*)" data-chart="in-flight"',
                                  html).group(1)  # type: ignore[union-attr]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # migrated
    assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == N
    conn.close()


def test_report_of_an_unknown_run_exits_2_and_writes_nothing(
        recorded: tuple[Path, dict[str, Any]]) -> None:
    work, _ = recorded
    r = run_cli(["report", "nope", "--db", "runs.db", "-o", "nope.html"], work)
    assert r.returncode == 2
    assert "no run 'nope'" in r.stderr
    assert not (work / "nope.html").exists()


class _Submits:
    def __init__(self, fail_after: int | None = None) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.fail_after = fail_after

    def __call__(self, op: SqlOp) -> None:
        if self.fail_after is not None and len(self.rows) >= self.fail_after:
            raise StoreError("disk full")
        self.rows.append(op.params)


def test_recorder_keeps_the_state_before_a_quiet_gap_and_the_end() -> None:
    now = [100.0]
    out = _Submits()
    rec = SampleRecorder(None, out, lambda: "run-1", interval=1.0, now=lambda: now[0])
    stats = RunStats()
    rec.start(10, stats)
    for t, done in ((100.2, 1), (100.5, 2), (130.0, 3), (130.1, 4)):
        now[0], stats.done = t, done
        rec.update(stats, None)
    now[0] = 130.2
    rec.close(stats)
    done_col = 3 + 0  # run_id, session, t, then done
    assert [(r[2], r[done_col]) for r in out.rows] == [
        (100.0, 0), (100.5, 2), (130.0, 3), (130.2, 4)]


def test_recorder_stops_quietly_when_the_checkpoint_fails() -> None:
    out = _Submits(fail_after=1)
    ticks = iter(range(0, 100, 2))
    rec = SampleRecorder(None, out, lambda: "run-1", now=lambda: float(next(ticks)))
    rec.start(None, RunStats())
    rec.update(RunStats(), None)  # raises inside; the run must not see it
    rec.update(RunStats(), None)
    rec.close(RunStats())
    assert len(out.rows) == 1


# ---- headless Chromium -----------------------------------------------------------------


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/test installs Debian's chromium)")
        pytest.skip("chromium is not installed (scripts/test installs it)")
    return found


def browse(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="tp-chromium-")
    try:
        return subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) with zlib alone."""
    try:
        from PIL import Image
    except ImportError:
        pass
    else:
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
            flat = rgb.tobytes()
            return rgb.width, rgb.height, [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = depth = ctype = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and ctype in (2, 6), (depth, ctype)
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, pixels = bytearray(stride), []
    for y in range(height):
        start = y * (stride + 1)
        f, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels += [tuple(line[i:i + 3]) for i in range(0, stride, bpp)]
        prev = line
    return width, height, pixels


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(recorded: tuple[Path, dict[str, Any]]) -> None:
    binary = chromium()
    assert binary is not None
    work, _ = recorded
    page = work / "shown.html"
    page.write_text(report_html(work / "runs.db", "r1"), encoding="utf-8")
    dom = browse(binary, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    charts = svg_charts(dom.stdout)
    assert set(CHARTS) <= set(charts)
    drawn = re.findall(r'<path class="series" data-points="(?:[2-9]|\d\d+)" d="M', dom.stdout)
    assert len(drawn) >= 5
    shot = work / "shot.png"
    r = browse(binary, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri())
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 2000)
    colours = set(pixels)
    assert len(colours) > 100  # text, grid, lines and bars, antialiased: not a blank page
    ink = sum(1 for p in pixels if p != (255, 255, 255))
    assert ink > 0.02 * len(pixels)
    # The charts' own colours are on screen: green completions line, blue latency bars.
    assert sum(1 for p in pixels if p == (0x15, 0x65, 0xC0)) > 300
    assert sum(1 for p in pixels if abs(p[0] - 0x2E) + abs(p[1] - 0x7D) + abs(p[2] - 0x32) < 30
               ) > 100
