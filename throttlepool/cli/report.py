"""``throttlepool report``: a run's report as one HTML file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import click

from .._config import load_settings
from ..errors import ConfigError, OutputError
from ..runreport import report_html

REPORT_EXAMPLES = """\b
Examples:
  throttlepool report prompts.jsonl -o report.html
  throttlepool report run-20250101T120000-1a2b3c4d --db runs.db -o /tmp/run.html
"""


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                   dir=target.parent if str(target.parent) else ".")
    except OSError as exc:
        raise OutputError(f"cannot create --output {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(f"cannot write --output {path}: {exc.strerror or exc}") from None


@click.command("report", epilog=REPORT_EXAMPLES)
@click.argument("run")
@click.option("--db", metavar="PATH", help="Checkpoint database. [default: throttlepool.db]")
@click.option("-o", "--output", metavar="PATH", default="report.html", show_default=True,
              help="HTML file to write.")
def report_command(run: str, db: str | None, output: str) -> int:
    """Write a RUN's report (name or id) as one self-contained HTML page.

    Charts over time of completions, requests against each limit, 429s and retries, calls in
    flight and tokens; the latency distribution; the run's summary and settings. Inline SVG,
    no script and no network: open it in any browser, offline. A run recorded before
    samples existed gets the charts its items allow, and the page says what is missing."""
    path = db or load_settings({})["db"]
    if not path:
        raise ConfigError("no checkpoint database: pass --db PATH")
    html = report_html(str(path), run)
    write_atomically(output, html)
    click.echo(f"report written to {output}", err=True)
    return 0
