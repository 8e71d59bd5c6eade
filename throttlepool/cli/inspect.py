"""``throttlepool status`` and ``throttlepool export``: read a checkpoint database."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from typing import Any

import click

from .._config import load_settings
from .._inputs import FORMATS, MAX_RECORD_BYTES, InputSpec, Records
from ..batchapi.journal import at_provider, read_chunks
from ..cost.text import cost_cell, cost_text
from ..errors import ConfigError, OutputError
from ..outcome import repeated_calls_text
from ..store import export_run, list_runs, run_status
from ..store.rows import STATUSES, iso_time
from .output import create_temp, missing_dir_note, output_format

STATUS_EXAMPLES = """\b
Examples:
  throttlepool status                      # every run in ./throttlepool.db
  throttlepool status prompts.jsonl        # the latest run of this input (or a name or id)
  throttlepool status --db runs.db --json
"""

EXPORT_EXAMPLES = """\b
Examples:
  throttlepool export prompts.jsonl > results.jsonl
  throttlepool export prompts.jsonl --input prompts.jsonl -o results.csv
  throttlepool export prompts.jsonl --failed --input prompts.jsonl
  throttlepool export run-20250101T120000-1a2b3c4d --db runs.db --status ok

\b
Rows have the shape `run -o` writes (docs/output.md). The checkpoint keeps no input: give
--input (the run's input file, read with the run's --field/--column/--template/--limit)
to add each record's line number and own fields, and rows for records never attempted.
"""


def _db(db: str | None) -> str:
    path = db or load_settings({})["db"]
    if not path:
        raise ConfigError("no checkpoint database: pass --db PATH")
    return str(path)


def when(text: Any) -> str:
    """An ISO-8601 time as local ``2025-01-01 12:00:00``; ``-`` when there is none."""
    if not text:
        return "-"
    try:
        moment = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 01 min``; ``-`` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _between(start: Any, end: Any) -> float | None:
    try:
        return (_dt.datetime.fromisoformat(str(end))
                - _dt.datetime.fromisoformat(str(start))).total_seconds()
    except (TypeError, ValueError):
        return None


def _made_again(counts: dict[str, Any]) -> int:
    """Calls made again because their answers were lost (a worker, or an earlier session
    killed before recording them): paid, yet no recorded item's attempt."""
    return (int(counts.get("repeated_calls") or 0)
            + int(counts.get("repeated_after_resume") or 0))


