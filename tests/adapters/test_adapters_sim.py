"""Contract tests: each real SDK, through its adapter, against the simulator on 127.0.0.1.

Every client is built with its SDK's retries *on* where the SDK allows it, so "one HTTP
request per call" (from the simulator's own count) proves the adapter switched them off.
"""

from __future__ import annotations

import email.utils
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from throttlepool.adapters import Adapter, HttpAdapter
from throttlepool.classify import ErrorKind
from throttlepool.sim import SimConfig, Simulator

warnings.filterwarnings("ignore", category=FutureWarning)  # google-generativeai is deprecated

MAX_TOKENS = 16


@dataclass(frozen=True)
class Kit:
    """How to build one provider's adapter against a simulator, and its error format."""

    name: str
    api: str  # "openai" or "gemini": the error-body format the SDK expects
    build: Callable[[Simulator], Adapter[Any]]
    auth_requests: int = 1  # HTTP requests the SDK makes for one call answered 401


def _openai(sim: Simulator) -> Adapter[Any]:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    client = openai.OpenAI(api_key="k-openai", base_url=sim.openai_base_url, max_retries=5)
    return OpenAIAdapter(client, model="gpt-4o-mini", max_tokens=MAX_TOKENS)


def _genai(sim: Simulator) -> Adapter[Any]:
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    from throttlepool.adapters.google_genai import GenAIAdapter

    client = genai.Client(api_key="k-genai", http_options=types.HttpOptions(
        base_url=sim.url, retry_options=types.HttpRetryOptions(attempts=5, initial_delay=0.1)))
    return GenAIAdapter(client, model="gemini-2.0-flash", max_output_tokens=MAX_TOKENS)


def _generativeai(sim: Simulator) -> Adapter[Any]:
    genai = pytest.importorskip("google.generativeai")
    from throttlepool.adapters.google_generativeai import GenerativeModelAdapter

    genai.configure(api_key="k-gai", transport="rest", client_options={"api_endpoint": sim.url})
    model = genai.GenerativeModel("gemini-2.0-flash",
                                  generation_config={"max_output_tokens": MAX_TOKENS})
    return GenerativeModelAdapter(model)


def _http(sim: Simulator) -> Adapter[Any]:
    return HttpAdapter(sim.url + "/echo", headers={"Authorization": "Bearer k-http"},
                       max_tokens=MAX_TOKENS)


KITS = [
    Kit("openai", "openai", _openai),
    Kit("gemini", "gemini", _genai),
    # google-auth's AuthorizedSession re-sends a 401 twice (PROVIDERS.md §3.3); not a retry
    # any option of the SDK switches off, and a 401 stops the run anyway.
    Kit("google-generativeai", "gemini", _generativeai, auth_requests=3),
    Kit("http", "openai", _http),
]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(hang_seconds=5.0)) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(sim: Simulator) -> None:
    sim.configure(rpm=None, tpm=None, window=60.0, gemini_headers=False)
    sim.reset()


@pytest.fixture(params=KITS, ids=[k.name for k in KITS])
def kit(request: pytest.FixtureRequest) -> Kit:
    kit: Kit = request.param
    return kit


def _requests(sim: Simulator) -> int:
    return int(sim.stats()["requests"])


def _fail(adapter: Adapter[Any], item: Any, timeout: float = 5.0) -> BaseException:
    with pytest.raises(Exception) as info:  # each SDK raises its own class
        adapter.call(item, timeout)
    return info.value


def _rate_limit_body(api: str, message: str = "Rate limited.", details: Any = ()) -> Any:
    if api == "openai":
        return {"error": {"message": message, "type": "requests",
                          "code": "rate_limit_exceeded", "param": None,
                          **({"details": list(details)} if details else {})}}
    return {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED",
                      "details": list(details)}}


def test_success_with_usage_and_estimate(kit: Kit, sim: Simulator) -> None:
    adapter = kit.build(sim)
    prompt = "Say hello to the simulator, please."
    cost = adapter.estimate(prompt)
    result = adapter.call(prompt, 5.0)
    value = result.value
    text = value if isinstance(value, dict) else value.text if kit.api == "gemini" else (
        value.choices[0].message.content)
    text = text["result"] if isinstance(text, dict) else text
    assert text == "echo: " + prompt
    assert result.usage is not None and result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0
    stats = sim.stats()
    assert stats["requests"] == 1 and stats["by_status"] == {"200": 1}
    # The reservation covers what the server charged (prompt estimate + max_tokens).
    assert cost.requests == 1.0
    assert stats["tokens_charged"] <= cost.tokens <= stats["tokens_charged"] + 8


