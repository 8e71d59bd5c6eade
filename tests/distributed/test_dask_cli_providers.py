"""``throttlepool run --provider <sdk> --dask-scheduler ... --limiter-url redis://...`` end to
end (issue 11): a real CLI process drives two Dask worker processes against the simulator
under one Redis limit; the output file fills chunk by chunk as results arrive, with the same
rows as a local run's (openai); gemini and google-generativeai answer every item in order
under a binding per-second limit with no 429 (one chunk each, to keep the suite's time)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import clean_env

from throttlepool.sim import SimConfig, SimulatorProcess
from throttlepool.store.report import export_rows

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
N = 80  # four chunks of 20; one chunk at a time per worker: two waves of two
#: provider -> (its SDK module, its key variable, its base URL on the simulator, a model)
PROVIDERS = {
    "openai": ("openai", "OPENAI_API_KEY", lambda s: s.openai_base_url, "gpt-4o-mini"),
    "gemini": ("google.genai", "GEMINI_API_KEY", lambda s: s.url, "gemini-2.0-flash"),
    "google-generativeai": ("google.generativeai", "GEMINI_API_KEY", lambda s: s.url,
                            "gemini-2.0-flash"),
}
PER_SECOND, SMALL = 6, 12  # the Google SDKs: 12 items against a 6-per-second server
TIMING = {"latency", "ttft", "started", "finished"}  # differ between any two runs


@pytest.fixture(scope="module")
def dask_threads_per_worker() -> int:
    return 1


@pytest.fixture(scope="module")
def dask_warm_modules() -> tuple[str, ...]:
    return ("throttlepool.distributed.chunk", "openai", "google.genai")


def _rows(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def _watch(proc: subprocess.Popen[str], out: Path) -> dict[int, float]:
    """When the output first held each number of complete lines, until the run ends (it is
    written to a temp file beside ``out`` and renamed into place when the run ends)."""
    first_seen: dict[int, float] = {}
    while proc.poll() is None:
        for path in [out, *out.parent.glob(f".{out.name}.*.tmp")]:
            try:
                lines = path.read_text().count("\n")
            except FileNotFoundError:
                continue
            first_seen.setdefault(lines, time.monotonic())
        time.sleep(0.05)
    return first_seen


def test_the_cli_runs_an_sdk_provider_on_dask_writing_output_as_results_arrive(
        client: Any, redis_url: str, tmp_path: Path) -> None:
    module, key_var, base_url, model = PROVIDERS["openai"]
    provider = "openai"
    pytest.importorskip(module)
    (tmp_path / "in.txt").write_text("".join(f"line {i}\n" for i in range(N)))
    env = clean_env({"PYTHONPATH": str(ROOT), key_var: "sk-cli-dask-0123456789"})
    with SimulatorProcess(SimConfig(rpm=6000, window=60.0, latency=0.2)) as sim:
        common = ["--provider", provider, "--model", model, "--base-url", base_url(sim),
                  "--rpm", "5000", "--no-progress"]
        out = tmp_path / "dask.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-m", "throttlepool", "run", "in.txt", *common,
             "--batch-size", "2", "--dask-scheduler", client.scheduler.address,
             "--limiter-url", redis_url, "--db", "dask.db", "--output", str(out)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first_seen = _watch(proc, out)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        stats = sim.stats()
        sim.reset()
        local_out = tmp_path / "local.jsonl"
        local = subprocess.run(
            [sys.executable, "-m", "throttlepool", "run", "in.txt", *common,
             "--batch-size", "16", "--db", "local.db", "--output", str(local_out)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert local.returncode == 0, local.stderr
    assert stats["accepted"] == N and stats["rate_limited"] == 0
    assert "Traceback" not in stderr
    # Written as results arrived: the first wave's rows stood alone for a while (a wave
    # takes 20 calls x 0.2 s / 2 at once = 2 s) before the last rows came.
    partial = [t for count, t in first_seen.items() if 0 < count < N]
    assert partial and first_seen[N] - min(partial) >= 0.5, first_seen
    rows = _rows(out)
    assert [r["index"] for r in rows] == list(range(N))
    assert rows == _rows(local_out)  # the same rows as a local run's
    # Each row's times are its call's, taken on the worker: those the checkpoint keeps.
    timed = [json.loads(line) for line in out.read_text().splitlines()]
    _, exported = export_rows(str(tmp_path / "dask.db"), "in.txt")
    assert [(r["started"], r["finished"]) for r in timed] == [
        (e["started"], e["finished"]) for e in exported]
    assert all(r["started"] and r["started"] <= r["finished"] for r in timed), timed[:2]


@pytest.mark.parametrize("provider", ["gemini", "google-generativeai"])
@pytest.mark.filterwarnings("ignore::FutureWarning")  # google-generativeai is deprecated
def test_the_cli_runs_a_google_sdk_on_dask_under_a_binding_limit(
        provider: str, client: Any, redis_url: str, tmp_path: Path) -> None:
    module, key_var, base_url, model = PROVIDERS[provider]
    pytest.importorskip(module)
    (tmp_path / "in.txt").write_text("".join(f"line {i}\n" for i in range(SMALL)))
    env = clean_env({"PYTHONPATH": str(ROOT), key_var: "k-cli-dask-0123456789",
                     "PYTHONWARNINGS": "ignore::FutureWarning"})
    with SimulatorProcess(SimConfig(rpm=PER_SECOND, window=1.0)) as sim:
        proc = subprocess.run(
            [sys.executable, "-m", "throttlepool", "run", "in.txt", "--provider", provider,
             "--model", model, "--base-url", base_url(sim), "--no-progress",
             "--rate-limit", f"{PER_SECOND}/second", "--batch-size", "4",
             "--dask-scheduler", client.scheduler.address, "--limiter-url", redis_url,
             "--db", "dask.db", "--output", "out.jsonl"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        stats = sim.stats()
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = _rows(tmp_path / "out.jsonl")
    assert [(r["index"], r["output"]) for r in rows] == [
        (i, f"echo: line {i}") for i in range(SMALL)]
    assert stats["accepted"] == SMALL and stats["rate_limited"] == 0
    assert stats["max_requests_in_window"] <= PER_SECOND
