"""``throttlepool run``: parse flags, read the input, drive the runner, present the results."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import click

from ..adapters import Adapter, CallResult, Delegating
from ..classify import ErrorKind, Verdict
from ..config import Settings, load_settings
from ..errors import (
    CheckpointMismatch,
    ConfigError,
    EndpointUnreachable,
    InputError,
    OutputError,
    StoreError,
)
from ..hints import RateInfo
from ..inputs import FORMATS, MAX_RECORD_BYTES, STDIN, BadRecord, InputSpec, Records
from ..limiter import Cost
from ..outcome import BatchResult, Outcome, Status
from ..runner import ThreadedBatchRunner
from ..store import SQLiteStore, Store, redact_text
from ..store.keys import canonical_json
from ..sync import StreamIterator
from .advice import FailureCause, explain, first_cause, retry_hint
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from .output import ResultWriter, row
from .plan import dry_run
from .progress import CliProgress, failure_name, summary
from .providers import (
    PROVIDER_NAMES,
    RequestOptions,
    build_adapter,
    looks_like_provider,
    missing_key,
    parse_headers,
    parse_params,
    split_provider,
)
from .reuse import CheckpointAnswers

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

\b
Every option can also come from THROTTLEPOOL_<OPTION> (e.g. THROTTLEPOOL_BATCH_SIZE=8)
or from [tool.throttlepool] in pyproject.toml / a throttlepool.toml; flags win over the
environment, which wins over the file. Keys come from OPENAI_API_KEY, GEMINI_API_KEY or
GOOGLE_API_KEY. Exit codes: 0 all ok, 1 some items failed, 2 usage or input error,
130 interrupted (rerun the same command to resume from the checkpoint).
"""


