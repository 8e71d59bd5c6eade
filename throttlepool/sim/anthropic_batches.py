"""Anthropic Message Batches on the simulator (BATCH-APIS.md §2, §6).

Serves ``POST /v1/messages/batches``, ``GET /v1/messages/batches`` (newest first, with
``limit``/``after_id``/``before_id``), ``GET /v1/messages/batches/{id}``,
``GET /v1/messages/batches/{id}/results`` (JSONL, at the absolute ``results_url`` the batch
carries once ended), ``POST .../{id}/cancel`` and ``DELETE .../{id}``. A batch is
``in_progress`` until ``delay`` seconds have passed, then ``ended``; its counts other than
``processing`` stay zero until then, as the real API's do. Requests are answered with the
simulator's own Messages replies (usage included) in shuffled order; ``fail_ids`` /
``fail_rate`` make a request's first submission ``errored`` (``api_error``), a body the
Messages API refuses is ``errored`` (``invalid_request_error``), ``expire_after`` expires the
requests not answered by then and a cancel marks them ``canceled``. Every request of every
created batch is kept in :meth:`AnthropicBatches.submissions`.
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

from throttlepool.sim import anthropic, batch_lifecycle
from throttlepool.sim.batch_lifecycle import BatchRoute, Ending, rfc3339
from throttlepool.sim.formats import BadRequest
from throttlepool.sim.plan import Plan, encode

if TYPE_CHECKING:
    from throttlepool.sim.server import Simulator

PREFIX = "/v1/messages/batches"
_ONE = re.compile(r"^/v1/messages/batches/([A-Za-z0-9_-]+)(/cancel|/results)?$")
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000


@dataclass
class _Batch:
    id: str
    created: float  # wall time
    started: float  # monotonic
    requests: list[dict[str, Any]]
    status: str = "in_progress"
    results: list[dict[str, Any]] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    ended_at: float | None = None
    cancel_at: float | None = None  # monotonic
    cancel_initiated: float | None = None  # wall time


class AnthropicBatches(BatchRoute):
    """The Message Batches endpoints of one simulator (a sim ``Route``)."""

    title = "Message Batches"

    default_max_requests = MAX_REQUESTS

    def forget(self) -> None:
        """Drop every batch."""
        self._batches: dict[str, _Batch] = {}

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str],
               body: bytes) -> Plan | None:
        """The answer to a Message Batches request, or None for other paths."""
        if not path.startswith(PREFIX):
            return None
        base = f"http://{headers.get('host') or '127.0.0.1'}"
        with self._lock:
            plan = self._dispatch(method, path, query, body, base)
        plan.counted = False  # not a model call: kept out of the rate statistics
        return plan

    def _dispatch(self, method: str, path: str, query: str, body: bytes, base: str) -> Plan:
        if path == PREFIX and method == "POST":
            return self._create(body, base)
        if path == PREFIX and method == "GET":
            return encode(200, {}, self._list(query, base))
        m = _ONE.match(path)
        if m is None:
            return _error(404, "not_found_error", f"Unknown path {method} {path}")
        batch = self._batches.get(m.group(1))
        if batch is None:
            return _error(404, "not_found_error", f"No batch with id {m.group(1)}")
        action = m.group(2) or ""
        if action == "/results" and method == "GET":
            self._advance(batch)
            if batch.results is None:
                return _error(400, "invalid_request_error",
                              f"Results of {batch.id} are not available until it has ended.")
            rows = list(batch.results)
            return Plan(200, {"content-type": "application/binary"}, b"".join(
                json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in rows))
        if action == "/cancel" and method == "POST":
            self._advance(batch)
            if batch.status == "in_progress":
                batch.status = "canceling"
                batch.cancel_at, batch.cancel_initiated = time.monotonic(), time.time()
            return encode(200, {}, self._view(batch, base))
        if not action and method == "GET":
            return encode(200, {}, self._view(batch, base))
        if not action and method == "DELETE":
            self._advance(batch)
            if batch.status != "ended":
                return _error(400, "invalid_request_error",
                              "A batch can only be deleted once processing has ended.")
            del self._batches[batch.id]
            return encode(200, {}, {"id": batch.id, "type": "message_batch_deleted"})
        return _error(405, "invalid_request_error", f"Method {method} not allowed on {path}")

    def _create(self, body: bytes, base: str) -> Plan:
        try:
            data = json.loads(body)
        except ValueError:
            return _error(400, "invalid_request_error", "Invalid JSON body.")
        requests = data.get("requests") if isinstance(data, dict) else None
        if not isinstance(requests, list) or not requests:
            return _error(400, "invalid_request_error", "requests: Field required")
        if len(requests) > self.config.max_requests:
            return _error(413, "request_too_large",
                          f"A batch takes at most {self.config.max_requests} requests.")
        seen: set[str] = set()
        for n, req in enumerate(requests):
            cid = req.get("custom_id") if isinstance(req, dict) else None
            if not isinstance(cid, str) or not _CUSTOM_ID.match(cid):
                return _error(400, "invalid_request_error",
                              f"requests.{n}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
            if cid in seen:
                return _error(400, "invalid_request_error",
                              f"requests.{n}.custom_id: duplicate custom_id {cid!r}")
            if not isinstance(req.get("params"), dict):
                return _error(400, "invalid_request_error", f"requests.{n}.params: required")
            seen.add(cid)
        batch = _Batch(f"msgbatch_sim{self.next_seq():04d}{secrets.token_hex(6)}", time.time(),
                       time.monotonic(), requests)
        for req in requests:
            self.log_submission(batch.id, req["custom_id"], params=req["params"])
        self._batches[batch.id] = batch
        return encode(200, {}, self._view(batch, base))

    def _list(self, query: str, base: str) -> dict[str, Any]:
        params = {k: v[0] for k, v in parse_qs(query).items()}
        limit = max(1, min(1000, int(params.get("limit", "20") or 20)))
        ordered = sorted(self._batches.values(), key=lambda b: b.id, reverse=True)
        ids = [b.id for b in ordered]
        if params.get("after_id"):
            after = params["after_id"]
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
        elif params.get("before_id"):
            before = params["before_id"]
            ordered = ordered[:ids.index(before)] if before in ids else []
            ordered = ordered[-limit:]
        page = [self._view(b, base) for b in ordered[:limit]]
        return {"data": page, "has_more": len(ordered) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None}

    def _view(self, batch: _Batch, base: str) -> dict[str, Any]:
        self._advance(batch)
        ended = batch.status == "ended"
        counts = batch.counts if ended else {
            "processing": len(batch.requests), "succeeded": 0, "errored": 0, "canceled": 0,
            "expired": 0}
        return {
            "id": batch.id, "type": "message_batch", "processing_status": batch.status,
            "request_counts": counts, "created_at": rfc3339(batch.created),
            "expires_at": rfc3339(batch.created + 86400),
            "ended_at": rfc3339(batch.ended_at) if batch.ended_at else None,
            "cancel_initiated_at": (rfc3339(batch.cancel_initiated)
                                    if batch.cancel_initiated else None),
            "archived_at": None,
            "results_url": f"{base}{PREFIX}/{batch.id}/results" if ended else None,
        }

    def _advance(self, batch: _Batch) -> None:
        """Move a batch along by the time elapsed since it was created (or cancelled)."""
        if batch.status == "ended":
            return
        now = batch_lifecycle.phase(self.config, batch.started, batch.cancel_at)
        if not isinstance(now, Ending):
            return
        answered = now.answered(len(batch.requests))
        rest = "canceled" if now.outcome == batch_lifecycle.CANCELLED else "expired"
        results = self.shuffled([
            self._answer(req) if n < answered else
            {"custom_id": req["custom_id"], "result": {"type": rest}}
            for n, req in enumerate(batch.requests)])
        kinds = [r["result"]["type"] for r in results]
        batch.counts = {"processing": 0, "succeeded": kinds.count("succeeded"),
                        "errored": kinds.count("errored"), "canceled": kinds.count("canceled"),
                        "expired": kinds.count("expired")}
        batch.results, batch.status, batch.ended_at = results, "ended", time.time()

    def _answer(self, req: dict[str, Any]) -> dict[str, Any]:
        cid = req["custom_id"]
        seq = self.next_seq()
        if self.fails_now(cid):
            return _errored(cid, "api_error", "Internal server error")
        try:
            parsed = anthropic.parse_messages(req["params"])
        except BadRequest as exc:
            return _errored(cid, "invalid_request_error", str(exc))
        if parsed.stream:
            return _errored(cid, "invalid_request_error", "stream: not supported in a batch")
        message = anthropic.message_body(parsed, seq)
        message.setdefault("usage", {})["service_tier"] = "batch"
        return {"custom_id": cid, "result": {"type": "succeeded", "message": message}}


def _errored(cid: str, kind: str, message: str) -> dict[str, Any]:
    return {"custom_id": cid, "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": kind, "message": message}}}}


def _error(status: int, kind: str, message: str) -> Plan:
    return encode(status, {}, {"type": "error", "error": {"type": kind, "message": message}})



def anthropic_batches_of(sim: Simulator) -> AnthropicBatches:
    """The Message Batches endpoints of a running simulator (to configure them or read the
    submission log)."""
    return AnthropicBatches.of(sim)
