"""Issue 12, items 1 and 7: values come back verbatim; URL credentials are never printed or stored.

Redaction is for what we say about errors and settings; a successful value is the user's
data. Real SQLite files, real CLI subprocesses, a real unreachable Redis port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from throttlepool.errors import ConfigError, LimiterUnavailable
from throttlepool.limiter import limiter_from_url
from throttlepool.outcome import Source, Status
from throttlepool.runner import ThreadedBatchRunner
from throttlepool.store import SQLiteCache, SQLiteStore, iter_outcomes
from throttlepool.store.codec import encode_value
from throttlepool.store.redact import mask_url, redact_obj, redact_text
from throttlepool.store.report import export_text

# The value from the issue: looks like a key and key/sig query parameters, but is an answer.
ANSWER = "sk-proj-abc123def456ghi789jkl key=value&sig=abc"
REDIS_PASSWORD = "hunter2pass"
LIMITER_URL = f"redis://:{REDIS_PASSWORD}@127.0.0.1:1"
BASE_PASSWORD = "pwBASE9secret"
BASE_KEY = "abcKEY77query"
BASE_URL = f"http://u:{BASE_PASSWORD}@127.0.0.1:9/v1?key={BASE_KEY}"
URL_SECRETS = (REDIS_PASSWORD, BASE_PASSWORD, BASE_KEY)


CALLS: list[str] = []


def answer(item: str) -> dict[str, Any]:
    """A successful value full of secret-looking text, including secret-named fields."""
    CALLS.append(item)
    return {"text": f"{item}: {ANSWER}", "api_key": "user-data-not-a-key",
            "headers": {"Authorization": "Bearer abcdefgh12345678"},
            "link": "https://bob:hunter3@example.com/x?sig=zz"}


class Failing(Exception):
    status_code = 400  # permanent: recorded as failed at once


def fail_with_secrets(item: str) -> str:
    raise Failing(f"rejected {item}: key sk-proj-ERRORKEY0123456789 at {LIMITER_URL} "
                  f"via {BASE_URL}")


def raw_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.is_file())


# -- item 1: fresh == resumed == export, through the library ------------------------------


def test_resumed_and_exported_values_equal_fresh_values(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    items = [f"q{i}" for i in range(20)]
    with ThreadedBatchRunner(answer, batch_size=4, retries=0, store=str(db),
                             run_name="verbatim") as fresh_runner:
        fresh = fresh_runner.run(items)
    assert [o.status for o in fresh.outcomes] == [Status.OK] * 20
    expected = [answer(i) for i in items]
    assert [o.value for o in fresh.outcomes] == expected

    CALLS.clear()
    with ThreadedBatchRunner(answer, batch_size=4, retries=0, store=str(db),
                             run_name="verbatim") as resumed_runner:
        resumed = resumed_runner.run(items)
    assert CALLS == []
    assert [o.source for o in resumed.outcomes] == [Source.CHECKPOINT] * 20
    assert [o.value for o in resumed.outcomes] == expected

    assert [row["value"] for row in iter_outcomes(str(db), "verbatim")] == expected
    exported = [json.loads(line)["output"]
                for line in export_text(str(db), "verbatim").splitlines()]
    assert exported == expected


def test_response_cache_returns_values_verbatim_from_disk(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    with SQLiteStore(db) as store:
        SQLiteCache(store).put("k", answer("c"))
    with SQLiteStore(db) as store:
        cache = SQLiteCache(store)  # a new process's view: memory empty, read from the file
        assert cache.get("k") == (True, answer("c"))


def test_error_messages_and_settings_stay_redacted_next_to_verbatim_values(
        tmp_path: Path) -> None:
    db = tmp_path / "runs.db"

    def mixed(item: str) -> Any:
        return fail_with_secrets(item) if item == "bad" else answer(item)

    with ThreadedBatchRunner(mixed, batch_size=2, retries=0, store=str(db),
                             run_name="mixed") as runner:
        result = runner.run(["good", "bad"])
    assert [o.status for o in result.outcomes] == [Status.OK, Status.FAILED]
    with SQLiteStore(db) as store:
        store.begin_run("settings", {"limiter_url": LIMITER_URL, "base_url": BASE_URL,
                                     "nested": {"urls": [LIMITER_URL]}})
        store.flush()
        rows = store.query("SELECT status, value, error_message FROM items ORDER BY idx")
        settings_text = store.query("SELECT settings FROM runs WHERE name = 'settings'")[0]
        raw = raw_bytes(tmp_path)
    assert json.loads(rows[0]["value"]) == answer("good")
    message = rows[1]["error_message"]
    assert "sk-proj-ERRORKEY0123456789" not in message
    assert "rejected bad: key [REDACTED]" in message
    assert "redis://:[REDACTED]@127.0.0.1:1" in message
    for secret in (*URL_SECRETS, "sk-proj-ERRORKEY0123456789"):
        assert secret not in settings_text["settings"], secret
        assert secret.encode() not in raw, secret
    assert json.loads(settings_text["settings"])["limiter_url"] == "redis://:[REDACTED]@127.0.0.1:1"


# -- item 1 through the CLI -----------------------------------------------------------------


def run_cli(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THROTTLEPOOL_")
           and k not in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")}
    env["THROTTLEPOOL_NO_TIKTOKEN"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), *sys.path])
    return subprocess.run([sys.executable, "-m", "throttlepool", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_fresh_resumed_and_export_show_the_same_value(tmp_path: Path) -> None:
    (tmp_path / "answers.py").write_text(
        f"def answer(prompt):\n    return f'{{prompt}}: {ANSWER}'\n", encoding="utf-8")
    (tmp_path / "in.txt").write_text("a\nb\nc\n", encoding="utf-8")
    base = ["run", "in.txt", "-p", "python:answers:answer", "--db", "t.db",
            "--run-name", "r1", "--no-progress"]
    fresh = run_cli([*base, "-o", "fresh.jsonl"], tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    resumed = run_cli([*base, "-o", "resumed.jsonl"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "3 from the checkpoint" in resumed.stderr
    exported = run_cli(["export", "r1", "--db", "t.db"], tmp_path)
    assert exported.returncode == 0, exported.stderr

    def outputs(name: str) -> list[Any]:
        lines = (tmp_path / name).read_text(encoding="utf-8").splitlines()
        return [json.loads(line)["output"] for line in lines]

    want = [f"{p}: {ANSWER}" for p in "abc"]
    assert outputs("fresh.jsonl") == want
    assert outputs("resumed.jsonl") == want
    assert [json.loads(line)["output"] for line in exported.stdout.splitlines()] == want


# -- item 7: URL credentials --------------------------------------------------------------


def test_limiter_unavailable_names_the_url_without_its_password() -> None:
    limiter = limiter_from_url(LIMITER_URL, ["10/second"], name="masked")  # nothing listens
    with pytest.raises(LimiterUnavailable) as err:
        limiter.acquire()
    text = str(err.value)
    assert "redis://:[REDACTED]@127.0.0.1:1" in text
    assert REDIS_PASSWORD not in text
    assert REDIS_PASSWORD not in repr(limiter.backend)


def test_unknown_limiter_url_error_masks_the_password() -> None:
    with pytest.raises(ConfigError) as err:
        limiter_from_url(f"ftp://me:{REDIS_PASSWORD}@host/x", ["1/second"])
    assert REDIS_PASSWORD not in str(err.value)
    assert "ftp://me:[REDACTED]@host/x" in str(err.value)


def test_cli_limiter_unavailable_prints_no_password(tmp_path: Path) -> None:
    (tmp_path / "answers.py").write_text("def answer(p):\n    return p\n", encoding="utf-8")
    (tmp_path / "in.txt").write_text("a\nb\n", encoding="utf-8")
    r = run_cli(["run", "in.txt", "-p", "python:answers:answer", "--rpm", "60", "-v",
                 "--limiter-url", LIMITER_URL, "--db", "t.db"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "rate limiter at redis://:[REDACTED]@127.0.0.1:1 is unreachable" in r.stderr, r.stderr
    assert REDIS_PASSWORD not in r.stdout + r.stderr
    with SQLiteStore(tmp_path / "t.db") as store:
        stored = json.dumps(store.query("SELECT * FROM runs"))
    assert REDIS_PASSWORD not in stored
    assert REDIS_PASSWORD.encode() not in raw_bytes(tmp_path)


@pytest.mark.parametrize("provider", ["http", "openai"])
def test_verbose_dry_run_shows_no_url_credentials(tmp_path: Path, provider: str) -> None:
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    env_key = ["--model", "m"] if provider == "openai" else []
    args = ["run", "in.txt", "--dry-run", "-v", "-p", provider, *env_key,
            "--limiter-url", LIMITER_URL, "--base-url", BASE_URL]
    env = {k: v for k, v in os.environ.items() if not k.startswith("THROTTLEPOOL_")}
    env["OPENAI_API_KEY"] = "sk-test-0123456789abcdefDRYRUN"
    env["THROTTLEPOOL_NO_TIKTOKEN"] = "1"
    r = subprocess.run([sys.executable, "-m", "throttlepool", *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "limiter_url = 'redis://:[REDACTED]@127.0.0.1:1'" in out
    assert "base_url = 'http://u:[REDACTED]@127.0.0.1:9/v1?key=[REDACTED]'" in out
    for secret in (*URL_SECRETS, "sk-test-0123456789abcdefDRYRUN"):
        assert secret not in out, secret


MASKED_URLS = [
    ("redis://:hunter2pass@host:6379/0", "redis://:[REDACTED]@host:6379/0"),
    ("rediss://default:hunter2pass@host:6380", "rediss://default:[REDACTED]@host:6380"),
    ("redis://:p@ss@host:1/0", "redis://:[REDACTED]@host:1/0"),
    ("https://u:pw@h/v1?key=abc&alt=sse", "https://u:[REDACTED]@h/v1?key=[REDACTED]&alt=sse"),
    ("https://h/v1?api_key=abc", "https://h/v1?api_key=[REDACTED]"),
    # nothing secret: left exactly as it is
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
    ("http://host:8080/path@x", "http://host:8080/path@x"),
]


def test_mask_url_masks_passwords_and_keys_and_nothing_else() -> None:
    for url, masked in MASKED_URLS:
        assert mask_url(url) == masked, url
        assert redact_text(f"at {url} now") == f"at {masked} now", url
        assert redact_obj({"limiter_url": url}) == {"limiter_url": masked}, url


# -- properties ---------------------------------------------------------------------------

_password = st.text(st.characters(codec="ascii", categories=["L", "N"],
                                  include_characters="!$%&*+-.=_~@"),
                    min_size=4, max_size=20).filter(lambda p: not p.startswith("@"))


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(["redis", "rediss", "http", "https", "amqp"]),
       user=st.sampled_from(["", "u", "default"]), password=_password,
       host=st.sampled_from(["127.0.0.1:1", "cache.example.com", "[::1]:6379"]))
def test_no_url_password_survives_masking(scheme: str, user: str, password: str,
                                          host: str) -> None:
    url = f"{scheme}://{user}:{password}@{host}/0"
    for text in (mask_url(url), redact_text(f"error at {url} now"),
                 json.dumps(redact_obj({"url": url}))):
        assert f":{password}@" not in text
        assert f":[REDACTED]@{host}" in text

_secretish = st.sampled_from([ANSWER, "Bearer abcdefgh12345678", "?key=abc&sig=def",
                              "AIzaSyA0123456789abcdefghijklmnop", LIMITER_URL,
                              "password: hunter2", "ghp_0123456789abcdefghijABCD"])
_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                         _secretish)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8),
                                  st.sampled_from(["api_key", "token", "Authorization"])),
                        inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_stored_values_round_trip_exactly(value: Any) -> None:
    assert json.loads(encode_value(value)) == value


def test_interrupted_run_resume_hint_masks_url_credentials(tmp_path: Path) -> None:
    """The hint repeats the command line, which is where --base-url credentials were given."""
    (tmp_path / "slow.py").write_text(
        "import pathlib, time\n"
        "def answer(p):\n"
        "    pathlib.Path('started').touch()\n"
        "    time.sleep(0.3)\n"
        "    return p\n", encoding="utf-8")
    (tmp_path / "in.txt").write_text("".join(f"{i}\n" for i in range(40)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("THROTTLEPOOL_")}
    env["THROTTLEPOOL_NO_TIKTOKEN"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    args = ["run", "in.txt", "-p", "python:slow:answer", "-b", "2", "--db", "t.db",
            "--base-url", BASE_URL, "--no-progress", "-o", "out.jsonl"]
    proc = subprocess.Popen([sys.executable, "-m", "throttlepool", *args], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "to resume, run the same command again: throttlepool run in.txt" in err
    assert "'http://u:[REDACTED]@127.0.0.1:9/v1?key=[REDACTED]'" in err
    for secret in URL_SECRETS:
        assert secret not in out + err, secret
