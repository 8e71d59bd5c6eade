"""``throttlepool run --provider anthropic`` end to end: a subprocess against the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import read_jsonl, run_cli, write_jsonl
from throttlepool.sim import SimConfig, Simulator

pytest.importorskip("anthropic")

KEY = "sk-ant-test-0123456789abcdef"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(latency=0.01)) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(sim: Simulator) -> None:
    sim.configure(rpm=None, tpm=None, window=60.0, fail_rate={})
    sim.reset()


def test_run_anthropic_in_order_with_its_key_and_options(sim: Simulator, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 20)
    r = run_cli(["run", "in.jsonl", "--provider", "anthropic", "--base-url", sim.url,
                 "--model", "claude-x", "--max-tokens", "32", "--system", "Be brief.",
                 "-b", "6", "--rpm", "6000", "-o", "out.jsonl"],
                tmp_path, env={"ANTHROPIC_API_KEY": KEY})
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["output"] for row in rows] == [f"echo: Be brief.\nprompt {i}" for i in range(20)]
    assert all(row["status"] == "ok" and row["attempts"] == 1 for row in rows)
    assert all(isinstance(row["input_tokens"], int) and row["input_tokens"] > 0 for row in rows)
    sent = sim.requests()
    assert len(sent) == 20 and all(s["path"] == "/v1/messages" for s in sent)
    assert {s["body"]["max_tokens"] for s in sent} == {32}
    assert {s["body"]["model"] for s in sent} == {"claude-x"}
    assert "20 ok, 0 failed of 20" in r.stderr
    assert KEY not in r.stderr + r.stdout


def test_base_url_from_the_environment(sim: Simulator, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 3)
    r = run_cli(["run", "in.jsonl", "-P", "anthropic", "--model", "claude-x", "--no-db",
                 "-o", "out.jsonl"], tmp_path,
                env={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": sim.url})
    assert r.returncode == 0, r.stderr
    assert [row["output"] for row in read_jsonl(tmp_path / "out.jsonl")] == [
        f"echo: prompt {i}" for i in range(3)]
    assert sim.stats()["requests"] == 3


def test_529_faults_retried_and_401_stops(sim: Simulator, tmp_path: Path) -> None:
    sim.configure(fail_rate={"529": 0.3}, seed=2)
    write_jsonl(tmp_path / "in.jsonl", 10)
    r = run_cli(["run", "in.jsonl", "-P", "anthropic", "--base-url", sim.url, "--model", "m",
                 "--no-db", "-o", "out.jsonl"], tmp_path, env={"ANTHROPIC_API_KEY": KEY})
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["output"] for row in rows] == [f"echo: prompt {i}" for i in range(10)]
    assert sim.stats()["faults"]["529"] == sum(row["attempts"] for row in rows) - 10 > 0
    sim.configure(fail_rate={})
    (tmp_path / "bad.txt").write_text("a\nb [[fault:401]]\nc\nd\ne\nf\n", encoding="utf-8")
    sim.reset()
    r = run_cli(["run", "bad.txt", "-P", "anthropic", "--base-url", sim.url, "--model", "m",
                 "-b", "1", "--no-db", "-o", "bad.jsonl"], tmp_path,
                env={"ANTHROPIC_API_KEY": KEY})
    assert r.returncode != 0
    assert "ANTHROPIC_API_KEY" in r.stderr
    assert sim.stats()["requests"] == 2  # stopped at the 401: nothing sent after it
    assert KEY not in r.stderr + r.stdout


def test_missing_key_names_the_variable(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 1)
    r = run_cli(["run", "in.jsonl", "-P", "anthropic", "--model", "m", "--no-db"], tmp_path,
                env={"ANTHROPIC_API_KEY": ""})
    assert r.returncode == 2 and "ANTHROPIC_API_KEY" in r.stderr
