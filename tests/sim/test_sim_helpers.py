"""Shared helpers for the simulator tests (no tests here): SDK clients pointed at a Simulator."""

from __future__ import annotations

import warnings
from typing import Any

import openai
from google import genai
from google.genai import types
from openai.types.chat import ChatCompletionMessageParam

from throttlepool.sim import Simulator

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the legacy SDK warns about its end of support at import
    import google.generativeai as oldgenai

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello world"}]


def oai(sim: Simulator, key: str = "sk-test", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=sim.openai_base_url, max_retries=0, **kw)


def gclient(sim: Simulator, version: str = "v1", key: str = "g-test") -> genai.Client:
    opts = types.HttpOptions(base_url=sim.url, api_version=version, retry_options=None)
    return genai.Client(api_key=key, http_options=opts)


def legacy(sim: Simulator, key: str = "legacy") -> Any:
    oldgenai.configure(  # type: ignore[attr-defined]
        api_key=key, transport="rest", client_options={"api_endpoint": sim.url}
    )
    return oldgenai.GenerativeModel("gemini-x")  # type: ignore[attr-defined]


NO_RETRY = {"retry": None, "timeout": 10}


def say(text: str) -> list[ChatCompletionMessageParam]:
    """One user message."""
    return [{"role": "user", "content": text}]
