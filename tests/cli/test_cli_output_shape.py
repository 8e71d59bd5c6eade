"""Issue 13, item 3: one result row shape for `run -o` and `export`, through the real CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FNS = '''
def answer(prompt):
    if prompt == "boom":
        raise ValueError("cannot answer boom")
    if prompt.startswith("struct"):
        return {"words": prompt.split()}
    return f"answer to {prompt}"
'''
RECORDS = ['{"id": "a1", "prompt": "hello, world", "status": "draft"}', "",
           '{"id": "a2", "prompt": "boom"}', '{"id": "a3", "prompt": "struct me"}']
RESULT = ["status", "output", "error_type", "error", "attempts", "latency", "ttft",
          "input_tokens", "output_tokens", "cost_usd", "started", "finished"]
COLUMNS = ["index", "line", "id", "prompt", "input.status", *RESULT]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THROTTLEPOOL_")}
    env["PYTHONPATH"] = str(cwd)
    return subprocess.run([sys.executable, "-m", "throttlepool", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "fns.py").write_text(FNS)
    (tmp_path / "in.jsonl").write_text("\n".join(RECORDS) + "\n")
    return tmp_path


def run(work: Path, output: str) -> None:
    r = cli(work, "run", "in.jsonl", "--provider", "python:fns:answer", "--db", "t.db",
            "--run-name", "r", "-o", output, "-q")
    assert r.returncode == 1, r.stderr  # one item fails


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_run_writes_the_same_columns_in_jsonl_and_csv_with_input_fields(work: Path) -> None:
    run(work, "out.jsonl")
    rows = [json.loads(line) for line in (work / "out.jsonl").read_text().splitlines()]
    assert [list(row) for row in rows] == [COLUMNS] * 3
    assert [(r["index"], r["line"], r["id"]) for r in rows] == [(0, 1, "a1"), (1, 3, "a2"),
                                                                (2, 4, "a3")]
    assert rows[0]["input.status"] == "draft" and rows[0]["status"] == "ok"
    assert rows[1]["error_type"] == "ValueError" and rows[1]["error"] == "cannot answer boom"
    assert rows[2]["output"] == {"words": ["struct", "me"]}
    run(work, "out.csv")
    header, cells = read_csv(work / "out.csv")
    assert header == COLUMNS
    assert cells[0]["output"] == "answer to hello, world"  # plain text, not JSON
    assert json.loads(cells[2]["output"]) == {"words": ["struct", "me"]}
    assert cells[1]["id"] == "a2" and cells[1]["line"] == "3"


def test_export_has_the_shape_of_run_and_joins_input_fields(work: Path) -> None:
    run(work, "out.jsonl")
    ran = [json.loads(line) for line in (work / "out.jsonl").read_text().splitlines()]
    r = cli(work, "export", "r", "--db", "t.db", "--input", "in.jsonl")
    assert r.returncode == 0, r.stderr
    exported = [json.loads(line) for line in r.stdout.splitlines()]
    assert [list(row) for row in exported] == [COLUMNS] * 3
    timeless = [{k: v for k, v in row.items() if k not in ("started", "finished")}
                for row in exported]
    assert timeless == [{k: v for k, v in row.items() if k not in ("started", "finished")}
                        for row in ran]
    for row in exported:  # ISO-8601 times, not Unix floats
        assert row["finished"].endswith("+00:00") and row["started"] <= row["finished"]
    bare = [json.loads(line) for line in cli(work, "export", "r", "--db", "t.db").stdout
            .splitlines()]
    assert list(bare[0]) == ["index", "line", *RESULT] and bare[0]["line"] is None
    r = cli(work, "export", "r", "--db", "t.db", "--format", "csv")
    header, cells = read_csv_text(r.stdout)
    assert header == ["index", "line", *RESULT]
    assert cells[0]["output"] == "answer to hello, world"


def read_csv_text(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(text.splitlines())
    return list(reader.fieldnames or []), list(reader)


def test_export_filters_by_status_and_refuses_another_input(work: Path) -> None:
    run(work, "out.jsonl")
    failed = cli(work, "export", "r", "--db", "t.db", "--failed", "--input", "in.jsonl")
    assert failed.returncode == 0, failed.stderr
    assert [json.loads(x)["id"] for x in failed.stdout.splitlines()] == ["a2"]
    ok = cli(work, "export", "r", "--db", "t.db", "--status", "ok")
    assert [json.loads(x)["index"] for x in ok.stdout.splitlines()] == [0, 2]
    (work / "other.jsonl").write_text('{"id": "x", "prompt": "hello, world"}\n'
                                      '{"id": "y", "prompt": "changed"}\n')
    wrong = cli(work, "export", "r", "--db", "t.db", "--input", "other.jsonl")
    assert wrong.returncode == 2 and "line 2" in wrong.stderr, wrong.stderr
    assert "Traceback" not in wrong.stderr
