"""Secrets in errors and settings never reach the database (scan the raw bytes of the file
and its WAL); successful values, the user's data, are stored verbatim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from throttlepool.outcome import Outcome, RunStats, Status
from throttlepool.store import SQLiteCache, SQLiteStore, item_key, redact_obj, redact_text

OPENAI = "sk-proj-PLANTEDopenai0123456789abcdefXYZ"
ANTHROPIC = "sk-ant-api03-PLANTEDanthropic0123456789"
GOOGLE = "AIzaSyPLANTEDgoogle0123456789abcdefghij"
BEARER = "PLANTEDbearerTOKEN0123456789"
QUERY = "PLANTEDqueryKEY42"
HEADER = "PLANTEDheaderVALUE77"
PLANTED = [OPENAI, ANTHROPIC, GOOGLE, BEARER, QUERY, HEADER]


@pytest.mark.parametrize(("text", "secret"), [
    (f"invalid key {OPENAI} provided", OPENAI),
    (f"Error code: 401 - {{'error': 'bad key {ANTHROPIC}'}}", ANTHROPIC),
    (f"GET https://generativelanguage.googleapis.com/v1/models?key={QUERY}&alt=sse", QUERY),
    (f"Authorization: Bearer {BEARER}", BEARER),
    (f"headers={{'x-goog-api-key': '{HEADER}'}}", HEADER),
    (f"api-key: {HEADER}", HEADER),
    (f'{{"authorization": "Basic {HEADER}"}}', HEADER),
    (f"key {GOOGLE} rejected", GOOGLE),
])
def test_redact_text(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out and "[REDACTED]" in out


def test_redact_leaves_ordinary_text_alone() -> None:
    for text in ("max_tokens: 7", "input_tokens=5", "the key point", "monkey=3", "ok"):
        assert redact_text(text) == text


def test_redact_obj_masks_secret_named_fields() -> None:
    assert redact_obj({"api_key": "abc", "nested": {"Authorization": "x"}, "model": "m"}) == {
        "api_key": "[REDACTED]", "nested": {"Authorization": "[REDACTED]"}, "model": "m"}


def test_planted_secrets_absent_from_every_byte(tmp_path: Path) -> None:
    # Secret-looking text in a successful value is the user's data (issue 12, item 1): it is
    # stored and given back as it is, while the same kind of text in errors and settings is
    # masked. The value uses its own strings so the byte scan below stays meaningful.
    user_value = {"echo": "your key is sk-proj-USERVALUEabc123def456", "api_key": "mine",
                  "headers": {"Authorization": "Bearer USERVALUEtoken0123"}}
    user_cached = {"note": "Bearer USERVALUEcached0123", "url": "?key=USERVALUEquery"}
    db = tmp_path / "runs.db"
    ident = {"model": "m"}
    settings = {
        "batch_size": 8, "api_key": OPENAI,
        "adapter": {"name": "openai", "headers": {"x-goog-api-key": HEADER}},
        "base_url": f"https://api.example.com/v1?key={QUERY}",
    }
    errors = [
        PermissionError(f"Incorrect API key provided: {OPENAI}"),
        RuntimeError(f"request failed: Authorization: Bearer {BEARER}"),
        ValueError(f"403 for url https://x.googleapis.com/v1beta?key={QUERY}"),
        ConnectionError(f"{{'api-key': '{HEADER}', 'anthropic': '{ANTHROPIC}'}}"),
        KeyError(GOOGLE),
    ]
    with SQLiteStore(db) as s:
        rid = s.begin_run("secret-run", settings)
        for i, exc in enumerate(errors):
            s.record(rid, Outcome(i, "x", Status.FAILED, error=exc, attempts=1,
                                  key=item_key(ident, i)))
        s.record(rid, Outcome(10, "x", Status.OK, key=item_key(ident, 10), value=user_value))
        cache = SQLiteCache(s, ttl=None)
        cache.put("c", user_cached)
        s.finish_run(rid, RunStats(done=1, failed=5), "completed")
        s.flush()
        # Scan while the store is open so the WAL still holds the fresh pages.
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
        assert Path(str(db) + "-wal").exists()
        for secret in PLANTED:
            assert secret.encode() not in raw, secret
        assert b"[REDACTED]" in raw
        # The rows stay useful: the error type and the rest of the message survive.
        msgs = {r["error_type"]: r["error_message"] for r in s.query(
            "SELECT error_type, error_message FROM items WHERE error_type IS NOT NULL")}
        assert msgs["PermissionError"] == "Incorrect API key provided: [REDACTED]"
        stored = s.query("SELECT value FROM items WHERE idx = 10")[0]["value"]
        assert json.loads(stored) == user_value
    with SQLiteStore(db) as s:
        assert SQLiteCache(s, ttl=None).get("c") == (True, user_cached)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for secret in PLANTED:
        assert secret.encode() not in raw, secret
