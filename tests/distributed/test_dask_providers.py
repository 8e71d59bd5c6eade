"""SDK adapters on a real Dask cluster (two worker processes) under one Redis limit: the
client's settings travel, the key stays out of the checkpoint, every item comes back ok."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest

from throttlepool import ThreadedBatchRunner
from throttlepool.adapters import Adapter
from throttlepool.outcome import Usage
from throttlepool.sim import SimConfig, Simulator, SimulatorProcess

pytest.importorskip("distributed")
warnings.filterwarnings("ignore", category=FutureWarning)  # google-generativeai is deprecated

KEY = "sk-dask-secret-9876543210"
LIMIT = 30  # requests per second, the simulator's and the cluster's


@pytest.fixture(scope="module")
def dask_warm_modules() -> tuple[str, ...]:
    return ("throttlepool.distributed.chunk", "openai", "google.genai")



def _openai(sim: Simulator | SimulatorProcess) -> Adapter[Any]:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    client = openai.OpenAI(api_key=KEY, base_url=sim.openai_base_url, organization="org-d",
                           default_headers={"X-Team": "ml"})
    return OpenAIAdapter(client, model="gpt-4o-mini", extract="text")


def _async_openai(sim: Simulator | SimulatorProcess) -> Adapter[Any]:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    client = openai.AsyncOpenAI(api_key=KEY, base_url=sim.openai_base_url,
                                default_headers={"X-Team": "ml"})
    return OpenAIAdapter(client, model="gpt-4o-mini", extract="text")


def _genai(sim: Simulator | SimulatorProcess) -> Adapter[Any]:
    genai = pytest.importorskip("google.genai")
    from throttlepool.adapters.google_genai import GenAIAdapter

    client = genai.Client(api_key=KEY, http_options={"base_url": sim.url,
                                                     "headers": {"X-Team": "ml"}})
    return GenAIAdapter(client, model="gemini-2.0-flash", extract="text")


def _generativeai(sim: Simulator | SimulatorProcess) -> Adapter[Any]:
    genai = pytest.importorskip("google.generativeai")
    from throttlepool.adapters.google_generativeai import GenerativeModelAdapter

    # Process-wide, on the driver only: the workers get it with the adapter.
    genai.configure(api_key=KEY, transport="rest", client_options={"api_endpoint": sim.url})
    return GenerativeModelAdapter(genai.GenerativeModel("gemini-2.0-flash"), extract="text")


BUILDERS: dict[str, Callable[[Simulator | SimulatorProcess], Adapter[Any]]] = {
    "openai": _openai, "async-openai": _async_openai, "gemini": _genai,
    "google-generativeai": _generativeai,
}


@pytest.mark.parametrize("provider", list(BUILDERS))
def test_sdk_adapter_runs_on_dask_under_one_limit(provider: str, client: Any, redis_url: str,
                                                  remote_sim: SimulatorProcess,
                                                  tmp_path: Path) -> None:
    n = 60
    # The server runs in its own process: one inside the test's process stamps requests late
    # while the driver's threads hold its interpreter lock, which no real server does.
    sim = remote_sim
    sim.configure(rpm=LIMIT, window=1.0, latency=0.02)
    adapter = BUILDERS[provider](sim)
    checkpoint = tmp_path / "ck.sqlite"
    runner: ThreadedBatchRunner[Any] = ThreadedBatchRunner(
        adapter, executor="dask", scheduler=client, limiter_url=redis_url,
        limits=[f"{LIMIT}/second"], margin=0.25, batch_size=4, progress=False,
        store=checkpoint, run_name=f"dask-{provider}")
    result = runner.run([f"p{i}" for i in range(n)])
    runner.close()
    stats, logged = sim.stats(), sim.requests()

    assert [o.error for o in result.outcomes] == [None] * n, result.summary()
    assert [o.value for o in result.outcomes] == [f"echo: p{i}" for i in range(n)]
    assert stats["rate_limited"] == 0
    assert stats["max_requests_in_window"] <= LIMIT
    if provider != "google-generativeai":  # its SDK sets no custom headers
        assert {r["headers"].get("x-team") for r in logged} == {"ml"}
    if provider == "openai":
        assert {r["headers"].get("openai-organization") for r in logged} == {"org-d"}
    # The key crossed to the workers inside the task, never into the checkpoint.
    assert KEY.encode() not in checkpoint.read_bytes()
    for extra in ("-wal", "-shm"):
        side = checkpoint.with_name(checkpoint.name + extra)
        assert not side.exists() or KEY.encode() not in side.read_bytes()


def test_a_streamed_answer_keeps_its_time_to_first_token_on_dask(client: Any) -> None:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    n = 20
    with Simulator(SimConfig(latency=0.05)) as sim:
        adapter = OpenAIAdapter(openai.OpenAI(api_key=KEY, base_url=sim.openai_base_url),
                                model="gpt-4o-mini", extract="text", stream=True)
        with ThreadedBatchRunner(adapter, executor="dask", scheduler=client, batch_size=4,
                                 progress=False) as runner:
            result = runner.run([f"p{i}" for i in range(n)])
    assert result.all_succeeded, result.summary()
    assert [o.value for o in result] == [f"echo: p{i}" for i in range(n)]
    # measured on the worker, as a local run measures it: after the request, before the end
    assert all(o.ttft is not None and 0 < o.ttft <= o.latency for o in result), [
        (o.ttft, o.latency) for o in result]


class Person(pydantic.BaseModel):
    """A structured answer (module level: the workers import it)."""

    name: str
    age: int


BAD_USAGE = Usage(50, 70)  # a rejected answer's tokens: billed, though no outcome has them
PEOPLE = ['{"name": "Ada", "age": 36}', '{"name": "Alan", "age": 41}',
          '{"name": "Grace", "age": 85}']


def _rejected_answer() -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": '{"name": "Ada", "age":'}}],
            "usage": {"prompt_tokens": BAD_USAGE.input_tokens,
                      "completion_tokens": BAD_USAGE.output_tokens,
                      "total_tokens": BAD_USAGE.total_tokens}}


def test_structured_answers_on_dask_are_models_and_rejected_ones_are_billed(
        client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a local run: the values are the schema's models (from the workers and from the
    checkpoint), and a rejected answer's tokens count in the run's tokens, cost and
    max_cost spend, on the driver."""
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter
    from throttlepool.cost import Pricing, RunBudget
    from throttlepool.options import values

    gates: list[RunBudget] = []

    class Recorded(RunBudget):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            gates.append(self)

    monkeypatch.setattr(values, "RunBudget", Recorded)
    db = tmp_path / "ck.sqlite"
    with Simulator(SimConfig()) as sim:
        adapter = OpenAIAdapter(openai.OpenAI(api_key=KEY, base_url=sim.openai_base_url),
                                model="gpt-4o-mini", schema=Person, max_tokens=100)
        sim.script([{"status": 200, "body": _rejected_answer()}])

        def run() -> Any:
            with ThreadedBatchRunner(adapter, executor="dask", scheduler=client,
                                     batch_size=1, max_cost=1.0, store=db, run_name="people",
                                     progress=False) as runner:
                return runner.run(PEOPLE)

        result = run()
        again = run()
    expected = [Person.model_validate_json(p) for p in PEOPLE]
    assert result.results == expected and all(type(v) is Person for v in result.results)
    assert again.results == expected and all(type(v) is Person for v in again.results)
    assert sum(o.attempts for o in result.outcomes) == len(PEOPLE) + 1
    answered = [o.usage for o in result.outcomes]
    assert None not in answered
    stats = result.stats
    assert (stats.input_tokens, stats.output_tokens) == (
        BAD_USAGE.input_tokens + sum(u.input_tokens for u in answered if u),
        BAD_USAGE.output_tokens + sum(u.output_tokens for u in answered if u))
    price = Pricing(model="gpt-4o-mini")
    billed = price.cost(BAD_USAGE) + sum(price.cost(u) or 0.0 for u in answered)
    assert stats.cost_usd == pytest.approx(billed)
    spent = [g.gate.spent for g in gates if g.gate.spent]
    assert spent[0] == pytest.approx(billed), spent
