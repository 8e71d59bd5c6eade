"""``throttlepool run``: parse flags, read the input, drive the runner, present the results."""

from __future__ import annotations

import os
import re
import shlex
from typing import Any

import click

from .._config import Settings, load_settings
from .._inputs import MAX_RECORD_BYTES, STDIN, InputSpec, Records
from ..adapters import Adapter
from ..errors import CheckpointMismatch, ConfigError
from ..options import BATCH
from ..store import redact_text
from .batch import batch_plan, execute_batch
from .costs import CostRange, run_pricing
from .errors import EXIT_OK
from .execute import execute
from .flags import setting_flags
from .output import ResultWriter
from .plan import dry_run
from .preflight import check_model, check_requests
from .providers import (
    RequestOptions,
    build_adapter,
    looks_like_provider,
    missing_key,
    parse_headers,
    parse_params,
)

EXAMPLES = """\b
Examples:
  throttlepool run prompts.jsonl --model gpt-4o-mini --rpm 500 -o results.jsonl
  throttlepool run papers.csv --column abstract --template 'Summarise: {abstract}' \\
      --provider gemini --model gemini-2.0-flash --tpm 1000000 -o out.csv
  cat questions.txt | throttlepool run - --provider http \\
      --base-url http://127.0.0.1:8080/echo --extract result
  throttlepool run prompts.jsonl --dry-run --rpm 60 --tpm 40000
  throttlepool run questions.txt -P openai -m gpt-4o-mini --system 'Answer briefly.' \\
      --temperature 0 --max-tokens 200 -p seed=7 -p response_format.type=json_object
  throttlepool run questions.txt -m gpt-4o-mini --run-name v2 --reuse   # only new lines
  throttlepool run items.jsonl --provider python:mypkg.calls:ask --batch-size 16
  throttlepool run prompts.jsonl -m gpt-4o-mini --max-cost 5 -o out.jsonl   # stop at $5
  throttlepool run prompts.jsonl -m gpt-4o-mini --mode batch -o out.jsonl   # half price

\b
Every option can also come from THROTTLEPOOL_<OPTION> (e.g. THROTTLEPOOL_BATCH_SIZE=8)
or from [tool.throttlepool] in pyproject.toml / a throttlepool.toml; flags win over the
environment, which wins over the file. Keys come from OPENAI_API_KEY, ANTHROPIC_API_KEY,
GEMINI_API_KEY or GOOGLE_API_KEY. Exit codes: 0 all ok, 1 some items failed (or
--max-cost was reached: rerun with a higher cap to go on), 2 usage or input error, 130
interrupted (rerun the same command to resume from the checkpoint; in batch mode the
batches go on at the provider, and `throttlepool cancel RUN` cancels them).
"""


@click.command("run", epilog=EXAMPLES)
@click.argument("input_path", metavar="INPUT")
@setting_flags(after={
    "db": [click.option("--no-db", is_flag=True, help="Keep no checkpoint.")],
    "max_record_size": [click.option(
        "--dry-run", is_flag=True, help="Validate the input and print what would be sent, the "
        "token estimate and the minimum time the limits allow; send nothing.")],
    "progress": [
        click.option("-v", "--verbose", count=True, help="Show settings and their sources, "
                     "every failed item, every request in a dry run."),
        click.option("-q", "--quiet", is_flag=True, help="No progress and no summary.")],
    "dask_scheduler": [click.option(
        "--config", metavar="PATH", help="Config file to read instead of searching for "
        "pyproject.toml / throttlepool.toml.")],
})
@click.pass_context
def run_command(ctx: click.Context, /, input_path: str, dry_run: bool, verbose: int,
                quiet: bool, no_db: bool, config: str | None, **flags: Any) -> int:
    """Call an API once per input record, as fast as the rate limits allow.

    INPUT is a JSONL file (prompts, records with a prompt field, or full request bodies), a
    CSV file (one column, or a --template over its columns), a text file (one prompt a
    line) or - for stdin. Results go to stdout or --output, in input order. Input is UTF-8, with
    or without a byte-order mark; a JSONL record may nest 64 levels deep and may not hold NaN
    or Infinity; a bad record stops the run before any call, naming its file and line.
    """
    if no_db:
        flags["db"] = ""
    _legacy_provider_flag(flags)
    settings = load_settings(flags, config=config)
    if verbose:
        where = f" (config file {settings.file})" if settings.file else ""
        click.echo(f"settings{where}:", err=True)
        for line in settings.describe():
            click.echo(f"  {line}", err=True)
    spec = InputSpec(path=input_path, format=settings["input_format"],
                     column=settings["column"], field=settings["field"],
                     template=settings["template"], limit=settings["limit"],
                     max_record_bytes=settings.get("max_record_size", MAX_RECORD_BYTES))
    request = RequestOptions(system=settings["system"], temperature=settings["temperature"],
                             max_tokens=settings["max_tokens"],
                             params=parse_params(settings["param"] or ()))
    with Records(spec, skip_bad=bool(settings["skip_bad_records"])) as records:
        records.validate()
        adapter = build_adapter(settings["provider"], model=settings["model"],
                                base_url=settings["base_url"], extract=settings["extract"],
                                request=request, key=settings["api_key"],
                                headers=parse_headers(settings["header"] or ()),
                                dry_run=dry_run, stream=bool(settings["stream"]),
                                schema=settings["schema"],
                                json_retries=settings["json_retries"])
        check_model(settings["provider"], settings["model"], records)
        check_requests(records, adapter)
        if dry_run:
            return dry_run_plan(records, adapter, settings, verbose)
        if len(records) == 0:
            return _nothing_to_do(settings, records)
        argv: list[str] = (ctx.obj or {}).get("argv", [])
        try:
            run = execute_batch if settings["mode"] == BATCH else execute
            return run(settings, records, adapter, verbose=verbose, quiet=quiet, argv=argv)
        except CheckpointMismatch as exc:
            run_name = settings["run_name"] or (
                "stdin" if input_path == STDIN else os.path.basename(input_path))
            again = redact_text(shlex.join(["throttlepool", *_without_run_name(argv),
                                            "--run-name", f"{run_name}-2", "--reuse"]))
            raise CheckpointMismatch(f"{_mismatch_in_lines(str(exc), records)}:\n  {again}"
                                     ) from None


