"""Whether a Dask scheduler answers at an address, asked before a client is made.

``distributed.Client`` retries a refused connection until its timeout (10 s by default), so
a mistyped port or a scheduler that is not running took 10 s to report. A refused TCP
connection is the operating system saying at once that nothing listens there: that is
reported at once. Anything else (a host that does not answer, a TLS or non-TCP address) is
left to the client and its timeout.

A port where something else listens (an HTTP server, Redis) accepts the connection and then
never sends Dask's handshake, which ``distributed.Client`` waits for without a bound; a
server that answers with other bytes makes it fail deep in its deserializer (a numpy
``MemoryError`` for a length of exabytes). :func:`not_a_scheduler` does the handshake
alone, bounded, and turns any failure into one sentence.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit


def refused(address: str, timeout: float = 2.0) -> str | None:
    """Why a ``tcp://host:port`` address refuses connections (nothing listens), or None
    when it accepts them, cannot be probed this way, or does not answer in ``timeout``."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme != "tcp" or parts.hostname is None:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        return None
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "connection refused: nothing listens there"
    except OSError:
        return None


def scheduler_problem(address: str, timeout: float = 5.0) -> str | None:
    """Why ``address`` does not answer as a Dask scheduler within ``timeout`` seconds, as
    one sentence, or None when the handshake succeeds (or cannot be tried: ``distributed``
    is missing, which the run itself reports)."""
    why = refused(address, min(timeout, 2.0))
    if why is not None:
        return (f"cannot reach the Dask scheduler at {address} ({why}); is it running and "
                "is the address right?")
    why = _handshake_failure(address, timeout)
    if why is None:
        return None
    return (f"{address} does not answer as a Dask scheduler ({why}); is it the scheduler's "
            "address (tcp://host:8786, not a dashboard's or another service's)?")


def _handshake_failure(address: str, timeout: float) -> str | None:
    try:
        from distributed.comm.core import connect
    except ImportError:
        return None

    async def handshake() -> None:
        comm = await connect(address, timeout=timeout)  # type: ignore[no-untyped-call]
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(handshake(), timeout))
    except TimeoutError:  # before OSError, of which it is one
        return f"no Dask handshake within {timeout:g} s"
    except OSError as exc:  # distributed's own connect timeout, a connection closed at once
        return f"no Dask handshake: {exc}"
    except Exception as exc:  # any reply that is not Dask's: it fails anywhere in the decoder
        return f"its answer is not Dask's handshake: {type(exc).__name__}"
    return None
