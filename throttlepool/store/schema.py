"""Opening the database: file mode 0600, WAL, an integrity check, the schema (and its
migrations), and clear errors naming the path."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from ..errors import CheckpointDamaged, ConfigError, StoreError

# 1: runs, items, cache (0.1). 2: leases (one owning process per run). 3: samples (a run's
# counters about once a second, for its report). 4: cost (USD) per item and per sample.
# 5: an item's time to first token (ttft, seconds; streamed calls only).
SCHEMA_VERSION = 5
MEMORY = ":memory:"

LEASES_TABLE = """
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    machine TEXT NOT NULL,
    pid INTEGER NOT NULL,
    token TEXT NOT NULL,
    since TEXT NOT NULL,
    heartbeat REAL NOT NULL,
    expires REAL NOT NULL,
    released REAL
)
"""
SAMPLES_TABLE = """
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL,
    session REAL NOT NULL,
    t REAL NOT NULL,
    done INTEGER, failed INTEGER, not_attempted INTEGER, calls INTEGER, retries INTEGER,
    rate_limited INTEGER, rate_limit_wait REAL, input_tokens INTEGER, output_tokens INTEGER,
    cache_hits INTEGER, from_checkpoint INTEGER, in_flight INTEGER, retrying INTEGER,
    cost_usd REAL
)
"""
SAMPLES_INDEX = "CREATE INDEX IF NOT EXISTS samples_run ON samples(run_id, session, t)"
_DAMAGE_WORDS = ("not a database", "malformed", "corrupt")

RUN_METRICS_VIEW = """
SELECT id, name, status, created, finished,
       json_extract(totals, '$.total') AS total,
       json_extract(totals, '$.done') AS done,
       json_extract(totals, '$.failed') AS failed,
       json_extract(totals, '$.calls') AS calls,
       json_extract(totals, '$.retries') AS retries,
       json_extract(totals, '$.rate_limited') AS rate_limited,
       json_extract(totals, '$.breaker_trips') AS breaker_trips,
       json_extract(totals, '$.cache_hits') AS cache_hits,
       json_extract(totals, '$.from_checkpoint') AS from_checkpoint,
       json_extract(totals, '$.input_tokens') AS input_tokens,
       json_extract(totals, '$.output_tokens') AS output_tokens,
       json_extract(totals, '$.cost_usd') AS cost_usd,
       json_extract(totals, '$.cost_unknown') AS cost_unknown,
       json_extract(totals, '$.wall_time') AS wall_time,
       json_extract(totals, '$.throughput') AS throughput
FROM runs
"""


def parse_spec(spec: str | os.PathLike[str]) -> str:
    """The filesystem path (or ``:memory:``) of a ``path`` or ``sqlite:///path`` spec."""
    s = os.fspath(spec)
    if s.startswith("sqlite:///"):
        s = s[len("sqlite:///"):]
        # sqlite:////abs/path keeps its leading slash; sqlite:///rel/path is relative.
    elif s.startswith("sqlite://"):
        s = s[len("sqlite://"):]
    if not s:
        raise StoreError(f"empty database path in store spec {os.fspath(spec)!r}")
    return s


def describe(exc: BaseException, path: str) -> StoreError:
    """A :class:`StoreError` that names ``path`` and says what to do about ``exc``."""
    msg = str(exc)
    low = msg.lower()
    if any(word in low for word in _DAMAGE_WORDS):
        return damaged(path, msg, exc)
    if "locked" in low or "busy" in low:
        text = (f"checkpoint database {path} is locked by another process or connection "
                f"({msg}); wait for it to finish or use another store path")
    elif "unable to open" in low or "readonly" in low or "permission" in low:
        text = f"cannot open checkpoint database {path} ({msg}); check the path and permissions"
    else:
        text = f"checkpoint database {path}: {msg}"
    err = StoreError(text)
    err.__cause__ = exc
    return err


def damaged(path: str, detail: str, cause: BaseException | None = None) -> CheckpointDamaged:
    """A :class:`CheckpointDamaged` naming ``path``, what is wrong, and how to recover."""
    err = CheckpointDamaged(
        f"checkpoint database {path} is damaged (corrupt or not a SQLite file: {detail}). "
        f"A damaged checkpoint can hide recorded outcomes and have them paid for again, so "
        f"no call is made with it. To keep what it recorded, move it aside (with its -wal "
        f"and -shm files) and rebuild it: mv {path} {path}.damaged && sqlite3 "
        f"{path}.damaged .dump | sqlite3 {path} (or .recover if .dump fails), then run the "
        f"same command again; to start over, pass another --db path")
    err.__cause__ = cause
    return err


@contextlib.contextmanager
def errors_named(path: str) -> Iterator[None]:
    """Turn sqlite3 errors raised inside the block into a :class:`StoreError` naming ``path``."""
    try:
        yield
    except sqlite3.Error as exc:
        raise describe(exc, path) from exc


