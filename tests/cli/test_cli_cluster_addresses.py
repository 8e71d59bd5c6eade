"""A scheduler address or limiter URL that is wrong: one sentence, exit 2, in seconds (trial 11).

In-process (``main``) to save interpreter startups; the servers are sockets of this test.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from throttlepool.cli import main


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ended:
        main(args)
    code = ended.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("a\nb\n")
    return tmp_path


RUN = ["run", "in.txt", "--provider", "http", "--base-url", "http://127.0.0.1:9/echo",
       "--no-progress", "--db", "ck.db", "-o", "out.jsonl"]


@pytest.mark.parametrize(("flag", "value"), [("--dask-scheduler", "127.0.0.1:"),
                                             ("--dask-scheduler", "tcp://127.0.0.1:86a"),
                                             ("--limiter-url", "redis:/localhost"),
                                             ("--limiter-url", "redis://localhost:63x9/0")])
def test_a_malformed_address_names_the_flag_and_the_value(
        flag: str, value: str, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main([*RUN, flag, value], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and repr(value) in lines[0], err


@pytest.fixture
def server() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A TCP server on 127.0.0.1 that answers each connection with what the test put in
    ``replies`` (nothing: it stays silent, like an HTTP server or Redis waiting for a
    request)."""
    listener = socket.create_server(("127.0.0.1", 0))
    replies: list[bytes] = []
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            if replies:
                conn.sendall(replies[0])

    threading.Thread(target=serve, daemon=True).start()
    yield listener, replies
    listener.close()
    for conn in accepted:
        conn.close()


def test_an_address_that_answers_garbage_is_not_a_scheduler(
        server: tuple[socket.socket, list[bytes]], work: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    listener, replies = server
    replies.append(b"\xff" * 64)  # read as a frame length of exabytes by Dask's decoder
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    code, err = run_main([*RUN, "--dask-scheduler", address], capsys)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{address} does not answer as a Dask scheduler" in err


def test_a_silent_port_is_not_a_scheduler_within_the_timeout(
        server: tuple[socket.socket, list[bytes]]) -> None:
    pytest.importorskip("distributed")
    from throttlepool.distributed.reach import scheduler_problem

    listener, _ = server
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    began = time.monotonic()
    why = scheduler_problem(address, timeout=0.5)
    assert time.monotonic() - began < 3
    assert why is not None and "does not answer as a Dask scheduler" in why
    assert "no Dask handshake within 0.5 s" in why
