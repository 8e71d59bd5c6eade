"""The HTTP side of the simulator: a threaded stdlib server, `Simulator` and `serve`."""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from throttlepool.sim.anthropic_batches import AnthropicBatches
from throttlepool.sim.batches import OpenAIBatches
from throttlepool.sim.config import SimConfig
from throttlepool.sim.gemini_batches import GeminiBatches
from throttlepool.sim.plan import Plan, encode, key_labels
from throttlepool.sim.routing import RouteFactory
from throttlepool.sim.state import SimState

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}
_QUIET_ERRORS = (ConnectionError, TimeoutError, OSError)
_MAX_LINE = 65536
_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)
_MAX_HEADERS = 100
#: API requests kept for ``Simulator.requests()`` and ``GET /__requests`` (tests read them).
REQUEST_LOG_SIZE = 1000

#: Extra endpoints, each built once per Simulator from its state and tried before the
#: built-in API paths (see :class:`throttlepool.sim.routing.Route`). Register one here.
# Gemini first: it takes the /v1/batches requests that carry its key header, OpenAI the rest.
ROUTES: tuple[RouteFactory, ...] = (GeminiBatches, OpenAIBatches, AnthropicBatches)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in one write anyway
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would dominate the hot path and flood the terminal

    def handle_one_request(self) -> None:
        # A lean HTTP/1.1 reader: the stdlib's email-based header parser costs more than
        # everything else the simulator does per request.
        try:
            line = self.rfile.readline(_MAX_LINE + 1)
            if not line:
                self.close_connection = True
                return
            parts = line.split()
            if len(line) > _MAX_LINE or len(parts) != 3:
                self._fail(400, b"bad request line")
                return
            method, target, version = (p.decode("latin-1") for p in parts)
            headers: dict[str, str] = {}
            for _ in range(_MAX_HEADERS):
                raw = self.rfile.readline(_MAX_LINE + 1)
                if raw in (b"\r\n", b"\n", b""):
                    break
                name, _, value = raw.partition(b":")
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
            else:
                self._fail(431, b"too many headers")
                return
            self.command, self.path, self.request_version = method, target, version
            conn = headers.get("connection", "").lower()
            self.close_connection = conn == "close" or (
                version == "HTTP/1.0" and conn != "keep-alive"
            )
            body = self._read_body(headers)
        except (TimeoutError, ValueError):
            self.close_connection = True
            return
        self._serve(method, target, headers, body)

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline(_MAX_LINE).split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(_MAX_LINE)
        length = int(headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _fail(self, status: int, message: bytes) -> None:
        self.close_connection = True
        self._write(Plan(status, {"content-type": "text/plain"}, message))

    def _serve(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        state = self.server.state
        if target.startswith("/__requests"):
            self._write(encode(200, {}, self.server.logged()))
            return
        if target.startswith("/__reset"):
            self.server.forget_requests()
        elif not target.startswith("/__"):
            self.server.log_request(method, target, headers, body)
        try:
            plan = state.handle(method, target, headers, body)
        except Exception as exc:  # a simulator bug must still answer, not hang the client
            print(f"throttlepool sim: internal error: {exc!r}", file=sys.stderr)
            plan = Plan(
                500,
                {"content-type": "application/json"},
                b'{"error":{"message":"internal simulator error","type":"server_error"}}',
                counted=False,
            )
        # Counted before the write, so a client that reads /__stats right after its
        # response already sees it.
        gone = False
        if plan.delay > 0.0:
            gone = state.stop_event.wait(plan.delay) or self._peer_closed()
        state.done(plan, delivered=not gone)
        if gone:
            self.close_connection = True
        elif plan.reset:
            self._reset()
        elif plan.events is not None:
            self._write_stream(plan)
        else:
            self._write(plan)

    def _peer_closed(self) -> bool:
        # A client that timed out has closed its end: what it left behind reads as EOF.
        # (A write would not tell: the first send after the peer's FIN still succeeds.)
        if not _DONTWAIT:
            return False  # no non-blocking peek on this platform: assume the client waits
        try:
            data: bytes = self.connection.recv(1, socket.MSG_PEEK | _DONTWAIT)
            return data == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send RST: the client sees a dropped connection, no reply.
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    def _head(self, plan: Plan, framing: str) -> bytes:
        lines = [f"HTTP/1.1 {plan.status} {_REASONS.get(plan.status, 'Status')}"]
        # The framing is ours: a scripted content-length would corrupt the connection.
        lines.extend(f"{k}: {v}" for k, v in plan.headers.items()
                     if k not in ("content-length", "transfer-encoding"))
        lines.append(framing)
        if self.close_connection:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _write(self, plan: Plan) -> None:
        head = self._head(plan, f"content-length: {len(plan.body)}")
        if plan.break_after is not None:  # a "break" fault: half the body, then a dropped line
            self.wfile.write(head + plan.body[: len(plan.body) // 2])
            self._reset()
            return
        self.wfile.write(head + plan.body)

    def _write_stream(self, plan: Plan) -> None:
        # Chunked framing keeps the connection reusable; each event is flushed on its own
        # (wfile is unbuffered), after the time to first token, then the chunk interval.
        events = plan.events or []
        self.wfile.write(self._head(plan, "transfer-encoding: chunked"))
        stop = self.server.state.stop_event
        for i, event in enumerate(events):
            if plan.break_after is not None and i >= plan.break_after:
                if plan.error_event is not None:  # the service's own mid-stream error
                    event = plan.error_event
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))
                    return
                self._reset()  # no terminating chunk: the client sees the stream broken
                return
            wait = plan.first_delay if i == 0 else plan.interval
            if wait > 0.0 and stop.wait(wait):
                self.close_connection = True
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        if plan.break_after is not None and plan.break_after >= len(events):
            self._reset()  # all events sent, the end of the stream never comes
            return
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SimState) -> None:
        self.state = state
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._log: deque[tuple[str, str, dict[str, str], bytes]] = deque(
            maxlen=REQUEST_LOG_SIZE)
        super().__init__(address, _Handler)

    def log_request(self, method: str, target: str, headers: dict[str, str],
                    body: bytes) -> None:
        # Raw bytes only: decoding waits for a reader, off the hot path. deque.append is
        # atomic, so the handler threads need no lock for it.
        self._log.append((method, target, headers, body))

    def forget_requests(self) -> None:
        """Empty the request log."""
        self._log.clear()

    def logged(self) -> list[dict[str, Any]]:
        """The last requests, oldest first, bodies decoded and API keys shortened."""
        out = []
        for method, target, headers, body in list(self._log):
            try:
                decoded: Any = json.loads(body) if body else None
            except ValueError:
                decoded = body.decode("utf-8", "replace")
            out.append({"method": method, "path": target, "headers": _masked(headers),
                        "body": decoded})
        return out

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            if alive:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def drop_connections(self) -> None:
        # Idle keep-alive threads block in recv() until the peer goes; wake them on stop.
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], _QUIET_ERRORS):
            return  # clients that time out or hang up are part of the simulation
        super().handle_error(request, client_address)


