"""The seam between BatchApiRunner and one provider's Batch API.

A :class:`BatchProvider` builds the request lines of its adapter's items, uploads them (when
the API takes a file), creates a batch, finds a batch created just before a crash, polls it,
reads its results back by custom id and cancels it. The runner owns the journal, the
checkpoint and the retries; a provider only speaks its API (openai_batch.py,
anthropic_batch.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ConfigError, InputError, ItemError
from ..outcome import Usage
from ..store.codec import to_jsonable
from .journal import Chunk


class BatchRequestFailed(ItemError):
    """A request of a provider batch that got no answer (``status`` is its HTTP status, 0
    when it failed without one: expired, cancelled, missing); ``retryable`` says whether a
    new batch may succeed."""

    def __init__(self, message: str, *, status: int = 0, code: str | None = None,
                 retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class LineResult:
    """One custom id's answer: a value with its usage, or an error."""

    value: Any = None
    usage: Usage | None = None
    error: BatchRequestFailed | None = None


@dataclass(frozen=True, slots=True)
class BatchState:
    """A provider batch as last seen: its status in the provider's words, whether it has
    ended, its per-request counts so far, and why it failed as a whole (if it did)."""

    id: str
    status: str
    ended: bool
    completed: int = 0
    failed: int = 0
    problem: str = ""
    raw: Any = None  # the SDK's object, which results() may need


class BatchProvider(Protocol):
    """One provider's Batch API, for one adapter (see the module docstring)."""

    name: str
    max_requests: int
    max_bytes: int
    #: Errors after which the same step may be tried again at the next poll.
    transient: tuple[type[BaseException], ...]

    def custom_id(self, run_id: str, index: int) -> str:
        """The custom id of item ``index`` of run ``run_id`` (the same in every batch)."""
        ...

    def line(self, cid: str, item: Any) -> bytes:
        """One request as a JSONL line; raises ConfigError for a request a batch cannot
        carry."""
        ...

    def model_of(self, item: Any) -> str:
        """The model a request asks for (batches are split by model)."""
        ...

    def upload(self, data: bytes, name: str) -> str | None:
        """Upload the chunk's lines when the API takes a file; its id (None: no file step)."""
        ...

    def create(self, chunk: Chunk, data: bytes, tag: Mapping[str, str]) -> BatchState:
        """Create the batch of ``chunk`` (sent once, never retried by the SDK)."""
        ...

    def find(self, chunk: Chunk, tag: Mapping[str, str], claimed: set[str]) -> BatchState | None:
        """The batch of ``chunk`` if it was created before a crash, else None. ``claimed``
        are batch ids other chunks already own."""
        ...

    def poll(self, batch_id: str) -> BatchState:
        """The batch's current state."""
        ...

    def results(self, batch: BatchState) -> dict[str, LineResult]:
        """Every answer of an ended batch, by custom id."""
        ...

    def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch."""
        ...


#: What a request that cannot go in a batch raises: it is recorded failed, never submitted.
REFUSED: tuple[type[BaseException], ...] = (ConfigError, InputError, TypeError)


def batch_line(adapter: Any, provider: BatchProvider, cid: str, item: Any) -> bytes:
    """``item``'s request line, or one of :data:`REFUSED` for an item that is no request:
    a bad input record (the adapter's ``item_error``, e.g. the CLI's ``--skip-bad-records``
    wrapper), a request the adapter refuses (``request_problem``) or one a batch cannot
    carry. The online path fails such items the same way, without a call."""
    error = getattr(adapter, "item_error", None)
    refused = error(item) if error is not None else None
    if refused is not None:
        raise refused
    problem = getattr(adapter, "request_problem", lambda _: None)(item)
    if problem:
        raise ConfigError(problem)
    return provider.line(cid, item)


def default_custom_id(index: int) -> str:
    """``item-<index>``: the custom id of input item ``index`` (OpenAI's batches)."""
    return f"item-{index}"


def chunked(lines: Sequence[tuple[int, bytes]], max_requests: int,
            max_bytes: int) -> Iterator[list[tuple[int, bytes]]]:
    """``(index, line)`` pairs in chunks of at most ``max_requests`` lines and
    ``max_bytes`` bytes (a single larger line gets a chunk of its own)."""
    chunk: list[tuple[int, bytes]] = []
    size = 0
    for pair in lines:
        if chunk and (len(chunk) >= max_requests or size + len(pair[1]) > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(pair)
        size += len(pair[1])
    if chunk:
        yield chunk


def request_body(params: Mapping[str, Any], transport: frozenset[str]) -> dict[str, Any]:
    """An adapter's call parameters as a request body: transport options dropped,
    ``extra_body`` merged in. Raises ConfigError for a streamed request."""
    extra = params.get("extra_body")
    body = {k: v for k, v in params.items() if k not in transport}
    if isinstance(extra, Mapping):
        body.update(extra)
    if body.get("stream"):
        raise ConfigError("a batch request cannot be streamed (stream=True)")
    plain = to_jsonable(body)
    if not isinstance(plain, dict):
        raise ConfigError("the request body is not a JSON object")
    return plain
