"""The one place where library errors become CLI messages and exit codes."""

from __future__ import annotations

import click

from ..errors import (
    CheckpointDamaged,
    CheckpointMismatch,
    ConfigError,
    EndpointUnreachable,
    InputError,
    MissingExtra,
    OutputError,
    RunInUse,
    StoreError,
)
from ..store.redact import redact_text

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _label(exc: BaseException) -> str:
    if isinstance(exc, InputError):
        return "bad input"
    if isinstance(exc, MissingExtra):
        return "missing dependency"
    if isinstance(exc, CheckpointMismatch):
        return "checkpoint mismatch"
    if isinstance(exc, CheckpointDamaged):
        return "the checkpoint is damaged"
    if isinstance(exc, RunInUse):
        return "run in use"
    if isinstance(exc, EndpointUnreachable):
        return "endpoint unreachable"
    if isinstance(exc, OutputError):
        return "output"
    if isinstance(exc, StoreError):
        return "checkpoint database"
    if isinstance(exc, ConfigError):
        return "configuration"
    return "error"


def message(exc: BaseException) -> str:
    """``throttlepool: bad input: data.jsonl:3: malformed JSON ...`` with secrets redacted."""
    return f"throttlepool: {_label(exc)}: {redact_text(str(exc))}"


def exit_code(exc: BaseException) -> int:
    """2 for every usage, input, configuration and database error; 130 for Ctrl-C."""
    if isinstance(exc, KeyboardInterrupt | click.exceptions.Abort):
        return EXIT_INTERRUPTED
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    return EXIT_USAGE
