"""A run's journal of calls about to be sent, so a resume counts the calls a killed run lost.

A process killed mid-call (``kill -9``, a crash, a lost machine) leaves calls that reached
the API with no outcome in the checkpoint; the resume makes them again and the user pays
twice. Just before each request is sent (on the thread that sends it) the run notes its
item's index and key in a small file beside the checkpoint (``<db>-calls/<run id>``). The
file is mapped into memory (``MAP_SHARED``, its blocks reserved beforehand): a note is a
copy into the operating system's page cache, which a killed process keeps, with no system
call; a ``write`` per call cost 10-40 % of the no-op throughput, contending with the
checkpoint's commits on the same file system. (Like the ``write`` it replaces, it survives
the process, not a power cut.) When the run is begun again, every journalled call whose item
has no recorded outcome was lost: :meth:`CallJournal.open` counts them and starts the file
afresh, so each is counted once. A call counts from just before the adapter sends it, so a
process killed in between over-counts by at most the calls its threads were starting at
that instant (the request built, the connection not yet written to).

A Dask driver also journals the event topic each of its sessions announced calls under
(a line ``@<topic>``): the scheduler keeps a topic's latest events after the driver is
gone, so a resume counts the calls its workers made after the driver died, too.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

#: is (index, key) recorded in the checkpoint? (key "": anything recorded at that index)
Recorded = Callable[[int, str], bool]
#: the item indices of the calls announced under a Dask event topic the scheduler still holds
Announced = Callable[[str], Sequence[int]]

_START = 64 * 1024  # bytes mapped at first: ~3000 calls before the first growth


def _lost(text: str, recorded: Recorded, announced: Announced | None) -> int:
    """The journalled calls whose items have no recorded outcome."""
    by_topic: dict[str, Counter[int]] = {"": Counter()}
    keys: dict[int, str] = {}
    topic = ""
    for line in text.splitlines():
        if line.startswith("@"):
            topic = line[1:]
            by_topic.setdefault(topic, Counter())
            continue
        index, _, key = line.partition(" ")
        if index.isdigit():
            by_topic[topic][int(index)] += 1
            keys.setdefault(int(index), key)
    lost = 0
    for topic, calls in by_topic.items():
        if topic and announced is not None:
            # The scheduler's events are every call of the session, unless it dropped the
            # oldest (it keeps the last 1000 by default) or is a new one: the larger count
            held: Counter[int] = Counter()
            with contextlib.suppress(Exception):
                held.update(announced(topic))
            calls = Counter({i: max(calls[i], held[i]) for i in set(calls) | set(held)})
        lost += sum(n for index, n in calls.items() if not recorded(index, keys.get(index, "")))
    return lost


class CallJournal:
    """The journal of one run in one checkpoint file; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._used = 0
        self._lock = threading.Lock()

    @classmethod
    def beside(cls, db_path: str, run_id: str) -> CallJournal | None:
        """The journal of ``run_id`` of the checkpoint at ``db_path`` (None in memory)."""
        if not db_path or db_path == ":memory:" or db_path.startswith("file::memory:"):
            return None
        return cls(Path(f"{db_path}-calls") / run_id)

    def open(self, recorded: Recorded, announced: Announced | None = None) -> int:
        """Count the journalled calls whose items were never recorded, then start afresh;
        ``announced`` gives a Dask session's calls the scheduler still holds."""
        text = ""
        with contextlib.suppress(FileNotFoundError):
            text = self.path.read_bytes().split(b"\0", 1)[0].decode("utf-8", "replace")
        lost = _lost(text, recorded, announced)
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._grow(_START)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise
        return lost

    def _grow(self, size: int) -> None:
        assert self._fd is not None
        # Blocks reserved first: a full disk is an OSError here, never a SIGBUS on a store.
        # (macOS has no posix_fallocate: there the file is only extended.)
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(self._fd, 0, size)
        else:
            os.ftruncate(self._fd, size)
        if self._map is not None:
            self._map.close()
        self._map = mmap.mmap(self._fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def started(self, index: int, key: str | None) -> None:
        """Note that item ``index``'s call is about to be sent (any thread)."""
        self._note(f"{index} {key or ''}\n")

    def topic(self, name: str) -> None:
        """Note that the calls journalled next were announced under Dask event topic ``name``."""
        self._note(f"@{name}\n")

    def _note(self, line: str) -> None:
        data = line.encode()
        with self._lock:
            if self._map is None:
                return
            end = self._used + len(data)
            if end > len(self._map):
                try:
                    self._grow(max(2 * len(self._map), end))
                except OSError:  # the disk is full: the run goes on, its calls uncounted
                    return
            self._map[self._used:end] = data
            self._used = end

    def close(self, *, completed: bool) -> None:
        """Close the file; a completed run's journal has nothing left to tell: remove it."""
        with self._lock:
            if self._map is not None:
                self._map.close()
                self._map = None
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._used)
                os.close(self._fd)
                self._fd = None
        if completed:
            with contextlib.suppress(OSError):
                self.path.unlink()
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only when no other run's journal is left
