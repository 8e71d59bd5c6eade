"""Streamed replies (server-sent events) through the unmodified SDKs: openai chat
completions, anthropic messages, google-genai generate_content_stream; a stream equals the
non-streamed answer (text and usage), time to first token is observable, a broken stream
breaks the client's iteration and a retry of the whole request succeeds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import requests
from anthropic.types import MessageParam
from test_sim_helpers import gclient, oai, say

from throttlepool.sim import Simulator

PROMPT = "tell me about the sliding window, briefly please"
TEXT = "echo: " + PROMPT
A_MSG: list[MessageParam] = [{"role": "user", "content": PROMPT}]


def claude(sim: Simulator, key: str = "a-test") -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=sim.url, max_retries=0)


def _sse_events(response: requests.Response) -> Iterator[str]:
    """The data lines of a raw SSE response, as they arrive."""
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            yield line[6:]


# -- OpenAI chat completions ----------------------------------------------------------------


def test_openai_stream_equals_plain_reply_with_usage_chunk(sim: Simulator) -> None:
    c = oai(sim)
    plain = c.chat.completions.create(model="m", messages=say(PROMPT), max_tokens=100, n=2)
    chunks = list(c.chat.completions.create(
        model="m", messages=say(PROMPT), max_tokens=100, n=2, stream=True,
        stream_options={"include_usage": True}))
    texts = ["".join(ch.choices[0].delta.content or "" for ch in chunks
                     if ch.choices and ch.choices[0].index == i) for i in range(2)]
    assert texts == [TEXT, TEXT] == [ch.message.content for ch in plain.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes.count("stop") == 2 and finishes[-1] == "stop"
    assert all(ch.usage is None for ch in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert len({ch.id for ch in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    # The same charge as the plain request, and both answered 200.
    stats = sim.stats()
    assert stats["by_status"] == {"200": 2}
    assert stats["tokens_charged"] == 2 * (len(PROMPT) // 4 + 100 * 2)


def test_openai_stream_without_include_usage_ends_with_done(sim: Simulator) -> None:
    with requests.post(sim.openai_base_url + "/chat/completions", stream=True, timeout=10,
                       json={"model": "m", "messages": say(PROMPT), "stream": True,
                             "max_tokens": 3}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["transfer-encoding"] == "chunked"
        assert "x-request-id" in r.headers
        data = list(_sse_events(r))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all("usage" not in ch for ch in chunks)
    assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks) == TEXT
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # the whole text, as unstreamed


def test_openai_stream_keeps_the_connection_reusable(sim: Simulator) -> None:
    c = oai(sim)
    for _ in range(3):
        stream = c.chat.completions.create(model="m", messages=say("hi"), stream=True)
        assert "".join(ch.choices[0].delta.content or "" for ch in stream
                       if ch.choices) == "echo: hi"
    assert c.chat.completions.create(model="m", messages=say("hi")).choices[0].message.content \
        == "echo: hi"


# -- Anthropic messages -----------------------------------------------------------------------


def test_anthropic_stream_helper_equals_plain_message(sim: Simulator) -> None:
    c = claude(sim)
    plain = c.messages.create(model="claude-x", max_tokens=100, messages=A_MSG, system="Be kind.")
    with c.messages.stream(model="claude-x", max_tokens=100, messages=A_MSG,
                           system="Be kind.") as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["request-id"].startswith("req_sim")
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text == "echo: Be kind.\n" + PROMPT  # type: ignore[union-attr]
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == plain.stop_reason == "end_turn"
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.usage.output_tokens == plain.usage.output_tokens > 1
    assert sim.stats()["tokens_charged"] == 2 * (plain.usage.input_tokens
                                                 + plain.usage.output_tokens)


def test_anthropic_create_stream_event_sequence(sim: Simulator) -> None:
    events = list(claude(sim).messages.create(model="claude-x", max_tokens=3, messages=A_MSG,
                                              stream=True))
    kinds = [e.type for e in events]
    deltas = kinds.count("content_block_delta")
    assert kinds == ["message_start", "content_block_start", *["content_block_delta"] * deltas,
                     "content_block_stop", "message_delta", "message_stop"]
    assert deltas > 1
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and start.message.usage.input_tokens > 0
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "max_tokens" and delta.usage.output_tokens == 3


def test_async_anthropic_stream(sim: Simulator) -> None:
    async def main() -> tuple[str, int]:
        c = anthropic.AsyncAnthropic(api_key="k", base_url=sim.url, max_retries=0)
        async with c, c.messages.stream(model="claude-x", max_tokens=100,
                                        messages=A_MSG) as stream:
            text = "".join([t async for t in stream.text_stream])
            return text, (await stream.get_final_message()).usage.output_tokens

    text, out = asyncio.run(main())
    assert text == TEXT and out == len(TEXT) // 4


# -- google-genai -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_genai_stream_equals_plain_reply(sim: Simulator, version: str) -> None:
    c = gclient(sim, version)
    plain = c.models.generate_content(model="gem", contents=PROMPT)
    chunks = list(c.models.generate_content_stream(model="gem", contents=PROMPT))
    assert len(chunks) > 1
    assert "".join(ch.text or "" for ch in chunks) == plain.text == TEXT
    assert chunks[-1].usage_metadata == plain.usage_metadata
    assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == "STOP"
    assert all(not ch.candidates or not ch.candidates[0].finish_reason for ch in chunks[:-1])
    assert sim.requests()[-1]["path"] == f"/{version}/models/gem:streamGenerateContent?alt=sse"


def test_gemini_stream_without_sse_is_one_json_array(sim: Simulator) -> None:
    r = requests.post(sim.url + "/v1beta/models/gem:streamGenerateContent", timeout=10,
                      json={"contents": [{"parts": [{"text": PROMPT}]}]})
    chunks = r.json()
    assert isinstance(chunks, list) and len(chunks) > 1
    assert "".join(ch["candidates"][0]["content"]["parts"][0]["text"] for ch in chunks) == TEXT


# -- time to first token, chunk interval ---------------------------------------------------


def test_time_to_first_token_and_chunk_interval(sim: Simulator) -> None:
    sim.configure(first_token_delay=0.4, chunk_interval=0.02)
    try:
        c = oai(sim)
        start = time.monotonic()
        stream = c.chat.completions.create(model="m", messages=say(PROMPT), stream=True,
                                           max_tokens=100)
        arrivals = [time.monotonic() - start for _ in stream]
    finally:
        sim.configure(first_token_delay=0.0, chunk_interval=0.0)
    # The server waits these times before writing each event: lower bounds hold under load.
    assert arrivals[0] >= 0.4
    assert arrivals[-1] >= 0.4 + 0.02 * (len(arrivals) - 1)


# -- a stream broken midway -------------------------------------------------------------------


def test_break_fault_drops_a_stream_after_n_events(sim: Simulator) -> None:
    sim.configure(fail_rate={"break": 1.0}, stream_break_after=3)
    try:
        got: list[str] = []
        with pytest.raises(requests.exceptions.ChunkedEncodingError), requests.post(
                sim.openai_base_url + "/chat/completions", stream=True, timeout=10,
                json={"model": "m", "messages": say(PROMPT), "stream": True}) as r:
            assert r.status_code == 200
            for event in _sse_events(r):
                got.append(event)
        assert len(got) == 3
    finally:
        sim.configure(fail_rate={}, stream_break_after=2)
    stats = sim.stats()
    assert stats["faults"] == {"break": 1} and stats["by_status"] == {}


def _break_once(sim: Simulator, after: int) -> None:
    sim.script([{"status": 200, "break_after": after}])


def test_openai_broken_stream_raises_and_a_retry_gets_it_whole(sim: Simulator) -> None:
    c = oai(sim)
    _break_once(sim, 2)
    seen: list[Any] = []
    with pytest.raises((httpx2.HTTPError, openai.APIError)):
        for chunk in c.chat.completions.create(model="m", messages=say(PROMPT), stream=True):
            seen.append(chunk)
    assert len(seen) == 2
    again = c.chat.completions.create(model="m", messages=say(PROMPT), stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in again if ch.choices) == TEXT


def test_anthropic_broken_stream_raises_and_a_retry_gets_it_whole(sim: Simulator) -> None:
    c = claude(sim)
    _break_once(sim, 4)
    with pytest.raises((httpx2.HTTPError, anthropic.APIError)), c.messages.stream(
            model="claude-x", max_tokens=100, messages=A_MSG) as stream:
        for _ in stream.text_stream:
            pass
    with c.messages.stream(model="claude-x", max_tokens=100, messages=A_MSG) as stream:
        assert "".join(stream.text_stream) == TEXT


def test_genai_broken_stream_raises(sim: Simulator) -> None:
    c = gclient(sim)
    _break_once(sim, 1)
    with pytest.raises(httpx2.HTTPError):
        list(c.models.generate_content_stream(model="gem", contents=PROMPT))
    assert "".join(ch.text or "" for ch in c.models.generate_content_stream(
        model="gem", contents=PROMPT)) == TEXT


def test_break_fault_on_a_plain_reply_truncates_the_body(sim: Simulator) -> None:
    with pytest.raises(openai.APIConnectionError):
        oai(sim).chat.completions.create(model="m", messages=say("x [[fault:break]]"))
    assert sim.stats()["faults"] == {"break": 1}


def test_mid_stream_error_events_in_each_format(sim: Simulator) -> None:
    # Anthropic: `event: error` with an overloaded_error after a 200; the SDK raises
    # APIStatusError whose status is the 200 and whose type says overloaded.
    sim.script([{"error_after": 3}])
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught, claude(sim).messages.stream(
            model="claude-x", max_tokens=100, messages=A_MSG) as stream:
        texts.extend(stream.text_stream)
    assert caught.value.status_code == 200 and caught.value.type == "overloaded_error"
    assert texts == []  # message_start, content_block_start, ping came first
    # OpenAI: a `data: {"error": ...}` chunk; the SDK raises APIError.
    sim.script([{"error_after": 2}])
    chunks: list[Any] = []
    with pytest.raises(openai.APIError, match="had an error while processing"):
        chunks.extend(oai(sim).chat.completions.create(model="m", messages=say(PROMPT),
                                                       stream=True))
    assert len(chunks) == 2
    # The stream ended cleanly: the same connection serves the retry.
    c = claude(sim)
    assert c.messages.create(model="claude-x", max_tokens=100, messages=A_MSG).usage \
        .output_tokens == len(TEXT) // 4
    assert sim.stats()["by_status"] == {"200": 1}
