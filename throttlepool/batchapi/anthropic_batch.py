"""Anthropic Message Batches as a :class:`~throttlepool.batchapi.provider.BatchProvider`
(BATCH-APIS.md §2): requests from an :class:`AnthropicAdapter`, one create call with the
requests inline (no file), results read back by custom id.

Message Batches carry no metadata, so a batch created just before a crash is found by what
the journal recorded before the create: the chunk's time and its custom ids. Custom ids name
the run (``tp<run tag>-<index>``), so one run's requests are never taken for another's. On
resume the batch list (newest first) is searched back to the chunk's intent for an unclaimed
batch with the same number of requests; an ended one is adopted only when its results'
custom ids are exactly the chunk's. (A running batch cannot show its requests: it is adopted
on its count and time, and should its results turn out to be another chunk's, the items get
no answer from it and go into a new batch.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..adapters.anthropic import usage_of
from ..adapters.common import require
from ..errors import ConfigError
from .journal import Chunk
from .provider import BatchRequestFailed, BatchState, LineResult, request_body

PROVIDER = "anthropic"
MAX_REQUESTS = 100_000  # per batch, or 256 MB, whichever comes first
MAX_BYTES = 256 * 1024 * 1024 - 1024 * 1024  # room for the JSON around the requests
_TRANSPORT = frozenset({"timeout", "extra_headers", "extra_query", "extra_body"})
_FIND_SLACK = 120.0  # seconds: the server's created_at vs our clock
# Errors a new batch may well not repeat; invalid_request_error and the like would.
_RETRYABLE_ERRORS = frozenset({"api_error", "overloaded_error", "rate_limit_error",
                               "timeout_error"})


def run_tag(run_id: str) -> str:
    """A short, stable tag of a run id, for custom ids (``^[a-zA-Z0-9_-]{1,64}$``)."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:12]


class AnthropicBatch:
    """Anthropic Message Batches for one AnthropicAdapter with method ``messages``.

    The create call is sent once (no SDK retry): a retried create whose first attempt did
    reach the server would make a second batch.
    """

    name = PROVIDER

    def __init__(self, adapter: Any, client: Any = None, *, max_requests: int = MAX_REQUESTS,
                 max_bytes: int = MAX_BYTES) -> None:
        if getattr(adapter, "name", None) != PROVIDER or getattr(adapter, "method", None) != (
                "messages"):
            raise ConfigError(
                "Anthropic batch mode takes an AnthropicAdapter with method 'messages', not "
                f"{getattr(adapter, 'name', type(adapter).__name__)!r} method "
                f"{getattr(adapter, 'method', None)!r}")
        sdk = require("anthropic", "anthropic", "anthropic")
        client = client if client is not None else adapter.client
        if isinstance(client, sdk.AsyncAnthropic):
            raise ConfigError("batch mode needs a sync anthropic.Anthropic client")
        self.adapter = adapter
        self.max_requests = min(max_requests, MAX_REQUESTS)
        self.max_bytes = min(max_bytes, MAX_BYTES)
        self._reads = client.with_options(max_retries=2)
        self._create = client.with_options(max_retries=0)
        self.transient: tuple[type[BaseException], ...] = (
            sdk.APIConnectionError, sdk.RateLimitError, sdk.InternalServerError)

    # -- requests ---------------------------------------------------------------------------

    def custom_id(self, run_id: str, index: int) -> str:
        """``tp<run tag>-<index>``: the run's own ids, as no metadata can say whose it is."""
        return f"tp{run_tag(run_id)}-{index}"

    def params(self, item: Any) -> dict[str, Any]:
        """The Messages parameters of ``item`` as a batch request carries them."""
        params = request_body(self.adapter.params(item), _TRANSPORT)
        if params.get("max_tokens") == 0:
            raise ConfigError("a batch request needs max_tokens >= 1")
        return params

    def line(self, cid: str, item: Any) -> bytes:
        """One request ``{"custom_id", "params"}`` as a JSON line."""
        row = {"custom_id": cid, "params": self.params(item)}
        return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def model_of(self, item: Any) -> str:
        """The request's model (batches are split by model, as OpenAI's must be)."""
        return str(self.params(item).get("model") or "")

    # -- calls ------------------------------------------------------------------------------

    def upload(self, data: bytes, name: str) -> str | None:
        """Nothing to upload: the requests go inline with the create call."""
        return None

    def create(self, chunk: Chunk, data: bytes, tag: Mapping[str, str]) -> BatchState:
        """Create the batch with the chunk's requests (sent once)."""
        requests = [json.loads(line) for line in data.splitlines() if line.strip()]
        return self._state(self._create.messages.batches.create(requests=requests))

    def find(self, chunk: Chunk, tag: Mapping[str, str], claimed: set[str]) -> BatchState | None:
        """The batch of ``chunk`` created before a crash (see the module docstring)."""
        since = chunk.created - _FIND_SLACK
        wanted = set(chunk.custom_ids)
        unverified: BatchState | None = None
        for batch in self._reads.messages.batches.list(limit=100):
            created = batch.created_at.timestamp() if batch.created_at else None
            if created is not None and created < since:
                break
            if batch.id in claimed or _total(batch) != len(wanted):
                continue
            state = self._state(batch)
            if not state.ended:
                unverified = unverified or state
            elif set(self.results(state)) == wanted:
                return state
        return unverified

    def poll(self, batch_id: str) -> BatchState:
        """The batch's current state."""
        return self._state(self._reads.messages.batches.retrieve(batch_id))

    def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch."""
        self._reads.messages.batches.cancel(batch_id)

    def results(self, batch: BatchState) -> dict[str, LineResult]:
        """Every answer of an ended batch, by custom id."""
        return {str(row.custom_id): self.result(row.result)
                for row in self._reads.messages.batches.results(batch.id)}

    @staticmethod
    def _state(batch: Any) -> BatchState:
        counts = batch.request_counts
        failed = int(counts.errored or 0) + int(counts.canceled or 0) + int(counts.expired or 0)
        return BatchState(str(batch.id), str(batch.processing_status),
                          batch.processing_status == "ended", int(counts.succeeded or 0),
                          failed, "", batch)

    # -- results ----------------------------------------------------------------------------

    def result(self, result: Any) -> LineResult:
        """One request's result (succeeded, errored, canceled, expired) as a value or error."""
        kind = str(getattr(result, "type", "") or "")
        if kind == "succeeded":
            message = result.message
            return LineResult(self.adapter.value_of(message), usage_of(message))
        if kind == "errored":
            inner = getattr(getattr(result, "error", None), "error", None)
            err_type = str(getattr(inner, "type", "") or "error")
            text = str(getattr(inner, "message", "") or "no message")
            return LineResult(error=BatchRequestFailed(
                f"{err_type}: {text}", code=err_type,
                retryable=err_type in _RETRYABLE_ERRORS))
        return LineResult(error=BatchRequestFailed(
            f"{kind or 'unknown'}: the request got no answer in its batch", code=kind,
            retryable=kind in ("canceled", "expired")))


def _total(batch: Any) -> int:
    counts = batch.request_counts
    return sum(int(getattr(counts, f, 0) or 0) for f in (
        "processing", "succeeded", "errored", "canceled", "expired"))
