"""Service fixtures: a real ``redis-server`` started and stopped (by PID) by the tests.

Import the fixtures into a test module (``from tests._services import redis_server``) or
use the helpers directly. Servers listen only on a unix socket or 127.0.0.1. A missing binary
skips locally but fails under CI (``CI`` set), so a missing install step cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class RedisServer:
    """A running redis-server: its process, its URL and (for TCP) its port."""

    proc: subprocess.Popen[bytes]
    url: str
    dir: Path
    port: int | None = None
    socket_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self) -> object:
        import redis

        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        """Terminate this server by its PID and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(server: RedisServer, deadline: float) -> bool:
    import redis

    client = redis.Redis.from_url(server.url, socket_connect_timeout=0.2, socket_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                time.sleep(0.005)
        return False
    finally:
        client.close()


def start_redis(directory: Path, *, tcp: bool = False, attempts: int = 3) -> RedisServer:
    """Start redis-server on a unix socket in ``directory`` (or 127.0.0.1:<free port>)."""
    binary = redis_binary()
    directory.mkdir(parents=True, exist_ok=True)
    last = ""
    for _ in range(attempts):
        port = free_port() if tcp else 0
        sock = None if tcp else directory / "redis.sock"
        args = [binary, "--port", str(port), "--save", "", "--appendonly", "no",
                "--dir", str(directory), "--daemonize", "no", "--loglevel", "warning"]
        if tcp:
            args += ["--bind", "127.0.0.1"]
            url = f"redis://127.0.0.1:{port}/0"
        else:
            args += ["--unixsocket", str(sock), "--unixsocketperm", "700"]
            url = f"unix://{sock}"
        log = open(directory / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        server = RedisServer(proc, url, directory, port if tcp else None, sock)
        if _wait_ready(server, time.monotonic() + 5.0):
            return server
        server.stop()
        last = (directory / "redis.log").read_text(errors="replace")[-500:]
    pytest.fail(f"redis-server did not answer PING after {attempts} starts: {last}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a unix socket, for the whole session."""
    with tempfile.TemporaryDirectory(prefix="tp-redis-") as tmp:
        server = start_redis(Path(tmp))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis_tcp_server() -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1 and a free port, for tests that need a redis:// URL."""
    with tempfile.TemporaryDirectory(prefix="tp-redis-tcp-") as tmp:
        server = start_redis(Path(tmp), tcp=True)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (on 127.0.0.1), which the test may stop."""
    server = start_redis(tmp_path / "redis", tcp=True)
    try:
        yield server
    finally:
        server.stop()