def test_rate_headers_on_success(kit: Kit, sim: Simulator) -> None:
    if kit.name == "google-generativeai":
        pytest.skip("google-generativeai exposes no headers of a successful response")
    sim.configure(rpm=100, tpm=100_000, gemini_headers=True)
    result = kit.build(sim).call("hi", 5.0)
    assert result.rate is not None
    assert result.rate.limit_requests == 100 and result.rate.remaining_requests == 99
    assert result.rate.limit_tokens == 100_000


def _http_date(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


HINTS: list[tuple[str, dict[str, str], str, Any, float]] = [
    ("retry-after seconds", {"retry-after": "3"}, "Rate limited.", (), 3.0),
    ("retry-after http-date", {"retry-after": "<date+30>"}, "Rate limited.", (), 30.0),
    ("retry-after-ms wins", {"retry-after-ms": "1500", "retry-after": "5"}, "x", (), 1.5),
    ("x-ratelimit-reset when exhausted", {"x-ratelimit-remaining-requests": "0",
                                          "x-ratelimit-reset-requests": "1.2s"}, "x", (), 1.2),
    ("gemini retryDelay", {}, "x", [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                     "retryDelay": "2.5s"}], 2.5),
    ("try again in", {}, "Limit 30000. Please try again in 644ms.", (), 0.644),
]


@pytest.mark.parametrize(("case", "headers", "message", "details", "expected"), HINTS,
                         ids=[h[0] for h in HINTS])
def test_429_hints(kit: Kit, sim: Simulator, case: str, headers: dict[str, str], message: str,
                   details: Any, expected: float) -> None:
    adapter = kit.build(sim)
    headers = {k: _http_date(30) if v == "<date+30>" else v for k, v in headers.items()}
    sim.script([{"status": 429, "headers": headers,
                 "body": _rate_limit_body(kit.api, message, details)}])
    exc = _fail(adapter, "hello")
    verdict = adapter.classify(exc)
    assert verdict.kind is ErrorKind.RATE_LIMITED
    assert verdict.retry_after == pytest.approx(expected, abs=1.5 if "date" in case else 1e-6)
    info = adapter.rate_info(exc)
    assert info is not None and info.retry_after == pytest.approx(verdict.retry_after, abs=0.1)
    assert _requests(sim) == 1


