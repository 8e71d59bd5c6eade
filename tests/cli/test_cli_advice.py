"""Issue 13 item 7: a failed run names its cause in one sentence with the fix, and prints the
command that retries only what did not succeed. The real CLI against the simulator's
scripted and in-prompt faults."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.helpers import read_jsonl, run_cli
from throttlepool.classify import ErrorKind, Verdict
from throttlepool.cli.advice import FailureCause, explain
from throttlepool.sim import Simulator

KEY = {"OPENAI_API_KEY": "sk-test-advice"}


def openai(sim: Simulator, *more: str) -> list[str]:
    return ["-m", "sim-model", "--base-url", sim.openai_base_url, "-b", "1", "--no-progress",
            *more]


def write_lines(path: Path, n: int) -> None:
    path.write_text("".join(f"q {i}\n" for i in range(n)), encoding="utf-8")


def test_rejected_key_names_the_variable_and_the_retry_calls_only_the_rest(
        sim: Simulator, tmp_path: Path) -> None:
    write_lines(tmp_path / "in.txt", 12)
    args = ["run", "in.txt", *openai(sim), "-o", "out.jsonl"]
    sim.script([{"status": 200}, {"status": 200}, {"status": 401}])
    r = run_cli(args, tmp_path, env=KEY)
    assert r.returncode == 1
    assert "why: the API key was rejected (401): check OPENAI_API_KEY" in r.stderr
    assert "to retry only the 1 failed and 9 not attempted items (2 ok items from the " \
           "checkpoint)" in r.stderr
    command = r.stderr.strip().splitlines()[-1].strip()
    assert shlex.split(command)[1:] == args
    before = sim.stats()["requests"]
    again = run_cli(shlex.split(command)[1:], tmp_path, env=KEY)
    assert again.returncode == 0, again.stderr
    assert sim.stats()["requests"] - before == 10  # the failed one and the 9 not attempted
    assert [row["status"] for row in read_jsonl(tmp_path / "out.jsonl")] == ["ok"] * 12


def test_exhausted_quota_is_not_called_a_rate_limit(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("[[fault:quota]] a\nb\n", encoding="utf-8")
    r = run_cli(["run", "in.txt", *openai(sim)], tmp_path, env=KEY)
    assert r.returncode == 1
    assert "why: the account has no quota left" in r.stderr and "check billing" in r.stderr


def test_unknown_model_is_named(sim: Simulator, tmp_path: Path) -> None:
    write_lines(tmp_path / "in.txt", 2)
    body = {"error": {"message": "The model `nope` does not exist or you do not have access "
                                 "to it.", "type": "invalid_request_error", "param": None,
                      "code": "model_not_found"}}
    sim.script([{"status": 404, "body": body}] * 2)
    r = run_cli(["run", "in.txt", "-m", "nope", "--base-url", sim.openai_base_url,
                 "--no-progress"], tmp_path, env=KEY)
    assert r.returncode == 1
    assert "why: model 'nope' not found (404)" in r.stderr
    assert "to retry only the 2 failed items" in r.stderr


def test_a_run_without_checkpoint_says_a_rerun_starts_over(sim: Simulator,
                                                           tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("[[fault:401]] a\nb\n", encoding="utf-8")
    r = run_cli(["run", "in.txt", *openai(sim), "--no-db"], tmp_path, env=KEY)
    assert r.returncode == 1 and "calls every item again" in r.stderr


@pytest.mark.parametrize(("provider", "variable"), [
    ("openai", "OPENAI_API_KEY"), ("gemini", "GEMINI_API_KEY or GOOGLE_API_KEY"),
    ("http", "--api-key or --header 'Authorization: ...'")])
def test_the_key_hint_follows_the_provider(provider: str, variable: str) -> None:
    cause = FailureCause(Verdict(ErrorKind.FATAL, None, "401 not authorized"), None)
    assert explain(cause, provider=provider, model="m") == (
        f"the API key was rejected (401): check {variable}")
