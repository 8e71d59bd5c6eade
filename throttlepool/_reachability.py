"""When a run that has never reached its server should stop instead of retrying for hours.

A wrong ``--base-url`` (nothing listening, an unknown host, https to a plain-HTTP port) fails
every call at connect time, and connect errors are transient, so without this the run
backs off, trips the breaker and probes for hours while the ETA grows. Pure state, no clock:
the engine reports each attempt and stops the run when :meth:`Reachability.observe_failure`
returns an :class:`~throttlepool.errors.EndpointUnreachable`.

The rule: ``failures`` (3) connect failures before any call of the run has reached the server
stop the run. Reaching it means any answer: a success, and also an HTTP error (a 4xx, 5xx
or 429 came from a server). Once one call has, connect errors are an outage to ride out
and are retried as before, however many follow. Timeouts after the connection opened and
connections reset mid-request count neither way: something was listening, but no answer
proves the endpoint right. Three is small enough that a dead endpoint stops in the first
wave of calls (before the circuit breaker's five failures open it for ten seconds and more)
and large enough that one refused connection at start-up does not.
"""

from __future__ import annotations

from .classify import Verdict, status_of
from .errors import ConfigError, EndpointUnreachable


class Reachability:
    """Counts connect failures until the first call reaches the server; decides the stop."""

    def __init__(self, failures: int = 3) -> None:
        if failures < 1:
            raise ConfigError(f"failures must be at least 1, got {failures}")
        self.failures = failures
        self.reached = False
        self.connect_failures = 0

    def observe_success(self) -> None:
        """A call reached the server (any answer): connect errors are retried from now on."""
        self.reached = True

    def observe_connect_failure(
        self, address: str, cause: BaseException | None = None
    ) -> EndpointUnreachable | None:
        """A connection to ``address`` could not be opened; the stop reason, or None to retry."""
        if self.reached:
            return None
        self.connect_failures += 1
        if self.connect_failures < self.failures:
            return None
        return EndpointUnreachable(address, cause)

    def observe_failure(
        self, exc: BaseException, verdict: Verdict
    ) -> EndpointUnreachable | None:
        """A failed attempt, as classified: the stop reason, or None to carry on."""
        if verdict.unreachable is not None and verdict.retryable:
            return self.observe_connect_failure(verdict.unreachable, exc)
        if status_of(exc) is not None:  # an HTTP error is an answer from the server
            self.observe_success()
        return None
