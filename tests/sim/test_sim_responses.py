"""OpenAI's Responses API (``POST /v1/responses``) through the openai SDK: the Response and
its usage, streamed and not, rate limits and bad requests."""

from __future__ import annotations

from collections.abc import Mapping

import openai
import pytest
import requests
from test_sim_helpers import oai

from throttlepool.sim import Simulator, server
from throttlepool.sim.plan import Plan, encode
from throttlepool.sim.state import SimState

PROMPT = "summarise the sliding window in one line"


def test_create_returns_output_text_and_usage(sim: Simulator) -> None:
    sim.configure(rpm=10, tpm=1000)
    try:
        raw = oai(sim).responses.with_raw_response.create(
            model="gpt-x", input=PROMPT, instructions="Be brief.", max_output_tokens=100)
    finally:
        sim.configure(rpm=None, tpm=None)
    r = raw.parse()
    assert r.output_text == "echo: Be brief.\n" + PROMPT
    assert r.status == "completed" and r.incomplete_details is None
    assert r.object == "response" and r.id.startswith("resp_") and r.model == "gpt-x"
    prompt = "Be brief.\n" + PROMPT
    assert r.usage is not None
    assert r.usage.input_tokens == len(prompt) // 4
    assert r.usage.output_tokens == len("echo: " + prompt) // 4
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert raw.headers["x-ratelimit-limit-requests"] == "10"
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(1000 - (len(prompt) // 4 + 100))
    assert raw.request_id is not None
    assert sim.requests()[-1]["path"] == "/v1/responses"


def test_input_as_message_items(sim: Simulator) -> None:
    r = oai(sim).responses.create(model="m", input=[
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
    ])
    assert r.output_text == "echo: first\nsecond"


def test_max_output_tokens_makes_it_incomplete(sim: Simulator) -> None:
    r = oai(sim).responses.create(model="m", input=PROMPT, max_output_tokens=3)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 3


def test_stream_events_equal_the_plain_response(sim: Simulator) -> None:
    c = oai(sim)
    plain = c.responses.create(model="m", input=PROMPT, max_output_tokens=100)
    events = list(c.responses.create(model="m", input=PROMPT, max_output_tokens=100,
                                     stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == plain.output_text
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == plain.output_text
    assert done.response.usage == plain.usage


def test_stream_helper_final_response(sim: Simulator) -> None:
    with oai(sim).responses.stream(model="m", input=PROMPT, max_output_tokens=100) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == "echo: " + PROMPT
    assert final.usage is not None and final.usage.output_tokens == len(text) // 4


def test_rate_limit_and_bad_request(sim: Simulator) -> None:
    sim.configure(rpm=1)
    try:
        c = oai(sim)
        c.responses.create(model="m", input="a")
        with pytest.raises(openai.RateLimitError) as caught:
            c.responses.create(model="m", input="b")
        assert caught.value.response.headers["retry-after-ms"]
    finally:
        sim.configure(rpm=None)
    with pytest.raises(openai.BadRequestError, match="'input' must be"):
        oai(sim).responses.create(model="m", input=[])


# -- extra routes (the registration point batch endpoints use) --------------------------------


class _Hello:
    """A Route answering GET /v1/hello and counting resets."""

    def __init__(self, state: SimState) -> None:
        self.state, self.resets = state, 0

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str],
               body: bytes) -> Plan | None:
        if path != "/v1/hello":
            return None
        plan = encode(200, {}, {"hello": query, "window": self.state.config.window})
        plan.counted = False
        return plan

    def reset(self) -> None:
        self.resets += 1


def test_extra_routes_are_tried_first_and_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "ROUTES", (_Hello,))
    with Simulator() as sim:
        assert requests.get(sim.url + "/v1/hello?x=1", timeout=5).json() == {
            "hello": "x=1", "window": 60.0}
        assert oai(sim).responses.create(model="m", input="hi").output_text == "echo: hi"
        assert sim.stats()["requests"] == 1  # the route's uncounted answer is not an API call
        sim.reset()
        route = sim.state.routes[0]
        assert isinstance(route, _Hello) and route.resets == 1
