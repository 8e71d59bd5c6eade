"""Gemini batch mode (google-genai) as a :class:`~throttlepool.batchapi.provider.BatchProvider`
(BATCH-APIS.md §3): requests from a :class:`GenAIAdapter` (``generate_content``) as a JSONL
file of ``{"key", "request"}`` lines, uploaded, one ``batches.create`` per chunk, and the
responses file read back by key.

File mode, not inline requests: inlined responses have come back out of order and without
their metadata (python-genai#1909, #2008), while a file line always carries its key. A batch
has no metadata either; its ``display_name`` (``throttlepool <run id> chunk <n>``) is how a
resume finds one created just before a crash.
"""

from __future__ import annotations

import importlib
import io
import json
from collections.abc import Mapping
from typing import Any

from ..adapters.common import require
from ..adapters.tokens import usage_from
from ..errors import ConfigError, ThrottlepoolError
from .journal import Chunk
from .provider import BatchRequestFailed, BatchState, LineResult, default_custom_id

PROVIDER = "gemini"
MAX_REQUESTS = 50_000  # no documented count limit; the file may be 2 GB
MAX_BYTES = 2 * 1024**3 - 1024**2
ENDED = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                   "JOB_STATE_EXPIRED", "JOB_STATE_PARTIALLY_SUCCEEDED"})
# google.rpc codes a new batch may well not repeat: CANCELLED, DEADLINE_EXCEEDED,
# RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE.
_RETRYABLE_CODES = frozenset({1, 4, 8, 10, 13, 14})
_FIND_SLACK = 600.0  # seconds: a batch's create_time vs our clock
# Config keys that stay outside generationConfig in a GenerateContentRequest.
_TOP_LEVEL = {"system_instruction": "systemInstruction", "safety_settings": "safetySettings",
              "tools": "tools", "tool_config": "toolConfig", "cached_content": "cachedContent"}
_CLIENT_ONLY = frozenset({"http_options", "automatic_function_calling",
                          "should_return_http_response"})


def display_name(tag: Mapping[str, str]) -> str:
    """The batch's display name: the run and chunk it belongs to."""
    return f"throttlepool {tag['throttlepool_run']} chunk {tag['chunk']}"


