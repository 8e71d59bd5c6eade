#!/usr/bin/env python
"""Write docs/cli.md from the ``--help`` of every ``throttlepool`` command.

    python scripts/gen_cli_docs.py          # rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check  # exit 1 if docs/cli.md is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from throttlepool.cli import cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
WIDTH = 100  # fixed, so the text does not depend on the terminal that generates it

HEADER = """# The `throttlepool` command line

Generated from `--help` by `scripts/gen_cli_docs.py`; do not edit by hand
(`tests/test_cli_docs.py` checks that it is current).

Settings come from flags, then `THROTTLEPOOL_<OPTION>` environment variables
(`THROTTLEPOOL_BATCH_SIZE=8`), then a `[tool.throttlepool]` table in `pyproject.toml` or a
`throttlepool.toml` (top-level keys) in the current directory or a parent:

```toml
[tool.throttlepool]
provider = "openai"
model = "gpt-4o-mini"
batch_size = 8
rpm = 500
tpm = 200000
db = "runs.db"
```

Exit codes: 0 every item succeeded, 1 some items failed (or were not attempted after a
fatal error), 2 usage, configuration, input or checkpoint-database error (nothing is
sent and no output is written), 130 interrupted (calls in flight were drained and
checkpointed; run the same command again to resume).
"""


def _help(command: click.Command, path: list[str], parent: click.Context | None) -> str:
    ctx = click.Context(command, info_name=path[-1], parent=parent, terminal_width=WIDTH,
                        max_content_width=WIDTH)
    return command.get_help(ctx)


def render() -> str:
    """The whole of docs/cli.md."""
    settings = {**cli.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    root = click.Context(cli, info_name="throttlepool", **settings)
    parts = [HEADER, "## `throttlepool`\n", "```text", cli.get_help(root), "```\n"]
    for name in cli.list_commands(root):
        command = cli.get_command(root, name)
        assert command is not None
        parts += [f"## `throttlepool {name}`\n", "```text",
                  _help(command, ["throttlepool", name], root), "```\n"]
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is out of date: run python scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
