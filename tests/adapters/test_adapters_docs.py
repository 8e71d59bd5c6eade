"""Run every Python example in docs/providers.md against the simulator, so the page cannot rot."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_examples_in_providers_doc_run() -> None:
    pytest.importorskip("openai")
    pytest.importorskip("google.genai")
    pytest.importorskip("google.generativeai")
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    namespace: dict[str, Any] = {"__name__": "providers_doc"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # google-generativeai is deprecated
            for number, code in enumerate(blocks, 1):
                try:
                    exec(compile(code, f"{DOC.name}:block{number}", "exec"), namespace)
                except Exception as exc:
                    raise AssertionError(f"example {number} failed:\n{code}") from exc
        stats = namespace["sim"].stats()
        assert all(status == "200" for status in stats["by_status"]), stats["by_status"]
    finally:
        sim = namespace.get("sim")
        if sim is not None:
            sim.stop()
