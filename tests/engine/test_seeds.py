"""Each seed team's hand-written pattern, expressed with throttlepool (docs/migrating.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from throttlepool import (
    BatchResult,
    CircuitBreaker,
    Retry,
    RunStats,
    ThreadedBatchRunner,
    batchable,
    gather_with_concurrency,
    generate_batch,
    run_async,
)
from throttlepool.adapters.anthropic import AnthropicAdapter
from throttlepool.adapters.openai import OpenAIAdapter
from throttlepool.limiter import TokenBucketLimiter
from throttlepool.retry import AsyncRetry
from throttlepool.sim import Simulator
from throttlepool.testing import FakeClock, ScriptedCallable


def test_seed000_sequential_loop_becomes_generate_batch() -> None:
    def process_md(doc: str) -> str:
        return doc.upper()

    docs = [f"doc{i}" for i in range(20)]
    assert generate_batch(process_md, docs, batch_size=5, rpm=1000) == [process_md(d) for d in docs]


def test_seed001_batch_processor_sync_and_async_fn_with_callback() -> None:
    seen: list[tuple[int, int | None]] = []

    async def embed(text: str) -> int:
        await asyncio.sleep(0)
        return len(text)

    runner = ThreadedBatchRunner(embed, batch_size=4, retry=Retry(attempts=4, base=1.0),
                                 progress=lambda done, total: seen.append((done, total)))
    result: BatchResult[int] = runner.run(["a", "bb", "ccc"])
    assert result.results == [1, 2, 3]
    assert result.success_count == 3 and result.error_count == 0 and result.all_succeeded
    assert result.get_successful() == [1, 2, 3]
    assert seen[-1] == (3, 3)
    assert asyncio.run(runner.arun(["dddd"])).results == [4]


def test_seed001_token_bucket_and_retry_and_helpers() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(requests_per_second=10, burst_size=20, clock=clock)

    async def use() -> list[float]:
        times = []
        for _ in range(25):
            async with limiter:
                times.append(clock.now())
        return times

    times = asyncio.run(use())
    assert times[:20] == [0.0] * 20  # the burst
    assert times[20] == pytest.approx(0.1)  # then 10 per second

    flaky = ScriptedCallable({"x": [ConnectionError(), ConnectionError(), "ok"]})
    assert AsyncRetry(max_retries=3, base_delay=0.0)(flaky)("x") == "ok"

    async def double(x: int) -> int:
        return 2 * x

    out = asyncio.run(gather_with_concurrency((double(i) for i in range(10)), 3))
    assert out == [2 * i for i in range(10)]
    assert run_async(double(21)) == 42


def test_seed002_processor_with_token_bucket_and_cache(tmp_path: Any) -> None:
    calls: list[str] = []

    def process_article(url: str) -> str:
        calls.append(url)
        return f"analysis of {url}"

    limiter = TokenBucketLimiter(10, 5)
    urls = ["u1", "u2", "u3"]
    runner = ThreadedBatchRunner(process_article, batch_size=5, limiter=limiter,
                                 cache=tmp_path / "cache.db", cache_ttl=3600)
    first = runner.run(urls)
    again = runner.run(urls)  # the two-tier cache answers; no call, no budget
    assert first.results == again.results == [f"analysis of {u}" for u in urls]
    assert sorted(calls) == urls
    assert again.stats.cache_hits == 3 and again.stats.calls == 0


def test_seed002_claude_openai_and_mistral_via_base_url(sim: Simulator) -> None:
    """The RSS analyzer's API_PROVIDER=anthropic|openai|mistral: Claude through the anthropic
    SDK (streaming, as its use_streaming says), OpenAI, and Mistral's OpenAI-compatible API
    through the openai SDK with a base URL; each a small batch, all ok, in order."""
    import anthropic
    import openai

    articles = [f"article {i}" for i in range(6)]
    providers = {
        "anthropic": AnthropicAdapter(anthropic.Anthropic(api_key="sk-ant-x", base_url=sim.url),
                                      model="claude-3-5-haiku-latest", max_tokens=64,
                                      system="Analyze.", stream=True, extract="text"),
        "openai": OpenAIAdapter(openai.OpenAI(api_key="sk-o", base_url=sim.openai_base_url),
                                model="gpt-4o-mini", system="Analyze.", extract="text"),
        "mistral": OpenAIAdapter(openai.OpenAI(api_key="mistral-k",
                                               base_url=sim.openai_base_url),
                                 model="mistral-small-latest", system="Analyze.",
                                 extract="text"),
    }
    for name, adapter in providers.items():
        sim.reset()
        with ThreadedBatchRunner(adapter, batch_size=5, rpm=100, timeout=10.0) as runner:
            result = runner.run(articles)
        assert result.all_succeeded, (name, result.errors)
        assert result.results == [f"echo: Analyze.\n{a}" for a in articles], name
        paths = {request["path"] for request in sim.requests()}
        assert paths == ({"/v1/messages"} if name == "anthropic" else {"/v1/chat/completions"})


def test_seed003_openrouter_is_the_openai_sdk_with_a_base_url(sim: Simulator) -> None:
    """The flashcard generator's OpenRouterClient: the openai SDK pointed at another base URL
    with OpenRouter's attribution headers and a vendor/model name; cards come back in order."""
    import openai

    client = openai.OpenAI(api_key="sk-or-v1-x", base_url=sim.openai_base_url,
                           default_headers={"HTTP-Referer": "https://cards.example",
                                            "X-Title": "flashcards"})
    adapter = OpenAIAdapter(client, model="anthropic/claude-3-haiku", extract="text")
    topics = [f"topic {i}" for i in range(8)]
    with ThreadedBatchRunner(adapter, batch_size=4, rpm=600, safety=0.8,
                             breaker=CircuitBreaker(threshold=10, reset_after=60),
                             timeout=10.0) as runner:
        result = runner.run(topics)
    assert result.all_succeeded, result.errors
    assert result.results == [f"echo: {t}" for t in topics]
    requests = sim.requests()
    assert len(requests) == len(topics)
    assert all(r["body"]["model"] == "anthropic/claude-3-haiku" for r in requests)


def test_seed003_orchestrator_ordered_safety_breaker_progress() -> None:
    stats_seen: list[RunStats] = []
    runner = ThreadedBatchRunner(
        lambda item: f"card-{item}", batch_size=50, rpm=600, safety=0.8,
        breaker=CircuitBreaker(threshold=10, reset_after=60), progress=stats_seen.append,
    )
    assert runner.limiter.limits[0].amount == 480
    result = runner.run(range(50))
    assert [r for r in result.results] == [f"card-{i}" for i in range(50)]
    assert stats_seen[-1].done == 50 and stats_seen[-1].in_flight == 0


def test_seed004_batchable_method_keeps_sync_api() -> None:
    class CommentGenerator:
        def __init__(self) -> None:
            self.prefix = "re: "

        @batchable(batch_size=5, rpm=15)
        def generate_suggestions(self, tweet: str) -> str:
            return self.prefix + tweet

    gen = CommentGenerator()
    assert gen.generate_suggestions("hi") == "re: hi"
    result = gen.generate_suggestions.batch([f"t{i}" for i in range(10)])
    assert result.results == [f"re: t{i}" for i in range(10)]
