"""Streamed replies through the real SDKs against the simulator: the runner gets one whole
value with its usage, equal to the plain call's; time to first token is recorded per item; a
stream broken midway (dropped connection, mid-stream error event) is retried whole."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from throttlepool.adapters.anthropic import AnthropicAdapter
from throttlepool.adapters.base import Adapter
from throttlepool.adapters.google_genai import GenAIAdapter
from throttlepool.adapters.openai import OpenAIAdapter
from throttlepool.adapters.streaming import StreamBroken
from throttlepool.classify import ErrorKind
from throttlepool.errors import ConfigError
from throttlepool.retry import Retry
from throttlepool.runner import ThreadedBatchRunner
from throttlepool.sim import Simulator

PROMPT = "tell me about the sliding window, briefly please"
TEXT = "echo: " + PROMPT

Build = Callable[..., Adapter[Any]]


def _openai(sim: Simulator, **kw: Any) -> Adapter[Any]:
    client = openai.OpenAI(api_key="k-o", base_url=sim.openai_base_url)
    return OpenAIAdapter(client, model="m", extract="text", max_tokens=100, **kw)


def _async_openai(sim: Simulator, **kw: Any) -> Adapter[Any]:
    client = openai.AsyncOpenAI(api_key="k-o", base_url=sim.openai_base_url)
    return OpenAIAdapter(client, model="m", extract="text", max_tokens=100, **kw)


def _responses(sim: Simulator, **kw: Any) -> Adapter[Any]:
    client = openai.OpenAI(api_key="k-r", base_url=sim.openai_base_url)
    return OpenAIAdapter(client, model="m", method="responses", extract="text", **kw)


def _anthropic(sim: Simulator, **kw: Any) -> Adapter[Any]:
    client = anthropic.Anthropic(api_key="k-a", base_url=sim.url)
    return AnthropicAdapter(client, model="claude-x", max_tokens=100, extract="text", **kw)


def _async_anthropic(sim: Simulator, **kw: Any) -> Adapter[Any]:
    client = anthropic.AsyncAnthropic(api_key="k-a", base_url=sim.url)
    return AnthropicAdapter(client, model="claude-x", max_tokens=100, extract="text", **kw)


def _gemini(sim: Simulator, **kw: Any) -> Adapter[Any]:
    options = types.HttpOptions(base_url=sim.url, api_version="v1")
    client = genai.Client(api_key="k-g", http_options=options)
    return GenAIAdapter(client, model="gem", extract="text", **kw)


KITS: dict[str, Build] = {"openai": _openai, "async-openai": _async_openai,
                          "responses": _responses, "anthropic": _anthropic,
                          "async-anthropic": _async_anthropic, "gemini": _gemini}


def _run(adapter: Adapter[Any], items: list[Any], attempts: int = 3) -> Any:
    retry = Retry(attempts=attempts, base=0.01, cap=0.05)
    with ThreadedBatchRunner(adapter, batch_size=2, retry=retry, timeout=10.0) as runner:
        return runner.run(items)


@pytest.mark.parametrize("kit", KITS)
def test_stream_gives_the_plain_answer_and_usage(sim: Simulator, kit: str) -> None:
    plain = KITS[kit](sim).call(PROMPT, 10.0)
    streamed = KITS[kit](sim, stream=True).call(PROMPT, 10.0)
    assert streamed.value == plain.value == TEXT
    assert streamed.usage is not None and streamed.usage == plain.usage
    assert streamed.usage.output_tokens > 1
    assert streamed.ttft is not None and plain.ttft is None
    last = sim.requests()[-1]
    if kit == "gemini":
        assert last["path"] == "/v1/models/gem:streamGenerateContent?alt=sse"
    else:
        assert last["body"]["stream"] is True


def test_openai_adds_include_usage_and_keeps_the_callers_stream_options(sim: Simulator) -> None:
    adapter = _openai(sim)
    item = {"messages": [{"role": "user", "content": PROMPT}], "stream": True,
            "stream_options": {"include_obfuscation": False}}
    result = adapter.call(item, 10.0)  # a dict item may ask for a stream itself
    assert result.value == TEXT and result.usage is not None and result.usage.input_tokens > 0
    assert sim.requests()[-1]["body"]["stream_options"] == {"include_obfuscation": False,
                                                            "include_usage": True}


@pytest.mark.parametrize("kit", ["openai", "async-openai", "anthropic", "async-anthropic",
                                 "gemini"])
def test_time_to_first_token_is_recorded_per_item(sim: Simulator, kit: str) -> None:
    sim.configure(first_token_delay=0.3, chunk_interval=0.05)
    try:
        result = _run(KITS[kit](sim, stream=True), [PROMPT, "second item"])
    finally:
        sim.configure(first_token_delay=0.0, chunk_interval=0.0)
    assert result.all_succeeded, result.errors
    assert result.results == [TEXT, "echo: second item"]
    for outcome in result:
        # The server waits before the first event, so this lower bound holds under load;
        # later chunks arrive after it, so the first token comes before the whole answer.
        assert outcome.ttft is not None and 0.3 <= outcome.ttft < outcome.latency
    assert _run(KITS[kit](sim), [PROMPT]).outcomes[0].ttft is None


@pytest.mark.parametrize("kit", KITS)
def test_a_stream_broken_midway_is_retried_whole(sim: Simulator, kit: str) -> None:
    sim.script([{"status": 200, "break_after": 3}])
    result = _run(KITS[kit](sim, stream=True), [PROMPT])
    assert result.all_succeeded, result.errors
    assert result.results == [TEXT]  # never the three pieces that came before the break
    assert result.outcomes[0].attempts == 2 and result.stats.retries == 1
    assert len(sim.requests()) == 2
    assert result.outcomes[0].usage is not None and result.outcomes[0].usage.output_tokens > 1


@pytest.mark.parametrize("kit", ["openai", "anthropic", "async-anthropic"])
def test_a_mid_stream_error_event_is_retried_whole(sim: Simulator, kit: str) -> None:
    sim.script([{"error_after": 3}])
    result = _run(KITS[kit](sim, stream=True), [PROMPT])
    assert result.all_succeeded, result.errors
    assert result.results == [TEXT] and result.outcomes[0].attempts == 2
    assert len(sim.requests()) == 2


def test_a_stream_that_keeps_breaking_fails_with_what_broke_it(sim: Simulator) -> None:
    sim.script([{"status": 200, "break_after": 2}] * 2)
    adapter = _anthropic(sim, stream=True)
    result = _run(adapter, [PROMPT], attempts=2)
    error = result.outcomes[0].error
    assert isinstance(error, StreamBroken) and "after 2 events" in str(error)
    assert result.results == [None] and len(sim.requests()) == 2
    verdict = adapter.classify(error)
    assert verdict.kind is ErrorKind.TRANSIENT and "stream broke midway" in verdict.reason


def test_stream_is_refused_where_it_cannot_be_read_whole(sim: Simulator) -> None:
    client = openai.OpenAI(api_key="k", base_url=sim.openai_base_url)
    with pytest.raises(ConfigError, match="stream=True applies to openai chat"):
        OpenAIAdapter(client, model="m", method="embeddings", stream=True)
    options = types.HttpOptions(base_url=sim.url, api_version="v1")
    with pytest.raises(ConfigError, match="generate_content"):
        GenAIAdapter(genai.Client(api_key="g", http_options=options), model="gem",
                     method="embed_content", stream=True)
    assert sim.requests() == []
