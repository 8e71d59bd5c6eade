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
