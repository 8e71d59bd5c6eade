"""Bad input as a real subprocess: one clear message, exit code 2, nothing sent or written."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_cli
from throttlepool.sim import Simulator


def expect_usage_error(r: subprocess.CompletedProcess[str], cwd: Path, *parts: str) -> str:
    """Exit 2, one ``throttlepool: ...`` line naming ``parts``, no output file, no stdout."""
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("throttlepool: "), r.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert r.stdout == ""
    assert not [p.name for p in cwd.iterdir() if p.name.startswith(("out", ".out"))]
    return lines[0]


def http(sim: Simulator) -> list[str]:
    return ["--provider", "http", "--base-url", f"{sim.url}/echo", "-o", "out.jsonl"]


def test_malformed_jsonl_line(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b",}\n{"prompt": "c"}\n')
    r = run_cli(["run", "in.jsonl", *http(sim)], tmp_path)
    expect_usage_error(r, tmp_path, "bad input", "in.jsonl:2", "malformed JSON")
    assert sim.stats()["requests"] == 0


def test_missing_csv_column(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("title,body\nA,B\n")
    r = run_cli(["run", "in.csv", *http(sim), "--column", "abstract"], tmp_path)
    expect_usage_error(r, tmp_path, "in.csv:1", "no column 'abstract'", "field 'abstract'")


def test_template_placeholder_missing(sim: Simulator, tmp_path: Path) -> None:
    records = [{"title": "a", "year": 1}, {"title": "b", "year": 2}, {"title": "c"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    r = run_cli(["run", "in.jsonl", *http(sim), "--template", "{title} in {year}"], tmp_path)
    expect_usage_error(r, tmp_path, "in.jsonl:3", "{year}", "field 'year'")
    assert sim.stats()["requests"] == 0


def test_unknown_provider(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hi\n")
    r = run_cli(["run", "in.txt", "--provider", "bedrock", "-o", "out.jsonl"], tmp_path)
    expect_usage_error(r, tmp_path, "unknown provider 'bedrock'", "openai")


def test_missing_sdk_extra(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked" / "openai"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("not installed")\n')
    (tmp_path / "in.txt").write_text("hi\n")
    r = run_cli(["run", "in.txt", "--model", "m", "-o", "out.jsonl"], tmp_path,
                env={"PYTHONPATH": str(tmp_path / "blocked"), "OPENAI_API_KEY": "sk-x"})
    expect_usage_error(r, tmp_path, "missing dependency", "pip install 'throttlepool[openai]'")


@pytest.mark.parametrize(("provider", "variables"), [
    ("openai", "OPENAI_API_KEY"), ("gemini", "GEMINI_API_KEY or GOOGLE_API_KEY")])
def test_missing_api_key(tmp_path: Path, provider: str, variables: str) -> None:
    (tmp_path / "in.txt").write_text("hi\n")
    r = run_cli(["run", "in.txt", "-P", provider, "-m", "m", "-o", "out.jsonl"], tmp_path)
    expect_usage_error(r, tmp_path, f"no API key for the {provider} provider", variables)


def test_unreadable_database(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hi\n")
    (tmp_path / "bad.db").write_bytes(b"this is not a database at all" * 100)
    r = run_cli(["run", "in.txt", *http(sim), "--db", "bad.db"], tmp_path)
    expect_usage_error(r, tmp_path, "checkpoint database", "bad.db", "not a SQLite file")
    assert sim.stats()["requests"] == 0


def test_locked_database(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hi\n")
    holder = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
        r = run_cli(["run", "in.txt", *http(sim), "--db", "busy.db", "--db-timeout", "0.3"],
                    tmp_path)
    finally:
        holder.close()
    expect_usage_error(r, tmp_path, "busy.db", "locked")
    assert sim.stats()["requests"] == 0


def test_changed_input_under_same_run_name(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\nb\n")
    assert run_cli(["run", "in.txt", *http(sim), "-q"], tmp_path).returncode == 0
    (tmp_path / "out.jsonl").unlink()
    (tmp_path / "in.txt").write_text("x\ny\n")
    r = run_cli(["run", "in.txt", *http(sim), "-q"], tmp_path)
    # The message, then the command that starts a new run reusing the answers, on its own line.
    message, command = r.stderr.splitlines()
    assert r.returncode == 2 and message.startswith("throttlepool: checkpoint mismatch: line 1 ")
    assert command.split()[:2] == ["throttlepool", "run"] and "--reuse" in command


def test_bad_setting_from_environment(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hi\n")
    r = run_cli(["run", "in.txt", "-o", "out.jsonl"], tmp_path,
                env={"THROTTLEPOOL_BATCH_SIZE": "lots"})
    expect_usage_error(r, tmp_path, "THROTTLEPOOL_BATCH_SIZE", "expected an integer")


def test_status_of_unknown_run_or_missing_db(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from throttlepool.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--db", str(tmp_path / "none.db")])
    assert exit_info.value.code == 2
    assert "no checkpoint database at" in capsys.readouterr().err
