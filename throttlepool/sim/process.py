"""The simulator in a process of its own, driven over its admin endpoints.

A real API server runs on another machine. The simulator in the client's own process shares
its interpreter lock: with a dozen client threads busy, a request can wait 50-100 ms between
leaving the client and being stamped by the server (measured with the anthropic SDK, 16
threads on two cores), a delay no real server adds and no client-side margin should cover.
In its own process the server gets its own interpreter, so timing tests and benchmarks see
the delays a remote server would. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from throttlepool.sim.config import SimConfig

_CHILD = ("import sys; from throttlepool.sim.process import serve_until_stdin_closes; "
          "serve_until_stdin_closes(sys.argv[1])")


class SimulatorProcess:
    """A :class:`~throttlepool.sim.Simulator` in a child process, with the same methods.

    ``with SimulatorProcess(SimConfig(rpm=60)) as sim:`` starts it on a free port of
    127.0.0.1; leaving the block (or :meth:`stop`) ends it by closing its stdin, then by its
    PID. The child also ends when this process dies (its stdin closes).
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self._config = config or SimConfig()
        self._proc: subprocess.Popen[str] | None = None
        self._url = ""

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT (also the Gemini base URL)."""
        if self._proc is None:
            raise RuntimeError("the simulator process is not running; call start() first")
        return self._url

    @property
    def openai_base_url(self) -> str:
        """Base URL for the openai SDK: url + "/v1"."""
        return self.url + "/v1"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> SimulatorProcess:
        """Start the child and wait until it serves; returns self."""
        if self._proc is not None:
            return self
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(self._config.to_dict())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self._proc = proc
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the simulator process did not start (it printed {line!r})")
        self._url = line
        return self

    def stop(self) -> None:
        """End the child: close its stdin, then terminate and kill it by PID if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        """Counters and exact window maxima (GET /__stats)."""
        result: dict[str, Any] = self._admin("GET", "/__stats")
        return result

    def requests(self) -> list[dict[str, Any]]:
        """The last API requests received, oldest first (GET /__requests)."""
        result: list[dict[str, Any]] = self._admin("GET", "/__requests")
        return result

    def reset(self) -> None:
        """Clear windows, stats, scripts and the request log (POST /__reset)."""
        self._admin("POST", "/__reset", {})

    def configure(self, **changes: Any) -> SimConfig:
        """Change the config at runtime (POST /__config); returns the new config."""
        return SimConfig(**self._admin("POST", "/__config", changes))

    def script(self, steps: Sequence[Mapping[str, Any]]) -> int:
        """Queue scripted responses for the next API requests (POST /__script)."""
        return int(self._admin("POST", "/__script", list(steps))["pending"])


def serve_until_stdin_closes(config_json: str) -> None:
    """The child's body: serve ``config_json`` (a SimConfig as JSON), print the URL, and
    stop when stdin closes."""
    from throttlepool.sim.server import Simulator

    with Simulator(SimConfig(**json.loads(config_json))) as sim:
        print(sim.url, flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin (or dies)
