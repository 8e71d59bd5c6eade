"""Opening the database: file mode 0600, WAL, the schema, and clear errors naming the path."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from ..errors import ConfigError, StoreError

SCHEMA_VERSION = 1
MEMORY = ":memory:"

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
    if "locked" in low or "busy" in low:
        text = (f"checkpoint database {path} is locked by another process or connection "
                f"({msg}); wait for it to finish or use another store path")
    elif "not a database" in low or "malformed" in low or "corrupt" in low:
        text = (f"checkpoint database {path} is corrupt or not a SQLite file ({msg}); "
                f"move it away or pass another store path")
    elif "unable to open" in low or "readonly" in low or "permission" in low:
        text = f"cannot open checkpoint database {path} ({msg}); check the path and permissions"
    else:
        text = f"checkpoint database {path}: {msg}"
    err = StoreError(text)
    err.__cause__ = exc
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
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
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
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        except BaseException:
            conn.close()
            raise
    return conn


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables, indexes and the ``run_metrics`` view if they are missing."""
    with errors_named(path):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"checkpoint database {path} has schema version {version}; "
                             f"this throttlepool understands {SCHEMA_VERSION}: upgrade it")
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
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
                 "finished": float},
                pk=("run_id", "idx"), not_null={"key", "status"}, if_not_exists=True,
            )
            db["cache"].create(  # type: ignore[union-attr]
                {"key": str, "value": str, "created": float},
                pk="key", not_null={"value", "created"}, if_not_exists=True,
            )
            conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS runs_name ON runs(name)")
            conn.execute(f"CREATE VIEW IF NOT EXISTS run_metrics AS {RUN_METRICS_VIEW}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def open_connection(path: str, *, timeout: float = 10.0,
                    synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Connect, check the file really is a database, and make sure the schema exists."""
    if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ConfigError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
    conn = connect(path, timeout=timeout, synchronous=synchronous.upper())
    try:
        ensure_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn
