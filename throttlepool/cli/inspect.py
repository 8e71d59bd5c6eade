"""``throttlepool status`` and ``throttlepool export``: read a checkpoint database."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import click

from ..config import load_settings
from ..errors import ConfigError, OutputError
from ..store import export_run, list_runs, run_status
from .output import create_temp, output_format

STATUS_EXAMPLES = """\b
Examples:
  throttlepool status                      # every run in ./throttlepool.db
  throttlepool status prompts.jsonl        # one run, by name or id
  throttlepool status --db runs.db --json
"""

EXPORT_EXAMPLES = """\b
Examples:
  throttlepool export prompts.jsonl > results.jsonl
  throttlepool export prompts.jsonl --format csv -o results.csv
  throttlepool export run-20250101T120000-1a2b3c4d --db runs.db
"""


def _db(db: str | None) -> str:
    path = db or load_settings({})["db"]
    if not path:
        raise ConfigError("no checkpoint database: pass --db PATH")
    return str(path)


def _status_lines(info: dict[str, Any]) -> list[str]:
    counts = info.get("counts") or {}
    items = info.get("items") or {}
    totals = info.get("totals") or {}
    lines = [
        f"run {info.get('name') or '-'} ({info['id']})",
        f"  status:   {info.get('status_detail') or info.get('status')}  "
        f"created {info.get('created')}  finished {info.get('finished') or '-'}",
        "  items:    " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none")
        + (f" of {totals['total']}" if totals.get("total") is not None else ""),
        f"  attempts: {items.get('attempts') or 0}  tokens: {items.get('input_tokens') or 0} "
        f"in, {items.get('output_tokens') or 0} out",
    ]
    if totals:
        lines.append(f"  last run: {totals.get('calls', 0)} calls, {totals.get('retries', 0)} "
                     f"retries, {totals.get('rate_limited', 0)} rate-limited, "
                     f"{float(totals.get('wall_time') or 0):.1f}s")
    for err in info.get("errors") or []:
        lines.append(f"  failed:   {err['n']} {err['error_type']}")
    settings = info.get("settings") or {}
    if settings:
        lines.append("  settings: " + json.dumps(settings, sort_keys=True))
    return lines


@click.command("status", epilog=STATUS_EXAMPLES)
@click.argument("run", required=False)
@click.option("--db", metavar="PATH", help="Checkpoint database. [default: throttlepool.db]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def status_command(run: str | None, db: str | None, as_json: bool) -> int:
    """List the runs in a checkpoint database, or show one RUN (name or id) in detail."""
    path = _db(db)
    if run is None:
        runs = list_runs(path)
        if as_json:
            click.echo(json.dumps(runs, indent=2, default=str))
            return 0
        if not runs:
            click.echo(f"no runs in {path}")
        for r in runs:
            click.echo(f"{r['name'] or '-':<30} {r.get('status_detail') or r['status']:<12} "
                       f"{r['ok']}/{r['items']} ok  {r['created']}  {r['id']}")
        return 0
    info = run_status(path, run)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
    else:
        for line in _status_lines(info):
            click.echo(line)
    return 0


@click.command("export", epilog=EXPORT_EXAMPLES)
@click.argument("run")
@click.option("--db", metavar="PATH", help="Checkpoint database. [default: throttlepool.db]")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]),
              help="Output format. [default: by --output extension, else jsonl]")
@click.option("-o", "--output", metavar="PATH", help="Write here (atomically) instead of "
              "stdout.")
def export_command(run: str, db: str | None, fmt: str | None, output: str | None) -> int:
    """Write a RUN's stored outcomes in input order as JSONL or CSV."""
    path = _db(db)
    fmt = fmt or output_format(output)
    if output is None:
        export_run(path, run, fmt)
        return 0
    try:
        fd, tmp = create_temp(output)  # named for its pid: a killed export's file is removed
    except OSError as exc:
        raise OutputError(f"cannot create --output {output}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        n = export_run(path, run, fmt, tmp)
        os.replace(tmp, output)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write --output {output}: {exc.strerror or exc}; the "
                              "checkpoint is unchanged: export again once the file can be "
                              "written") from None
        raise
    click.echo(f"{n} rows written to {output}", err=True)
    return 0
