"""Store-level tests: record/flush/reopen, resume, mismatch, upserts, reports, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from throttlepool.errors import CheckpointMismatch, StoreError
from throttlepool.outcome import Outcome, RunStats, Source, Status, Usage
from throttlepool.store import (
    SQLiteStore,
    StoredError,
    export_run,
    item_key,
    list_runs,
    open_cache,
    open_store,
    run_status,
    to_jsonable,
)
from throttlepool.store.base import Store

IDENT = {"fn": "tests.echo", "model": "m1"}


def ok(i: int, value: Any = None, **kw: Any) -> Outcome[Any]:
    return Outcome(i, f"item-{i}", Status.OK, value={"n": i} if value is None else value,
                   attempts=1, latency=0.01, key=item_key(IDENT, f"item-{i}"), **kw)


def failed(i: int, exc: BaseException) -> Outcome[Any]:
    return Outcome(i, f"item-{i}", Status.FAILED, error=exc, attempts=3, latency=0.5,
                   key=item_key(IDENT, f"item-{i}"))


def key(i: int) -> str:
    return item_key(IDENT, f"item-{i}")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "runs.db")


def test_is_a_store(db: str) -> None:
    with SQLiteStore(db) as s:
        assert isinstance(s, Store)


def test_record_flush_reopen_round_trip(db: str) -> None:
    with SQLiteStore(db) as s:
        rid = s.begin_run("r", {"batch_size": 8})
        s.record(rid, ok(0, usage=Usage(10, 20)))
        s.record(rid, ok(1, value=[1, "two", None, 3.5]))
        s.record(rid, failed(2, TimeoutError("took too long")))
        s.flush()
    with SQLiteStore(db) as s:
        assert s.begin_run("r", {"batch_size": 8}) == rid
        o0 = s.prior(rid, 0, key(0))
        assert o0 is not None
        assert (o0.status, o0.value, o0.source, o0.attempts) == (
            Status.OK, {"n": 0}, Source.CHECKPOINT, 1)
        assert o0.usage == Usage(10, 20)
        assert o0.key == key(0) and o0.index == 0 and o0.error is None
        o1 = s.prior(rid, 1, key(1))
        assert o1 is not None and o1.value == [1, "two", None, 3.5]
        o2 = s.prior(rid, 2, key(2))
        assert o2 is not None and o2.status is Status.FAILED
        assert isinstance(o2.error, StoredError)
        assert o2.error.type_name == "TimeoutError"
        assert o2.error.message == "took too long"
        assert str(o2.error) == "TimeoutError: took too long"
        assert s.prior(rid, 3, key(3)) is None


def test_unnamed_runs_are_never_resumed(db: str) -> None:
    with SQLiteStore(db) as s:
        a = s.begin_run(None, {})
        s.record(a, ok(0))
        s.flush()
        b = s.begin_run(None, {})
        assert a != b
        assert s.prior(b, 0, key(0)) is None


def test_not_attempted_and_checkpoint_outcomes_are_not_recorded(db: str) -> None:
    with SQLiteStore(db) as s:
        rid = s.begin_run("r", {})
        s.record(rid, Outcome(0, "x", Status.NOT_ATTEMPTED, key=key(0)))
        loaded = ok(1)
        loaded.source = Source.CHECKPOINT
        s.record(rid, loaded)
        s.flush()
        assert s.query("SELECT count(*) AS n FROM items")[0]["n"] == 0


def test_mismatch_names_index_and_run(db: str) -> None:
    with SQLiteStore(db) as s:
        rid = s.begin_run("nightly", {"model": "m1"})
        for i in range(20):
            s.record(rid, ok(i))
        s.flush()
    with SQLiteStore(db) as s:
        rid = s.begin_run("nightly", {"model": "m1"})
        assert s.prior(rid, 16, key(16)) is not None
        with pytest.raises(CheckpointMismatch) as e:
            s.prior(rid, 17, item_key(IDENT, "something else"))
        msg = str(e.value)
        assert "record 18 (index 17)" in msg and "'nightly'" in msg and "run-name" in msg
    with SQLiteStore(db) as s:
        rid = s.begin_run("nightly", {"model": "m2"})
        with pytest.raises(CheckpointMismatch, match=r"model 'm1' -> 'm2'"):
            s.prior(rid, 0, item_key({**IDENT, "model": "m2"}, "item-0"))


def test_group_commit_upserts_each_index_once(db: str) -> None:
    with SQLiteStore(db, group_size=16, flush_interval=10.0) as s:
        rid = s.begin_run("r", {})
        for i in range(100):
            s.record(rid, failed(i % 10, ValueError("first")))
        for i in range(10):
            s.record(rid, ok(i))
        s.flush()
        rows = s.query("SELECT idx, status, count(*) AS n FROM items GROUP BY idx")
        assert [r["n"] for r in rows] == [1] * 10
        assert {r["status"] for r in rows} == {"ok"}
        assert s.writer.rows == 110 and s.writer.commits >= 1


def test_flush_interval_commits_without_flush(db: str) -> None:
    # The writer commits a partial group by itself once the interval passes.
    import time

    with SQLiteStore(db, group_size=1000, flush_interval=0.01) as s:
        rid = s.begin_run("r", {})
        s.record(rid, ok(0))
        deadline = time.monotonic() + 5
        while s.writer.commits == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert s.writer.commits == 1


def test_max_pending_bounds_uncommitted(db: str) -> None:
    with SQLiteStore(db, group_size=8, max_pending=32) as s:
        assert s.writer.max_pending == 32
        rid = s.begin_run("r", {})
        for i in range(500):
            s.record(rid, ok(i))
        s.flush()
        assert s.query("SELECT count(*) AS n FROM items")[0]["n"] == 500


@dataclasses.dataclass
class Point:
    x: int
    y: list[int]


class Opaque:
    pass


def test_values_are_json_and_unencodable_values_keep_their_row(db: str) -> None:
    from pydantic import BaseModel

    class Answer(BaseModel):
        text: str
        score: float

    with SQLiteStore(db) as s:
        rid = s.begin_run("r", {})
        s.record(rid, ok(0, value=Answer(text="hi", score=0.5)))
        s.record(rid, ok(1, value=Point(1, [2, 3])))
        s.record(rid, ok(2, value=Opaque()))
        s.record(rid, ok(3, value=b"\x00\x01"))
        s.flush()
        s.begin_run("r", {})
        assert s.prior(rid, 0, key(0)).value == {"text": "hi", "score": 0.5}  # type: ignore[union-attr]
        assert s.prior(rid, 1, key(1)).value == {"x": 1, "y": [2, 3]}  # type: ignore[union-attr]
        bad = s.prior(rid, 2, key(2))
        assert bad is not None and bad.status is Status.FAILED
        assert isinstance(bad.error, StoredError)
        assert bad.error.type_name == "throttlepool.UnencodableValue"
        assert "Opaque" in bad.error.message
        assert s.prior(rid, 3, key(3)).value == "AAE="  # type: ignore[union-attr]
        raw = Path(db).read_bytes() + Path(db + "-wal").read_bytes()
        assert b"pickle" not in raw and b"\x80\x04" not in raw


def test_to_jsonable_rejects_what_it_cannot_encode() -> None:
    assert to_jsonable({"a": (1, 2), "b": {3}}) == {"a": [1, 2], "b": [3]}
    with pytest.raises(TypeError):
        to_jsonable(float("nan"))
    with pytest.raises(TypeError):
        to_jsonable(object())


def test_finish_run_totals_are_queryable(db: str) -> None:
    with SQLiteStore(db) as s:
        rid = s.begin_run("r", {})
        s.record(rid, ok(0))
        stats = RunStats(total=1, done=1, calls=3, retries=2, rate_limited=1, breaker_trips=1,
                         cache_hits=0, wall_time=0.5)
        s.finish_run(rid, stats, "completed")
        s.flush()
        m = s.query("SELECT * FROM run_metrics WHERE id = ?", (rid,))[0]
        assert (m["calls"], m["retries"], m["rate_limited"], m["breaker_trips"]) == (3, 2, 1, 1)
        assert m["throughput"] == 2.0 and m["status"] == "completed"


def test_reports_list_status_export_in_input_order(db: str, tmp_path: Path) -> None:
    with SQLiteStore(db) as s:
        rid = s.begin_run("r", {"model": "m"})
        for i in (3, 0, 2):
            s.record(rid, ok(i))
        s.record(rid, failed(1, RuntimeError("boom")))
        s.finish_run(rid, RunStats(done=3, failed=1), "completed")
    runs = list_runs(db)
    assert [(r["name"], r["items"], r["ok"]) for r in runs] == [("r", 4, 3)]
    st = run_status(db, "r")
    assert st["id"] == rid and st["counts"] == {"ok": 3, "failed": 1}
    assert st["totals"]["done"] == 3 and st["status"] == "completed"
    assert st["errors"] == [{"error_type": "RuntimeError", "n": 1}]
    out = tmp_path / "o.jsonl"
    assert export_run(db, rid, "jsonl", out) == 4
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[1]["error"] == "boom" and rows[2]["output"] == {"n": 2}
    csv_out = tmp_path / "o.csv"
    assert export_run(db, "r", "csv", csv_out) == 4
    lines = csv_out.read_text().splitlines()
    assert lines[0].startswith("index,line,status,output") and lines[1].startswith("0,")
    with pytest.raises(StoreError, match="no run 'nope'"):
        run_status(db, "nope")


def test_open_store_and_open_cache_specs(tmp_path: Path) -> None:
    assert open_store(None) is None
    s = open_store(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(s, SQLiteStore) and s.path == f"{tmp_path}/a.db"
    assert open_store(s) is s
    c = open_cache(True, s, 60)
    assert c is not None and c.get("k") == (False, None)
    assert open_cache(False, s, None) is None
    s.close()
    m = open_store(":memory:")
    assert isinstance(m, SQLiteStore)
    rid = m.begin_run("x", {})
    m.record(rid, ok(0))
    m.flush()
    assert m.begin_run("x", {}) == rid and m.prior(rid, 0, key(0)) is not None
    m.close()
    mem_cache = open_cache(True, None, None)
    assert mem_cache is not None
    mem_cache.put("k", {"a": 1})
    assert mem_cache.get("k") == (True, {"a": 1})


def test_database_file_is_owner_only(db: str) -> None:
    with SQLiteStore(db) as s:
        rid = s.begin_run("r", {})
        s.record(rid, ok(0))
        s.flush()
        for suffix in ("", "-wal", "-shm"):
            assert os.stat(db + suffix).st_mode & 0o777 == 0o600, suffix


def test_corrupt_file_gives_store_error_naming_path(db: str) -> None:
    Path(db).write_bytes(b"this is not a sqlite database at all" * 200)
    with pytest.raises(StoreError, match=r"corrupt or not a SQLite file") as e:
        SQLiteStore(db)
    assert db in str(e.value)


def test_locked_database_gives_store_error_naming_path(db: str) -> None:
    SQLiteStore(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked") as e:
            s = SQLiteStore(db, timeout=0.05)
            s.begin_run("r", {})
        assert db in str(e.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_newer_schema_is_refused(db: str) -> None:
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteStore(db)


_WRITER = textwrap.dedent("""
    import sys
    from throttlepool.outcome import Outcome, Status
    from throttlepool.store import SQLiteStore, item_key
    path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with SQLiteStore(path, group_size=32, flush_interval=0.001) as s:
        rid = s.begin_run(name, {"who": name})
        for i in range(n):
            k = item_key({"p": name}, i)
            s.record(rid, Outcome(i, i, Status.OK, value={"p": name, "i": i}, key=k))
""")


def test_two_processes_writing_one_file_do_not_corrupt_it(db: str) -> None:
    n = 3000
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, db, name, str(n)])
             for name in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = dict(conn.execute(
        "SELECT r.name, count(*) FROM items i JOIN runs r ON r.id = i.run_id GROUP BY r.name"))
    assert counts == {"a": n, "b": n}
    conn.close()
