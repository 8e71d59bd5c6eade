"""Issue 15 items 3-4 through the real CLI against the simulator's OpenAI Batch API:
``run --mode batch`` writes the same output as an online run, shows its batches, survives
Ctrl-C (the batches go on; the same command collects them), ``cancel`` cancels them, and a
provider without batch support is refused before anything is sent."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import clean_env, read_jsonl, run_cli
from throttlepool._inputs import BadRecord
from throttlepool.adapters.google_genai import NO_MODEL
from throttlepool.batchapi.runner import planned_batches
from throttlepool.cli.inspect import batch_info, status_lines
from throttlepool.cli.preflight import SkipBadRecords
from throttlepool.cli.providers import build_adapter
from throttlepool.cost import Pricing
from throttlepool.cost.text import usd
from throttlepool.errors import InputError
from throttlepool.outcome import Usage
from throttlepool.runreport import report_html
from throttlepool.sim import Simulator
from throttlepool.sim.batches import batches_of
from throttlepool.sim.gemini_batches import gemini_batches_of
from throttlepool.store import run_status

KEY = {"OPENAI_API_KEY": "sk-test-batch", "THROTTLEPOOL_POLL_INTERVAL": "0.05"}
N = 12


def _questions(path: Path) -> None:
    path.write_text("".join(f"question {i} about batches\n" for i in range(N)),
                    encoding="utf-8")


def _args(sim: Simulator, *extra: str) -> list[str]:
    return ["run", "q.txt", "-m", "gpt-4o-mini", "--base-url", sim.openai_base_url,
            "--db", "c.db", *extra]


def test_batch_mode_writes_what_an_online_run_writes_at_the_batch_price(
        sim: Simulator, tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt")
    batches_of(sim).configure(delay=0.3)
    online = run_cli(_args(sim, "--run-name", "on", "-o", "online.jsonl", "--no-progress"),
                     tmp_path, env=KEY)
    assert online.returncode == 0, online.stderr
    batch = run_cli(_args(sim, "--mode", "batch", "--run-name", "b", "-o", "batch.jsonl"),
                    tmp_path, env=KEY)
    assert batch.returncode == 0, batch.stderr
    on, off = read_jsonl(tmp_path / "online.jsonl"), read_jsonl(tmp_path / "batch.jsonl")
    assert [list(r) for r in off] == [list(r) for r in on]  # same columns, same order
    for a, b in zip(on, off, strict=True):
        assert (b["index"], b["line"], b["input"], b["status"], b["output"]) == (
            a["index"], a["line"], a["input"], "ok", a["output"])
    assert Counter(s["custom_id"] for s in batches_of(sim).submissions()) == Counter(
        f"item-{i}" for i in range(N))
    batch_price = Pricing("openai", "gpt-4o-mini", mode="batch")
    costs = [batch_price.cost(Usage(int(r["input_tokens"]), int(r["output_tokens"])))  # type: ignore[call-overload]
             for r in off]
    assert [r["cost_usd"] for r in off] == pytest.approx(costs)
    assert f"cost {usd(sum(c for c in costs if c))} ({N} items priced at the batch price)" \
        in batch.stderr.splitlines()
    # The progress lines (stderr is not a terminal) name the batches' phases, and the cost
    # as the online bar does: so far, and projected (from the estimates before any answer).
    assert "1 batch: 1 completed | 12 ok, 0 failed of 12" in batch.stderr
    assert re.search(r"^1 batch: 1 (submitted|in progress) \| 0 ok, 0 failed of 12 \| "
                     r"waiting \d+\.\ds \| cost \$0 \(up to ~\$0\.\d+\)$", batch.stderr,
                     re.M), batch.stderr
    assert re.search(r"^1 batch: 1 completed \| 12 ok, 0 failed of 12 \| waiting \d+\.\ds \| "
                     + re.escape(f"cost {usd(sum(c for c in costs if c))}") + "$",
                     batch.stderr, re.M), batch.stderr
    # The summary speaks of batches and waiting, not of an online run's calls per second.
    assert re.search(r"^1 batch, 12 requests submitted; \d+\.\ds waiting for the provider$",
                     batch.stderr, re.M), batch.stderr
    assert "calls/s" not in batch.stderr and "rate-limited" not in batch.stderr


def test_a_bad_input_line_is_recorded_failed_and_never_submitted(
        sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('"first"\n{"broken\n"third"\n', encoding="utf-8")
    batches_of(sim).configure(delay=0.05)
    r = run_cli(["run", "bad.jsonl", "-m", "gpt-4o-mini", "--base-url", sim.openai_base_url,
                 "--mode", "batch", "--db", "c.db", "--skip-bad-records", "-o", "out.jsonl",
                 "--no-progress"], tmp_path, env=KEY)
    assert r.returncode == 1, r.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [x["status"] for x in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error_type"] == "throttlepool.errors.InputError"  # as online
    assert str(rows[1]["error"]).startswith("bad.jsonl:2: malformed JSON")
    assert rows[1]["output"] is None and rows[1]["cost_usd"] is None
    assert "2 ok, 1 failed (InputError 1) of 3" in r.stderr
    assert sorted(s["custom_id"] for s in batches_of(sim).submissions()) == [
        "item-0", "item-2"]  # the bad line was never sent


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_every_provider_refuses_a_bad_record_as_its_input_error(provider: str) -> None:
    # The run and the dry run share this path (batch_line): a bad record is no request.
    adapter = SkipBadRecords(build_adapter(provider, model="m", key="k",
                                           base_url="http://127.0.0.1:9"))
    bad = BadRecord(InputError("malformed JSON", source="bad.jsonl", line=2))
    batches, refused = planned_batches(adapter, [(0, "fine"), (1, bad), (2, "also fine")])
    assert batches == [[0, 2]]
    assert refused == {1: "bad.jsonl:2: malformed JSON"}


def test_an_unreachable_base_url_stops_as_online_and_claims_no_batch(tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt")  # Gemini's SDK does not retry a connect: the test is quick
    r = run_cli(["run", "q.txt", "-P", "gemini", "-m", "gemini-2.5-flash", "--base-url",
                 "http://127.0.0.1:9", "--mode", "batch", "--db", "c.db", "--no-progress"],
                tmp_path, env={"GEMINI_API_KEY": "k", "THROTTLEPOOL_POLL_INTERVAL": "30"},
                timeout=30)
    assert r.returncode == 2, r.stderr
    assert "throttlepool: endpoint unreachable: cannot connect to 127.0.0.1:9" in r.stderr
    assert "0 batches, 0 requests submitted" in r.stderr
    assert "left running" not in r.stderr and "cancel" not in r.stderr
    assert "Traceback" not in r.stderr


def test_a_wrong_base_url_path_is_said_as_online_without_a_traceback(
        sim: Simulator, tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt")
    wrong = sim.openai_base_url.replace("/v1", "/nope")
    r = run_cli(["run", "q.txt", "-m", "gpt-4o-mini", "--base-url", wrong, "--mode", "batch",
                 "--db", "c.db", "--no-progress"], tmp_path, env=KEY)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "throttlepool: run stopped: a Batch API call failed (NotFoundError): the endpoint "
        "was not found (404): check --base-url and --model")


def test_max_cost_says_the_settled_spend_and_the_cap_the_rest_fits_under(
        sim: Simulator, tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt")
    batches_of(sim).configure(delay=0.05)
    # Each request reserves about (8 in + 20 out) tokens: 0.000088 USD at the batch price.
    args = _args(sim, "--mode", "batch", "--run-name", "mc", "--price-in", "2", "--price-out",
                 "8", "--max-tokens", "20", "-o", "out.jsonl", "--no-progress")
    first = run_cli([*args, "--max-cost", "0.0003"], tmp_path, env=KEY)
    assert first.returncode == 1, first.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    ok = [r for r in rows if r["status"] == "ok"]
    assert 0 < len(ok) < N
    spent = sum(float(r["cost_usd"]) for r in ok)  # type: ignore[arg-type]
    # Said (and recorded) once the batch settled: its actual spend, nothing reserved.
    reason = f"budget reached ({usd(spent)} spent, $0 reserved, of max_cost $0.00030)"
    assert f"{reason}: {N - len(ok)} items were not sent" in first.stderr, first.stderr
    assert run_status(str(tmp_path / "c.db"), "mc")["totals"]["reason"] == reason
    # The cap advised is what the rest needs, so the advised command finishes the run.
    advised = shlex.split(first.stderr.strip().splitlines()[-1])
    assert advised[:2] == ["throttlepool", "run"] and advised[-2] == "--max-cost"
    again = run_cli(advised[1:], tmp_path, env=KEY)
    assert again.returncode == 0, again.stderr
    assert f"{N} ok, 0 failed of {N}" in again.stderr.splitlines()  # as an online resume
    assert f"{len(ok)} from the checkpoint, 0 cached" in again.stderr
    assert float(advised[-1]) < 0.0003 * 2 * 2  # not a blind doubling: what is left
    assert [r["status"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["ok"] * N


def _start(sim: Simulator, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "throttlepool",
                             *_args(sim, "--mode", "batch", "--run-name", "slow", "-o",
                                    "out.jsonl")],
                            cwd=cwd, env=clean_env(KEY), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_submitted(sim: Simulator, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while len(batches_of(sim).submissions()) < N:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # polling


def test_ctrl_c_leaves_the_batches_running_and_the_same_command_collects_them(
        sim: Simulator, tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt")
    batches_of(sim).configure(delay=3.0)
    proc = _start(sim, tmp_path)
    _wait_submitted(sim, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    [batch_id] = {s["batch_id"] for s in batches_of(sim).submissions()}
    assert (f"interrupted: 1 batch left running at the provider ({batch_id}) with {N} "
            f"requests") in err
    assert "to collect the results: throttlepool run q.txt" in err
    # The checkpoint knows the provider and the base URL: the command needs neither.
    assert "to cancel the batches:  throttlepool cancel slow --db c.db\n" in err
    assert "BatchApiRunner" not in err
    # The submitted items are said to be at the provider, not "not attempted": in the
    # summary, the rows, status and the report.
    assert f"0 ok, 0 failed, {N} at the provider (batch {batch_id}) of {N}" in err, err
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert {r["error"] for r in rows} == {
        f"at the provider (batch {batch_id}): run again to collect the answer"}
    db = str(tmp_path / "c.db")
    info = run_status(db, "slow")
    info["batches"] = batch_info(db, info)
    assert (f"  items      0 ok, 0 failed, {N} at the provider (batch {batch_id}), 0 not "
            f"attempted, of {N}") in status_lines(info)
    page = report_html(db, "slow")
    assert f"batch {batch_id}: {N} requests" in page and "schema 3" not in page
    assert "Traceback" not in err
    again = run_cli(_args(sim, "--mode", "batch", "--run-name", "slow", "-o", "out.jsonl"),
                    tmp_path, env=KEY)
    assert again.returncode == 0, again.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [r["status"] for r in rows] == ["ok"] * N
    assert [r["output"] for r in rows] == [f"echo: question {i} about batches"
                                           for i in range(N)]
    assert len(batches_of(sim).submissions()) == N  # nothing submitted twice


def test_cancel_cancels_the_runs_batches_and_prints_their_ids(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _questions(tmp_path / "q.txt")
    batches_of(sim).configure(delay=30.0)
    proc = _start(sim, tmp_path)
    _wait_submitted(sim, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    [batch_id] = {s["batch_id"] for s in batches_of(sim).submissions()}
    r = run_cli(["cancel", "slow", "--db", "c.db"], tmp_path, env=KEY)  # as Ctrl-C said
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [batch_id]
    assert "asked the provider to cancel 1 batch of run 'slow'" in r.stderr
    import openai
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=0)
    assert client.batches.retrieve(batch_id).status in ("cancelling", "cancelled")
    unknown = run_cli(["cancel", "nope", "--db", "c.db", "--base-url", sim.openai_base_url],
                      tmp_path, env=KEY)
    assert unknown.returncode == 2 and "no run named 'nope'" in unknown.stderr
    # The provider's refusal is a sentence, not a traceback (in this process: quicker).
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-batch")
    wrong = sim.openai_base_url.replace("/v1", "/nope")
    assert _main(["cancel", "slow", "--db", str(tmp_path / "c.db"), "--base-url", wrong],
                 capsys) == (2, "throttlepool: run stopped: a Batch API call failed "
                                "(NotFoundError): the endpoint was not found (404): check "
                                "--base-url and --model")
    # A database that does not exist is said, not created.
    missing = tmp_path / "missing.db"
    code, err = _main(["cancel", "slow", "--db", str(missing)], capsys)
    assert code == 2 and f"no checkpoint database {missing}: nothing to cancel" in err
    assert not missing.exists()


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``throttlepool ARGS`` in this process: its exit code and last stderr line."""
    from throttlepool.cli.app import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(args)
    return int(exited.value.code or 0), capsys.readouterr().err.strip().splitlines()[-1]


