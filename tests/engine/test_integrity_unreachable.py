"""Issue 12 item 6: an endpoint nothing answers on stops the run; an outage of one that did not.

A run none of whose calls ever reached the server stops after a few connect failures with
``EndpointUnreachable`` (the CLI exits 2 naming host:port), instead of backing off for hours.
A run that has had answers keeps retrying connection errors. Real sockets throughout: free
ports nothing listens on, the simulator, real SDK clients.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from throttlepool import ThreadedBatchRunner
from throttlepool._reachability import Reachability
from throttlepool.adapters import HttpAdapter
from throttlepool.adapters.common import classify_transport
from throttlepool.classify import ErrorKind, Verdict
from throttlepool.errors import EndpointUnreachable
from throttlepool.outcome import Status
from throttlepool.retry import Retry
from throttlepool.sim import SimConfig, Simulator
from throttlepool.testing import FakeClock

warnings.filterwarnings("ignore", category=FutureWarning)

SECRET_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY")
ITEMS = 20
BATCH = 5  # --batch-size: calls in flight, so the first wave of calls
RETRIES = 3  # --retries: an item has at most RETRIES + 1 attempts


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(args: list[str], cwd: Path, env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("THROTTLEPOOL_") and k not in SECRET_VARS}
    full["THROTTLEPOOL_NO_TIKTOKEN"] = "1"
    full.update(env)
    return subprocess.run([sys.executable, "-m", "throttlepool", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout)


# ---- the CLI against a port nothing listens on ----------------------------------------------

CASES = {
    # provider, base URL (PORT filled in), key variable
    "openai": ("openai", "http://127.0.0.1:PORT/v1", "OPENAI_API_KEY"),
    "gemini": ("gemini", "http://127.0.0.1:PORT", "GEMINI_API_KEY"),
    "http": ("http", "http://127.0.0.1:PORT/echo", None),
    "http-credentials": ("http", "http://alice:s3cr3tpw@127.0.0.1:PORT/echo?key=k3yq", None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_stops_at_once_when_nothing_listens(case: str, tmp_path: Path) -> None:
    provider, url, key_var = CASES[case]
    pytest.importorskip({"openai": "openai", "gemini": "google.genai"}.get(provider, "requests"))
    port = closed_port()
    base_url = url.replace("PORT", str(port))
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(ITEMS)))
    env = {key_var: "sk-test"} if key_var else {}
    started = time.monotonic()
    # Before the fix this ran for minutes (backoff, breaker probes): the timeout fails it.
    proc = run_cli(["run", str(data), "--provider", provider, "--base-url", base_url,
                    "--model", "m", "--db", str(tmp_path / "cp.db"), "--batch-size", str(BATCH),
                    "-o", str(tmp_path / "out.jsonl")], tmp_path, env, timeout=45)
    elapsed = time.monotonic() - started

    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    sentence = [line for line in proc.stderr.splitlines()
                if line.startswith("throttlepool: endpoint unreachable:")]
    assert len(sentence) == 1, proc.stderr
    assert f"cannot connect to 127.0.0.1:{port}" in sentence[0]
    for secret in ("s3cr3tpw", "k3yq", "alice"):
        assert secret not in proc.stderr
    # The whole process, interpreter and SDK start included; the stop itself is the first
    # wave of calls (asserted exactly below), so this only catches a run that kept going.
    assert elapsed < 30, elapsed

    db = sqlite3.connect(tmp_path / "cp.db")
    try:
        (status, totals), = db.execute("SELECT status, totals FROM runs").fetchall()
        ok, = db.execute("SELECT count(*) FROM items WHERE status = 'ok'").fetchone()
    finally:
        db.close()
    assert status != "completed" and status in ("stopped", "failed"), status
    counts = json.loads(totals)
    assert ok == 0 and counts["done"] == 0
    # A bounded number of attempts: the first wave and at most one retry each.
    assert 3 <= counts["calls"] <= 2 * BATCH, counts

    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == ITEMS and not any(r["status"] == "ok" for r in rows)
    failed = [r for r in rows if r["status"] == "failed"]
    # Each failure names where: the SDKs' bare "Connection error." gets the URL appended;
    # requests already says HTTPConnectionPool(host='127.0.0.1', port=N) ... url: /echo.
    named = (f"127.0.0.1:{port}/", f"host='127.0.0.1', port={port})")
    assert failed and all(any(n in r["error"] for n in named) for r in failed), failed
    assert not any(s in json.dumps(rows) for s in ("s3cr3tpw", "k3yq"))


@pytest.fixture
def blackhole() -> Any:
    """A port whose listen queue is full: connects hang (SYNs dropped) as to a dead host."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    yield port
    for sock in (*fillers, listener):
        sock.close()


