"""The run itself: drive the runner over the records, write rows in order, say how it went."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
from collections import Counter
from typing import Any

import click

from .._config import Settings
from .._inputs import STDIN, Records
from .._sync import StreamIterator
from ..adapters import Adapter
from ..distributed.reach import scheduler_problem
from ..errors import ConfigError, EndpointUnreachable, OutputError, StoreError
from ..options import RunOptions, library_kwargs
from ..outcome import BatchResult, Outcome, Status
from ..runner import ThreadedBatchRunner
from ..store import SQLiteStore, Store, redact_text
from ..store.keys import canonical_json
from .advice import FailureCause, explain, first_cause, retry_hint
from .costs import CostTally, budget_advice, budget_stop, run_pricing
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from .output import ResultWriter, row
from .preflight import SkipBadRecords
from .progress import CliProgress, failure_name, summary
from .reuse import CheckpointAnswers


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


#: Seconds a Dask scheduler has to answer the handshake (the docs promise 10 s at most).
SCHEDULER_HANDSHAKE_TIMEOUT = 5.0


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


def _check_scheduler(address: str | None) -> None:
    """Stop in one sentence (exit 2) when ``--dask-scheduler`` names no Dask scheduler.

    Asked here, before the client is made: ``distributed.Client`` waits without a bound for
    the handshake of a port where an HTTP server or Redis listens, and fails with a
    deserializer's traceback where something else answers.
    """
    if not address:
        return
    why = scheduler_problem(address, timeout=SCHEDULER_HANDSHAKE_TIMEOUT)
    if why is None:
        return
    try:
        from ..distributed.driver import ClusterUnavailable
    except ImportError:  # without the dask extra the run itself says what to install
        return
    raise ClusterUnavailable(why)


def execute(settings: Settings, records: Records, adapter: Adapter[Any], *, verbose: int,
            quiet: bool, argv: list[str]) -> int:
    """Run ``records`` through ``adapter``; write rows in order; returns the exit code."""
    _check_scheduler(settings["dask_scheduler"])
    total = len(records)
    run_name = settings["run_name"] or default_run_name(records.spec.path, records)
    mode = CliProgress.auto_mode(bool(settings["progress"]) and not quiet)
    sink = CliProgress(mode, rpm=settings["rpm"], tpm=settings["tpm"], itpm=settings["itpm"],
                       otpm=settings["otpm"], desc=run_name)
    writer = ResultWriter(settings["output"], records, run_name=run_name, db=settings["db"])
    failures: Counter[str] = Counter()
    tally = CostTally(run_pricing(settings, adapter))
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
    stream: StreamIterator | None = None
    emitted = 0
    failed = False
    try:
        # Each run flag is one library option (the table in throttlepool.options says which);
        # the CLI adds only what it builds itself: the store, the display, the answer cache.
        options = RunOptions.from_kwargs(**library_kwargs(settings.values)).updated(
            run_name=run_name, store=store, progress=sink, cache=reuse,
            executor="dask" if settings["dask_scheduler"] else "threads")
        runner: ThreadedBatchRunner[Any] = ThreadedBatchRunner(
            adapter, limits=options.limits, retry=options.retry, checkpoint=options.checkpoint,
            execution=options.execution, budget=options.budget)
        with runner:
            writer.open()
            stream = runner.imap(records)  # in input order, on threads or on Dask
            for outcome in stream:
                writer.write(row(outcome))
                emitted += 1
                tally.add(outcome)
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
                            output=settings["output"], cost=tally.line(stats.cost_usd)):
            click.echo(line, err=True)
    if interrupted:
        click.echo(f"interrupted; {_resume_hint(argv, store)}", err=True)
        return EXIT_INTERRUPTED
    stopped = stream.stopped
    if isinstance(stopped, EndpointUnreachable):
        raise stopped  # exit 2 with its one sentence (app.py), not 1 "some items failed"
    if budget_stop(stopped):
        assert stopped is not None
        click.echo(budget_advice(stopped, argv, settings["max_cost"], total - stats.done
                                 - sum(failures.values())), err=True)
        return EXIT_FAILED
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


def _stop_stream(stream: StreamIterator | None, exc: BaseException) -> None:
    """The consumer failed: a second Ctrl-C aborts the run, anything else stops it (the
    calls in flight finish and are checkpointed). Either way its status is recorded."""
    if stream is not None:
        if isinstance(exc, KeyboardInterrupt):
            stream.abort()
        else:
            stream.close()


def _keep_written(writer: ResultWriter, records: Records, emitted: int,
                  exc: BaseException) -> None:
    """A run ending in an exception keeps --output: every row delivered so far (answers that
    were paid for), then not-attempted rows; a run that delivered nothing leaves it alone."""
    result = getattr(exc, "result", None)  # a StoreError may carry the outcomes delivered
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
