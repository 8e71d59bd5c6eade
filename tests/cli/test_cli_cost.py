"""Issue 15 items 1-2 through the real CLI against the simulator: the summary's cost line,
unknown never read as $0, --price-in/--price-out, --max-cost stopping and resuming with a
higher cap, and --dry-run's projected cost range."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import read_jsonl, run_cli
from throttlepool.cost import Pricing
from throttlepool.cost.text import usd
from throttlepool.outcome import Usage
from throttlepool.sim import Simulator

KEY = {"OPENAI_API_KEY": "sk-test-cost"}


def _questions(path: Path, n: int) -> Path:
    path.write_text("".join(f"question {i} about the weather today\n" for i in range(n)),
                    encoding="utf-8")
    return path


def _run(sim: Simulator, cwd: Path, *args: str) -> tuple[int, str]:
    r = run_cli(["run", "q.txt", "--base-url", sim.openai_base_url, "--db", "c.db",
                 "--no-progress", *args], cwd, env=KEY)
    return r.returncode, r.stderr


def _cost_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("cost "))


def test_summary_says_what_the_run_cost_from_the_price_table(sim: Simulator,
                                                             tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt", 12)
    code, err = _run(sim, tmp_path, "-m", "gpt-4o-mini", "-o", "out.jsonl")
    assert code == 0, err
    rows = read_jsonl(tmp_path / "out.jsonl")
    table = Pricing("openai", "gpt-4o-mini")
    costs = [table.cost(Usage(int(r["input_tokens"]), int(r["output_tokens"])))  # type: ignore[arg-type]
             for r in rows]
    assert all(c is not None and c > 0 for c in costs)
    assert [r["cost_usd"] for r in rows] == pytest.approx(costs)
    assert _cost_line(err) == f"cost {usd(sum(c for c in costs if c))} (12 items priced)"


def test_a_model_without_a_price_is_cost_unknown_never_zero(sim: Simulator,
                                                             tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt", 3)
    code, err = _run(sim, tmp_path, "-m", "no-such-model-x", "-o", "out.jsonl")
    assert code == 0, err
    line = _cost_line(err)
    assert line.startswith("cost unknown (3 unknown: no price for model no-such-model-x")
    assert "--price-in" in line and "$0" not in err
    assert {r["cost_usd"] for r in read_jsonl(tmp_path / "out.jsonl")} == {None}


def test_own_prices_give_exactly_usage_times_price(sim: Simulator, tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt", 10)
    code, err = _run(sim, tmp_path, "-m", "no-such-model-x", "--price-in", "2",
                     "--price-out", "8", "-o", "out.jsonl")
    assert code == 0, err
    rows = read_jsonl(tmp_path / "out.jsonl")
    expected = [(int(r["input_tokens"]) * 2 + int(r["output_tokens"]) * 8) / 1e6  # type: ignore[call-overload]
                for r in rows]
    assert [r["cost_usd"] for r in rows] == pytest.approx(expected)
    assert _cost_line(err) == f"cost {usd(sum(expected))} (10 items priced)"


def test_max_cost_stops_within_the_cap_and_a_higher_cap_resumes(sim: Simulator,
                                                               tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt", 20)
    prices = ["-m", "gpt-4o-mini", "--price-in", "2", "--price-out", "8", "--max-tokens",
              "20", "-b", "2", "--run-name", "capped"]
    # Each call reserves about (9 in + 20 out) tokens: 0.000178 USD; 0.001 admits ~5 calls.
    code, err = _run(sim, tmp_path, *prices, "--max-cost", "0.001", "-o", "first.jsonl")
    assert code == 1, err
    assert "budget reached" in err
    advice = err.splitlines()[-1].strip()
    assert advice.startswith("throttlepool run q.txt") and advice.endswith("--max-cost 0.002")
    first = read_jsonl(tmp_path / "first.jsonl")
    ok = [r for r in first if r["status"] == "ok"]
    assert 0 < len(ok) < 20
    assert {r["status"] for r in first} == {"ok", "not_attempted"}
    assert sum(float(r["cost_usd"]) for r in ok) <= 0.001  # type: ignore[arg-type]
    calls = len(sim.requests())
    assert calls == len(ok)

    code, err = _run(sim, tmp_path, *prices, "--max-cost", "1", "-o", "second.jsonl")
    assert code == 0, err
    second = read_jsonl(tmp_path / "second.jsonl")
    assert [r["status"] for r in second] == ["ok"] * 20
    assert len(sim.requests()) == 20  # the answers of the first run were not paid again
    assert [r["output"] for r in second[:len(ok)]] == [r["output"] for r in ok]


def test_max_cost_without_a_price_is_refused_before_any_call(sim: Simulator,
                                                            tmp_path: Path) -> None:
    _questions(tmp_path / "q.txt", 3)
    code, err = _run(sim, tmp_path, "-m", "no-such-model-x", "--max-cost", "1")
    assert code == 2, err
    assert "max_cost needs a price" in err and "Traceback" not in err
    assert sim.requests() == []


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_dry_run_projects_the_cost_range(tmp_path: Path, mode: str) -> None:
    _questions(tmp_path / "q.txt", 10)
    r = run_cli(["run", "q.txt", "-m", "gpt-4o-mini", "--max-tokens", "100", "--price-in",
                 "2", "--price-out", "8", "--dry-run", "--mode", mode, "--db", "c.db",
                 "--max-cost", "0.0015"], tmp_path)
    assert r.returncode == 0, r.stderr
    tokens = re.search(r"estimated tokens: ([\d,]+)", r.stdout)
    assert tokens is not None
    prompt_tokens = int(tokens.group(1).replace(",", "")) - 10 * 100
    low, high = prompt_tokens * 2 / 1e6, (prompt_tokens * 2 + 10 * 100 * 8) / 1e6
    if mode == "online":
        assert f"projected cost: {usd(low)} to {usd(high)}" in r.stdout
        assert "$2 in / $8 out per 1M tokens)" in r.stdout
        return
    # A batch is priced at half, said so, and planned as batches rather than rate limits.
    assert f"projected cost at the batch price: {usd(low / 2)} to {usd(high / 2)}" in r.stdout
    assert "$1 in / $4 out per 1M tokens at the batch price (online $2 / $8)" in r.stdout
    assert "batch mode: 1 batch of 10 requests" in r.stdout
    # Each request reserves its upper estimate (~0.0004 USD at the batch price): 3 fit.
    each = high / 2 / 10
    fit = int(0.0015 // each)
    assert 0 < fit < 10
    assert (f"--max-cost $0.0015: the first {fit} of 10 requests fit, each reserved at its "
            "upper estimate; the run submits those and stops ('budget reached')") in r.stdout
    assert "limits:" not in r.stdout and "batch size" not in r.stdout


def test_dry_run_says_why_a_cost_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "q.txt").write_text(json.dumps({"prompt": "hi"}) + "\n", encoding="utf-8")
    r = run_cli(["run", "q.txt", "-m", "no-such-model-x", "--dry-run"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert ("cost unknown: no price for model no-such-model-x (not in the price table)"
            in r.stdout)
    assert "$0" not in r.stdout