@pytest.mark.parametrize("provider", ["openai", "http"])
def test_cli_stops_when_the_host_never_accepts(provider: str, blackhole: int,
                                               tmp_path: Path) -> None:
    pytest.importorskip(provider if provider == "openai" else "requests")
    path = "/v1" if provider == "openai" else "/echo"
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(ITEMS)))
    # --timeout 1: the runner's own deadline must not hide that the connect never completed.
    proc = run_cli(["run", str(data), "--provider", provider, "--model", "m", "--timeout", "1",
                    "--base-url", f"http://127.0.0.1:{blackhole}{path}", "--no-db",
                    "--batch-size", str(BATCH), "--retries", str(RETRIES),
                    "-o", str(tmp_path / "out.jsonl")], tmp_path,
                   {"OPENAI_API_KEY": "sk-test"}, timeout=45)
    assert proc.returncode == 2, proc.stderr
    assert f"endpoint unreachable: cannot connect to 127.0.0.1:{blackhole}" in proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    # The stop comes before any item of the first wave has used up its attempts, so no item
    # beyond it is taken (a run that kept going takes all 20, four attempts each). How many
    # attempts that wave makes depends on load: the connect gives up at 0.8 s, the runner at
    # 1 s from dispatch, and in a cold process under load the SDK's first requests spend more
    # than 0.2 s before they connect (0.23-0.35 s seen at load 8), so the runner's deadline
    # cuts the whole first wave (a bare CallTimeout, which counts neither way); the warm
    # second wave connects within milliseconds, names the host and stops the run. At load 13
    # an item took a third attempt. Nothing starts after the stop.
    attempted = [r["attempts"] for r in rows if r["attempts"]]
    assert len(attempted) <= BATCH and all(a <= RETRIES + 1 for a in attempted), attempted
    assert sum(attempted) >= 3 and not any(r["status"] == "ok" for r in rows)


# ---- a run that has been working rides out an outage ---------------------------------------

def test_a_run_that_reached_the_simulator_keeps_retrying_when_it_goes_away() -> None:
    openai = pytest.importorskip("openai")
    from throttlepool.adapters.openai import OpenAIAdapter

    sim = Simulator(SimConfig(latency=0.02)).start()
    url = sim.openai_base_url
    address = url.split("//")[1].split("/")[0]
    try:
        client = openai.OpenAI(api_key="sk-test", base_url=url)
        adapter = OpenAIAdapter(client, model="m", max_tokens=8)
        runner = ThreadedBatchRunner(adapter, batch_size=4, breaker=False,
                                     retry=Retry(attempts=4, base=0.01, cap=0.05))
        with runner:
            stream = runner.imap([f"p{i}" for i in range(60)])
            outcomes = []
            for outcome in stream:
                outcomes.append(outcome)
                if len(outcomes) == 5:
                    sim.stop()  # killed mid-run: from now on every connect is refused
            stopped = stream.stopped
    finally:
        sim.stop()
    ok = [o for o in outcomes if o.status is Status.OK]
    failed = [o for o in outcomes if o.status is Status.FAILED]
    assert len(outcomes) == 60 and len(ok) >= 5
    # Not EndpointUnreachable, not stopped at all: every item had all its attempts.
    assert stopped is None, stopped
    assert failed and all(o.attempts == 4 for o in failed)
    # ...and each failure says where it could not connect.
    assert all(f"({url}/chat/completions)" in str(o.error) for o in failed), failed[0].error
    assert all(address in str(o.error) for o in failed)


