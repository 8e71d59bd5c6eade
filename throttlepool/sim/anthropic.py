"""The Anthropic Messages API (``POST /v1/messages``) in the simulator: requests, replies,
``anthropic-ratelimit-*`` headers and errors, in the shapes BATCH-APIS.md §4 and
PROVIDERS.md §6 describe.

The budgets are the simulator's sliding windows per key: ``requests-*`` reports the request
limit, ``input-tokens-*`` ITPM (else the token limit), ``output-tokens-*`` OTPM and
``tokens-*`` the most restrictive of them. A message is charged its prompt
estimate plus the output it generates (Anthropic counts output as it is produced, never
``max_tokens``), which is also what its ``usage`` reports. Reset times are RFC 3339, to the
second and rounded up, like the real headers; ``retry-after`` is whole seconds.
"""

from __future__ import annotations

import datetime
import math
import time
from typing import Any

from throttlepool.sim.config import SimConfig
from throttlepool.sim.formats import (
    DEFAULT_MAX_TOKENS,
    BadRequest,
    Request,
    completion_tokens,
    reply_text,
)
from throttlepool.sim.window import Decision

ANTHROPIC = "anthropic"
Reply = tuple[int, dict[str, str], Any]

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request (simulated fault)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified "
                              "resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Rate limited."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}
CREDIT_MESSAGE = ("Your credit balance is too low to access the Anthropic API. Please go to "
                  "Plans & Billing to upgrade or purchase credits.")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content
                       if isinstance(b, dict) and b.get("type", "text") == "text")
    return ""


def parse_messages(body: dict[str, Any]) -> Request:
    """Parse a Messages body; the prompt is the system text and message texts by newlines."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: Field required")
    max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest(f"max_tokens: must be a positive integer, got {max_tokens!r}")
    texts = [_text_of(body.get("system"))] if body.get("system") else []
    texts += [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    return Request(ANTHROPIC, "messages", str(body.get("model", "")), "\n".join(texts), (),
                   max_tokens, 1, "", body.get("stream") is True)


def charge(req: Request) -> int:
    """Tokens a message spends: its prompt estimate and the output it generates."""
    return req.prompt_tokens + completion_tokens(req)


def message_body(req: Request, seq: int) -> dict[str, Any]:
    """The 200 body: a Message with one text block and its usage."""
    text = reply_text(req.prompt)
    out = completion_tokens(req)
    return {
        "id": f"msg_sim{seq:x}",
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if out < len(text) // 4 else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": req.prompt_tokens,
            "output_tokens": out,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        },
    }


def error(status: int, message: str | None = None, type_: str | None = None,
          headers: dict[str, str] | None = None) -> Reply:
    """An Anthropic error body: {"type": "error", "error": {"type", "message"}}."""
    default_type, default_message = _ERRORS.get(status, ("api_error", f"Error {status}"))
    body = {"type": "error",
            "error": {"type": type_ or default_type, "message": message or default_message}}
    return status, headers or {}, body


def fault(status: int, message: str | None = None) -> Reply:
    """A plain fault; 503 and 529 carry ``retry-after: 1`` and ``x-should-retry: true``."""
    headers = {"retry-after": "1", "x-should-retry": "true"} if status in (503, 529) else {}
    return error(status, message, headers=headers)


def credit_balance_too_low() -> Reply:
    """Billing: no wait will fix it (the 400 Anthropic sends)."""
    return error(400, CREDIT_MESSAGE, "invalid_request_error")


def _rfc3339(seconds_from_now: float) -> str:
    when = math.ceil(time.time() + max(0.0, seconds_from_now))
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _unit(h: dict[str, str], unit: str, limit: int, remaining: int, reset: str) -> None:
    h[f"anthropic-ratelimit-{unit}-limit"] = str(limit)
    h[f"anthropic-ratelimit-{unit}-remaining"] = str(remaining)
    h[f"anthropic-ratelimit-{unit}-reset"] = reset


def ratelimit_headers(d: Decision, cfg: SimConfig) -> dict[str, str]:
    """``anthropic-ratelimit-*`` for the limits that are configured; resets when each budget
    is whole again. ``input-tokens-*`` is ITPM (the token limit when no ITPM is set),
    ``output-tokens-*`` OTPM, and ``tokens-*`` the most restrictive token limit in effect."""
    h: dict[str, str] = {}
    if cfg.rpm is not None and d.remaining_requests is not None:
        _unit(h, "requests", cfg.rpm, d.remaining_requests, _rfc3339(d.reset_requests))
    reset = _rfc3339(d.reset_tokens)
    tokens = [(limit, left) for limit, left in ((cfg.tpm, d.remaining_tokens),
                                                (cfg.itpm, d.remaining_input),
                                                (cfg.otpm, d.remaining_output))
              if limit is not None and left is not None]
    if tokens:
        _unit(h, "tokens", *min(tokens, key=lambda pair: pair[1]), reset)
    if cfg.itpm is not None and d.remaining_input is not None:
        _unit(h, "input-tokens", cfg.itpm, d.remaining_input, reset)
    elif cfg.tpm is not None and d.remaining_tokens is not None:
        _unit(h, "input-tokens", cfg.tpm, d.remaining_tokens, reset)
    if cfg.otpm is not None and d.remaining_output is not None:
        _unit(h, "output-tokens", cfg.otpm, d.remaining_output, reset)
    return h


_LIMIT_NAMES = {"requests": "requests per minute", "tokens": "input tokens per minute",
                "input_tokens": "input tokens per minute",
                "output_tokens": "output tokens per minute"}


def rate_limited(d: Decision, cfg: SimConfig, limit: int | None) -> Reply:
    """A 429 ``rate_limit_error`` with ``retry-after`` (whole seconds, rounded up) naming the
    limit (`limit`, the one of ``d.kind``) that refuses it."""
    headers = {"retry-after": str(max(1, math.ceil(d.wait - 1e-6)))}
    headers.update(ratelimit_headers(d, cfg))
    return error(429, f"This request would exceed the rate limit for your organization of "
                      f"{limit or 0:,} {_LIMIT_NAMES[d.kind]}. Please retry after the time in "
                      "the retry-after header.", "rate_limit_error", headers)


def too_large(kind: str, limit: int, cost: int) -> Reply:
    """A message whose charge alone exceeds a token limit: never admissible."""
    if kind == "output_tokens":
        return error(400, f"the reply would be {cost} output tokens > {limit} output tokens "
                          "per minute", "invalid_request_error")
    return error(400, f"prompt is too long: {cost} tokens > {limit} maximum",
                 "invalid_request_error")
