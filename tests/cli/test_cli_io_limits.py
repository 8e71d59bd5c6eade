"""Issue 14 item 2 on the command line: --itpm/--otpm reach the runner's limiter (recorded
in the checkpoint's settings) and the dry run's minimum time counts each kind apart."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_cli
from throttlepool.sim import Simulator


def _questions(path: Path, n: int) -> None:
    path.write_text("".join(f"question {i} about limits\n" for i in range(n)), encoding="utf-8")


def test_input_and_output_token_limits_reach_the_runner(sim: Simulator, tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt", 3)
    r = run_cli(["run", "q.txt", "-m", "gpt-4o-mini", "--base-url", sim.openai_base_url,
                 "--db", "c.db", "--run-name", "io", "--itpm", "100000", "--otpm", "50000",
                 "-q", "-o", "out.jsonl"], tmp_path, env={"OPENAI_API_KEY": "sk-test-io"})
    assert r.returncode == 0, r.stderr
    status = run_cli(["status", "io", "--db", "c.db", "--json"], tmp_path)
    assert json.loads(status.stdout)["settings"]["limits"] == [
        "100000 input tokens/60s", "50000 output tokens/60s"]


def test_dry_run_binds_on_the_tighter_of_input_and_output_tokens(tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt", 30)
    base = ["run", "q.txt", "-m", "gpt-4o-mini", "--max-tokens", "20", "--dry-run"]
    # 30 requests x 20 output tokens = 600: 3 windows of 200 need 2 minutes at least.
    out = run_cli([*base, "--otpm", "200", "--itpm", "1000000"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "limits: 1e+06 input tokens/60s, 200 output tokens/60s" in out.stdout
    assert ("minimum time the limits allow: 2m00s (bound by 200 output tokens/60s"
            in out.stdout)
