"""ITPM/OTPM against the simulator's /v1/messages with separate input and output windows:
the real anthropic SDK through the runner, the limits binding, no 429."""

from __future__ import annotations

import pytest

from throttlepool import ThreadedBatchRunner
from throttlepool.sim import Simulator

anthropic = pytest.importorskip("anthropic")

MAX_TOKENS, WINDOW, ITPM, OTPM = 40, 2.0, 200, 150


def test_input_and_output_limits_binding_with_no_429(sim: Simulator) -> None:
    """20-token prompts, 21-token replies reserved at max_tokens 40: 10 prompts and 3
    reservations fit a window; settling to the generated output lets about 7 in."""
    from throttlepool.adapters import AnthropicAdapter

    sim.configure(itpm=ITPM, otpm=OTPM, window=WINDOW, latency=0.05)
    client = anthropic.Anthropic(api_key="k-io", base_url=sim.url, max_retries=0)
    adapter = AnthropicAdapter(client, model="claude-sonnet-4-5", max_tokens=MAX_TOKENS,
                               extract="text")
    items = [(f"item {i:04d} " + "lorem ipsum " * 10)[:80] for i in range(24)]
    runner: ThreadedBatchRunner[str] = ThreadedBatchRunner(
        adapter, batch_size=8, retries=3,
        limits=[f"{ITPM} input tokens/{WINDOW:g}s", f"{OTPM} output tokens/{WINDOW:g}s"])
    with runner:
        result = runner.run(items)
    stats = sim.stats()
    assert all(e is None for e in result.errors), result.errors
    assert result.stats.rate_limited == 0 and stats["by_status"] == {"200": 24}, stats
    assert stats["max_input_tokens_in_window"] <= ITPM
    assert stats["max_output_tokens_in_window"] <= OTPM
    # The output limit bound (24 replies of 21 tokens need 4 windows at most 150 a window)
    # and settling let more than the 3 reservations of max_tokens into each window.
    assert stats["max_output_tokens_in_window"] > 3 * 21
