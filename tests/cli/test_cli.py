"""The CLI as a real subprocess against the simulator: runs, formats, resume, dry run, demo."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import clean_env, read_jsonl, run_cli, write_jsonl
from throttlepool.cli import cli
from throttlepool.sim import SimConfig, Simulator


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(latency=0.01)) as sim:
        yield sim


@pytest.fixture
def sim(shared_sim: Simulator) -> Simulator:
    shared_sim.configure(latency=0.01, fail_rate={}, rpm=None, tpm=None)
    shared_sim.reset()
    return shared_sim


def http_args(sim: Simulator) -> list[str]:
    return ["--provider", "http", "--base-url", f"{sim.url}/echo", "--extract", "result"]


def test_full_run_openai_to_jsonl_in_order(sim: Simulator, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 30)
    r = run_cli(["run", "in.jsonl", "--model", "sim-model", "--base-url", sim.openai_base_url,
                 "-b", "8", "--rpm", "6000", "-o", "out.jsonl"],
                tmp_path, env={"OPENAI_API_KEY": "sk-test-0123456789abcdef"})
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["index"] for row in rows] == list(range(30))
    assert [row["output"] for row in rows] == [f"echo: prompt {i}" for i in range(30)]
    assert all(row["status"] == "ok" and row["attempts"] == 1 for row in rows)
    assert sim.stats()["requests"] == 30
    assert "30 ok, 0 failed of 30" in r.stderr
    assert "checkpoint: throttlepool.db (run 'in.jsonl-" in r.stderr
    assert "sk-test-0123456789abcdef" not in r.stderr + r.stdout
    assert r.stdout == ""


def test_csv_template_to_csv(sim: Simulator, tmp_path: Path) -> None:
    with open(tmp_path / "in.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["title", "year"])
        w.writerows([f"Paper, part {i}", 2000 + i] for i in range(12))
    r = run_cli(["run", "in.csv", *http_args(sim), "--template", "{title} ({year})",
                 "-o", "out.csv", "--no-db"], tmp_path)
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["output"] for row in rows] == [
        f"echo: Paper, part {i} ({2000 + i})" for i in range(12)]
    assert [row["index"] for row in rows] == [str(i) for i in range(12)]
    assert not (tmp_path / "throttlepool.db").exists()


def test_stdin_text_to_stdout(sim: Simulator, tmp_path: Path) -> None:
    r = run_cli(["run", "-", *http_args(sim), "-q", "--no-db"], tmp_path,
                stdin="alpha\n\nbeta\ngamma\n")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["output"] for row in rows] == ["echo: alpha", "echo: beta", "echo: gamma"]
    assert r.stderr == ""


def test_failed_items_exit_1_with_summary_by_type(sim: Simulator, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 6)
    sim.configure(fail_rate={"500": 1.0})
    r = run_cli(["run", "in.jsonl", *http_args(sim), "--retries", "0", "-o", "out.jsonl"],
                tmp_path)
    assert r.returncode == 1, r.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["status"] for row in rows] == ["failed"] * 6
    assert all(str(row["error_type"]).endswith("HTTPError") for row in rows)
    assert "0 ok, 6 failed (HTTPError 6) of 6" in r.stderr


def test_skip_bad_records_fails_only_that_item(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('"a"\n{"prompt": \n"c"\n', encoding="utf-8")
    r = run_cli(["run", "in.jsonl", *http_args(sim), "--skip-bad-records", "-o", "out.jsonl"],
                tmp_path)
    assert r.returncode == 1, r.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error_type"] == "throttlepool.errors.InputError"
    assert str(rows[1]["error"]).startswith("in.jsonl:2: malformed JSON")
    assert sim.stats()["requests"] == 2
    assert "InputError 1" in r.stderr


def test_resume_after_sigint_repeats_nothing(sim: Simulator, tmp_path: Path) -> None:
    n = 60
    write_jsonl(tmp_path / "in.jsonl", n)
    sim.configure(latency=0.15)
    args = ["run", "in.jsonl", *http_args(sim), "-b", "3", "-o", "out.jsonl"]
    env = clean_env()
    proc = subprocess.Popen([sys.executable, "-m", "throttlepool", *args], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while sim.stats()["requests"] < 9 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "to resume, run the same command again: throttlepool run in.jsonl" in err
    first = sim.stats()["requests"]
    assert 9 <= first < n
    rows = read_jsonl(tmp_path / "out.jsonl")
    done = [row for row in rows if row["status"] == "ok"]
    assert len(rows) == n and len(done) == first  # drained calls were kept, none lost
    assert {row["status"] for row in rows} == {"ok", "not_attempted"}

    sim.configure(latency=0.01)
    r = run_cli(args, tmp_path)
    assert r.returncode == 0, r.stderr
    assert sim.stats()["requests"] == n  # only the rest were sent
    assert f"{first} from the checkpoint" in r.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["output"] for row in rows] == [f"echo: prompt {i}" for i in range(n)]


def test_dry_run_sends_nothing(sim: Simulator, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 15)
    r = run_cli(["run", "in.jsonl", *http_args(sim), "--rpm", "10", "--tpm", "100000",
                 "--dry-run", "-o", "out.jsonl"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert sim.stats()["requests"] == 0
    assert "dry run: nothing was sent. in.jsonl (jsonl): 15 records" in r.stdout
    assert '[0] {"prompt": "prompt 0"}' in r.stdout
    assert "estimated tokens:" in r.stdout
    # 15 requests at 10/minute: 10 at once, the other 5 a minute later.
    assert "minimum time the limits allow: 1m00s (bound by 10/60s" in r.stdout
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "throttlepool.db").exists()


def test_settings_precedence_flag_env_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 3)
    (tmp_path / "throttlepool.toml").write_text(
        'provider = "http"\nbase_url = "http://127.0.0.1:9/echo"\nbatch_size = 2\n'
        "rpm = 30\ntpm = 5000\n", encoding="utf-8")
    r = run_cli(["run", "in.jsonl", "--dry-run", "-v", "--tpm", "7000"], tmp_path,
                env={"THROTTLEPOOL_RPM": "40", "THROTTLEPOOL_TPM": "6000"})
    assert r.returncode == 0, r.stderr
    assert "batch_size = 2  (config file" in r.stderr
    assert "rpm = 40.0  (environment variable THROTTLEPOOL_RPM)" in r.stderr
    assert "tpm = 7000.0  (command line)" in r.stderr
    assert "limits: 40 requests/60s, 7000 tokens/60s" in r.stdout
    assert "batch size 2" in r.stdout


def test_status_and_export(sim: Simulator, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 5)
    assert run_cli(["run", "in.jsonl", *http_args(sim), "-q", "--db", "runs.db",
                    "--run-name", "first"], tmp_path).returncode == 0
    # status and export only read the database: in-process is enough (and saves startups).
    runner = CliRunner()
    db = str(tmp_path / "runs.db")
    r2 = runner.invoke(cli, ["status", "--db", db])
    assert r2.exit_code == 0 and r2.output.startswith("NAME ")
    assert r2.output.splitlines()[1].split()[:5] == ["first", "5", "0", "5", "5"]
    r2 = runner.invoke(cli, ["status", "first", "--db", db])
    assert r2.exit_code == 0 and "5 ok" in r2.output and "completed" in r2.output
    out = tmp_path / "x.csv"
    r2 = runner.invoke(cli, ["export", "first", "--db", db, "--format", "csv", "-o", str(out)])
    assert r2.exit_code == 0, r2.output
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["output"] for row in rows] == [f"echo: prompt {i}" for i in range(5)]
    r2 = runner.invoke(cli, ["export", "first", "--db", db])
    assert [json.loads(line)["index"] for line in r2.output.splitlines()] == list(range(5))


def test_python_m_help_and_examples_on_every_command(tmp_path: Path) -> None:
    r = run_cli(["--help"], tmp_path)
    assert r.returncode == 0 and "Examples:" in r.stdout and "demo" in r.stdout
    runner = CliRunner()
    for name in ("run", "status", "export", "sim", "demo"):
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Examples:" in result.output and f"throttlepool {name}" in result.output


def test_demo_falls_back_to_http_without_openai(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked" / "openai"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("openai is not installed here")\n')
    db = tmp_path / "demo.db"
    r = run_cli(["demo", "--items", "60", "--sequential", "6", "--rate", "200",
                 "--latency", "0.05", "--db", str(db)], tmp_path,
                env={"PYTHONPATH": str(tmp_path / "blocked")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "provider http" in r.stdout
    assert "extrapolated to 60" in r.stdout and "speedup:" in r.stdout
    assert f"checkpoint: {db}" in r.stdout and db.exists()


def test_fatal_error_stops_the_run_exit_1(sim: Simulator, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 20)
    sim.script([{"status": 401}])
    r = run_cli(["run", "in.jsonl", *http_args(sim), "-b", "1", "-o", "out.jsonl"], tmp_path)
    assert r.returncode == 1, r.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) == 20 and rows[0]["status"] == "failed"
    assert {row["status"] for row in rows[1:]} == {"not_attempted"}
    assert "stopped early after a fatal error" in r.stderr


def test_sim_command_serves_until_sigint(tmp_path: Path) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("THROTTLEPOOL_")}
    proc = subprocess.Popen([sys.executable, "-m", "throttlepool", "sim", "--port", str(port),
                             "--rpm", "5", "--latency", "0.01"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/__stats", timeout=5) as reply:
            assert json.loads(reply.read())["requests"] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    assert proc.returncode == 0
