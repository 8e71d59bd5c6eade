"""Helper process for the Ctrl-C tests: runs a batch of slow items in the main thread.

Usage: python sigint_worker.py SECONDS_PER_CALL ITEMS BATCH_SIZE

Prints ``started`` once the first call is running, then one JSON line: the run's summary,
or ``{"aborted": true, ...}`` when a second Ctrl-C aborted it.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from throttlepool import ThreadedBatchRunner


def main() -> int:
    seconds, n, batch = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    lock = threading.Lock()
    started: list[int] = []
    finished: list[int] = []

    def call(i: int) -> int:
        with lock:
            started.append(i)
            if len(started) == batch:  # every worker is busy: a run in full swing
                print("started", flush=True)
        time.sleep(seconds)
        with lock:
            finished.append(i)
        return i

    runner = ThreadedBatchRunner(call, batch_size=batch, retries=0, progress=False)
    try:
        result = runner.run(range(n))
    except KeyboardInterrupt:
        with lock:
            print(json.dumps({"aborted": True, "started": len(started),
                              "finished": len(finished)}), flush=True)
        return 130
    statuses: dict[str, int] = {}
    for o in result.outcomes:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    with lock:
        summary = {
            "interrupted": result.interrupted,
            "stopped": type(result.stopped).__name__ if result.stopped else None,
            "outcomes": len(result.outcomes),
            "statuses": statuses,
            "ok": [o.index for o in result.outcomes if o.ok],
            "not_attempted_errors": sorted({type(o.error).__name__ for o in result.outcomes
                                            if str(o.status) == "not_attempted"}),
            "started": sorted(started),
            "finished": sorted(finished),
        }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
