"""Issue 14 item 5 on resume: an answer validated into a pydantic model (``schema=``) is
stored as JSON; from the checkpoint or the answer cache it comes back as that model again,
not as a dict, and a stored answer the model no longer accepts is kept as stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
import pydantic
import pytest

from throttlepool.adapters.anthropic import AnthropicAdapter
from throttlepool.adapters.base import Adapter
from throttlepool.adapters.function import CallableAdapter
from throttlepool.adapters.openai import OpenAIAdapter
from throttlepool.outcome import Source
from throttlepool.runner import ThreadedBatchRunner
from throttlepool.sim import Simulator

ITEMS = ['{"name": "Ada", "age": 36}', '{"name": "Alan", "age": 41}']


class Person(pydantic.BaseModel):
    name: str
    age: int


class Adult(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=40)


def _openai(sim: Simulator, schema: Any) -> Adapter[Any]:
    client = openai.OpenAI(api_key="sk-test-resume", base_url=sim.openai_base_url)
    return OpenAIAdapter(client, model="gpt-4o-mini", schema=schema)


def _anthropic(sim: Simulator, schema: Any) -> Adapter[Any]:
    client = anthropic.Anthropic(api_key="sk-ant-resume", base_url=sim.url)
    return AnthropicAdapter(client, model="claude-3-5-haiku-latest", schema=schema)


@pytest.mark.parametrize("kit", [_openai, _anthropic])
def test_a_resumed_run_gives_model_instances_back(sim: Simulator, tmp_path: Path,
                                                  kit: Any) -> None:
    db = str(tmp_path / "runs.db")
    with ThreadedBatchRunner(kit(sim, Person), store=db, run_name="people",
                             progress=False) as runner:
        first = runner.run(ITEMS)
    assert first.results == [Person(name="Ada", age=36), Person(name="Alan", age=41)]
    calls = len(sim.requests())
    with ThreadedBatchRunner(kit(sim, Person), store=db, run_name="people",
                             progress=False) as runner:
        again = runner.run(ITEMS)
    assert len(sim.requests()) == calls  # nothing called again
    assert {o.source for o in again.outcomes} == {Source.CHECKPOINT}
    assert again.results == first.results
    assert all(isinstance(value, Person) for value in again.results)


def test_cached_answers_come_back_as_models_too(sim: Simulator, tmp_path: Path) -> None:
    cache = str(tmp_path / "answers.db")
    with ThreadedBatchRunner(_openai(sim, Person), cache=cache, progress=False) as runner:
        runner.run(ITEMS)
    with ThreadedBatchRunner(_openai(sim, Person), cache=cache, progress=False) as runner:
        again = runner.run(ITEMS)
    assert {o.source for o in again.outcomes} == {Source.CACHE}
    assert all(isinstance(value, Person) for value in again.results), again.results


def test_a_stored_answer_the_model_now_refuses_is_kept_as_stored(
        sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = str(tmp_path / "runs.db")
    with ThreadedBatchRunner(_openai(sim, Person), store=db, run_name="p",
                             progress=False) as runner:
        runner.run(ITEMS)
    calls = len(sim.requests())
    # Resumed with a stricter model (the identity has no schema, so the keys match).
    with ThreadedBatchRunner(_openai(sim, Adult), store=db, run_name="p",
                             progress=False) as runner:
        again = runner.run(ITEMS)
    assert len(sim.requests()) == calls
    assert again.results == [{"name": "Ada", "age": 36}, Adult(name="Alan", age=41)]
    assert "kept as JSON" in caplog.text


def _person(text: str) -> Person:
    return Person.model_validate_json(text)


class PeopleAdapter(CallableAdapter):
    """An adapter of the user's own whose values are models: its public ``revive`` says how
    a stored one comes back (no ``schema=``, no extractor for the runner to peek into)."""

    def revive(self, stored: Any) -> Any:
        return Person.model_validate(stored)


class DuckPeople:
    """The same without deriving from Adapter: the runner wraps it (``Delegating``)."""

    name = "duck-people"

    def __init__(self) -> None:
        self.inner = PeopleAdapter(_person)

    def identity(self) -> Any:
        return self.inner.identity()

    def estimate(self, item: Any) -> Any:
        return self.inner.estimate(item)

    def call(self, item: Any, timeout: float | None) -> Any:
        return self.inner.call(item, timeout)

    def classify(self, exc: BaseException) -> Any:
        return self.inner.classify(exc)

    def rate_info(self, exc: BaseException) -> Any:
        return self.inner.rate_info(exc)

    def revive(self, stored: Any) -> Any:
        return self.inner.revive(stored)


@pytest.mark.parametrize("make", [lambda: PeopleAdapter(_person), DuckPeople])
def test_an_adapters_own_revive_brings_stored_values_back(tmp_path: Path, make: Any) -> None:
    db = str(tmp_path / "runs.db")
    with ThreadedBatchRunner(make(), store=db, run_name="own", progress=False) as runner:
        first = runner.run(ITEMS)
    with ThreadedBatchRunner(make(), store=db, run_name="own", progress=False) as runner:
        again = runner.run(ITEMS)
    assert {o.source for o in again.outcomes} == {Source.CHECKPOINT}
    assert again.results == first.results == [_person(item) for item in ITEMS]