class Simulator:
    """A rate-limited OpenAI/Anthropic/Gemini-compatible API server on loopback, in a thread."""

    def __init__(
        self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = SimState(config or SimConfig(), ROUTES)
        self._host, self._port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> SimConfig:
        """The current configuration."""
        return self.state.config

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT (also the Gemini base URL / api_endpoint)."""
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for the openai SDK: url + "/v1"."""
        return self.url + "/v1"

    def start(self) -> Simulator:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self.state.stop_event.clear()
        self._server = _Server((self._host, self._port), self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"throttlepool-sim-{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake hanging handlers, close every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self.state.stop_event.set()
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Counters and exact window maxima; the same JSON as GET /__stats."""
        return self.state.stats()

    def requests(self) -> list[dict[str, Any]]:
        """The last API requests received (method, path, headers, JSON body), oldest first;
        the same JSON as GET /__requests. Keys longer than 16 characters are shortened."""
        return self._server.logged() if self._server is not None else []

    def reset(self) -> None:
        """Clear windows, stats, scripts and the request log (POST /__reset)."""
        self.state.reset()
        if self._server is not None:
            self._server.forget_requests()

    def configure(self, **changes: Any) -> SimConfig:
        """Change the config at runtime (POST /__config); returns the new config."""
        return self.state.configure(changes)

    def script(self, steps: Sequence[Mapping[str, Any]]) -> int:
        """Queue scripted responses for the next API requests (POST /__script)."""
        return self.state.script(steps)


def _masked(headers: Mapping[str, str]) -> dict[str, str]:
    out = dict(headers)
    for name in ("authorization", "x-goog-api-key", "api-key", "x-api-key"):
        value = out.get(name)
        if value:
            scheme, _, key = value.rpartition(" ")
            out[name] = (scheme + " " if scheme else "") + key_labels([key])[key]
    return out
