"""Secret redaction for what we say about errors, requests and settings.

Error messages, headers, URLs and settings pass through here before they are printed, logged
or stored. A successful value never does: it is the user's data and is kept verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[REDACTED]"

# Header / field names whose value is always a credential, whatever it looks like.
_SECRET_NAMES = (
    r"authorization|proxy-authorization|x-goog-api-key|x-api-key|api[-_]?key|apikey"
    r"|access[-_]?token|refresh[-_]?token|client[-_]?secret|secret[-_]?key|secret|password"
    r"|passwd|token|auth[-_]?token|session[-_]?token"
)
_SECRET_KEY_RE = re.compile(rf"^(?:{_SECRET_NAMES})$", re.IGNORECASE)

_VALUE_CHARS = r"[^\s\"'&,;}\]#]+"

_NAMED = rf"\b(?:{_SECRET_NAMES})[\"']?\s*[:=]"

# scheme://user:PASS@host and redis://:PASS@host. The netloc ends at / ? # whitespace, a quote
# or <>; the password runs to its last "@" because users often leave an "@" in it unescaped.
_URL_PASSWORD = r"(\b[a-z][a-z0-9+.\-]*://[^\s/?#\"'<>@:]*:)[^\s/?#\"'<>]*@"
# The same without the scheme, which is ~5x cheaper to search for: only a gate.
_URL_PASSWORD_GATE = r"://[^\s/?#\"'<>@:]*:[^\s/?#\"'<>]*@"

# Each rule: literal markers (``in`` on the lower-cased text costs ~1 us per 2 KB), then a
# confirming regex on the lower-cased text, then the IGNORECASE substitution on the original
# (IGNORECASE scans cost ~100x more, so they only run where a marker is present).
_Rule = tuple[tuple[str, ...], re.Pattern[str] | None, re.Pattern[str], str]
_RULES: tuple[_Rule, ...] = (
    (
        ("@",),  # not "://": most error messages name a URL, few carry a password in it
        re.compile(_URL_PASSWORD_GATE),
        re.compile(_URL_PASSWORD, re.IGNORECASE),
        r"\1" + REDACTED + "@",
    ),
    # "Authorization: Bearer x", '"x-goog-api-key": "x"', "api-key=x" -- keep the name.
    (
        ("authorization", "api-key", "api_key", "apikey", "secret", "passw", "token"),
        re.compile(rf"(?:{_SECRET_NAMES.lower()})[\"']?\s*[:=]"),
        re.compile(
            rf"({_NAMED}\s*[\"']?)(?:(?:Bearer|Basic|Token)\s+)?{_VALUE_CHARS}",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
    # query parameters and bare key=...: ?key=...&sig=...
    (
        ("key=", "sig=", "signature=", "credential="),
        None,
        re.compile(
            rf"((?:[?&;]|(?<![\w-]))(?:x-(?:amz|goog)-)?(?:key|sig|signature|credential)=)"
            rf"{_VALUE_CHARS}",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
    (
        ("bearer", "basic"),
        None,
        re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE),
        r"\1 " + REDACTED,
    ),
    (("sk-",), None, re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"), REDACTED),  # OpenAI, Anthropic
    (("aiza",), None, re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), REDACTED),  # Google
    (
        ("ghp_", "gho_", "ghs_", "github_pat_"),
        None,
        re.compile(r"\b(?:ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}"),
        REDACTED,
    ),
    (("xox",), None, re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"), REDACTED),  # Slack
    (("akia",), None, re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),  # AWS key id
    (("hf_",), None, re.compile(r"\bhf_[A-Za-z0-9]{20,}"), REDACTED),  # Hugging Face
)


# All markers as one alternation: one call for short text (most values), but re tries every
# alternative at each position, so long text is cheaper with the separate ``in`` scans.
_GATE = re.compile("|".join(re.escape(m) for rule in _RULES for m in rule[0]))
_GATE_MAX = 256


def _applies(rule: _Rule, low: str) -> bool:
    markers, confirm, _, _ = rule
    if not any(m in low for m in markers):
        return False
    return confirm is None or confirm.search(low) is not None


def redact_text(text: str) -> str:
    """``text`` with API keys, bearer tokens, key query parameters and auth headers masked."""
    low = text.lower()
    if len(low) <= _GATE_MAX and _GATE.search(low) is None:
        return text
    for rule in _RULES:
        if _applies(rule, low):
            text = rule[2].sub(rule[3], text)
    return text


def mask_url(url: str) -> str:
    """``url`` fit to print or store: its password and key-like query parameters masked.

    ``redis://:pw@host:6379/0`` -> ``redis://:[REDACTED]@host:6379/0``;
    ``https://u:pw@h/v1?key=k`` -> ``https://u:[REDACTED]@h/v1?key=[REDACTED]``.
    """
    text = redact_text(url)
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:  # e.g. an unbalanced "[" in the host: nothing parseable to keep
        return text
    if password is not None and password != REDACTED:
        # A netloc the text rule reads differently from urlsplit (a quote in the password):
        # mask what urlsplit, and so the client, would take as the password.
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        text = urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{hostport}"))
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
