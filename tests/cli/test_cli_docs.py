"""docs/cli.md is generated from ``--help``; it must match what the commands print now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_docs_are_current() -> None:
    # A fresh interpreter: click caches each command's help option on first use, so a command
    # another test invoked on its own (without the group's ``-h``) would render differently here.
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_the_help_names_every_provider_where_it_applies() -> None:
    # Trial 11: anthropic was missing from the keys, --system, --max-tokens and the sim line,
    # and --rate-limit did not say it adds to --itpm/--otpm. docs/cli.md is the help, as
    # checked above.
    cli_md = " ".join((ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split())
    assert "OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY" in cli_md
    assert "anthropic: the top-level system field" in cli_md
    assert "(openai/anthropic/http: max_tokens, which anthropic requires" in cli_md
    assert "adding to --rpm/--tpm/--itpm/--otpm" in cli_md
    assert "status prompts.jsonl # the latest run of this input" in cli_md
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "OpenAI/Anthropic/Gemini simulator" in readme
