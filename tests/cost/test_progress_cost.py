"""Issue 15, item 1: the live progress line shows the cost so far and projected for the
whole input, fitted to the width with the other fields."""

from __future__ import annotations

from throttlepool import _progress_line as pl
from throttlepool.outcome import RunStats
from throttlepool.progress import status_line


def running(**kw: object) -> RunStats:
    stats = RunStats(total=100, done=10, calls=10, started=1.0, input_tokens=5000,
                     output_tokens=2000, cost_usd=0.05)
    for k, v in kw.items():
        setattr(stats, k, v)
    return stats


def test_cost_so_far_and_projected_for_the_whole_input() -> None:
    stats = running()
    assert pl.projected_cost(stats) == 0.5  # $0.005 an item, 100 items
    assert pl.cost_field(stats) == "cost=$0.0500 (~$0.5000)"
    assert "cost=$0.0500 (~$0.5000)" in status_line(stats, now=11.0)


def test_unknown_cost_reads_unknown_never_zero() -> None:
    assert pl.cost_field(running(cost_usd=0.0, cost_unknown=10)) == "cost=?"
    partial = running(cost_unknown=5)
    # Five priced calls cost $0.05: $0.01 an item for the 90 left.
    assert pl.cost_field(partial) == "cost=$0.0500+? (~$0.9500)"
    assert pl.cost_field(running(cost_usd=0.0)) is None  # nothing priced: no field
    assert pl.cost_field(running(total=None)) == "cost=$0.0500"


def test_cost_field_is_fitted_to_the_width() -> None:
    stats = running()
    rates = pl.Rates(pl.Rate(1.0, 10.0), pl.Rate(60.0, 10.0), pl.Rate(4200.0, 10.0))
    fields = pl.fields(stats, now=11.0, active=10.0, rates=rates, desc="run")
    wide = pl.fit(fields, 160, 0.1)
    assert "cost=$0.0500 (~$0.5000)" in wide
    narrow = pl.fit(fields, 40, 0.1)
    assert len(narrow) <= 40 and "cost=" not in narrow
    assert narrow.startswith("10/100")
