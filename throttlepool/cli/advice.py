"""What a failed run tells its user: the cause in one sentence with its fix, and how to retry.

The summary counts failures by exception type (``AuthenticationError 1``); a person needs the
meaning (the key was rejected) and the next step (which variable to check, which command
retries only what failed). Causes come from the adapter's verdict, never from the
exception's text alone, whose wording changes between SDK versions.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ..classify import ErrorKind, Verdict, status_of
from ..store import redact_text
from .providers import key_hint

_MODEL_NOT_FOUND = frozenset({"model_not_found"})


@dataclass
class FailureCause:
    """The first failure that explains the run: its verdict and exception."""

    verdict: Verdict
    error: BaseException | None


def _code(exc: BaseException | None) -> str:
    """The error body's ``code`` (OpenAI) or gRPC status (Google), lower case."""
    for attr in ("code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, str):
            return value.lower()
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("code"), str):
            return str(inner["code"]).lower()
    return ""


def _mentions_model(exc: BaseException | None) -> bool:
    text = str(getattr(exc, "message", None) or exc or "").lower()
    return "model" in text


def explain(cause: FailureCause, *, provider: str, model: str | None) -> str | None:
    """One sentence naming the cause and the fix, or None when there is nothing to add.

    ``provider`` is the ``--provider`` value, which names the key variable to check.
    """
    verdict, exc = cause.verdict, cause.error
    reason = verdict.reason
    status = status_of(exc) if exc is not None else None
    if reason.startswith("401") or status == 401:
        return f"the API key was rejected (401): check {key_hint(provider)}"
    if reason.startswith("403") or status == 403:
        return (f"the API key may not do this (403 forbidden): check {key_hint(provider)} and "
                "the key's access to the model")
    if "quota" in reason:
        return ("the account has no quota left (429 quota exhausted, not a rate limit): "
                "check billing and the plan's limits; waiting will not help")
    if status == 404 or reason.startswith("404"):
        if _code(exc) in _MODEL_NOT_FOUND or (model and _mentions_model(exc)):
            return f"model {model!r} not found (404): check --model and the key's access to it"
        return "the endpoint was not found (404): check --base-url and --model"
    if verdict.unreachable:
        return f"cannot connect to {verdict.unreachable}: check --base-url and the network"
    if verdict.kind is ErrorKind.FATAL:
        return f"the run was stopped by a fatal error ({reason}); fix it before running again"
    return None


def retry_command(argv: Sequence[str]) -> str:
    """The command that runs the same run again, credentials in it masked."""
    return redact_text(shlex.join(["throttlepool", *argv]))


def retry_hint(argv: Sequence[str], *, failed: int, not_attempted: int, ok: int,
               has_checkpoint: bool, stdin: bool) -> str | None:
    """How to retry only the items that did not succeed, or None when all did."""
    if failed == 0 and not_attempted == 0:
        return None
    if not has_checkpoint:
        return ("no checkpoint was kept (--no-db): running the command again calls every item "
                "again")
    parts = [f"{failed} failed"] if failed else []
    if not_attempted:
        parts.append(f"{not_attempted} not attempted")
    again = " and ".join(parts)
    source = ", with the same input piped in" if stdin else ""
    kept = f" ({_items(ok, 'ok item')} from the checkpoint)" if ok else ""
    return (f"to retry only the {again} items{kept}, run the same command again{source}:\n"
            f"  {retry_command(argv)}")


def _items(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def first_cause(causes: Sequence[FailureCause]) -> FailureCause | None:
    """The failure to explain: a fatal one (it stopped the run) before any other."""
    fatal = [c for c in causes if c.verdict.kind is ErrorKind.FATAL]
    chosen = fatal or list(causes)
    return chosen[0] if chosen else None

