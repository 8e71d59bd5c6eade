"""Simulator vs the unmodified SDKs: openai, google-genai, google-generativeai, requests."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator

import openai
import pytest
import requests
from google.genai import errors as genai_errors
from google.genai import types
from test_sim_helpers import MSG, NO_RETRY, gclient, legacy, oai

from throttlepool.sim import SimConfig, Simulator

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from google.api_core import exceptions as gexc


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig()) as s:
        yield s


# -- success paths -----------------------------------------------------------------------


def test_openai_chat_success_usage_and_headers(sim: Simulator) -> None:
    sim.configure(rpm=10, tpm=1000, window=60.0)
    raw = oai(sim).chat.completions.with_raw_response.create(
        model="gpt-x", messages=MSG, max_tokens=5, n=2
    )
    r = raw.parse()
    assert [c.message.content for c in r.choices] == ["echo: hello world"] * 2
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (2, 8)
    assert r.usage.total_tokens == 10
    h = raw.headers
    assert h["x-ratelimit-limit-requests"] == "10"
    assert h["x-ratelimit-remaining-requests"] == "9"
    assert h["x-ratelimit-remaining-tokens"] == str(1000 - (11 // 4 + 5 * 2))
    assert h["x-ratelimit-reset-requests"] == "1m0s"
    assert raw.request_id is not None
    assert sim.stats()["tokens_charged"] == 12


def test_openai_completion_capped_by_max_tokens(sim: Simulator) -> None:
    r = oai(sim).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x" * 100}], max_completion_tokens=3
    )
    assert r.usage is not None and r.usage.completion_tokens == 3
    assert r.choices[0].finish_reason == "length"


def test_openai_embeddings_float_and_base64(sim: Simulator) -> None:
    c = oai(sim)
    a = c.embeddings.create(model="e", input=["alpha", "beta"])  # SDK asks for base64
    b = c.embeddings.create(model="e", input=["alpha", "beta"], encoding_format="float")
    assert [d.index for d in a.data] == [0, 1]
    assert len(a.data[0].embedding) == 8
    assert a.data[0].embedding == pytest.approx(b.data[0].embedding, abs=1e-6)
    assert a.data[0].embedding != a.data[1].embedding
    assert a.usage.prompt_tokens == len("alpha\nbeta") // 4


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_google_genai_success(sim: Simulator, version: str) -> None:
    c = gclient(sim, version)  # keep a reference: the client closes its transport when collected
    r = c.models.generate_content(
        model="gemini-x",
        contents="tell me",
        config=types.GenerateContentConfig(max_output_tokens=40),
    )
    assert r.text == "echo: tell me"
    assert r.usage_metadata is not None
    assert r.usage_metadata.prompt_token_count == 1
    assert r.usage_metadata.total_token_count == 1 + len("echo: tell me") // 4
    assert sim.stats()["requests_by_path"] == {f"/{version}/models/gemini-x:generateContent": 1}
    assert sim.stats()["tokens_charged"] == 7 // 4 + 40


def test_google_generativeai_success(sim: Simulator) -> None:
    r = legacy(sim).generate_content("old sdk", request_options=NO_RETRY)
    assert r.text == "echo: old sdk"
    assert r.usage_metadata.total_token_count == 1 + 3


def test_requests_echo(sim: Simulator) -> None:
    r = requests.post(sim.url + "/echo", json={"prompt": "plain", "max_tokens": 2}, timeout=5)
    assert r.status_code == 200
    assert r.json() == {
        "result": "echo: plain",
        "model": "echo",
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    assert requests.post(sim.url + "/nope", json={}, timeout=5).status_code == 404
    assert requests.get(sim.url + "/echo", timeout=5).status_code == 404
    assert requests.post(sim.url + "/echo", data=b"{", timeout=5).status_code == 400


# -- 429 in every SDK ----------------------------------------------------------------------


def test_openai_rate_limit_error_fields(sim: Simulator) -> None:
    sim.configure(rpm=1, window=1.0)
    c = oai(sim)
    c.chat.completions.create(model="gpt-x", messages=MSG)
    with pytest.raises(openai.RateLimitError) as ei:
        c.chat.completions.create(model="gpt-x", messages=MSG)
    e = ei.value
    assert (e.status_code, e.code, e.type, e.param) == (
        429,
        "rate_limit_exceeded",
        "requests",
        None,
    )
    assert "on requests per min (RPM): Limit 1, Used 1, Requested 1. Please try again in" in (
        e.message
    )
    h = e.response.headers
    assert h["retry-after"] == "1"
    assert 0 < int(h["retry-after-ms"]) <= 1000
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"].endswith("ms")
    assert f"Please try again in {h['retry-after-ms']}ms." in e.message
    assert sim.stats()["rate_limited"] == 1


def test_openai_tokens_429_and_request_too_large(sim: Simulator) -> None:
    sim.configure(tpm=100, window=1.0)
    c = oai(sim)
    c.chat.completions.create(model="gpt-x", messages=MSG, max_tokens=60)
    with pytest.raises(openai.RateLimitError) as ei:
        c.chat.completions.create(model="gpt-x", messages=MSG, max_tokens=60)
    assert ei.value.type == "tokens"
    assert "tokens per min (TPM): Limit 100, Used 62, Requested 62." in ei.value.message
    with pytest.raises(openai.RateLimitError) as big:
        c.chat.completions.create(model="gpt-x", messages=MSG, max_tokens=99)
    e = big.value
    assert isinstance(e.body, dict)  # the inner error object; e.message has a version prefix
    assert e.body["message"].startswith("Request too large for gpt-x")
    assert "(TPM): Limit 100, Requested 101." in e.message
    assert (e.type, e.code) == ("tokens", "rate_limit_exceeded")
    assert "retry-after" not in e.response.headers
    assert sim.stats()["accepted"] == 1


def test_google_genai_rate_limit(sim: Simulator) -> None:
    sim.configure(rpm=1, window=1.0)
    c = gclient(sim, "v1beta")
    c.models.generate_content(model="gemini-x", contents="a")
    with pytest.raises(genai_errors.ClientError) as ei:
        c.models.generate_content(model="gemini-x", contents="a")
    e = ei.value
    assert (e.code, e.status) == (429, "RESOURCE_EXHAUSTED")
    details = e.details["error"]["details"]
    delay = next(d["retryDelay"] for d in details if d["@type"].endswith("RetryInfo"))
    assert 0 < float(delay.rstrip("s")) <= 1.0
    assert f"Please retry in {delay}." in (e.message or "")
    quota = next(d for d in details if d["@type"].endswith("QuotaFailure"))
    assert "PerDay" not in quota["violations"][0]["quotaId"]
    assert "retry-after" not in e.response.headers  # real Gemini sends no such headers


def test_google_generativeai_rate_limit_with_optional_headers(sim: Simulator) -> None:
    sim.configure(rpm=1, window=1.0, gemini_headers=True)
    model = legacy(sim)
    model.generate_content("a", request_options=NO_RETRY)
    with pytest.raises(gexc.TooManyRequests) as ei:
        model.generate_content("a", request_options=NO_RETRY)
    e = ei.value
    assert e.code == 429
    assert any(d.get("retryDelay") for d in e.details)
    assert e.response.headers["retry-after"] == "1"
    assert e.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_requests_rate_limit_and_per_key_budgets(sim: Simulator) -> None:
    sim.configure(rpm=1, window=1.0)
    url = sim.url + "/echo"

    def post(key: str) -> requests.Response:
        hdrs = {"authorization": f"Bearer {key}"}
        return requests.post(url, json={"prompt": "p"}, headers=hdrs, timeout=5)

    assert post("a").status_code == 200
    assert post("b").status_code == 200  # its own budget
    r = post("a")
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(r.headers["retry-after"]) == 1
    sim.configure(per_key=False)
    sim.reset()
    assert post("a").status_code == 200
    assert post("b").status_code == 429  # one shared budget now


def test_gemini_keys_from_header_and_query(sim: Simulator) -> None:
    sim.configure(rpm=1, window=1.0)
    base = sim.url + "/v1beta/models/g:generateContent"
    body = {"contents": [{"parts": [{"text": "q"}]}]}
    assert requests.post(base + "?key=one", json=body, timeout=5).status_code == 200
    assert (
        requests.post(base, json=body, headers={"x-goog-api-key": "one"}, timeout=5).status_code
        == 429
    )
    assert requests.post(base + "?key=two", json=body, timeout=5).status_code == 200
    assert set(sim.stats()["per_key"]) == {"one", "two"}


def test_retry_hint_is_exact(sim: Simulator) -> None:
    sim.configure(rpm=2, window=1.5)
    url = sim.url + "/echo"
    with requests.Session() as s:
        for _ in range(2):
            assert s.post(url, json={"prompt": "x"}, timeout=5).status_code == 200
        first = s.post(url, json={"prompt": "x"}, timeout=5)
        hint = int(first.headers["retry-after-ms"]) / 1000
        assert 1.0 < hint <= 1.5
        time.sleep(hint - 0.4)  # clearly early: still refused, with the remaining time as hint
        early = s.post(url, json={"prompt": "x"}, timeout=5)
        assert early.status_code == 429
        rest = int(early.headers["retry-after-ms"]) / 1000
        assert 0.05 < rest <= 0.4
        time.sleep(rest)  # waiting exactly the hint is enough
        assert s.post(url, json={"prompt": "x"}, timeout=5).status_code == 200


def test_gemini_request_too_large_is_invalid_argument(sim: Simulator) -> None:
    sim.configure(tpm=50)
    c = gclient(sim)
    with pytest.raises(genai_errors.ClientError) as ei:
        c.models.generate_content(
            model="g", contents="x", config=types.GenerateContentConfig(max_output_tokens=51)
        )
    assert (ei.value.code, ei.value.status) == (400, "INVALID_ARGUMENT")


def test_gemini_system_instruction_counts_as_prompt(sim: Simulator) -> None:
    c = gclient(sim, "v1beta")
    r = c.models.generate_content(
        model="g",
        contents="user part",
        config=types.GenerateContentConfig(system_instruction="be brief"),
    )
    assert r.text == "echo: be brief\nuser part"


def test_openai_sdk_own_retry_waits_the_hint_and_is_admitted(sim: Simulator) -> None:
    sim.configure(rpm=1, window=1.0)
    c = openai.OpenAI(api_key="k", base_url=sim.openai_base_url, max_retries=1)
    c.chat.completions.create(model="m", messages=MSG)
    t0 = time.perf_counter()
    raw = c.chat.completions.with_raw_response.create(model="m", messages=MSG)
    took = time.perf_counter() - t0
    assert raw.retries_taken == 1  # retry-after-ms was honoured and exactly enough
    assert 0.8 < took < 1.5
    st = sim.stats()
    assert (st["limiter_rejections"], st["accepted"], st["max_requests_in_window"]) == (1, 2, 1)
