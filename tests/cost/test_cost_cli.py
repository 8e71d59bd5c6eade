"""Issue 15, item 1 through the real CLI against the simulator: a run whose items carry usage
shows its cost in `status` (table and detail), `export` rows and the `report` page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from throttlepool.cost import Pricing
from throttlepool.cost.text import usd
from throttlepool.outcome import Usage
from throttlepool.sim import Simulator

REPO = Path(__file__).resolve().parents[2]
SECRET_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY")


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("THROTTLEPOOL_") and k not in SECRET_VARS}
    env["PYTHONPATH"] = str(REPO)
    env["OPENAI_API_KEY"] = "sk-test-0123456789abcdef"
    return subprocess.run([sys.executable, "-m", "throttlepool", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def ran(sim: Simulator, tmp_path: Path) -> Path:
    lines = [json.dumps({"prompt": f"tell me about item {i} " * (i + 1)}) for i in range(6)]
    # A request naming its own model, one the price table does not list.
    lines.append(json.dumps({"messages": [{"role": "user", "content": "own model"}],
                             "model": "no-such-model"}))
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    r = cli(tmp_path, "run", "in.jsonl", "--model", "gpt-4o-mini", "--base-url",
            sim.openai_base_url, "--db", "c.db", "--run-name", "priced", "-q", "-b", "4")
    assert r.returncode == 0, r.stderr
    return tmp_path


def test_export_rows_carry_each_items_cost(ran: Path) -> None:
    r = cli(ran, "export", "priced", "--db", "c.db")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 7
    table = Pricing("openai", "gpt-4o-mini")
    for row in rows[:6]:
        assert row["input_tokens"] and row["output_tokens"]
        assert row["cost_usd"] == pytest.approx(
            table.cost(Usage(row["input_tokens"], row["output_tokens"])))
        assert row["cost_usd"] > 0
    assert rows[6]["status"] == "ok" and rows[6]["cost_usd"] is None  # unknown, not 0


def test_status_shows_the_runs_cost(ran: Path) -> None:
    rows = [json.loads(line) for line in cli(ran, "export", "priced", "--db", "c.db")
            .stdout.splitlines()]
    spent = sum(row["cost_usd"] for row in rows if row["cost_usd"] is not None)
    table = cli(ran, "status", "--db", "c.db")
    assert table.returncode == 0, table.stderr
    header, line = table.stdout.splitlines()[:2]
    assert "COST" in header.split()
    assert f"{usd(spent)}+?" in line.split()
    detail = cli(ran, "status", "priced", "--db", "c.db")
    assert detail.returncode == 0, detail.stderr
    cost_line = next(x for x in detail.stdout.splitlines() if x.strip().startswith("cost"))
    assert f"{usd(spent)} + 1 unknown" in cost_line
    assert "not in the price table" in cost_line
    as_json = json.loads(cli(ran, "status", "priced", "--db", "c.db", "--json").stdout)
    assert as_json["items"]["cost_usd"] == pytest.approx(spent)
    assert as_json["items"]["cost_unknown"] == 1


def test_report_shows_cost(ran: Path) -> None:
    r = cli(ran, "report", "priced", "--db", "c.db", "-o", "r.html")
    assert r.returncode == 0, r.stderr
    page = (ran / "r.html").read_text()
    assert "Cost (USD, cumulative)" in page
    assert "+ 1 unknown</b><span>cost</span>" in page
