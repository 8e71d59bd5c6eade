"""Batch-mode driver for the crash tests: runs N items through BatchApiRunner, optionally
killing itself (SIGKILL, no clean-up) at one step.

Usage: python tests/batchapi/batch_worker.py BASE_URL DB N [--die-after STEP]
       [--provider openai|anthropic|gemini]

STEP: ``intent`` (chunks journaled, nothing uploaded), ``upload`` (file uploaded, its id not
recorded), ``create`` (batch created at the provider, its id not recorded). Without it the
run goes to the end (or until the test kills it while polling). Prints ``done OK FAILED``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from throttlepool.batchapi import (
    AnthropicBatch,
    BatchApiRunner,
    GeminiBatch,
    Journal,
    OpenAIBatch,
)

RUN_NAME = "batch-crash"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _die_after(cls: Any, name: str) -> None:
    original = getattr(cls, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        _die()
        return result

    setattr(cls, name, wrapper)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("db")
    parser.add_argument("n", type=int)
    parser.add_argument("--die-after", choices=("intent", "upload", "create"))
    parser.add_argument("--max-requests", type=int, default=7)
    parser.add_argument("--provider", choices=("openai", "anthropic", "gemini"), default="openai")
    args = parser.parse_args()
    api: Any = {"anthropic": AnthropicBatch, "gemini": GeminiBatch}.get(args.provider,
                                                                       OpenAIBatch)
    step = {"intent": (Journal, "plan"), "upload": (api, "upload"),
            "create": (api, "create")}.get(args.die_after or "")
    if step is not None:
        _die_after(*step)
    with BatchApiRunner(_adapter(args.provider, args.base_url), store=args.db,
                        run_name=RUN_NAME, poll_interval=0.05,
                        max_requests=args.max_requests) as runner:
        result = runner.run([f"question {i}" for i in range(args.n)])
    print("done", result.success_count, result.error_count, flush=True)
    return 0 if result.all_succeeded else 1


def _adapter(provider: str, base_url: str) -> Any:
    """The provider's adapter on its SDK; only that SDK is imported (each takes about a
    second to import, and every crash test starts this script twice)."""
    root = base_url.removesuffix("/v1")
    if provider == "anthropic":
        import anthropic

        from throttlepool.adapters.anthropic import AnthropicAdapter

        return AnthropicAdapter(anthropic.Anthropic(base_url=root, api_key="sk-ant-test"),
                                model="claude-haiku-4-5", max_tokens=32, extract="text")
    if provider == "gemini":
        from google import genai
        from google.genai import types

        from throttlepool.adapters.google_genai import GenAIAdapter

        client = genai.Client(api_key="gm-test", http_options=types.HttpOptions(base_url=root))
        return GenAIAdapter(client, model="gemini-2.5-flash", extract="text")
    import openai

    from throttlepool.adapters.openai import OpenAIAdapter

    return OpenAIAdapter(openai.OpenAI(base_url=base_url, api_key="sk-batch-test"),
                         model="gpt-4o-mini", extract="text")


if __name__ == "__main__":
    sys.exit(main())
