"""The one place where library errors become CLI messages and exit codes."""

from __future__ import annotations

import click

from ..errors import (
    CheckpointDamaged,
    CheckpointMismatch,
    ConfigError,
    EndpointUnreachable,
    InputError,
    LimiterUnavailable,
    MissingExtra,
    OutputError,
    RunInUse,
    RunStopped,
    StoreError,
)
from ..store.redact import redact_text

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


#: The label of each kind of error; an error takes the label of its nearest class here.
LABELS: dict[type[BaseException], str] = {
    InputError: "bad input",
    MissingExtra: "missing dependency",
    CheckpointMismatch: "checkpoint mismatch",
    CheckpointDamaged: "the checkpoint is damaged",
    RunInUse: "run in use",
    StoreError: "checkpoint database",
    EndpointUnreachable: "endpoint unreachable",
    RunStopped: "run stopped",
    OutputError: "output",
    LimiterUnavailable: "shared rate limiter unavailable",
    ConfigError: "configuration",
}


def label(exc: BaseException) -> str:
    """What kind of error ``exc`` is, for the user: the label of its nearest labelled class
    (``CheckpointMismatch`` is a StoreError, but says "checkpoint mismatch")."""
    return next((LABELS[cls] for cls in type(exc).__mro__ if cls in LABELS), "error")


def message(exc: BaseException) -> str:
    """``throttlepool: bad input: data.jsonl:3: malformed JSON ...`` with secrets redacted."""
    return f"throttlepool: {label(exc)}: {redact_text(str(exc))}"


def exit_code(exc: BaseException) -> int:
    """2 for every usage, input, configuration and database error; 130 for Ctrl-C."""
    if isinstance(exc, KeyboardInterrupt | click.exceptions.Abort):
        return EXIT_INTERRUPTED
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    return EXIT_USAGE
