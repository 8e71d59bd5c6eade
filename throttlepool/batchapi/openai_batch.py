"""The OpenAI Batch API as a :class:`~throttlepool.batchapi.provider.BatchProvider`: request
lines from an :class:`OpenAIAdapter`, the Files/Batches calls, and result lines back to
values and usage (BATCH-APIS.md §1)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

from ..adapters.common import require
from ..adapters.tokens import usage_from
from ..errors import ConfigError
from .journal import Chunk
from .provider import (
    BatchRequestFailed,
    BatchState,
    LineResult,
    default_custom_id,
    request_body,
)

PROVIDER = "openai"
MAX_REQUESTS = 50_000  # per input file
MAX_BYTES = 200 * 1024 * 1024
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# method -> (batch endpoint, the SDK type its response body is)
_ENDPOINTS = {
    "chat": ("/v1/chat/completions", "openai.types.chat", "ChatCompletion"),
    "embeddings": ("/v1/embeddings", "openai.types", "CreateEmbeddingResponse"),
    "responses": ("/v1/responses", "openai.types.responses", "Response"),
    "completions": ("/v1/completions", "openai.types", "Completion"),
}
# Request options of the SDK that are not part of the request body.
_TRANSPORT = frozenset({"timeout", "extra_headers", "extra_query", "extra_body"})
_RETRYABLE_CODES = frozenset({"batch_expired", "batch_cancelled", "request_timeout"})
_FIND_SLACK = 600.0  # seconds: a batch's created_at vs our clock, when looking it up


class OpenAIBatch:
    """The OpenAI Batch API for one OpenAIAdapter (chat, embeddings, responses, completions).

    Batch creation is sent once (no SDK retry): a retried create whose first attempt did
    reach the server would make a second batch. Each batch carries the run's tag as its
    ``metadata``, which is how a resume finds a batch created just before a crash.
    """

    name = PROVIDER

    def __init__(self, adapter: Any, client: Any = None, *, max_requests: int = MAX_REQUESTS,
                 max_bytes: int = MAX_BYTES) -> None:
        method = getattr(adapter, "method", None)
        if getattr(adapter, "name", None) != PROVIDER or method not in _ENDPOINTS:
            who = getattr(adapter, "name", type(adapter).__name__)
            raise ConfigError(
                "OpenAI batch mode takes an OpenAIAdapter with method chat, embeddings, "
                f"responses or completions, not {who!r} method {method!r}")
        self.adapter = adapter
        self.endpoint, module, type_name = _ENDPOINTS[str(method)]
        self._type: Any = getattr(importlib.import_module(module), type_name)
        self.max_requests, self.max_bytes = min(max_requests, MAX_REQUESTS), max_bytes
        sdk = require("openai", "openai", "openai")
        client = client if client is not None else adapter.client
        if isinstance(client, sdk.AsyncOpenAI):
            raise ConfigError("batch mode needs a sync openai.OpenAI client")
        self._reads = client.with_options(max_retries=2)
        self._create = client.with_options(max_retries=0)
        self.transient: tuple[type[BaseException], ...] = (
            sdk.APIConnectionError, sdk.RateLimitError, sdk.InternalServerError)

    # -- requests ---------------------------------------------------------------------------

    def custom_id(self, run_id: str, index: int) -> str:
        """``item-<index>``: metadata, not the id, tells one run's batches from another's."""
        return default_custom_id(index)

    def body(self, item: Any) -> dict[str, Any]:
        """The request body for ``item``: the adapter's parameters, without transport
        options. Raises ConfigError for a request a batch cannot carry."""
        return request_body(self.adapter.params(item), _TRANSPORT)

    def line(self, cid: str, item: Any) -> bytes:
        """One JSONL input line (newline included)."""
        row = {"custom_id": cid, "method": "POST", "url": self.endpoint,
               "body": self.body(item)}
        return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def model_of(self, item: Any) -> str:
        """The model a request asks for (one model per batch file)."""
        return str(self.body(item).get("model") or "")

    # -- calls ------------------------------------------------------------------------------

    def upload(self, data: bytes, name: str) -> str | None:
        """Upload a batch input file; returns its file id."""
        return str(self._reads.files.create(file=(name, data), purpose="batch").id)

    def create(self, chunk: Chunk, data: bytes, tag: Mapping[str, str]) -> BatchState:
        """Create the batch from the chunk's uploaded file (sent once)."""
        return self._state(self._create.batches.create(
            input_file_id=str(chunk.file_id), endpoint=self.endpoint, completion_window="24h",
            metadata=dict(tag)))

    def find(self, chunk: Chunk, tag: Mapping[str, str], claimed: set[str]) -> BatchState | None:
        """The newest batch with this exact metadata created since the chunk's intent, or
        None. Pages the list until batches older than that."""
        since = chunk.created - _FIND_SLACK
        for batch in self._reads.batches.list(limit=100):
            if batch.created_at is not None and batch.created_at < since:
                return None
            if dict(batch.metadata or {}) == dict(tag) and batch.id not in claimed:
                return self._state(batch)
        return None

    def poll(self, batch_id: str) -> BatchState:
        """The batch's current state."""
        return self._state(self._reads.batches.retrieve(batch_id))

    def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch."""
        self._reads.batches.cancel(batch_id)

    def results(self, batch: BatchState) -> dict[str, LineResult]:
        """The output and error files' lines, by custom id."""
        raw = batch.raw
        rows = self._lines(raw.output_file_id) + self._lines(raw.error_file_id)
        return {str(row.get("custom_id")): self.result(row) for row in rows}

    def _lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        text = self._reads.files.content(file_id).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    @staticmethod
    def _state(batch: Any) -> BatchState:
        counts = getattr(batch, "request_counts", None)
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        return BatchState(
            str(batch.id), str(batch.status), batch.status in TERMINAL,
            int(getattr(counts, "completed", 0) or 0), int(getattr(counts, "failed", 0) or 0),
            "".join(f" ({e.code}: {e.message})" for e in errors[:1]), batch)

    # -- results ----------------------------------------------------------------------------

    def result(self, row: Mapping[str, Any]) -> LineResult:
        """A result line (output or error file) as a value or an error."""
        response = row.get("response")
        error = row.get("error")
        if isinstance(response, Mapping) and response.get("status_code") == 200:
            body = response.get("body")
            return LineResult(self._value(body), usage_from(body))
        if isinstance(response, Mapping):
            status = int(response.get("status_code") or 0)
            inner = response.get("body")
            err = inner.get("error") if isinstance(inner, Mapping) else None
            err = err if isinstance(err, Mapping) else {}
            message = str(err.get("message") or f"HTTP {status}")
            return LineResult(error=BatchRequestFailed(
                f"HTTP {status}: {message}", status=status, code=err.get("code"),
                retryable=status in (408, 409, 429) or status >= 500))
        err = error if isinstance(error, Mapping) else {}
        code = str(err.get("code") or "unknown")
        return LineResult(error=BatchRequestFailed(
            f"{code}: {err.get('message') or 'no result'}", code=code,
            retryable=code in _RETRYABLE_CODES))

    def _value(self, body: Any) -> Any:
        try:
            response = self._type.model_validate(body)
        except Exception:  # a body the SDK's model does not take: keep it as JSON
            response = body
        return self.adapter.value_of(response)
