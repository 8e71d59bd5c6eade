"""A rate-limited OpenAI-, Anthropic- and Gemini-compatible API simulator on loopback
(stdlib only).

It is the project's test referee, the demo's backend and the benchmark server, and it imports
nothing else from throttlepool.

Endpoints: POST /v1/chat/completions, POST /v1/embeddings, POST /v1/messages (Anthropic, see
:mod:`throttlepool.sim.anthropic`), POST /{v1|v1beta}/models/{model}:generateContent, POST
/echo ({"prompt", "max_tokens"} -> {"result", "usage"}); admin: GET /__stats, POST /__reset,
POST /__config, POST /__script. Every reply is "echo: " + prompt (message contents or Gemini
parts joined by newlines).

Each request goes through, in order:
1. a queued /__script step, if any (the windows are not touched);
2. content faults that refuse before admission, not charged: [[fault:400]], [[fault:401]],
   [[fault:quota]] (OpenAI insufficient_quota / Gemini PerDay quota / Anthropic's "credit
   balance is too low" 400, no retry hint);
3. the exact sliding window per API key: charge = prompt_chars // 4 + max_tokens * n (16 when
   absent); an Anthropic message is charged its prompt and the output it generates. A charge
   above tpm is "Request too large" (OpenAI 429, Gemini and Anthropic 400), otherwise a
   refusal is a 429 whose hints (retry-after, retry-after-ms, Gemini RetryInfo) are the
   exact time until this request would be admitted. Refusals are free;
4. after admission (charged, as the real services charge): latency + jitter, then the
   [[fault:500|503|529|reset|hang]] content faults or the seeded `fail_rate` draw.
x-ratelimit-reset-* is, as OpenAI documents it, the time until that budget is back to its
initial state (the newest admission leaves the window); on a 429 the exact wait is in
retry-after, retry-after-ms and the message.
"""

from __future__ import annotations

from throttlepool.sim.config import SimConfig
from throttlepool.sim.console import banner, serve
from throttlepool.sim.server import Simulator

__all__ = ["SimConfig", "Simulator", "banner", "serve"]
