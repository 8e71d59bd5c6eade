"""``max_cost`` on Dask: one budget for the whole run, held by the driver, which reserves each
item's projected cost before it sends it and settles it to the answer's usage. A real run on
two worker processes against the simulator's OpenAI endpoint (which reports usage) stops as
``budget reached`` within its cap; a resume with a higher cap calls only the items left.

The OpenAI estimate (prompt tokens plus ``max_tokens``) bounds what the simulator bills for
these prompts, so the spend never passes the cap, the chunks in flight included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from throttlepool import ThreadedBatchRunner
from throttlepool.cost import Pricing
from throttlepool.options import Budget
from throttlepool.sim import SimConfig, Simulator
from throttlepool.store.report import list_runs

pytest.importorskip("distributed")
openai = pytest.importorskip("openai")

ITEMS = [f"question {i}: what is {i} plus {i}?" for i in range(60)]


@pytest.fixture(scope="module")
def dask_warm_modules() -> tuple[str, ...]:
    return ("throttlepool.distributed.chunk", "openai")


def _asked(sim: Simulator) -> list[Any]:
    return [r["body"]["messages"][-1]["content"] for r in sim.requests()
            if r["path"].endswith("/chat/completions")]


def test_a_capped_dask_run_stops_within_its_budget_and_a_higher_cap_finishes_it(
        client: Any, tmp_path: Path) -> None:
    from throttlepool.adapters.openai import OpenAIAdapter

    db = tmp_path / "budget.db"
    with Simulator(SimConfig(latency=0.01)) as sim:
        adapter = OpenAIAdapter(openai.OpenAI(api_key="k-budget", base_url=sim.openai_base_url,
                                              max_retries=0), model="gpt-4o-mini", max_tokens=20)
        estimate = adapter.estimate(ITEMS[0])
        per_call = Pricing("openai", "gpt-4o-mini").estimate(estimate.tokens - estimate.output,
                                                             estimate.output)
        assert per_call is not None
        cap = 12.5 * per_call  # room for a dozen calls, far from all 60

        def run(**budget: Any) -> Any:
            with ThreadedBatchRunner(adapter, executor="dask", scheduler=client, batch_size=2,
                                     retries=0, progress=False, store=str(db),
                                     run_name="capped", **budget) as runner:
                return runner.run(ITEMS)

        first = run(max_cost=cap)
        called = _asked(sim)
        sim.reset()
        second = run(budget=Budget(max_cost=100 * cap))
        called_again = _asked(sim)

    assert 10 <= len(called) < len(ITEMS)
    assert first.stopped is not None and "budget reached" in str(first.stopped)
    done = [o.item for o in first.outcomes if o.ok]
    assert sorted(done) == sorted(called)  # every call answered and recorded, none repeated
    assert 0 < first.stats.cost_usd <= cap
    assert second.all_succeeded and second.stopped is None
    assert sorted(called_again) == sorted(set(ITEMS) - set(done))  # only the remaining ones
    [recorded] = list_runs(db)
    assert recorded["status"] == "completed" and recorded["ok"] == len(ITEMS)


def test_a_dask_call_that_timed_out_keeps_its_estimate_as_spent(client: Any) -> None:
    """As on threads: an SDK read timeout may still be billed, so the driver keeps its
    estimate as spent; given back instead, a cap of 1.5 calls let a second call go."""
    from throttlepool.adapters.openai import OpenAIAdapter
    from throttlepool.distributed.dask import run_on_dask

    items = ["[[fault:hang]] " + ITEMS[0], ITEMS[1], ITEMS[2]]
    with Simulator(SimConfig(hang_seconds=2.0)) as sim:
        adapter = OpenAIAdapter(openai.OpenAI(api_key="k-budget", base_url=sim.openai_base_url,
                                              max_retries=0, timeout=0.3),
                                model="gpt-4o-mini", max_tokens=20)
        pricing = Pricing("openai", "gpt-4o-mini")
        per_call = [pricing.estimate(e.tokens - e.output, e.output)
                    for e in map(adapter.estimate, items)]
        cap = 1.5 * max(p for p in per_call if p is not None)
        # One item per chunk, one chunk at a time: the second item is reserved only after
        # the first one's outcome was settled.
        result = run_on_dask(adapter, items, client=client, batch_size=1, chunk_size=1,
                             max_chunks_in_flight=1, retries=0, breaker=False,
                             progress=False, max_cost=cap)
        called = _asked(sim)
    assert result.outcomes[0].error is not None
    assert result.stopped is not None and "budget reached" in str(result.stopped)
    assert len(called) == 1  # the hung call only: its estimate still counts
