"""Error responses in the real providers' formats: (status, headers, JSON body)."""

from __future__ import annotations

from typing import Any

from throttlepool.sim import anthropic
from throttlepool.sim.config import SimConfig
from throttlepool.sim.formats import GEMINI, ceil_ms, go_duration, proto_duration
from throttlepool.sim.window import Decision, Limits

Reply = tuple[int, dict[str, str], Any]

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    529: "UNAVAILABLE",
}

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (simulated fault)."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-sim****. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    404: ("invalid_request_error", "unknown_url", "Unknown request URL."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: (
        "service_unavailable_error",
        "server_is_overloaded",
        "The server is overloaded or not ready yet.",
    ),
    529: ("service_unavailable_error", "server_is_overloaded", "The server is overloaded."),
}

_GEMINI_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential.",
    404: "Requested entity was not found.",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    529: "The model is overloaded. Please try again later.",
}

_QUOTA_LINK = "https://ai.google.dev/gemini-api/docs/rate-limits"


def openai_error(
    status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None
) -> Reply:
    """An OpenAI error body: {"error": {message, type, param, code}}."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return status, headers or {}, body


def gemini_error(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A Google RPC error body: {"error": {code, message, status[, details]}}."""
    err: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
    }
    if details:
        err["details"] = details
    return status, headers or {}, {"error": err}


def fault(api: str, status: int, message: str | None = None) -> Reply:
    """A plain 400/401/404/500/503/529 error in the API's own format (503 and 529 carry
    retry-after)."""
    if api == anthropic.ANTHROPIC:
        return anthropic.fault(status, message)
    headers = {"retry-after": "1"} if status in (503, 529) else {}
    if api == GEMINI:
        return gemini_error(status, message or _GEMINI_MESSAGES[status], headers=headers)
    type_, code, default = _OPENAI_ERRORS[status]
    return openai_error(status, message or default, type_, code, headers)


def quota_exceeded(api: str) -> Reply:
    """A billing/daily quota 429 that no wait will fix (no retry hint); Anthropic's 400."""
    if api == anthropic.ANTHROPIC:
        return anthropic.credit_balance_too_low()
    if api == GEMINI:
        violation = {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            "quotaValue": "0",
        }
        return gemini_error(
            429,
            "You exceeded your current quota, please check your plan and billing details. "
            "For more information on this error, head to: " + _QUOTA_LINK + ".",
            [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}],
        )
    return openai_error(
        429,
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota",
        "insufficient_quota",
    )


def ratelimit_headers(d: Decision, rpm: int | None, tpm: int | None) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the limits that are configured.

    A reset is the time until that budget is back to its initial state (OpenAI's meaning);
    the exact wait on a 429 travels in retry-after / retry-after-ms instead.
    """
    h: dict[str, str] = {}
    reset_req = go_duration(d.reset_requests)
    if rpm is not None and d.remaining_requests is not None:
        h["x-ratelimit-limit-requests"] = str(rpm)
        h["x-ratelimit-remaining-requests"] = str(d.remaining_requests)
        h["x-ratelimit-reset-requests"] = reset_req
    if tpm is not None and d.remaining_tokens is not None:
        h["x-ratelimit-limit-tokens"] = str(tpm)
        h["x-ratelimit-remaining-tokens"] = str(d.remaining_tokens)
        same = d.reset_tokens == d.reset_requests
        h["x-ratelimit-reset-tokens"] = reset_req if same else go_duration(d.reset_tokens)
    return h


def dimension(d: Decision, cfg: SimConfig, charge: int, io: Limits) -> tuple[int, int, int, str]:
    """(limit, used, requested, OpenAI's name) of the dimension `d.kind` that refused."""
    if d.kind == "requests":
        return cfg.rpm or 0, d.used_requests, 1, "requests per min (RPM)"
    if d.kind == "input_tokens":
        return cfg.itpm or 0, d.used_input, io.input_cost, "input tokens per min (ITPM)"
    if d.kind == "output_tokens":
        return cfg.otpm or 0, d.used_output, io.output_cost, "output tokens per min (OTPM)"
    return cfg.tpm or 0, d.used_tokens, charge, "tokens per min (TPM)"


def too_large(api: str, model: str, d: Decision, cfg: SimConfig, charge: int,
              io: Limits) -> Reply:
    """A request whose charge alone exceeds a token limit: never admissible, no hint."""
    limit, _, requested, dim = dimension(d, cfg, charge, io)
    if api == anthropic.ANTHROPIC:
        return anthropic.too_large(d.kind, limit, requested)
    if api == GEMINI:
        return gemini_error(
            400,
            f"The request is too large: it needs {requested} tokens but the limit is {limit} "
            "tokens per window. The input or output tokens must be reduced.",
        )
    return openai_error(
        429,
        f"Request too large for {model or 'model'} in organization org-sim on {dim}: "
        f"Limit {limit}, Requested {requested}. The input or output tokens must be reduced in "
        "order to run successfully. Visit https://platform.openai.com/account/rate-limits to "
        "learn more.",
        "tokens",
        "rate_limit_exceeded",
        ratelimit_headers(d, cfg.rpm, cfg.tpm),
    )


_GEMINI_QUOTAS = {
    "requests": ("generate_content_requests", "GenerateRequestsPerMinutePerProjectPerModel"),
    "tokens": ("generate_content_input_token_count",
               "GenerateContentInputTokensPerModelPerMinute"),
    "input_tokens": ("generate_content_input_token_count",
                     "GenerateContentInputTokensPerModelPerMinute"),
    "output_tokens": ("generate_content_output_token_count",
                      "GenerateContentOutputTokensPerModelPerMinute"),
}


def rate_limited(api: str, model: str, d: Decision, cfg: SimConfig, charge: int,
                 io: Limits) -> Reply:
    """A 429 with an exact retry hint: the time until this request would be admitted."""
    limit, used, requested, dim = dimension(d, cfg, charge, io)
    if api == anthropic.ANTHROPIC:
        return anthropic.rate_limited(d, cfg, limit)
    ms = ceil_ms(d.wait)
    hint = go_duration(d.wait) if ms >= 1000 else f"{ms}ms"
    headers = {"retry-after": str(-(-ms // 1000)), "retry-after-ms": str(ms)}
    headers.update(ratelimit_headers(d, cfg.rpm, cfg.tpm))
    if api == GEMINI:
        metric, quota_id = _GEMINI_QUOTAS[d.kind]
        violation = {
            "quotaMetric": f"generativelanguage.googleapis.com/{metric}",
            "quotaId": quota_id,
            "quotaValue": str(limit),
        }
        delay = proto_duration(d.wait)
        return gemini_error(
            429,
            "You exceeded your current quota, please check your plan and billing details. "
            f"For more information on this error, head to: {_QUOTA_LINK}.\n* Quota exceeded "
            f"for metric: generativelanguage.googleapis.com/{metric}, limit: {limit}\n"
            f"Please retry in {delay}.",
            [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [
                        {"description": "Learn more about Gemini API quotas", "url": _QUOTA_LINK}
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
            ],
            headers if cfg.gemini_headers else None,
        )
    return openai_error(
        429,
        f"Rate limit reached for {model or 'model'} in organization org-sim on {dim}: "
        f"Limit {limit}, Used {used}, Requested {requested}. Please try again in {hint}. "
        "Visit https://platform.openai.com/account/rate-limits to learn more.",
        "requests" if d.kind == "requests" else "tokens",
        "rate_limit_exceeded",
        headers,
    )
