"""The SDK adapters build their SDK's lazily built pydantic models before calls run at once.

openai, anthropic and google-genai defer each model's build to its first use, and pydantic's
deferred build races across threads: a fresh process whose first 16 calls parsed their
responses together failed about 1 process in 40 with ``PydanticUserError: Pydantic models
should inherit from BaseModel``. The race is too rare to fail a test reliably, so these
check the mechanism, each in a fresh process (the models of this one are long built):
after the adapter is constructed, or after a Dask worker's first call, every model on the
call's path is built.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import clean_env
from throttlepool.sim import SimConfig, Simulator

ROOT = Path(__file__).resolve().parents[2]

#: "module:Class" of the models each adapter's chat call reads or writes, none built at import.
_OPENAI = ["openai.types.chat:ChatCompletion",
           "openai.types.chat.chat_completion:Choice", "openai.types:CompletionUsage",
           "openai.types.chat:ChatCompletionMessage", "openai.types.chat:ChatCompletionChunk"]
_ANTHROPIC = ["anthropic.types:Message",
              "anthropic.types:Usage", "anthropic.types:TextBlock",
              "anthropic.types:RawMessageStartEvent"]
_GENAI = ["google.genai.types:GenerateContentResponse", "google.genai.types:Candidate",
          "google.genai.types:Content", "google.genai.types:Part",
          "google.genai.types:_GenerateContentParameters"]

_CHECK = """
import importlib, json, sys
def unbuilt(names):
    out = []
    for name in names:
        module, _, cls = name.partition(":")
        if not getattr(importlib.import_module(module), cls).__pydantic_complete__:
            out.append(name)
    return out
"""

_BUILD = {
    "openai": """
import openai
from throttlepool.adapters.openai import OpenAIAdapter
OpenAIAdapter(openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1"), model="m")
""",
    "anthropic": """
import anthropic
from throttlepool.adapters.anthropic import AnthropicAdapter
AnthropicAdapter(anthropic.Anthropic(api_key="k", base_url="http://127.0.0.1:9"), model="m")
""",
    "gemini": """
from google import genai
from throttlepool.adapters.google_genai import GenAIAdapter
GenAIAdapter(genai.Client(api_key="k"), model="gemini-2.0-flash")
""",
}
_MODELS = {"openai": _OPENAI, "anthropic": _ANTHROPIC, "gemini": _GENAI}
_SDKS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google.genai"}


def _fresh(code: str, stdin: bytes = b"") -> list[list[str]]:
    """Run ``code`` in a fresh interpreter; each line it prints is a JSON list of models."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(),
                          input=stdin, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.decode().strip().splitlines()]


@pytest.mark.parametrize("sdk", list(_BUILD))
def test_constructing_the_adapter_builds_the_models_its_calls_use(sdk: str) -> None:
    pytest.importorskip(_SDKS[sdk])
    names = json.dumps(_MODELS[sdk])
    show = f"print(json.dumps(unbuilt({names})))\n"
    before, after = _fresh(_CHECK + f"import {_SDKS[sdk]}\n" + show + _BUILD[sdk] + show)
    assert before == _MODELS[sdk]  # the SDK builds none of them at import: the hazard
    assert after == []


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig()) as server:
        yield server


def test_an_unpickled_adapter_builds_them_in_its_first_call(sim: Simulator) -> None:
    """The Dask path: the worker never runs ``__init__``; its first call builds the lot,
    the stream's chunk model included, which a plain call never reads."""
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    adapter = OpenAIAdapter(openai.OpenAI(api_key="k", base_url=sim.openai_base_url),
                            model="gpt-4o-mini", max_tokens=4)
    names = json.dumps(_OPENAI)
    code = _CHECK + (
        "import pickle\nadapter = pickle.loads(sys.stdin.buffer.read())\n"
        "assert adapter.call('hello', 10.0).value.choices[0].message.content\n"
        f"print(json.dumps(unbuilt({names})))")
    assert _fresh(code, pickle.dumps(adapter)) == [[]]
