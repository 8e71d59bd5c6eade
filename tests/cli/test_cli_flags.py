"""The ``run`` flags are made from the one table of settings: each setting one flag, and a
setting added to the table is a flag, a variable and a config key with nothing else to edit.
Errors become labels and exit codes in one table."""

from __future__ import annotations

import click
from click.testing import CliRunner

from throttlepool._config import load_settings
from throttlepool.cli.errors import exit_code, label, message
from throttlepool.cli.flags import setting_flags
from throttlepool.cli.run import run_command
from throttlepool.errors import (
    CheckpointDamaged,
    CheckpointMismatch,
    CostExceedsLimit,
    EndpointUnreachable,
    InputError,
    LimiterUnavailable,
    MissingExtra,
    RunInUse,
    StoreError,
    ThrottlepoolError,
)
from throttlepool.options import OPTIONS, Option
from throttlepool.options.parse import positive_float


def test_every_setting_is_one_run_flag() -> None:
    params = {p.name: p for p in run_command.params if isinstance(p, click.Option)}
    for option in OPTIONS:
        assert option.name in params, option.name
        assert option.flag in params[option.name].opts
    own = set(params) - {option.name for option in OPTIONS}
    assert own == {"no_db", "dry_run", "verbose", "quiet", "config"}


def test_a_new_setting_is_a_flag_and_a_variable() -> None:
    extra = Option("max_wait", positive_float, "Give up waiting after this long.",
                   target="execution.max_wait", metavar="SECONDS")
    seen: dict[str, object] = {}

    @click.command()
    @setting_flags((*OPTIONS, extra))
    def command(**flags: object) -> None:
        seen.update(flags)

    result = CliRunner().invoke(command, ["--max-wait", "2.5", "-b", "3"])
    assert result.exit_code == 0, result.output
    assert seen["max_wait"] == 2.5 and seen["batch_size"] == 3
    assert "--max-wait SECONDS" in CliRunner().invoke(command, ["--help"]).output


def test_a_flag_is_checked_by_the_settings_parser() -> None:
    result = CliRunner().invoke(run_command, ["in.txt", "--batch-size", "0"])
    assert result.exit_code != 0
    assert "option --batch-size: expected a positive integer, got 0" in str(result.exception)
    assert load_settings({"rpm": "60"}, env={})["rpm"] == 60.0


def test_each_error_has_its_label_and_exit_code() -> None:
    cases = [
        (InputError("bad", source="in.jsonl", line=3), "bad input"),
        (CheckpointMismatch("differs"), "checkpoint mismatch"),
        (CheckpointDamaged("corrupt"), "the checkpoint is damaged"),
        (RunInUse("busy"), "run in use"),
        (StoreError("locked"), "checkpoint database"),
        (EndpointUnreachable("127.0.0.1:9"), "endpoint unreachable"),
        (CostExceedsLimit(9.0, "5/60s"), "configuration"),
        (MissingExtra("redis", "redis"), "missing dependency"),
        (LimiterUnavailable("redis://h:6379 is unreachable"), "shared rate limiter unavailable"),
        (ThrottlepoolError("other"), "error"),
    ]
    for exc, expected in cases:
        assert label(exc) == expected, exc
        assert message(exc).startswith(f"throttlepool: {expected}: ")
        assert exit_code(exc) == 2
