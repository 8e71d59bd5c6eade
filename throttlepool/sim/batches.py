"""The OpenAI Files and Batches API on the simulator, for batch mode with no key.

Serves ``POST /v1/files`` (purpose ``batch``), ``GET /v1/files/{id}/content``,
``POST /v1/batches``, ``GET /v1/batches`` (newest first), ``GET /v1/batches/{id}`` and
``POST /v1/batches/{id}/cancel`` with the shapes of BATCH-APIS.md §1. A batch moves
validating → in_progress → finalizing → completed as time passes (batch_lifecycle.py),
is answered line by line with the simulator's own replies (usage included), in shuffled
order, and can be made to fail requests, expire or be cancelled. Every request line of every
created batch is kept in :meth:`OpenAIBatches.submissions`, so tests can check that nothing
was submitted twice.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from throttlepool.sim import batch_lifecycle, errors, routing
from throttlepool.sim.batch_lifecycle import BatchRoute, Ending
from throttlepool.sim.formats import OPENAI, BadRequest
from throttlepool.sim.plan import Plan, encode

if TYPE_CHECKING:
    from throttlepool.sim.server import Simulator

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/completions")
_BATCH = re.compile(r"^/v1/batches/([A-Za-z0-9_-]+)(/cancel)?$")
_CONTENT = re.compile(r"^/v1/files/([A-Za-z0-9_-]+)/content$")
_FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class _Batch:
    id: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    created: float  # wall time
    started: float  # monotonic
    lines: list[dict[str, Any]]
    status: str = "validating"
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    times: dict[str, int] = field(default_factory=dict)
    cancel_at: float | None = None


class OpenAIBatches(BatchRoute):
    """The batch endpoints of one simulator (a :class:`~throttlepool.sim.routing.Route`)."""

    def forget(self) -> None:
        """Drop every file and batch."""
        self._files: dict[str, tuple[bytes, str, str, int]] = {}
        self._batches: dict[str, _Batch] = {}

    # -- routing --------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str],
               body: bytes) -> Plan | None:
        """The answer to a files/batches request, or None for other paths."""
        if not (path.startswith("/v1/files") or path.startswith("/v1/batches")):
            return None
        with self._lock:
            plan = self._dispatch(method, path, query, headers, body)
        plan.counted = False  # not a model call: kept out of the rate statistics
        return plan

    def _dispatch(self, method: str, path: str, query: str, headers: Mapping[str, str],
                  body: bytes) -> Plan:
        if path == "/v1/files" and method == "POST":
            return self._upload(headers, body)
        m = _CONTENT.match(path)
        if m and method == "GET":
            found = self._files.get(m.group(1))
            if found is None:
                return _not_found(f"No such File object: {m.group(1)}")
            return Plan(200, {"content-type": "application/octet-stream"}, found[0])
        if path == "/v1/batches" and method == "POST":
            return self._create(body)
        if path == "/v1/batches" and method == "GET":
            return encode(200, {}, self._list(query))
        m = _BATCH.match(path)
        if m is None or (method, bool(m.group(2))) not in (("GET", False), ("POST", True)):
            return _not_found(f"Unknown path {method} {path}")
        batch = self._batches.get(m.group(1))
        if batch is None:
            return _not_found(f"No such Batch object: {m.group(1)}")
        if m.group(2):
            if batch.status in _FINAL or batch.status == "cancelling":
                return _bad(f"Cannot cancel a batch with status '{batch.status}'.")
            batch.status = "cancelling"
            batch.cancel_at = time.monotonic()
            batch.times["cancelling_at"] = int(time.time())
        return encode(200, {}, self._view(batch))

    # -- files ----------------------------------------------------------------------------

    def _upload(self, headers: Mapping[str, str], body: bytes) -> Plan:
        fields = _multipart(headers.get("content-type", ""), body)
        if fields is None or "file" not in fields:
            return _bad("Expected a multipart upload with a 'file' field.")
        purpose = fields.get("purpose", (b"", ""))[0].decode()
        if purpose != "batch":
            return _bad(f"Unsupported purpose {purpose!r}: this simulator takes 'batch'.")
        data, filename = fields["file"]
        return encode(200, {}, self._store_file(data, filename or "input.jsonl", purpose))

    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-sim{secrets.token_hex(8)}"
        created = int(time.time())
        self._files[file_id] = (data, filename, purpose, created)
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": created,
                "filename": filename, "purpose": purpose, "status": "processed"}

    # -- batches --------------------------------------------------------------------------

    def _create(self, body: bytes) -> Plan:
        try:
            data = json.loads(body)
        except ValueError:
            return _bad("Invalid JSON body.")
        endpoint = data.get("endpoint")
        if endpoint not in ENDPOINTS:
            return _bad(f"Unsupported endpoint {endpoint!r}.")
        if data.get("completion_window") != "24h":
            return _bad("completion_window must be '24h'.")
        found = self._files.get(str(data.get("input_file_id")))
        if found is None:
            return _not_found(f"No such File object: {data.get('input_file_id')}")
        metadata = data.get("metadata")
        batch = _Batch(f"batch_sim{self.next_seq():04d}{secrets.token_hex(4)}", endpoint,
                       data["input_file_id"], metadata if isinstance(metadata, dict) else None,
                       time.time(), time.monotonic(), [])
        batch.errors = self._validate(found[0], batch)
        if batch.errors:
            batch.status = "failed"
            batch.times["failed_at"] = int(time.time())
        else:
            for line in batch.lines:
                self.log_submission(batch.id, line["custom_id"], body=line["body"])
        self._batches[batch.id] = batch
        return encode(200, {}, self._view(batch))

    def _validate(self, data: bytes, batch: _Batch) -> list[dict[str, Any]]:
        seen: set[str] = set()
        for n, raw in enumerate(data.splitlines(), 1):
            try:
                line = json.loads(raw)
            except ValueError:
                return [_line_error("invalid_json_line", n, "This line is not valid JSON.")]
            cid = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(cid, str) or cid in seen:
                return [_line_error("duplicate_custom_id" if cid in seen else "missing_custom_id",
                                    n, "custom_id must be a unique string.")]
            if line.get("method") != "POST" or line.get("url") != batch.endpoint:
                return [_line_error("invalid_url", n,
                                    f"The url must be {batch.endpoint} and the method POST.")]
            seen.add(cid)
            batch.lines.append(line)
        if not batch.lines:
            return [_line_error("empty_file", None, "The input file has no requests.")]
        if len(batch.lines) > self.config.max_requests:
            return [_line_error("too_many_requests", None,
                                f"A batch takes at most {self.config.max_requests} requests.")]
        return []

    def _list(self, query: str) -> dict[str, Any]:
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        limit = max(1, min(100, int(params.get("limit", "20") or 20)))
        ordered = sorted(self._batches.values(), key=lambda b: b.id, reverse=True)
        after = params.get("after")
        if after:
            ids = [b.id for b in ordered]
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
        page = [self._view(b) for b in ordered[:limit]]
        return {"object": "list", "data": page, "has_more": len(ordered) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None}

    def _view(self, batch: _Batch) -> dict[str, Any]:
        self._advance(batch)
        total = len(batch.lines)
        counts = batch.counts or {"total": total if batch.status != "validating" else 0,
                                  "completed": 0, "failed": 0}
        return {
            "id": batch.id, "object": "batch", "endpoint": batch.endpoint,
            "input_file_id": batch.input_file_id, "completion_window": "24h",
            "status": batch.status, "created_at": int(batch.created),
            "expires_at": int(batch.created) + 86400, "metadata": batch.metadata,
            "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
            "errors": ({"object": "list", "data": batch.errors} if batch.errors else None),
            "request_counts": counts, **batch.times,
        }

    def _advance(self, batch: _Batch) -> None:
        """Move a batch along by the time elapsed since it was created (or cancelled)."""
        if batch.status in _FINAL:
            return
        now = batch_lifecycle.phase(self.config, batch.started, batch.cancel_at)
        if isinstance(now, Ending):
            self._finish(batch, now)
        elif now == batch_lifecycle.RUNNING and batch.status == "validating":
            batch.status = "in_progress"
            batch.times["in_progress_at"] = int(time.time())

    def _finish(self, batch: _Batch, ending: Ending) -> None:
        status = ending.outcome
        answered = ending.answered(len(batch.lines))
        outputs: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        why = "batch_expired" if status == "expired" else "batch_cancelled"
        for n, line in enumerate(batch.lines):
            reply = self._answer(batch, line) if n < answered else _error_line(
                line["custom_id"], why, "This request could not be executed before the "
                "completion window expired." if status == "expired" else
                "This request was cancelled.")
            ok = reply["response"] is not None and reply["response"]["status_code"] == 200
            (outputs if ok else failures).append(reply)
        self.shuffled(outputs)
        if outputs:
            batch.output_file_id = self._store_file(_jsonl(outputs), f"{batch.id}_output.jsonl",
                                                    "batch_output")["id"]
        if failures:
            batch.error_file_id = self._store_file(_jsonl(failures), f"{batch.id}_error.jsonl",
                                                   "batch_output")["id"]
        batch.counts = {"total": len(batch.lines), "completed": len(outputs),
                        "failed": len(failures)}
        batch.status = status
        now = int(time.time())
        batch.times.setdefault("in_progress_at", now)
        if status == "completed":
            batch.times["finalizing_at"] = now
        batch.times[f"{status}_at"] = now

    def _answer(self, batch: _Batch, line: dict[str, Any]) -> dict[str, Any]:
        cid = line["custom_id"]
        seq = self.next_seq()
        request_id = f"req_simbatch{seq:x}"
        if self.fails_now(cid):
            status, _, body = errors.fault(OPENAI, 500)
            return _response_line(cid, request_id, status, body)
        to = routing.target(batch.endpoint, "")
        assert to is not None  # the endpoint was checked at creation
        try:
            req = routing.parse(to, json.dumps(line.get("body") or {}).encode())
        except BadRequest as exc:
            status, _, body = errors.fault(OPENAI, 400, str(exc))
            return _response_line(cid, request_id, status, body)
        return _response_line(cid, request_id, 200, routing.reply_body(req, seq))


def _response_line(cid: str, request_id: str, status: int, body: Any) -> dict[str, Any]:
    return {"id": f"batch_req_{request_id[4:]}", "custom_id": cid,
            "response": {"status_code": status, "request_id": request_id, "body": body},
            "error": None}


def _error_line(cid: str, code: str, message: str) -> dict[str, Any]:
    return {"id": f"batch_req_{secrets.token_hex(6)}", "custom_id": cid, "response": None,
            "error": {"code": code, "message": message}}


def _line_error(code: str, line: int | None, message: str) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": None}


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in rows)


def _bad(message: str) -> Plan:
    status, headers, body = errors.fault(OPENAI, 400, message)
    return encode(status, headers, body)


def _not_found(message: str) -> Plan:
    status, headers, body = errors.fault(OPENAI, 404, message)
    return encode(status, headers, body)


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[bytes, str]] | None:
    """The fields of a multipart/form-data body: name -> (bytes, filename)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or m is None:
        return None
    fields: dict[str, tuple[bytes, str]] = {}
    for part in body.split(b"--" + m.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        disposition = head.decode("latin-1")
        name = re.search(r'name="([^"]*)"', disposition)
        filename = re.search(r'filename="([^"]*)"', disposition)
        if name is not None:
            fields[name.group(1)] = (data.removesuffix(b"\r\n"),
                                     filename.group(1) if filename else "")
    return fields


def batches_of(sim: Simulator) -> OpenAIBatches:
    """The batch endpoints of a running simulator (to configure them or read submissions)."""
    for route in sim.state.routes:
        if isinstance(route, OpenAIBatches):
            return route
    raise LookupError("this simulator serves no batch endpoints")
