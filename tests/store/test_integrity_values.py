"""Values that are valid Python strings but not valid UTF-8 still checkpoint and resume exactly."""

from __future__ import annotations

from pathlib import Path

from throttlepool import ThreadedBatchRunner
from throttlepool.store.keys import item_key


def _lone_surrogate(x: str) -> str:
    return x + "\ud800"


def test_answer_with_lone_surrogate_is_recorded_and_resumed_verbatim(tmp_path: Path) -> None:
    db = str(tmp_path / "runs.db")
    items = ["a", "b\udc00"]
    fresh = ThreadedBatchRunner(_lone_surrogate, store=db, run_name="s").run(items)
    assert fresh.errors == [None, None]
    calls: list[str] = []

    def must_not_run(x: str) -> str:
        calls.append(x)
        return "called again"

    # Same identity as the first run, so the checkpoint applies: a different name would not.
    must_not_run.__qualname__ = _lone_surrogate.__qualname__
    must_not_run.__name__ = _lone_surrogate.__name__
    resumed = ThreadedBatchRunner(must_not_run, store=db, run_name="s").run(items)
    assert calls == []
    assert resumed.results == fresh.results == ["a\ud800", "b\udc00\ud800"]


def test_item_keys_of_plain_text_are_unchanged_by_surrogate_support() -> None:
    # Keys of existing checkpoints must not move: plain UTF-8 text hashes as before.
    assert item_key({"f": "x"}, "héllo") == item_key({"f": "x"}, "h\u00e9llo")
    assert item_key({"f": "x"}, "a\ud800") != item_key({"f": "x"}, "a")
