"""The public surface: what ``import throttlepool`` offers is pinned, and internals are private.

A name added to or removed from ``throttlepool.__all__`` must be a decision: change this
list with it. Internal modules of the top-level package start with ``_``.
"""

from __future__ import annotations

from pathlib import Path

import throttlepool

PUBLIC = [
    "Adapter", "BatchResult", "Batchable", "Budget", "CallResult", "Checkpoint",
    "CircuitBreaker", "Execution", "Limits", "Outcome", "RateLimiter", "Retry", "RunStats",
    "Status", "ThreadedBatchRunner", "ThrottlepoolError", "batchable",
    "gather_with_concurrency", "generate_batch", "retry_on", "run_async",
]

# Top-level modules a user may import by name; every other one is private (``_name``).
PUBLIC_MODULES = {
    "__init__", "__main__", "breaker", "bridge", "classify", "clock", "dropins", "errors",
    "hints", "outcome", "progress", "retry", "runner", "testing",
}


def test_all_is_pinned_and_each_name_is_documented() -> None:
    assert sorted(throttlepool.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        obj = getattr(throttlepool, name)
        assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_the_package_namespace_holds_nothing_else_public() -> None:
    extra = {name for name in vars(throttlepool)
             if not name.startswith("_") and name not in PUBLIC}
    # Subpackages and modules appear as attributes once imported; they are not exports.
    import types
    extra = {n for n in extra if not isinstance(getattr(throttlepool, n), types.ModuleType)}
    assert extra <= {"annotations"}, extra


def test_internal_modules_are_private() -> None:
    root = Path(throttlepool.__file__).parent
    public = {p.stem for p in root.glob("*.py") if not p.stem.startswith("_")}
    public |= {p.stem for p in root.glob("__*.py")}
    assert public <= PUBLIC_MODULES, sorted(public - PUBLIC_MODULES)
