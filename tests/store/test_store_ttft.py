"""Issue 14 item 4: an item's time to first token (ttft, measured for streamed answers) is
kept in the checkpoint (schema 5, migrated from 4) and comes back on resume and export."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.helpers import read_jsonl, run_cli
from throttlepool.outcome import Outcome, Status, Usage
from throttlepool.sim import Simulator
from throttlepool.store import SQLiteStore
from throttlepool.store.report import export_rows
from throttlepool.store.schema import SCHEMA_VERSION

SETTINGS = {"adapter": "openai", "identity": {"provider": "openai", "model": "gpt-4o-mini"}}

# The items table as version 4 wrote it: a cost, no ttft (the other tables are made anew).
V4_ITEMS = """
CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT, created TEXT NOT NULL, settings TEXT,
    status TEXT NOT NULL, totals TEXT, finished TEXT);
CREATE TABLE items (run_id TEXT, idx INTEGER, key TEXT NOT NULL, status TEXT NOT NULL,
    value TEXT, error_type TEXT, error_message TEXT, attempts INTEGER, latency FLOAT,
    input_tokens INTEGER, output_tokens INTEGER, started FLOAT, finished FLOAT, cost FLOAT,
    PRIMARY KEY (run_id, idx));
CREATE UNIQUE INDEX runs_name ON runs(name);
INSERT INTO runs VALUES ('run-old', 'old', '2025-01-01T00:00:00+00:00', '{}', 'interrupted',
    '{"total": 2}', NULL);
INSERT INTO items VALUES ('run-old', 0, 'k0', 'ok', '"v0"', NULL, NULL, 1, 0.5, 10, 20, 100.0,
    100.5, NULL);
PRAGMA user_version = 4;
"""


def _streamed(index: int, ttft: float | None) -> Outcome[str]:
    return Outcome(index, None, Status.OK, f"v{index}", attempts=1, latency=0.9,
                   usage=Usage(5, 7), key=f"k{index}", ttft=ttft)


def test_a_v4_checkpoint_gains_ttft_and_a_resumed_item_keeps_it(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(V4_ITEMS)
    with SQLiteStore(db) as store:
        assert store.query("PRAGMA user_version")[0]["user_version"] == SCHEMA_VERSION == 5
        run_id = store.begin_run("old", SETTINGS)
        old = store.prior(run_id, 0, "k0")
        assert old is not None and old.value == "v0" and old.ttft is None
        store.record(run_id, _streamed(1, 0.4321))
    with SQLiteStore(db) as store:  # the run resumed once more
        run_id = store.begin_run("old", SETTINGS)
        again = store.prior(run_id, 1, "k1")
        assert again is not None and again.ttft == pytest.approx(0.4321)
    _, rows = export_rows(db, "old")
    assert [row["ttft"] for row in rows] == [None, 0.432]


def test_streamed_ttft_reaches_the_results_then_resume_and_export(sim: Simulator,
                                                                 tmp_path: Path) -> None:
    (tmp_path / "q.txt").write_text("first question\nsecond question\n", encoding="utf-8")
    base = ["run", "q.txt", "-m", "gpt-4o-mini", "--base-url", sim.openai_base_url,
            "--stream", "--db", "c.db", "--run-name", "s", "-q"]
    env = {"OPENAI_API_KEY": "sk-test-ttft"}
    sim.configure(first_token_delay=0.25)
    try:
        first = run_cli([*base, "-o", "first.jsonl"], tmp_path, env=env)
    finally:
        sim.configure(first_token_delay=0.0)
    assert first.returncode == 0, first.stderr
    measured = [row["ttft"] for row in read_jsonl(tmp_path / "first.jsonl")]
    assert all(isinstance(t, float) and t >= 0.25 for t in measured), measured
    # Run again: every item comes from the checkpoint, with the ttft it was measured at.
    again = run_cli([*base, "-o", "again.jsonl"], tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert len(sim.requests()) == 2  # nothing was called again
    assert [row["ttft"] for row in read_jsonl(tmp_path / "again.jsonl")] == measured
    export = run_cli(["export", "s", "--db", "c.db", "-o", "export.jsonl"], tmp_path)
    assert export.returncode == 0, export.stderr
    assert [row["ttft"] for row in read_jsonl(tmp_path / "export.jsonl")] == measured
