"""``throttlepool run --extract json / --schema / --json-retries / --stream`` end to end: a
subprocess against the simulator, which echoes the prompt, so a prompt holding a JSON object
gets that object back in the answer's prose ("echo: {...}")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import read_jsonl, run_cli
from throttlepool.sim import Simulator

PEOPLE = [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}, {"name": "Grace", "age": 85}]
PERSON = {"type": "object", "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
KEYS = {"OPENAI_API_KEY": "sk-test-0123456789", "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
        "GEMINI_API_KEY": "g-test-0123456789"}


def _prompts(path: Path, values: list[object]) -> None:
    path.write_text("".join(json.dumps({"prompt": json.dumps(v)}) + "\n" for v in values),
                    encoding="utf-8")


def _base(provider: str, sim: Simulator) -> list[str]:
    url = sim.openai_base_url if provider == "openai" else sim.url
    return ["run", "in.jsonl", "-P", provider, "--base-url", url, "-m", "m", "--no-db",
            "--no-progress", "--retries", "0", "-o", "out.jsonl"]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_extract_json_gives_the_parsed_object(sim: Simulator, tmp_path: Path,
                                              provider: str) -> None:
    _prompts(tmp_path / "in.jsonl", PEOPLE)
    r = run_cli([*_base(provider, sim), "--extract", "json"], tmp_path, env=KEYS)
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["output"] for row in rows] == PEOPLE
    assert all(row["status"] == "ok" for row in rows)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_schema_file_checks_each_answer_and_names_the_field(sim: Simulator, tmp_path: Path,
                                                            provider: str) -> None:
    (tmp_path / "person.json").write_text(json.dumps(PERSON), encoding="utf-8")
    _prompts(tmp_path / "in.jsonl", [PEOPLE[0], {"name": "Bob", "age": "old"}, PEOPLE[2]])
    r = run_cli([*_base(provider, sim), "--schema", "person.json", "--json-retries", "1"],
                tmp_path, env=KEYS)
    assert r.returncode == 1, r.stderr  # some items failed
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert rows[0]["output"] == PEOPLE[0] and rows[2]["output"] == PEOPLE[2]
    assert "age" in str(rows[1]["error"]) and "invalid JSON answer" in str(rows[1]["error"])
    # one first ask and one more (--json-retries 1) for the bad item; one each for the others
    assert len(sim.requests()) == 4


@pytest.mark.parametrize("content", ['{"type": "object",', "[1, 2]"])
def test_bad_schema_file_exits_2_naming_it_before_any_call(sim: Simulator, tmp_path: Path,
                                                           content: str) -> None:
    (tmp_path / "bad.json").write_text(content, encoding="utf-8")
    _prompts(tmp_path / "in.jsonl", PEOPLE)
    r = run_cli([*_base("openai", sim), "--schema", "bad.json"], tmp_path, env=KEYS)
    assert r.returncode == 2
    assert "bad.json" in r.stderr
    assert sim.requests() == []
    missing = run_cli([*_base("openai", sim), "--schema", "nowhere.json"], tmp_path, env=KEYS)
    assert missing.returncode == 2 and "nowhere.json" in missing.stderr


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_stream_gives_the_same_answers_as_without(sim: Simulator, tmp_path: Path,
                                                  provider: str) -> None:
    _prompts(tmp_path / "in.jsonl", PEOPLE)
    plain = run_cli(_base(provider, sim), tmp_path, env=KEYS)
    assert plain.returncode == 0, plain.stderr
    expected = [row["output"] for row in read_jsonl(tmp_path / "out.jsonl")]
    sim.reset()
    streamed = run_cli([*_base(provider, sim), "--stream"], tmp_path, env=KEYS)
    assert streamed.returncode == 0, streamed.stderr
    assert [row["output"] for row in read_jsonl(tmp_path / "out.jsonl")] == expected
    assert all((request.get("body") or {}).get("stream") or "stream" in request["path"].lower()
               for request in sim.requests()), sim.requests()


def test_stream_is_refused_for_a_provider_that_cannot(sim: Simulator, tmp_path: Path) -> None:
    _prompts(tmp_path / "in.jsonl", PEOPLE)
    r = run_cli(["run", "in.jsonl", "-P", "http", "--base-url", f"{sim.url}/echo", "--no-db",
                 "--stream"], tmp_path)
    assert r.returncode == 2 and "--stream applies to --provider openai" in r.stderr, r.stderr
    assert sim.requests() == []
