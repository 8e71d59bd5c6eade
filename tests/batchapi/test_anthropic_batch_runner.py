"""BatchApiRunner with an AnthropicAdapter against the simulator's Message Batches, with the
real anthropic SDK: input order by custom id, retries in a new batch, usage and the batch
price, a bad request failing only its item, cancel."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anthropic
import pytest

from throttlepool.adapters.anthropic import AnthropicAdapter
from throttlepool.batchapi import BatchApiRunner, BatchProgress, BatchRequestFailed
from throttlepool.cost.pricing import Pricing
from throttlepool.errors import ConfigError
from throttlepool.outcome import Status
from throttlepool.sim import Simulator
from throttlepool.sim.anthropic_batches import anthropic_batches_of
from throttlepool.store import SQLiteStore

MODEL = "claude-haiku-4-5"


def _adapter(sim: Simulator, **kw: Any) -> AnthropicAdapter:
    client = anthropic.Anthropic(base_url=sim.url, api_key="sk-ant-runner")
    return AnthropicAdapter(client, model=MODEL, max_tokens=32, **kw)


def _runner(sim: Simulator, db: Path, **kw: Any) -> BatchApiRunner:
    adapter = _adapter(sim, extract=kw.pop("extract", "text"))
    return BatchApiRunner(adapter, store=str(db), run_name="r", poll_interval=0.02, **kw)


def test_answers_come_back_in_input_order_at_the_batch_price_and_failures_are_retried(
        sim: Simulator, tmp_path: Path) -> None:
    batches = anthropic_batches_of(sim)
    batches.configure(delay=0.1)
    seen: list[BatchProgress] = []
    items = [f"q{i}" for i in range(9)]
    with _runner(sim, tmp_path / "cp.db", max_requests=4, progress=seen.append) as runner:
        ids = [runner.provider.custom_id("x", i) for i in (2, 7)]
        assert ids[0] != ids[1] and ids[0].startswith("tp")
        first = runner.run(items[:1])  # learn the run's custom ids, then fail two of them
        run_id = first.run_id
        assert run_id is not None
        batches.configure(fail_ids={runner.provider.custom_id(run_id, i) for i in (2, 7)})
        result = runner.run(items)
    assert result.results == [f"echo: q{i}" for i in range(9)]
    assert [o.attempts for o in result][1:] == [1, 2, 1, 1, 1, 1, 2, 1]
    assert result.stats.from_checkpoint == 1
    batch_price = Pricing("anthropic", MODEL, mode="batch")
    online_price = Pricing("anthropic", MODEL)
    for outcome in result[1:]:
        assert outcome.usage is not None and outcome.usage.input_tokens > 0
        assert outcome.cost == pytest.approx(batch_price.cost(outcome.usage))
        assert outcome.cost < online_price.cost(outcome.usage)  # type: ignore[operator]
    per_item = Counter(int(s["custom_id"].rsplit("-", 1)[1]) for s in batches.submissions())
    assert per_item == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1, 5: 1, 6: 1, 7: 2, 8: 1}
    sizes = Counter(s["batch_id"] for s in batches.submissions())
    # q0; q1-q4, q5-q8; the two failures retried together, or apart when their batches
    # ended at different polls (seen under load).
    assert sorted(sizes.values()) in ([1, 2, 4, 4], [1, 1, 1, 4, 4])
    assert seen[-1].done == 9 and any(v.status == "in_progress" for p in seen
                                      for v in p.batches)
    store = SQLiteStore(tmp_path / "cp.db")
    try:
        rows = store.query("SELECT idx, status FROM items WHERE run_id = ? ORDER BY idx",
                           (run_id,))
    finally:
        store.close()
    assert [(r["idx"], r["status"]) for r in rows] == [(i, "ok") for i in range(9)]


def test_a_bad_request_fails_its_item_only_and_cancel_stops_the_batch(
        sim: Simulator, tmp_path: Path, interrupt_and_cancel: Any) -> None:
    anthropic_batches_of(sim).configure(delay=0.05)
    items: list[Any] = ["fine", {"messages": "not a list"}]
    with _runner(sim, tmp_path / "a.db", extract=None) as runner:
        result = runner.run(items)
    assert result[0].ok and result[0].value.content[0].text == "echo: fine"
    assert result[1].status is Status.FAILED and result[1].attempts == 1
    assert isinstance(result[1].error, BatchRequestFailed)
    assert result[1].error.code == "invalid_request_error"
    anthropic_batches_of(sim).configure(delay=30.0)
    batch_id = interrupt_and_cancel(lambda **kw: _runner(sim, tmp_path / "b.db", **kw))
    client = anthropic.Anthropic(base_url=sim.url, api_key="k")
    assert client.messages.batches.retrieve(batch_id).processing_status in ("canceling", "ended")
    with pytest.raises(ConfigError, match="method 'messages'"):
        BatchApiRunner(_adapter(sim, method="beta.messages.create"), store=str(tmp_path / "x"))
