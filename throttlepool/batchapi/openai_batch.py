"""The OpenAI Batch API: request lines from an :class:`OpenAIAdapter`, the Files/Batches
calls, and result lines back to values and usage (BATCH-APIS.md §1)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..adapters.common import require
from ..adapters.tokens import usage_from
from ..errors import ConfigError, ItemError
from ..outcome import Usage
from ..store.codec import to_jsonable

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


def custom_id(index: int) -> str:
    """The custom id of input item ``index`` (the same in every batch it goes to)."""
    return f"item-{index}"


class OpenAIBatchFormat:
    """Builds the batch input lines of an OpenAI adapter and reads its result lines."""

    provider = PROVIDER

    def __init__(self, adapter: Any) -> None:
        method = getattr(adapter, "method", None)
        if getattr(adapter, "name", None) != PROVIDER or method not in _ENDPOINTS:
            raise ConfigError(
                "batch mode takes an OpenAIAdapter with method chat, embeddings, responses or "
                f"completions, not {getattr(adapter, 'name', type(adapter).__name__)!r} "
                f"method {method!r}")
        self.adapter = adapter
        self.endpoint, module, name = _ENDPOINTS[str(method)]
        self._type: Any = getattr(importlib.import_module(module), name)
        # The adapter's extract= (text, embedding, json, a callable), as an online call uses.
        self._extract: Any = getattr(adapter, "_extract", None)

    def body(self, item: Any) -> dict[str, Any]:
        """The request body for ``item``: the adapter's parameters, without transport
        options. Raises ConfigError for a request a batch cannot carry."""
        params = dict(self.adapter.params(item))
        extra = params.get("extra_body")
        body = {k: v for k, v in params.items() if k not in _TRANSPORT}
        if isinstance(extra, Mapping):
            body.update(extra)
        if body.get("stream"):
            raise ConfigError("a batch request cannot be streamed (stream=True)")
        plain = to_jsonable(body)
        if not isinstance(plain, dict):
            raise ConfigError("the request body is not a JSON object")
        return plain

    def line(self, index: int, item: Any) -> bytes:
        """One JSONL input line (newline included)."""
        row = {"custom_id": custom_id(index), "method": "POST", "url": self.endpoint,
               "body": self.body(item)}
        return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def model_of(self, item: Any) -> str:
        """The model a request asks for (one model per batch file)."""
        return str(self.body(item).get("model") or "")

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
        return self._extract(response) if self._extract is not None else response


def chunked(lines: Sequence[tuple[int, bytes]], max_requests: int = MAX_REQUESTS,
            max_bytes: int = MAX_BYTES) -> Iterator[list[tuple[int, bytes]]]:
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


class OpenAIBatchClient:
    """The Files and Batches calls of one ``openai.OpenAI`` client.

    Batch creation is sent once (no SDK retry): a retried create whose first attempt did
    reach the server would make a second batch. Reads retry as the SDK does.
    """

    def __init__(self, client: Any) -> None:
        sdk = require("openai", "openai", "openai")
        if isinstance(client, sdk.AsyncOpenAI):
            raise ConfigError("batch mode needs a sync openai.OpenAI client")
        self._reads = client.with_options(max_retries=2)
        self._create = client.with_options(max_retries=0)
        #: Errors after which the same step may be tried again later.
        self.transient: tuple[type[BaseException], ...] = (
            sdk.APIConnectionError, sdk.RateLimitError, sdk.InternalServerError)

    def upload(self, data: bytes, filename: str) -> str:
        """Upload a batch input file; returns its file id."""
        return str(self._reads.files.create(file=(filename, data), purpose="batch").id)

    def create(self, file_id: str, endpoint: str, metadata: Mapping[str, str]) -> Any:
        """Create the batch (sent once); returns the Batch."""
        return self._create.batches.create(input_file_id=file_id, endpoint=endpoint,
                                           completion_window="24h", metadata=dict(metadata))

    def find(self, metadata: Mapping[str, str], since: float) -> Any | None:
        """The newest batch with this exact metadata created after ``since`` (epoch
        seconds), or None. Pages the list until batches older than ``since``."""
        for batch in self._reads.batches.list(limit=100):
            if batch.created_at is not None and batch.created_at < since:
                return None
            if dict(batch.metadata or {}) == dict(metadata):
                return batch
        return None

    def retrieve(self, batch_id: str) -> Any:
        """The batch's current state."""
        return self._reads.batches.retrieve(batch_id)

    def cancel(self, batch_id: str) -> Any:
        """Ask the provider to cancel the batch."""
        return self._reads.batches.cancel(batch_id)

    def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        """The JSON lines of an output or error file (none for no file)."""
        if not file_id:
            return []
        text = self._reads.files.content(file_id).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]
