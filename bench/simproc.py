"""The simulator in its own process, driven over its admin endpoints.

The simulator is pure Python; run in the benchmark's own process it would share the GIL with
the client under test and slow every contender in a way that depends on how many threads the
contender runs. In a separate process it gets its own interpreter (one of the two cores).
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import asdict
from typing import Any

from throttlepool.sim import SimConfig

_CHILD = r"""
import json, sys
from throttlepool.sim import Simulator, SimConfig
cfg = SimConfig(**json.loads(sys.argv[1]))
with Simulator(cfg, host="127.0.0.1", port=0) as sim:
    print(sim.url, flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin (or dies)
"""


class RemoteSim:
    """``Simulator`` look-alike (``openai_base_url``, ``stats``, ``reset``, ``configure``)."""

    def __init__(self, config: SimConfig) -> None:
        self._config = config
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> RemoteSim:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(asdict(self._config))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.close()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = line
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
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

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("GET", "/__stats")
        return result

    def reset(self) -> None:
        self._admin("POST", "/__reset", {})

    def configure(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", "/__config", changes)
        return result
