"""``--rate-limit SPEC``: the library's limit strings from the command line (issue 11).

A server that counts over one second cannot be held to by a per-minute flag (``--rpm 960``
lets bursts of 30 through in one second); ``--rate-limit 16/second`` can.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import read_jsonl, run_cli, write_jsonl
from throttlepool.cli import cli
from throttlepool.sim import SimulatorProcess

PER_SECOND, ITEMS = 16, 32
KEY = {"OPENAI_API_KEY": "sk-test-rate-limit"}


def test_a_per_second_limit_holds_a_one_second_server_to_no_429(
        remote_sim: SimulatorProcess, tmp_path: Path) -> None:
    remote_sim.configure(rpm=PER_SECOND, window=1.0)
    write_jsonl(tmp_path / "in.jsonl", ITEMS)
    r = run_cli(["run", "in.jsonl", "-m", "sim", "--base-url", remote_sim.openai_base_url,
                 "--rate-limit", f"{PER_SECOND}/second", "--rate-limit", "100000 tokens/minute",
                 "-b", "8", "-q", "-o", "out.jsonl"], tmp_path, env=KEY)
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["output"] for row in rows] == [f"echo: prompt {i}" for i in range(ITEMS)]
    stats = remote_sim.stats()
    assert stats["rate_limited"] == 0
    assert stats["max_requests_in_window"] <= PER_SECOND


def test_a_bad_spec_names_the_flag_and_the_value_and_sends_nothing(
        remote_sim: SimulatorProcess, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 3)
    r = run_cli(["run", "in.jsonl", "-m", "sim", "--base-url", remote_sim.openai_base_url,
                 "--rate-limit", "16/second", "--rate-limit", "16 per fortnight", "-q"],
                tmp_path, env=KEY)
    assert r.returncode == 2
    assert "--rate-limit" in r.stderr and "16 per fortnight" in r.stderr
    assert "Traceback" not in r.stderr
    assert remote_sim.stats()["requests"] == 0


@pytest.mark.parametrize("where", ["config file", "environment"])
def test_a_limit_from_the_config_file_or_the_environment_is_in_force(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The repeatable flag's empty default used to overwrite these: validated, then ignored.
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", 2)
    env = {"OPENAI_API_KEY": "sk-test", "THROTTLEPOOL_NO_TIKTOKEN": "1"}
    args = ["run", "in.jsonl", "-m", "gpt-4o-mini", "--dry-run"]
    if where == "config file":
        (tmp_path / "cfg.toml").write_text('batch_size = 3\nrate_limit = ["10/second"]\n')
        args += ["--config", "cfg.toml"]
    else:
        env["THROTTLEPOOL_RATE_LIMIT"] = "10/second"
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert "limits: 10 requests/1s" in result.output
