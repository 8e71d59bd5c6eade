"""A rate-limited OpenAI-, Anthropic- and Gemini-compatible API simulator on loopback
(stdlib only).

It is the project's test referee, the demo's backend and the benchmark server, and it imports
nothing else from throttlepool.

Endpoints: POST /v1/chat/completions, POST /v1/responses (OpenAI's Responses API, see
:mod:`throttlepool.sim.responses`), POST /v1/embeddings, POST /v1/messages (Anthropic, see
:mod:`throttlepool.sim.anthropic`; POST /v1/messages/count_tokens, charged to no window),
POST /{v1|v1beta}/models/{model}:generateContent and :streamGenerateContent, POST /echo
({"prompt", "max_tokens"} -> {"result", "usage"}); admin: GET /__stats, POST /__reset,
POST /__config, POST /__script, GET /__requests. Every reply is "echo: " + prompt (message
contents or Gemini parts joined by newlines). Extra endpoints (batch APIs) register in
``server.ROUTES`` (:class:`throttlepool.sim.routing.Route`).

Streaming (:mod:`throttlepool.sim.stream`): ``"stream": true`` on chat completions (with
``stream_options.include_usage`` a last usage chunk), messages and responses, and Gemini's
streamGenerateContent (``alt=sse``; without it one JSON array) answer server-sent events,
chunked, with the same text and usage as the plain reply. ``first_token_delay`` passes
between the headers and the first event (time to first token), ``chunk_interval`` between
later events.

Each request goes through, in order:
1. a queued /__script step, if any (the windows are not touched); ``break_after: N`` drops
   the connection after N events of the reply it scripts, ``error_after: N`` ends its
   stream after N events with the service's own error event (Anthropic's overloaded_error);
2. content faults that refuse before admission, not charged: [[fault:400]], [[fault:401]],
   [[fault:quota]] (OpenAI insufficient_quota / Gemini PerDay quota / Anthropic's "credit
   balance is too low" 400, no retry hint);
3. the exact sliding windows per API key: requests (rpm); tokens (tpm), charged
   prompt_chars // 4 + max_tokens * n (16 when absent), but an Anthropic message its prompt
   and the output it generates; input tokens (itpm), the prompt estimate; output tokens
   (otpm), the output generated. A charge above its limit is "Request too large" (OpenAI
   429, Gemini and Anthropic 400), otherwise a refusal is a 429 whose hints (retry-after,
   retry-after-ms, Gemini RetryInfo) are the exact time until this request would be
   admitted, and whose message names the limit. Refusals are free;
4. after admission (charged, as the real services charge): latency + jitter, then the
   [[fault:500|503|529|reset|hang|break]] content faults or the seeded `fail_rate` draw
   ("break": a stream is dropped after `stream_break_after` events, a plain body halfway).
x-ratelimit-reset-* is, as OpenAI documents it, the time until that budget is back to its
initial state (the newest admission leaves the window); on a 429 the exact wait is in
retry-after, retry-after-ms and the message. Anthropic's anthropic-ratelimit-*-reset are
the same instants in RFC 3339.
"""

from __future__ import annotations

from throttlepool.sim.config import SimConfig
from throttlepool.sim.console import banner, serve
from throttlepool.sim.process import SimulatorProcess
from throttlepool.sim.server import Simulator

__all__ = ["SimConfig", "Simulator", "SimulatorProcess", "banner", "serve"]
