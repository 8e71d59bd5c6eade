"""Structured output through the real SDKs against the simulator (which echoes the prompt,
so a prompt holding JSON gets a JSON answer in prose): ``extract="json"`` parses the model's
answer, a JSON Schema or a pydantic model checks it, and a malformed or mismatched answer is
asked again ``json_retries`` times, apart from the network retries, then fails naming what
was wrong. Also: the anthropic adapter refuses parameters its SDK's method lacks."""

from __future__ import annotations

import inspect
import json
import pickle
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pydantic
import pytest
from google import genai
from google.genai import types
from hypothesis import given
from hypothesis import strategies as st

from throttlepool.adapters.anthropic import AnthropicAdapter
from throttlepool.adapters.base import Adapter
from throttlepool.adapters.google_genai import GenAIAdapter
from throttlepool.adapters.openai import OpenAIAdapter
from throttlepool.adapters.structured import InvalidAnswer, parse_json_answer
from throttlepool.classify import ErrorKind
from throttlepool.errors import ConfigError
from throttlepool.outcome import Usage
from throttlepool.retry import Retry
from throttlepool.runner import ThreadedBatchRunner
from throttlepool.sim import Simulator

PERSON = {"type": "object", "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}


class Person(pydantic.BaseModel):
    name: str
    age: int


def _openai(sim: Simulator, **kw: Any) -> Adapter[Any]:
    client = openai.OpenAI(api_key="k-o", base_url=sim.openai_base_url)
    return OpenAIAdapter(client, model="m", **kw)


def _anthropic(sim: Simulator, **kw: Any) -> Adapter[Any]:
    return AnthropicAdapter(anthropic.Anthropic(api_key="k-a", base_url=sim.url),
                            model="claude-x", **kw)


def _gemini(sim: Simulator, **kw: Any) -> Adapter[Any]:
    options = types.HttpOptions(base_url=sim.url, api_version="v1")
    return GenAIAdapter(genai.Client(api_key="k-g", http_options=options), model="gem", **kw)


KITS: dict[str, Callable[..., Adapter[Any]]] = {
    "openai": _openai, "anthropic": _anthropic, "gemini": _gemini}


def _run(adapter: Adapter[Any], items: list[Any], retries: int = 0) -> Any:
    retry = Retry(attempts=retries + 1, base=0.01, cap=0.05)
    with ThreadedBatchRunner(adapter, batch_size=2, retry=retry, timeout=10.0) as runner:
        return runner.run(items)


# -- parsing the answer text ----------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ('{"a": 1}', {"a": 1}),
    ('  [1, 2]\n', [1, 2]),
    ('```json\n{"a": [true, null]}\n```', {"a": [True, None]}),
    ('Here you are:\n```\n{"a": 2}\n```\nAnything else?', {"a": 2}),
    ('echo: {"a": "b {c}"}', {"a": "b {c}"}),
    ('see [the note] below {"a": 3}', {"a": 3}),
    ('"just a string"', "just a string"),
])
def test_parse_json_answer(text: str, value: Any) -> None:
    assert parse_json_answer(text) == value


@pytest.mark.parametrize("text", ["", "no json here", "```json\n{broken\n```", None])
def test_parse_json_answer_refuses_what_is_not_json(text: Any) -> None:
    with pytest.raises(InvalidAnswer, match="invalid JSON answer"):
        parse_json_answer(text)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=8).filter(lambda v: isinstance(v, (list, dict))))
def test_parse_json_answer_round_trips_fenced_and_in_prose(value: Any) -> None:
    dumped = json.dumps(value)
    assert parse_json_answer(dumped) == value
    assert parse_json_answer(f"```json\n{dumped}\n```") == value
    assert parse_json_answer(f"Sure: {dumped}") == value


# -- through the SDKs and the runner ---------------------------------------------------------


@pytest.mark.parametrize("kit", KITS)
def test_json_answer_is_parsed(sim: Simulator, kit: str) -> None:
    result = KITS[kit](sim, extract="json").call('{"name": "Ada", "age": 36}', 10.0)
    assert result.value == {"name": "Ada", "age": 36}
    assert result.usage is not None and result.usage.output_tokens > 0


def test_fenced_answer_with_schema_and_stream(sim: Simulator) -> None:
    adapter = _anthropic(sim, schema=PERSON, stream=True)
    value = adapter.call('```json\n{"name": "Ada", "age": 36}\n```', 10.0).value
    assert value == {"name": "Ada", "age": 36}


@pytest.mark.parametrize("kit", KITS)
def test_pydantic_model_instance_is_the_value(sim: Simulator, kit: str) -> None:
    result = _run(KITS[kit](sim, schema=Person), ['{"name": "Ada", "age": "36"}'])
    assert result.all_succeeded, result.errors
    assert result.results == [Person(name="Ada", age=36)]
    assert isinstance(result.results[0], Person)


