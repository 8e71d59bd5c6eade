"""Async SDK clients (AsyncOpenAI, AsyncAnthropic, google-genai's client.aio) through their
adapters: awaited on the runner's loop, under the same limiter and retries as sync clients."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from throttlepool import ThreadedBatchRunner
from throttlepool.adapters import Adapter
from throttlepool.sim import SimConfig, Simulator, SimulatorProcess

warnings.filterwarnings("ignore", category=FutureWarning)

LIMIT = 12  # requests per second, the simulator's and the runner's


def _openai(sim: Simulator | SimulatorProcess) -> Adapter[Any]:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    client = openai.AsyncOpenAI(api_key="k-async", base_url=sim.openai_base_url, max_retries=4)
    return OpenAIAdapter(client, model="gpt-4o-mini", extract="text")


def _anthropic(sim: Simulator | SimulatorProcess) -> Adapter[Any]:
    anthropic = pytest.importorskip("anthropic")
    from throttlepool.adapters.anthropic import AnthropicAdapter

    client = anthropic.AsyncAnthropic(api_key="k-async", base_url=sim.url, max_retries=4)
    return AnthropicAdapter(client, model="claude-x", extract="text")


def _genai(sim: Simulator | SimulatorProcess) -> Adapter[Any]:
    genai = pytest.importorskip("google.genai")
    from throttlepool.adapters.google_genai import GenAIAdapter

    client = genai.Client(api_key="k-async", http_options={"base_url": sim.url})
    return GenAIAdapter(client.aio, model="gemini-2.0-flash", extract="text")


ASYNC: dict[str, Callable[[Simulator | SimulatorProcess], Adapter[Any]]] = {
    "openai": _openai, "anthropic": _anthropic, "gemini": _genai}


@pytest.fixture(scope="module")
def limited() -> Any:
    with SimulatorProcess(SimConfig(rpm=LIMIT, window=1.0, latency=0.05)) as sim:
        yield sim


@pytest.mark.parametrize("provider", list(ASYNC))
def test_async_client_is_awaited_under_the_limit(provider: str, limited: SimulatorProcess) -> None:
    limited.reset()
    adapter = ASYNC[provider](limited)
    assert adapter.is_async
    n = 30
    runner: ThreadedBatchRunner[Any] = ThreadedBatchRunner(
        adapter, batch_size=8, limits=[f"{LIMIT}/second"], progress=False)
    result = runner.run([f"q{i}" for i in range(n)])

    assert [o.error for o in result.outcomes] == [None] * n
    assert [o.value for o in result.outcomes] == [f"echo: q{i}" for i in range(n)]
    stats = limited.stats()
    assert stats["rate_limited"] == 0  # the limiter paced the awaited calls
    assert stats["max_requests_in_window"] <= LIMIT
    assert stats["requests"] == n == result.stats.calls  # the SDK's own retries are off


@pytest.mark.parametrize("provider", list(ASYNC))
def test_async_client_429_is_retried_by_the_runner(provider: str, sim: Simulator) -> None:
    adapter = ASYNC[provider](sim)
    sim.script([{"status": 429, "headers": {"retry-after": "0.2"}}])
    runner: ThreadedBatchRunner[Any] = ThreadedBatchRunner(adapter, batch_size=1,
                                                           progress=False)
    result = runner.run(["only"])

    assert result.outcomes[0].value == "echo: only"
    assert result.outcomes[0].attempts == 2
    assert sim.stats()["requests"] == 2


def test_async_adapter_called_from_a_thread_gets_a_loop_of_its_own(sim: Simulator) -> None:
    adapter = _openai(sim)

    async def on_loop() -> Any:
        return (await adapter.acall("a", 10)).value

    assert asyncio.run(on_loop()) == "echo: a"
    assert adapter.call("b", 10).value == "echo: b"  # another loop: another connection pool
    assert asyncio.run(on_loop()) == "echo: a"