class SkipBadRecords(Delegating[Any]):
    """Wraps an adapter so a :class:`BadRecord` item fails as that item, without a call."""

    def estimate(self, item: Any) -> Cost:
        """Nothing for a bad record: it never reaches the API."""
        return Cost(0.0, 0.0) if isinstance(item, BadRecord) else self.inner.estimate(item)

    def call(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """Raise a bad record's InputError; call through otherwise."""
        if isinstance(item, BadRecord):
            raise item.error()
        return self.inner.call(item, timeout)

    async def acall(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """Raise a bad record's InputError; await the wrapped adapter otherwise."""
        if isinstance(item, BadRecord):
            raise item.error()
        return await self.inner.acall(item, timeout)

    def classify(self, exc: BaseException) -> Verdict:
        """A bad record is permanent: never retried."""
        if isinstance(exc, InputError):
            return Verdict(ErrorKind.PERMANENT, None, "bad input record")
        return self.inner.classify(exc)

    def rate_info(self, exc: BaseException) -> RateInfo | None:
        """Rate headers of the wrapped adapter's errors."""
        return None if isinstance(exc, InputError) else self.inner.rate_info(exc)


def default_run_name(path: str, records: Records | None = None) -> str:
    """The run name when none is given: the input's file name and a short hash that tells
    inputs apart, so a rerun of the same command resumes and another input starts its own.

    A file is told apart by its absolute path (``a/q.txt`` and ``b/q.txt`` are two runs; an
    edited ``q.txt`` is the same run, which then reports the changed line); stdin by what it
    holds, so piping the same data again resumes.
    """
    digest = hashlib.sha256()
    if path == STDIN:
        for item in records or ():
            digest.update(canonical_json(getattr(item, "message", item)).encode(
                "utf-8", "surrogatepass") + b"\n")
        return f"stdin-{digest.hexdigest()[:8]}"
    digest.update(os.path.abspath(path).encode("utf-8", "surrogatepass"))
    return f"{os.path.basename(path) or path}-{digest.hexdigest()[:8]}"


def check_requests(records: Records, adapter: Adapter[Any]) -> None:
    """Every record a full request body the provider accepts, or an InputError naming the
    line and the field to map, before anything is sent (the SDK would refuse each call)."""
    problem_of = getattr(adapter, "request_problem", None)
    if problem_of is None:
        return
    for line, request in records.lines():
        if not isinstance(request, Mapping):
            continue
        problem = problem_of(request)
        if problem is not None:
            raise InputError(f"{problem}. {_mapping_hint(request, records)}",
                             source=records.name, line=line)


def _mapping_hint(record: Mapping[str, Any], records: Records) -> str:
    """Which field to send as the prompt, for a record that is not a request body."""
    fields = ", ".join(str(k) for k in record) or "none"
    texts = [str(k) for k, v in record.items() if isinstance(v, str)]
    if not texts:
        return (f"The record's fields are: {fields}; a record is a full request body unless "
                f"--field names its prompt (now {records.spec.field!r}) or --template builds one")
    return (f"The record's fields are: {fields}; to send one as the prompt give --field "
            f"{texts[0]} (or --template '... {{{texts[0]}}} ...')")


def _check_model(provider: str, model: str | None, records: Records) -> None:
    if model or split_provider(provider)[0] != "openai":
        return
    first = next(iter(records), None)
    if first is not None and not (isinstance(first, dict) and "model" in first):
        raise ConfigError("the openai provider needs --model (or a \"model\" in each JSONL "
                          "request body)")


class _Done(Iterator[Outcome[Any]]):
    """A finished BatchResult read like a stream."""

    def __init__(self, result: BatchResult[Any]) -> None:
        self._outcomes = iter(result.outcomes)
        self.interrupted = result.interrupted

    def __next__(self) -> Outcome[Any]:
        return next(self._outcomes)


def _open_store(settings: Settings) -> Store | None:
    db = settings["db"]
    if not db:
        return None
    return SQLiteStore(db, timeout=settings["db_timeout"])


def _resume_hint(argv: list[str], store: Store | None) -> str:
    if store is None:
        return "no checkpoint was kept (--no-db): running the command again starts over"
    command = shlex.join(["throttlepool", *argv])
    shown = redact_text(command)  # --base-url/--limiter-url may carry a password or key
    masked = "" if shown == command else " (give the masked credentials again)"
    return f"to resume, run the same command again: {shown}{masked}"


def execute(settings: Settings, records: Records, adapter: Adapter[Any], *, verbose: int,
            quiet: bool, argv: list[str]) -> int:
    """Run ``records`` through ``adapter``; write rows in order; returns the exit code."""
    total = len(records)
    run_name = settings["run_name"] or default_run_name(records.spec.path, records)
    mode = CliProgress.auto_mode(bool(settings["progress"]) and not quiet)
    sink = CliProgress(mode, rpm=settings["rpm"], tpm=settings["tpm"], desc=run_name)
    writer = ResultWriter(settings["output"], records, run_name=run_name, db=settings["db"])
    failures: Counter[str] = Counter()
    causes: list[FailureCause] = []
    store = _open_store(settings)
    reuse = None
    if settings["reuse"]:
        if not isinstance(store, SQLiteStore):
            raise ConfigError("--reuse takes answers from the checkpoint database: it needs "
                              "--db (not --no-db)")
        reuse = CheckpointAnswers(store)
    if records.skip_bad:
        adapter = SkipBadRecords(adapter)
    stream: StreamIterator | _Done | None = None
    emitted = 0
    failed = False
    try:
        runner: ThreadedBatchRunner[Any] = ThreadedBatchRunner(
            adapter, batch_size=settings["batch_size"], rpm=settings["rpm"],
            tpm=settings["tpm"], retries=settings["retries"], timeout=settings["timeout"],
            progress=sink, store=store, run_name=run_name,
            limiter_url=settings["limiter_url"],
            executor="dask" if settings["dask_scheduler"] else "threads",
            scheduler=settings["dask_scheduler"], cache=reuse)
        with runner:
            writer.open()
            # Dask runs whole chunks remotely and returns once; threads stream in order.
            stream = (
                _Done(runner.run(records)) if settings["dask_scheduler"] else runner.imap(records))
            for outcome in stream:
                writer.write(row(outcome))
                emitted += 1
                name = failure_name(outcome)
                if name is not None:
                    failures[name] += 1
                    if len(causes) < 20 and outcome.error is not None:
                        causes.append(FailureCause(adapter.classify(outcome.error),
                                                   outcome.error))
                    if verbose:
                        click.echo(f"item {outcome.index} failed: {row(outcome)['error']}",
                                   err=True)
            interrupted = stream.interrupted
            # A stop (Ctrl-C, a fatal error) ends the stream early: the rest get rows too.
            _write_not_attempted(writer, records, emitted)
            writer.commit()
    except BaseException as exc:
        failed = True
        _stop_stream(stream, exc)
        _keep_written(writer, records, emitted, exc)
        raise
    finally:
        if store is not None:
            try:
                store.close()
            except StoreError:
                if not failed:
                    raise  # else the run's own error (what is not recorded) says more
    stats = sink.stats
    if not quiet:
        path = getattr(store, "path", None)
        for line in summary(stats, failures, total=total, checkpoint=path, run_name=run_name,
                            output=settings["output"]):
            click.echo(line, err=True)
    if interrupted:
        click.echo(f"interrupted; {_resume_hint(argv, store)}", err=True)
        return EXIT_INTERRUPTED
    stopped = getattr(stream, "stopped", None)
    if isinstance(stopped, EndpointUnreachable):
        raise stopped  # exit 2 with its one sentence (app.py), not 1 "some items failed"
    cause = first_cause(causes)
    reason = explain(cause, provider=settings["provider"], model=settings["model"]) if (
        cause is not None) else None
    if emitted < total:
        left = total - emitted
        click.echo(f"the run stopped early after a fatal error; {left} "
                   f"{'item was' if left == 1 else 'items were'} not attempted", err=True)
    if reason is not None:
        click.echo(f"why: {reason}", err=True)
    hint = retry_hint(argv, failed=sum(failures.values()), not_attempted=total - emitted,
                      ok=stats.done, has_checkpoint=store is not None,
                      stdin=records.spec.path == STDIN)
    if hint is not None:
        click.echo(hint, err=True)
    return EXIT_OK if stats.done == total else EXIT_FAILED


def _write_not_attempted(writer: ResultWriter, records: Records, emitted: int) -> None:
    if emitted < len(records):
        for index, item in enumerate(records):
            if index >= emitted:
                writer.write(row(Outcome(index, item, Status.NOT_ATTEMPTED)))


def _stop_stream(stream: StreamIterator | _Done | None, exc: BaseException) -> None:
    """The consumer failed: a second Ctrl-C aborts the run, anything else stops it (the
    calls in flight finish and are checkpointed). Either way its status is recorded."""
    if isinstance(stream, StreamIterator):
        if isinstance(exc, KeyboardInterrupt):
            stream.abort()
        else:
            stream.close()


def _keep_written(writer: ResultWriter, records: Records, emitted: int,
                  exc: BaseException) -> None:
    """A run ending in an exception keeps --output: every row delivered so far (answers that
    were paid for), then not-attempted rows; a run that delivered nothing leaves it alone."""
    result = getattr(exc, "result", None)  # run() (Dask) hands its outcomes on the error
    if emitted == 0 and isinstance(result, BatchResult):
        with contextlib.suppress(OutputError):
            for outcome in result.outcomes:
                writer.write(row(outcome))
                emitted += 1
    if emitted == 0:
        writer.discard()
        return
    if not isinstance(exc, KeyboardInterrupt | OutputError):
        with contextlib.suppress(Exception):  # e.g. the input cannot be read again
            _write_not_attempted(writer, records, emitted)
    writer.close_partial()


@click.command("run", epilog=EXAMPLES)
@click.argument("input_path", metavar="INPUT")
@click.option("-P", "--provider", metavar="NAME",
              help=f"API to call: {', '.join(PROVIDER_NAMES)}. [default: openai]")
@click.option("-m", "--model", help="Model name sent with every request.")
@click.option("--system", metavar="TEXT", help="System prompt for every request (openai: a "
              "system message; gemini: system_instruction; http: the body's \"system\").")
@click.option("--temperature", type=float, help="Sampling temperature of every request.")
@click.option("--max-tokens", type=int, metavar="N", help="Output tokens at most per request "
              "(openai/http: max_tokens; gemini: max_output_tokens). Under --tpm a request "
              "without it reserves 256.")
@click.option("-p", "--param", multiple=True, metavar="NAME=VALUE", help="Any field of the "
              "request body (gemini: of its config), repeatable; VALUE is JSON when it parses, "
              "else text; a dotted NAME nests: -p top_p=0.9 -p response_format.type=json_object")
@click.option("--api-key", metavar="KEY", help="API key, instead of the provider's environment "
              "variable (http: sent as 'Authorization: Bearer KEY'). Prefer the variable: a "
              "flag is visible to other users in the process list.")
@click.option("--header", multiple=True, metavar="'NAME: VALUE'", help="HTTP header for "
              "--provider http, repeatable.")
@click.option("-b", "--batch-size", type=int, help="Calls in flight at most. [default: 8]")
@click.option("--rpm", type=float, help="Requests per minute allowed (exact sliding window).")
@click.option("--tpm", type=float, help="Tokens per minute allowed (prompt + max output).")
@click.option("--retries", type=int, help="Retries per item after the first attempt. "
              "[default: 3]")
@click.option("--timeout", type=float, help="Seconds one call may take.")
@click.option("--db", metavar="PATH", help="Checkpoint database; a rerun with the same run "
              "name resumes from it. [default: throttlepool.db]")
@click.option("--no-db", is_flag=True, help="Keep no checkpoint.")
@click.option("--db-timeout", type=float, help="Seconds to wait for a locked checkpoint "
              "database. [default: 10]")
@click.option("--run-name", help="Name of the run in the checkpoint. [default: the input's "
              "file name and a hash of its path (stdin: of its content)]")
@click.option("--reuse/--no-reuse", default=None, help="Take the answer of any request "
              "already answered ok in the checkpoint database (any run), so a new run name or "
              "an edited input calls only new requests. [default: off]")
@click.option("-o", "--output", metavar="PATH", help="Results file, JSONL or CSV by its "
              "extension, in input order. [default: stdout]")
@click.option("--limit", type=int, metavar="N", help="Only the first N records.")
@click.option("--max-record-size", type=int, metavar="BYTES", help="Refuse a record whose "
              "request text is larger, before any call. [default: 1000000]")
@click.option("--dry-run", is_flag=True, help="Validate the input and print what would be "
              "sent, the token estimate and the minimum time the limits allow; send nothing.")
@click.option("--progress/--no-progress", default=None, help="Progress on stderr: a bar on a "
              "terminal, periodic lines otherwise. [default: on]")
@click.option("-v", "--verbose", count=True, help="Show settings and their sources, every "
              "failed item, every request in a dry run.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary.")
@click.option("--template", help="Prompt template filled from each record's fields, e.g. "
              "'Title: {title}'. Text lines are {text}.")
@click.option("--column", help="CSV column holding the prompt. [default: prompt, or the "
              "only column]")
@click.option("--field", help="JSONL field holding the prompt; records without it are full "
              "request bodies. [default: prompt]")
@click.option("--input-format", type=click.Choice(FORMATS), help="Input format. [default: by "
              "extension; stdin is sniffed]")
@click.option("--extract", help="What to keep of each reply: text, json, raw, or an "
              "adapter's named field (http: result). [default: text; http/python: raw]")
@click.option("--base-url", help="API base URL (e.g. the simulator's); for --provider http "
              "the endpoint URL.")
@click.option("--skip-bad-records/--stop-on-bad-records", default=None, help="Record a bad "
              "input record as a failed item instead of stopping before any call. "
              "[default: stop]")
@click.option("--limiter-url", metavar="URL", help="Share the rate limit with other processes "
              "or machines: sqlite:///path or redis://host:6379/0.")
@click.option("--dask-scheduler", metavar="ADDRESS", help="Run on a Dask cluster "
              "(tcp://host:8786); needs --limiter-url redis://... so workers share the limit.")
@click.option("--config", metavar="PATH", help="Config file to read instead of searching "
              "for pyproject.toml / throttlepool.toml.")
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
    for repeatable in ("param", "header"):
        flags[repeatable] = flags[repeatable] or None  # not given: the env or file may say
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
                                dry_run=dry_run)
        _check_model(settings["provider"], settings["model"], records)
        check_requests(records, adapter)
        if dry_run:
            return dry_run_plan(records, adapter, settings, verbose)
        if len(records) == 0:
            return _nothing_to_do(settings, records)
        argv: list[str] = (ctx.obj or {}).get("argv", [])
        try:
            return execute(settings, records, adapter, verbose=verbose, quiet=quiet, argv=argv)
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
    return dry_run(records, adapter, rpm=settings["rpm"], tpm=settings["tpm"],
                   batch_size=settings["batch_size"], verbose=bool(verbose), missing_key=key)
