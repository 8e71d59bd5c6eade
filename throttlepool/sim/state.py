"""The simulator's brain: routing, limits, faults, scripts and statistics, with no socket code."""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from throttlepool.sim import anthropic, errors, routing, stream
from throttlepool.sim.config import SimConfig
from throttlepool.sim.formats import GEMINI, OPENAI, BadRequest, Request
from throttlepool.sim.plan import Plan, encode, key_labels, validate_step
from throttlepool.sim.routing import RouteFactory, Target
from throttlepool.sim.window import AdmissionLog, Decision, Limits, Windows

_FAULT_TAG = re.compile(rb"\[\[fault:([a-z0-9]+)\]\]")
_FAULT_ORDER = ("500", "503", "529", "reset", "hang", "break")
_PRE_FAULTS = frozenset({"400", "401", "quota"})
_POST_FAULTS = frozenset(_FAULT_ORDER)


class SimState:
    """Shared state of one simulator; every method is thread-safe."""

    def __init__(self, config: SimConfig, routes: Sequence[RouteFactory] = ()) -> None:
        self.config = config
        self._wall_offset = time.time() - time.monotonic()
        self.stop_event = threading.Event()
        self._lock = threading.Lock()  # the admission window; held for the check only
        self._stats_lock = threading.Lock()  # counters, scripts, the random generator
        self._windows = Windows()
        self._log = AdmissionLog()
        self._in_flight = 0
        self._clear()
        self.routes = [make(self) for make in routes]

    def _clear(self) -> None:
        self._rng = random.Random(self.config.seed)
        self._scripts: deque[dict[str, Any]] = deque()
        self._seq = 0
        self._total = 0
        self._peak = self._in_flight  # requests in flight survive a reset
        self._by_status: dict[int, int] = {}
        self._by_path: dict[str, int] = {}
        self._faults: dict[str, int] = {}
        self._limited = 0
        self._scripted = 0
        self._tokens = self._inputs = self._outputs = 0  # guarded by _lock, like the log
        self._seen: set[int] = set()
        self._duplicates = 0
        self._abandoned = 0

    def reset(self) -> None:
        """Clear windows, statistics and pending scripts; reseed the fault generator."""
        with self._lock, self._stats_lock:
            self._windows.clear()
            self._log.clear()
            self._clear()
        for route in self.routes:
            route.reset()

    def configure(self, changes: Mapping[str, Any]) -> SimConfig:
        """Apply config changes at runtime; windows and stats are kept."""
        with self._lock, self._stats_lock:
            self.config = self.config.updated(changes)
            if "seed" in changes:
                self._rng = random.Random(self.config.seed)
            return self.config

    def script(self, steps: Sequence[Mapping[str, Any]]) -> int:
        """Queue scripted responses for the next API requests; returns the queue length."""
        checked = [validate_step(s) for s in steps]
        with self._stats_lock:
            self._scripts.extend(checked)
            return len(self._scripts)

    # -- the hot path -------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Plan:
        """Decide the response to one request (admin endpoints included)."""
        path, _, query = target.partition("?")
        if path.startswith("/__"):
            return self._admin(method, path, body)
        for route in self.routes:
            answer = route.handle(method, path, query, headers, body)
            if answer is not None:
                return answer
        to = routing.target(path, query)
        if to is None:
            return self._admin_reply(404, {"error": {"code": 404, "status": "NOT_FOUND",
                                                     "message": f"Unknown path {path}"}})
        api = to.api
        if method != "POST":
            plan = encode(*errors.fault(api, 404, f"{method} {path} is not supported"))
            plan.counted = False
            return plan

        cfg = self.config
        with self._stats_lock:
            self._seq += 1
            seq = self._seq
            self._total += 1
            self._in_flight += 1
            if self._in_flight > self._peak:
                self._peak = self._in_flight
            self._by_path[path] = self._by_path.get(path, 0) + 1
            step = self._scripts.popleft() if self._scripts else None
            if step is not None:
                self._scripted += 1
            u_fault = self._rng.random()
            u_jitter = self._rng.random()

        # 64 bits keep the duplicate set small; a collision among a million bodies is ~1e-8.
        digest = int.from_bytes(
            hashlib.blake2b(path.encode() + b"\0" + body, digest_size=8).digest()
        )
        if step is not None:
            return self._scripted_plan(step, to, body, seq, digest)

        tag = _FAULT_TAG.search(body) if b"[[fault:" in body else None
        content_fault = tag.group(1).decode() if tag else ""
        if content_fault in _PRE_FAULTS:
            if content_fault == "quota":
                return encode(*errors.quota_exceeded(api))
            return encode(*errors.fault(api, int(content_fault)))

        try:
            req = routing.parse(to, body)
        except BadRequest as exc:
            return encode(*errors.fault(api, 400, str(exc)))

        if to.endpoint == "count_tokens":  # free: charged to no window, as Anthropic's is
            return encode(200, {"request-id": f"req_sim{seq:x}"},
                          {"input_tokens": req.prompt_tokens})
        key = routing.api_key(headers, query) if cfg.per_key else "*"
        charge = req.charge
        io = Limits(cfg.itpm, cfg.otpm, req.input_charge, req.output_charge)
        with self._lock:
            now = time.monotonic()
            decision = self._windows.admit(key, charge, now, cfg.rpm, cfg.tpm, cfg.window, io)
            if decision.admitted:
                self._log.add(key, now, charge, io.input_cost, io.output_cost)
                self._tokens += charge
                self._inputs += io.input_cost
                self._outputs += io.output_cost

        if not decision.admitted:
            if decision.too_large:
                return encode(*errors.too_large(api, req.model, decision, cfg, charge, io))
            with self._stats_lock:
                self._limited += 1
            return encode(*errors.rate_limited(api, req.model, decision, cfg, charge, io))

        delay = max(0.0, cfg.latency + cfg.jitter * (2.0 * u_jitter - 1.0))
        kind = content_fault if content_fault in _POST_FAULTS else self._draw(u_fault)
        if kind:
            with self._stats_lock:
                self._faults[kind] = self._faults.get(kind, 0) + 1
        if kind in ("500", "503", "529"):
            plan = encode(*errors.fault(api, int(kind)))
            plan.delay = delay
            return plan
        plan = self._success(req, to, seq, self._rate_headers(api, decision, seq))
        plan.delay = delay + (cfg.hang_seconds if kind == "hang" else 0.0)
        plan.reset = kind == "reset"
        if kind == "break":
            plan.break_after = cfg.stream_break_after
        plan.digest = digest
        return plan

    def _rate_headers(self, api: str, decision: Decision, seq: int) -> dict[str, str]:
        cfg = self.config
        headers = {}
        if api == anthropic.ANTHROPIC:
            headers = anthropic.ratelimit_headers(decision, cfg)
            headers["request-id"] = f"req_sim{seq:x}"
        elif api != GEMINI or cfg.gemini_headers:
            headers = errors.ratelimit_headers(decision, cfg.rpm, cfg.tpm)
        if api == OPENAI:
            headers["x-request-id"] = f"req_sim{seq:x}"
        return headers

    def _success(self, req: Request, to: Target, seq: int, headers: dict[str, str]) -> Plan:
        """A 200: the reply body, or its stream of events when the request asks for one."""
        if not req.stream:
            return encode(200, headers, routing.reply_body(req, seq))
        stream_headers, events = stream.events(req, seq, to.sse)
        return Plan(200, {**stream_headers, **headers}, b"", events=events,
                    first_delay=self.config.first_token_delay,
                    interval=self.config.chunk_interval)

    def done(self, plan: Plan, delivered: bool = True) -> None:
        """Record that a planned response is being sent, or was not (client gone, reset)."""
        if not plan.counted:
            return
        with self._stats_lock:
            self._in_flight -= 1
            if not delivered:
                self._abandoned += 1
                return
            if plan.reset or plan.break_after is not None:
                return  # dropped midway: a fault, not an answer
            self._by_status[plan.status] = self._by_status.get(plan.status, 0) + 1
            if plan.status == 200 and plan.digest is not None:
                if plan.digest in self._seen:
                    self._duplicates += 1
                else:
                    self._seen.add(plan.digest)

    # -- helpers ----------------------------------------------------------------------

    def _draw(self, u: float) -> str:
        rates = self.config.fail_rate
        if not rates:
            return ""
        acc = 0.0
        for kind in _FAULT_ORDER:
            acc += rates.get(kind, 0.0)
            if u < acc:
                return kind
        return ""

    def _scripted_plan(self, step: dict[str, Any], to: Target, body: bytes, seq: int,
                       digest: int) -> Plan:
        status: int = step["status"]
        if "body" in step:
            plan = encode(status, step["headers"], step["body"])
        elif 200 <= status < 300:
            try:
                plan = self._success(routing.parse(to, body), to, seq, dict(step["headers"]))
                plan.status = status
            except BadRequest as exc:
                plan = encode(*errors.fault(to.api, 400, str(exc)))
        elif to.api == GEMINI:
            plan = encode(*errors.gemini_error(status, f"Scripted error {status}"))
        elif to.api == anthropic.ANTHROPIC:
            plan = encode(*anthropic.error(status, f"Scripted error {status}"))
        else:
            plan = encode(*errors.openai_error(status, f"Scripted error {status}", "api_error",
                                               None))
        if "body" not in step and not 200 <= status < 300:
            plan.headers.update(step["headers"])
        plan.delay = step["delay"]
        plan.reset = bool(step.get("reset", False))
        plan.break_after = step.get("break_after")
        if step.get("error_after") is not None and plan.events is not None:
            plan.break_after = step["error_after"]
            plan.error_event = stream.error_event(to.api)
        plan.digest = digest
        return plan

    def _admin(self, method: str, path: str, body: bytes) -> Plan:
        try:
            data: Any = json.loads(body) if body.strip() else None
        except ValueError:
            return self._admin_reply(400, {"error": "invalid JSON"})
        try:
            if path == "/__stats" and method == "GET":
                return self._admin_reply(200, self.stats())
            if path == "/__reset" and method == "POST":
                self.reset()
                return self._admin_reply(200, {"ok": True})
            if path == "/__config" and method == "POST":
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object of config fields")
                return self._admin_reply(200, self.configure(data).to_dict())
            if path == "/__config" and method == "GET":
                return self._admin_reply(200, self.config.to_dict())
            if path == "/__script" and method == "POST":
                steps = data.get("steps") if isinstance(data, dict) else data
                if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
                    raise ValueError("expected a JSON array of steps")
                return self._admin_reply(200, {"pending": self.script(steps)})
        except (TypeError, ValueError) as exc:
            return self._admin_reply(400, {"error": str(exc)})
        return self._admin_reply(404, {"error": f"no admin endpoint {method} {path}"})

    @staticmethod
    def _admin_reply(status: int, body: Any) -> Plan:
        plan = encode(status, {}, body)
        plan.counted = False
        return plan

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset, and exact per-window maxima from the admission log.

        requests: API requests received (admin endpoints excluded); by_status: responses sent,
        by code (dropped connections are in faults only); rate_limited: every 429 sent;
        limiter_rejections: the 429s of the sliding window alone; accepted: admissions into
        the window (charged, including those a 500/503/reset/hang fault struck afterwards);
        max_requests_in_window / max_tokens_in_window (and max_input_/max_output_tokens_...,
        the ITPM/OTPM charges: prompt estimate, output generated): the most admitted in
        any window of the current length, over all keys and in per_key (per_key_io);
        duplicates: 200s for a (path, body) already answered with a 200; abandoned: delayed
        replies (latency, hang) not sent because the client had hung up by then;
        first/last_admission: epoch seconds.
        """
        with self._lock:
            window = self.config.window
            (max_req, max_tok), per_key = self._log.maxima(window)
            (max_in, max_out), per_key_io = self._log.io_maxima(window)
            first, last = self._log.first_last()
            accepted = len(self._log)
            per_key_counts = self._log.counts()
            tokens, inputs, outputs = self._tokens, self._inputs, self._outputs
        labels = key_labels(list(per_key))
        with self._stats_lock:
            return {
                "requests": self._total,
                "by_status": {str(k): v for k, v in sorted(self._by_status.items())},
                "rate_limited": self._by_status.get(429, 0),
                "limiter_rejections": self._limited,
                "accepted": accepted,
                "tokens_charged": tokens,
                "input_tokens_charged": inputs,
                "output_tokens_charged": outputs,
                "window": window,
                "max_requests_in_window": max_req,
                "max_tokens_in_window": max_tok,
                "max_input_tokens_in_window": max_in,
                "max_output_tokens_in_window": max_out,
                "per_key": {
                    labels[k]: {
                        "accepted": per_key_counts[k],
                        "max_requests_in_window": v[0],
                        "max_tokens_in_window": v[1],
                    }
                    for k, v in per_key.items()
                },
                "per_key_io": {
                    labels[k]: {"max_input_tokens_in_window": v[0],
                                "max_output_tokens_in_window": v[1]}
                    for k, v in per_key_io.items()
                },
                "peak_concurrency": self._peak,
                "in_flight": self._in_flight,
                "duplicates": self._duplicates,
                "abandoned": self._abandoned,
                "requests_by_path": dict(self._by_path),
                "faults": dict(self._faults),
                "scripted": self._scripted,
                "script_pending": len(self._scripts),
                "first_admission": None if first is None else first + self._wall_offset,
                "last_admission": None if last is None else last + self._wall_offset,
            }
