"""Whether anything listens at a Dask scheduler's address, asked before a client is made.

``distributed.Client`` retries a refused connection until its timeout (10 s by default), so
a mistyped port or a scheduler that is not running took 10 s to report. A refused TCP
connection is the operating system saying at once that nothing listens there: that is
reported at once. Anything else (a host that does not answer, a TLS or non-TCP address) is
left to the client and its timeout.
"""

from __future__ import annotations

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