@pytest.mark.parametrize("kit", KITS)
def test_schema_mismatch_is_asked_again_then_fails_naming_what_was_wrong(
        sim: Simulator, kit: str) -> None:
    adapter = KITS[kit](sim, schema=PERSON, json_retries=2)
    # No network retries at all: the answer's own budget still asks twice more.
    result = _run(adapter, ['{"name": "Ada"}'], retries=0)
    outcome = result.outcomes[0]
    assert not outcome.ok and isinstance(outcome.error, InvalidAnswer)
    assert "'age' is a required property" in str(outcome.error)
    assert outcome.attempts == 3 and len(sim.requests()) == 3
    assert result.stats.calls == 3 and result.stats.retries == 2
    assert adapter.classify(outcome.error).kind is ErrorKind.INVALID_OUTPUT


def test_invalid_answers_do_not_use_up_the_network_retries(sim: Simulator) -> None:
    adapter = _openai(sim, extract="json", json_retries=1)
    sim.script([{"status": 500}, {"status": 500}])
    result = _run(adapter, ["not json at all"], retries=2)
    outcome = result.outcomes[0]
    # Two 500s (the network budget), then the answer and one more ask (the JSON budget).
    assert isinstance(outcome.error, InvalidAnswer) and "not JSON" in str(outcome.error)
    assert outcome.attempts == 4 and len(sim.requests()) == 4


def test_a_bad_answer_then_a_good_one(sim: Simulator) -> None:
    bad = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
           "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": '{"name": "Ada", "age":'}}],
           "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}
    sim.script([{"status": 200, "body": bad}])
    result = _run(_openai(sim, schema=Person), ['{"name": "Ada", "age": 36}'])
    assert result.results == [Person(name="Ada", age=36)]
    assert result.outcomes[0].attempts == 2 and len(sim.requests()) == 2


def test_pydantic_mismatch_names_the_field(sim: Simulator) -> None:
    result = _run(_gemini(sim, schema=Person, json_retries=0), ['{"name": "Ada", "age": "x"}'])
    error = result.outcomes[0].error
    assert isinstance(error, InvalidAnswer) and "Person mismatch at age" in str(error)
    assert len(sim.requests()) == 1


def test_bad_structured_settings_are_refused_before_any_call(sim: Simulator) -> None:
    with pytest.raises(ConfigError, match="extract='json'"):
        _openai(sim, extract="text", schema=PERSON)
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        _openai(sim, schema={"type": "no-such-type"})
    with pytest.raises(ConfigError, match="pydantic model"):
        _openai(sim, schema=42)
    with pytest.raises(ConfigError, match="json_retries"):
        _anthropic(sim, extract="json", json_retries=-1)
    assert sim.requests() == []


def test_extract_response_keeps_the_whole_response(sim: Simulator) -> None:
    value = _openai(sim, extract="response").call("abc", 10.0).value
    assert value["choices"][0]["message"]["content"] == "echo: abc"


# -- anthropic: parameters its SDK's method lacks ----------------------------------------------


def test_anthropic_refuses_parameters_its_sdk_lacks(sim: Simulator) -> None:
    create = anthropic.Anthropic(api_key="k", base_url=sim.url).messages.create
    if "temperature" in inspect.signature(create).parameters:
        pytest.skip(f"anthropic {anthropic.__version__} takes temperature")
    with pytest.raises(ConfigError, match=rf"anthropic {anthropic.__version__}'s "
                                          r"messages.create takes no 'temperature'"):
        _anthropic(sim, temperature=0.2)
    adapter = _anthropic(sim)
    problem = adapter.request_problem(  # type: ignore[attr-defined]
        {"messages": [{"role": "user", "content": "hi"}], "top_k": 3})
    assert problem is not None and "'top_k'" in problem
    assert sim.requests() == []


def test_an_invalid_answer_travels_to_a_dask_driver_unchanged() -> None:
    # A worker's outcome reaches the driver pickled: the message once, the problem, the text
    # and the billed usage as they were (it read "invalid JSON answer: invalid JSON answer").
    error = InvalidAnswer("schema mismatch: 'n' is required", '{"m": 1}')
    error.usage = Usage(input_tokens=3, output_tokens=4)
    back = pickle.loads(pickle.dumps(error))
    assert str(back) == str(error) == (
        "invalid JSON answer: schema mismatch: 'n' is required (answer: '{\"m\": 1}')")
    assert (back.problem, back.text, back.usage) == (error.problem, error.text, error.usage)
