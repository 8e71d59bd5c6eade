"""The README's Python blocks run as written, against fakes for the user's functions and data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_first_code_block_runs_as_written(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # store="runs.db" lands here
    calls: list[str] = []

    def summarize(doc: str) -> str:
        calls.append(doc)
        return doc.upper()

    namespace = {"summarize": summarize, "docs": [f"doc {i}" for i in range(20)],
                 "huge_generator": (f"big {i}" for i in range(50)),
                 "tweet": "a tweet", "tweets": ["t1", "t2"]}
    exec(compile(python_blocks()[0], str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.results == [f"DOC {i}" for i in range(20)]  # type: ignore[attr-defined]
    assert sum(c.startswith("big ") for c in calls) == 50
    # Run again: the checkpointed runs resume (only generate_batch, which keeps none, calls).
    calls.clear()
    namespace["huge_generator"] = (f"big {i}" for i in range(50))
    exec(compile(python_blocks()[0], str(README), "exec"), namespace)
    assert sorted(calls) == sorted(f"doc {i}" for i in range(20))  # calls run at once
