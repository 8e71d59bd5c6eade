"""Response cache: LRU in front of SQLite, TTL on an injected clock, persistence, counters."""

from __future__ import annotations

from pathlib import Path

from throttlepool.store import MemoryCache, SQLiteCache, SQLiteStore


class FakeTime:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_hit_miss_and_counters(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "c.db") as store:
        c = SQLiteCache(store, ttl=None)
        assert c.get("k1") == (False, None)
        c.put("k1", {"answer": 42})
        assert c.get("k1") == (True, {"answer": 42})
        assert (c.hits, c.misses) == (1, 1)


def test_values_are_copies_not_aliases(tmp_path: Path) -> None:
    c = MemoryCache()
    v = {"a": [1]}
    c.put("k", v)
    v["a"].append(2)
    hit, got = c.get("k")
    assert hit and got == {"a": [1]}
    got["a"].append(3)
    assert c.get("k") == (True, {"a": [1]})


def test_ttl_expires_in_memory_and_on_disk(tmp_path: Path) -> None:
    clock = FakeTime()
    path = tmp_path / "c.db"
    with SQLiteStore(path) as store:
        c = SQLiteCache(store, ttl=60, time_fn=clock)
        c.put("k", "v")
        clock.t += 59
        assert c.get("k") == (True, "v")
        clock.t += 2
        assert c.get("k") == (False, None)  # the memory entry expired, the disk row too
    with SQLiteStore(path) as store:
        fresh = SQLiteCache(store, ttl=120, time_fn=clock)
        assert fresh.get("k") == (True, "v")  # a longer TTL still finds the row on disk
        clock.t += 100
        assert fresh.purge() == 1
        assert SQLiteCache(store, ttl=None, time_fn=clock).get("k") == (False, None)


def test_persists_across_processes_via_disk(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with SQLiteStore(path) as store:
        SQLiteCache(store, ttl=3600).put("k", [1, 2, 3])
    with SQLiteStore(path) as store:
        c = SQLiteCache(store, ttl=3600)
        assert len(c) == 0
        assert c.get("k") == (True, [1, 2, 3])
        assert len(c) == 1  # promoted into the memory layer


def test_lru_evicts_least_recently_used() -> None:
    c = MemoryCache(max_entries=2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == (True, 1)
    c.put("c", 3)
    assert c.get("b") == (False, None)
    assert c.get("a") == (True, 1) and c.get("c") == (True, 3)


def test_own_file_and_unencodable_values_are_skipped(tmp_path: Path) -> None:
    c = SQLiteCache(tmp_path / "own.db", ttl=10)
    c.put("bad", object())
    assert c.get("bad") == (False, None)
    c.put("good", 1)
    c.close()
    again = SQLiteCache(tmp_path / "own.db", ttl=10)
    assert again.get("good") == (True, 1)
    again.close()
