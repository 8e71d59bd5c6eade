"""``throttlepool sim --itpm --otpm --first-token-delay --batch-*``: the process serves with
those limits (Anthropic's input and output windows apart), holds a stream's first event and
keeps its batches for the delay given."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.helpers import clean_env

HEADERS = {"x-api-key": "sk-ant-sim-flags", "anthropic-version": "2023-06-01"}


def _message(url: str, *, stream: bool = False, key: str = "sk-ant-sim-flags"
              ) -> requests.Response:
    body = {"model": "claude-3-5-haiku-latest", "max_tokens": 10, "stream": stream,
            "messages": [{"role": "user", "content": "hello there friend"}]}
    return requests.post(url + "/v1/messages", json=body, timeout=10,
                         headers={**HEADERS, "x-api-key": key}, stream=stream)


def test_sim_flags_start_a_server_that_enforces_them(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "throttlepool", "sim", "--port", "0", "--itpm", "40",
         "--otpm", "30", "--first-token-delay", "0.5", "--batch-delay", "30",
         "--batch-fail-rate", "0.25", "--batch-expire", "600"], cwd=tmp_path, env=clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        head = [proc.stdout.readline() for _ in range(8)]
        url = head[0].rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), head
        assert any("40 input tokens and 30 output tokens per 60 s" in line for line in head)
        assert head[7].strip() == ("batches: answered after 30 s; 25% of requests fail once; "
                                   "expire after 600 s"), head
        # A batch created now is still being worked on (it would be done in 0.2 s otherwise),
        # even after a reset: it goes back to what the simulator was started with.
        assert requests.post(url + "/__reset", timeout=10).status_code == 200
        created = requests.post(url + "/v1/messages/batches", headers=HEADERS, timeout=10,
                                json={"requests": [{"custom_id": "a", "params": {
                                    "model": "m", "max_tokens": 5,
                                    "messages": [{"role": "user", "content": "hi"}]}}]})
        assert created.status_code == 200, created.text
        time.sleep(0.4)
        batch = requests.get(f"{url}/v1/messages/batches/{created.json()['id']}",
                             headers=HEADERS, timeout=10).json()
        assert batch["processing_status"] == "in_progress"
        answers = [_message(url) for _ in range(6)]
        first = answers[0].headers
        assert first["anthropic-ratelimit-input-tokens-limit"] == "40"
        assert first["anthropic-ratelimit-output-tokens-limit"] == "30"
        # Each answer generates 6 output tokens: five fill the 30 of the window, the
        # sixth is refused for output tokens while input tokens (4 each) are left.
        assert [a.status_code for a in answers] == [200] * 5 + [429]
        refused = answers[-1]
        assert "output tokens" in refused.json()["error"]["message"]
        assert int(refused.headers["anthropic-ratelimit-input-tokens-remaining"]) > 0
        # Another key has its own budget; its stream's first event waits 0.5 s.
        reply = _message(url, stream=True, key="sk-ant-other")
        sent = time.monotonic()
        assert reply.status_code == 200
        lines = reply.iter_lines()
        while b"content_block_delta" not in next(lines):
            pass
        assert time.monotonic() - sent >= 0.45
        reply.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    assert proc.returncode == 0
