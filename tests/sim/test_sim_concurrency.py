"""The simulator under concurrent load: exact admission counts, 256 keep-alive connections."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from throttlepool.sim import SimConfig, Simulator


def _hammer(url: str, threads: int, seconds: float, body: dict[str, object]) -> Counter[int]:
    """Every thread posts back to back on its own keep-alive session until the deadline."""
    counts: Counter[int] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        local: Counter[int] = Counter()
        with requests.Session() as s:
            start.wait()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                local[s.post(url, json=body, timeout=5).status_code] += 1
        with lock:
            counts.update(local)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return counts


def test_requests_window_exact_under_concurrency() -> None:
    # Hammering for 1.5 windows admits exactly two full windows' worth: the burst at t=0 and
    # the slots that free at t=1.0 and are retaken at once; the next ones free only at t=2.0.
    with Simulator(SimConfig(rpm=5, window=1.0)) as sim:
        counts = _hammer(sim.url + "/echo", 16, 1.5, {"prompt": "x"})
        st = sim.stats()
    assert counts[200] == 10
    assert counts[429] > 20 and set(counts) == {200, 429}
    assert st["accepted"] == 10
    assert st["max_requests_in_window"] == 5
    assert st["last_admission"] - st["first_admission"] >= 1.0


def test_tokens_window_exact_under_concurrency() -> None:
    # Each request charges 1 + 9 = 10 tokens, so tpm=40 admits 4 per window.
    with Simulator(SimConfig(tpm=40, window=1.0)) as sim:
        counts = _hammer(sim.url + "/echo", 12, 1.5, {"prompt": "abcd", "max_tokens": 9})
        st = sim.stats()
    assert counts[200] == 8
    assert st["max_tokens_in_window"] == 40
    assert st["max_requests_in_window"] == 4


def test_per_key_maxima_across_many_keys() -> None:
    # A long window keeps the counts independent of how slowly a loaded machine runs this.
    with Simulator(SimConfig(rpm=3, window=60.0)) as sim:
        url = sim.url + "/echo"

        def worker(key: str) -> None:
            with requests.Session() as s:
                s.headers["authorization"] = f"Bearer {key}"
                for _ in range(10):
                    s.post(url, json={"prompt": key}, timeout=5)

        pool = [threading.Thread(target=worker, args=(f"key{i}",)) for i in range(8)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        st = sim.stats()
    assert st["accepted"] == 8 * 3
    assert st["max_requests_in_window"] == 24  # all keys together
    assert all(v["max_requests_in_window"] == 3 for v in st["per_key"].values())
    assert len(st["per_key"]) == 8


@pytest.mark.parametrize("n", [256])
def test_256_concurrent_keep_alive_connections(n: int) -> None:
    # Each request lasts long enough that every thread's first one is in before any ends:
    # at 1.2 s, 10 of 256 threads (2 busy cores) sent theirs only after others had ended.
    with Simulator(SimConfig(latency=2.5)) as sim:
        url = sim.url + "/echo"
        sessions = [requests.Session() for _ in range(n)]
        results: list[str | None] = [None] * n
        start = threading.Barrier(n)

        def worker(i: int) -> None:
            start.wait()
            for _ in range(2):  # the second request reuses the kept-alive connection
                r = sessions[i].post(url, json={"prompt": f"item {i}"}, timeout=20)
                results[i] = r.json()["result"] if r.status_code == 200 else None

        t0 = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        took = time.perf_counter() - t0
        st = sim.stats()
        for s in sessions:
            s.close()
    assert results == [f"echo: item {i}" for i in range(n)]
    assert st["by_status"] == {"200": 2 * n}
    assert st["peak_concurrency"] == n
    # Two rounds of 2.5 s latency; the rest is client-side CPU (256 sessions on few cores).
    assert took < 30.0  # one at a time would take 1,280 s
    assert st["duplicates"] == n  # each body was answered twice


def test_stop_is_prompt_with_idle_keep_alive_and_hanging_requests() -> None:
    sim = Simulator(SimConfig(fail_rate={"hang": 1.0}, hang_seconds=30.0)).start()
    idle = requests.Session()
    sim.configure(fail_rate={})
    idle.post(sim.url + "/echo", json={"prompt": "x"}, timeout=5)  # leaves a kept-alive socket
    sim.configure(fail_rate={"hang": 1.0})
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            requests.post(sim.url + "/echo", json={"prompt": "y"}, timeout=10)
        except requests.RequestException as exc:
            errors.append(exc)

    t = threading.Thread(target=hang)
    t.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    sim.stop()
    t.join(timeout=5)
    assert time.perf_counter() - t0 < 2.0
    assert not t.is_alive() and len(errors) == 1
    idle.close()


def test_serve_prints_urls_and_stops_on_ctrl_c() -> None:
    code = (
        "from throttlepool.sim import SimConfig, serve; "
        "serve(port=0, config=SimConfig(rpm=1, window=2.0))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = first.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        lines = [proc.stdout.readline() for _ in range(2)]
        assert f"{url}/v1" in lines[0] and url in lines[1]
        assert requests.post(url + "/echo", json={"prompt": "a"}, timeout=5).status_code == 200
        assert requests.post(url + "/echo", json={"prompt": "a"}, timeout=5).status_code == 429
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