def _create_private(path: str) -> None:
    # Create the file ourselves so it is born 0600: sqlite would create it 0644 (umask), and
    # it gives its -wal and -shm files the same mode as the main file.
    p = Path(path)
    if p.exists():
        return
    if not p.parent.is_dir():  # a typo'd directory is not made silently; the default has none
        raise StoreError(f"cannot create checkpoint database {path}: the directory "
                         f"{p.parent} does not exist (create it first)")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def connect(path: str, *, timeout: float, synchronous: str) -> sqlite3.Connection:
    """An autocommit connection usable from any thread (callers serialise access)."""
    if path != MEMORY:
        with errors_named(path):
            try:
                _create_private(path)
            except OSError as exc:
                raise describe(exc, path) from exc
    with errors_named(path):
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if path != MEMORY:
                _switch_to_wal(conn, timeout)
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        except BaseException:
            conn.close()
            raise
    return conn


def _switch_to_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode, waiting up to ``timeout`` for other processes opening it.

    The switch needs the file to itself, and SQLite does not run the busy handler for it:
    processes opening a fresh file at once got "database is locked" at once (2 copies of one
    run, in a full test run; 5 of 30 rounds of 6 processes on this project's test machine).
    WAL stays set in the file, so once any process has switched it the others find it so
    and take no lock for it.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            low = str(exc).lower()
            if ("locked" not in low and "busy" not in low) or time.monotonic() >= deadline:
                raise
            mode = None
        if mode is not None and str(mode).lower() == "wal":
            return
        if time.monotonic() >= deadline:
            raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode={mode})")
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def check_integrity(conn: sqlite3.Connection, path: str) -> None:
    """Raise :class:`CheckpointDamaged` unless ``PRAGMA integrity_check`` finds the file sound.

    ``quick_check`` is not enough: a few random bytes in an index cell leave every page
    well-formed, yet ``runs_name`` no longer finds the run, and a resume would start it
    again. ``integrity_check`` also matches every index against its table. It reads the
    whole file: about 0.1 s warm, 0.5 s cold, for 100,000 recorded items (docs/persistence.md).
    """
    with errors_named(path):
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check(5)").fetchall()]
    if problems != ["ok"]:
        raise damaged(path, "; ".join(" ".join(str(p).split()) for p in problems)[:300])


def _create_v1(conn: sqlite3.Connection) -> None:
    db = sqlite_utils.Database(conn)
    db["runs"].create(  # type: ignore[union-attr]
        {"id": str, "name": str, "created": str, "settings": str, "status": str,
         "totals": str, "finished": str},
        pk="id", not_null={"created", "status"}, if_not_exists=True,
    )
    db["items"].create(  # type: ignore[union-attr]
        {"run_id": str, "idx": int, "key": str, "status": str, "value": str,
         "error_type": str, "error_message": str, "attempts": int, "latency": float,
         "input_tokens": int, "output_tokens": int, "started": float,
         "finished": float, "cost": float},
        pk=("run_id", "idx"), not_null={"key", "status"}, if_not_exists=True,
    )
    db["cache"].create(  # type: ignore[union-attr]
        {"key": str, "value": str, "created": float},
        pk="key", not_null={"value", "created"}, if_not_exists=True,
    )
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS runs_name ON runs(name)")
    conn.execute(f"CREATE VIEW IF NOT EXISTS run_metrics AS {RUN_METRICS_VIEW}")


# Columns added after the table was first created: (table, column, type).
ADDED_COLUMNS = (("items", "cost", "REAL"), ("samples", "cost_usd", "REAL"),
                 ("items", "ttft", "REAL"))


def _add_columns(conn: sqlite3.Connection) -> None:
    for table, column, kind in ADDED_COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    # The view names its columns: rebuilt so that it shows the new totals too.
    conn.execute("DROP VIEW IF EXISTS run_metrics")
    conn.execute(f"CREATE VIEW run_metrics AS {RUN_METRICS_VIEW}")


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables, indexes and view if missing; migrate an older file in place.

    Every step is ``IF NOT EXISTS``, so a file rebuilt with ``.dump`` (which drops
    ``user_version``) is brought back to the current version without losing a row.
    """
    with errors_named(path):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"checkpoint database {path} has schema version {version}; "
                             f"this throttlepool understands {SCHEMA_VERSION}: upgrade it")
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            _create_v1(conn)
            conn.execute(LEASES_TABLE)
            conn.execute(SAMPLES_TABLE)
            conn.execute(SAMPLES_INDEX)
            _add_columns(conn)  # v3 -> v4: an item's cost, a sample's; v4 -> v5: ttft
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def open_connection(path: str, *, timeout: float = 10.0, synchronous: str = "NORMAL",
                    check: bool = True) -> sqlite3.Connection:
    """Connect, check the file is a sound database (``check``), and migrate its schema.

    The check comes before any write, so a damaged file is never written to.
    """
    if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ConfigError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
    conn = connect(path, timeout=timeout, synchronous=synchronous.upper())
    try:
        if check and path != MEMORY:
            check_integrity(conn, path)
        ensure_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn
