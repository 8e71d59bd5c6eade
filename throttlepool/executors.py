"""Where a run's calls are made: the runner hands each ``run`` to an executor object.

:class:`LocalThreads` (the default) runs the engine on this machine, on the runner's thread
pool. Other executors register a name with :func:`register_executor`; ``dask`` is provided
by ``throttlepool.distributed.dask``, imported only when that name is first asked for, so
neither the runner nor this module depends on the distributed package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .engine import run_to_result
from .errors import ConfigError
from .outcome import BatchResult, Outcome
from .sync import run_blocking

if TYPE_CHECKING:
    from .runner import ThreadedBatchRunner


class Executor:
    """Runs a runner's batch somewhere. ``local`` executors also stream (``imap``,
    ``aimap``, ``as_completed``) and run inside async code (``arun``)."""

    name = "executor"
    local = False

    def run(self, runner: ThreadedBatchRunner[Any], items: Iterable[Any],
            run_name: str | None) -> BatchResult[Any]:
        """Run every item with ``runner``'s settings; the result is in input order."""
        raise NotImplementedError


class LocalThreads(Executor):
    """The runner's own thread pool, driven by the async engine on a private loop."""

    name = "threads"
    local = True

    def run(self, runner: ThreadedBatchRunner[Any], items: Iterable[Any],
            run_name: str | None) -> BatchResult[Any]:
        """``runner.arun(items)`` through the bridge, with Ctrl-C handling."""
        outcomes: list[Outcome[Any]] = []
        engine = runner.engine(items, outcomes.append, ordered=True, fill=True,
                               run_name=run_name)
        return run_blocking(engine, run_to_result(engine, outcomes))


ExecutorFactory = Callable[..., Executor]

_factories: dict[str, ExecutorFactory] = {"threads": lambda **options: LocalThreads()}
#: executors that live in optional modules: imported on first use, they register themselves
_providers = {"dask": "throttlepool.distributed.dask"}


def register_executor(name: str, factory: ExecutorFactory) -> None:
    """Make ``executor=name`` build its executor with ``factory(**options)``."""
    _factories[name] = factory


def executor_named(name: str, **options: Any) -> Executor:
    """The executor registered as ``name``, built with ``options`` (e.g. ``scheduler``)."""
    if name not in _factories and name in _providers:
        importlib.import_module(_providers[name])  # raises MissingExtra without its extra
    factory = _factories.get(name)
    if factory is None:
        known = " or ".join(repr(n) for n in sorted({*_factories, *_providers}, reverse=True))
        raise ConfigError(f"executor must be {known}, got {name!r}")
    return factory(**options)
