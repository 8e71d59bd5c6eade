"""The ``throttlepool`` click group and ``main``, which turns errors into exit codes."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from .. import __version__
from ..errors import ThrottlepoolError
from .cancel import cancel_command
from .demo import demo_command, sim_command
from .errors import exit_code, message
from .inspect import export_command, status_command
from .report import report_command
from .run import run_command

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

EXAMPLES = """\b
Examples:
  throttlepool demo                                   # try it: no API key needed
  throttlepool run prompts.jsonl --model gpt-4o-mini --rpm 500 -o results.jsonl
  throttlepool status
  throttlepool export prompts.jsonl --format csv -o results.csv
  throttlepool cancel prompts.jsonl-1a2b3c4d --base-url https://api.openai.com/v1
  throttlepool sim --port 8080 --rpm 60
"""


@click.group(context_settings=CONTEXT, epilog=EXAMPLES)
@click.version_option(__version__, "-V", "--version", prog_name="throttlepool")
def cli() -> None:
    """Run API calls over large batches fast and safely: threads, an exact rate limiter,
    retries, results in order, SQLite checkpoints."""


for command in (run_command, status_command, export_command, sim_command, demo_command):
    cli.add_command(command)
cli.add_command(report_command)
cli.add_command(cancel_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script and ``python -m throttlepool``; always exits."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="throttlepool", standalone_mode=False,
                        obj={"argv": args})
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        click.echo("\nthrottlepool: interrupted", err=True)
        sys.exit(exit_code(exc))
    except click.ClickException as exc:
        exc.show()
        sys.exit(exit_code(exc))
    except ThrottlepoolError as exc:
        click.echo(message(exc), err=True)
        sys.exit(exit_code(exc))
    except BrokenPipeError:
        # stdout closed early (| head): not an error of ours; keep Python from complaining.
        sys.stderr.close()
        sys.exit(0)
    sys.exit(code if isinstance(code, int) else 0)
