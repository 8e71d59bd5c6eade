"""Input readers: formats, templates, limits, and bad records named by file, line and field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from throttlepool._inputs import BadRecord, InputSpec, Records, Template, detect_format
from throttlepool.errors import ConfigError, InputError


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def records(path: str, **kw: object) -> list[object]:
    skip = bool(kw.pop("skip_bad", False))
    with Records(InputSpec(path, **kw), skip_bad=skip) as r:  # type: ignore[arg-type]
        n = r.validate()
        items = list(r)
        assert len(items) == n == len(r)
        return items


def test_detect_format() -> None:
    assert detect_format("a.jsonl") == "jsonl"
    assert detect_format("a.NDJSON") == "jsonl"
    assert detect_format("a.csv") == "csv"
    assert detect_format("a.txt") == "text"
    assert detect_format("a") == "text"
    assert detect_format("a.txt", "csv") == "csv"
    with pytest.raises(ConfigError, match="unknown input format"):
        detect_format("a", "xml")


def test_jsonl_prompts_fields_and_bodies(tmp_path: Path) -> None:
    lines = ['"plain"', '{"prompt": "p1", "id": 7}', "", '{"messages": [], "model": "m"}']
    path = write(tmp_path / "in.jsonl", "\n".join(lines) + "\n")
    assert records(path) == ["plain", "p1", {"messages": [], "model": "m"}]
    assert records(path, field="nope") == ["plain", {"prompt": "p1", "id": 7},
                                           {"messages": [], "model": "m"}]


def test_jsonl_field_must_be_string(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"prompt": "ok"}\n{"prompt": 3}\n')
    with pytest.raises(InputError) as err:
        records(path)
    assert (err.value.source, err.value.line, err.value.field) == (path, 2, "prompt")


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"prompt": "a"}\n\n{"prompt": "b"\n')
    with pytest.raises(InputError, match=r"in\.jsonl:3: malformed JSON") as err:
        records(path)
    assert err.value.line == 3


def test_skip_bad_records_keeps_positions(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '"a"\n{oops\n"c"\n[1]\n')
    items = records(path, skip_bad=True)
    assert items[0] == "a" and items[2] == "c"
    assert isinstance(items[1], BadRecord) and items[1].line == 2
    assert isinstance(items[3], BadRecord) and "JSON object or string" in items[3].message
    error = items[1].error()
    assert isinstance(error, InputError) and str(error) == items[1].message


def test_template_over_jsonl_and_missing_placeholder(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl",
                 json.dumps({"title": "T1", "year": 1999}) + "\n" + json.dumps({"year": 1}) + "\n")
    with pytest.raises(InputError) as err:
        records(path, template="{title} ({year})")
    assert (err.value.line, err.value.field) == (2, "title")
    assert "in.jsonl:2" in str(err.value)
    assert records(path, template="{title} ({year})", limit=1) == ["T1 (1999)"]


def test_template_validation() -> None:
    assert Template("{a} and {b.c} and {a}").fields == ("a", "b")
    for bad in ("{}", "{0}", "{unclosed"):
        with pytest.raises(ConfigError):
            Template(bad)


def test_csv_column_template_and_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", 'title,body\nA,"x, y"\nB,z\n')
    assert records(path, column="body") == ["x, y", "z"]
    assert records(path, template="{title}: {body}") == ["A: x, y", "B: z"]
    with pytest.raises(InputError) as err:
        records(path)  # no 'prompt' column and more than one column
    assert (err.value.line, err.value.field) == (1, "prompt")
    with pytest.raises(InputError, match="no column for template placeholder") as err:
        records(path, template="{nope}")
    assert err.value.field == "nope"


def test_csv_single_column_and_ragged_row(tmp_path: Path) -> None:
    assert records(write(tmp_path / "one.csv", "q\nhello\nworld\n")) == ["hello", "world"]
    ragged = write(tmp_path / "ragged.csv", "prompt\nok\nx,y\n")
    with pytest.raises(InputError, match=r"ragged\.csv:3"):
        records(ragged)


def test_text_lines_and_limit(tmp_path: Path) -> None:
    path = write(tmp_path / "in.txt", "one\n\n two \r\nthree\n")
    assert records(path) == ["one", " two ", "three"]
    assert records(path, limit=2) == ["one", " two "]
    assert records(path, template="Q: {text}") == ["Q: one", "Q:  two ", "Q: three"]


def test_stdin_is_spooled_and_sniffed() -> None:
    data = io.BytesIO(b'{"prompt": "a"}\n{"prompt": "b"}\n')
    with Records(InputSpec("-"), stdin=data) as r:
        assert r.format == "jsonl" and r.name == "<stdin>"
        assert r.validate() == 2
        assert list(r) == ["a", "b"] and list(r) == ["a", "b"]  # iterable twice
        spool = r._spool
    assert spool is not None and not Path(spool).exists()
    with Records(InputSpec("-"), stdin=io.BytesIO(b"x\ny\n")) as r:
        assert r.format == "text" and list(r) == ["x", "y"]


def test_unreadable_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read input"):
        records(str(tmp_path / "missing.jsonl"))
    path = tmp_path / "bin.txt"
    path.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(InputError, match="not valid UTF-8"):
        records(str(path))
