"""Interop: our adapters against ``llmock``, a rate-limited mock server nobody here wrote.

llmock (PyPI, MIT; see PROVIDERS.md §7) serves the OpenAI and Gemini APIs with per-API-key
token buckets (burst = the per-minute limit, refilled continuously), sends ``x-ratelimit-*``
headers on every answer and ``retry-after`` / ``retry-after-ms`` on its 429s, journals every
attempt, and grades the client from that journal at ``GET /_llmock/verdict``: it groups the
attempts of one call by a fingerprint of method, path and body, and flags a retry that came
earlier than Retry-After asked, a retried 4xx, more than 10 attempts for one call, retries at
a constant interval, and a retryable error given up without a single retry.

The server runs as a subprocess on 127.0.0.1 and is stopped by its PID. Each case uses its own
API keys (llmock keeps one bucket per provider and key) and resets llmock's journal and
scripted faults first. A missing llmock skips locally but fails under CI (``CI`` set).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from throttlepool import ThreadedBatchRunner
from throttlepool.adapters import Adapter
from throttlepool.adapters.base import CallResult, Delegating
from throttlepool.classify import ErrorKind
from throttlepool.outcome import BatchResult, Status

pytestmark = pytest.mark.service

#: llmock's own limits. The bucket holds RPM requests and refills at RPM/60 per second, so a
#: run of RPM + EXTRA items exhausts it and waits EXTRA * 60/RPM seconds for the rest.
RPM = 120
TPM = 1_000_000  # present in the headers, never binding
EXTRA = 16
LATENCY_MS = 15
MAX_TOKENS = 16
#: Verdict findings that mean the client misbehaved (PROVIDERS.md §7.1).
MISBEHAVIOURS = frozenset({
    "retry_after_ignored", "retried_non_retryable", "retry_storm", "no_backoff", "gave_up",
})
HOST = "127.0.0.1"


def _missing(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _command() -> list[str]:
    if importlib.util.find_spec("llmock") is None:
        _missing("llmock is not installed (pip install -e '.[test]')")
    # The console script of this interpreter first (a PATH shim may belong to another one).
    beside = Path(sys.executable).with_name("llmock")
    exe = str(beside) if beside.is_file() else shutil.which("llmock")
    if exe is not None:
        return [exe]
    # The console script may be off PATH (a venv not activated): run its entry point.
    return [sys.executable, "-c", "from llmock.cli import app; app()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class LLMock:
    """A running ``llmock serve`` and a tiny client for its ``/_llmock`` admin API."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/_llmock/{path}", data=data, method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        assert self.admin("POST", "reset") == {"reset": True}

    def script(self, *behaviors: dict[str, Any]) -> None:
        self.admin("POST", "scenario", {"behaviors": list(behaviors)})

    def requests(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self.admin("GET", "requests")["requests"]
        return records

    def verdict(self) -> dict[str, Any]:
        verdict: dict[str, Any] = self.admin("GET", "verdict")
        return verdict

    def stop(self) -> None:
        """Terminate this server by its PID and wait for it; kill it if it hangs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _wait_ready(server: LLMock, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            server.admin("GET", "scenario")
            return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def llmock_proc() -> Iterator[LLMock]:
    """``llmock serve`` on a free loopback port, with RPM/TPM per key and echo responses."""
    command = _command()
    port = _free_port()
    # No LLMOCK_* from the environment (error rates, config file) may change what we test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOCK_")}
    env["PYTHONUNBUFFERED"] = "1"
    with tempfile.TemporaryDirectory(prefix="llmock-") as tmp:
        log = Path(tmp) / "llmock.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*command, "serve", "--host", HOST, "--port", str(port),
                 "--rpm", str(RPM), "--tpm", str(TPM), "--latency-ms", str(LATENCY_MS),
                 "--response-style", "echo", "--log-level", "warning"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        server = LLMock(proc, f"http://{HOST}:{port}", log)
        try:
            if not _wait_ready(server, time.monotonic() + 30):
                output = log.read_text(errors="replace")[-3000:]
                pytest.fail(f"llmock did not answer on {server.url}:\n{output}")
            yield server
        finally:
            server.stop()


@pytest.fixture
def mock(llmock_proc: LLMock) -> LLMock:
    """The shared server with an empty journal and no scripted faults.

    (Not named ``llmock``: llmock's own pytest plugin has fixtures of that name.)
    """
    llmock_proc.reset()
    return llmock_proc


# ---- adapters ---------------------------------------------------------------------------


def _openai(server: LLMock, key: str, model: str = "gpt-mock") -> Adapter[Any]:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters import OpenAIAdapter

    # max_retries=5 on purpose: the adapter must switch the SDK's own retries off.
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=5)
    return OpenAIAdapter(client, model=model, max_tokens=MAX_TOKENS, extract="text")


def _gemini(server: LLMock, key: str, model: str = "gemini-mock") -> Adapter[Any]:
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    from throttlepool.adapters import GenAIAdapter

    # llmock serves only /gemini/v1beta; retry_options on purpose, as for openai above.
    client = genai.Client(api_key=key, http_options=types.HttpOptions(
        base_url=f"{server.url}/gemini", api_version="v1beta",
        retry_options=types.HttpRetryOptions(attempts=5, initial_delay=0.1)))
    return GenAIAdapter(client, model=model, max_output_tokens=MAX_TOKENS, extract="text")


Build = Callable[..., Adapter[Any]]
ADAPTERS: dict[str, Build] = {"openai": _openai, "gemini": _gemini}


def _item(provider: str, text: str, model: str) -> dict[str, Any]:
    """A request for one prompt on another model (what llmock's scenarios can match on)."""
    if provider == "openai":
        return {"messages": [{"role": "user", "content": text}], "model": model}
    return {"contents": text, "model": model}


# ---- checks -----------------------------------------------------------------------------


def _misbehaviours(verdict: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in verdict["findings"] if f["code"] in MISBEHAVIOURS]


def _assert_clean(verdict: dict[str, Any]) -> None:
    assert verdict["passed"] and verdict["errors"] == 0, json.dumps(verdict, indent=1)
    assert _misbehaviours(verdict) == [], json.dumps(verdict, indent=1)


def _prompts(tag: str, n: int) -> list[str]:
    # Distinct bodies: llmock tells a retry from a new call by the body's fingerprint.
    return [f"{tag} item {i}" for i in range(n)]


def _assert_all_ok(result: BatchResult[Any], prompts: list[str]) -> None:
    bad = [(o.index, o.status, repr(o.error)) for o in result.outcomes if not o.ok]
    assert bad == [] and result.stopped is None, bad
    # llmock's echo style answers "Hello! You said: <prompt>": results keep input order.
    assert result.results == [f"Hello! You said: {p}" for p in prompts]


# ---- batches under llmock's limits --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("provider", list(ADAPTERS))
def test_unknown_limit_batch_honours_llmock(mock: LLMock, provider: str) -> None:
    """No limit given: pace from llmock's headers; its 429s are waited out, never raced."""
    adapter = ADAPTERS[provider](mock, f"key-{provider}-unknown")
    prompts = _prompts(f"{provider} unknown", RPM + EXTRA)
    with ThreadedBatchRunner(adapter, batch_size=8, retries=6, timeout=10,
                             progress=False) as runner:
        result = runner.run(prompts)
    _assert_all_ok(result, prompts)
    records = mock.requests()
    assert all(r["provider"] == provider for r in records)
    statuses = [r["status"] for r in records]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) == len(prompts)
    # The SDK made no attempt of its own: llmock saw exactly the runner's calls.
    assert len(records) == result.stats.calls == len(prompts) + result.stats.retries
    assert statuses.count(429) == result.stats.rate_limited
    # llmock's bucket refills 2/s after its burst of RPM: that pace, not a crawl.
    assert result.stats.wall_time < EXTRA * 60 / RPM + 15
    _assert_clean(mock.verdict())


@pytest.mark.slow
@pytest.mark.parametrize("provider", list(ADAPTERS))
def test_known_limit_batch_sees_no_429(mock: LLMock, provider: str) -> None:
    """Told llmock's sustained rate (RPM/60 a second; within every 60 s, at most RPM), the
    runner's own limiter binds and llmock never has to refuse a request."""
    adapter = ADAPTERS[provider](mock, f"key-{provider}-known")
    prompts = _prompts(f"{provider} known", 16)
    per_second = RPM // 60
    with ThreadedBatchRunner(adapter, batch_size=8, limits=[f"{per_second}/second"],
                             retries=6, timeout=10, progress=False) as runner:
        result = runner.run(prompts)
    _assert_all_ok(result, prompts)
    statuses = [r["status"] for r in mock.requests()]
    assert statuses == [200] * len(prompts)
    assert result.stats.rate_limited == 0 and result.stats.retries == 0
    # The client-side limit did bind: 16 items at 2 per second take about 7.5 s.
    assert result.stats.wall_time >= (len(prompts) / per_second - 1) * 0.9
    _assert_clean(mock.verdict())


def _retry_gaps(records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(seconds waited, Retry-After asked) for every retry after a 429, by our own count.

    A cross-check of llmock's grouping: attempts of one call share a body fingerprint, and
    the batch's bodies are all distinct.
    """
    by_call: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r["seq"]):
        by_call.setdefault(record["fingerprint"], []).append(record)
    return [
        (after["started_at"] - before["ended_at"], before["retry_after"] or 0.0)
        for attempts in by_call.values()
        for before, after in itertools.pairwise(attempts)
        if before["status"] == 429
    ]


@pytest.mark.slow
@pytest.mark.parametrize("provider", list(ADAPTERS))
def test_unpaced_batch_waits_out_every_retry_after(mock: LLMock, provider: str) -> None:
    """No limit and no header pacing (``adaptive=False``): the runner runs into llmock's
    wall, so 429s with Retry-After are certain. Every retry must wait at least what the 429
    asked, and attempts stay bounded.

    Not every item need succeed here: llmock's Retry-After is the time until *one* request
    fits, and all paused workers resume together, so most of them meet another 429 and some
    items spend their attempts. That is the unpaced mode's known cost; what llmock grades
    (and this test asserts) is that no retry came early and none went on without bound.
    """
    adapter = ADAPTERS[provider](mock, f"key-{provider}-unpaced")
    prompts = _prompts(f"{provider} unpaced", RPM + 8)
    retries = 6
    with ThreadedBatchRunner(adapter, batch_size=8, retries=retries, adaptive=False,
                             timeout=10, progress=False) as runner:
        result = runner.run(prompts)
    assert result.stopped is None
    for outcome in result.outcomes:
        if outcome.ok:
            assert outcome.value == f"Hello! You said: {prompts[outcome.index]}"
        else:
            assert outcome.status is Status.FAILED and outcome.attempts == retries + 1
            assert outcome.error is not None
            assert adapter.classify(outcome.error).kind is ErrorKind.RATE_LIMITED
    assert result.stats.done >= RPM
    records = mock.requests()
    rejected = [r for r in records if r["status"] == 429]
    assert rejected and len(rejected) == result.stats.rate_limited
    # llmock's Retry-After is the time until one request fits: at a window's edge it can be
    # 0 (seen once in a full run). Such a 429 asks for no wait; every other must be honoured.
    assert any(r["retry_after"] for r in rejected)
    assert len(records) == result.stats.calls
    gaps = _retry_gaps(records)
    assert gaps and len(gaps) == result.stats.retries
    early = [(round(waited, 3), wanted) for waited, wanted in gaps if waited < wanted - 0.02]
    assert early == []
    _assert_clean(mock.verdict())


# ---- errors no retry can fix ---------------------------------------------------------------


@pytest.mark.parametrize("provider", list(ADAPTERS))
def test_400_is_not_retried(mock: LLMock, provider: str) -> None:
    """A scripted 400 fails its item after one attempt; the rest of the batch goes on."""
    adapter = ADAPTERS[provider](mock, f"key-{provider}-400")
    bad_model = f"{provider}-bad-request"
    mock.script({"type": "fail", "status": 400, "times": 1, "match": {"model": bad_model}})
    prompts = _prompts(f"{provider} 400", 12)
    items: list[Any] = list(prompts)
    items[5] = _item(provider, prompts[5], bad_model)
    with ThreadedBatchRunner(adapter, batch_size=8, retries=6, timeout=10,
                             progress=False) as runner:
        result = runner.run(items)
    assert result.stopped is None
    failed = [o for o in result.outcomes if not o.ok]
    assert [(o.index, o.status, o.attempts) for o in failed] == [(5, Status.FAILED, 1)]
    assert failed[0].error is not None
    assert adapter.classify(failed[0].error).kind is ErrorKind.PERMANENT
    records = mock.requests()
    assert [r["status"] for r in records if r["model"] == bad_model] == [400]
    assert len(records) == len(items) and result.stats.retries == 0
    _assert_clean(mock.verdict())


class _Starts(Delegating[Any]):
    """Records when each call starts and when the call to model ``failing`` raised
    (monotonic)."""

    def __init__(self, inner: Adapter[Any], failing: str) -> None:
        super().__init__(inner)
        self.failing = failing
        self.starts: list[float] = []
        self.failed_at: float | None = None

    def call(self, item: Any, timeout: float | None) -> CallResult[Any]:
        self.starts.append(time.monotonic())  # list.append is atomic across threads
        try:
            return self.inner.call(item, timeout)
        except Exception:
            if isinstance(item, dict) and item.get("model") == self.failing:
                self.failed_at = time.monotonic()
            raise


def test_insufficient_quota_stops_the_run(mock: LLMock) -> None:
    """OpenAI's ``insufficient_quota`` 429 is billing, not pacing: FATAL, one attempt, stop.

    llmock still sends ``retry-after: 1`` with it and counts every 429 as retryable, so its
    verdict grades this one attempt ``gave_up`` (a warning). Not retrying is right here
    (PROVIDERS.md §1: no retry can succeed until someone pays), so that warning, on that one
    call, is the only finding allowed.
    """
    quota_model = "openai-no-credit"
    adapter = _Starts(_openai(mock, "key-openai-quota"), quota_model)
    mock.script({"type": "fail", "status": 429, "code": "insufficient_quota", "times": 1,
                   "match": {"model": quota_model}})
    prompts = _prompts("openai quota", 40)
    items: list[Any] = list(prompts)
    items[2] = _item("openai", prompts[2], quota_model)
    with ThreadedBatchRunner(adapter, batch_size=8, retries=6, timeout=10,
                             progress=False) as runner:
        result = runner.run(items)
    assert result.stopped is not None
    bad = result.outcomes[2]
    assert (bad.status, bad.attempts) == (Status.FAILED, 1)
    assert bad.error is not None and adapter.classify(bad.error).kind is ErrorKind.FATAL
    not_attempted = [o.index for o in result.outcomes if o.status is Status.NOT_ATTEMPTED]
    assert not_attempted and not_attempted == list(range(len(items) - len(not_attempted),
                                                         len(items)))
    # How many calls precede the 429 depends on speed: under load the other seven workers
    # finish many items while item 2's answer waits to be read (23 of 40 seen at load 10).
    # The promise is that nothing starts once the 429 is handled. Between the failing call's
    # return and the loop handling it, each other worker can start at most one more call
    # (their completions reach the loop no later than it, and the loop handles them in order).
    assert adapter.failed_at is not None
    late = [start for start in adapter.starts if start > adapter.failed_at]
    assert len(late) <= 8 - 1, (len(late), len(adapter.starts))
    assert len(adapter.starts) == len(items) - len(not_attempted)
    assert all(o.status is Status.OK for o in result.outcomes[:2])
    records = mock.requests()
    quota = [r for r in records if r["model"] == quota_model]
    assert [(r["status"], r["retry_after"]) for r in quota] == [(429, 1.0)]
    assert len(records) == len(items) - len(not_attempted)
    assert result.stats.retries == 0
    verdict = mock.verdict()
    assert verdict["passed"] and verdict["errors"] == 0, json.dumps(verdict, indent=1)
    findings = _misbehaviours(verdict)
    assert [(f["code"], f["requests"]) for f in findings] == [("gave_up", [quota[0]["seq"]])]
