"""Every exception throttlepool raises derives from :class:`ThrottlepoolError`.

The tree::

    ThrottlepoolError
     ├── ConfigError (ValueError)            bad arguments: a limit string, a batch size, an option
     │    └── CostExceedsLimit               one call costs more than a limit can ever admit
     ├── MissingExtra (ImportError)          an optional SDK is not installed
     ├── InputError (ValueError)             a bad input record, with file, line and field
     ├── ItemError                           per-item failures the runner records as outcomes
     │    ├── CallTimeout (TimeoutError)     a call ran past its timeout
     │    ├── RetryHintTooLong               the server asked to wait longer than allowed
     │    └── NotAttempted                   the run stopped before this item was called
     ├── RunStopped                          a fatal error (bad key, no quota) stopped dispatch
     │    └── EndpointUnreachable            no call ever connected: wrong URL, host or port
     ├── StoreError                          the checkpoint database cannot be used
     │    ├── CheckpointMismatch             a resumed run was given different input
     │    ├── CheckpointDamaged              the database file is corrupt; nothing was called
     │    └── RunInUse                       another live process owns this run (its lease)
     ├── OutputError                         the results file cannot be written
     └── LimiterUnavailable                  a shared limiter backend is unreachable (fail closed)

Errors raised by the wrapped function itself are never wrapped: an outcome's ``error`` is the
exception the call raised.
"""

from __future__ import annotations


class ThrottlepoolError(Exception):
    """Base class of every error raised by throttlepool."""


class ConfigError(ThrottlepoolError, ValueError):
    """An argument or setting is invalid; the message names it."""


class CostExceedsLimit(ConfigError):
    """A single call costs more than a configured limit admits in a whole window."""

    def __init__(self, cost: float, limit: str) -> None:
        super().__init__(f"a cost of {cost:g} can never fit under the limit {limit}")
        self.cost = cost
        self.limit = limit


class MissingExtra(ThrottlepoolError, ImportError):
    """An optional dependency is missing; the message gives the pip command."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed: pip install 'throttlepool[{extra}]'"
        )
        self.package = package
        self.extra = extra


class InputError(ThrottlepoolError, ValueError):
    """A bad input record; ``source``, ``line`` and ``field`` say where."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        where = ":".join(str(p) for p in (source, line) if p is not None)
        prefix = f"{where}: " if where else ""
        suffix = f" (field {field!r})" if field else ""
        super().__init__(f"{prefix}{message}{suffix}")
        self.source = source
        self.line = line
        self.field = field


class ItemError(ThrottlepoolError):
    """Base of the errors the runner itself records for an item."""


class CallTimeout(ItemError, TimeoutError):
    """A call did not return within its timeout."""


class RetryHintTooLong(ItemError):
    """The server asked for a wait longer than ``Retry.max_hint``; the item fails instead."""

    def __init__(self, hint: float, maximum: float, cause: BaseException | None = None) -> None:
        super().__init__(
            f"server asked to retry after {hint:.1f}s, more than the allowed {maximum:.1f}s"
        )
        self.hint = hint
        self.maximum = maximum
        self.__cause__ = cause


class NotAttempted(ItemError):
    """The run stopped (fatal error, interrupt, deadline) before this item was called."""


class RunStopped(ThrottlepoolError):
    """A fatal error stopped dispatch; ``cause`` is the error that did it."""

    def __init__(self, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class EndpointUnreachable(RunStopped):
    """No call of the run has ever reached the server: connections to ``address`` fail.

    Raised (as the run's stop reason) instead of retrying for hours against a wrong URL; a
    run that has already had answers keeps retrying transient connection errors.
    """

    def __init__(self, address: str, cause: BaseException | None = None) -> None:
        super().__init__(
            f"cannot connect to {address}: no call has reached the server; check the URL "
            "(--base-url) and that the server is running", cause)
        self.address = address


class StoreError(ThrottlepoolError):
    """The checkpoint store cannot be opened, read or written."""


class CheckpointMismatch(StoreError):
    """A resumed run was given input that differs from what its checkpoint recorded."""


class CheckpointDamaged(StoreError):
    """The checkpoint database fails its integrity check; no call was made."""


class RunInUse(StoreError):
    """Another live process holds this run's lease; ``owner`` says who (host, pid)."""

    def __init__(self, message: str, owner: str | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class OutputError(ThrottlepoolError):
    """The results file (``--output``) cannot be written; recorded outcomes are kept."""


class LimiterUnavailable(ThrottlepoolError):
    """A shared limiter backend cannot be reached; dispatch stops rather than over-spend."""
