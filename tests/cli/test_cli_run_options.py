"""Issue 13 items 4, 5 and 10 (sim): request options from the command line, the dry run and
first-run mistakes, the simulator's banner and exit summary. The real CLI in a subprocess
against the simulator, which keeps the requests it received."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli
from throttlepool.sim import SimConfig, Simulator

KEY = {"OPENAI_API_KEY": "sk-test-options"}


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    with Simulator(SimConfig()) as sim:
        yield sim


@pytest.fixture
def sim(shared_sim: Simulator) -> Simulator:
    shared_sim.configure(latency=0.0, fail_rate={}, rpm=None, tpm=None)
    shared_sim.reset()
    return shared_sim


def bodies(sim: Simulator, since: int = 0) -> list[dict[str, Any]]:
    return [r["body"] for r in sim.requests()[since:]]


def test_request_options_reach_the_openai_body(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    r = run_cli(["run", "in.txt", "-P", "openai", "-m", "sim-model", "--base-url",
                 sim.openai_base_url, "--system", "Be brief.", "--temperature", "0.2",
                 "--max-tokens", "50", "-p", "top_p=0.9", "-p", "response_format.type=text",
                 "-p", "user=alice", "-p", "seed=7", "-o", "out.jsonl", "--no-progress"],
                tmp_path, env=KEY)
    assert r.returncode == 0, r.stderr
    [body] = bodies(sim)
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hello"}]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50
    assert body["top_p"] == 0.9 and body["seed"] == 7  # JSON values keep their type
    assert body["user"] == "alice"  # not JSON: a string
    assert body["response_format"] == {"type": "text"}  # a dotted key nests


def test_gemini_options_go_into_generation_config(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    r = run_cli(["run", "in.txt", "-P", "gemini", "-m", "gemini-2.0-flash", "--base-url",
                 sim.url, "--system", "Be brief.", "--temperature", "0", "--max-tokens", "40",
                 "-p", "top_k=3", "-o", "out.jsonl", "--no-progress"],
                tmp_path, env={"GEMINI_API_KEY": "gm-test"})
    assert r.returncode == 0, r.stderr
    [body] = bodies(sim)
    config = body["generationConfig"]
    assert config["temperature"] == 0 and config["maxOutputTokens"] == 40
    assert config["topK"] == 3
    assert body["systemInstruction"]["parts"][0]["text"] == "Be brief."


def test_http_api_key_headers_and_body_fields(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    r = run_cli(["run", "in.txt", "-P", "http", "--base-url", f"{sim.url}/echo", "--extract",
                 "result", "--api-key", "k-short", "--header", "X-Team: ml", "--system", "S",
                 "--max-tokens", "30", "-p", "model=m1", "-o", "out.jsonl", "--no-progress"],
                tmp_path)
    assert r.returncode == 0, r.stderr
    [request] = sim.requests()
    assert request["headers"]["authorization"] == "Bearer k-short"
    assert request["headers"]["x-team"] == "ml"
    assert request["body"] == {"prompt": "hello", "system": "S", "max_tokens": 30, "model": "m1"}
    assert "--api-key" in run_cli(["run", "--help"], tmp_path).stdout


def test_python_provider_refuses_request_options(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hi\n", encoding="utf-8")
    r = run_cli(["run", "in.txt", "-P", "python:json:dumps", "--temperature", "1"], tmp_path)
    assert r.returncode == 2 and "do not apply to --provider python" in r.stderr


def test_dash_p_is_param_and_a_provider_after_it_still_works(sim: Simulator,
                                                              tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hi\n", encoding="utf-8")
    bad = run_cli(["run", "in.txt", "-p", "temperature0.2", "--dry-run"], tmp_path, env=KEY)
    assert bad.returncode == 2 and "--param expects NAME=VALUE" in bad.stderr
    assert "-P/--provider" in bad.stderr
    old = run_cli(["run", "in.txt", "-p", "http", "--base-url", f"{sim.url}/echo", "-q"],
                  tmp_path)
    assert old.returncode == 0, old.stderr
    assert "-p http as the provider is deprecated" in old.stderr and "-P http" in old.stderr


def test_dry_run_counts_max_tokens_and_says_what_is_reserved(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\nb\n", encoding="utf-8")
    base = ["run", "in.txt", "-m", "gpt-4o-mini", "--dry-run", "--tpm", "10000"]
    default = run_cli(base, tmp_path, env=KEY)
    assert default.returncode == 0, default.stderr
    assert "2 of 2 requests give no max_tokens: each reserves 256 output tokens under --tpm" \
        in default.stdout
    capped = run_cli([*base, "--max-tokens", "10"], tmp_path, env=KEY)
    assert "give no max_tokens" not in capped.stdout
    total = {out: int(next(line for line in out.splitlines() if line.startswith(
        "estimated tokens")).split()[2].replace(",", "")) for out in
        (default.stdout, capped.stdout)}
    assert total[default.stdout] - total[capped.stdout] == 2 * (256 - 10)


def test_dry_run_needs_no_api_key(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hi\n", encoding="utf-8")
    r = run_cli(["run", "in.txt", "-m", "gpt-4o-mini", "--dry-run"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no API key set: fine for a dry run; the real run needs OPENAI_API_KEY" in r.stdout


@pytest.mark.parametrize("dry", [True, False])
def test_records_of_another_shape_name_the_field_to_map(sim: Simulator, tmp_path: Path,
                                                        dry: bool) -> None:
    (tmp_path / "q.jsonl").write_text(
        json.dumps({"id": 1, "question": "what?"}) + "\n", encoding="utf-8")
    r = run_cli(["run", "q.jsonl", "-m", "m", "--base-url", sim.openai_base_url,
                 *(["--dry-run"] if dry else [])], tmp_path, env=KEY)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "q.jsonl:1:" in r.stderr and 'no "messages"' in r.stderr
    assert "--field question" in r.stderr
    assert sim.stats()["requests"] == 0
    fixed = run_cli(["run", "q.jsonl", "-m", "m", "--base-url", sim.openai_base_url,
                     "--field", "question", "-q"], tmp_path, env=KEY)
    assert fixed.returncode == 0, fixed.stderr


def test_empty_input_is_said_and_exits_0(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    r = run_cli(["run", "empty.txt", "-m", "m", "--base-url", sim.openai_base_url,
                 "-o", "out.jsonl"], tmp_path, env=KEY)
    assert r.returncode == 0
    assert "the input has no records (empty.txt)" in r.stderr
    assert (tmp_path / "out.jsonl").read_text() == ""
    dry = run_cli(["run", "empty.txt", "-m", "m", "--dry-run"], tmp_path, env=KEY)
    assert "the input has no records" in dry.stdout


def test_provider_typo_gets_did_you_mean(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hi\n", encoding="utf-8")
    r = run_cli(["run", "in.txt", "-P", "anthropc"], tmp_path)
    assert r.returncode == 2
    assert "did you mean 'anthropic'?" in r.stderr
    r = run_cli(["run", "in.txt", "-P", "opnai"], tmp_path)
    assert "did you mean 'openai'?" in r.stderr


def test_sim_banner_names_its_limits_and_ctrl_c_prints_a_summary(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "throttlepool", "sim", "--port", "0", "--rpm", "5", "--tpm",
         "900", "--latency", "0.01"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        head = [proc.stdout.readline() for _ in range(7)]
        url = head[0].rsplit(" ", 1)[-1].strip()
        assert any("limits: 5 requests and 900 tokens per 60 s window" in line for line in head)
        import requests

        assert requests.post(url + "/echo", json={"prompt": "a"}, timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "served 1 requests (1 x 200); 0 rate-limited" in out
