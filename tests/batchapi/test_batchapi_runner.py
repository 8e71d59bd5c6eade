"""BatchApiRunner against the simulator with the real openai SDK: input order, retries in a
new batch, permanent failures, chunk limits, the checkpoint, progress, cancel."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest

from throttlepool.adapters.openai import OpenAIAdapter
from throttlepool.batchapi import BatchApiRunner, BatchProgress, BatchRequestFailed
from throttlepool.errors import ConfigError
from throttlepool.outcome import Status
from throttlepool.sim import Simulator
from throttlepool.sim.batches import batches_of
from throttlepool.store import SQLiteStore


def _adapter(sim: Simulator, **kw: Any) -> OpenAIAdapter:
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-runner-test")
    return OpenAIAdapter(client, model=kw.pop("model", "gpt-4o-mini"), **kw)


def _runner(sim: Simulator, db: Path, **kw: Any) -> BatchApiRunner:
    adapter = _adapter(sim, extract=kw.pop("extract", "text"))
    return BatchApiRunner(adapter, store=str(db), run_name="r", poll_interval=0.02, **kw)


def test_every_answer_comes_back_in_input_order_and_is_checkpointed(
        sim: Simulator, tmp_path: Path) -> None:
    batches_of(sim).configure(delay=0.1)
    seen: list[BatchProgress] = []
    items = [f"q{i}" for i in range(23)]
    with _runner(sim, tmp_path / "cp.db", max_requests=10, progress=seen.append) as runner:
        result = runner.run(items)
    assert result.results == [f"echo: q{i}" for i in range(23)]
    assert all(o.usage is not None and o.usage.input_tokens > 0 for o in result)
    assert all(o.cost is not None and o.cost > 0 for o in result)  # batch price, known model
    assert Counter(len(s["custom_id"]) > 0 for s in batches_of(sim).submissions()) == {True: 23}
    assert {s["batch_id"] for s in batches_of(sim).submissions()}.__len__() == 3  # 10+10+3
    assert seen[-1].done == 23 and [v.total for v in seen[-1].batches] == [10, 10, 3]
    assert any(v.status == "in_progress" for p in seen for v in p.batches)
    store = SQLiteStore(tmp_path / "cp.db")
    try:
        rows = store.query("SELECT idx, status, value FROM items ORDER BY idx")
        runs = store.query("SELECT status, settings FROM runs")
    finally:
        store.close()
    assert [(r["idx"], r["status"]) for r in rows] == [(i, "ok") for i in range(23)]
    assert json.loads(rows[5]["value"]) == "echo: q5"
    assert runs[0]["status"] == "completed"
    assert json.loads(runs[0]["settings"])["pricing"]["mode"] == "batch"
    # Run again: everything comes from the checkpoint, nothing is submitted.
    with _runner(sim, tmp_path / "cp.db") as runner:
        again = runner.run(items)
    assert again.results == result.results and again.stats.from_checkpoint == 23
    assert len(batches_of(sim).submissions()) == 23


def test_failed_requests_go_into_a_new_batch_until_they_succeed_or_run_out(
        sim: Simulator, tmp_path: Path) -> None:
    batches_of(sim).configure(delay=0.05, fail_ids={"item-1", "item-4"})
    with _runner(sim, tmp_path / "cp.db") as runner:
        result = runner.run(["a", "b", "c", "d", "e"])
    assert result.all_succeeded
    assert [o.attempts for o in result] == [1, 2, 1, 1, 2]
    submitted = Counter(s["custom_id"] for s in batches_of(sim).submissions())
    assert submitted == {"item-0": 1, "item-1": 2, "item-2": 1, "item-3": 1, "item-4": 2}


def test_a_bad_request_fails_its_item_only_and_expiry_is_retried(
        sim: Simulator, tmp_path: Path) -> None:
    batches_of(sim).configure(delay=0.05)
    items: list[Any] = [{"messages": [{"role": "user", "content": "ok"}]},
                        {"messages": "not a list"}]
    with _runner(sim, tmp_path / "a.db", extract=None) as runner:
        result = runner.run(items)
    assert result[0].ok and result[0].value.choices[0].message.content == "echo: ok"
    assert result[1].status is Status.FAILED
    assert isinstance(result[1].error, BatchRequestFailed) and result[1].error.status == 400
    assert result[1].attempts == 1  # a 400 is not retried
    # Every batch expires before answering: each item is tried `attempts` times, then fails.
    batches_of(sim).configure(delay=5.0, expire_after=0.05)
    with _runner(sim, tmp_path / "b.db", attempts=2) as runner:
        expired = runner.run(["x"])
    assert expired[0].status is Status.FAILED and expired[0].attempts == 2
    assert "batch_expired" in str(expired[0].error)


def test_chunks_respect_the_byte_limit_and_one_model_per_file(
        sim: Simulator, tmp_path: Path) -> None:
    batches_of(sim).configure(delay=0.02)
    items: list[Any] = ["x" * 300, "y" * 300, "z" * 300,
                        {"model": "other-model", "messages": [{"role": "user", "content": "w"}]}]
    with _runner(sim, tmp_path / "cp.db", max_bytes=900) as runner:
        result = runner.run(items)
    assert result.all_succeeded
    batches: dict[str, list[str]] = {}
    for s in batches_of(sim).submissions():
        batches.setdefault(s["batch_id"], []).append(s["body"]["model"])
    assert sorted(len(b) for b in batches.values()) == [1, 1, 2]
    assert all(len(set(models)) == 1 for models in batches.values())


def test_cancel_stops_the_runs_batches_and_bad_settings_are_refused(
        sim: Simulator, tmp_path: Path) -> None:
    batches_of(sim).configure(delay=30.0)
    calls = 0

    def stop_after_first_poll(progress: BatchProgress) -> None:
        nonlocal calls
        calls += 1
        raise KeyboardInterrupt

    with _runner(sim, tmp_path / "cp.db", progress=stop_after_first_poll) as runner:
        result = runner.run(["a", "b"])
        assert result.interrupted and calls == 1
        cancelled = runner.cancel("r")
    (batch_id,) = {s["batch_id"] for s in batches_of(sim).submissions()}
    assert cancelled == [batch_id]
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="k")
    assert client.batches.retrieve(batch_id).status in ("cancelling", "cancelled")
    with pytest.raises(ConfigError, match="method"):
        BatchApiRunner(_adapter(sim, method="moderations.create"), store=str(tmp_path / "x"))
