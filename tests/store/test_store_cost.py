"""Issue 15, item 1: each item's cost in the checkpoint (schema 4, migrated from 3), the run's
in status and export; computed by the store from the run's recorded settings."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from throttlepool.outcome import Outcome, Status, Usage
from throttlepool.store import SQLiteStore, list_runs, run_status
from throttlepool.store.report import export_rows
from throttlepool.store.schema import SCHEMA_VERSION

OPENAI = {"adapter": "openai", "identity": {"provider": "openai", "model": "gpt-4o-mini"}}

# The schema as version 3 wrote it (no cost column, no cost_usd sample).
V3 = """
CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT, created TEXT NOT NULL, settings TEXT,
    status TEXT NOT NULL, totals TEXT, finished TEXT);
CREATE TABLE items (run_id TEXT, idx INTEGER, key TEXT NOT NULL, status TEXT NOT NULL,
    value TEXT, error_type TEXT, error_message TEXT, attempts INTEGER, latency FLOAT,
    input_tokens INTEGER, output_tokens INTEGER, started FLOAT, finished FLOAT,
    PRIMARY KEY (run_id, idx));
CREATE TABLE cache (key TEXT PRIMARY KEY, value TEXT NOT NULL, created FLOAT NOT NULL);
CREATE UNIQUE INDEX runs_name ON runs(name);
CREATE TABLE leases (run_id TEXT PRIMARY KEY, host TEXT NOT NULL, machine TEXT NOT NULL,
    pid INTEGER NOT NULL, token TEXT NOT NULL, since TEXT NOT NULL, heartbeat REAL NOT NULL,
    expires REAL NOT NULL, released REAL);
CREATE TABLE samples (run_id TEXT NOT NULL, session REAL NOT NULL, t REAL NOT NULL,
    done INTEGER, failed INTEGER, not_attempted INTEGER, calls INTEGER, retries INTEGER,
    rate_limited INTEGER, rate_limit_wait REAL, input_tokens INTEGER, output_tokens INTEGER,
    cache_hits INTEGER, from_checkpoint INTEGER, in_flight INTEGER, retrying INTEGER);
CREATE INDEX samples_run ON samples(run_id, session, t);
CREATE VIEW run_metrics AS SELECT id, name, status FROM runs;
PRAGMA user_version = 3;
"""


def ok(index: int, usage: Usage | None, item: object = None) -> Outcome[str]:
    return Outcome(index, item, Status.OK, f"v{index}", attempts=1, latency=0.1, usage=usage,
                   key=f"k{index}")


def make_v3(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V3)
    conn.execute("INSERT INTO runs VALUES ('run-old', 'old', '2025-01-01T00:00:00+00:00', ?, "
                 "'completed', '{\"total\": 1}', '2025-01-01T00:01:00+00:00')",
                 (json.dumps(OPENAI),))
    conn.execute("INSERT INTO items VALUES ('run-old', 0, 'k0', 'ok', '\"v0\"', NULL, NULL, 1, "
                 "0.5, 10, 20, 100.0, 100.5)")
    conn.commit()
    conn.close()


def test_v3_checkpoint_is_migrated_to_v4_keeping_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    make_v3(db)
    with SQLiteStore(db) as store:
        assert store.query("PRAGMA user_version")[0]["user_version"] == SCHEMA_VERSION >= 4
        cols = {r["name"] for r in store.query("PRAGMA table_info(items)")}
        assert "cost" in cols
        assert "cost_usd" in {r["name"] for r in store.query("PRAGMA table_info(samples)")}
        rows = store.query("SELECT idx, value, input_tokens, cost FROM items")
        assert rows == [{"idx": 0, "value": '"v0"', "input_tokens": 10, "cost": None}]
        assert "cost_usd" in store.query("SELECT * FROM run_metrics")[0]
        # The migrated run goes on: a resumed item is priced and recorded next to the old one.
        run_id = store.begin_run("old", OPENAI)
        assert store.prior(run_id, 0, "k0") is not None
        store.record(run_id, ok(1, Usage(1000, 1000)))
        store.flush()
        # The old item was recorded without a cost: it stays unknown, never $0.
        assert store.recorded_cost(run_id) == (pytest.approx(0.00075), 1)
    # Opening it again changes nothing (already current).
    with SQLiteStore(db) as store:
        assert len(store.query("SELECT * FROM items")) == 2


def test_store_prices_each_item_from_the_runs_settings(tmp_path: Path) -> None:
    settings = {**OPENAI, "pricing": {"price_in": 2, "price_out": 8}}
    with SQLiteStore(tmp_path / "c.db") as store:
        run_id = store.begin_run("priced", settings)
        store.record(run_id, ok(0, Usage(1000, 500)))
        store.record(run_id, ok(1, Usage(3000, 0)))
        store.record(run_id, ok(2, None))  # a call without usage: nothing to price
        store.flush()
        costs = [r["cost"] for r in store.query("SELECT cost FROM items ORDER BY idx")]
        assert costs == [pytest.approx(0.006), pytest.approx(0.006), None]
        status = run_status(store, "priced")
        resumed = store.begin_run("priced", settings)
        again = store.prior(resumed, 0, "k0")
        assert again is not None and again.cost == pytest.approx(0.006)
    assert status["items"]["cost_usd"] == pytest.approx(0.012)
    assert status["items"]["cost_unknown"] == 0


def test_unknown_model_is_recorded_as_unknown_not_zero(tmp_path: Path) -> None:
    settings = {"adapter": "openai", "identity": {"provider": "openai", "model": "sim-model"}}
    with SQLiteStore(tmp_path / "u.db") as store:
        run_id = store.begin_run("unknown", settings)
        store.record(run_id, ok(0, Usage(10, 10)))
        # A record naming a known model of its own is priced as that model.
        store.record(run_id, ok(1, Usage(1000, 1000), {"model": "gpt-4o-mini"}))
        store.flush()
        assert store.recorded_cost(run_id) == (pytest.approx(0.00075), 1)
        [run] = list_runs(store)
        status = run_status(store, "unknown")
        _, rows = export_rows(store, "unknown")
        exported = list(rows)
    assert run["cost_usd"] == pytest.approx(0.00075) and run["cost_unknown"] == 1
    assert status["items"]["cost_unknown"] == 1
    assert [r["cost_usd"] for r in exported] == [None, pytest.approx(0.00075)]


def test_run_without_usage_has_no_cost(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "n.db") as store:
        run_id = store.begin_run("plain", {"adapter": "f", "identity": {"callable": "m:f"}})
        store.record(run_id, ok(0, None))
        store.flush()
        [run] = list_runs(store)
    assert run["cost_usd"] is None and run["cost_unknown"] == 0
