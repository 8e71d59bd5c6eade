"""Click flags made from the one table of settings (``throttlepool.options.OPTIONS``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

from ..options import OPTIONS, PROVIDERS_MARK, Option
from ..options.parse import non_negative_float, non_negative_int, positive_float, positive_int
from .providers import PROVIDER_NAMES

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

# The flag parses only the kind of value; the setting's own parser checks its range, with
# the same message whether the value came from a flag, a variable or a file.
_CLICK_TYPES: dict[Any, Any] = {positive_int: int, non_negative_int: int,
                                positive_float: float, non_negative_float: float}


def flag_for(option: Option) -> Callable[[Any], Any]:
    """The click option of one setting; unset (None) when not given, so the environment or
    a config file may still give it."""
    decls = [option.short] if option.short else []
    decls.append(f"{option.flag}/{option.negative}" if option.negative else option.flag)
    kwargs: dict[str, Any] = {
        "help": option.help.replace(PROVIDERS_MARK, ", ".join(PROVIDER_NAMES)),
        "metavar": option.metavar,
    }
    if option.negative:
        kwargs["default"] = None
    elif option.repeatable:
        kwargs["multiple"] = True
    elif option.choices:
        kwargs["type"] = click.Choice(option.choices)
    elif option.parse in _CLICK_TYPES:
        kwargs["type"] = _CLICK_TYPES[option.parse]
    return click.option(*decls, **kwargs)


def setting_flags(options: Sequence[Option] = OPTIONS,
                  after: Mapping[str, Sequence[Callable[[Any], Any]]] | None = None
                  ) -> Callable[[F], F]:
    """Every setting as a flag, in the table's order; ``after`` places a command's own flags
    (``--dry-run``, ``-v``) after a setting's, where ``--help`` should show them."""
    after = after or {}
    decorators: list[Callable[[Any], Any]] = []
    for option in options:
        decorators.append(flag_for(option))
        decorators.extend(after.get(option.name, ()))

    def apply(fn: F) -> F:
        for decorator in reversed(decorators):  # click lists the last applied first
            fn = decorator(fn)
        return fn
    return apply
