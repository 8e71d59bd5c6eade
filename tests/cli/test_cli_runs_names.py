"""Issue 13 item 6: each input its own default run, mismatches by line, and --reuse so an
edited input calls only the changed lines. The real CLI against the simulator."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import read_jsonl, run_cli
from throttlepool.sim import Simulator


def http(sim: Simulator) -> list[str]:
    return ["-P", "http", "--base-url", f"{sim.url}/echo", "--extract", "result",
            "--no-progress"]


def test_same_file_name_in_two_directories_are_two_runs(sim: Simulator, tmp_path: Path) -> None:
    for sub, words in (("a", "one\ntwo\n"), ("b", "three\nfour\n")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "q.txt").write_text(words, encoding="utf-8")
    for sub in ("a", "b"):
        r = run_cli(["run", f"{sub}/q.txt", *http(sim), "-o", f"{sub}.jsonl"], tmp_path)
        assert r.returncode == 0, r.stderr
    assert [row["output"] for row in read_jsonl(tmp_path / "b.jsonl")] == [
        "echo: three", "echo: four"]
    again = run_cli(["run", "a/q.txt", *http(sim), "-o", "a2.jsonl"], tmp_path)
    assert again.returncode == 0 and "2 from the checkpoint" in again.stderr
    assert sim.stats()["requests"] == 4


def test_two_stdin_runs_apart_and_the_same_data_resumes(sim: Simulator, tmp_path: Path) -> None:
    first = run_cli(["run", "-", *http(sim)], tmp_path, stdin="x\ny\n")
    second = run_cli(["run", "-", *http(sim)], tmp_path, stdin="z\n")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "run 'stdin-" in first.stderr
    third = run_cli(["run", "-", *http(sim)], tmp_path, stdin="x\ny\n")
    assert third.returncode == 0 and "2 from the checkpoint" in third.stderr
    assert sim.stats()["requests"] == 3


def test_edited_line_is_named_by_its_line_and_reuse_calls_only_it(sim: Simulator,
                                                                  tmp_path: Path) -> None:
    lines = [f"line {i}" for i in range(1, 21)]
    (tmp_path / "q.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run_cli(["run", "q.txt", *http(sim), "-q"], tmp_path).returncode == 0
    lines[17] = "line 18, edited"
    (tmp_path / "q.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = run_cli(["run", "q.txt", *http(sim), "-q"], tmp_path)
    assert r.returncode == 2
    assert "line 18 of q.txt differs" in r.stderr and "item 17" not in r.stderr
    assert "--run-name" in r.stderr and "--reuse" in r.stderr
    suggested = r.stderr.strip().splitlines()[-1].split()
    assert suggested[:2] == ["throttlepool", "run"]
    before = sim.stats()["requests"]
    fixed = run_cli([*suggested[1:], "-o", "out.jsonl"], tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert sim.stats()["requests"] - before == 1  # only line 18 was called
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["output"] for row in rows] == [f"echo: {text}" for text in lines]


def test_reuse_needs_a_database(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "q.txt").write_text("a\n", encoding="utf-8")
    r = run_cli(["run", "q.txt", *http(sim), "--no-db", "--reuse"], tmp_path)
    assert r.returncode == 2 and "--reuse" in r.stderr
