"""Separate input- and output-token windows (ITPM/OTPM): the exact window against a brute
force, and the anthropic SDK seeing ``anthropic-ratelimit-{input,output}-tokens-*`` headers
and a 429 ``rate_limit_error`` with ``retry-after`` when a budget is spent."""

from __future__ import annotations

import datetime
import random
import threading
import time

import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from test_sim_helpers import gclient, oai, say

from throttlepool.sim import SimConfig, Simulator
from throttlepool.sim.window import AdmissionLog, Limits, Windows

Event = tuple[float, int, int]  # time, input tokens, output tokens


def _fits(log: list[Event], t: float, cin: int, cout: int, itpm: int, otpm: int,
          w: float) -> bool:
    events = [*log, (t, cin, cout)]
    for start, _, _ in events:
        inside = [(i, o) for s, i, o in events if start <= s < start + w]
        if sum(i for i, _ in inside) > itpm or sum(o for _, o in inside) > otpm:
            return False
    return True


@pytest.mark.parametrize("seed", range(6))
def test_input_output_windows_match_brute_force_and_waits_are_exact(seed: int) -> None:
    rng = random.Random(seed)
    itpm, otpm, w = rng.randint(20, 60), rng.randint(10, 40), rng.choice([1.0, 0.5, 2.0])
    windows, log = Windows(), AdmissionLog()
    admitted: list[Event] = []
    t = 0.0
    for _ in range(150):
        t += rng.choice([0.0, 0.001, 0.01, 0.05, 0.2, w / 3])
        cin, cout = rng.randint(0, 25), rng.randint(0, 15)
        d = windows.admit("k", 1, t, None, None, w, Limits(itpm, otpm, cin, cout))
        if cin > itpm or cout > otpm:
            assert d.too_large and not d.admitted
            assert d.kind == ("input_tokens" if cin > itpm else "output_tokens")
            continue
        assert d.admitted == _fits(admitted, t, cin, cout, itpm, otpm, w)
        if d.admitted:
            admitted.append((t, cin, cout))
            log.add("k", t, 1, cin, cout)
            assert d.remaining_input == itpm - sum(i for s, i, _ in admitted if s > t - w)
            assert d.remaining_output == otpm - sum(o for s, _, o in admitted if s > t - w)
            continue
        assert d.kind in ("input_tokens", "output_tokens") and d.wait > 0
        assert not _fits(admitted, t + d.wait - 1e-6, cin, cout, itpm, otpm, w)
        assert _fits(admitted, t + d.wait + 1e-9, cin, cout, itpm, otpm, w)
    (max_in, max_out), per_key = log.io_maxima(w)
    assert 0 < max_in <= itpm and 0 < max_out <= otpm
    assert per_key == {"k": (max_in, max_out)}
    assert log.maxima(w)[0][0] > 0  # the request/token sweep shares the same log


# -- through the anthropic SDK ----------------------------------------------------------------

PROMPT = "x" * 400  # 100 input tokens; the reply "echo: " + prompt is 101 output tokens
MSG: list[MessageParam] = [{"role": "user", "content": PROMPT}]


def claude(sim: Simulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="a-test", base_url=sim.url, max_retries=0)


def _reset_in(value: str) -> float:
    when = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return when.timestamp() - time.time()


def test_success_headers_report_each_budget(sim: Simulator) -> None:
    sim.configure(rpm=50, itpm=1000, otpm=300)
    try:
        raw = claude(sim).messages.with_raw_response.create(model="c", max_tokens=200,
                                                             messages=MSG)
    finally:
        sim.configure(rpm=None, itpm=None, otpm=None)
    usage = raw.parse().usage
    assert (usage.input_tokens, usage.output_tokens) == (100, 101)
    h = raw.headers
    assert (h["anthropic-ratelimit-requests-limit"], h["anthropic-ratelimit-requests-remaining"]) \
        == ("50", "49")
    assert h["anthropic-ratelimit-input-tokens-limit"] == "1000"
    assert h["anthropic-ratelimit-input-tokens-remaining"] == "900"
    assert h["anthropic-ratelimit-output-tokens-limit"] == "300"
    assert h["anthropic-ratelimit-output-tokens-remaining"] == "199"
    # tokens-* is the most restrictive token budget in effect: the output one here.
    assert (h["anthropic-ratelimit-tokens-limit"], h["anthropic-ratelimit-tokens-remaining"]) \
        == ("300", "199")
    for unit in ("requests", "input-tokens", "output-tokens", "tokens"):
        assert 58.0 <= _reset_in(h[f"anthropic-ratelimit-{unit}-reset"]) <= 61.0
    stats = sim.stats()
    assert (stats["input_tokens_charged"], stats["output_tokens_charged"]) == (100, 101)


