"""Instructions per no-op item, counted by valgrind (cachegrind): a figure the machine's load
does not move, for A/B work on the engine's fixed costs (wall-clock A/B runs on a shared
2-core box vary by 30 % and more; these vary by about 1 %).

    python -m bench.instructions [--ways run,lim,run-timeout,...] [--items 3000,9000]

Each way runs in a child process under ``valgrind --tool=cachegrind --cache-sim=no`` once
per item count; the figure is the slope between the two counts, so start-up and imports
cancel out. ``run``: ``ThreadedBatchRunner.run`` at batch_size 8 (as the overhead bench);
``lim``: with a limit that never binds; ``-noad``: without the header pacer
(``adaptive=False``); ``-timeout``: with a timeout the runner enforces (``timeout=60``);
``tpe``: ``ThreadPoolExecutor.map``. Needs valgrind (apt-get install
valgrind); not part of ``python -m bench`` or the tests.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import sys
from concurrent.futures import ThreadPoolExecutor
n, way = int(sys.argv[1]), sys.argv[2]
def noop(x):
    return x
if way == "tpe":
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(1 for _ in pool.map(noop, range(n))) == n
else:
    from throttlepool import ThreadedBatchRunner
    kw = {}
    if way.startswith("lim"):
        kw["limits"] = ["400000/minute"]
    if way.endswith("-noad"):
        kw["adaptive"] = False
    if way.endswith("-timeout"):  # a timeout the runner enforces (no adapter does its own)
        kw["timeout"] = 60.0
    with ThreadedBatchRunner(noop, batch_size=8, progress=False, **kw) as runner:
        assert len(runner.run(range(n))) == n
"""

WAYS = ("run", "run-noad", "lim", "lim-noad", "tpe", "run-timeout")


def instructions(way: str, n: int, valgrind: str) -> int:
    """Instructions one child process runs for ``n`` items the ``way`` given."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")  # numpy's idle threads spin: noise
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [valgrind, "--tool=cachegrind", "--cache-sim=no",
             f"--cachegrind-out-file={tmp}/out", sys.executable, "-c", _CHILD, str(n), way],
            capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    match = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"{way} with {n} items failed:\n{proc.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ways", default=",".join(WAYS))
    ap.add_argument("--items", default="3000,9000", help="two item counts: the slope's ends")
    args = ap.parse_args(argv)
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    low, high = (int(x) for x in args.items.split(","))
    for way in args.ways.split(","):
        if way not in WAYS:
            print(f"unknown way {way!r}; choose from {', '.join(WAYS)}", file=sys.stderr)
            return 2
        slope = (instructions(way, high, valgrind) - instructions(way, low, valgrind)) / (
            high - low)
        print(f"{way:<9} {slope:9,.0f} instructions per item", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
