"""``--dry-run``: what would be sent, the token estimate, the minimum time the limits allow."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import click

from .._inputs import BadRecord, Records
from ..adapters import Adapter
from ..limiter import Limit, build_limits
from ..limiter.limits import INPUT_TOKENS, OUTPUT_TOKENS, TOKENS
from .costs import CostRange
from .progress import duration
from .providers import request_preview

PREVIEW = 3
_UNIT_NAMES = {TOKENS: "tokens", INPUT_TOKENS: "input tokens", OUTPUT_TOKENS: "output tokens"}


def minimum_time(limits: Sequence[Limit], requests: float, tokens: float,
                 input_tokens: float = 0.0, output_tokens: float = 0.0) -> tuple[float, str]:
    """Seconds the limits need at least for this work, and which limit binds.

    A sliding window admits ``amount`` units at once and then ``amount`` more per ``period``,
    so ``n`` units need ``ceil(n / amount) - 1`` whole periods (call latency not counted).
    """
    best, binding = 0.0, ""
    for lim in limits:
        units = {TOKENS: tokens, INPUT_TOKENS: input_tokens,
                 OUTPUT_TOKENS: output_tokens}.get(lim.unit, requests)
        seconds = max(0, math.ceil(units / lim.amount) - 1) * lim.period if units else 0.0
        if seconds > best or not binding:
            best, binding = max(best, seconds), str(lim)
    return best, binding


def _limit_text(limits: Iterable[Limit]) -> str:
    parts = []
    for lim in limits:
        unit = _UNIT_NAMES.get(lim.unit, "requests")
        parts.append(f"{lim.amount:g} {unit}/{lim.period:g}s")
    return ", ".join(parts) or "none"


def dry_run(records: Records, adapter: Adapter[Any], *, rpm: float | None,
            tpm: float | None, batch_size: int, verbose: bool,
            itpm: float | None = None, otpm: float | None = None,
            missing_key: str | None = None, costs: CostRange | None = None,
            batch: list[str] | None = None, specs: Sequence[str] = ()) -> int:
    """Print the plan for ``records`` on stdout; sends nothing. Returns the exit code 0.

    ``missing_key`` names the variables to set when no API key is set: a dry run needs
    none, the real run will. ``costs`` sums the projected cost of the requests. ``batch``
    (``--mode batch``): the batches' lines, instead of the rate limits and calls in flight.
    ``specs``: the ``--rate-limit`` texts.
    """
    limits = build_limits(list(specs), rpm=rpm, tpm=tpm, itpm=itpm, otpm=otpm)
    shown = 0
    count = bad = 0
    tokens = output = 0.0
    biggest = 0.0
    reserve = float(getattr(adapter, "output_reserve", 0) or 0)
    default_reserved = 0
    previews: list[str] = []
    for item in records:
        count += 1
        if isinstance(item, BadRecord):
            bad += 1
            previews.append(f"  [{count - 1}] bad record: {item.message}")
            continue
        cost = adapter.estimate(item)
        if costs is not None:
            costs.add(item, cost.tokens - cost.output, cost.output)
        if reserve and cost.output == reserve:
            default_reserved += 1
        tokens += cost.tokens
        output += cost.output
        biggest = max(biggest, cost.tokens)
        if verbose or shown < PREVIEW:
            shown += 1
            previews.append(f"  [{count - 1}] " + json.dumps(request_preview(adapter, item),
                                                             ensure_ascii=False, default=repr))
    sent = count - bad
    echo = click.echo
    if count == 0:
        echo(f"dry run: the input has no records ({records.name}): a run would send nothing")
        return 0
    echo(f"dry run: nothing was sent. {records.name} ({records.format}): {count} records"
         + (f", {bad} bad (would fail as items)" if bad else ""))
    echo(f"provider: {adapter.name}, " + ("through its Batch API" if batch is not None
                                          else f"batch size {batch_size}"))
    if missing_key:
        echo(f"no API key set: fine for a dry run; the real run needs {missing_key}")
    more = f" ({len(previews)} of {count} shown; -v shows all)" if len(previews) < count else ""
    echo(f"requests{more}:")
    for line in previews:
        echo(line)
    per = tokens / sent if sent else 0.0
    echo(f"estimated tokens: {tokens:,.0f} ({per:,.1f} per request, largest {biggest:,.0f})")
    if default_reserved:
        echo(f"  {default_reserved} of {sent} requests give no max_tokens: each reserves "
             f"{reserve:,.0f} output tokens{' under --tpm' if tpm else ''}; --max-tokens N "
             "reserves what the answers need")
    if costs is not None:
        echo(costs.text())
    if batch is not None:
        for line in batch:
            echo(line)
        return 0
    echo(f"limits: {_limit_text(limits)}")
    if limits:
        seconds, binding = minimum_time(limits, float(sent), tokens, tokens - output, output)
        echo(f"minimum time the limits allow: {duration(seconds)} (bound by {binding}; "
             "call latency comes on top)")
        for lim in limits:
            if lim.unit == TOKENS and biggest > lim.amount:
                echo(f"warning: a request needs {biggest:,.0f} tokens, more than the limit "
                     f"{lim} admits; it would fail", err=True)
    else:
        echo("minimum time the limits allow: no limit set (bound by latency and "
             f"{batch_size} calls in flight)")
    return 0
