"""Simulator vs the unmodified SDKs: openai, google-genai, google-generativeai, requests."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from openai.types.chat import ChatCompletionMessageParam

from throttlepool.sim import SimConfig, Simulator, banner

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the legacy SDK warns about its end of support at import
    import google.generativeai as oldgenai
    from google.api_core import exceptions as gexc

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello world"}]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig()) as s:
        yield s


def oai(sim: Simulator, key: str = "sk-test", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=sim.openai_base_url, max_retries=0, **kw)


def gclient(sim: Simulator, version: str = "v1", key: str = "g-test") -> genai.Client:
    opts = types.HttpOptions(base_url=sim.url, api_version=version, retry_options=None)
    return genai.Client(api_key=key, http_options=opts)


def legacy(sim: Simulator, key: str = "legacy") -> Any:
    oldgenai.configure(  # type: ignore[attr-defined]
        api_key=key, transport="rest", client_options={"api_endpoint": sim.url}
    )
    return oldgenai.GenerativeModel("gemini-x")  # type: ignore[attr-defined]


NO_RETRY = {"retry": None, "timeout": 10}


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


# -- faults ----------------------------------------------------------------------------


def _say(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize(
    ("tag", "exc", "status"),
    [
        ("400", openai.BadRequestError, 400),
        ("401", openai.AuthenticationError, 401),
        ("500", openai.InternalServerError, 500),
        ("503", openai.InternalServerError, 503),
    ],
)
def test_openai_content_faults(sim: Simulator, tag: str, exc: type[Exception], status: int) -> None:
    with pytest.raises(exc) as ei:
        oai(sim).chat.completions.create(model="m", messages=_say(f"do [[fault:{tag}]] now"))
    assert isinstance(ei.value, openai.APIStatusError) and ei.value.status_code == status
    if tag == "503":
        assert ei.value.response.headers["retry-after"] == "1"
    assert sim.stats()["by_status"] == {str(status): 1}


def test_openai_quota_fault(sim: Simulator) -> None:
    sim.configure(rpm=100)
    with pytest.raises(openai.RateLimitError) as ei:
        oai(sim).chat.completions.create(model="m", messages=_say("[[fault:quota]]"))
    e = ei.value
    assert (e.type, e.code) == ("insufficient_quota", "insufficient_quota")
    assert isinstance(e.body, dict)
    assert e.body["message"].startswith("You exceeded your current quota")
    assert "retry-after" not in e.response.headers
    assert sim.stats()["accepted"] == 0  # refused before the window: not charged


def test_openai_reset_and_hang_faults(sim: Simulator) -> None:
    sim.configure(hang_seconds=1.0)
    with pytest.raises(openai.APIConnectionError) as reset:
        oai(sim).chat.completions.create(model="m", messages=_say("[[fault:reset]]"))
    assert not isinstance(reset.value, openai.APITimeoutError)
    with pytest.raises(openai.APITimeoutError):
        oai(sim, timeout=0.3).chat.completions.create(model="m", messages=_say("[[fault:hang]]"))
    assert sim.stats()["faults"] == {"reset": 1, "hang": 1}


def test_gemini_content_faults_both_sdks(sim: Simulator) -> None:
    c = gclient(sim)
    with pytest.raises(genai_errors.ClientError) as bad:
        c.models.generate_content(model="g", contents="[[fault:400]]")
    assert (bad.value.code, bad.value.status) == (400, "INVALID_ARGUMENT")
    with pytest.raises(genai_errors.ClientError) as quota:
        c.models.generate_content(model="g", contents="[[fault:quota]]")
    violations = quota.value.details["error"]["details"][0]["violations"]
    assert quota.value.code == 429 and "PerDay" in violations[0]["quotaId"]
    with pytest.raises(genai_errors.ServerError) as unavailable:
        c.models.generate_content(model="g", contents="[[fault:503]]")
    assert unavailable.value.status == "UNAVAILABLE"

    model = legacy(sim)
    with pytest.raises(gexc.BadRequest):
        model.generate_content("[[fault:400]]", request_options=NO_RETRY)
    with pytest.raises(gexc.TooManyRequests) as old_quota:
        model.generate_content("[[fault:quota]]", request_options=NO_RETRY)
    assert "PerDay" in old_quota.value.details[0]["violations"][0]["quotaId"]
    with pytest.raises(gexc.InternalServerError):
        model.generate_content("[[fault:500]]", request_options=NO_RETRY)
    with pytest.raises(requests.exceptions.ConnectionError):
        model.generate_content("[[fault:reset]]", request_options=NO_RETRY)


def _statuses(sim: Simulator, n: int) -> list[int | str]:
    out: list[int | str] = []
    with requests.Session() as s:
        for i in range(n):
            try:
                r = s.post(sim.url + "/echo", json={"prompt": str(i)}, timeout=(2, 0.5))
                out.append(r.status_code)
            except requests.exceptions.ReadTimeout:
                out.append("hang")
            except requests.exceptions.ConnectionError:
                out.append("reset")
    return out


def test_probabilistic_faults_are_seeded() -> None:
    rates = {"500": 0.2, "503": 0.1, "reset": 0.1, "hang": 0.05}
    with Simulator(SimConfig(fail_rate=rates, seed=7, hang_seconds=5.0)) as sim:
        first = _statuses(sim, 60)
        stats = sim.stats()
        sim.reset()  # reseeds the generator
        again = _statuses(sim, 60)
    assert first == again
    assert {500, 503, "reset", "hang", 200} <= set(first)
    assert stats["faults"] == {k: first.count(int(k) if k.isdigit() else k) for k in rates}
    assert stats["accepted"] == 60  # faults strike after admission, so they are charged


def test_latency_and_jitter() -> None:
    with Simulator(SimConfig(latency=0.2, jitter=0.05)) as sim, requests.Session() as s:
        took = []
        for _ in range(4):
            t0 = time.perf_counter()
            s.post(sim.url + "/echo", json={"prompt": "x"}, timeout=5)
            took.append(time.perf_counter() - t0)
    assert all(0.15 <= t < 1.0 for t in took)
    assert max(took) - min(took) > 0.001  # the jitter really varies


# -- scripts, admin endpoints, stats ---------------------------------------------------------


def test_script_steps_then_normal_behaviour(sim: Simulator) -> None:
    sim.configure(rpm=5)
    sim.script(
        [
            {"status": 429, "headers": {"retry-after": "1"}, "body": {"error": {"message": "x"}}},
            {"status": 502, "body": "<html><body>Bad gateway</body></html>"},
            {"status": 200, "delay": 0.1},
        ]
    )
    c = oai(sim)
    with pytest.raises(openai.RateLimitError) as rl:
        c.chat.completions.create(model="m", messages=MSG)
    assert rl.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError) as gw:
        c.chat.completions.create(model="m", messages=MSG)
    assert gw.value.status_code == 502 and "Bad gateway" in str(gw.value.body)
    t0 = time.perf_counter()
    assert c.chat.completions.create(model="m", messages=MSG).choices[0].message.content
    assert time.perf_counter() - t0 >= 0.1
    raw = c.chat.completions.with_raw_response.create(model="m", messages=MSG)
    assert raw.headers["x-ratelimit-remaining-requests"] == "4"  # scripts left the window alone
    st = sim.stats()
    assert (st["scripted"], st["script_pending"], st["accepted"]) == (3, 0, 1)


def test_admin_endpoints_over_http(sim: Simulator) -> None:
    u = sim.url
    assert (
        requests.post(u + "/__config", json={"rpm": 1, "window": 1.5}, timeout=5).json()["rpm"] == 1
    )
    assert sim.config.window == 1.5
    assert requests.post(u + "/__config", json={"rpm": "x"}, timeout=5).status_code == 400
    assert requests.post(u + "/__config", json={"nope": 1}, timeout=5).status_code == 400
    steps = [{"status": 503, "headers": {"Retry-After": "2"}}]
    assert requests.post(u + "/__script", json=steps, timeout=5).json() == {"pending": 1}
    assert requests.post(u + "/__script", json=[{"status": 9}], timeout=5).status_code == 400
    r = requests.post(u + "/echo", json={"prompt": "a"}, timeout=5)
    assert (r.status_code, r.headers["retry-after"]) == (503, "2")
    assert requests.post(u + "/echo", json={"prompt": "a"}, timeout=5).status_code == 200
    assert requests.post(u + "/echo", json={"prompt": "a"}, timeout=5).status_code == 429
    st = requests.get(u + "/__stats", timeout=5).json()
    assert st["by_status"] == {"200": 1, "429": 1, "503": 1}
    assert st["requests"] == 3 and st["requests_by_path"] == {"/echo": 3}
    assert requests.post(u + "/__reset", timeout=5).json() == {"ok": True}
    st = requests.get(u + "/__stats", timeout=5).json()
    assert (st["requests"], st["accepted"], st["first_admission"]) == (0, 0, None)
    assert requests.post(u + "/echo", json={"prompt": "a"}, timeout=5).status_code == 200


def test_stats_duplicates_and_key_redaction(sim: Simulator) -> None:
    secret = "sk-proj-" + "z" * 40
    c = oai(sim, key=secret)
    c.chat.completions.create(model="m", messages=_say("same"))
    c.chat.completions.create(model="m", messages=_say("same"))
    c.chat.completions.create(model="m", messages=_say("other"))
    st = sim.stats()
    assert st["duplicates"] == 1
    assert secret not in str(st)
    assert st["per_key"] == {
        "sk-...zzzz": {"accepted": 3, "max_requests_in_window": 3, "max_tokens_in_window": 3 * 17}
    }
    assert st["first_admission"] <= st["last_admission"] <= time.time()


def test_banner_names_both_base_urls(sim: Simulator) -> None:
    text = banner(sim.url)
    assert sim.openai_base_url in text and sim.url in text


def test_gemini_system_instruction_counts_as_prompt(sim: Simulator) -> None:
    c = gclient(sim, "v1beta")
    r = c.models.generate_content(
        model="g",
        contents="user part",
        config=types.GenerateContentConfig(system_instruction="be brief"),
    )
    assert r.text == "echo: be brief\nuser part"


def test_long_keys_with_the_same_shape_stay_apart(sim: Simulator) -> None:
    for key in ("sk-" + "a" * 30 + "tail", "sk-" + "b" * 30 + "tail"):
        requests.post(
            sim.url + "/echo",
            json={"prompt": "x"},
            headers={"authorization": f"Bearer {key}"},
            timeout=5,
        )
    labels = list(sim.stats()["per_key"])
    assert len(labels) == 2 and labels[0] == "sk-...tail" and labels[1].startswith("sk-...tail#")


def test_reset_while_requests_are_in_flight(sim: Simulator) -> None:
    sim.configure(latency=0.4)
    t = threading.Thread(
        target=lambda: requests.post(sim.url + "/echo", json={"prompt": "x"}, timeout=5)
    )
    t.start()
    time.sleep(0.15)
    sim.reset()
    assert sim.stats()["in_flight"] == 1
    t.join()
    st = sim.stats()
    assert (st["in_flight"], st["by_status"], st["requests"]) == (0, {"200": 1}, 0)