# ---- classification of real transport errors -----------------------------------------------

class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _error(fn: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def test_connect_failures_name_their_address_and_answers_do_not() -> None:
    port = closed_port()
    refused = _error(lambda: HttpAdapter(f"http://127.0.0.1:{port}/echo").call("x", 5))
    dns = _error(lambda: HttpAdapter("http://no-such-host.invalid:8080/echo").call("x", 5))
    # A plain-HTTP server spoken to in TLS: it answers the ClientHello with a 400.
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        port_plain = plain.server_address[1]
        tls = _error(lambda: HttpAdapter(f"https://127.0.0.1:{port_plain}/echo").call("x", 5))
    finally:
        plain.shutdown()
        plain.server_close()
    with Simulator(SimConfig(hang_seconds=3.0)) as sim:
        sim.configure(fail_rate={"reset": 1.0})
        reset = _error(lambda: HttpAdapter(sim.url + "/echo").call("x", 5))
        sim.configure(fail_rate={"hang": 1.0})
        read_timeout = _error(lambda: HttpAdapter(sim.url + "/echo").call("x", 0.3))
    assert classify_transport(refused) == Verdict(
        ErrorKind.TRANSIENT, None, f"cannot connect to 127.0.0.1:{port}", f"127.0.0.1:{port}")
    for error, address in ((dns, "no-such-host.invalid:8080"), (tls, f"127.0.0.1:{port_plain}")):
        verdict = classify_transport(error)
        assert verdict is not None and verdict.unreachable == address, (error, verdict)
    # Something accepted the connection: an outage or a slow server, never a wrong URL.
    for answered in (reset, read_timeout):
        verdict = classify_transport(answered)
        assert verdict is not None and verdict.retryable and verdict.unreachable is None


# ---- the policy, alone and in the engine on a fake clock -----------------------------------

def test_policy_stops_on_the_third_connect_failure_before_any_answer() -> None:
    policy = Reachability()
    refused = ConnectionRefusedError(111, "Connection refused")
    unreachable = Verdict(ErrorKind.TRANSIENT, None, "cannot connect", "10.0.0.1:443")
    timeout = Verdict(ErrorKind.TRANSIENT, None, "timeout")
    assert policy.observe_failure(TimeoutError(), timeout) is None  # neither way
    assert policy.observe_failure(refused, unreachable) is None
    assert policy.observe_connect_failure("10.0.0.1:443") is None
    stop = policy.observe_failure(refused, unreachable)
    assert isinstance(stop, EndpointUnreachable) and stop.cause is refused
    assert stop.address == "10.0.0.1:443" and "10.0.0.1:443" in str(stop)


def test_policy_never_stops_once_a_call_reached_the_server() -> None:
    class Http503(Exception):
        status_code = 503

    for reached in ("success", "http error"):
        policy = Reachability()
        if reached == "success":
            policy.observe_success()
        else:
            assert policy.observe_failure(Http503(), Verdict(ErrorKind.TRANSIENT)) is None
        for _ in range(100):
            assert policy.observe_connect_failure("10.0.0.1:443") is None


def test_engine_stops_after_three_refused_attempts_on_a_fake_clock() -> None:
    port = closed_port()
    clock = FakeClock()
    runner = ThreadedBatchRunner(HttpAdapter(f"http://127.0.0.1:{port}/echo"), batch_size=1,
                                 retries=50, breaker=False, clock=clock, seed=1)
    with runner:
        result = runner.run([f"p{i}" for i in range(10)])
    assert isinstance(result.stopped, EndpointUnreachable)
    assert result.stopped.address == f"127.0.0.1:{port}"
    assert result.stats.calls == 3 and result.stats.done == 0
    # Two backoffs (at most base 0.5 + 1.0 s) of fake time, not 50 retries' worth.
    assert clock.now() <= 1.5
