"""Every adapter pickles (pickle and cloudpickle) and works in a fresh process against the
simulator, with the same client settings, the client built once per process, and the key
nowhere but inside the pickle."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from throttlepool.adapters import Adapter, CallableAdapter, HttpAdapter
from throttlepool.classify import ErrorKind
from throttlepool.sim import Simulator

warnings.filterwarnings("ignore", category=FutureWarning)  # google-generativeai is deprecated

HERE = Path(__file__).parent
KEY = "sk-portable-secret-0123456789"

# Runs in a fresh interpreter: unpickle the adapter twice, call each copy once, and report
# the values, how many clients this process built, and the verdict of any error.
CHILD = r"""
import json, pickle, sys, warnings
warnings.simplefilter("ignore")
from throttlepool.adapters import portable
blob = open(sys.argv[1], "rb").read()
out = {"values": [], "error": None}
for _ in range(2):
    adapter = pickle.loads(blob)
    try:
        out["values"].append(adapter.call("hello", 10).value)
    except Exception as exc:
        verdict = adapter.classify(exc)
        out["error"] = [type(exc).__name__, str(exc), str(verdict.kind)]
        break
out["clients"] = len(portable._clients)
print(json.dumps(out))
"""


def echo_call(item: str) -> str:
    """A plain function the child imports by reference (tests/adapters on its path)."""
    url = os.environ["PORTABLE_SIM_URL"]
    reply = requests.post(url + "/echo", json={"prompt": item}, timeout=10)
    reply.raise_for_status()
    return str(reply.json()["result"])


def _openai(sim: Simulator) -> Adapter[Any]:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    client = openai.OpenAI(api_key=KEY, base_url=sim.openai_base_url, organization="org-p",
                           project="proj-p", default_headers={"X-Team": "ml"}, timeout=20.0)
    return OpenAIAdapter(client, model="gpt-4o-mini", extract="text")


def _anthropic(sim: Simulator) -> Adapter[Any]:
    anthropic = pytest.importorskip("anthropic")
    from throttlepool.adapters.anthropic import AnthropicAdapter

    client = anthropic.Anthropic(api_key=KEY, base_url=sim.url,
                                 default_headers={"X-Team": "ml"})
    return AnthropicAdapter(client, model="claude-x", extract="text")


def _genai(sim: Simulator) -> Adapter[Any]:
    genai = pytest.importorskip("google.genai")
    from throttlepool.adapters.google_genai import GenAIAdapter

    client = genai.Client(api_key=KEY, http_options={
        "base_url": sim.url, "api_version": "v1beta", "headers": {"X-Team": "ml"}})
    return GenAIAdapter(client, model="gemini-2.0-flash", extract="text")


def _generativeai(sim: Simulator) -> Adapter[Any]:
    genai = pytest.importorskip("google.generativeai")
    from throttlepool.adapters.google_generativeai import GenerativeModelAdapter

    genai.configure(api_key=KEY, transport="rest", client_options={"api_endpoint": sim.url})
    model = genai.GenerativeModel("gemini-2.0-flash", system_instruction="be brief")
    adapter = GenerativeModelAdapter(model, extract="text")
    adapter.call("warm up", 10)  # a used model holds a client: it must still travel
    return adapter


def _http(sim: Simulator) -> Adapter[Any]:
    return HttpAdapter(sim.url + "/echo", headers={"Authorization": f"Bearer {KEY}"},
                       extract="result")


def _callable(sim: Simulator) -> Adapter[Any]:
    return CallableAdapter(echo_call)


BUILDERS: dict[str, Callable[[Simulator], Adapter[Any]]] = {
    "openai": _openai, "anthropic": _anthropic, "gemini": _genai,
    "google-generativeai": _generativeai, "http": _http, "python": _callable,
}


def _child(blob: bytes, tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    path = tmp_path / "adapter.pickle"
    path.write_bytes(blob)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _clean_env(sim: Simulator) -> dict[str, str]:
    """No provider key in the child's environment: whatever works came in the pickle."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["PORTABLE_SIM_URL"] = sim.url
    return env


