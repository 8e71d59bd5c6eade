"""The local engine and the Dask driver record, resume and count the same scripted batch alike.

One call at a time on both sides (``batch_size=1``; on Dask one chunk of five in flight), so
where a fatal error stops the run, and so which items are left not attempted, is the same.
The first run meets permanent failures, a transient failure retried, and a fatal error that
stops it; the second resumes the same ``run_name`` with ``retry_failed`` after the cause of
the fixable failures is gone. Both write real SQLite checkpoints, compared row by row.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from throttlepool import CallResult, Retry, ThreadedBatchRunner
from throttlepool.outcome import BatchResult, Source, Status, Usage
from throttlepool.store import SQLiteStore

pytest.importorskip("distributed")

STAT_FIELDS = ("done", "failed", "not_attempted", "from_checkpoint", "cache_hits", "calls",
               "retries", "rate_limited", "input_tokens", "output_tokens")
ROW_FIELDS = ("idx", "key", "status", "value", "error_type", "error_message", "attempts",
              "input_tokens", "output_tokens")
#: what each item does: ok, bad (fails every time), fixable (fails until fixed), flaky
#: (a connection error on its first attempt ever), fatal (401 until fixed: stops the run)
SCRIPT = ["ok", "bad", "flaky", "ok", "fixable", "ok", "ok", "fatal", "ok", "bad", "ok",
          "fixable", "ok", "ok", "flaky", "ok"]


class Refused(Exception):
    """A 400: this item fails, the run goes on."""

    status_code = 400


class Unauthorized(Exception):
    """A 401: the run stops."""

    status_code = 401


def scripted(item: Mapping[str, Any]) -> CallResult[str]:
    """The wrapped call; module level so that worker processes can import it."""
    kind, n, folder = item["kind"], item["n"], Path(item["dir"])
    fixed = (folder / "fixed").exists()
    if kind == "bad" or (kind == "fixable" and not fixed):
        raise Refused(f"item {n} refused")
    if kind == "fatal" and not fixed:
        raise Unauthorized("bad key")
    if kind == "flaky":
        seen = folder / f"seen-{n}"
        if not seen.exists():
            seen.touch()
            raise ConnectionError(f"item {n}: connection reset")
    return CallResult(f"done {n}", Usage(input_tokens=10 + n, output_tokens=3))


@pytest.fixture(scope="module")
def dask_threads_per_worker() -> int:
    return 2


def _items(folder: Path) -> list[dict[str, Any]]:
    return [{"kind": kind, "n": n, "dir": str(folder)} for n, kind in enumerate(SCRIPT)]


def _runs(folder: Path, run: Any) -> list[BatchResult[Any]]:
    """The scripted batch twice: a run a fatal error stops, then the resume once fixed.

    The same folder each time (it is part of each item, so of its checkpoint key), emptied.
    """
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    items = _items(folder)
    first = run(items)
    (folder / "fixed").touch()
    second = run(items)
    return [first, second]


def _checkpoint(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    store = SQLiteStore(path)
    try:
        runs = [r["status"] for r in store.query("SELECT status FROM runs ORDER BY created")]
        rows = store.query(f"SELECT {', '.join(ROW_FIELDS)} FROM items ORDER BY idx")
    finally:
        store.close()
    return runs, rows


def _stats(result: BatchResult[Any]) -> dict[str, Any]:
    return {name: getattr(result.stats, name) for name in STAT_FIELDS}


def test_the_local_engine_and_the_dask_driver_record_resume_and_count_alike(
        client: Any, tmp_path: Path) -> None:
    from throttlepool.distributed import run_on_dask

    retry = Retry(attempts=3, base=0.0)
    local_db, dask_db = tmp_path / "local.sqlite", tmp_path / "dask.sqlite"

    def local(items: list[dict[str, Any]]) -> BatchResult[Any]:
        with ThreadedBatchRunner(scripted, batch_size=1, retries=retry, breaker=False,
                                 store=local_db, run_name="parity") as runner:
            return runner.run(items)

    def on_dask(items: list[dict[str, Any]]) -> BatchResult[Any]:
        return run_on_dask(scripted, items, client=client, batch_size=1, chunk_size=5,
                           max_chunks_in_flight=1, retries=retry, store=dask_db,
                           run_name="parity")

    local_runs = _runs(tmp_path / "script", local)
    dask_runs = _runs(tmp_path / "script", on_dask)

    # The script did what it says, so the comparison below compares something.
    first, second = local_runs
    assert first.stats.not_attempted == len(SCRIPT) - 8 and first.stats.retries == 1
    assert second.stats.from_checkpoint == 5 and second.stats.failed == 2
    # tokens are counted for the calls made in this run, not for answers checkpointed before
    called = [o.index for o in second if o.source is Source.CALL and o.status is Status.OK]
    assert second.stats.input_tokens == sum(10 + i for i in called)
    assert [type(r.stopped).__name__ for r in local_runs] == ["RunStopped", "NoneType"]

    for mine, theirs in zip(local_runs, dask_runs, strict=True):
        assert _stats(theirs) == _stats(mine)
        assert [(o.index, o.status, o.value, o.attempts, o.source) for o in theirs] == [
            (o.index, o.status, o.value, o.attempts, o.source) for o in mine]
        assert str(theirs.stopped) == str(mine.stopped)
    local_ck, dask_ck = _checkpoint(local_db), _checkpoint(dask_db)
    assert local_ck[0] == ["completed"]  # one run, resumed: its last status
    assert dask_ck == local_ck
