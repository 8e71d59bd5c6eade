"""A rate-limited OpenAI- and Gemini-compatible API simulator on loopback (stdlib only).

It is the project's test referee, the demo's backend and the benchmark server, and it imports
nothing else from throttlepool.
"""

from __future__ import annotations

from throttlepool.sim.config import SimConfig
from throttlepool.sim.server import Simulator, banner, serve

__all__ = ["SimConfig", "Simulator", "banner", "serve"]
