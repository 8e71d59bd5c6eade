"""``max_cost`` end to end: a real run against the simulator's OpenAI endpoint (which reports
usage) stops as ``budget reached`` within its cap, and a resume with a higher cap calls only
the items left.

The bound the product guarantees: a call is admitted only while what was spent plus what
the calls in flight reserved plus its own estimate fit the cap, and each reservation is
settled to the call's usage. The OpenAI estimate (prompt tokens by the model's tokenizer plus
``max_tokens``) is an upper bound of what the simulator bills for these prompts, so the spend
recorded never passes ``max_cost``, in-flight calls included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from throttlepool import ThreadedBatchRunner
from throttlepool.adapters.openai import OpenAIAdapter
from throttlepool.cost import Pricing
from throttlepool.errors import ConfigError
from throttlepool.options import Budget
from throttlepool.sim import Simulator
from throttlepool.store import open_store
from throttlepool.store.report import list_runs

ITEMS = [f"question {i}: what is {i} plus {i}?" for i in range(30)]


def _adapter(sim: Simulator, model: str = "gpt-4o-mini") -> OpenAIAdapter:
    client = openai.OpenAI(api_key="k-budget", base_url=sim.openai_base_url, max_retries=0)
    return OpenAIAdapter(client, model=model, max_tokens=20)


def _asked(sim: Simulator) -> list[Any]:
    return [r["body"]["messages"][-1]["content"] for r in sim.requests()
            if r["path"].endswith("/chat/completions")]


def test_a_capped_run_stops_within_its_budget_and_a_higher_cap_finishes_it(
        sim: Simulator, tmp_path: Path) -> None:
    adapter = _adapter(sim)
    pricing = Pricing("openai", "gpt-4o-mini")
    estimate = adapter.estimate(ITEMS[0])
    per_call = pricing.estimate(estimate.tokens - estimate.output, estimate.output)
    assert per_call is not None
    cap = 5 * per_call  # room for a handful of calls, far from all 30
    db = tmp_path / "budget.db"

    with ThreadedBatchRunner(adapter, batch_size=2, retries=0, progress=False, store=str(db),
                             run_name="capped", max_cost=cap) as runner:
        first = runner.run(ITEMS)
    called = _asked(sim)
    assert 5 <= len(called) < len(ITEMS)
    assert first.stopped is not None and "budget reached" in str(first.stopped)
    done = [o.item for o in first.outcomes if o.ok]
    assert sorted(done) == sorted(called)  # every call answered and recorded, none repeated
    assert 0 < first.stats.cost_usd <= cap
    [run] = list_runs(db)
    assert run["status"] == "stopped" and "budget reached" in run["status_detail"]
    assert run["ok"] == len(done) and run["cost_usd"] <= cap
    store = open_store(str(db))
    try:
        assert store.recorded_cost(run["id"])[0] <= cap
    finally:
        store.close()

    sim.reset()
    with ThreadedBatchRunner(adapter, batch_size=2, retries=0, progress=False, store=str(db),
                             run_name="capped", budget=Budget(max_cost=100 * cap)) as runner:
        second = runner.run(ITEMS)
    assert second.all_succeeded and second.stopped is None
    assert sorted(_asked(sim)) == sorted(set(ITEMS) - set(done))  # only the remaining ones
    [run] = list_runs(db)
    assert run["status"] == "completed" and run["ok"] == len(ITEMS)


def test_own_prices_are_recorded_and_price_the_run(sim: Simulator, tmp_path: Path) -> None:
    """price_in/price_out replace the table's for the checkpoint and the cost shown."""
    with ThreadedBatchRunner(_adapter(sim, "a-model-without-a-price"), batch_size=2,
                             progress=False, store=str(tmp_path / "own.db"), run_name="own",
                             price_in=1.0, price_out=1000.0, max_cost=10.0) as runner:
        settings = runner.settings()
        result = runner.run(ITEMS[:4])
    assert settings["pricing"] == {"price_in": 1.0, "price_out": 1000.0, "mode": "online"}
    usage = [o.usage for o in result.outcomes]
    expected = sum(u.input_tokens * 1.0 + u.output_tokens * 1000.0 for u in usage if u) / 1e6
    assert result.stats.cost_usd == pytest.approx(expected) and expected > 0


def test_an_unpriced_model_is_refused_before_any_call(sim: Simulator) -> None:
    with pytest.raises(ConfigError, match="max_cost needs a price"):
        ThreadedBatchRunner(_adapter(sim, "a-model-without-a-price"), max_cost=1.0)
    assert _asked(sim) == []


def test_a_call_that_timed_out_keeps_its_estimate_as_spent(sim: Simulator) -> None:
    """A call whose answer never came (the SDK's own read timeout) may still be billed: the
    cap keeps its estimate as spent, as for the runner's own timeout. Given back instead, a
    cap of 1.5 calls let the next call go too."""
    sim.configure(hang_seconds=2.0)
    client = openai.OpenAI(api_key="k-budget", base_url=sim.openai_base_url, max_retries=0,
                           timeout=0.3)
    adapter = OpenAIAdapter(client, model="gpt-4o-mini", max_tokens=20)
    items = ["[[fault:hang]] " + ITEMS[0], ITEMS[1], ITEMS[2]]
    pricing = Pricing("openai", "gpt-4o-mini")
    estimates = [adapter.estimate(x) for x in items]
    per_call = [pricing.estimate(e.tokens - e.output, e.output) for e in estimates]
    assert all(p is not None for p in per_call)
    cap = 1.5 * max(p for p in per_call if p is not None)
    with ThreadedBatchRunner(adapter, batch_size=1, retries=0, breaker=False, progress=False,
                             max_cost=cap) as runner:
        result = runner.run(items)
    assert isinstance(result.errors[0], openai.APITimeoutError)
    assert result.stopped is not None and "budget reached" in str(result.stopped)
    assert len(_asked(sim)) == 1  # the hung call only: its estimate still counts
