"""Chunk sizes: a binding request limit keeps a couple of seconds of admissions in flight."""

from __future__ import annotations

from throttlepool.distributed.sizing import chunk_items, request_rate


def test_chunks_in_flight_hold_the_latency_plus_two_seconds_of_the_request_limit() -> None:
    rate = request_rate([(240.0, 60.0, "requests"), (10_000.0, 60.0, "tokens")])
    assert rate == 4.0  # tokens do not count as calls
    # 6 chunks in flight, calls of 1 s: (1 + 2) s at 4/s = 12 items, 2 a chunk
    assert chunk_items(rate, 1.0, 6, 40) == 2
    assert chunk_items(rate, 10.0, 6, 40) == 8  # slow calls: more at once keep the pace
    assert chunk_items(1000.0, 1.0, 6, 40) == 40  # never above the configured size
    assert chunk_items(0.1, 0.0, 6, 40) == 1
    assert chunk_items(None, 1.0, 6, 40) == 40  # no request limit: as configured
