"""python -m bench [--quick] [--only SECTION[,SECTION...]] [--out docs/benchmarks.md]

Runs the server workloads (latency; rate-bound with the limit known on 1 s, 6 s and 60 s
windows and unknown on 6 s and 60 s; token-bound with an exact and a knife-edge estimate;
faulty; four processes sharing one budget through Redis and SQLite on 1 s and 60 s) through
every contender that applies against the simulator, then the in-memory overhead and scale
figures, then the checkpoint-store and scale-out benchmarks, and writes the report and plot.
``--quick`` (under 3 minutes) leaves out the 60 s windows and shrinks the rest; sizes and
the reasons for them are in bench/catalogue.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .catalogue import section_names, workloads
from .overhead import measure_one_cpu, measure_overhead, measure_scale
from .peers import CONTENDERS
from .report import Report, machine, write

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (*section_names(), "overhead", "scale", "store", "scaleout")
#: The bench extra's modules (setup.cfg): the peers, the plot, peak RSS.
BENCH_EXTRA = ("psutil", "pyrate_limiter", "filelock", "aiometer", "langchain_core",
               "matplotlib", "openai")


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", flush=True)


def _script(name: str, args: list[str], title: str) -> str | None:
    """Run another engineer's bench script if it exists; its stdout goes in the report."""
    path = ROOT / "bench" / name
    if not path.exists():
        log(f"  {name} has not landed: section marked as pending")
        return None
    cmd = [sys.executable, str(path), *args]
    log(f"  running {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    took = time.perf_counter() - t0
    out = proc.stdout.strip()
    if proc.returncode != 0:
        out += f"\n\n(exit status {proc.returncode})\n" + proc.stderr.strip()[-2000:]
    log(out)
    rel = shlex.join(["python", f"bench/{name}", *args])
    return f"`{rel}` ({took:.0f} s):\n\n```\n{out}\n```"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: under 3 minutes")
    ap.add_argument("--only", default="",
                    help="comma-separated sections: " + ", ".join(SECTIONS))
    ap.add_argument("--contenders", default="",
                    help="comma-separated subset of: " + ", ".join(CONTENDERS))
    ap.add_argument("--out", default="docs/benchmarks.md", help="report path ('' for none)")
    ap.add_argument("--json", default="", help="also dump the raw figures to this file")
    args = ap.parse_args(argv)
    missing = [name for name in BENCH_EXTRA if importlib.util.find_spec(name) is None]
    if missing:  # said now, not as an ImportError minutes into the first workload
        ap.error(f"the bench needs its extra ({', '.join(missing)} not installed): "
                 "pip install -e '.[bench]'")

    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    contenders = [c for c in args.contenders.split(",") if c] or list(CONTENDERS)
    bad = set(contenders) - set(CONTENDERS)
    if bad:
        ap.error(f"unknown contender(s) {sorted(bad)}")

    command = shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])])
    report = Report(command=command, quick=args.quick, machine=machine(),
                    load_before=os.getloadavg())
    t_start = time.perf_counter()
    log(f"{command}: {report.machine['cores']} cores, Python {report.machine['python']}, "
        f"load {report.load_before[0]:.2f}")

    from .workloads import run_workload

    chosen = [wl for wl in workloads(args.quick) if wl.name in only]
    skipped = [s for s in only if s in section_names() and s not in {w.name for w in chosen}]
    if skipped:
        log(f"not in --quick (60 s windows do not fit in 3 minutes): {', '.join(skipped)}")
    for wl in chosen:
        report.workloads.append(wl)
        log(f"{wl.title}: {wl.n} items, {wl.per_window()} per {wl.window:g} s, concurrency "
            f"{wl.concurrency}" + (f" x {wl.processes} processes" if wl.processes > 1 else "")
            + f", ideal {wl.ideal():.2f} s")
        report.records += run_workload(wl, contenders, log)

    if "overhead" in only:
        n, repeats, processes = (10_000, 2, 2) if args.quick else (100_000, 3, 3)
        log(f"Overhead: {n:,} no-op items, {repeats} repeats in each of {processes} processes")
        report.overhead = measure_overhead(n, repeats, processes, log=log)
        report.overhead_repeats = repeats * processes
        report.overhead_processes = processes
        log("Overhead on one CPU (the cause check of batch_size 8)")
        report.one_cpu = measure_one_cpu(n, repeats, processes, log=log)
    if "scale" in only:
        n_scale = 200_000 if args.quick else 1_000_000
        log(f"Scale: {n_scale:,} items through imap in a fresh process")
        report.scale = measure_scale(n_scale, log=log)
    if "store" in only:
        log("Checkpoint store (bench/bench_store.py)")
        store_args = ["--n", "10000", "--slow-n", "300", "--repeat", "1"] if args.quick else []
        text = _script("bench_store.py", store_args, "store")
        report.extra["Checkpoint store (bench/bench_store.py)"] = text or (
            "**Pending**: `bench/bench_store.py` had not landed when this report was made.")
    if "scaleout" in only:
        log("Scale-out (bench/bench_scaleout.py)")
        text = _script("bench_scaleout.py", ["--quick"] if args.quick else [], "scaleout")
        report.extra["Scale-out (bench/bench_scaleout.py)"] = text or (
            "**Pending**: `bench/bench_scaleout.py` had not landed when this report was made; "
            "its figures (several processes / machines sharing one limit) will appear here.")

    report.load_after = os.getloadavg()
    report.total_seconds = time.perf_counter() - t_start
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"records": [r.to_dict() for r in report.records],
             "overhead": [t.__dict__ for t in report.overhead],
             "one_cpu": [t.__dict__ for t in report.one_cpu],
             "scale": None if report.scale is None else report.scale.__dict__},
            indent=1, default=str))
    if args.out:
        out = Path(args.out)
        write(report, out)
        log(f"wrote {out} ({report.total_seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
