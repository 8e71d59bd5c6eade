"""Helpers shared by the tests that run ``python -m throttlepool`` as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: Variables of the developer's shell that would change what a CLI run does or sends.
SECRET_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without keys and ``THROTTLEPOOL_*`` settings, with the
    heuristic token count (no tokenizer load), plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("THROTTLEPOOL_") and k not in SECRET_VARS}
    env["THROTTLEPOOL_NO_TIKTOKEN"] = "1"
    env.update(extra or {})
    return env


def run_cli(args: list[str], cwd: Path, *, env: dict[str, str] | None = None,
            stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m throttlepool ARGS`` in ``cwd`` with a clean environment plus ``env``."""
    return subprocess.run([sys.executable, "-m", "throttlepool", *args], cwd=cwd,
                          env=clean_env(env), input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def write_jsonl(path: Path, n: int, prefix: str = "prompt") -> Path:
    """``n`` records ``{"prompt": "<prefix> i", "id": i}``."""
    path.write_text("".join(json.dumps({"prompt": f"{prefix} {i}", "id": i}) + "\n"
                            for i in range(n)), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, object]]:
    """The records of a JSONL results file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