def _legacy_provider_flag(flags: dict[str, Any]) -> None:
    """``-p NAME`` was the provider's short flag before it became ``--param``; a value
    without ``=`` cannot be a parameter, so a provider name there still works, with a
    warning, until scripts move to ``-P``."""
    params = list(flags.get("param") or ())
    names = [p for p in params if "=" not in p and looks_like_provider(p)]
    if not names:
        return
    if len(names) > 1 or flags.get("provider"):
        raise ConfigError(f"-p is --param (NAME=VALUE) now; give the provider once, with "
                          f"-P/--provider (got -p {names[0]})")
    click.echo(f"throttlepool: warning: -p {names[0]} as the provider is deprecated: -p is "
               f"--param now; write -P {names[0]}", err=True)
    flags["provider"] = names[0]
    flags["param"] = tuple(p for p in params if p not in names)


def _without_run_name(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--run-name":
            skip = True
        elif not arg.startswith("--run-name=") and arg not in ("--reuse", "--no-reuse"):
            out.append(arg)
    return out


def _nothing_to_do(settings: Settings, records: Records) -> int:
    """An empty input is not an error (a filter upstream may find nothing), but it is said;
    ``--output`` is still written, empty, so the next step of a pipeline finds it."""
    writer = ResultWriter(settings["output"], run_name=settings["run_name"] or "",
                          db=settings["db"])
    writer.open()
    writer.commit()
    click.echo(f"throttlepool: the input has no records ({records.name}): nothing was sent",
               err=True)
    return EXIT_OK


_RECORD_RE = re.compile(r"\brecord (\d+) \(index (\d+)\)")


def _mismatch_in_lines(text: str, records: Records) -> str:
    """The store counts records from 0; a person counts lines of the file from 1."""
    match = _RECORD_RE.search(text)
    if match is None:
        return text
    index = int(match.group(2))
    line = next((ln for n, (ln, _) in enumerate(records.lines()) if n == index), None)
    where = f"line {line} of {records.name}" if line is not None else match.group(0)
    return text[:match.start()] + where + text[match.end():]


def dry_run_plan(records: Records, adapter: Adapter[Any], settings: Settings,
                 verbose: int) -> int:
    """``--dry-run``: the plan on stdout."""
    key = missing_key(settings["provider"]) if not settings["api_key"] else None
    batch = batch_plan(records, adapter) if settings["mode"] == BATCH else None
    return dry_run(records, adapter, rpm=settings["rpm"], tpm=settings["tpm"],
                   itpm=settings["itpm"], otpm=settings["otpm"], specs=settings["rate_limit"] or (),
                   batch_size=settings["batch_size"], verbose=bool(verbose), missing_key=key,
                   costs=CostRange(run_pricing(settings, adapter), settings["max_cost"]),
                   batch=batch)
