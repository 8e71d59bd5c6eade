"""Which API a request path speaks, how its body is read, whose key it carries, and the
extra routes (batch endpoints and the like) a simulator can be given."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

from throttlepool.sim import anthropic, responses
from throttlepool.sim.formats import (
    ECHO,
    GEMINI,
    OPENAI,
    BadRequest,
    Request,
    parse_echo,
    parse_gemini,
    parse_openai_chat,
    parse_openai_embeddings,
    success_body,
)
from throttlepool.sim.plan import Plan

if TYPE_CHECKING:
    from throttlepool.sim.state import SimState

_GEMINI_PATH = re.compile(
    r"^/(v1beta|v1|v1alpha)/models/([^/:]+):(generateContent|streamGenerateContent)$")
_FIXED = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings", "/echo": "echo",
          "/v1/messages": "messages", "/v1/messages/count_tokens": "count_tokens",
          "/v1/responses": "responses"}
_API_OF = {"chat": OPENAI, "embeddings": OPENAI, "echo": ECHO, "responses": OPENAI,
           "messages": anthropic.ANTHROPIC, "count_tokens": anthropic.ANTHROPIC}


@dataclass(frozen=True, slots=True)
class Target:
    """The API endpoint a request path names."""

    # "chat", "embeddings", "responses", "messages", "count_tokens", "generate" or "echo"
    endpoint: str
    api: str  # the error format: OPENAI, GEMINI, ANTHROPIC or ECHO
    model: str = ""  # Gemini's, from the path
    stream: bool = False  # Gemini's streamGenerateContent
    sse: bool = False  # ... with alt=sse


def target(path: str, query: str) -> Target | None:
    """The endpoint of `path`, or None when the simulator has none there."""
    endpoint = _FIXED.get(path)
    if endpoint is not None:
        return Target(endpoint, _API_OF[endpoint])
    m = _GEMINI_PATH.match(path)
    if m is None:
        return None
    stream = m.group(3) == "streamGenerateContent"
    return Target("generate", GEMINI, m.group(2), stream,
                  stream and "sse" in parse_qs(query).get("alt", []))


def parse(to: Target, body: bytes) -> Request:
    """The request `body` sent to `to`; raises BadRequest."""
    try:
        data = json.loads(body) if body else {}
    except ValueError as exc:
        raise BadRequest(f"Invalid JSON payload received: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("Invalid JSON payload received: expected an object")
    if to.endpoint == "chat":
        return parse_openai_chat(data)
    if to.endpoint == "embeddings":
        return parse_openai_embeddings(data)
    if to.endpoint == "echo":
        return parse_echo(data)
    if to.endpoint in ("messages", "count_tokens"):
        return anthropic.parse_messages(data)
    if to.endpoint == "responses":
        return responses.parse_responses(data)
    return parse_gemini(to.model, data, to.stream)


def reply_body(req: Request, seq: int) -> dict[str, Any]:
    """The 200 body of a request that is not streamed."""
    if req.api == anthropic.ANTHROPIC:
        return anthropic.message_body(req, seq)
    if req.endpoint == "responses":
        return responses.response_body(req, seq)
    return success_body(req, seq, int(time.time()))


def api_key(headers: Mapping[str, str], query: str) -> str:
    """The API key a request carries (bearer token, x-goog-api-key, x-api-key or ?key=)."""
    auth = headers.get("authorization")
    if auth:
        return auth[7:].strip() if auth[:7].lower() == "bearer " else auth.strip()
    for name in ("x-goog-api-key", "x-api-key"):  # Gemini's, Anthropic's
        value = headers.get(name)
        if value:
            return value.strip()
    if query and "key=" in query:
        keys = parse_qs(query).get("key")
        if keys:
            return keys[0]
    return "anonymous"


class Route(Protocol):
    """Extra endpoints served by one simulator (e.g. batch APIs), tried before the built-in
    API paths. ``handle`` answers None for a request that is not its own; a Plan it
    returns is sent as it is (``counted=False`` keeps it out of the statistics)."""

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str],
               body: bytes) -> Plan | None:
        """The response to a request on one of this route's paths, or None."""
        ...

    def reset(self) -> None:
        """Forget everything (POST /__reset)."""
        ...


#: Builds a Route for one simulator from its state (its config, windows, statistics).
RouteFactory = Callable[["SimState"], Route]
