"""The store through ThreadedBatchRunner: resume, changed input, retry of failures, cache."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from throttlepool import ThreadedBatchRunner
from throttlepool.errors import CheckpointMismatch
from throttlepool.outcome import Source, Status
from throttlepool.store import SQLiteStore, list_runs, run_status


class Unauthorized(Exception):
    status_code = 401


class Counting:
    """Counts calls per item; raises a fatal 401 once ``stop_at`` calls have been made."""

    def __init__(self, stop_at: int | None = None, fail: set[int] | None = None) -> None:
        self.calls: Counter[int] = Counter()
        self.stop_at = stop_at
        self.fail = fail or set()
        self.lock = threading.Lock()

    def __call__(self, item: int) -> dict[str, int]:
        with self.lock:
            self.calls[item] += 1
            n = sum(self.calls.values())
        if self.stop_at is not None and n > self.stop_at:
            raise Unauthorized("invalid api key sk-proj-THISMUSTNOTBESTORED0123")
        if item in self.fail:
            raise ValueError(f"bad item {item}")
        return {"item": item, "double": 2 * item}


def make(fn: Any, db: Path, **kw: Any) -> Any:
    return ThreadedBatchRunner(fn, batch_size=4, retries=0, store=str(db), run_name="job",
                               **kw)


def test_resume_after_interruption_calls_only_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    items = list(range(200))
    first = Counting(stop_at=80)
    r1 = make(first, db)
    res1 = r1.run(items)
    r1.close()
    assert not res1.all_succeeded
    done = {o.index for o in res1.outcomes if o.status is Status.OK}
    assert 60 <= len(done) <= 80

    second = Counting()
    r2 = make(second, db)
    res2 = r2.run(items)
    r2.close()
    assert res2.all_succeeded
    assert res2.results == [{"item": i, "double": 2 * i} for i in items]
    # Items finished in run 1 come from the checkpoint and are not called again.
    assert set(second.calls) == set(items) - done
    assert all(n == 1 for n in second.calls.values())
    assert {o.index for o in res2.outcomes if o.source is Source.CHECKPOINT} == done
    assert res2.stats.from_checkpoint == len(done)
    assert [o.item for o in res2.outcomes] == items

    third = Counting()
    r3 = make(third, db)
    res3 = r3.run(items)
    r3.close()
    assert not third.calls and res3.results == res2.results
    st = run_status(db, "job")
    assert st["counts"] == {"ok": 200} and st["status"] == "completed"
    assert [r["name"] for r in list_runs(db)] == ["job"]
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"THISMUSTNOTBESTORED" not in raw


def test_changed_input_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    r = make(Counting(), db)
    r.run(list(range(20)))
    r.close()
    changed = list(range(20))
    changed[7] = 700
    fn = Counting()
    r = make(fn, db)
    with pytest.raises(CheckpointMismatch, match=r"record 8 \(index 7\) differs .* run 'job'"):
        r.run(changed)
    r.close()
    assert 700 not in fn.calls


def test_failed_items_are_retried_or_kept(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    r = make(Counting(fail={3, 5}), db)
    res = r.run(list(range(10)))
    r.close()
    assert res.error_count == 2

    keep = Counting()
    r = make(keep, db, retry_failed=False)
    res = r.run(list(range(10)))
    r.close()
    assert not keep.calls and res.error_count == 2
    assert str(res.errors[3]) == "ValueError: bad item 3"

    again = Counting()
    r = make(again, db)
    res = r.run(list(range(10)))
    r.close()
    assert set(again.calls) == {3, 5} and res.all_succeeded


def test_cache_serves_repeats_without_calls(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    fn = Counting()
    with SQLiteStore(db) as store:
        r = ThreadedBatchRunner(fn, batch_size=4, store=store, cache=True, cache_ttl=3600)
        res1 = r.run([1, 2, 3])
        res2 = r.run([3, 2, 1, 4])
        r.close()
        assert res2.results == [{"item": i, "double": 2 * i} for i in (3, 2, 1, 4)]
        assert fn.calls == Counter({1: 1, 2: 1, 3: 1, 4: 1})
        assert res2.stats.cache_hits == 3 and res1.stats.cache_hits == 0
        assert [o.source for o in res2.outcomes] == [Source.CACHE] * 3 + [Source.CALL]
    # A new process (new store, new cache) still hits, from disk.
    fn2 = Counting()
    r = ThreadedBatchRunner(fn2, batch_size=4, store=str(db), cache=True, cache_ttl=3600)
    res3 = r.run([4, 1])
    r.close()
    assert not fn2.calls and res3.stats.cache_hits == 2
