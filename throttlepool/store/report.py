"""Read-side library surface for the CLI: list runs, a run's status, export a run."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sqlite3
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, TextIO

from .._inputs import Records
from ..errors import ConfigError, StoreError
from ..outcome import Status
from .codec import ITEM_COLUMNS
from .lease import MACHINE, SELECT_LEASE, Lease, iso
from .redact import REDACTED
from .rows import (
    STATUSES,
    InputRows,
    columns,
    csv_cell,
    iso_time,
    mismatched_lines,
    result_fields,
    stored_fields,
)
from .schema import MEMORY, errors_named, open_connection, parse_spec
from .sqlite import SQLiteStore

DbSpec = SQLiteStore | str | os.PathLike[str]
EXPORT_COLUMNS = ("index", *ITEM_COLUMNS[2:])


@contextlib.contextmanager
def _connection(db: DbSpec) -> Iterator[tuple[sqlite3.Connection, str]]:
    if isinstance(db, SQLiteStore):
        db.flush()
        with db._lock:
            yield db._conn, db.path
        return
    path = parse_spec(db)
    if path == MEMORY or not Path(path).exists():
        raise StoreError(f"no checkpoint database at {path}")
    conn = open_connection(path)
    try:
        yield conn, path
    finally:
        conn.close()


def _rows(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    cols = [d[0] for d in cur.description or ()]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def live_status(status: str, lease: Lease | None, now: float | None = None,
                reason: str | None = None) -> tuple[str, str]:
    """``(status, detail)`` of a run as it is now: a ``running`` row whose owner is gone is
    ``interrupted``, e.g. ``("interrupted", "interrupted (owner pid 12 gone)")``; a finished
    one is its stored status, with the stored ``reason`` if any: ``stopped (why)``."""
    if status != "running":
        return status, f"{status} ({reason})" if reason else status
    if lease is None:
        return "interrupted", "interrupted (no process holds its lease)"
    gone = lease.gone(time.time() if now is None else now)
    if gone is None:
        return "running", f"running (pid {lease.pid} on {lease.host})"
    if gone == "expired" and lease.machine != MACHINE:
        return "interrupted", (f"interrupted (owner pid {lease.pid} on {lease.host} silent "
                               f"since {iso(lease.heartbeat)})")
    return "interrupted", f"interrupted (owner pid {lease.pid} gone)"


def _owner(conn: sqlite3.Connection, path: str, row: dict[str, Any],
           reason: str | None) -> None:
    """Replace the stored status of ``row`` by what is true now; keep the stored one too."""
    lease = Lease.from_row(conn.execute(SELECT_LEASE, (row["id"],)).fetchone())
    row["recorded_status"] = row["status"]
    if path == MEMORY and row["status"] == "running":
        row["status_detail"] = "running"  # only its own process sees it; nobody leases it
    else:
        row["status"], row["status_detail"] = live_status(row["status"], lease, reason=reason)
    row["owner"] = None if lease is None else {
        "host": lease.host, "pid": lease.pid, "since": lease.since,
        "heartbeat": iso(lease.heartbeat), "expires": iso(lease.expires),
        "released": None if lease.released is None else iso(lease.released)}


def _find_run(conn: sqlite3.Connection, path: str, run: str) -> dict[str, Any]:
    """The run whose id or name is ``run``; else the newest run of the input file ``run``
    names (the CLI names a run ``prompts.jsonl-1a2b3c4d``: the file name and a hash)."""
    rows = _rows(conn, "SELECT * FROM runs WHERE id = ? OR name = ? ORDER BY id = ? DESC",
                 (run, run, run))
    if not rows:
        of_input = re.sub(r"([*?\[])", r"[\1]", os.path.basename(run)) + "-" + "[0-9a-f]" * 8
        rows = _rows(conn, "SELECT * FROM runs WHERE name GLOB ? "
                     "ORDER BY created DESC, rowid DESC LIMIT 1", (of_input,))
    if not rows:
        raise StoreError(f"no run {run!r} in {path}")
    row = rows[0]
    row["settings"] = json.loads(row["settings"]) if row["settings"] else {}
    row["totals"] = json.loads(row["totals"]) if row["totals"] else None
    return row


def list_runs(db: DbSpec) -> list[dict[str, Any]]:
    """Every run, newest first: id, name, created, status, finished (ISO-8601 UTC), items
    recorded, of them ``ok`` and ``failed``, ``total`` (the input's items, if known),
    ``calls`` (the attempts of the recorded items), ``repeated_calls`` and
    ``repeated_after_resume`` (calls of the last session made again: a worker or an earlier
    session was lost before recording them; null for older runs), ``cost_usd`` (the sum of
    the items' known costs, null when none is known) and ``cost_unknown`` (ok items with
    usage but no price).

    ``status`` is the run's state now (a ``running`` run whose owner died is
    ``interrupted``); ``status_detail`` says why, ``recorded_status`` is the stored value.
    """
    with _connection(db) as (conn, path), errors_named(path):
        runs = _rows(conn, """
            SELECT r.id, r.name, r.created, r.status, r.finished,
                   json_extract(r.totals, '$.reason') AS reason,
                   json_extract(r.totals, '$.total') AS total,
                   json_extract(r.totals, '$.repeated_calls') AS repeated_calls,
                   json_extract(r.totals, '$.repeated_after_resume') AS repeated_after_resume,
                   (SELECT count(*) FROM items i WHERE i.run_id = r.id) AS items,
                   (SELECT count(*) FROM items i WHERE i.run_id = r.id AND i.status = 'ok')
                       AS ok,
                   (SELECT count(*) FROM items i WHERE i.run_id = r.id
                       AND i.status = 'failed') AS failed,
                   (SELECT coalesce(sum(attempts), 0) FROM items i WHERE i.run_id = r.id)
                       AS calls,
                   (SELECT sum(cost) FROM items i WHERE i.run_id = r.id) AS cost_usd,
                   (SELECT count(*) FROM items i WHERE i.run_id = r.id AND i.status = 'ok'
                       AND i.cost IS NULL AND (i.input_tokens IS NOT NULL
                       OR i.output_tokens IS NOT NULL)) AS cost_unknown
            FROM runs r ORDER BY r.created DESC, r.rowid DESC""")
        for run in runs:
            _owner(conn, path, run, run.pop("reason"))
        return runs


def run_status(db: DbSpec, run: str) -> dict[str, Any]:
    """One run (by id or name): its row, settings, totals, item counts by status, and its
    owner (the lease: host, pid, since); ``status`` as in :func:`list_runs`.

    ``items`` sums the recorded items: ``calls`` (their attempts: every call the recorded
    outcomes took), ``retries``, tokens, ``mean_latency`` and ``first_started`` /
    ``last_finished`` (ISO-8601 UTC). ``totals`` are the counters of the run's last session
    (a resumed run's earlier sessions are in ``items`` only).
    """
    with _connection(db) as (conn, path), errors_named(path):
        info = _find_run(conn, path, run)
        totals = info["totals"] if isinstance(info["totals"], dict) else {}
        totals.pop("started", None)  # a monotonic clock reading: meaningless once stored
        _owner(conn, path, info, totals.get("reason"))
        counts = dict(conn.execute(
            "SELECT status, count(*) FROM items WHERE run_id = ? GROUP BY status",
            (info["id"],)).fetchall())
        agg = _rows(conn, """
            SELECT count(*) AS recorded, coalesce(sum(attempts), 0) AS calls,
                   coalesce(sum(max(attempts - 1, 0)), 0) AS retries,
                   coalesce(sum(input_tokens), 0) AS input_tokens,
                   coalesce(sum(output_tokens), 0) AS output_tokens,
                   sum(cost) AS cost_usd,
                   coalesce(sum(status = 'ok' AND cost IS NULL AND (input_tokens IS NOT NULL
                       OR output_tokens IS NOT NULL)), 0) AS cost_unknown,
                   avg(latency) AS mean_latency, min(started) AS first_started,
                   max(finished) AS last_finished
            FROM items WHERE run_id = ?""", (info["id"],))[0]
        agg["attempts"] = agg["calls"]  # the earlier name, kept for existing callers
        agg["first_started"] = iso_time(agg["first_started"])
        agg["last_finished"] = iso_time(agg["last_finished"])
        errors = _rows(conn, """
            SELECT error_type, count(*) AS n FROM items
            WHERE run_id = ? AND error_type IS NOT NULL
            GROUP BY error_type ORDER BY n DESC""", (info["id"],))
    info["counts"] = counts
    info["items"] = agg
    info["errors"] = errors
    return info


def iter_outcomes(db: DbSpec, run: str) -> Iterator[dict[str, Any]]:
    """A run's stored items in input order as dicts (``value`` decoded from JSON)."""
    with _connection(db) as (conn, path), errors_named(path):
        run_id = _find_run(conn, path, run)["id"]
        cur = conn.execute(
            f"SELECT idx, {', '.join(ITEM_COLUMNS[2:])} FROM items "
            "WHERE run_id = ? ORDER BY idx", (run_id,))
        for r in cur:
            row = dict(zip(EXPORT_COLUMNS, r, strict=True))
            row["value"] = json.loads(row["value"]) if row["value"] is not None else None
            yield row


def _stored(conn: sqlite3.Connection, run_id: str) -> Iterator[dict[str, Any]]:
    cur = conn.execute(f"SELECT idx, {', '.join(ITEM_COLUMNS[2:])} FROM items "
                       "WHERE run_id = ? ORDER BY idx", (run_id,))
    for r in cur:
        yield dict(zip(EXPORT_COLUMNS, r, strict=True))


def export_rows(db: DbSpec, run: str, inputs: Records | None = None,
                statuses: Collection[str] | None = None
                ) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """``(columns, rows)`` of a run's outcomes in input order, in the row shape of ``run -o``
    (docs/output.md).

    The checkpoint keeps no input, only its key hash: without ``inputs`` a row has no input
    fields and ``line`` is null. With ``inputs`` (the run's input read with the run's
    options) each row gets its record's line and fields by index, a record the run never
    recorded is a ``not_attempted`` row, and an input that is not the run's (a record whose
    request hashes to another key) is refused with a StoreError naming its lines.
    ``statuses`` keeps only rows of those statuses.
    """
    wanted = None if statuses is None else set(statuses)
    unknown = (wanted or set()) - set(STATUSES)
    if unknown:
        raise ConfigError(f"unknown status {sorted(unknown)[0]!r}; choose from "
                          f"{', '.join(STATUSES)}")
    joined = InputRows(inputs) if inputs is not None else None
    with _connection(db) as (conn, path), errors_named(path):
        info = _find_run(conn, path, run)
        if joined is not None:
            _check_input(conn, info, joined)
    cols = columns(joined.columns() if joined is not None else ())

    def rows() -> Iterator[dict[str, Any]]:
        with _connection(db) as (conn, path), errors_named(path):
            stored = _stored(conn, info["id"])
            if joined is None:
                for item in stored:
                    row = {"index": item["index"], "line": None, **stored_fields(item)}
                    if wanted is None or row["status"] in wanted:
                        yield row
                return
            by_index = {item["index"]: item for item in stored}
            for index, line, fields, _ in joined._read():
                found = by_index.pop(index, None)
                result = (stored_fields(found) if found is not None
                          else result_fields(Status.NOT_ATTEMPTED.value))
                if wanted is None or result["status"] in wanted:
                    yield {"index": index, "line": line, **fields, **result}
            for index, item in sorted(by_index.items()):  # past the end of a shorter input
                result = stored_fields(item)
                if wanted is None or result["status"] in wanted:
                    yield {"index": index, "line": None, **result}
    return cols, rows()


def _check_input(conn: sqlite3.Connection, info: dict[str, Any], joined: InputRows) -> None:
    identity = (info.get("settings") or {}).get("identity")
    if not isinstance(identity, dict) or REDACTED in json.dumps(identity):
        return  # without the run's exact identity the keys cannot be recomputed
    keys = dict(conn.execute("SELECT idx, key FROM items WHERE run_id = ?", (info["id"],)))
    bad = mismatched_lines(joined, identity, keys)
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise StoreError(
            f"--input {joined.records.name} is not the input of run {info['name'] or info['id']}:"
            f" {len(bad)} of its records differ from what the run sent (line"
            f"{'s' if len(bad) > 1 else ''} {shown}); give the file the run read, with the "
            "same reading options (--field, --column, --template, --limit)")


def export_run(db: DbSpec, run: str, fmt: str = "jsonl",
               out: str | os.PathLike[str] | TextIO | None = None, *,
               inputs: Records | None = None, statuses: Collection[str] | None = None) -> int:
    """Write a run's outcomes in input order as JSONL or CSV to ``out`` (path, file, stdout),
    in the row shape of ``run -o`` (:func:`export_rows`, docs/output.md).

    CSV cells hold strings and numbers as plain text and structured values as JSON; both
    formats have the same columns. Returns the number of rows.
    """
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"export format must be 'jsonl' or 'csv', not {fmt!r}")
    cols, rows = export_rows(db, run, inputs, statuses)
    with contextlib.ExitStack() as stack:
        if out is None:
            import sys

            fh: TextIO = sys.stdout
        elif isinstance(out, (str, os.PathLike)):
            fh = stack.enter_context(open(out, "w", encoding="utf-8", newline=""))
        else:
            fh = out
        n = 0
        writer = csv.writer(fh) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(cols)
        for row in rows:
            if writer is not None:
                writer.writerow([csv_cell(row.get(c)) for c in cols])
            else:
                fh.write(json.dumps({c: row.get(c) for c in cols}, ensure_ascii=False) + "\n")
            n += 1
        return n


def export_text(db: DbSpec, run: str, fmt: str = "jsonl", **options: Any) -> str:
    """:func:`export_run` into a string (small runs, tests)."""
    buf = io.StringIO()
    export_run(db, run, fmt, buf, **options)
    return buf.getvalue()
