"""``fallback="online"``: items whose batch requests still failed (expired, cancelled, 5xx)
after the configured batch attempts are called one by one through a ThreadedBatchRunner with
the same adapter, under its rate limiter and retries, and recorded in the batch run's
checkpoint at the online price."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..cost.pricing import ONLINE, item_model
from ..outcome import Status
from ..runner import ThreadedBatchRunner

if TYPE_CHECKING:
    from .session import Session


class OnlineFallback:
    """Runs a session's exhausted items online (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def run(self, indices: list[int]) -> None:
        """Call ``indices`` online; record what came back. Ctrl-C in the middle is the
        run's Ctrl-C (the items not answered stay due and are called on resume)."""
        s, r = self.s, self.s.r
        chosen: list[int] = []
        for i in indices:
            held = s.held.pop(i, None)  # the batch request was not billed: its share back
            if held is not None and s.budget is not None:
                s.budget.gate.cancel(held)
            if not s.reserve(i, ONLINE):
                break
            chosen.append(i)
        if not chosen:
            return
        tries = r.journal.submissions(s.run_id)
        online = r.online
        runner = online if isinstance(online, ThreadedBatchRunner) else ThreadedBatchRunner(
            r.adapter, **dict(online if isinstance(online, Mapping) else {}))
        try:
            result = runner.run([s.items[i] for i in chosen])
        finally:
            if runner is not online:
                runner.close()
        pricing = r.pricing_of(ONLINE)
        for outcome in result:
            i = chosen[outcome.index]
            if outcome.status is Status.NOT_ATTEMPTED:
                continue
            cost: Any = outcome.cost
            if cost is None and outcome.ok:
                cost = pricing.cost(outcome.usage, item_model(s.items[i]))
            s.record(i, outcome.status, value=outcome.value, usage=outcome.usage,
                     error=outcome.error, attempts=tries[i] + outcome.attempts,
                     latency=outcome.latency, cost=cost)
            s.stats.calls += outcome.attempts
        r.store.flush()
        if result.interrupted:
            raise KeyboardInterrupt
