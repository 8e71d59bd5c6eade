"""Where a run's calls are made: the runner hands each ``run`` to an executor object.

:class:`LocalThreads` (the default) runs the engine on this machine, on the runner's thread
pool. Every executor builds a :class:`~throttlepool._run_engine.RunEngine`, so each entry
point works on each executor. Other executors register a name with
:func:`register_executor`; ``dask`` is provided by ``throttlepool.distributed.dask``,
imported only when that name is first asked for, so neither the runner nor this module
depends on the distributed package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._engine import run_to_result
from ._run_engine import RunEngine
from ._sync import run_blocking
from .errors import ConfigError
from .outcome import BatchResult, Outcome

if TYPE_CHECKING:
    from .runner import ThreadedBatchRunner


class Executor:
    """Runs a runner's batch somewhere: ``engine`` builds the run's engine, which ``run``,
    ``arun``, ``imap``, ``aimap`` and ``as_completed`` drive alike (in input order, with
    bounded memory, or in completion order)."""

    name = "executor"
    local = False
    caps_cost = False  # whether its engine holds a run to max_cost

    def engine(self, runner: ThreadedBatchRunner[Any], items: Iterable[Any],
               emit: Callable[[Outcome[Any]], None], *, ordered: bool, fill: bool,
               run_name: str | None, has_space: Callable[[], bool] | None = None
               ) -> RunEngine:
        """The engine of one run of ``items`` with ``runner``'s settings, emitting into
        ``emit``; ``fill``: after a stop, the items never taken are delivered too."""
        raise NotImplementedError

    def run(self, runner: ThreadedBatchRunner[Any], items: Iterable[Any],
            run_name: str | None) -> BatchResult[Any]:
        """Run every item with ``runner``'s settings through the bridge, with Ctrl-C
        handling; the result is in input order."""
        outcomes: list[Outcome[Any]] = []
        engine = self.engine(runner, items, outcomes.append, ordered=True, fill=True,
                             run_name=run_name)
        return run_blocking(engine, run_to_result(engine, outcomes))


class LocalThreads(Executor):
    """The runner's own thread pool, driven by the async engine."""

    name = "threads"
    local = True
    caps_cost = True

    def engine(self, runner: ThreadedBatchRunner[Any], items: Iterable[Any],
               emit: Callable[[Outcome[Any]], None], *, ordered: bool, fill: bool,
               run_name: str | None, has_space: Callable[[], bool] | None = None
               ) -> RunEngine:
        """The local engine over the runner's thread pool."""
        return runner.local_engine(items, emit, ordered=ordered, fill=fill,
                                   run_name=run_name, has_space=has_space)


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
