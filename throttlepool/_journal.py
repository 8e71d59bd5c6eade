"""A run's journal of calls about to be sent, so a resume counts the calls a killed run lost.

A process killed mid-call (``kill -9``, a crash, a lost machine) leaves calls that reached
the API with no outcome in the checkpoint; the resume makes them again and the user pays
twice. Before each call the run appends its item's index and key to a small file beside the
checkpoint (``<db>-calls/<run id>``): one ``write`` of an ``O_APPEND`` descriptor, which is
in the operating system once it returns, so a killed process keeps it, at a cost of
microseconds (a SQLite commit before every call would cost a transaction each). When the run
is begun again, every journalled call whose item has no recorded outcome was lost:
:meth:`CallJournal.open` counts them and starts the file afresh, so each is counted once.
A call counts from just before it is sent, so a process killed in between over-counts by at
most the calls it had admitted but not yet sent.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

#: is (index, key) recorded in the checkpoint?
Recorded = Callable[[int, str], bool]


class CallJournal:
    """The journal of one run in one checkpoint file; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @classmethod
    def beside(cls, db_path: str, run_id: str) -> CallJournal | None:
        """The journal of ``run_id`` of the checkpoint at ``db_path`` (None in memory)."""
        if not db_path or db_path == ":memory:" or db_path.startswith("file::memory:"):
            return None
        return cls(Path(f"{db_path}-calls") / run_id)

    def open(self, recorded: Recorded) -> int:
        """Count the journalled calls whose items were never recorded, then start afresh."""
        lost = 0
        with contextlib.suppress(FileNotFoundError):
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                index, _, key = line.partition(" ")
                if index.isdigit() and not recorded(int(index), key):
                    lost += 1
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC,
                           0o600)
        return lost

    def started(self, index: int, key: str | None) -> None:
        """Note that item ``index``'s call is about to be sent."""
        if self._fd is not None:
            os.write(self._fd, f"{index} {key or ''}\n".encode())

    def close(self, *, completed: bool) -> None:
        """Close the file; a completed run's journal has nothing left to tell: remove it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if completed:
            with contextlib.suppress(OSError):
                self.path.unlink()
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only when no other run's journal is left
