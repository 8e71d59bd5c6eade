"""The cluster and the shared limiter every Dask test uses, started and stopped by this module.

``client`` is a ``distributed.Client`` of a real ``LocalCluster`` with two worker processes,
one per test module (a module may kill a worker). A module changes its shape by overriding
``dask_threads_per_worker`` (calls at once per worker) or ``dask_warm_modules`` (what the
workers import before the first test, since importing an SDK takes seconds on a loaded
2-core box). ``redis_url`` is a ``redis-server`` of the module on 127.0.0.1.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from _services import start_redis


@pytest.fixture(scope="module")
def dask_threads_per_worker() -> int:
    """Threads (chunks at once) of each of the two workers."""
    return 4


@pytest.fixture(scope="module")
def dask_warm_modules() -> tuple[str, ...]:
    """Modules every worker imports before the module's first test."""
    return ("throttlepool.distributed.chunk",)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, dask_threads_per_worker: int,
           dask_warm_modules: tuple[str, ...]) -> Iterator[Any]:
    """A client of a LocalCluster with two worker processes, closed with the module."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=dask_threads_per_worker, processes=True,
        host="127.0.0.1", dashboard_address=None,
        local_directory=str(tmp_path_factory.mktemp("dask")))
    c = distributed.Client(cluster)
    try:
        for module in dask_warm_modules:
            c.run(importlib.import_module, module)
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The redis:// URL of a redis-server of this module."""
    server = start_redis(tmp_path_factory.mktemp("redis"), tcp=True)
    try:
        yield server.url
    finally:
        server.stop()
