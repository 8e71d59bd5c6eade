"""The simulator's Anthropic Message Batches endpoints, driven by the real anthropic SDK."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import pytest

from throttlepool.sim import Simulator
from throttlepool.sim.anthropic_batches import anthropic_batches_of


def _client(sim: Simulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="sk-ant-test", max_retries=0)


def _requests(ids: list[str], **params: Any) -> list[Any]:
    return [{"custom_id": cid, "params": {"model": "claude-haiku-4-5", "max_tokens": 16,
                                          "messages": [{"role": "user", "content": cid}],
                                          **params}} for cid in ids]


def _wait(client: anthropic.Anthropic, batch_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, batch.processing_status
        time.sleep(0.02)


def test_a_batch_runs_and_its_results_come_back_by_custom_id(sim: Simulator) -> None:
    anthropic_batches_of(sim).configure(delay=0.2, fail_ids={"b"})
    client = _client(sim)
    created = client.messages.batches.create(requests=_requests(["a", "b", "c"]))
    assert created.processing_status == "in_progress" and created.results_url is None
    assert created.request_counts.processing == 3 and created.request_counts.succeeded == 0
    ended = _wait(client, created.id)
    assert ended.results_url is not None and ended.results_url.startswith(sim.url)
    assert ended.request_counts.succeeded == 2 and ended.request_counts.errored == 1
    results = {r.custom_id: r.result for r in client.messages.batches.results(created.id)}
    assert sorted(results) == ["a", "b", "c"]
    assert results["a"].type == "succeeded" and results["a"].message.usage.input_tokens > 0
    assert results["b"].type == "errored" and results["b"].error.error.type == "api_error"
    log = anthropic_batches_of(sim).submissions()
    assert [s["custom_id"] for s in log] == ["a", "b", "c"]
    assert {s["batch_id"] for s in log} == {created.id}
    # A second submission of a failed id succeeds (the failure is its first one only).
    again = client.messages.batches.create(requests=_requests(["b"]))
    (row,) = list(client.messages.batches.results(_wait(client, again.id).id))
    assert row.result.type == "succeeded"


def test_expiry_cancel_list_delete_and_bad_requests(sim: Simulator) -> None:
    batches = anthropic_batches_of(sim)
    client = _client(sim)
    batches.configure(delay=5.0, expire_after=0.1)
    expired = _wait(client, client.messages.batches.create(requests=_requests(["x"])).id)
    assert expired.request_counts.expired == 1
    assert [r.result.type for r in client.messages.batches.results(expired.id)] == ["expired"]
    batches.configure(delay=30.0, expire_after=None)
    running = client.messages.batches.create(requests=_requests(["y", "z"]))
    assert client.messages.batches.cancel(running.id).processing_status == "canceling"
    cancelled = _wait(client, running.id)
    assert cancelled.request_counts.canceled == 2 and cancelled.cancel_initiated_at is not None
    listed = [b.id for b in client.messages.batches.list(limit=1)]  # newest first, paged
    assert listed == [running.id, expired.id]
    assert client.messages.batches.delete(expired.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(expired.id)
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        client.messages.batches.create(requests=_requests(["bad id!"]))
    with pytest.raises(anthropic.BadRequestError, match="duplicate"):
        client.messages.batches.create(requests=_requests(["d", "d"]))
    # A body the Messages API refuses is only reported once the batch has ended.
    batches.configure(delay=0.05)
    bad = client.messages.batches.create(requests=_requests(["m"], max_tokens=0))
    (row,) = list(client.messages.batches.results(_wait(client, bad.id).id))
    assert row.result.type == "errored"
    assert row.result.error.error.type == "invalid_request_error"
    assert len(batches.submissions()) == 4  # x, y, z, m: the refused creates submitted nothing
