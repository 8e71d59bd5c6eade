"""``throttlepool demo --mode batch``: the demo's prompts online and then through the
simulated OpenAI Batch API, with wall time and cost side by side."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import click

from ..adapters import make_adapter
from ..batchapi import BatchApiRunner
from ..cost.text import usd
from ..outcome import BatchResult
from ..runner import ThreadedBatchRunner
from ..sim import Simulator
from ..sim.batches import batches_of
from .batch import BatchDisplay
from .progress import CliProgress, duration, failure_name, summary

#: Both runs are priced as this model from the price table (the simulator answers any
#: model name), so the costs compare a real online price with its batch price.
PRICED_MODEL = "gpt-4o-mini"
POLL_INTERVAL = 0.25  # a real run polls every 30 s; the simulated batch takes seconds


def batch_demo(sim: Simulator, prompts: list[str], *, key: str, rate: float,
               batch_size: int, batch_delay: float, db: str, progress: bool) -> int:
    """Run ``prompts`` online under the simulator's limit, then as one provider batch that
    takes ``batch_delay`` seconds; print both summaries and the comparison. Exit code."""
    echo = click.echo
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    n = len(prompts)
    adapter = make_adapter("openai", base_url=sim.openai_base_url, api_key=key,
                           model=PRICED_MODEL, extract="text")
    echo(f"1) online: {n} prompts, {batch_size} in flight, limit {rate:g}/second...")
    sink = CliProgress(CliProgress.auto_mode(progress), rpm=max(1, int(rate)) * 60.0,
                       desc="online")
    with ThreadedBatchRunner(adapter, batch_size=batch_size, limits=[f"{rate:g}/second"],
                             progress=sink, store=db, run_name=f"demo-online-{stamp}") as runner:
        online = runner.run(prompts)
    _summary(online, n)
    sim.reset()
    batches_of(sim).configure(delay=batch_delay)
    echo(f"2) batch: the same {n} prompts through the simulated OpenAI Batch API "
         f"(its batches take {batch_delay:g}s here; a real one takes minutes to hours, "
         f"24 h at most)...")
    display = BatchDisplay(CliProgress.auto_mode(progress), interval=1.0)
    run_name = f"demo-batch-{stamp}"
    with BatchApiRunner(adapter, store=db, run_name=run_name, poll_interval=POLL_INTERVAL,
                        progress=display) as batch_runner:
        try:
            batch = batch_runner.run(prompts)
        finally:
            display.close()
    _summary(batch, n, batches=display.batches)
    _compare(online, batch)
    echo(f"checkpoint: {db} (run {run_name})")
    echo(f"  throttlepool status {run_name} --db {db}")
    wrong = _wrong(online) + _wrong(batch)
    if wrong:
        echo(f"{wrong} replies did not match their prompts", err=True)
    return 0 if online.all_succeeded and batch.all_succeeded and not wrong else 1


def _summary(result: BatchResult[Any], total: int, batches: int | None = None) -> None:
    failures: Counter[str] = Counter()
    for outcome in result:
        name = failure_name(outcome)
        if name is not None:
            failures[name] += 1
    for line in summary(result.stats, failures, total=total, batches=batches):
        click.echo(f"   {line}")


def _compare(online: BatchResult[Any], batch: BatchResult[Any]) -> None:
    """The two runs side by side: wall time and cost (as ``gpt-4o-mini``, from the table)."""
    rows = [("", "online", "batch"),
            ("wall time", duration(online.stats.wall_time), duration(batch.stats.wall_time)),
            ("cost", _cost(online), _cost(batch))]
    click.echo(f"online vs batch (priced as {PRICED_MODEL}; batch at the batch price):")
    for name, left, right in rows:
        click.echo(f"   {name:<10} {left:>12} {right:>12}")
    if online.stats.cost_usd and batch.stats.cost_usd:
        click.echo(f"   the batch cost {batch.stats.cost_usd / online.stats.cost_usd:.0%} of "
                   f"the online price, and waited for the provider instead of the rate limit")


def _cost(result: BatchResult[Any]) -> str:
    return usd(result.stats.cost_usd) if not result.stats.cost_unknown else "unknown"


def _wrong(result: BatchResult[Any]) -> int:
    return sum(1 for o in result if o.ok and o.value != "echo: " + o.item)
