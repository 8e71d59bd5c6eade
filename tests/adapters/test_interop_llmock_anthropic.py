"""Interop: AnthropicAdapter (the real ``anthropic`` SDK) against llmock's ``/anthropic``.

llmock (PROVIDERS.md §7) is a mock server nobody here wrote: per-key token buckets with
``anthropic-ratelimit-*`` headers (RFC 3339 resets), ``rate_limit_error`` 429s with
``retry-after``, scripted 529 ``overloaded_error`` faults, a journal of every attempt and a
verdict on the client. The server and its helpers are those of
tests/adapters/test_interop_llmock.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.adapters import test_interop_llmock as base
from tests.adapters.test_interop_llmock import (
    EXTRA,
    MAX_TOKENS,
    RPM,
    LLMock,
    _assert_all_ok,
    _assert_clean,
    _prompts,
)
from throttlepool import ThreadedBatchRunner
from throttlepool.classify import ErrorKind
from throttlepool.outcome import Status

pytestmark = pytest.mark.service

# The llmock server (one per module) and its reset-per-test view, as base defines them.
llmock_proc = base.llmock_proc
mock = base.mock


def _anthropic(server: LLMock, key: str) -> Any:
    anthropic = pytest.importorskip("anthropic")
    from throttlepool.adapters import AnthropicAdapter

    # max_retries=5 on purpose: the adapter must switch the SDK's own retries off.
    client = anthropic.Anthropic(base_url=f"{server.url}/anthropic", api_key=key,
                                 max_retries=5)
    return AnthropicAdapter(client, model="claude-mock", max_tokens=MAX_TOKENS, extract="text")


def _item(text: str, model: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "model": model}


def test_headers_are_read(mock: LLMock) -> None:
    result = _anthropic(mock, "key-anthropic-headers").call("hello", 10)
    assert result.value == "Hello! You said: hello"
    assert result.rate is not None and result.rate.limit_requests == RPM
    assert result.rate.reset_requests is not None and 0 <= result.rate.reset_requests <= 61
    assert result.usage is not None and result.usage.input_tokens > 0


@pytest.mark.slow
def test_unknown_limit_batch_honours_llmock(mock: LLMock) -> None:
    """No limit given: pace from the anthropic-ratelimit-* headers; 429s waited out."""
    adapter = _anthropic(mock, "key-anthropic-unknown")
    prompts = _prompts("anthropic unknown", RPM + EXTRA)
    with ThreadedBatchRunner(adapter, batch_size=8, retries=6, timeout=10,
                             progress=False) as runner:
        result = runner.run(prompts)
    _assert_all_ok(result, prompts)
    records = mock.requests()
    statuses = [r["status"] for r in records]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) == len(prompts)
    assert len(records) == result.stats.calls == len(prompts) + result.stats.retries
    assert result.stats.wall_time < EXTRA * 60 / RPM + 15
    _assert_clean(mock.verdict())


@pytest.mark.slow
def test_known_limit_batch_sees_no_429(mock: LLMock) -> None:
    adapter = _anthropic(mock, "key-anthropic-known")
    prompts = _prompts("anthropic known", 16)
    with ThreadedBatchRunner(adapter, batch_size=8, limits=[f"{RPM // 60}/second"],
                             retries=6, timeout=10, progress=False) as runner:
        result = runner.run(prompts)
    _assert_all_ok(result, prompts)
    assert [r["status"] for r in mock.requests()] == [200] * len(prompts)
    assert result.stats.rate_limited == 0 and result.stats.retries == 0
    _assert_clean(mock.verdict())


def test_529_overloaded_is_retried_to_success(mock: LLMock) -> None:
    adapter = _anthropic(mock, "key-anthropic-529")
    model = "claude-overloaded"
    mock.script({"type": "fail", "status": 529, "times": 2, "match": {"model": model}})
    prompts = _prompts("anthropic 529", 6)
    items: list[Any] = list(prompts)
    items[3] = _item(prompts[3], model)
    with ThreadedBatchRunner(adapter, batch_size=4, retries=6, timeout=10,
                             progress=False) as runner:
        result = runner.run(items)
    _assert_all_ok(result, prompts)
    assert result.outcomes[3].attempts == 3
    assert [r["status"] for r in mock.requests() if r["model"] == model] == [529, 529, 200]
    _assert_clean(mock.verdict())


def test_400_is_not_retried(mock: LLMock) -> None:
    adapter = _anthropic(mock, "key-anthropic-400")
    model = "claude-bad-request"
    mock.script({"type": "fail", "status": 400, "times": 1, "match": {"model": model}})
    items: list[Any] = list(_prompts("anthropic 400", 6))
    items[2] = _item("bad", model)
    with ThreadedBatchRunner(adapter, batch_size=4, retries=6, timeout=10,
                             progress=False) as runner:
        result = runner.run(items)
    failed = [(o.index, o.status, o.attempts) for o in result.outcomes if not o.ok]
    assert failed == [(2, Status.FAILED, 1)] and result.stopped is None
    error = result.outcomes[2].error
    assert error is not None and adapter.classify(error).kind is ErrorKind.PERMANENT
    assert len(mock.requests()) == len(items)
    _assert_clean(mock.verdict())
