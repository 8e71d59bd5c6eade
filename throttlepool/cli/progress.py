"""What the CLI shows on stderr: the live progress line (or periodic lines), then a summary."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from ..limiter.limits import INPUT_TOKENS, OUTPUT_TOKENS, REQUESTS, TOKENS
from ..outcome import Outcome, RunStats, Status, repeated_calls_text
from ..progress import LiveProgress


def duration(seconds: float) -> str:
    """``75.3`` -> ``1m15s``; ``4.21`` -> ``4.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class CliProgress(LiveProgress):
    """The library's live display (:class:`~throttlepool.progress.LiveProgress`) with the
    CLI's modes: ``"bar"`` on a terminal, ``"lines"`` (one every ``interval`` seconds) for
    logs and pipes, ``"off"``. It keeps the run's stats for the summary.

    ``rpm``/``tpm``/``itpm``/``otpm`` are shown against the rates when the engine reports
    no limits of its own.
    """

    def __init__(self, mode: str, *, rpm: float | None = None, tpm: float | None = None,
                 interval: float = 2.0, file: TextIO | None = None, desc: str = "items",
                 itpm: float | None = None, otpm: float | None = None) -> None:
        limits = [(amount, 60.0, unit) for amount, unit in
                  ((rpm, REQUESTS), (tpm, TOKENS), (itpm, INPUT_TOKENS), (otpm, OUTPUT_TOKENS))
                  if amount]
        super().__init__(desc, file, interval if mode == "lines" else None, mode=mode,
                         limits=limits)

    @staticmethod
    def auto_mode(enabled: bool, stream: TextIO | None = None) -> str:
        """``bar`` on a terminal, ``lines`` otherwise, ``off`` when disabled."""
        if not enabled:
            return "off"
        return "bar" if (stream or sys.stderr).isatty() else "lines"


def summary(stats: RunStats, failures: Counter[str], *, total: int,
            checkpoint: str | None = None, run_name: str | None = None,
            output: str | None = None, cost: str | None = None,
            batches: int | None = None, at_provider: int = 0,
            batch_ids: Sequence[str] = ()) -> list[str]:
    """The end-of-run lines: ok, failed by error type, retries, 429s, time, throughput,
    tokens and ``cost`` (the line :class:`~throttlepool.cli.costs.CostTally` makes).

    ``batches`` (a ``--mode batch`` run: how many provider batches it had) replaces the
    online line of calls, retries and calls/s, which mean nothing for a batch, by the
    batches, the requests submitted and the time spent waiting for the provider;
    ``at_provider`` items (submitted, their batches ``batch_ids`` left running by Ctrl-C) are
    counted as such, not as not attempted.
    """
    wall = stats.wall_time
    ok = stats.done
    failed = sum(failures.values())
    not_attempted = max(0, total - ok - failed - at_provider)
    by_type = ", ".join(f"{name} {n}" for name, n in failures.most_common())
    shown = ", ".join(batch_ids[:3]) + (", ..." if len(batch_ids) > 3 else "")
    waiting = (f", {at_provider} at the provider (batch{'es' if len(batch_ids) != 1 else ''} "
               f"{shown})" if at_provider else "")
    lines = [f"{ok} ok, {failed} failed" + (f" ({by_type})" if by_type else "") + waiting
             + (f", {not_attempted} not attempted" if not_attempted else "") + f" of {total}"]
    if batches is not None:
        lines.append(_batch_line(stats.calls, batches, wall))
    else:
        # This session's calls over this session's time: a resume also counts the calls
        # the killed session made (repeated_after_resume), which took none of this time.
        rate = (stats.calls - stats.repeated_after_resume) / wall if wall > 0 else 0.0
        called = ok + failed - stats.from_checkpoint - stats.cache_hits
        repeated = repeated_calls_text(stats.calls, called, stats.repeated_calls,
                                       stats.repeated_after_resume)
        lines.append(f"{stats.calls} calls{repeated}, "
                     f"{stats.retries} retries, {stats.rate_limited} "
                     f"rate-limited (429); {duration(wall)} wall, {rate:.1f} calls/s"
                     # A per-minute figure of a shorter run reads as a rate over a minute
                     # and may exceed a kept per-minute limit (its first window's burst).
                     + (f" ({rate * 60:.0f}/min)" if wall >= 60 else ""))
    if stats.from_checkpoint or stats.cache_hits:
        lines.append(f"{stats.from_checkpoint} from the checkpoint, {stats.cache_hits} cached")
    if stats.input_tokens or stats.output_tokens:
        lines.append(f"tokens: {stats.input_tokens} in, {stats.output_tokens} out")
    if cost:
        lines.append(cost)
    if checkpoint:
        lines.append(f"checkpoint: {checkpoint} (run {run_name!r})")
    if output:
        lines.append(f"results: {output}")
    return lines


def _batch_line(requests: int, batches: int, waited: float) -> str:
    """``2 batches, 150 requests submitted; 41m10s waiting for the provider``."""
    return (f"{batches} batch{'es' if batches != 1 else ''}, {requests} request"
            f"{'s' if requests != 1 else ''} submitted; {duration(waited)} waiting for the "
            f"provider")


def failure_name(outcome: Outcome[Any]) -> str | None:
    """The error type a failed item is counted under in the summary."""
    if outcome.status is not Status.FAILED:
        return None
    return type(outcome.error).__name__ if outcome.error is not None else "error"
