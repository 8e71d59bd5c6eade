"""The CLI's summary prices the answers rejected as invalid JSON too: the server billed them,
and the live line (the run's own count) already did; the two agree and the summary names it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.helpers import run_cli
from throttlepool.sim import Simulator

PERSON = {"type": "object", "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}


def test_the_summary_cost_counts_rejected_answers(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "person.json").write_text(json.dumps(PERSON), encoding="utf-8")
    # The simulator echoes the prompt: the second answer lacks "age" and is rejected twice.
    (tmp_path / "people.txt").write_text('{"name": "Ada", "age": 36}\n{"name": "Bob"}\n',
                                         encoding="utf-8")
    r = run_cli(["run", "people.txt", "-m", "gpt-4o-mini", "--base-url", sim.openai_base_url,
                 "--schema", "person.json", "--json-retries", "1", "--no-db",
                 "-o", "out.jsonl"], tmp_path, env={"OPENAI_API_KEY": "sk-test-rejected"})
    assert r.returncode == 1, r.stderr
    assert len(sim.requests()) == 3
    live = re.findall(r"cost=(\$[\d.]+)", r.stderr)[-1]
    summary = re.search(r"^cost (\$[\d.]+) \(1 item priced, (\$[\d.]+) of it for rejected "
                        r"answers\)$", r.stderr, re.MULTILINE)
    assert summary is not None, r.stderr
    assert summary.group(1) == live
    assert float(summary.group(2)[1:]) > float(summary.group(1)[1:]) / 2  # two of 3 calls
