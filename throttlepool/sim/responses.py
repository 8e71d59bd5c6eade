"""OpenAI's Responses API (``POST /v1/responses``) in the simulator: the request, the
``Response`` object with its usage, and its stream of ``response.*`` events, in the shapes
the openai SDK's ``client.responses.create`` parses."""

from __future__ import annotations

import json
import time
from typing import Any

from throttlepool.sim.formats import (
    DEFAULT_MAX_TOKENS,
    OPENAI,
    BadRequest,
    Request,
    completion_tokens,
    reply_text,
)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def parse_responses(body: dict[str, Any]) -> Request:
    """Parse a Responses body; the prompt is ``instructions`` then the input texts, by
    newlines (``input`` is a string or a list of message items)."""
    raw = body.get("input")
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw:
        texts = [_text(item.get("content")) if isinstance(item, dict) else str(item)
                 for item in raw]
    else:
        raise BadRequest("'input' must be a string or a non-empty array")
    if isinstance(body.get("instructions"), str):
        texts.insert(0, body["instructions"])
    max_tokens = body.get("max_output_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest(f"max_output_tokens must be a positive integer, got {max_tokens!r}")
    return Request(OPENAI, "responses", str(body.get("model", "")), "\n".join(texts), (),
                   max_tokens, 1, "", body.get("stream") is True)


def _message(seq: int, text: str, status: str) -> dict[str, Any]:
    return {"id": f"msg_sim{seq:x}", "type": "message", "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [],
                         "logprobs": []}] if text or status == "completed" else []}


def response_body(req: Request, seq: int, *, done: bool = True) -> dict[str, Any]:
    """The ``Response`` object: completed (or incomplete when max_output_tokens cut the
    reply), or, with ``done=False``, as it looks when a stream starts."""
    text = reply_text(req.prompt)
    out = completion_tokens(req)
    cut = out < len(text) // 4
    status = ("incomplete" if cut else "completed") if done else "in_progress"
    usage = {"input_tokens": req.prompt_tokens,
             "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "output_tokens": out, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": req.prompt_tokens + out}
    return {
        "id": f"resp_sim{seq:x}", "object": "response", "created_at": int(time.time()),
        "status": status, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut and done else None,
        "instructions": None, "max_output_tokens": req.max_tokens, "model": req.model,
        "output": [_message(seq, text, status)] if done else [],
        "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "usage": usage if done else None,
        "user": None, "metadata": {},
    }


def _event(kind: str, seq: int, **fields: Any) -> bytes:
    data = {"type": kind, "sequence_number": seq, **fields}
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def response_events(req: Request, seq: int, pieces: list[str]) -> list[bytes]:
    """The ``response.*`` server-sent events of one streamed Response, text in `pieces`."""
    start = response_body(req, seq, done=False)
    final = response_body(req, seq)
    item = final["output"][0]
    item_id = item["id"]
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [("response.created", {"response": start}),
              ("response.in_progress", {"response": start}),
              ("response.output_item.added",
               {"output_index": 0, "item": _message(seq, "", "in_progress")}),
              ("response.content_part.added", {**where, "part": part})]
    events += [("response.output_text.delta", {**where, "delta": p, "logprobs": []})
               for p in pieces]
    text = "".join(pieces)
    events += [("response.output_text.done", {**where, "text": text, "logprobs": []}),
               ("response.content_part.done", {**where, "part": {**part, "text": text}}),
               ("response.output_item.done", {"output_index": 0, "item": item}),
               (f"response.{'completed' if final['status'] == 'completed' else 'incomplete'}",
                {"response": final})]
    return [_event(kind, i, **fields) for i, (kind, fields) in enumerate(events)]
