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
(`tests/cli/test_cli_docs.py` checks that it is current).

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

Exit codes: 0 every item succeeded (also an input with no records: it is said on stderr,
and `--output` is written empty, so a pipeline whose filter found nothing goes on), 1 some
items failed (or were not attempted after a fatal error), 2 usage, configuration, input or
checkpoint-database error (nothing is sent and no output is written), 130 interrupted
(calls in flight were drained and checkpointed; run the same command again to resume).

## Request options

`--system`, `--temperature`, `--max-tokens` and `-p/--param NAME=VALUE` (repeatable; the
value is JSON when it parses, else text; a dotted name nests: `-p response_format.type=json_object`)
go into every request: the openai chat body (`--system` as a leading system message,
`--max-tokens` as `max_tokens`; give `-p max_completion_tokens=N` for models that want it),
the google-genai `config` (`system_instruction`, `max_output_tokens`), the
google-generativeai `generation_config` (the system prompt goes to the model), the http
JSON body (`system`, `max_tokens`). `--provider python:...` takes none: the function builds
its own request. Under `--tpm` a request without an output limit reserves 256 tokens;
`--dry-run` says how many do, and counts `--max-tokens` in its estimate.

`--api-key` overrides the provider's variable (http: `Authorization: Bearer KEY`), but
other users can read a command line in the process list: prefer the variable.
`--header 'Name: value'` (repeatable) is for `--provider http`. `-v` never shows either.

**`-P` is the provider, `-p` the parameter.** `-p` was the short flag of `--provider` before
`--param` existed. A `-p` value without `=` cannot be a parameter, so `-p openai` still
selects the provider, with a warning, until scripts move to `-P openai`.

## Rate limits

`--rpm`, `--tpm`, `--itpm` and `--otpm` are per-minute limits. A server that counts over
another window needs its own: `--rate-limit SPEC` (repeatable, adding to those) takes the
library's limit strings, as `limits=[...]` does: `16/second`, `500/10s`,
`400000 input tokens/minute`, `80000 output tokens/minute`. Against a server that allows 16
requests in any second, `--rpm 960` still lets bursts through (429s);
`--rate-limit 16/second` holds every second to 16. A spec that does not parse is refused
before anything is sent (exit 2, naming `--rate-limit` and the text). (`--limit N` is
something else: only the first N records.)

## Run names, resuming and `--reuse`

A run's default name is the input's file name plus a short hash of its absolute path
(`q.txt-1a2b3c4d`), so `a/q.txt` and `b/q.txt` are two runs in one `throttlepool.db`;
for stdin, a hash of what was piped in, so piping the same data again resumes. Running
the same command again resumes: ok items come from the checkpoint and failed and
not-attempted items are called again (the summary prints that command). A checkpoint made
before this naming resumes with `--run-name <file name>`.

An edited input under the same run name stops with the first changed line
(`line 18 of q.txt differs ...`) and the command to use instead: a new `--run-name` with
`--reuse`, which takes the answer of every request already answered ok in the database
(any run, matched by the request and the provider, model and parameters), so only the
changed lines are called.

`--batch-size` defaults to 8 here, in `generate_batch`, `@batchable` and the runner: enough
to keep a 500 requests/minute limit busy at about 1 s latency; raise it for higher limits
(`demo` uses 16 to fill its 50/s limit at 0.2 s latency).

## Shell completion

Completion comes from click; add one line to your shell's start-up file:

```bash
eval "$(_THROTTLEPOOL_COMPLETE=bash_source throttlepool)"   # ~/.bashrc
eval "$(_THROTTLEPOOL_COMPLETE=zsh_source throttlepool)"    # ~/.zshrc
_THROTTLEPOOL_COMPLETE=fish_source throttlepool | source    # fish: config.fish
```

It completes commands, flags and `--input-format`/`--format` choices.
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
