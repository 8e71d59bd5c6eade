"""Streamed replies as server-sent events, in each API's own shape: OpenAI chat completion
chunks (``data: [DONE]`` last, a usage chunk with ``stream_options.include_usage``),
Anthropic's ``message_start`` ... ``message_stop`` events, Gemini's
``streamGenerateContent`` (``alt=sse``, else one JSON array sent piece by piece) and the
Responses API's ``response.*`` events (:mod:`throttlepool.sim.responses`).

A stream carries exactly the text and usage of the non-streamed reply to the same request.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from throttlepool.sim import anthropic, responses
from throttlepool.sim.formats import GEMINI, Request, completion_tokens, reply_text

PIECE_CHARS = 16  # a word (with its trailing space) is one piece, split when longer
_PIECE = re.compile(r"\S+\s*|\s+")
_JSON = json.JSONEncoder(separators=(",", ":"))
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


def pieces(text: str) -> list[str]:
    """The text cut into the pieces its stream sends, one per event; "".join gives it back."""
    out = [word[i:i + PIECE_CHARS] for word in _PIECE.findall(text)
           for i in range(0, len(word), PIECE_CHARS)]
    return out or [""]


def _data(obj: Any, event: str | None = None, end: str = "\n\n") -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {_JSON.encode(obj)}{end}".encode()


def events(req: Request, seq: int, sse: bool = True) -> tuple[dict[str, str], list[bytes]]:
    """The headers and the events (each a bytes chunk to write) of a streamed reply."""
    parts = pieces(reply_text(req.prompt))
    if req.api == anthropic.ANTHROPIC:
        return SSE_HEADERS, _anthropic(req, seq, parts)
    if req.api == GEMINI:
        chunks = _gemini(req, seq, parts)
        if sse:
            return SSE_HEADERS, [_data(c, end="\r\n\r\n") for c in chunks]
        # Without alt=sse Gemini streams one JSON array, an element at a time.
        last = len(chunks) - 1
        return {"content-type": "application/json; charset=UTF-8"}, [
            ("[" if i == 0 else ",\r\n").encode() + _JSON.encode(c).encode()
            + (b"]" if i == last else b"") for i, c in enumerate(chunks)]
    if req.endpoint == "responses":
        return SSE_HEADERS, responses.response_events(req, seq, parts)
    return SSE_HEADERS, _openai_chat(req, seq, parts)


def error_event(api: str) -> bytes | None:
    """The event a service sends when it fails midway through a 200 stream (Anthropic's
    ``event: error`` with an ``overloaded_error``, OpenAI's ``data: {"error": ...}``); None
    for Gemini, whose streams just stop."""
    if api == anthropic.ANTHROPIC:
        return _data(anthropic.error(529)[2], "error")
    if api == GEMINI:
        return None
    return _data({"error": {"message": "The server had an error while processing your "
                                       "request. Sorry about that!",
                            "type": "server_error", "param": None, "code": None}})


def _openai_chat(req: Request, seq: int, parts: list[str]) -> list[bytes]:
    text = reply_text(req.prompt)
    out = completion_tokens(req)
    finish = "length" if out < len(text) // 4 else "stop"
    head = {"id": f"chatcmpl-sim{seq:x}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": req.model, "system_fingerprint": "fp_sim"}
    extra = {"usage": None} if req.include_usage else {}

    def chunk(index: int, delta: dict[str, Any], reason: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return _data({**head, "choices": [choice], **extra})

    choices = range(req.n)
    chunks = [chunk(i, {"role": "assistant", "content": "", "refusal": None}) for i in choices]
    chunks += [chunk(i, {"content": p}) for p in parts for i in choices]
    chunks += [chunk(i, {}, finish) for i in choices]
    if req.include_usage:
        usage = {"prompt_tokens": req.prompt_tokens, "completion_tokens": out * req.n,
                 "total_tokens": req.prompt_tokens + out * req.n}
        chunks.append(_data({**head, "choices": [], "usage": usage}))
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def _anthropic(req: Request, seq: int, parts: list[str]) -> list[bytes]:
    final = anthropic.message_body(req, seq)
    usage = final["usage"]
    start = {**final, "content": [], "stop_reason": None,
             "usage": {**usage, "output_tokens": 1}}
    out = [_data({"type": "message_start", "message": start}, "message_start"),
           _data({"type": "content_block_start", "index": 0,
                  "content_block": {"type": "text", "text": ""}}, "content_block_start"),
           _data({"type": "ping"}, "ping")]
    out += [_data({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": p}}, "content_block_delta")
            for p in parts]
    # The usage of a message_delta is cumulative: it carries the totals.
    delta_usage = {k: usage[k] for k in ("input_tokens", "output_tokens",
                                         "cache_creation_input_tokens",
                                         "cache_read_input_tokens")}
    out += [_data({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _data({"type": "message_delta",
                   "delta": {"stop_reason": final["stop_reason"], "stop_sequence": None},
                   "usage": delta_usage}, "message_delta"),
            _data({"type": "message_stop"}, "message_stop")]
    return out


def _gemini(req: Request, seq: int, parts: list[str]) -> list[dict[str, Any]]:
    text = reply_text(req.prompt)
    ptok, out = req.prompt_tokens, completion_tokens(req)
    finish = "MAX_TOKENS" if out < len(text) // 4 else "STOP"
    last = len(parts) - 1
    chunks = []
    for k, piece in enumerate(parts):
        candidates = [{"content": {"parts": [{"text": piece}], "role": "model"}, "index": i}
                      for i in range(req.n)]
        usage = {"promptTokenCount": ptok, "totalTokenCount": ptok}
        if k == last:
            for c in candidates:
                c["finishReason"] = finish
            usage = {"promptTokenCount": ptok, "candidatesTokenCount": out * req.n,
                     "totalTokenCount": ptok + out * req.n}
        chunks.append({"candidates": candidates, "usageMetadata": usage,
                       "modelVersion": req.model, "responseId": f"sim{seq:x}"})
    return chunks
