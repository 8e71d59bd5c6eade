"""Secret redaction: nothing that looks like an API key or credential reaches the database."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

# Header / field names whose value is always a credential, whatever it looks like.
_SECRET_NAMES = (
    r"authorization|proxy-authorization|x-goog-api-key|x-api-key|api[-_]?key|apikey"
    r"|access[-_]?token|refresh[-_]?token|client[-_]?secret|secret[-_]?key|secret|password"
    r"|passwd|token|auth[-_]?token|session[-_]?token"
)
_SECRET_KEY_RE = re.compile(rf"^(?:{_SECRET_NAMES})$", re.IGNORECASE)

_VALUE_CHARS = r"[^\s\"'&,;}\]#]+"

_TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Authorization: Bearer x", '"x-goog-api-key": "x"', "api-key=x" -- keep the name.
    (
        re.compile(
            rf"(\b(?:{_SECRET_NAMES})[\"']?\s*[:=]\s*[\"']?)"
            rf"(?:(?:Bearer|Basic|Token)\s+)?{_VALUE_CHARS}",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
    # query parameters: ?key=...&...
    (
        re.compile(rf"((?:[?&;]|(?<![\w-]))(?:key|sig|signature)=){_VALUE_CHARS}", re.IGNORECASE),
        r"\1" + REDACTED,
    ),
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE), r"\1 " + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"), REDACTED),  # OpenAI, Anthropic (sk-ant-...)
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), REDACTED),  # Google API keys
    (re.compile(r"\b(?:ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}"), REDACTED),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"), REDACTED),  # Slack
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),  # AWS access key id
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), REDACTED),  # Hugging Face
)

# One cheap scan decides whether the (slower) substitutions are needed at all: most values
# written by a run contain nothing secret and should cost a single regex search.
_ANY_RE = re.compile(
    rf"\b(?:{_SECRET_NAMES})[\"']?\s*[:=]|(?<![\w-])(?:key|sig|signature)=|Bearer\s|Basic\s|sk-|AIza"
    r"|ghp_|gho_|ghs_|github_pat_|xox[abprs]-|AKIA|hf_",
    re.IGNORECASE,
)


def might_contain_secret(text: str) -> bool:
    """Cheap pre-check: False means :func:`redact_text` would return ``text`` unchanged."""
    return _ANY_RE.search(text) is not None


def redact_text(text: str) -> str:
    """``text`` with API keys, bearer tokens, key query parameters and auth headers masked."""
    if not _ANY_RE.search(text):
        return text
    for pattern, repl in _TEXT_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact_obj(value: Any) -> Any:
    """A copy of a JSON-like structure with secret-named fields and secret-looking text masked."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, str) and _SECRET_KEY_RE.match(k) and v not in (None, ""):
                out[k] = REDACTED
            else:
                out[redact_text(k) if isinstance(k, str) else k] = redact_obj(v)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_obj(v) for v in value]
    return value
