"""What OpenAI-compatible servers (vLLM, Ollama, LiteLLM, OpenRouter...) do differently: no
x-ratelimit-* headers, no usage in the body, a 429 with only retry-after."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from throttlepool import ThreadedBatchRunner


class _Compatible(BaseHTTPRequestHandler):
    """Chat completions without usage or rate headers; the first request gets a bare 429."""

    seen: list[float] = []
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.lock:
            self.seen.append(time.monotonic())
            first = len(self.seen) == 1
        if first:
            payload = b'{"error": "slow down"}'  # not OpenAI's error shape either
            self.send_response(429)
            self.send_header("retry-after", "1")
        else:
            text = "echo: " + body["messages"][-1]["content"]
            payload = json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                                  "model": body["model"], "choices": [{
                                      "index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}],
                                  }).encode()
            self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[str]:
    _Compatible.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Compatible)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_openai_adapter_copes_with_a_compatible_server(server: str) -> None:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    adapter = OpenAIAdapter(openai.OpenAI(base_url=server, api_key="none"), model="llama3.2",
                            extract="text")
    runner: ThreadedBatchRunner[Any] = ThreadedBatchRunner(
        adapter, batch_size=1, limits=["100/minute", "50000 tokens/minute"], progress=False)
    result = runner.run(["a", "b", "c"])

    assert [o.value for o in result.outcomes] == ["echo: a", "echo: b", "echo: c"]
    assert all(o.usage is None for o in result.outcomes)  # no usage: the estimate stands
    assert result.stats.rate_limited == 1 and len(_Compatible.seen) == 4
    # retry-after alone (no x-ratelimit-*, no OpenAI error body) set the wait.
    assert _Compatible.seen[1] - _Compatible.seen[0] >= 0.95
