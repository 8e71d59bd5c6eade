"""BatchApiRunner with a GenAIAdapter against the simulator's Gemini batch endpoints, with
the real google-genai SDK: input order by key, retries in a new batch, usage and the batch
price, a bad request failing only its item, cancel; and the endpoints themselves."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from throttlepool.adapters.google_genai import GenAIAdapter
from throttlepool.batchapi import BatchApiRunner, BatchProgress, BatchRequestFailed
from throttlepool.cost.pricing import Pricing
from throttlepool.errors import ConfigError
from throttlepool.outcome import Status
from throttlepool.sim import Simulator
from throttlepool.sim.gemini_batches import gemini_batches_of

MODEL = "gemini-2.5-flash"


def _client(sim: Simulator) -> genai.Client:
    return genai.Client(api_key="gm-runner", http_options=types.HttpOptions(base_url=sim.url))


def _ended(client: genai.Client, name: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (job := client.batches.get(name=str(name))).done:
        assert time.monotonic() < deadline, job.state
        time.sleep(0.02)
    return job


def _runner(sim: Simulator, db: Path, **kw: Any) -> BatchApiRunner:
    adapter = GenAIAdapter(_client(sim), model=MODEL, extract=kw.pop("extract", "text"),
                           max_output_tokens=32, **kw.pop("adapter", {}))
    return BatchApiRunner(adapter, store=str(db), run_name="r", poll_interval=0.02, **kw)


def test_answers_come_back_in_input_order_at_the_batch_price_and_failures_are_retried(
        sim: Simulator, tmp_path: Path) -> None:
    batches = gemini_batches_of(sim)
    batches.configure(delay=0.1, fail_ids={"item-2", "item-7"})
    seen: list[BatchProgress] = []
    with _runner(sim, tmp_path / "cp.db", max_requests=4, progress=seen.append,
                 adapter={"system_instruction": "be brief", "temperature": 0.2}) as runner:
        result = runner.run([f"q{i}" for i in range(9)])
    assert result.results == [f"echo: be brief\nq{i}" for i in range(9)]
    assert [o.attempts for o in result] == [1, 1, 2, 1, 1, 1, 1, 2, 1]
    batch_price, online_price = Pricing("gemini", MODEL, mode="batch"), Pricing("gemini", MODEL)
    for outcome in result:
        assert outcome.usage is not None and outcome.usage.input_tokens > 0
        assert outcome.cost == pytest.approx(batch_price.cost(outcome.usage))
        assert outcome.cost < online_price.cost(outcome.usage)  # type: ignore[operator]
    log = batches.submissions()
    assert Counter(s["custom_id"] for s in log) == Counter(
        {f"item-{i}": 2 if i in (2, 7) else 1 for i in range(9)})
    # 9 items in batches of 4, 4 and 1; the two failures are retried together, or apart
    # when their batches ended at different polls.
    assert sorted(Counter(s["batch_id"] for s in log).values()) in ([1, 2, 4, 4],
                                                                    [1, 1, 1, 4, 4])
    request = log[0]["request"]  # the REST form of the adapter's request
    assert request["systemInstruction"]["parts"] == [{"text": "be brief"}]
    assert request["generationConfig"] == {"maxOutputTokens": 32, "temperature": 0.2}
    assert seen[-1].done == 9 and any(v.status == "JOB_STATE_RUNNING" for p in seen
                                      for v in p.batches)


def test_a_bad_request_fails_its_item_only_and_cancel_stops_the_batch(
        sim: Simulator, tmp_path: Path, interrupt_and_cancel: Any) -> None:
    gemini_batches_of(sim).configure(delay=0.05)
    items: list[Any] = ["fine", {"contents": "x", "config": {"max_output_tokens": 0}}]
    with _runner(sim, tmp_path / "a.db", extract=None) as runner:
        result = runner.run(items)
    assert result[0].ok and result[0].value.text == "echo: fine"
    assert result[1].status is Status.FAILED and result[1].attempts == 1
    assert isinstance(result[1].error, BatchRequestFailed) and result[1].error.code == "3"
    gemini_batches_of(sim).configure(delay=30.0)
    name = interrupt_and_cancel(lambda **kw: _runner(sim, tmp_path / "b.db", **kw))
    assert _ended(_client(sim), name).state == types.JobState.JOB_STATE_CANCELLED
    with pytest.raises(ConfigError, match="generate_content"):
        _runner(sim, tmp_path / "x.db", adapter={"stream": True})


def test_the_endpoints_serve_the_sdk_files_inline_list_cancel_expiry(sim: Simulator) -> None:
    batches = gemini_batches_of(sim)
    batches.configure(delay=0.1, fail_ids={"b"})
    client = _client(sim)
    lines = b"".join(json.dumps({"key": k, "request": {"contents": [
        {"role": "user", "parts": [{"text": k}]}]}}).encode() + b"\n" for k in "abc")
    uploaded = client.files.upload(file=io.BytesIO(lines),
                                   config={"mime_type": "application/jsonl"})
    job = client.batches.create(model=MODEL, src=str(uploaded.name),
                                config={"display_name": "job1"})
    assert job.state == types.JobState.JOB_STATE_PENDING and job.display_name == "job1"
    job = _ended(client, job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.dest is not None and job.dest.file_name
    rows = {r["key"]: r for r in map(json.loads, client.files.download(
        file=job.dest.file_name).decode().splitlines())}
    assert rows["a"]["response"]["usageMetadata"]["promptTokenCount"] > 0
    assert rows["b"]["status"]["code"] == 13 and sorted(rows) == ["a", "b", "c"]
    inline = client.batches.create(model=MODEL,
                                   src=[{"contents": "hi", "metadata": {"key": "k"}}])
    (answer,) = _ended(client, inline.name).dest.inlined_responses
    assert answer.response.text == "echo: hi" and answer.metadata == {"key": "k"}
    batches.configure(delay=5.0, expire_after=0.05)
    expired = client.batches.create(model=MODEL, src=str(uploaded.name))
    assert _ended(client, expired.name).state == types.JobState.JOB_STATE_EXPIRED
    batches.configure(delay=30.0, expire_after=None)
    running = client.batches.create(model=MODEL, src=str(uploaded.name))
    client.batches.cancel(name=str(running.name))
    assert _ended(client, running.name).state == types.JobState.JOB_STATE_CANCELLED
    names = [b.name for b in client.batches.list(config={"page_size": 2})]  # paged, newest first
    assert names == [running.name, expired.name, inline.name, job.name]
    client.batches.delete(name=str(expired.name))
    with pytest.raises(errors.ClientError):
        client.batches.get(name=str(expired.name))
    assert len(batches.submissions()) == 3 + 1 + 3 + 3


def test_ctrl_c_before_any_batch_was_created_says_nothing_is_at_the_provider(
        tmp_path: Path) -> None:
    client = genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url="http://127.0.0.1:9"))  # nothing listens: the upload fails to connect

    def stop(progress: BatchProgress) -> None:
        raise KeyboardInterrupt

    with BatchApiRunner(GenAIAdapter(client, model=MODEL), store=str(tmp_path / "c.db"),
                        run_name="r", progress=stop) as runner:
        result = runner.run(["a", "b"])
    assert result.interrupted
    assert result.stopped.at_provider == {} and result.stopped.batch_ids == []  # type: ignore[union-attr]
    assert str(result.stopped).startswith("interrupted before any batch was created")
