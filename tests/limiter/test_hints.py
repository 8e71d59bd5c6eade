"""Server wait hints: Retry-After, retry-after-ms, Go durations, retryDelay, message hints."""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Iterator, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlepool.hints import (
    parse_duration,
    parse_reset,
    parse_retry_after,
    parse_rfc3339,
    rate_info_from_headers,
    retry_after_from_headers,
    retry_delay_from_body,
    retry_delay_from_message,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), ("0", 0.0), ("1.5", 1.5), (" 20 ", 20.0), ("-3", 0.0), ("0.25", 0.25)],
)
def test_retry_after_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo 2024"])
def test_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_retry_after_ms_wins_and_headers_are_case_insensitive() -> None:
    assert retry_after_from_headers({"retry-after-ms": "644", "retry-after": "2"}) == 0.644
    assert retry_after_from_headers({"Retry-After": "3"}) == 3.0
    assert retry_after_from_headers({"RETRY-AFTER": "4"}) == 4.0
    assert retry_after_from_headers({"Retry-After-Ms": "1500"}) == 1.5
    assert retry_after_from_headers({"retry-after-ms": "junk", "retry-after": "2"}) == 2.0
    assert retry_after_from_headers({}) is None
    assert retry_after_from_headers(None) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("6m0s", 360.0),
        ("120ms", 0.12),
        ("1h2m3.5s", 3723.5),
        ("20ms", 0.02),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("0.5s", 0.5),
        ("17", 17.0),
        ("1.25", 1.25),
        ("3m120ms", 180.12),
    ],
)
def test_go_durations(value: str, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "abc", "5x", "ms", "1m 2z", "m5"])
def test_bad_durations_are_none(value: str | None) -> None:
    assert parse_duration(value) is None


@given(h=st.integers(0, 5), m=st.integers(0, 59), s=st.integers(0, 59), ms=st.integers(0, 999))
def test_duration_roundtrip(h: int, m: int, s: int, ms: int) -> None:
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + f"{s}s" + (f"{ms}ms" if ms else "")
    assert parse_duration(text) == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)


def test_openai_rate_headers() -> None:
    info = rate_info_from_headers({
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "199000",
        "x-ratelimit-reset-tokens": "6m0s",
        "retry-after-ms": "250",
    })
    assert info.limit_requests == 500 and info.remaining_requests == 499
    assert info.reset_requests == pytest.approx(0.12)
    assert info.limit_tokens == 200000 and info.remaining_tokens == 199000
    assert info.reset_tokens == 360.0
    assert info.retry_after == 0.25
    assert not info.empty
    assert rate_info_from_headers({}).empty
    assert rate_info_from_headers(None).empty


def test_gemini_retry_delay_from_body() -> None:
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "53s"},
    ]}}
    assert retry_delay_from_body(body) == 53.0
    assert retry_delay_from_body(body["error"]["details"]) == 53.0
    assert retry_delay_from_body([{"@type": "x.RetryInfo", "retryDelay": "1.5s"}]) == 1.5
    assert retry_delay_from_body(
        [{"@type": "google.rpc.RetryInfo", "retryDelay": {"seconds": 2, "nanos": 500_000_000}}]
    ) == 2.5
    assert retry_delay_from_body({"error": {"details": []}}) is None
    assert retry_delay_from_body("nope") is None
    assert retry_delay_from_body(None) is None


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Rate limit reached for gpt-4o. Please try again in 644ms.", 0.644),
        ("Please try again in 20s. Visit ...", 20.0),
        ("Please retry in 53.06 seconds.", 53.06),
        ("try again in 1 second", 1.0),
        ("TRY AGAIN IN 2.5s", 2.5),
        ("Limit 200, Used 200. Please try again in 7m12s.", 432.0),
        ("Please try again in 1m26.4s. Visit https://...", 86.4),
        ("Rate limit reached for requests per minute: limit 5. Please try again in 11.98s.",
         11.98),
    ],
)
def test_retry_delay_from_message(message: str, seconds: float) -> None:
    assert retry_delay_from_message(message) == pytest.approx(seconds)


@pytest.mark.parametrize("message", [None, "", "quota exceeded", "try again later"])
def test_no_delay_in_message(message: str | None) -> None:
    assert retry_delay_from_message(message) is None


# ---- Anthropic: RFC 3339 reset times ----------------------------------------------------

