"""Request parsing and response bodies in the shapes the real OpenAI and Gemini APIs use
(Anthropic's are in :mod:`throttlepool.sim.anthropic`)."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_TOKENS = 16
EMBEDDING_DIM = 8
OPENAI, GEMINI, ECHO = "openai", "gemini", "echo"


@dataclass(frozen=True, slots=True)
class Request:
    """What the simulator needs from one API request body."""

    api: str  # OPENAI, GEMINI or ECHO (the error format to use)
    endpoint: str  # "chat", "embeddings", "generate" or "echo"
    model: str
    prompt: str
    inputs: tuple[str, ...]  # embedding inputs; () otherwise
    max_tokens: int  # per choice
    n: int
    encoding_format: str
    stream: bool = False  # answer as a stream of server-sent events
    include_usage: bool = False  # OpenAI stream_options.include_usage: a last usage chunk

    @property
    def prompt_tokens(self) -> int:
        """Usage figure for the prompt: about four characters a token, at least 1."""
        return max(1, len(self.prompt) // 4)

    @property
    def charge(self) -> int:
        """Tokens reserved at admission: prompt estimate plus max_tokens for every choice."""
        if self.endpoint == "embeddings":
            return len(self.prompt) // 4
        if self.endpoint == "messages":  # Anthropic: the output generated, never max_tokens
            return self.prompt_tokens + completion_tokens(self)
        return len(self.prompt) // 4 + self.max_tokens * self.n


    @property
    def input_charge(self) -> int:
        """Input tokens (ITPM): the prompt estimate its usage reports."""
        return self.prompt_tokens

    @property
    def output_charge(self) -> int:
        """Output tokens (OTPM): what is generated (counted at admission, as it is known)."""
        return 0 if self.endpoint == "embeddings" else completion_tokens(self) * self.n


class BadRequest(ValueError):
    """The request body cannot be understood; answered with a 400."""


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _int_field(body: dict[str, Any], *names: str, default: int) -> int:
    for name in names:
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadRequest(f"{name} must be a positive integer, got {value!r}")
            return value
    return default


def parse_openai_chat(body: dict[str, Any]) -> Request:
    """Parse a chat completion body; the prompt is the message contents joined by newlines."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array")
    prompt = "\n".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
    options = body.get("stream_options")
    return Request(
        OPENAI,
        "chat",
        str(body.get("model", "")),
        prompt,
        (),
        _int_field(body, "max_completion_tokens", "max_tokens", default=DEFAULT_MAX_TOKENS),
        _int_field(body, "n", default=1),
        "",
        body.get("stream") is True,
        isinstance(options, dict) and options.get("include_usage") is True,
    )


def parse_openai_embeddings(body: dict[str, Any]) -> Request:
    """Parse an embeddings body (a string, a list of strings, or token arrays)."""
    raw = body.get("input")
    if isinstance(raw, str):
        inputs: list[str] = [raw]
    elif isinstance(raw, list) and raw:
        if all(isinstance(x, int) for x in raw):
            inputs = [" ".join(map(str, raw))]
        else:
            inputs = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw]
    else:
        raise BadRequest("'input' must be a string or a non-empty array")
    fmt = str(body.get("encoding_format") or "float")
    if fmt not in ("float", "base64"):
        raise BadRequest(f"unknown encoding_format {fmt!r}")
    return Request(
        OPENAI,
        "embeddings",
        str(body.get("model", "")),
        "\n".join(inputs),
        tuple(inputs),
        0,
        1,
        fmt,
    )


def parse_gemini(model: str, body: dict[str, Any], stream: bool = False) -> Request:
    """Parse a generateContent body; the prompt is the parts' text joined by newlines."""
    contents = body.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    texts = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict):  # counted like an OpenAI system message
        contents = [system, *contents]
    for c in contents:
        parts = c.get("parts", []) if isinstance(c, dict) else []
        texts.append("".join(p.get("text", "") for p in parts if isinstance(p, dict)))
    cfg = body.get("generationConfig") or body.get("generation_config") or {}
    return Request(
        GEMINI,
        "generate",
        model,
        "\n".join(texts),
        (),
        _int_field(cfg, "maxOutputTokens", "max_output_tokens", default=DEFAULT_MAX_TOKENS),
        _int_field(cfg, "candidateCount", "candidate_count", default=1),
        "",
        stream,
    )


def parse_echo(body: dict[str, Any]) -> Request:
    """Parse the plain JSON endpoint's body: {"prompt": str, "max_tokens": int}."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' must be a string")
    return Request(
        ECHO,
        "echo",
        str(body.get("model", "echo")),
        prompt,
        (),
        _int_field(body, "max_tokens", default=DEFAULT_MAX_TOKENS),
        1,
        "",
    )


def reply_text(prompt: str) -> str:
    """The deterministic reply to a prompt."""
    return "echo: " + prompt


def completion_tokens(req: Request) -> int:
    """Tokens of one reply: its length estimate, capped at max_tokens."""
    return min(req.max_tokens, max(1, len(reply_text(req.prompt)) // 4))


def embedding(text: str) -> list[float]:
    """A deterministic unit vector derived from a hash of the text."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(b - 127.5) / 127.5 for b in digest[:EMBEDDING_DIM]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def success_body(req: Request, seq: int, created: int) -> dict[str, Any]:
    """The 200 body for a request, with usage."""
    text = reply_text(req.prompt)
    ptok = req.prompt_tokens
    ctok = completion_tokens(req)
    finish_length = ctok < len(text) // 4
    if req.endpoint == "chat":
        return {
            "id": f"chatcmpl-sim{seq:x}",
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "system_fingerprint": "fp_sim",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "length" if finish_length else "stop",
                }
                for i in range(req.n)
            ],
            "usage": {
                "prompt_tokens": ptok,
                "completion_tokens": ctok * req.n,
                "total_tokens": ptok + ctok * req.n,
            },
        }
    if req.endpoint == "embeddings":
        data: list[dict[str, Any]] = []
        for i, item in enumerate(req.inputs):
            vec = embedding(item)
            value: Any = vec
            if req.encoding_format == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": ptok, "total_tokens": ptok},
        }
    if req.endpoint == "generate":
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": text}], "role": "model"},
                    "finishReason": "MAX_TOKENS" if finish_length else "STOP",
                    "index": i,
                }
                for i in range(req.n)
            ],
            "usageMetadata": {
                "promptTokenCount": ptok,
                "candidatesTokenCount": ctok * req.n,
                "totalTokenCount": ptok + ctok * req.n,
            },
            "modelVersion": req.model,
            "responseId": f"sim{seq:x}",
        }
    return {
        "result": text,
        "model": req.model,
        "usage": {"prompt_tokens": ptok, "completion_tokens": ctok, "total_tokens": ptok + ctok},
    }


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String() at millisecond precision: 120ms, 1.5s, 6m0s."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def ceil_ms(seconds: float) -> int:
    """Milliseconds rounded up, so that waiting this long is always enough."""
    return max(1, math.ceil(seconds * 1000 - 1e-6))


def proto_duration(seconds: float) -> str:
    """A google.protobuf.Duration in JSON form, rounded up to the millisecond: "1.5s"."""
    ms = ceil_ms(seconds)
    return f"{ms // 1000}.{ms % 1000:03d}".rstrip("0").rstrip(".") + "s"
