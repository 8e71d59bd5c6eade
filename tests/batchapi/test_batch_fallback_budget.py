"""fallback="online": requests whose batches keep expiring are called online, under the
rate limiter, into the same checkpoint at the online price; max_cost in batch mode submits
nothing whose projected batch cost would pass the cap, and a resume with a higher cap goes
on without submitting anything twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from throttlepool.adapters.anthropic import AnthropicAdapter
from throttlepool.adapters.openai import OpenAIAdapter
from throttlepool.batchapi import BatchApiRunner, BatchRequestFailed
from throttlepool.cost.pricing import Pricing
from throttlepool.errors import RunStopped
from throttlepool.sim import Simulator
from throttlepool.sim.anthropic_batches import anthropic_batches_of
from throttlepool.sim.batches import batches_of
from throttlepool.store import SQLiteStore


def _openai(sim: Simulator) -> OpenAIAdapter:
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-fallback")
    return OpenAIAdapter(client, model="gpt-4o-mini", extract="text", max_tokens=20)


def _anthropic(sim: Simulator) -> AnthropicAdapter:
    client = anthropic.Anthropic(base_url=sim.url, api_key="sk-ant-fallback")
    return AnthropicAdapter(client, model="claude-haiku-4-5", max_tokens=20, extract="text")


def _rows(db: Path) -> list[dict[str, Any]]:
    store = SQLiteStore(db)
    try:
        return [dict(r) for r in store.query(
            "SELECT idx, status, attempts, cost FROM items ORDER BY idx")]
    finally:
        store.close()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_expired_requests_fall_back_to_online_calls_in_the_same_checkpoint(
        sim: Simulator, tmp_path: Path, provider: str) -> None:
    log = batches_of(sim) if provider == "openai" else anthropic_batches_of(sim)
    log.configure(delay=5.0, expire_after=0.02)  # every batch expires unanswered
    adapter: Any = _openai(sim) if provider == "openai" else _anthropic(sim)
    path = "/v1/chat/completions" if provider == "openai" else "/v1/messages"
    items = [f"q{i}" for i in range(5)]
    db = tmp_path / "cp.db"
    with BatchApiRunner(adapter, store=str(db), run_name="r", poll_interval=0.02,
                        attempts=2, fallback="online", online={"rpm": 6000}) as runner:
        result = runner.run(items)
    assert result.results == [f"echo: q{i}" for i in range(5)]
    assert len(log.submissions()) == 10  # two batch attempts each, then online
    online = [r for r in sim.requests() if r["path"] == path]
    assert len(online) == 5
    assert [o.attempts for o in result] == [3] * 5  # 2 batches + 1 online call
    price = Pricing(provider, adapter.model)  # the online price, not the batch one
    assert [row["cost"] for row in _rows(db)] == pytest.approx(
        [price.cost(o.usage) for o in result])
    assert [row["status"] for row in _rows(db)] == ["ok"] * 5
    # Without the fallback the same run fails them after the batch attempts.
    with BatchApiRunner(adapter, store=str(tmp_path / "b.db"), poll_interval=0.02,
                        attempts=1) as runner:
        failed = runner.run(["x"])
    assert isinstance(failed[0].error, BatchRequestFailed) and failed[0].attempts == 1


def test_max_cost_submits_no_request_past_the_cap_and_a_higher_cap_resumes(
        sim: Simulator, tmp_path: Path) -> None:
    batches_of(sim).configure(delay=0.05)
    adapter = _openai(sim)
    items = [f"question number {i}" for i in range(12)]
    prices = {"price_in": 2.0, "price_out": 8.0}
    batch = Pricing("openai", "gpt-4o-mini", 2.0, 8.0, "batch")
    projected = []
    for item in items:
        cost = adapter.estimate(item)
        projected.append(batch.estimate(cost.tokens - cost.output, cost.output))
    cap = sum(projected) / 2
    db = tmp_path / "cp.db"
    with BatchApiRunner(adapter, store=str(db), run_name="r", poll_interval=0.02,
                        pricing=prices, max_cost=cap, max_requests=4) as runner:
        result = runner.run(items)
    assert isinstance(result.stopped, RunStopped) and "budget reached" in str(result.stopped)
    sent = Counter(s["custom_id"] for s in batches_of(sim).submissions())
    fits = max(n for n in range(13) if sum(projected[:n]) <= cap * (1 + 1e-9))
    assert sorted(sent) == sorted(f"item-{i}" for i in range(fits)) and fits < len(items)
    spent = sum(row["cost"] for row in _rows(db))
    assert 0 < spent <= cap
    store = SQLiteStore(db)
    try:
        (run,) = store.query("SELECT status FROM runs")
    finally:
        store.close()
    assert run["status"] == "stopped"
    with BatchApiRunner(adapter, store=str(db), run_name="r", poll_interval=0.02,
                        pricing=prices, max_cost=cap * 4, max_requests=4) as runner:
        resumed = runner.run(items)
    assert resumed.all_succeeded and resumed.stats.from_checkpoint == fits
    assert Counter(s["custom_id"] for s in batches_of(sim).submissions()) == Counter(
        f"item-{i}" for i in range(12))