def test_cancel_takes_a_gemini_run_without_a_model(sim: Simulator, tmp_path: Path) -> None:
    from google import genai
    from google.genai import types

    from throttlepool.adapters.google_genai import GenAIAdapter
    from throttlepool.batchapi import BatchApiRunner, BatchProgress

    gemini_batches_of(sim).configure(delay=30.0)
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=sim.url))

    def stop(progress: BatchProgress) -> None:
        raise KeyboardInterrupt

    with BatchApiRunner(GenAIAdapter(client, model="gemini-2.5-flash"),
                        store=str(tmp_path / "c.db"), run_name="slow", progress=stop) as runner:
        assert runner.run(["a", "b"]).interrupted
    [name] = {f"batches/{s['batch_id']}" for s in gemini_batches_of(sim).submissions()}
    # No -P: the run's checkpoint names its provider (a library run records no base URL).
    r = run_cli(["cancel", "slow", "--db", "c.db", "--base-url", sim.url],
                tmp_path, env={"GEMINI_API_KEY": "k"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [name]
    time.sleep(1.2)  # cancelling takes a moment (a tenth of the delay, at most 1 s)
    assert client.batches.get(name=name).state == types.JobState.JOB_STATE_CANCELLED


def test_a_command_that_calls_no_model_builds_a_gemini_adapter_without_one(
        tmp_path: Path) -> None:
    adapter = build_adapter("gemini", model=None, key="k")  # what cancel builds
    assert adapter.identity()["model"] is None
    # A run still needs one, and says so before anything is sent.
    assert adapter.request_problem("hi") == NO_MODEL  # type: ignore[attr-defined]
    _questions(tmp_path / "q.txt")
    r = run_cli(["run", "q.txt", "-P", "gemini", "--db", "c.db"], tmp_path,
                env={"GEMINI_API_KEY": "k"})
    assert r.returncode == 2 and "the gemini provider needs --model" in r.stderr, r.stderr


def test_fallback_online_calls_the_expired_requests_online_under_the_limits(
        sim: Simulator, tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt")
    batches_of(sim).configure(delay=5.0, expire_after=0.02)  # every batch expires unanswered
    failed = run_cli(_args(sim, "--mode", "batch", "--retries", "0", "--run-name", "no",
                           "-o", "no.jsonl"), tmp_path, env=KEY)
    assert failed.returncode == 1, failed.stderr  # no fallback: recorded failed
    assert {r["status"] for r in read_jsonl(tmp_path / "no.jsonl")} == {"failed"}
    before = len(sim.requests())
    r = run_cli(_args(sim, "--mode", "batch", "--retries", "1", "--fallback", "online",
                      "--rpm", "6000", "--run-name", "yes", "-o", "yes.jsonl"),
                tmp_path, env=KEY)
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(tmp_path / "yes.jsonl")
    assert [(x["status"], x["output"]) for x in rows] == [
        ("ok", f"echo: question {i} about batches") for i in range(N)]
    assert {x["attempts"] for x in rows} == {3}  # two batches, then the online call
    online = [q for q in sim.requests()[before:] if q["path"] == "/v1/chat/completions"]
    assert len(online) == N
    price = Pricing("openai", "gpt-4o-mini")  # the online price, not the batch one
    assert [x["cost_usd"] for x in rows] == pytest.approx([price.cost(Usage(
        int(x["input_tokens"]), int(x["output_tokens"]))) for x in rows])  # type: ignore[call-overload]


def test_demo_batch_mode_shows_online_and_batch_time_and_cost_side_by_side(
        tmp_path: Path) -> None:
    r = run_cli(["demo", "--mode", "batch", "--items", "30", "--rate", "200", "--latency",
                 "0.02", "--batch-delay", "0.6", "--no-progress", "--db", "demo.db"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "   1 batch, 30 requests submitted; " in r.stdout
    wall = re.search(r"^ +wall time +([\d.]+)s +([\d.]+)s$", r.stdout, re.M)
    cost = re.search(r"^ +cost +\$([\d.]+) +\$([\d.]+)$", r.stdout, re.M)
    assert wall is not None and cost is not None, r.stdout
    assert float(wall.group(2)) >= 0.6  # the simulated batch's delay
    online, batch = float(cost.group(1)), float(cost.group(2))
    assert batch == pytest.approx(online / 2, rel=0.05)  # gpt-4o-mini's batch price: half


def test_run_help_says_the_own_prices_are_list_prices_that_batch_mode_halves() -> None:
    from click.testing import CliRunner

    from throttlepool.cli.app import cli

    text = " ".join(CliRunner().invoke(cli, ["run", "--help"], terminal_width=100)
                    .output.split())
    assert ("--price-in USD Input price, USD per million tokens, instead of the price "
            "table's: the list (online) price, which --mode batch halves.") in text
    assert "table's: the list (online) price, which --mode batch halves." in text.split(
        "--price-out USD", 1)[1]
