"""Checks before any call: every record a request the provider accepts, a model where one
is needed, and bad records that fail as themselves instead of stopping the run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._inputs import BadRecord, Records
from ..adapters import Adapter, CallResult, Delegating
from ..classify import ErrorKind, Verdict
from ..errors import ConfigError, InputError
from ..hints import RateInfo
from ..limiter import Cost
from .providers import split_provider


class SkipBadRecords(Delegating[Any]):
    """Wraps an adapter so a :class:`BadRecord` item fails as that item, without a call."""

    def estimate(self, item: Any) -> Cost:
        """Nothing for a bad record: it never reaches the API."""
        return Cost(0.0, 0.0) if isinstance(item, BadRecord) else self.inner.estimate(item)

    def item_error(self, item: Any) -> InputError | None:
        """A bad record's InputError (batch mode records it without submitting it)."""
        return item.error() if isinstance(item, BadRecord) else None

    def call(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """Raise a bad record's InputError; call through otherwise."""
        if isinstance(item, BadRecord):
            raise item.error()
        return self.inner.call(item, timeout)

    async def acall(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """Raise a bad record's InputError; await the wrapped adapter otherwise."""
        if isinstance(item, BadRecord):
            raise item.error()
        return await self.inner.acall(item, timeout)

    def classify(self, exc: BaseException) -> Verdict:
        """A bad record is permanent: never retried."""
        if isinstance(exc, InputError):
            return Verdict(ErrorKind.PERMANENT, None, "bad input record")
        return self.inner.classify(exc)

    def rate_info(self, exc: BaseException) -> RateInfo | None:
        """Rate headers of the wrapped adapter's errors."""
        return None if isinstance(exc, InputError) else self.inner.rate_info(exc)

def check_requests(records: Records, adapter: Adapter[Any]) -> None:
    """Every record a full request body the provider accepts, or an InputError naming the
    line and the field to map, before anything is sent (the SDK would refuse each call)."""
    problem_of = getattr(adapter, "request_problem", None)
    if problem_of is None:
        return
    for line, request in records.lines():
        if not isinstance(request, Mapping):
            continue
        problem = problem_of(request)
        if problem is not None:
            raise InputError(f"{problem}. {_mapping_hint(request, records)}",
                             source=records.name, line=line)


def _mapping_hint(record: Mapping[str, Any], records: Records) -> str:
    """Which field to send as the prompt, for a record that is not a request body."""
    fields = ", ".join(str(k) for k in record) or "none"
    texts = [str(k) for k, v in record.items() if isinstance(v, str)]
    if not texts:
        return (f"The record's fields are: {fields}; a record is a full request body unless "
                f"--field names its prompt (now {records.spec.field!r}) or --template builds one")
    return (f"The record's fields are: {fields}; to send one as the prompt give --field "
            f"{texts[0]} (or --template '... {{{texts[0]}}} ...')")


def check_model(provider: str, model: str | None, records: Records) -> None:
    """A provider that names the model in each request has one (``--model``, or a
    ``"model"`` in the first record), before anything is sent."""
    name = split_provider(provider)[0]
    if model or name not in ("openai", "gemini"):
        return
    first = next(iter(records), None)
    if first is not None and not (isinstance(first, dict) and "model" in first):
        raise ConfigError(f"the {name} provider needs --model (or a \"model\" in each JSONL "
                          "request body)")
