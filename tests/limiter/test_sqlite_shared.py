"""The SQLite limiter file on a fake wall clock: two backends on one file are two processes.

The backend reads ``time.time()`` under its write lock; these tests replace the module's
``time`` so every step happens at a chosen instant. The limiter's own clock (``now``) of each
"process" is offset from the wall clock, as a monotonic clock is.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from throttlepool.limiter import Cost, Limit, SQLiteWindowBackend, Ticket, sqlite_shared

WALL = 1_000_000.0


class _Wall:
    """A wall clock that moves only when told."""

    def __init__(self) -> None:
        self.t = WALL

    def time(self) -> float:
        return self.t


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> _Wall:
    clock = _Wall()
    monkeypatch.setattr(sqlite_shared, "time", types.SimpleNamespace(time=clock.time))
    return clock


def _pair(path: Path, limit: Limit, margin: float = 0.1
          ) -> tuple[SQLiteWindowBackend, SQLiteWindowBackend]:
    return (SQLiteWindowBackend(path, [limit], margin=margin),
            SQLiteWindowBackend(path, [limit], margin=margin))


def test_a_late_placement_of_an_answered_call_never_moves_another_call(
        tmp_path: Path, wall: _Wall) -> None:
    """Seen with two CLI processes (issue 16): a thread's first call answered, then every
    row expired and SQLite gave the next row the same rowid; the first call's placement a
    second later (its arrival bound) moved that row, another process's open call, 1.8 s
    into the past, freeing its slot while the server still counted it (a 429)."""
    a, b = _pair(tmp_path / "l.sqlite", Limit(1, 1.0))
    first = a.reserve(Cost(), 0.0)
    a.hold(first, 0.0)
    wall.t += 0.3
    a.restamp(first, 0.3, 0.3)  # it answers; placed later, when a warm call is known
    wall.t += 2.0  # every row leaves the window: the table empties
    second = b.reserve(Cost(), 50.0)
    assert not second.provisional
    b.hold(second, 50.0)  # its call is open
    a.restamp(first, 2.3, 0.0)  # the first call placed at its start plus its delay
    assert b.reserve(Cost(), 50.0).provisional  # the open call still takes the one slot


def test_a_wider_margin_still_counts_rows_past_the_narrower_window(
        tmp_path: Path, wall: _Wall) -> None:
    """Rows were deleted a window (plus the widest margin then) after their stamp; a process
    whose margin widened next counted only the rows still there."""
    a, b = _pair(tmp_path / "l.sqlite", Limit(2, 1.0), margin=0.0)
    assert not a.reserve(Cost(), 0.0).provisional
    wall.t += 1.05
    assert not a.reserve(Cost(), 1.05).provisional  # the first is out of a's window
    b.set_margin(0.3, 1.05)
    assert b.reserve(Cost(), 1.05).provisional  # both are in b's 1.3 s window


def test_an_open_call_holds_its_slot_and_its_answer_frees_it(tmp_path: Path, wall: _Wall
                                                             ) -> None:
    a, b = _pair(tmp_path / "l.sqlite", Limit(1, 1.0))
    permit = a.reserve(Cost(), 0.0)
    a.hold(permit, 0.0)
    wall.t += 5.0  # open far longer than the window
    denied = b.reserve(Cost(), 70.0)
    assert denied.provisional and denied.admit_at - 70.0 <= 0.05 + 1e-6  # asks again soon
    a.restamp(permit, 5.0, 4.5)  # it answers: it reached the server by 4.5 s
    assert b.reserve(Cost(), 70.0).provisional  # counted from 4.5 s for 1.1 s
    wall.t += 0.6
    assert not b.reserve(Cost(), 70.6).provisional


# ---- a property: any interleaving keeps every window of the file's rows at its limit ------

_STEPS = st.lists(st.tuples(
    st.sampled_from(["reserve", "reserve", "hold", "answer", "cancel", "sleep", "margin"]),
    st.integers(0, 1),  # which process
    st.integers(0, 7),  # which of its tickets / how far back / how long
), max_size=60)
_MARGINS = (0.0, 0.02, 0.1, 0.3)


@settings(max_examples=60, deadline=None)
@given(steps=_STEPS)
def test_two_processes_never_admit_beyond_the_limit(tmp_path_factory: pytest.TempPathFactory,
                                                     steps: list[tuple[str, int, int]]) -> None:
    """Holds, arrival bounds earlier than now, cancels and margins in any order: an
    admission never leaves more than the limit in its own window, counting every row a
    process stamped where it last put it (rows the file deleted included)."""
    clock = _Wall()
    real_time = sqlite_shared.time
    sqlite_shared.time = types.SimpleNamespace(time=clock.time)  # type: ignore[assignment]
    try:
        _run(tmp_path_factory.mktemp("p") / "l.sqlite", clock, steps)
    finally:
        sqlite_shared.time = real_time


def _run(path: Path, clock: _Wall, steps: list[tuple[str, int, int]]) -> None:
    limit = Limit(3, 1.0)
    procs = _pair(path, limit)
    offsets = (-40.0, 25.0)  # each process's monotonic clock against the wall
    mine: list[list[Ticket]] = [[], []]
    stamps: dict[int, float] = {}  # the ticket's id -> where its process last put it
    for op, p, k in steps:
        backend, now = procs[p], clock.t + offsets[p]
        tickets = mine[p]
        if op == "sleep":
            clock.t += (0.01, 0.05, 0.3, 0.6, 1.0, 1.2, 2.5, 11.0)[k]
        elif op == "margin":
            backend.set_margin(_MARGINS[k % 4], now)
        elif op == "reserve":
            ticket = backend.reserve(Cost(), now)
            if ticket.provisional:
                continue
            tickets.append(ticket)
            stamps[id(ticket)] = clock.t
            span = limit.period + backend.margin
            counted = sum(1 for ts in stamps.values() if ts > clock.t - span)
            assert counted <= limit.amount
        elif tickets:
            ticket = tickets[k % len(tickets)]
            # A move applies to a row the file still has (one that left every window is
            # gone, and its stamp with it).
            moves = backend._db.execute("SELECT 1 FROM admissions WHERE id = ?",
                                        (ticket.handle,)).fetchone() is not None
            if op == "hold":
                if ticket.admit_at - now <= sqlite_shared.OPEN_CALL_HOLD - 1.0 and moves:
                    stamps[id(ticket)] = clock.t + sqlite_shared.OPEN_CALL_HOLD
                backend.hold(ticket, now)  # (a hold renewed within a second stays)
            elif op == "answer":
                back = (0.0, 0.01, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0)[k]
                backend.restamp(ticket, now, now - back)
                if moves:
                    stamps[id(ticket)] = clock.t - back
            else:
                backend.cancel(ticket, now)
                tickets.remove(ticket)
                del stamps[id(ticket)]