@pytest.mark.parametrize(("limits", "unit", "name", "left"), [
    ({"itpm": 250}, "input-tokens", "250 input tokens per minute", "50"),
    ({"otpm": 250}, "output-tokens", "250 output tokens per minute", "48"),
])
def test_a_spent_budget_is_a_429_rate_limit_error_with_retry_after(
        sim: Simulator, limits: dict[str, int], unit: str, name: str, left: str) -> None:
    sim.configure(window=3.0, **limits)
    try:
        c = claude(sim)
        for _ in range(2):
            c.messages.create(model="c", max_tokens=200, messages=MSG)
        with pytest.raises(anthropic.RateLimitError) as caught:
            c.messages.create(model="c", max_tokens=200, messages=MSG)
        err = caught.value
        assert err.status_code == 429 and err.type == "rate_limit_error"
        assert name in err.message
        h = err.response.headers
        # Whole seconds until the first admission leaves the 3 s window.
        assert 1 <= int(h["retry-after"]) <= 3
        assert h[f"anthropic-ratelimit-{unit}-limit"] == "250"
        assert h[f"anthropic-ratelimit-{unit}-remaining"] == left
        assert 1.0 <= _reset_in(h[f"anthropic-ratelimit-{unit}-reset"]) <= 4.0
        # The hint is enough: after it the same request is admitted.
        time.sleep(float(h["retry-after"]))
        assert c.messages.create(model="c", max_tokens=200, messages=MSG).usage.input_tokens \
            == 100
    finally:
        sim.configure(window=60.0, itpm=None, otpm=None)
    stats = sim.stats()
    assert stats["rate_limited"] == stats["limiter_rejections"] == 1


def test_a_prompt_larger_than_itpm_is_a_400_never_a_429(sim: Simulator) -> None:
    sim.configure(itpm=50)
    try:
        with pytest.raises(anthropic.BadRequestError) as caught:
            claude(sim).messages.create(model="c", max_tokens=5, messages=MSG)
    finally:
        sim.configure(itpm=None)
    assert caught.value.type == "invalid_request_error"
    assert "100 tokens > 50" in str(caught.value)
    assert sim.stats()["rate_limited"] == 0


def test_concurrent_clients_never_exceed_either_budget() -> None:
    with Simulator(SimConfig(itpm=1000, otpm=600, window=30.0)) as sim:
        c = claude(sim)
        outcomes: list[str] = []

        def worker() -> None:
            for _ in range(6):
                try:
                    c.messages.create(model="c", max_tokens=200, messages=MSG)
                    outcomes.append("ok")
                except anthropic.RateLimitError:
                    outcomes.append("429")

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        stats = sim.stats()
    # 600 // 101 = 5 replies fit the output budget (1000 // 100 = 10 would fit the input one).
    assert outcomes.count("ok") == 5 == stats["accepted"]
    assert stats["max_input_tokens_in_window"] == 500
    assert stats["max_output_tokens_in_window"] == 505 <= 600
    assert stats["per_key_io"] == {"a-test": {"max_input_tokens_in_window": 500,
                                              "max_output_tokens_in_window": 505}}


# -- the same limits on the OpenAI and Gemini formats ----------------------------------------


def test_openai_and_gemini_formats_name_the_input_token_limit(sim: Simulator) -> None:
    sim.configure(itpm=150)
    try:
        oai(sim).chat.completions.create(model="m", messages=say(PROMPT))
        with pytest.raises(openai.RateLimitError) as caught:
            oai(sim).chat.completions.create(model="m", messages=say(PROMPT))
        assert "on input tokens per min (ITPM): Limit 150, Used 100, Requested 100" \
            in caught.value.message
        assert caught.value.type == "tokens" and caught.value.code == "rate_limit_exceeded"
        assert caught.value.response.headers["retry-after-ms"]
        g = gclient(sim)
        g.models.generate_content(model="gem", contents=PROMPT)
        with pytest.raises(Exception, match="generate_content_input_token_count"):
            g.models.generate_content(model="gem", contents=PROMPT)
    finally:
        sim.configure(itpm=None)


def test_count_tokens_is_free_and_matches_the_usage(sim: Simulator) -> None:
    sim.configure(itpm=150)
    try:
        c = claude(sim)
        counted = [c.messages.count_tokens(model="c", messages=MSG).input_tokens
                   for _ in range(3)]  # 300 input tokens counted: no window is charged
        message = c.messages.create(model="c", max_tokens=5, messages=MSG)
    finally:
        sim.configure(itpm=None)
    assert counted == [message.usage.input_tokens] * 3 == [100] * 3
    stats = sim.stats()
    assert stats["accepted"] == 1 and stats["input_tokens_charged"] == 100
    assert sim.requests()[0]["path"] == "/v1/messages/count_tokens"