NOW = 1_755_780_000.0  # 2025-08-21T12:40:00Z


@pytest.mark.parametrize(("value", "seconds"), [
    ("2025-08-21T12:40:59Z", 59.0),
    ("2025-08-21T12:40:59z", 59.0),
    ("2025-08-21t12:40:00.250Z", 0.25),
    ("2025-08-21T14:41:00+02:00", 60.0),
    ("2025-08-21T12:39:00Z", 0.0),  # already past: no wait, never negative
    (" 2025-08-21T12:40:01.5Z ", 1.5),
])
def test_rfc3339_reset_is_seconds_from_now(value: str, seconds: float) -> None:
    assert parse_rfc3339(value, NOW) == pytest.approx(seconds)
    assert parse_reset(value, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [
    None, "", "2025-08-21T12:40:59", "2025-08-21", "soon", "2025-13-21T12:40:59Z", "6m0s",
])
def test_rfc3339_garbage_is_none(value: str | None) -> None:
    assert parse_rfc3339(value, NOW) is None


@given(st.datetimes(min_value=datetime.datetime(2000, 1, 1),
                    max_value=datetime.datetime(2100, 1, 1)))
def test_rfc3339_roundtrip(when: datetime.datetime) -> None:
    aware = when.replace(tzinfo=datetime.UTC)
    text = aware.isoformat().replace("+00:00", "Z")
    assert parse_rfc3339(text, 0.0) == pytest.approx(aware.timestamp(), abs=1e-6)


def test_reset_keeps_reading_durations() -> None:
    assert parse_reset("6m0s", NOW) == 360.0 and parse_reset("120ms") == pytest.approx(0.12)


def test_anthropic_rate_headers() -> None:
    info = rate_info_from_headers({
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:02Z",
        "Anthropic-RateLimit-Tokens-Limit": "90000",
        "anthropic-ratelimit-tokens-remaining": "89000",
        "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:30.5Z",
        "anthropic-ratelimit-input-tokens-limit": "100000",
        "anthropic-ratelimit-input-tokens-remaining": "99000",
        "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:01Z",
        "retry-after": "4",
    }, now=NOW)
    assert (info.limit_requests, info.remaining_requests) == (50, 49)
    assert info.reset_requests == pytest.approx(2.0)
    # tokens-* is the most restrictive token limit in effect: it wins over input-tokens-*.
    assert (info.limit_tokens, info.remaining_tokens) == (90000, 89000)
    assert info.reset_tokens == pytest.approx(30.5)
    assert info.retry_after == 4.0


def test_anthropic_input_tokens_stand_in_for_tokens() -> None:
    info = rate_info_from_headers({
        "anthropic-ratelimit-input-tokens-limit": "100000",
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:07Z",
    }, now=NOW)
    assert (info.limit_tokens, info.remaining_tokens) == (100000, 0)
    assert info.reset_tokens == pytest.approx(7.0) and info.limit_requests is None


class _CountingHeaders(Mapping[str, str]):
    """A header mapping that counts how often it is searched."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers
        self.lookups = 0
        self.passes = 0

    def __getitem__(self, name: str) -> str:
        self.lookups += 1
        return self._headers[name]

    def __iter__(self) -> Iterator[str]:
        self.passes += 1
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_rate_headers_are_read_in_one_pass(kind: str) -> None:
    """Every call's answer is read for its rate headers: one pass over the headers, not a
    search per name (an httpx lookup decodes every header; an absent name was searched
    three ways, 165 us per openai answer against 40 us in one pass)."""
    headers = ({"X-RateLimit-Limit-Requests": "120", "x-ratelimit-remaining-requests": "7",
                "x-ratelimit-reset-requests": "1.5s", "Content-Type": "application/json",
                "Retry-After": "3"} if kind == "openai" else
               {"anthropic-ratelimit-requests-limit": "50",
                "Anthropic-Ratelimit-Requests-Remaining": "9", "date": "x"})
    counting = _CountingHeaders(headers)
    info = rate_info_from_headers(counting)
    assert counting.passes == 1 and counting.lookups <= len(headers)
    if kind == "openai":
        assert (info.limit_requests, info.remaining_requests, info.reset_requests,
                info.retry_after) == (120, 7, 1.5, 3.0)
    else:
        assert (info.limit_requests, info.remaining_requests) == (50, 9)
