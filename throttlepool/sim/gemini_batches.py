"""Gemini batch mode on the simulator (BATCH-APIS.md §3, §6), for the google-genai SDK.

Serves, under ``/v1`` and ``/v1beta``: ``POST /{ver}/models/{model}:batchGenerateContent``
(requests inline, or a JSONL file ``files/…`` of ``{"key", "request"}`` lines), ``GET
/{ver}/batches`` (newest first, ``pageSize``/``pageToken``), ``GET /{ver}/batches/{id}``,
``POST /{ver}/batches/{id}:cancel``, ``DELETE /{ver}/batches/{id}``, the resumable upload
``POST /upload/{ver}/files`` (start, then upload+finalize at the ``x-goog-upload-url`` it
returns) and ``GET /{ver}/files/{id}:download``. A batch is an Operation whose state goes
PENDING → RUNNING → SUCCEEDED (or EXPIRED / CANCELLED) as time passes (batch_lifecycle.py).
A file batch's answers are a JSONL file of ``{"key", "response"}`` or ``{"key", "status"}``
lines in shuffled order; an inline batch's are ``inlinedResponses`` in request order. A
request not answered before expiry or a cancel has no line. Every request of every created
batch is kept in :meth:`GeminiBatches.submissions` (``custom_id`` is its key). ``/v1/batches``
is also OpenAI's path: a request there is Gemini's when it carries ``x-goog-api-key``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from throttlepool.sim import batch_lifecycle, errors, routing
from throttlepool.sim.batch_lifecycle import BatchRoute, Ending, rfc3339
from throttlepool.sim.formats import GEMINI, BadRequest
from throttlepool.sim.plan import Plan, encode

if TYPE_CHECKING:
    from throttlepool.sim.server import Simulator

_VER = r"(v1beta|v1|v1alpha)"
_CREATE = re.compile(rf"^/{_VER}/models/([^/:]+):batchGenerateContent$")
_LIST = re.compile(rf"^/{_VER}/batches$")
_ONE = re.compile(rf"^/{_VER}/batches/([A-Za-z0-9_-]+)(:cancel)?$")
_UPLOAD = re.compile(rf"^/upload/{_VER}/files$")
_DOWNLOAD = re.compile(rf"^/{_VER}/files/([A-Za-z0-9_-]+):download$")
_STATE = {batch_lifecycle.VALIDATING: "BATCH_STATE_PENDING",
          batch_lifecycle.RUNNING: "BATCH_STATE_RUNNING",
          batch_lifecycle.COMPLETED: "BATCH_STATE_SUCCEEDED",
          batch_lifecycle.EXPIRED: "BATCH_STATE_EXPIRED",
          batch_lifecycle.CANCELLED: "BATCH_STATE_CANCELLED"}
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
_INTERNAL = 13  # google.rpc.Code INTERNAL: a failed request's status
_INVALID = 3  # INVALID_ARGUMENT


@dataclass
class _Batch:
    id: str
    model: str
    display_name: str
    created: float  # wall time
    started: float  # monotonic
    requests: list[tuple[str, dict[str, Any]]]  # (key, GenerateContentRequest)
    from_file: bool
    state: str = "BATCH_STATE_PENDING"
    updated: float = 0.0
    ended: float | None = None
    cancel_at: float | None = None  # monotonic
    output: dict[str, Any] = field(default_factory=dict)


class GeminiBatches(BatchRoute):
    """The Gemini batch and file endpoints of one simulator (a sim ``Route``)."""

    title = "Gemini batch"

    def forget(self) -> None:
        """Drop every batch, file and unfinished upload."""
        self._batches: dict[str, _Batch] = {}
        self._files: dict[str, bytes] = {}
        self._uploads: dict[str, dict[str, Any]] = {}

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str],
               body: bytes) -> Plan | None:
        """The answer to a Gemini batch or file request, or None for other paths."""
        if not (_CREATE.match(path) or _UPLOAD.match(path) or _DOWNLOAD.match(path)
                or ((_LIST.match(path) or _ONE.match(path)) and _speaks_gemini(headers, query))):
            return None
        base = f"http://{headers.get('host') or '127.0.0.1'}"
        with self._lock:
            plan = self._dispatch(method, path, query, headers, body, base)
        plan.counted = False  # not a model call: kept out of the rate statistics
        return plan

    def _dispatch(self, method: str, path: str, query: str, headers: Mapping[str, str],
                  body: bytes, base: str) -> Plan:
        if (m := _CREATE.match(path)) and method == "POST":
            return self._create(m.group(2), body)
        if _LIST.match(path) and method == "GET":
            return encode(200, {}, self._list(query))
        if m := _UPLOAD.match(path):
            return self._upload(m.group(1), query, headers, body, base)
        if (m := _DOWNLOAD.match(path)) and method == "GET":
            data = self._files.get(m.group(2))
            if data is None:
                return _error(404, f"File files/{m.group(2)} was not found.")
            return Plan(200, {"content-type": "application/octet-stream"}, data)
        m = _ONE.match(path)
        batch = self._batches.get(m.group(2)) if m else None
        if m is None or batch is None:
            return _error(404, f"Unknown batch or path {method} {path}")
        if m.group(3) and method == "POST":
            self._advance(batch)
            if batch.ended is None and batch.cancel_at is None:
                batch.cancel_at = time.monotonic()
            return encode(200, {}, {})
        if method == "DELETE":
            del self._batches[batch.id]
            return encode(200, {}, {})
        if method == "GET" and not m.group(3):
            return encode(200, {}, self._view(batch))
        return _error(405, f"Method {method} not allowed on {path}")

    # -- files ------------------------------------------------------------------------------

    def _upload(self, ver: str, query: str, headers: Mapping[str, str], body: bytes,
                base: str) -> Plan:
        command = headers.get("x-goog-upload-command", "")
        upload_id = parse_qs(query).get("upload_id", [""])[0]
        if command == "start":
            upload_id = secrets.token_hex(8)
            meta = json.loads(body or b"{}").get("file") or {}
            self._uploads[upload_id] = meta if isinstance(meta, dict) else {}
            url = f"{base}/upload/{ver}/files?upload_id={upload_id}"
            return Plan(200, {"x-goog-upload-url": url, "x-goog-upload-status": "active",
                              "content-type": "application/json"}, b"{}")
        if "upload" in command and upload_id in self._uploads:
            meta = self._uploads.pop(upload_id)
            file_id = f"sim{self.next_seq():04d}{secrets.token_hex(4)}"
            self._files[file_id] = body
            info = {"name": f"files/{file_id}", "displayName": meta.get("displayName", ""),
                    "mimeType": meta.get("mimeType", "application/jsonl"),
                    "sizeBytes": str(len(body)), "state": "ACTIVE",
                    "createTime": rfc3339(time.time()), "uri": f"{base}/{ver}/files/{file_id}"}
            return Plan(200, {"x-goog-upload-status": "final",
                              "content-type": "application/json"},
                        json.dumps({"file": info}).encode())
        return _error(400, "Expected an upload start, or an upload to a started upload_id.")

    # -- batches ----------------------------------------------------------------------------

    def _create(self, model: str, body: bytes) -> Plan:
        try:
            batch_spec = json.loads(body).get("batch") or {}
            config = batch_spec.get("inputConfig") or {}
        except (ValueError, AttributeError):
            return _error(400, "Invalid JSON payload received.")
        if config.get("fileName"):
            data = self._files.get(str(config["fileName"]).removeprefix("files/"))
            if data is None:
                return _error(404, f"File {config['fileName']} was not found.")
            try:
                rows = [json.loads(line) for line in data.splitlines() if line.strip()]
                requests = [(str(r["key"]), dict(r["request"])) for r in rows]
            except (ValueError, KeyError, TypeError):
                return _error(400, "Each line of the input file needs a key and a request.")
            from_file = True
        else:
            inline = (config.get("requests") or {}).get("requests") or []
            requests = [(str((r.get("metadata") or {}).get("key", n)), dict(r["request"]))
                        for n, r in enumerate(inline)]
            from_file = False
        if not requests:
            return _error(400, "* BatchGenerateContentRequest.batch.input_config: no requests")
        if len(requests) > self.config.max_requests:
            return _error(400, f"A batch takes at most {self.config.max_requests} requests.")
        if from_file and len({k for k, _ in requests}) != len(requests):
            return _error(400, "Keys in the input file must be unique.")
        now = time.time()
        batch = _Batch(f"sim{self.next_seq():04d}{secrets.token_hex(6)}", model,
                       str(batch_spec.get("displayName") or ""), now, time.monotonic(),
                       requests, from_file, updated=now)
        for key, request in requests:
            self.log_submission(batch.id, key, request=request)
        self._batches[batch.id] = batch
        return encode(200, {}, self._view(batch))

    def _list(self, query: str) -> dict[str, Any]:
        params = {k: v[0] for k, v in parse_qs(query).items()}
        size = max(1, min(1000, int(params.get("pageSize", "50") or 50)))
        ordered = sorted(self._batches.values(), key=lambda b: b.id, reverse=True)
        start = int(params.get("pageToken") or 0)
        page = [self._view(b) for b in ordered[start:start + size]]
        more = start + size < len(ordered)
        return {"operations": page, **({"nextPageToken": str(start + size)} if more else {})}

    def _view(self, batch: _Batch) -> dict[str, Any]:
        self._advance(batch)
        meta: dict[str, Any] = {
            "@type": _TYPE, "model": f"models/{batch.model}", "displayName": batch.display_name,
            "state": batch.state, "createTime": rfc3339(batch.created),
            "updateTime": rfc3339(batch.updated),
            "batchStats": {"requestCount": str(len(batch.requests))}}
        view: dict[str, Any] = {"name": f"batches/{batch.id}", "metadata": meta,
                                "done": batch.ended is not None}
        if batch.ended is not None:
            meta["endTime"] = rfc3339(batch.ended)
            meta["output"] = batch.output
            view["response"] = {"@type": _TYPE.replace("Batch", "BatchOutput"), **batch.output}
        return view

    def _advance(self, batch: _Batch) -> None:
        """Move a batch along by the time elapsed since it was created (or cancelled)."""
        if batch.ended is not None:
            return
        now = batch_lifecycle.phase(self.config, batch.started, batch.cancel_at)
        if not isinstance(now, Ending):
            state = _STATE[now]
            if state != batch.state:
                batch.state, batch.updated = state, time.time()
            return
        answered = batch.requests[:now.answered(len(batch.requests))]
        if batch.from_file:
            lines = self.shuffled([{"key": key, **self._answer(batch.model, key, req)}
                                   for key, req in answered])
            file_id = f"batch-{batch.id}"
            self._files[file_id] = b"".join(
                json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in lines)
            batch.output = {"responsesFile": f"files/{file_id}"}
        else:
            batch.output = {"inlinedResponses": {"inlinedResponses": [
                {**_inline(self._answer(batch.model, key, req)), "metadata": {"key": key}}
                for key, req in answered]}}
        batch.state, batch.ended = _STATE[now.outcome], time.time()
        batch.updated = batch.ended

    def _answer(self, model: str, key: str, request: dict[str, Any]) -> dict[str, Any]:
        """``{"response": …}`` or ``{"status": {code, message}}`` for one request."""
        seq = self.next_seq()
        if self.fails_now(key):
            return {"status": {"code": _INTERNAL, "message": "Internal error encountered."}}
        try:
            req = routing.parse(routing.Target("generate", GEMINI, model),
                                json.dumps(request).encode())
        except BadRequest as exc:
            return {"status": {"code": _INVALID, "message": str(exc)}}
        return {"response": routing.reply_body(req, seq)}


def _speaks_gemini(headers: Mapping[str, str], query: str) -> bool:
    """``/v1/batches`` is OpenAI's path too: Gemini's requests carry its key header."""
    return bool(headers.get("x-goog-api-key")) or "key" in parse_qs(query)


def _inline(answer: dict[str, Any]) -> dict[str, Any]:
    """An inlined response names a failure ``error``, where a file line says ``status``."""
    return {"error": answer["status"]} if "status" in answer else answer


def _error(status: int, message: str) -> Plan:
    code, headers, body = errors.fault(GEMINI, status, message)
    return encode(code, headers, body)



def gemini_batches_of(sim: Simulator) -> GeminiBatches:
    """The Gemini batch endpoints of a running simulator (to configure them or read the
    submission log)."""
    return GeminiBatches.of(sim)
