"""Simulator faults (by content, probability, script), admin endpoints and statistics."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator

import openai
import pytest
import requests
from google.genai import errors as genai_errors
from test_sim_helpers import MSG, NO_RETRY, gclient, legacy, oai
from test_sim_helpers import say as _say

from throttlepool.sim import SimConfig, Simulator, banner

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from google.api_core import exceptions as gexc


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig()) as s:
        yield s


# -- faults ----------------------------------------------------------------------------


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
                # a hang lasts hang_seconds (5 s); 0.5 s once took a 500 sent late under a
                # full suite's load for a hang
                r = s.post(sim.url + "/echo", json={"prompt": str(i)}, timeout=(2, 1.5))
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


def test_banner_names_every_flag_that_sets_a_limit() -> None:
    """Without limits it says how to set one, input and output token windows included."""
    text = banner("http://127.0.0.1:1", SimConfig())
    assert all(flag in text for flag in ("--rpm", "--tpm", "--itpm", "--otpm")), text
    assert "1,000 output tokens per 60 s" in banner("http://127.0.0.1:1", SimConfig(otpm=1000))


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


def test_reply_to_a_client_that_timed_out_is_abandoned_not_counted(sim: Simulator) -> None:
    sim.configure(hang_seconds=0.5)
    body = {"prompt": "[[fault:hang]] once"}
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(sim.url + "/echo", json=body, timeout=0.2)
    time.sleep(0.5)
    st = sim.stats()
    assert (st["abandoned"], st["by_status"], st["in_flight"]) == (1, {}, 0)
    sim.configure(latency=0.2)
    with requests.Session() as s:  # a live keep-alive client still gets its delayed reply
        assert s.post(sim.url + "/echo", json={"prompt": "x"}, timeout=5).status_code == 200
        assert s.post(sim.url + "/echo", json={"prompt": "x"}, timeout=5).status_code == 200
    st = sim.stats()
    assert (st["abandoned"], st["by_status"], st["duplicates"]) == (1, {"200": 2}, 1)
