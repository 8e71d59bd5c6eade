"""The limiter's own cost per call, in microseconds: hot (the same three calls back to back)
and cold (other work between them, as in a run, where the loop and seven other threads run
between one call's steps).

    python -m bench.limiter_cost [--rounds 9] [--calls 3000]

Each call of a limited run takes three locked steps: ``reserve`` (on the loop),
``call_started`` and ``call_ended`` (on the worker thread). With other work between them
they cost two to three times what they cost back to back (this script's two figures),
because each step's code and objects have left the CPU's caches since the last call; in a
run the loop and seven other threads run between one call's steps. Figures are the least
of ``--rounds`` rounds (the machine is shared: the least is the one least disturbed);
compare two trees by alternating ``PYTHONPATH=<tree>`` runs of a copy of this file kept
outside both (run from a tree's root, ``-m`` imports that tree whatever PYTHONPATH says).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from throttlepool.limiter import RateLimiter

_HEAP = [object() for _ in range(200_000)]
_DOC = {f"k{i}": [i, str(i), {"x": i}] for i in range(300)}


def _elsewhere(k: int) -> None:
    """Work of the size a run does between one call's steps: scattered reads, a json dump."""
    total = 0
    for j in range(k, k + 2000, 7):
        total += id(_HEAP[j * 31 % len(_HEAP)]) & 1
    json.dumps(_DOC)


def _round(calls: int, between: Callable[[int], None] | None) -> tuple[float, float, float]:
    """Mean microseconds of reserve, call_started and call_ended over ``calls`` calls."""
    limiter = RateLimiter(f"{20 * calls}/minute", margin=None)
    warm = limiter.reserve()
    limiter.call_ended(warm, limiter.call_started(warm, first_on_thread=True),
                       first_on_thread=True)
    reserve, started, ended = limiter.reserve, limiter.call_started, limiter.call_ended
    clock = time.perf_counter
    spent = [0.0, 0.0, 0.0]
    for i in range(calls):
        if between:
            between(i * 13 % 190_000)
        t0 = clock()
        permit = reserve()
        spent[0] += clock() - t0
        if between:
            between(i * 7 % 190_000)
        t0 = clock()
        start = started(permit, first_on_thread=False)
        spent[1] += clock() - t0
        if between:
            between(i * 3 % 190_000)
        t0 = clock()
        ended(permit, start, first_on_thread=False)
        spent[2] += clock() - t0
    a, b, c = (s / calls * 1e6 for s in spent)
    return a, b, c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    for name, between in (("hot", None), ("cold", _elsewhere)):
        rounds = [_round(args.calls, between) for _ in range(args.rounds)]
        least = [min(column) for column in zip(*rounds, strict=True)]
        print(f"{name:4}  reserve {least[0]:5.2f}  call_started {least[1]:5.2f}  "
              f"call_ended {least[2]:5.2f}  total {sum(least):5.2f} us")


if __name__ == "__main__":
    main()
