"""``throttlepool run --mode batch`` and ``throttlepool cancel``: the same input, checkpoint and
output as an online run, sent through the provider's Batch API (docs/batch.md)."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from collections import Counter
from typing import Any, TextIO

import click

from .._config import Settings
from .._inputs import BadRecord, Records
from ..adapters import Adapter
from ..batchapi import BatchApiRunner, BatchesLeftRunning, BatchProgress, BatchView
from ..batchapi.runner import planned_batches, recordable_url
from ..cost.text import usd
from ..errors import ConfigError, EndpointUnreachable, RunStopped, ThrottlepoolError
from ..options import RunOptions, library_kwargs
from ..outcome import Status
from ..store import SQLiteStore, redact_text
from .advice import FailureCause, explain
from .costs import CostTally, budget_advice, budget_stop, resume_cap, run_pricing
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from .execute import default_run_name
from .output import ResultWriter, row
from .preflight import SkipBadRecords
from .progress import CliProgress, duration, failure_name, summary

#: The phases a batch is shown in, in order; provider statuses map onto them. A batch not
#: created yet (its requests being uploaded, or the create call not answered) is
#: "uploading": nothing of it runs at the provider.
PHASES = ("uploading", "submitted", "in progress", "completed", "failed")
_PHASE_OF_STATUS = {"validating": "submitted", "in_progress": "in progress",
                    "finalizing": "in progress", "cancelling": "in progress",
                    "completed": "completed", "ended": "completed", "failed": "failed",
                    "expired": "failed", "cancelled": "failed", "canceled": "failed",
                    # Gemini's (google-genai JobState)
                    "JOB_STATE_PENDING": "submitted", "JOB_STATE_QUEUED": "submitted",
                    "JOB_STATE_RUNNING": "in progress", "JOB_STATE_CANCELLING": "in progress",
                    "JOB_STATE_SUCCEEDED": "completed",
                    "JOB_STATE_PARTIALLY_SUCCEEDED": "completed",
                    "JOB_STATE_FAILED": "failed", "JOB_STATE_EXPIRED": "failed",
                    "JOB_STATE_CANCELLED": "failed"}


def batch_phase(view: BatchView) -> str:
    """Which of :data:`PHASES` a batch is in."""
    if view.state != "done" and view.batch_id is None:
        return "uploading"
    if view.state == "done":
        return "failed" if _PHASE_OF_STATUS.get(view.status or "") == "failed" else "completed"
    return _PHASE_OF_STATUS.get(view.status or "", "submitted")


def progress_text(progress: BatchProgress) -> str:
    """``2 batches: 1 in progress, 1 completed | 40 ok, 0 failed of 100 | waiting 3m12s |
    cost $0.0012 (~$0.0040)``."""
    phases = Counter(batch_phase(v) for v in progress.batches)
    counts = ", ".join(f"{phases[p]} {p}" for p in PHASES if phases[p]) or "none yet"
    n = len(progress.batches)
    text = (f"{n} batch{'es' if n != 1 else ''}: {counts} | {progress.done} ok, "
            f"{progress.failed} failed of {progress.total} | waiting "
            f"{duration(progress.waiting)}")
    cost = _cost_text(progress.cost, progress.projected_cost, progress.projected_is_bound)
    return text + (f" | {cost}" if cost else "") + (
        f" | {progress.note}" if progress.note else "")


def _cost_text(spent: float | None, projected: float | None, bound: bool) -> str | None:
    """``cost $0.0012 (~$0.0040)``, as the online bar: spent so far, and projected for the
    whole input at the batch price (``up to ~$0.0310`` from the estimates, before any
    answer has come back)."""
    if spent is None and projected is None:
        return None
    text = f"cost {usd(spent or 0.0)}"
    if projected is not None and projected > (spent or 0.0) * 1.0001:
        text += f" ({'up to ' if bound else ''}~{usd(projected)})"
    return text


class BatchDisplay:
    """The batches' progress on stderr after each poll: one line rewritten in place on a
    terminal (``bar``), a line every ``interval`` seconds or on a change otherwise
    (``lines``), nothing (``off``)."""

    def __init__(self, mode: str, file: TextIO | None = None, interval: float = 10.0) -> None:
        self.mode = mode
        self.file = file or sys.stderr
        self.interval = interval
        self._last = ""
        self._shown_at = 0.0
        self._drawn = False
        #: The progress last reported (the summary counts its batches), shown or not.
        self.last: BatchProgress | None = None

    @property
    def batches(self) -> int:
        """How many batches the run created this session (as last polled)."""
        if self.last is None:
            return 0
        return sum(1 for v in self.last.batches if v.batch_id is not None)

    def __call__(self, progress: BatchProgress) -> None:
        self.last = progress
        if self.mode == "off":
            return
        text = progress_text(progress)
        if self.mode == "bar":
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.file.write("\r\x1b[K" + text[:width])
            self._drawn = True
        else:
            now = time.monotonic()
            changed = text.partition(" | waiting")[0] != self._last.partition(" | waiting")[0]
            if not changed and now - self._shown_at < self.interval:
                return
            self._shown_at = now
            self.file.write(text + "\n")
        self._last = text
        self.file.flush()

    def close(self) -> None:
        """End the rewritten line, so what follows starts on its own."""
        if self._drawn:
            self.file.write("\n")
            self.file.flush()
            self._drawn = False


#: How long each provider may take: its completion window (docs/batch.md "How long").
WINDOWS = {"openai": "24 h", "anthropic": "24 h", "gemini": "a 24 h target, 48 h at most"}


def batch_plan(records: Records, adapter: Adapter[Any]) -> list[str]:
    """A dry run's batch lines: how many batches the run would submit, and how long the
    provider may take. A provider without a Batch API is a ConfigError, as in a real run."""
    items = ((i, item) for i, item in enumerate(records) if not isinstance(item, BadRecord))
    try:
        batches, refused = planned_batches(adapter, items)
    except ConfigError as exc:
        raise ConfigError(f"--mode batch is not available for --provider {adapter.name}: "
                          f"{exc}") from None
    n = len(batches)
    lines = [f"batch mode: {n} batch{'es' if n != 1 else ''} of "
             f"{', '.join(str(len(b)) for b in batches[:5])}{', ...' if n > 5 else ''} "
             f"requests (one model per batch, within the provider's size limits)"]
    if refused:
        first = min(refused)
        lines.append(f"  {len(refused)} requests cannot go in a batch and would fail, e.g. "
                     f"[{first}]: {refused[first]}")
    lines.append(f"time: no rate limit applies; the provider answers within its completion "
                 f"window ({WINDOWS.get(adapter.name, '24 h')}), most batches within an hour")
    return lines


def batch_runner(adapter: Adapter[Any], store: SQLiteStore, settings: Settings,
                 run_name: str, progress: BatchDisplay | None = None) -> BatchApiRunner:
    """The library's batch runner for these settings; a provider without a Batch API here
    is a ConfigError, before anything is sent."""
    pricing = {k: settings[k] for k in ("price_in", "price_out") if settings[k] is not None}
    fallback = settings["fallback"] if settings["fallback"] not in (None, "none") else None
    # The online path runs under the run's own limits, retries and execution settings; the
    # budget stays the batch runner's, which reserves each fallback item itself.
    options = RunOptions.from_kwargs(**library_kwargs(settings.values))
    online = {"limits": options.limits, "retry": options.retry,
              "execution": options.execution} if fallback else None
    try:
        return BatchApiRunner(adapter, store=store, run_name=run_name,
                              poll_interval=float(settings["poll_interval"]),
                              attempts=int(settings["retries"]) + 1, pricing=pricing,
                              max_cost=settings["max_cost"], progress=progress,
                              fallback=fallback, online=online, base_url=settings["base_url"])
    except ConfigError as exc:
        raise ConfigError(f"--mode batch is not available for --provider "
                          f"{settings['provider']}: {exc}") from None


def execute_batch(settings: Settings, records: Records, adapter: Adapter[Any], *,
                  verbose: int, quiet: bool, argv: list[str]) -> int:
    """Run ``records`` as provider batches; write rows in order; returns the exit code."""
    if not settings["db"]:
        raise ConfigError("--mode batch needs a checkpoint (--db, not --no-db): it records "
                          "the batches submitted, so a rerun collects them instead of "
                          "submitting again")
    total = len(records)
    run_name = settings["run_name"] or default_run_name(records.spec.path, records)
    display = BatchDisplay(CliProgress.auto_mode(bool(settings["progress"]) and not quiet))
    tally = CostTally(run_pricing(settings, adapter))
    failures: Counter[str] = Counter()
    why: str | None = None  # the first failure's message, said once under the summary
    if records.skip_bad:
        adapter = SkipBadRecords(adapter)  # bad records fail as themselves, never submitted
    store = SQLiteStore(settings["db"], timeout=settings["db_timeout"])
    writer = ResultWriter(settings["output"], records, run_name=run_name, db=settings["db"])
    try:
        with batch_runner(adapter, store, settings, run_name, display) as runner:
            writer.open()
            try:
                result = runner.run(records, run_name=run_name)
            except ThrottlepoolError:
                raise
            except Exception as exc:  # the SDK's: a 404, a rejected key, ...
                raise provider_refused(exc, adapter, settings) from exc
            finally:
                display.close()
            for outcome in result.outcomes:
                writer.write(row(outcome))
                tally.add(outcome)
                name = failure_name(outcome)
                if name is not None:
                    failures[name] += 1
                    why = why or str(row(outcome)["error"])
                    if verbose:
                        click.echo(f"item {outcome.index} failed: {row(outcome)['error']}",
                                   err=True)
            writer.commit()
    except BaseException:
        writer.discard()
        raise
    finally:
        store.close()
    waiting = result.stopped if isinstance(result.stopped, BatchesLeftRunning) else None
    if not quiet:
        for line in summary(result.stats, failures, total=total, checkpoint=settings["db"],
                            run_name=run_name, output=settings["output"], cost=tally.line(),
                            batches=display.batches,
                            at_provider=len(waiting.at_provider) if waiting else 0,
                            batch_ids=waiting.batch_ids if waiting else ()):
            click.echo(line, err=True)
    if why is not None:
        click.echo(f"why: {why}", err=True)
    if isinstance(result.stopped, EndpointUnreachable):
        raise result.stopped  # exit 2 with its one sentence (app.py), as online
    if result.interrupted:
        click.echo(_next_steps(argv, settings, run_name, waiting), err=True)
        return EXIT_INTERRUPTED
    if budget_stop(result.stopped):
        assert result.stopped is not None
        left = sum(1 for o in result.outcomes if o.status is Status.NOT_ATTEMPTED)
        needed = resume_cap(result.outcomes, adapter, tally.pricing)
        click.echo(budget_advice(result.stopped, argv, settings["max_cost"], left, needed),
                   err=True)
        return EXIT_FAILED
    return EXIT_OK if result.stats.done == total else EXIT_FAILED


def provider_refused(exc: BaseException, adapter: Adapter[Any], settings: Settings
                     ) -> RunStopped:
    """An SDK error that stopped a batch run (or ``cancel``), said as an online run says
    it (``the endpoint was not found (404): check --base-url and --model``)."""
    reason = explain(FailureCause(adapter.classify(exc), exc), provider=settings["provider"],
                     model=settings["model"])
    what = f"a Batch API call failed ({type(exc).__name__})"
    return RunStopped(f"{what}: {reason}" if reason else f"{what}: {exc}", exc)


def _next_steps(argv: list[str], settings: Settings, run_name: str,
                left: BatchesLeftRunning | None) -> str:
    """What Ctrl-C left where, and the commands a user may want next (secrets masked)."""
    again = redact_text(shlex.join(["throttlepool", *argv]))
    ids = left.batch_ids if left is not None else []
    if not ids:
        return (f"interrupted before any batch was created: nothing is at the provider\n"
                f"  to go on: {again}")
    cancel = ["throttlepool", "cancel", run_name, "--db", str(settings["db"])]
    if settings["base_url"] and not recordable_url(str(settings["base_url"])):
        cancel += ["--base-url", str(settings["base_url"])]  # masked below: give it again
    shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    n = len(ids)
    return (f"interrupted: {n} batch{'es' if n != 1 else ''} left running at the provider "
            f"({shown}) with {len(left.at_provider) if left else 0} requests; nothing is "
            f"submitted twice\n"
            f"  to collect the results: {again}\n"
            f"  to cancel the batches:  {redact_text(shlex.join(cancel))}")