class GeminiBatch:
    """Gemini batch mode for one GenAIAdapter with method ``generate_content``.

    The create call is sent once (one attempt, whatever the client's ``retry_options``): a
    retried create whose first attempt did reach the server would make a second batch.
    """

    name = PROVIDER

    def __init__(self, adapter: Any, client: Any = None, *, max_requests: int = MAX_REQUESTS,
                 max_bytes: int = MAX_BYTES) -> None:
        if getattr(adapter, "name", None) != PROVIDER or getattr(adapter, "method", None) != (
                "generate_content") or getattr(adapter, "stream", False):
            raise ConfigError(
                "Gemini batch mode takes a GenAIAdapter with method 'generate_content' (not "
                f"streamed), not {getattr(adapter, 'name', type(adapter).__name__)!r} method "
                f"{getattr(adapter, 'method', None)!r}")
        self._types = require("google.genai.types", "google-genai", "gemini")
        errors = require("google.genai.errors", "google-genai", "gemini")
        genai_client = require("google.genai.client", "google-genai", "gemini")
        client = client if client is not None else adapter.client
        if isinstance(client, genai_client.AsyncClient):
            raise ConfigError("batch mode needs a sync google.genai.Client, not client.aio")
        self.adapter = adapter
        self.client = client
        self.max_requests = min(max_requests, MAX_REQUESTS)
        self.max_bytes = min(max_bytes, MAX_BYTES)
        self.transient: tuple[type[BaseException], ...] = (
            errors.ServerError, GeminiThrottled, *_transport_errors())
        self._errors = errors
        self._models: dict[str, str] = {}  # custom id -> model, for create

    # -- requests ---------------------------------------------------------------------------

    def custom_id(self, run_id: str, index: int) -> str:
        """``item-<index>``: the display name, not the key, tells one run from another."""
        return default_custom_id(index)

    def request(self, item: Any) -> dict[str, Any]:
        """``item``'s GenerateContentRequest in the REST (camelCase) form a batch file
        carries. Raises ConfigError for a setting a batch cannot carry."""
        types = self._types
        params = self.adapter.request(item)
        config = {k: v for k, v in params["config"].items() if v is not None}
        used = sorted(k for k in config if k in _CLIENT_ONLY and k != "http_options")
        if used:
            raise ConfigError(f"a batch request cannot carry {', '.join(used)}")
        config.pop("http_options", None)
        body: dict[str, Any] = {"contents": [_jsonable(c) for c in _contents(
            params.get("contents"), types)]}
        for key, wire in _TOP_LEVEL.items():
            if key in config:
                value = config.pop(key)
                body[wire] = _jsonable(
                    _contents(value, types)[0] if key == "system_instruction" else value)
        fields = types.GenerationConfig.model_fields
        unknown = sorted(k for k in config if k not in fields)
        if unknown:
            raise ConfigError(f"a batch request cannot carry the config {', '.join(unknown)}")
        if config:
            body["generationConfig"] = _jsonable(types.GenerationConfig.model_validate(config))
        return body

    def line(self, cid: str, item: Any) -> bytes:
        """One ``{"key", "request"}`` JSONL line (newline included)."""
        row = {"key": cid, "request": self.request(item)}
        self._models[cid] = self.model_of(item)  # the session builds lines before create
        return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def model_of(self, item: Any) -> str:
        """The request's model (a batch is created for one model)."""
        return str(self.adapter.request(item).get("model") or "")

    # -- calls ------------------------------------------------------------------------------

    def upload(self, data: bytes, name: str) -> str | None:
        """Upload the chunk's JSONL file; returns its name (``files/…``)."""
        uploaded = self._throttled(self.client.files.upload, file=io.BytesIO(data), config={
            "mime_type": "application/jsonl", "display_name": name})
        return str(uploaded.name)

    def create(self, chunk: Chunk, data: bytes, tag: Mapping[str, str]) -> BatchState:
        """Create the batch from the uploaded file, for the chunk's model (sent once)."""
        model = self._models[chunk.custom_ids[0]]
        return self._state(self._throttled(
            self.client.batches.create, model=model, src=str(chunk.file_id),
            config={"display_name": display_name(tag),
                    "http_options": {"retry_options": {"attempts": 1}}}))

    def find(self, chunk: Chunk, tag: Mapping[str, str], claimed: set[str]) -> BatchState | None:
        """The newest unclaimed batch with this chunk's display name created since its
        intent, or None."""
        since = chunk.created - _FIND_SLACK
        wanted = display_name(tag)
        for batch in self.client.batches.list(config={"page_size": 100}):
            created = batch.create_time.timestamp() if batch.create_time else None
            if created is not None and created < since:
                return None
            if batch.display_name == wanted and str(batch.name) not in claimed:
                return self._state(batch)
        return None

    def poll(self, batch_id: str) -> BatchState:
        """The batch's current state."""
        return self._state(self._throttled(self.client.batches.get, name=batch_id))

    def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch."""
        self.client.batches.cancel(name=batch_id)

    def results(self, batch: BatchState) -> dict[str, LineResult]:
        """The responses file's lines (or the inlined responses), by key."""
        dest = getattr(batch.raw, "dest", None)
        file_name = getattr(dest, "file_name", None)
        if file_name:
            text = self.client.files.download(file=file_name).decode()
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            return {str(row.get("key")): self.result(row) for row in rows}
        answers: dict[str, LineResult] = {}
        for inlined in getattr(dest, "inlined_responses", None) or ():
            key = (inlined.metadata or {}).get("key")
            if key is not None:  # without its key an answer cannot be placed
                error = inlined.error.model_dump(exclude_none=True) if inlined.error else None
                response = inlined.response.model_dump(mode="json", by_alias=True,
                                                       exclude_none=True) if (
                    inlined.response) else None
                answers[str(key)] = self.result({"response": response, "status": error})
        return answers

    def _throttled(self, call: Any, **kwargs: Any) -> Any:
        """``call(**kwargs)``, a 429 (a ClientError in google-genai) raised as
        GeminiThrottled so the session tries again at the next poll."""
        try:
            return call(**kwargs)
        except self._errors.ClientError as exc:
            if exc.code == 429:
                raise GeminiThrottled(f"429 from the batch API: {exc.message}") from exc
            raise

    @staticmethod
    def _state(job: Any) -> BatchState:
        state = str(getattr(job.state, "value", job.state) or "")
        error = getattr(job, "error", None)
        problem = f" ({getattr(error, 'message', error)})" if error else ""
        return BatchState(str(job.name), state, state in ENDED, 0, 0, problem, job)

    # -- results ----------------------------------------------------------------------------

    def result(self, row: Mapping[str, Any]) -> LineResult:
        """One line (``response`` or a ``status``/``error`` object) as a value or an error."""
        response = row.get("response")
        if isinstance(response, Mapping):
            parsed = self._types.GenerateContentResponse.model_validate(response)
            return LineResult(self.adapter.value_of(parsed), usage_from(parsed))
        status = row.get("status") or row.get("error")
        status = status if isinstance(status, Mapping) else {}
        code = int(status.get("code") or 0)
        message = str(status.get("message") or "no response")
        return LineResult(error=BatchRequestFailed(
            f"code {code}: {message}", code=str(code), retryable=code in _RETRYABLE_CODES))


class GeminiThrottled(ThrottlepoolError):
    """A batch API call got 429 (RESOURCE_EXHAUSTED); the step is tried at the next poll.
    Caught by the batch session, never raised to the caller."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The connection errors of whichever httpx google-genai was given (httpx, httpx2)."""
    found: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _contents(value: Any, types: Any) -> list[Any]:
    """google-genai's ``contents`` forms (a string, a Content, a list of either) as
    Content objects: one user turn for plain strings and parts, as the SDK sends them."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    out: list[Any] = []
    loose: list[Any] = []
    for v in values:
        if isinstance(v, str):
            loose.append(types.Part(text=v))
        elif isinstance(v, types.Part):
            loose.append(v)
        else:
            if loose:
                out.append(types.Content(role="user", parts=loose))
                loose = []
            out.append(v if isinstance(v, types.Content) else types.Content.model_validate(v))
    if loose:
        out.append(types.Content(role="user", parts=loose))
    return out


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
