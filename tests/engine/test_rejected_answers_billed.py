"""Issue 14 item 5: an answer rejected as not the JSON asked for was still billed by the
server. Its tokens count in the run's usage and cost, its limiter permit settles to what the
server counted, and its max_cost hold is settled to its price instead of given back."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pydantic
import pytest

from throttlepool.adapters.anthropic import AnthropicAdapter
from throttlepool.adapters.openai import OpenAIAdapter
from throttlepool.cost.budget import RunBudget
from throttlepool.cost.pricing import Pricing
from throttlepool.options import values
from throttlepool.outcome import Usage
from throttlepool.retry import Retry
from throttlepool.runner import ThreadedBatchRunner
from throttlepool.sim import Simulator

MODEL = "gpt-4o-mini"
BAD_USAGE = Usage(50, 70)


class Person(pydantic.BaseModel):
    name: str
    age: int


def _bad_answer() -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": '{"name": "Ada", "age":'}}],
            "usage": {"prompt_tokens": BAD_USAGE.input_tokens,
                      "completion_tokens": BAD_USAGE.output_tokens,
                      "total_tokens": BAD_USAGE.input_tokens + BAD_USAGE.output_tokens}}


@pytest.fixture
def gates(monkeypatch: pytest.MonkeyPatch) -> list[RunBudget]:
    """Every max_cost gate a run makes, to read what it counted as spent."""
    made: list[RunBudget] = []

    class Recorded(RunBudget):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(values, "RunBudget", Recorded)
    return made


def _runner(sim: Simulator, json_retries: int) -> ThreadedBatchRunner[Any]:
    client = openai.OpenAI(api_key="sk-test-billed", base_url=sim.openai_base_url)
    adapter = OpenAIAdapter(client, model=MODEL, schema=Person, json_retries=json_retries,
                            max_tokens=500)
    return ThreadedBatchRunner(adapter, batch_size=1, retry=Retry(attempts=1),
                               limits=["100000 output tokens/minute"], max_cost=1.0,
                               timeout=10.0)


def test_a_rejected_answer_counts_in_usage_cost_limiter_and_budget(
        sim: Simulator, gates: list[RunBudget]) -> None:
    sim.script([{"status": 200, "body": _bad_answer()}])
    with _runner(sim, json_retries=1) as runner:
        result = runner.run(['{"name": "Ada", "age": 36}'])
        (limit, used), = runner.limiter.backend.usage(runner.clock.now())
    outcome = result.outcomes[0]
    assert outcome.value == Person(name="Ada", age=36) and outcome.attempts == 2
    good = outcome.usage
    assert good is not None
    stats = result.stats
    assert (stats.input_tokens, stats.output_tokens) == (
        BAD_USAGE.input_tokens + good.input_tokens, BAD_USAGE.output_tokens + good.output_tokens)
    price = Pricing(model=MODEL)
    billed = price.cost(BAD_USAGE) + price.cost(good)
    assert stats.cost_usd == pytest.approx(billed)
    # The limiter counts what the server generated, not the 500 reserved for the reply.
    assert used == BAD_USAGE.output_tokens + good.output_tokens, limit
    gate = gates[-1]  # the run's own (the runner checks the price with one first)
    assert gate.gate.reserved == 0 and gate.gate.spent == pytest.approx(billed)


def test_an_item_whose_answers_are_all_rejected_still_counts_them(
        sim: Simulator, gates: list[RunBudget]) -> None:
    sim.script([{"status": 200, "body": _bad_answer()}] * 2)
    with _runner(sim, json_retries=1) as runner:
        result = runner.run(['{"name": "Ada", "age": 36}'])
    assert not result.outcomes[0].ok and result.stats.calls == 2
    assert (result.stats.input_tokens, result.stats.output_tokens) == (
        2 * BAD_USAGE.input_tokens, 2 * BAD_USAGE.output_tokens)
    gate = gates[-1]  # the run's own (the runner checks the price with one first)
    assert gate.gate.spent == pytest.approx(2 * Pricing(model=MODEL).cost(BAD_USAGE))


CLAUDE = "claude-3-5-haiku-latest"
# A rejected Claude answer that wrote the prompt cache (billed and counted in ITPM) and read it.
CLAUDE_BAD = Usage(40, 60, cache_creation_input_tokens=300, cache_read_input_tokens=20)


def _bad_claude_answer() -> dict[str, Any]:
    return {"id": "msg_x", "type": "message", "role": "assistant", "model": CLAUDE,
            "content": [{"type": "text", "text": '{"name": "Ada", "age":'}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": CLAUDE_BAD.input_tokens,
                      "output_tokens": CLAUDE_BAD.output_tokens,
                      "cache_creation_input_tokens": CLAUDE_BAD.cache_creation_input_tokens,
                      "cache_read_input_tokens": CLAUDE_BAD.cache_read_input_tokens}}


def test_a_rejected_claude_answer_counts_its_prompt_cache_tokens(sim: Simulator) -> None:
    """As an accepted answer's: the cache writes and reads are priced, and the writes settle
    the input-token window (Anthropic counts them in ITPM)."""
    sim.script([{"status": 200, "body": _bad_claude_answer()}])
    client = anthropic.Anthropic(api_key="sk-ant-billed", base_url=sim.url)
    adapter = AnthropicAdapter(client, model=CLAUDE, schema=Person, json_retries=1,
                               max_tokens=500)
    with ThreadedBatchRunner(adapter, batch_size=1, retry=Retry(attempts=1),
                             limits=["100000 input tokens/minute"], price_in=1.0,
                             price_out=2.0, timeout=10.0) as runner:
        result = runner.run(['{"name": "Ada", "age": 36}'])
        (_, used), = runner.limiter.backend.usage(runner.clock.now())
    good = result.outcomes[0].usage
    assert result.outcomes[0].value == Person(name="Ada", age=36) and good is not None
    price = Pricing(price_in=1.0, price_out=2.0)
    assert result.stats.cost_usd == pytest.approx(price.cost(CLAUDE_BAD) + price.cost(good))
    written = CLAUDE_BAD.input_tokens + CLAUDE_BAD.cache_creation_input_tokens
    assert used == written + good.input_tokens + good.cache_creation_input_tokens