@pytest.mark.parametrize("dumps", ["pickle", "cloudpickle"])
@pytest.mark.parametrize("provider", list(BUILDERS))
def test_adapter_travels_to_a_fresh_process(provider: str, dumps: str, sim: Simulator,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setenv("PORTABLE_SIM_URL", sim.url)
    adapter = BUILDERS[provider](sim)
    sim.reset()
    local = adapter.call("hello", 10).value
    driver_request = sim.requests()[-1]
    if dumps == "cloudpickle":
        blob = pytest.importorskip("cloudpickle").dumps(adapter)
    else:
        blob = pickle.dumps(adapter)

    out = _child(blob, tmp_path, _clean_env(sim))

    assert out["error"] is None
    assert out["values"] == [local, local]
    # One client per process, shared by every copy unpickled there (SDK adapters only).
    assert out["clients"] == (1 if provider in ("openai", "anthropic", "gemini") else 0)
    worker_requests = sim.requests()[-2:]
    for request in worker_requests:  # same endpoint, same key (masked alike), same headers
        assert request["path"] == driver_request["path"]
        for name in ("authorization", "x-api-key", "x-goog-api-key", "x-team",
                     "openai-organization", "openai-project"):
            assert request["headers"].get(name) == driver_request["headers"].get(name), name
    if provider == "openai":
        assert driver_request["headers"]["openai-organization"] == "org-p"
    if provider in ("openai", "anthropic", "gemini"):
        assert driver_request["headers"]["x-team"] == "ml"
    # The key crosses in the pickle only: never in what is shown or checkpointed.
    assert KEY not in repr(adapter)
    assert KEY not in json.dumps(adapter.identity())
    copy = pickle.loads(blob)
    assert KEY not in repr(copy)
    assert KEY not in json.dumps(copy.identity())


def test_generativeai_without_a_key_on_the_worker_names_the_setting(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    genai = pytest.importorskip("google.generativeai")
    from throttlepool.adapters.google_generativeai import GenerativeModelAdapter

    for var in ("GOOGLE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    genai.configure(api_key=None, transport="rest", client_options={"api_endpoint": sim.url})
    blob = pickle.dumps(GenerativeModelAdapter(genai.GenerativeModel("gemini-2.0-flash")))

    out = _child(blob, tmp_path, _clean_env(sim))

    name, message, kind = out["error"]
    assert name == "ConfigError"
    assert "GOOGLE_API_KEY" in message and "no API key" in message
    assert kind == str(ErrorKind.FATAL)  # every later call would fail alike: stop the run


def test_generativeai_settings_survive_a_process_that_never_configured_genai(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask's scheduler unpickles and pickles a task again in its own process: the copy must
    carry the driver's genai.configure(), not that process's empty one."""
    genai = pytest.importorskip("google.generativeai")
    for var in ("GOOGLE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    adapter = _generativeai(sim)
    local = adapter.call("hello", 10).value
    blob = pickle.dumps(adapter)
    genai.configure(api_key=None)  # the in-between process: nothing configured
    relayed = pickle.dumps(pickle.loads(blob))

    out = _child(relayed, tmp_path, _clean_env(sim))

    assert out["error"] is None
    assert out["values"] == [local, local]


def test_sdk_client_rebuilt_once_per_process_and_per_event_loop(sim: Simulator) -> None:
    openai = pytest.importorskip("openai")
    import asyncio

    from throttlepool.adapters import portable
    from throttlepool.adapters.openai import OpenAIAdapter

    sync = pickle.dumps(OpenAIAdapter(openai.OpenAI(api_key=KEY, base_url=sim.openai_base_url),
                                      model="m"))
    first, second = pickle.loads(sync), pickle.loads(sync)
    assert first._client.get() is second._client.get()

    blob = pickle.dumps(OpenAIAdapter(
        openai.AsyncOpenAI(api_key=KEY, base_url=sim.openai_base_url), model="m",
        extract="text"))
    adapter = pickle.loads(blob)
    seen = []

    async def one() -> None:
        seen.append(portable.client_for(adapter._client.spec))
        assert (await adapter.acall("x", 10)).value == "echo: x"

    asyncio.run(one())
    asyncio.run(one())  # a new loop: the first loop's pooled connections are not reused
    assert seen[0] is not seen[1]
    assert adapter.call("y", 10).value == "echo: y"  # from a thread: a loop of its own


def test_a_client_that_cannot_be_rebuilt_says_so_when_pickled() -> None:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    azure = openai.AzureOpenAI(api_key=KEY, api_version="2024-06-01",
                               azure_endpoint="http://127.0.0.1:9")
    adapter = OpenAIAdapter(azure, model="m")
    with pytest.raises(TypeError, match="AzureOpenAI client cannot be sent"):
        pickle.dumps(adapter)
