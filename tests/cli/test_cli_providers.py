"""Provider wiring of the CLI: names, python targets, keys from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from throttlepool.cli.providers import api_key, build_adapter, split_provider
from throttlepool.errors import ConfigError


def test_split_provider() -> None:
    assert split_provider("openai") == ("openai", None)
    assert split_provider("python:pkg.mod:fn") == ("python", "pkg.mod:fn")
    with pytest.raises(ConfigError, match="python:MODULE:FUNCTION"):
        split_provider("python")


def test_python_target_from_the_current_directory(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_calls_for_cli_test.py").write_text("def shout(x):\n    return x.upper()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", ".")])
    adapter = build_adapter("python:my_calls_for_cli_test:shout")
    assert adapter.call("hi", None).value == "HI"
    with pytest.raises(ConfigError, match="cannot load 'my_calls_for_cli_test:nope'"):
        build_adapter("python:my_calls_for_cli_test:nope")


def test_keys_come_from_the_sdk_variables() -> None:
    assert api_key("gemini", {"GOOGLE_API_KEY": "g"}) == "g"
    assert api_key("gemini", {"GEMINI_API_KEY": "a", "GOOGLE_API_KEY": "g"}) == "a"
    assert api_key("http", {}) is None
    with pytest.raises(ConfigError, match="OPENAI_API_KEY") as err:
        api_key("openai", {"OPENAI_API_KEY": ""})
    assert "sk-" not in str(err.value)


def test_http_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="--base-url"):
        build_adapter("http")