def test_503_with_retry_after_is_transient_with_hint(kit: Kit, sim: Simulator) -> None:
    adapter = kit.build(sim)
    body = ({"error": {"message": "overloaded", "type": "service_unavailable_error",
                       "code": "server_is_overloaded"}} if kit.api == "openai" else
            {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    sim.script([{"status": 503, "headers": {"retry-after": "4"}, "body": body}])
    verdict = adapter.classify(_fail(adapter, "hello"))
    assert (verdict.kind, verdict.retry_after) == (ErrorKind.TRANSIENT, 4.0)
    assert _requests(sim) == 1  # google-generativeai alone would retry 503 for 10 minutes


@pytest.mark.parametrize(("fault", "kind"), [
    ("400", ErrorKind.PERMANENT), ("401", ErrorKind.FATAL), ("quota", ErrorKind.FATAL),
    ("500", ErrorKind.TRANSIENT), ("503", ErrorKind.TRANSIENT), ("reset", ErrorKind.TRANSIENT),
])
def test_faults_classify_with_one_request(kit: Kit, sim: Simulator, fault: str,
                                          kind: ErrorKind) -> None:
    adapter = kit.build(sim)
    verdict = adapter.classify(_fail(adapter, f"hello [[fault:{fault}]]"))
    assert verdict.kind is kind, verdict
    assert _requests(sim) == (kit.auth_requests if fault == "401" else 1)


def test_timeout_is_transient(kit: Kit, sim: Simulator) -> None:
    adapter = kit.build(sim)
    start = time.monotonic()
    verdict = adapter.classify(_fail(adapter, "hello [[fault:hang]]", timeout=0.3))
    assert verdict.kind is ErrorKind.TRANSIENT and verdict.reason == "timeout"
    assert time.monotonic() - start < 3
    assert _requests(sim) == 1


def test_request_too_large_is_permanent(kit: Kit, sim: Simulator) -> None:
    # OpenAI says so in a 429 ("Request too large ..."), Gemini with a 400.
    sim.configure(tpm=50)
    adapter = kit.build(sim)
    verdict = adapter.classify(_fail(adapter, "x" * 400))
    assert verdict.kind is ErrorKind.PERMANENT, verdict
    assert _requests(sim) == 1


def test_real_rate_limit_from_the_window(kit: Kit, sim: Simulator) -> None:
    sim.configure(rpm=2, window=60.0, gemini_headers=False)
    adapter = kit.build(sim)
    adapter.call("one", 5.0)
    adapter.call("two", 5.0)
    exc = _fail(adapter, "three")
    verdict = adapter.classify(exc)
    assert verdict.kind is ErrorKind.RATE_LIMITED
    assert verdict.retry_after is not None and 0 < verdict.retry_after <= 60
    assert _requests(sim) == 3


def test_embeddings(sim: Simulator) -> None:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    client = openai.OpenAI(api_key="k-emb", base_url=sim.openai_base_url)
    adapter = OpenAIAdapter(client, model="text-embedding-3-small", method="embeddings",
                            extract="embedding")
    result = adapter.call(["alpha", "beta"], 5.0)
    assert len(result.value) == 2 and all(isinstance(x, float) for x in result.value[0])
    assert result.usage is not None and result.usage.output_tokens == 0
    assert adapter.estimate(["alpha", "beta"]).tokens >= result.usage.input_tokens


def test_extract_text_and_json(sim: Simulator) -> None:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.common import to_jsonable
    from throttlepool.adapters.openai import OpenAIAdapter

    client = openai.OpenAI(api_key="k-x", base_url=sim.openai_base_url)
    text = OpenAIAdapter(client, model="m", extract="text").call("abc", 5.0)
    assert text.value == "echo: abc"
    raw = OpenAIAdapter(client, model="m").call("abc", 5.0)
    data = to_jsonable(raw.value)
    assert data["choices"][0]["message"]["content"] == "echo: abc"
    dumped = OpenAIAdapter(client, model="m", extract="response").call("abc", 5.0).value
    assert dumped["usage"]["prompt_tokens"] == raw.usage.input_tokens  # type: ignore[union-attr]


def test_runner_sees_every_attempt(kit: Kit, sim: Simulator) -> None:
    from throttlepool.retry import Retry
    from throttlepool.runner import ThreadedBatchRunner

    sim.configure(fail_rate={"500": 0.15, "reset": 0.1}, seed=3)
    adapter = kit.build(sim)
    items = [f"item {i}" for i in range(24)]
    # A 503's retry-after of 1 s would dominate the run time; faults here are 500 and reset.
    retry = Retry(attempts=8, base=0.01, cap=0.05)
    with ThreadedBatchRunner(adapter, batch_size=6, retry=retry, timeout=5.0) as runner:
        result = runner.run(items)
    sim.configure(fail_rate={})
    assert result.all_succeeded, result.errors
    texts = [r["result"] if isinstance(r, dict) else r.text if kit.api == "gemini" else
             r.choices[0].message.content for r in result.results]
    assert texts == ["echo: " + i for i in items]
    # Each attempt the runner made is exactly one request the server saw: no hidden retries.
    assert result.stats.calls == _requests(sim) > len(items)


def test_openai_custom_method_function(sim: Simulator) -> None:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    sim.configure(rpm=1000)
    seen: list[int] = []

    def create(client: Any, **params: Any) -> Any:
        seen.append(client.max_retries)
        return client.chat.completions.with_raw_response.create(**params)

    client = openai.OpenAI(api_key="k-fn", base_url=sim.openai_base_url)
    adapter = OpenAIAdapter(client, model="m", method=create, prompt_param="messages",
                            extract="text")
    result = adapter.call("abc", 5.0)
    assert result.value == "echo: abc" and seen == [0]
    assert result.rate is not None and result.rate.limit_requests == 1000
    assert adapter.identity()["method"].endswith("create")
