"""Read-side library surface for the CLI: list runs, a run's status, export a run."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ..errors import StoreError
from .codec import ITEM_COLUMNS
from .lease import MACHINE, SELECT_LEASE, Lease, iso
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
    rows = _rows(conn, "SELECT * FROM runs WHERE id = ? OR name = ? ORDER BY id = ? DESC",
                 (run, run, run))
    if not rows:
        raise StoreError(f"no run {run!r} in {path}")
    row = rows[0]
    row["settings"] = json.loads(row["settings"]) if row["settings"] else {}
    row["totals"] = json.loads(row["totals"]) if row["totals"] else None
    return row


def list_runs(db: DbSpec) -> list[dict[str, Any]]:
    """Every run, newest first: id, name, created, status, finished, items recorded.

    ``status`` is the run's state now (a ``running`` run whose owner died is
    ``interrupted``); ``status_detail`` says why, ``recorded_status`` is the stored value.
    """
    with _connection(db) as (conn, path), errors_named(path):
        runs = _rows(conn, """
            SELECT r.id, r.name, r.created, r.status, r.finished,
                   json_extract(r.totals, '$.reason') AS reason,
                   (SELECT count(*) FROM items i WHERE i.run_id = r.id) AS items,
                   (SELECT count(*) FROM items i WHERE i.run_id = r.id AND i.status = 'ok')
                       AS ok
            FROM runs r ORDER BY r.created DESC, r.rowid DESC""")
        for run in runs:
            _owner(conn, path, run, run.pop("reason"))
        return runs


def run_status(db: DbSpec, run: str) -> dict[str, Any]:
    """One run (by id or name): its row, settings, totals, item counts by status, and its
    owner (the lease: host, pid, since); ``status`` as in :func:`list_runs`."""
    with _connection(db) as (conn, path), errors_named(path):
        info = _find_run(conn, path, run)
        totals = info["totals"] if isinstance(info["totals"], dict) else {}
        _owner(conn, path, info, totals.get("reason"))
        counts = dict(conn.execute(
            "SELECT status, count(*) FROM items WHERE run_id = ? GROUP BY status",
            (info["id"],)).fetchall())
        agg = _rows(conn, """
            SELECT count(*) AS recorded, sum(attempts) AS attempts,
                   sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                   avg(latency) AS mean_latency, min(started) AS first_started,
                   max(finished) AS last_finished
            FROM items WHERE run_id = ?""", (info["id"],))[0]
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


def export_run(db: DbSpec, run: str, fmt: str = "jsonl",
               out: str | os.PathLike[str] | TextIO | None = None) -> int:
    """Write a run's outcomes in input order as JSONL or CSV to ``out`` (path, file, stdout).

    In CSV the value column holds the value's JSON text. Returns the number of rows.
    """
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"export format must be 'jsonl' or 'csv', not {fmt!r}")
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
            writer.writerow(EXPORT_COLUMNS)
        for row in iter_outcomes(db, run):
            if writer is not None:
                if row["value"] is not None:
                    row["value"] = json.dumps(row["value"], ensure_ascii=False)
                writer.writerow([row[c] for c in EXPORT_COLUMNS])
            else:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        return n


def export_text(db: DbSpec, run: str, fmt: str = "jsonl") -> str:
    """:func:`export_run` into a string (small runs, tests)."""
    buf = io.StringIO()
    export_run(db, run, fmt, buf)
    return buf.getvalue()
