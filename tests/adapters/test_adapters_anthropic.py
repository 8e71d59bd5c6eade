"""The real ``anthropic`` SDK, through AnthropicAdapter, against the simulator's /v1/messages.

Every client is built with the SDK's own retries *on* (``max_retries=5``), so "one request per
attempt" (counted by the simulator) proves the adapter switched them off.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from throttlepool.classify import ErrorKind
from throttlepool.errors import NotAttempted, RunStopped
from throttlepool.outcome import Status
from throttlepool.retry import Retry
from throttlepool.runner import ThreadedBatchRunner
from throttlepool.sim import SimConfig, Simulator, SimulatorProcess

anthropic = pytest.importorskip("anthropic")

from throttlepool.adapters.anthropic import AnthropicAdapter  # noqa: E402

MODEL, MAX_TOKENS = "claude-x", 16
LIMIT, WINDOW, ITEMS = 50, 2.0, 300  # as tests/limiter/test_pacing.py runs the openai adapter


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(hang_seconds=5.0)) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(sim: Simulator) -> None:
    sim.configure(rpm=None, tpm=None, window=60.0, fail_rate={}, latency=0.0, jitter=0.0)
    sim.reset()


def _client(sim: Simulator, key: str = "k-anthropic") -> Any:
    return anthropic.Anthropic(api_key=key, base_url=sim.url, max_retries=5)


def _adapter(sim: Simulator | SimulatorProcess, **options: Any) -> AnthropicAdapter:
    options.setdefault("extract", "text")
    return AnthropicAdapter(_client(sim), model=MODEL, max_tokens=MAX_TOKENS, **options)


def _fail(adapter: AnthropicAdapter, item: Any, timeout: float = 5.0) -> BaseException:
    with pytest.raises(anthropic.APIError) as info:
        adapter.call(item, timeout)
    return info.value


def _requests(sim: Simulator) -> int:
    return int(sim.stats()["requests"])


# ---- one call ------------------------------------------------------------------------------


def test_message_text_usage_headers_and_estimate(sim: Simulator) -> None:
    sim.configure(rpm=100, tpm=100_000)
    adapter = _adapter(sim, extract=None)
    prompt = "Say hello to the simulator, please."
    cost = adapter.estimate(prompt)
    result = adapter.call(prompt, 5.0)
    assert isinstance(result.value, anthropic.types.Message)
    assert result.value.content[0].text == "echo: " + prompt
    sent = sim.requests()[-1]["body"]
    assert sent == {"model": MODEL, "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": prompt}]}
    usage = result.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
    # Reserved: the prompt estimate plus max_tokens; the server charged what it generated.
    stats = sim.stats()
    assert cost.requests == 1.0 and cost.output == 0.0
    assert cost.tokens >= stats["tokens_charged"] == usage.total_tokens
    assert cost.tokens <= usage.input_tokens + MAX_TOKENS + 2
    rate = result.rate
    assert rate is not None and (rate.limit_requests, rate.remaining_requests) == (100, 99)
    assert rate.limit_tokens == 100_000
    assert rate.remaining_tokens == 100_000 - usage.total_tokens
    # RFC 3339 reset times read as seconds from now: the 60 s window, rounded up to a second.
    assert rate.reset_requests is not None and 58.0 <= rate.reset_requests <= 61.5
    assert stats["requests"] == 1 and stats["by_status"] == {"200": 1}


def test_text_blocks_are_joined_and_system_prompt_sent(sim: Simulator) -> None:
    adapter = _adapter(sim, system="Be brief.")
    item = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                      {"type": "text", "text": "b"}]}]}
    assert adapter.call(item, 5.0).value == "echo: Be brief.\nab"
    assert sim.requests()[-1]["body"]["system"] == "Be brief."
    assert adapter.identity() == {"provider": "anthropic", "method": "messages", "model": MODEL,
                                  "params": {"max_tokens": MAX_TOKENS, "system": "Be brief."}}


@pytest.mark.parametrize(("fault", "kind"), [
    ("529", ErrorKind.TRANSIENT), ("500", ErrorKind.TRANSIENT), ("503", ErrorKind.TRANSIENT),
    ("reset", ErrorKind.TRANSIENT), ("400", ErrorKind.PERMANENT), ("401", ErrorKind.FATAL),
    ("quota", ErrorKind.FATAL),
])
def test_faults_classify_with_one_request(sim: Simulator, fault: str, kind: ErrorKind) -> None:
    adapter = _adapter(sim)
    with pytest.raises(Exception) as info:
        adapter.call(f"hello [[fault:{fault}]]", 5.0)
    verdict = adapter.classify(info.value)
    assert verdict.kind is kind, verdict
    assert _requests(sim) == 1  # the SDK (max_retries=5) would have sent up to 6


def test_529_is_overloaded_and_carries_its_hint(sim: Simulator) -> None:
    adapter = _adapter(sim)
    exc = _fail(adapter, "hello [[fault:529]]")
    assert isinstance(exc, anthropic.OverloadedError)
    assert exc.type == "overloaded_error"
    verdict = adapter.classify(exc)
    assert (verdict.kind, verdict.retry_after) == (ErrorKind.TRANSIENT, 1.0)
    assert "overloaded" in verdict.reason


def test_credit_balance_is_fatal(sim: Simulator) -> None:
    adapter = _adapter(sim)
    exc = _fail(adapter, "hello [[fault:quota]]")
    assert isinstance(exc, anthropic.BadRequestError)
    verdict = adapter.classify(exc)
    assert verdict.kind is ErrorKind.FATAL and "credit" in verdict.reason


def _error_body(type_: str, message: str = "x", code: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"type": type_, "message": message}
    if code is not None:
        err["details"] = {"error_code": code}
    return {"type": "error", "error": err}


@pytest.mark.parametrize(("status", "body", "kind"), [
    (400, _error_body("invalid_request_error", "max_tokens: Field required"),
     ErrorKind.PERMANENT),
    (401, _error_body("authentication_error", "invalid x-api-key"), ErrorKind.FATAL),
    (402, _error_body("billing_error", "payment required"), ErrorKind.FATAL),
    (403, _error_body("permission_error"), ErrorKind.FATAL),
    (404, _error_body("not_found_error", "model: claude-x"), ErrorKind.PERMANENT),
    (413, _error_body("request_too_large"), ErrorKind.PERMANENT),
    (429, _error_body("rate_limit_error", "spend", "enforced_spend_limit_reached"),
     ErrorKind.FATAL),
    (429, _error_body("rate_limit_error"), ErrorKind.RATE_LIMITED),
    (500, _error_body("api_error"), ErrorKind.TRANSIENT),
])
def test_statuses_classify_like_the_other_providers(sim: Simulator, status: int,
                                                    body: dict[str, Any],
                                                    kind: ErrorKind) -> None:
    adapter = _adapter(sim)
    sim.script([{"status": status, "body": body}])
    verdict = adapter.classify(_fail(adapter, "hello"))
    assert verdict.kind is kind, verdict
    assert _requests(sim) == 1


def test_429_hint_from_retry_after_or_the_reset_time(sim: Simulator) -> None:
    adapter = _adapter(sim)
    sim.script([{"status": 429, "headers": {"retry-after": "3"},
                 "body": _error_body("rate_limit_error")}])
    exc = _fail(adapter, "a")
    assert adapter.classify(exc).retry_after == 3.0
    info = adapter.rate_info(exc)
    assert info is not None and info.retry_after == 3.0
    # No retry-after (anthropic-sdk-typescript#357): the spent budget's RFC 3339 reset.
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 8))
    sim.script([{"status": 429, "headers": {
        "x-should-retry": "true", "anthropic-ratelimit-requests-limit": "5",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": reset}, "body": _error_body("rate_limit_error")}])
    verdict = adapter.classify(_fail(adapter, "b"))
    assert verdict.kind is ErrorKind.RATE_LIMITED
    assert verdict.retry_after is not None and 6.5 <= verdict.retry_after <= 8.5
    assert _requests(sim) == 2


def test_real_rate_limit_from_the_window(sim: Simulator) -> None:
    sim.configure(rpm=2)
    adapter = _adapter(sim)
    adapter.call("one", 5.0)
    adapter.call("two", 5.0)
    exc = _fail(adapter, "three")
    assert isinstance(exc, anthropic.RateLimitError) and exc.type == "rate_limit_error"
    verdict = adapter.classify(exc)
    assert verdict.kind is ErrorKind.RATE_LIMITED
    assert verdict.retry_after is not None and 0 < verdict.retry_after <= 60
    assert _requests(sim) == 3


# ---- runs ----------------------------------------------------------------------------------


def test_529_faults_all_end_correct_one_request_per_attempt(sim: Simulator) -> None:
    sim.configure(fail_rate={"529": 0.2}, seed=5)
    items = [f"item {i}" for i in range(24)]
    with ThreadedBatchRunner(_adapter(sim), batch_size=6, timeout=5.0, progress=False,
                             retry=Retry(attempts=8, base=0.01, cap=0.05)) as runner:
        result = runner.run(items)
    stats = sim.stats()
    assert result.all_succeeded, result.errors
    assert result.results == ["echo: " + i for i in items]
    assert stats["faults"].get("529", 0) > 0
    assert result.stats.calls == stats["requests"] == len(items) + stats["faults"]["529"]


def test_401_stops_the_run(sim: Simulator) -> None:
    items = [f"item {i}" for i in range(3)] + ["item 3 [[fault:401]]"] + [
        f"item {i}" for i in range(4, 10)]
    with ThreadedBatchRunner(_adapter(sim), batch_size=1, timeout=5.0,
                             progress=False) as runner:
        result = runner.run(items)
    assert isinstance(result.stopped, RunStopped)
    assert isinstance(result.stopped.cause, anthropic.AuthenticationError)
    assert [o.status for o in result.outcomes[:4]] == [Status.OK] * 3 + [Status.FAILED]
    assert all(isinstance(e, NotAttempted) for e in result.errors[4:])
    assert _requests(sim) == 4  # never retried, nothing sent after it


def test_credit_balance_stops_the_run(sim: Simulator) -> None:
    items = ["a", "b [[fault:quota]]", "c", "d"]
    with ThreadedBatchRunner(_adapter(sim), batch_size=1, timeout=5.0,
                             progress=False) as runner:
        result = runner.run(items)
    assert isinstance(result.stopped, RunStopped)
    assert result.outcomes[0].ok and not result.outcomes[1].ok
    assert _requests(sim) == 2


def _paced_run(sim: SimulatorProcess, **limits: Any) -> tuple[Any, dict[str, Any]]:
    sim.configure(rpm=LIMIT, window=WINDOW, latency=0.01, jitter=0.005)
    sim.reset()
    runner = ThreadedBatchRunner(_adapter(sim), batch_size=16, progress=False, **limits)
    with runner:
        result = runner.run([f"item {i}" for i in range(ITEMS)])
    return result, sim.stats()


def test_known_limit_sees_no_429_and_no_window_over_the_limit(
        remote_sim: SimulatorProcess) -> None:
    result, stats = _paced_run(remote_sim, limits=[f"{LIMIT}/{WINDOW}s"])
    assert result.all_succeeded
    assert result.results == [f"echo: item {i}" for i in range(ITEMS)]
    assert stats["max_requests_in_window"] <= LIMIT
    assert stats["rate_limited"] == 0


def test_unknown_limit_is_paced_from_the_anthropic_headers(
        remote_sim: SimulatorProcess) -> None:
    result, stats = _paced_run(remote_sim)
    assert result.all_succeeded
    assert result.results == [f"echo: item {i}" for i in range(ITEMS)]
    # the bound tests/limiter/test_pacing.py holds openai to
    assert stats["rate_limited"] <= 0.02 * ITEMS


def test_known_token_limit_settles_to_usage_and_sees_no_429(
        remote_sim: SimulatorProcess) -> None:
    sim = remote_sim
    # The simulator charges prompt + generated output (not max_tokens), as Anthropic counts;
    # the adapter reserves prompt + max_tokens and settles to the reported usage.
    tpm = 600
    sim.configure(tpm=tpm, window=WINDOW)
    items = [f"token item {i}" for i in range(60)]
    with ThreadedBatchRunner(_adapter(sim), batch_size=8, progress=False,
                             limits=[f"{tpm} tokens/{WINDOW}s"]) as runner:
        result = runner.run(items)
    stats = sim.stats()
    assert result.results == ["echo: " + i for i in items]
    assert stats["rate_limited"] == 0 and stats["max_tokens_in_window"] <= tpm
    assert result.stats.input_tokens + result.stats.output_tokens == stats["tokens_charged"]


def test_async_client_is_awaited_on_the_runners_loop(sim: Simulator) -> None:
    client = anthropic.AsyncAnthropic(api_key="k-async", base_url=sim.url, max_retries=5)
    adapter = AnthropicAdapter(client, model=MODEL, max_tokens=MAX_TOKENS, extract="text")
    assert adapter.is_async
    sim.configure(fail_rate={"529": 0.2}, seed=7)
    items = [f"async {i}" for i in range(16)]
    with ThreadedBatchRunner(adapter, batch_size=4, timeout=5.0, progress=False,
                             retry=Retry(attempts=8, base=0.01, cap=0.05)) as runner:
        result = runner.run(items)
    assert result.results == ["echo: " + i for i in items]
    assert result.stats.calls == _requests(sim)
    assert all(r["headers"].get("x-stainless-async", "").startswith("async")
               for r in sim.requests())


def test_connect_failure_names_the_address() -> None:
    client = anthropic.Anthropic(api_key="k", base_url="http://127.0.0.1:9", max_retries=5)
    adapter = AnthropicAdapter(client, model=MODEL)
    with pytest.raises(anthropic.APIConnectionError) as info:
        adapter.call("hi", 2.0)
    verdict = adapter.classify(info.value)
    assert verdict.kind is ErrorKind.TRANSIENT and verdict.unreachable == "127.0.0.1:9"
    assert "127.0.0.1:9" in str(info.value)


def test_x_api_key_is_the_budget_key_and_never_logged_in_full(sim: Simulator) -> None:
    import json
    import urllib.request

    sim.configure(rpm=1)
    body = json.dumps({"model": MODEL, "max_tokens": 8,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    statuses = []
    for key in ("sk-ant-api03-first-0123456789", "sk-ant-api03-second-0123456789"):
        request = urllib.request.Request(
            f"{sim.url}/v1/messages", data=body, method="POST",
            headers={"x-api-key": key, "anthropic-version": "2023-06-01",
                     "content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            statuses.append(response.status)
    assert statuses == [200, 200]  # one request a minute per key: two keys, two budgets
    logged = [r["headers"]["x-api-key"] for r in sim.requests()]
    assert len(logged) == 2 and not any("0123456789" in k for k in logged)


def test_async_adapter_survives_a_second_runner_and_plain_calls(sim: Simulator) -> None:
    # An AsyncAnthropic client's pooled connections belong to the loop that opened them.
    client = anthropic.AsyncAnthropic(api_key="k-async-2", base_url=sim.url, max_retries=5)
    adapter = AnthropicAdapter(client, model=MODEL, max_tokens=MAX_TOKENS, extract="text")
    for run in range(2):
        with ThreadedBatchRunner(adapter, batch_size=4, retries=0, timeout=5.0,
                                 progress=False) as runner:
            result = runner.run([f"run {run} item {i}" for i in range(4)])
        assert result.results == [f"echo: run {run} item {i}" for i in range(4)], result.errors
    assert [adapter.call(f"plain {i}", 5.0).value for i in range(2)] == [
        "echo: plain 0", "echo: plain 1"]
    assert _requests(sim) == 10