def runs_table(runs: list[dict[str, Any]]) -> list[str]:
    """The runs as a table with a header line, columns as wide as their widest cell."""
    header = ("NAME", "OK", "FAILED", "OF", "CALLS", "COST", "CREATED", "FINISHED", "ID",
              "STATUS")
    rows = [header]
    for r in runs:
        total = r.get("total")
        unknown = int(r.get("cost_unknown") or 0)
        cost = cost_cell(r.get("cost_usd"), unknown)
        rows.append((r.get("name") or "-", str(r.get("ok", 0)), str(r.get("failed", 0)),
                     "?" if total is None else str(total),
                     str(int(r.get("calls") or 0) + _made_again(r)), cost,
                     when(r.get("created")), when(r.get("finished")), str(r["id"]),
                     str(r.get("status_detail") or r.get("status"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {1, 2, 3, 4, 5}
    return ["  ".join(cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                      for i, cell in enumerate(row)).rstrip() for row in rows]


def _cost_note(items: dict[str, Any]) -> str:
    unknown = int(items.get("cost_unknown") or 0)
    if unknown:
        return (f" ({unknown} answered item{'s have' if unknown != 1 else ' has'} usage but "
                "no price: the model is not in the price table; give --price-in/--price-out)")
    if items.get("cost_usd") is not None:
        return " (the recorded items' usage x price)"
    return ""


def batch_info(path: str, info: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``--mode batch`` run's provider batches, as its journal recorded them: id, the
    provider's last status, requests, those still at the provider, created (ISO-8601)."""
    if (info.get("settings") or {}).get("mode") != "batch":
        return []
    chunks = read_chunks(path, str(info["id"]))
    waiting = at_provider(chunks)
    return [{"batch_id": c.batch_id, "status": c.status, "state": c.state,
             "requests": len(c.indices),
             "at_provider": sum(1 for i in c.indices if i in waiting),
             "created": iso_time(c.created)} for c in chunks]


def _at_provider(info: dict[str, Any]) -> int:
    return sum(int(b["at_provider"]) for b in info.get("batches") or [])


def batch_waiting(batches: list[dict[str, Any]]) -> str:
    """``, 12 at the provider (batch batch_abc)``, or '' when nothing waits there."""
    ids = [str(b["batch_id"] or "not yet created") for b in batches if b["at_provider"]]
    n = sum(int(b["at_provider"]) for b in batches)
    if not n:
        return ""
    shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
    return f", {n} at the provider (batch{'es' if len(ids) != 1 else ''} {shown})"


def _calls_line(items: dict[str, Any], totals: dict[str, Any]) -> str:
    """``calls      240 (0 of them retries; 120 made again ...)``: what the API received,
    the number the runs table shows."""
    attempts, again = int(items.get("calls") or 0), _made_again(totals)
    if not again:
        return (f"  calls      {attempts} ({items.get('retries') or 0} of them retries): the "
                "attempts of the recorded items")
    return (f"  calls      {attempts + again} ({items.get('retries') or 0} of them retries; "
            f"{again} made again, their answers lost): the attempts of the recorded items "
            "and the calls made again")


def status_lines(info: dict[str, Any]) -> list[str]:
    """One run in detail: what happened, counts that add up, times a person reads."""
    counts = info.get("counts") or {}
    items = info.get("items") or {}
    totals = info.get("totals") or {}
    recorded = int(items.get("recorded") or 0)
    total = totals.get("total")
    ok, failed = int(counts.get("ok", 0)), int(counts.get("failed", 0))
    line = f"{ok} ok, {failed} failed"
    waiting = batch_waiting(info.get("batches") or [])
    if waiting:
        line += waiting
    if total is not None:
        unsent = max(int(total) - recorded - _at_provider(info), 0)
        line += f", {unsent} not attempted, of {total}"
    finished = info.get("finished")
    lines = [
        f"run {info.get('name') or '-'}  ({info['id']})",
        f"  status     {info.get('status_detail') or info.get('status')}",
        f"  created    {when(info.get('created'))}",
        f"  finished   {when(finished)}" + (
            f"  ({duration(_between(info.get('created'), finished))} after it was created)"
            if finished else ""),
        f"  items      {line}",
        _calls_line(items, totals),
        f"  tokens     {items.get('input_tokens') or 0} in, {items.get('output_tokens') or 0} "
        "out",
        f"  cost       {cost_text(items.get('cost_usd'), int(items.get('cost_unknown') or 0))}"
        + _cost_note(items),
    ]
    if items.get("first_started"):
        span = _between(items.get("first_started"), items.get("last_finished"))
        mean = items.get("mean_latency")
        lines.append(f"  calls ran  {when(items.get('first_started'))} to "
                     f"{when(items.get('last_finished'))}, spanning {duration(span)}"
                     + (f"; mean latency {mean:.2f} s" if mean is not None else ""))
    if totals:
        calls = totals.get("calls", 0)
        called = (int(totals.get("done") or 0) + int(totals.get("failed") or 0)
                  - int(totals.get("from_checkpoint") or 0) - int(totals.get("cache_hits") or 0))
        repeated = repeated_calls_text(calls, called, int(totals.get("repeated_calls") or 0),
                                       int(totals.get("repeated_after_resume") or 0))
        lines.append(f"  last session  {calls} call{'s' if calls != 1 else ''}{repeated}, "
                     f"{totals.get('retries', 0)} retries, {totals.get('rate_limited', 0)} "
                     f"rate-limited (429), {totals.get('from_checkpoint', 0)} from the "
                     f"checkpoint, in {duration(float(totals.get('wall_time') or 0))}")
    for err in info.get("errors") or []:
        lines.append(f"  failed     {err['n']} {err['error_type']}")
    batches = info.get("batches") or []
    if len(batches) > 10:
        lines.append(f"  batches    {len(batches)}, the last 10:")
    for b in batches[-10:]:
        lines.append(f"  batch      {b['batch_id'] or '(not created)'}: {b['status'] or '-'}, "
                     f"{b['requests']} requests, created {when(b['created'])}")
    owner = info.get("owner")
    if owner and info.get("status") == "running":
        lines.append(f"  owner      pid {owner['pid']} on {owner['host']} since "
                     f"{when(owner['since'])}")
    settings = info.get("settings") or {}
    if settings:
        lines.append("  settings   " + ", ".join(
            f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(settings.items())))
    return lines


@click.command("status", epilog=STATUS_EXAMPLES)
@click.argument("run", required=False)
@click.option("--db", metavar="PATH", help="Checkpoint database. [default: throttlepool.db]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (times as ISO-8601 UTC) "
              "instead of text.")
def status_command(run: str | None, db: str | None, as_json: bool) -> int:
    """List the runs in a checkpoint database, or show one RUN in detail: its name or id,
    or the input file (the latest run of it).

    Times are local; CALLS counts the calls the API received for the run: the attempts of
    the recorded items (retries included) and the calls made again after their answers
    were lost (a worker died, or a session was killed; counted for the last session).
    """
    path = _db(db)
    if run is None:
        runs = list_runs(path)
        if as_json:
            click.echo(json.dumps(runs, indent=2, default=str))
        elif not runs:
            click.echo(f"no runs in {path}")
        else:
            for line in runs_table(runs):
                click.echo(line)
        return 0
    info = run_status(path, run)
    info["batches"] = batch_info(path, info)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
    else:
        for line in status_lines(info):
            click.echo(line)
    return 0


def _input_records(input_path: str | None, config: str | None,
                   flags: dict[str, Any]) -> Records | None:
    if input_path is None:
        if any(v is not None for v in flags.values()):
            raise ConfigError("--field, --column, --template, --limit and --input-format "
                              "read the --input file: give --input too")
        return None
    settings = load_settings(flags, config=config)
    spec = InputSpec(path=input_path, format=settings["input_format"],
                     column=settings["column"], field=settings["field"],
                     template=settings["template"], limit=settings["limit"],
                     max_record_bytes=settings.get("max_record_size", MAX_RECORD_BYTES))
    # A bad record is a row (the run recorded it failed, or never reached it), not a stop.
    return Records(spec, skip_bad=True)


@click.command("export", epilog=EXPORT_EXAMPLES)
@click.argument("run")
@click.option("--db", metavar="PATH", help="Checkpoint database. [default: throttlepool.db]")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]),
              help="Output format. [default: by --output extension, else jsonl]")
@click.option("-o", "--output", metavar="PATH", help="Write here (atomically) instead of "
              "stdout.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="Only rows of this status (repeatable).")
@click.option("--failed", is_flag=True, help="Only failed rows: --status failed.")
@click.option("--input", "input_path", metavar="FILE", help="The run's input (- for stdin): "
              "add each record's line and own fields, and rows for records never attempted.")
@click.option("--field", help="As for run: the JSONL field holding the prompt.")
@click.option("--column", help="As for run: the CSV column holding the prompt.")
@click.option("--template", help="As for run: the prompt template.")
@click.option("--limit", type=int, metavar="N", help="As for run: only the first N records.")
@click.option("--input-format", type=click.Choice(FORMATS), help="As for run: the input "
              "format.")
@click.option("--config", metavar="PATH", help="Config file to read the options above from.")
def export_command(run: str, db: str | None, fmt: str | None, output: str | None,
                   statuses: tuple[str, ...], failed: bool, input_path: str | None,
                   config: str | None, **reading: Any) -> int:
    """Write a RUN's outcomes in input order as JSONL or CSV, one row per item."""
    path = _db(db)
    fmt = fmt or output_format(output)
    wanted = {*statuses, *(["failed"] if failed else [])} or None
    records = _input_records(input_path, config, reading)
    with records if records is not None else contextlib.nullcontext():
        if output is None:
            export_run(path, run, fmt, inputs=records, statuses=wanted)
            return 0
        try:
            fd, tmp = create_temp(output)  # named for its pid: a killed export's is removed
        except OSError as exc:
            raise OutputError(f"cannot create --output {output}: "
                              f"{exc.strerror or exc}{missing_dir_note(output)}") from None
        os.close(fd)
        try:
            n = export_run(path, run, fmt, tmp, inputs=records, statuses=wanted)
            os.replace(tmp, output)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise OutputError(f"cannot write --output {output}: {exc.strerror or exc}; "
                                  "the checkpoint is unchanged: export again once the file "
                                  "can be written") from None
            raise
    click.echo(f"{n} rows written to {output}", err=True)
    return 0

