"""Issue 12, items 8 and 9: inputs that must stop with exit 2 before any call, output faults
that must not crash or lose answers, and temp files of killed writers that must not pile up.

Every run here is the real CLI in a subprocess; calls go to a Python function that appends a
line to ``calls.log`` per call, so "nothing was sent" is counted, not assumed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import clean_env
from throttlepool._inputs import MAX_DEPTH
from throttlepool._jsontext import nests_deeper_than, parse_json
from throttlepool.cli.output import ResultWriter, row
from throttlepool.errors import OutputError
from throttlepool.outcome import Outcome, Status

FUNCTIONS = '''
import os, time
HERE = os.path.dirname(os.path.abspath(__file__))

def _count():
    with open(os.path.join(HERE, "calls.log"), "a") as fh:
        fh.write("call\\n")

def ask(item):
    _count()
    return {"echo": item}

def lone(item):
    _count()
    return "half \\ud800 of a pair: " + str(item)

def big(item):
    _count()
    return str(item) * 2000

def gate(item):
    _count()
    while not os.path.exists(os.path.join(HERE, "release")):
        time.sleep(0.02)
    return item
'''


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "calls_fn.py").write_text(FUNCTIONS, encoding="utf-8")
    return tmp_path


def calls(work: Path) -> int:
    log = work / "calls.log"
    return len(log.read_text().splitlines()) if log.exists() else 0




def cli(work: Path, *args: str, fn: str = "ask", stdin: bytes | None = None
        ) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "throttlepool", "run", *args,
               "--provider", f"python:calls_fn:{fn}", "-q"]
    r = subprocess.run(command, cwd=work, env=clean_env(), input=stdin, capture_output=True,
                       timeout=120)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(),
                                       r.stderr.decode("utf-8", "backslashreplace"))


def refused(r: subprocess.CompletedProcess[str], work: Path, *parts: str) -> None:
    """Exit 2, one ``throttlepool: bad input: FILE:LINE: ...`` line, no call, no output."""
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("throttlepool: bad input: "), r.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert r.stdout == ""
    assert calls(work) == 0


def jsonl(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


# -- inputs ----------------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"


def test_byte_order_mark_is_not_part_of_the_input(work: Path) -> None:
    body = b'{"prompt": "a"}\n{"prompt": "b"}\n'
    # stdin is sniffed: the mark must not turn JSONL into text prompts
    r = cli(work, "-", "--no-db", stdin=BOM + body)
    assert r.returncode == 0, r.stderr
    assert [x["prompt"] for x in jsonl(r.stdout)] == ["a", "b"]
    # each format, from a file and from stdin, and files joined with cat
    (work / "in.jsonl").write_bytes(BOM + body + BOM + b'{"prompt": "c"}\n')
    (work / "in.csv").write_bytes(BOM + b"prompt,id\na,1\nb,2\n")
    (work / "in.txt").write_bytes(BOM + b"a\nb\n")
    expected = {"jsonl": ["a", "b", "c"], "csv": ["a", "b"], "text": ["a", "b"]}
    column = {"jsonl": "prompt", "csv": "prompt", "text": "input"}
    for fmt, name in (("jsonl", "in.jsonl"), ("csv", "in.csv"), ("text", "in.txt")):
        for source, data in ((name, None), ("-", (work / name).read_bytes())):
            r = cli(work, source, "--no-db", "--input-format", fmt, stdin=data)
            assert r.returncode == 0, (fmt, source, r.stderr)
            assert [x[column[fmt]] for x in jsonl(r.stdout)] == expected[fmt], (fmt, source)


def deep(levels: int) -> str:
    return '{"messages": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def test_deeply_nested_record_is_a_bad_record_not_a_traceback(work: Path) -> None:
    lines = ['{"prompt": "ok"}', deep(100_000), '{"prompt": "ok too"}']
    (work / "in.jsonl").write_text("\n".join(lines) + "\n")
    r = cli(work, "in.jsonl", "--no-db")
    refused(r, work, "in.jsonl:2:", f"nests deeper than {MAX_DEPTH} levels")
    r = cli(work, "in.jsonl", "--no-db", "--dry-run")
    refused(r, work, "in.jsonl:2:", "nests deeper")

    r = cli(work, "in.jsonl", "--no-db", "--skip-bad-records")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    rows = jsonl(r.stdout)
    assert [x["status"] for x in rows] == ["ok", "failed", "ok"]
    assert "in.jsonl:2: the record nests deeper" in str(rows[1]["error"])
    assert calls(work) == 2
    # at the limit a record still goes through whole
    (work / "edge.jsonl").write_text(deep(MAX_DEPTH) + "\n")
    r = cli(work, "edge.jsonl", "--no-db")
    want = json.loads(deep(MAX_DEPTH))["messages"]
    assert r.returncode == 0 and jsonl(r.stdout)[0]["messages"] == want


@pytest.mark.parametrize(("body", "token", "field"), [
    ('{"model": "m", "temperature": NaN}', "NaN", "temperature"),
    ('{"model": "m", "messages": [{"role": "user", "weight": -Infinity}]}', "-Infinity",
     "messages[0].weight"),
    ('{"model": "m", "top_p": 1e999}', "1e999", "top_p"),
])
def test_nan_and_infinity_are_refused_before_any_call(work: Path, body: str, token: str,
                                                      field: str) -> None:
    (work / "in.jsonl").write_text('{"model": "m", "temperature": 0.5}\n' + body + "\n")
    for extra in ((), ("--dry-run",)):
        r = cli(work, "in.jsonl", "--no-db", *extra)
        refused(r, work, "in.jsonl:2:", token, f"field {field!r}")


def test_lone_surrogate_escape_in_input_is_refused(work: Path) -> None:
    (work / "in.jsonl").write_text('{"prompt": "\\ud83d\\ude00 paired is fine"}\n'
                                   '{"messages": [{"content": "x \\ud800 y"}]}\n')
    r = cli(work, "in.jsonl", "--db", "c.db")
    refused(r, work, "in.jsonl:2:", "\\ud800", "field 'messages[0].content'")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "text"])
def test_invalid_utf8_names_line_and_byte(work: Path, fmt: str) -> None:
    good = {"jsonl": b'{"prompt": "a"}\n', "csv": b"prompt\na\n", "text": b"a\n"}[fmt]
    data = good + b"x" * 9000 + b"\n" + b"b\n" + b"caf\xe9\n"  # Latin-1, past a read chunk
    (work / "in.dat").write_bytes(data)
    bad = data.index(b"\xe9")
    byte = f"byte {bad:,}"
    r = cli(work, "in.dat", "--no-db", "--input-format", fmt)
    refused(r, work, "in.dat:", "not valid UTF-8", byte)
    line = data[:bad].count(b"\n") + 1
    assert f"in.dat:{line}:" in r.stderr
    r = cli(work, "-", "--no-db", "--input-format", fmt, stdin=data)
    refused(r, work, f"<stdin>:{line}:", byte)


def test_utf16_input_is_named(work: Path) -> None:
    (work / "in.txt").write_bytes("hello\n".encode("utf-16"))
    refused(cli(work, "in.txt", "--no-db"), work, "in.txt:1:", "UTF-16")


def test_oversized_record_is_refused_unless_the_limit_is_raised(work: Path) -> None:
    huge = json.dumps({"prompt": "x" * 1_200_000})
    (work / "in.jsonl").write_text('{"prompt": "small"}\n' + huge + "\n")
    refused(cli(work, "in.jsonl", "--no-db"), work, "in.jsonl:2:", "1,200,014 bytes",
            "--max-record-size")
    (work / "in.txt").write_text("small\n" + "y" * 1_100_000 + "\n")
    refused(cli(work, "in.txt", "--no-db"), work, "in.txt:2:", "1,100,000 bytes")
    r = cli(work, "in.jsonl", "--no-db", "--max-record-size", "2000000")
    assert r.returncode == 0 and calls(work) == 2, r.stderr


def test_csv_cell_above_128k_under_the_limit_is_accepted(work: Path) -> None:
    # The csv module's own cell limit (131072) must not refuse what the record limit allows.
    (work / "in.csv").write_text("prompt\nsmall\n" + "z" * 300_000 + "\n")
    r = cli(work, "in.csv", "--no-db")
    assert r.returncode == 0, r.stderr
    assert [len(str(x["prompt"])) for x in jsonl(r.stdout)] == [5, 300_000]


# -- output ----------------------------------------------------------------------------------

def test_unpaired_surrogate_in_an_answer_is_written_and_round_trips(work: Path) -> None:
    (work / "in.txt").write_text("a\nb\n")
    expected = ["half \ud800 of a pair: a", "half \ud800 of a pair: b"]
    r = cli(work, "in.txt", "--no-db", "-o", "out.jsonl", fn="lone")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert [x["output"] for x in jsonl((work / "out.jsonl").read_text())] == expected
    r = cli(work, "in.txt", "--no-db", fn="lone")  # stdout
    assert r.returncode == 0, r.stderr
    assert [x["output"] for x in jsonl(r.stdout)] == expected
    r = cli(work, "in.txt", "--no-db", "-o", "out.csv", fn="lone")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "half \\ud800 of a pair: a" in (work / "out.csv").read_text(encoding="utf-8")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_full_disk_on_output_is_an_output_error_and_answers_are_kept(
        work: Path, tiny_disk: Path) -> None:
    (work / "in.txt").write_text("".join(f"item{i}\n" for i in range(60)))
    r = cli(work, "in.txt", "--db", "c.db", "--run-name", "in.txt", "-o", "disk/out.jsonl",
            fn="big")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("throttlepool: output: "))
    for part in ("disk/out.jsonl", "No space left on device", "kept in the checkpoint",
                 "throttlepool export"):
        assert part in line, (part, line)
    leftovers = [p.name for p in tiny_disk.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    if (tiny_disk / "out.jsonl").exists():  # rows kept must be whole rows
        kept = jsonl((tiny_disk / "out.jsonl").read_text())
        assert [x["index"] for x in kept] == list(range(len(kept)))
    export = subprocess.run([sys.executable, "-m", "throttlepool", "export", "in.txt",
                             "--db", "c.db"], cwd=work, env=clean_env(), capture_output=True,
                            text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    assert sum(x["status"] == "ok" for x in jsonl(export.stdout)) >= 1


def test_close_partial_keeps_whole_rows_on_a_full_disk(tiny_disk: Path) -> None:
    target = tiny_disk / "out.jsonl"
    target.write_text("previous results\n")
    writer = ResultWriter(str(target), run_name="r", db="c.db")
    writer.open()
    written = 0
    with pytest.raises(OutputError) as err:
        for i in range(1000):
            writer.write(row(Outcome(i, f"item{i}", Status.OK, value="v" * 3000)))
            written += 1
    assert "No space left on device" in str(err.value)
    assert "throttlepool export r --db c.db" in str(err.value)
    assert writer.close_partial() == written > 0
    kept = jsonl(target.read_text())
    assert [x["index"] for x in kept] == list(range(written))
    assert [p.name for p in tiny_disk.iterdir()] == ["out.jsonl"]


def test_export_to_a_full_disk_is_an_output_error(work: Path, tiny_disk: Path) -> None:
    (work / "in.txt").write_text("".join(f"item{i}\n" for i in range(60)))
    r = cli(work, "in.txt", "--db", "c.db", "--run-name", "in.txt", "-o", "all.jsonl", fn="big")
    assert r.returncode == 0, r.stderr
    export = subprocess.run([sys.executable, "-m", "throttlepool", "export", "in.txt",
                             "--db", "c.db", "-o", "disk/out.jsonl"], cwd=work, env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert export.returncode == 2, export.stderr
    assert export.stderr.startswith("throttlepool: output: cannot write --output "
                                    "disk/out.jsonl: No space left on device"), export.stderr
    assert list(tiny_disk.iterdir()) == []


# -- leftovers -------------------------------------------------------------------------------

def temps(work: Path) -> list[str]:
    return sorted(p.name for p in work.iterdir() if p.name.endswith(".tmp"))


def wait_for(predicate: object, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_temp_file_of_a_killed_writer_is_removed_by_the_next_one(work: Path) -> None:
    (work / "in.txt").write_text("a\nb\nc\n")
    command = [sys.executable, "-m", "throttlepool", "run", "in.txt", "--no-db", "-q",
               "--provider", "python:calls_fn:gate", "-o", "out.jsonl"]
    live = subprocess.Popen(command, cwd=work, env=clean_env())
    doomed = subprocess.Popen(command, cwd=work, env=clean_env())
    try:
        wait_for(lambda: len(temps(work)) == 2, "both writers' temp files")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
        before = temps(work)
        r = cli(work, "in.txt", "--no-db", "-o", "out.jsonl")
        assert r.returncode == 0, r.stderr
        assert [x["input"] for x in jsonl((work / "out.jsonl").read_text())] == ["a", "b", "c"]
        assert live.poll() is None, "the gated writer must still be running"
        after = temps(work)
        assert len(after) == 1 and set(after) < set(before), (before, after)
        assert f"-{live.pid}." in after[0]  # the live writer's file is the one kept
        (work / "release").touch()
        assert live.wait(timeout=60) == 0
    finally:
        for proc in (live, doomed):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert temps(work) == []
    assert len(jsonl((work / "out.jsonl").read_text())) == 3


def test_export_removes_the_temp_file_of_a_dead_writer(work: Path) -> None:
    (work / "in.txt").write_text("a\n")
    assert cli(work, "in.txt", "--db", "c.db", "--run-name", "in.txt").returncode == 0
    # a real process that creates its temp file and dies without cleaning up
    died = subprocess.run([sys.executable, "-c", "import os; from throttlepool.cli.output "
                           "import create_temp; create_temp('out.jsonl'); os._exit(9)"],
                          cwd=work, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert died.returncode == 9, died.stderr
    assert len(temps(work)) == 1
    export = subprocess.run([sys.executable, "-m", "throttlepool", "export", "in.txt",
                             "--db", "c.db", "-o", "out.jsonl"], cwd=work, env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    assert temps(work) == [] and len(jsonl((work / "out.jsonl").read_text())) == 1


# -- the JSON reader's helpers ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=30)


def nesting(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((nesting(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_depth_is_exact_and_finite_values_parse_unchanged(value: object) -> None:
    text = json.dumps(value)
    depth = nesting(value)
    for limit in range(depth + 2):
        assert nests_deeper_than(text, limit) == (depth > limit), (limit, depth)
    parsed, problem, path = parse_json(text)
    assert (parsed, problem, path) == (value, None, "")
