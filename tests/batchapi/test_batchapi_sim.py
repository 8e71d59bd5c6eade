"""The simulator's OpenAI Files + Batches endpoints, driven by the real openai SDK."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from throttlepool.sim import Simulator
from throttlepool.sim.batches import batches_of


def _client(sim: Simulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test", max_retries=0)


def _upload(client: openai.OpenAI, ids: list[str]) -> str:
    lines = [{"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": cid}]}}
             for cid in ids]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    return client.files.create(file=("in.jsonl", data), purpose="batch").id


def _wait(client: openai.OpenAI, batch_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, batch.status
        time.sleep(0.02)


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    assert "\n\n" not in text and text.endswith("\n")  # no blank line: decoders choke on it
    return [json.loads(line) for line in text.splitlines()]


def test_a_batch_goes_through_its_statuses_and_answers_every_request_by_custom_id(
        sim: Simulator) -> None:
    batches_of(sim).configure(delay=0.3)
    client = _client(sim)
    file_id = _upload(client, [f"r{i}" for i in range(20)])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"run": "x", "chunk": "0"})
    assert batch.status == "validating" and batch.metadata == {"run": "x", "chunk": "0"}
    seen = {batch.status}
    while batch.status != "completed":
        time.sleep(0.02)
        batch = client.batches.retrieve(batch.id)
        seen.add(batch.status)
    assert "in_progress" in seen
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (20, 20)
    assert batch.error_file_id is None and batch.completed_at is not None
    out = _lines(client, batch.output_file_id)
    by_id = {line["custom_id"]: line for line in out}
    assert sorted(by_id) == sorted(f"r{i}" for i in range(20))
    assert [line["custom_id"] for line in out] != [f"r{i}" for i in range(20)]  # shuffled
    body = by_id["r7"]["response"]["body"]
    assert body["choices"][0]["message"]["content"] == "echo: r7"
    assert body["usage"]["prompt_tokens"] > 0
    assert [s["custom_id"] for s in batches_of(sim).submissions()] == [
        f"r{i}" for i in range(20)]


def test_failures_go_to_the_error_file_once_and_a_resubmission_succeeds(sim: Simulator) -> None:
    batches_of(sim).configure(delay=0.05, fail_ids={"r1"})
    client = _client(sim)
    first = _wait(client, client.batches.create(
        input_file_id=_upload(client, ["r0", "r1"]), endpoint="/v1/chat/completions",
        completion_window="24h").id)
    errors = _lines(client, first.error_file_id)
    assert [e["custom_id"] for e in errors] == ["r1"]
    assert errors[0]["response"]["status_code"] == 500 and errors[0]["error"] is None
    again = _wait(client, client.batches.create(
        input_file_id=_upload(client, ["r1"]), endpoint="/v1/chat/completions",
        completion_window="24h").id)
    assert [o["custom_id"] for o in _lines(client, again.output_file_id)] == ["r1"]


def test_expiry_and_cancel_leave_the_unanswered_requests_in_the_error_file(
        sim: Simulator) -> None:
    batches_of(sim).configure(delay=10.0, expire_after=0.05)
    client = _client(sim)
    expired = _wait(client, client.batches.create(
        input_file_id=_upload(client, ["a", "b"]), endpoint="/v1/chat/completions",
        completion_window="24h").id)
    assert expired.status == "expired"
    assert {e["error"]["code"] for e in _lines(client, expired.error_file_id)} == {
        "batch_expired"}
    batches_of(sim).configure(expire_after=None)
    batch = client.batches.create(input_file_id=_upload(client, ["c"]),
                                  endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = _wait(client, batch.id)
    assert done.status == "cancelled"
    assert [e["error"]["code"] for e in _lines(client, done.error_file_id)] == ["batch_cancelled"]


def test_list_pages_newest_first_and_bad_files_fail_the_batch(sim: Simulator) -> None:
    client = _client(sim)
    ids = [client.batches.create(input_file_id=_upload(client, [f"x{i}"]),
                                 endpoint="/v1/chat/completions", completion_window="24h").id
           for i in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=100)] == ids[::-1]
    dup = client.batches.create(input_file_id=_upload(client, ["same", "same"]),
                                endpoint="/v1/chat/completions", completion_window="24h")
    assert dup.status == "failed" and dup.errors is not None
    assert dup.errors.data is not None and dup.errors.data[0].code == "duplicate_custom_id"
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}"), purpose="fine-tune")
