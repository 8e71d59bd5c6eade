"""How a Dask run begins, before anything is recorded: the plan, the connection, the checks.

:func:`connect` reaches the scheduler (or takes the caller's client); :func:`start` checks
the shared limiter (the plan's ``preflight``) and has every worker unpickle the chunk
configuration inside a task and build the adapter's SDK client. An unreachable scheduler or
a function the workers cannot import raises one clear error, and no run is recorded; the
SDK's import (seconds on a loaded host) happens on every worker before the run's clock and
its limit start, not inside the first chunks. Workers running other throttlepool code than
the driver (started before an upgrade) are named in a warning (fingerprint.py says why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from distributed.protocol.pickle import dumps as pickle_for_workers

from ..cost import RunBudget
from ..errors import ConfigError, RunStopped
from .chunk import ChunkConfig, check_config
from .fingerprint import code_digest
from .reach import refused

log = logging.getLogger(__name__)

#: Seconds the other workers get to load the configuration once one has (a worker busy with
#: another client's tasks is not waited for: its first chunk loads it).
WARM_TIMEOUT = 20.0


class ClusterUnavailable(RunStopped):
    """The Dask scheduler cannot be reached, or no worker runs the run's first task."""


class NotRunnableOnCluster(ConfigError):
    """The function (or adapter) cannot be sent to, or loaded on, the Dask workers."""


@dataclass
class DaskPlan:
    """How one run uses the cluster; ``client`` (a ``distributed.Client``) or ``scheduler``."""

    cfg: ChunkConfig
    settings: dict[str, Any]
    chunk_size: int
    client: Any = None
    scheduler: str | None = None
    window: int | None = None  # chunks in flight; default: every worker thread plus one each
    task_retries: int = 2
    run_name: str | None = None
    connect_timeout: float = 10.0
    start_timeout: float = 60.0  # for the first task (a worker may still be importing)
    preflight: Callable[[], None] | None = None  # e.g. ping the shared limiter
    limits: tuple[tuple[float, float, str], ...] = field(default=())
    # max_cost: the driver reserves each item's projected cost (``estimate(item)``, a Cost)
    # before it sends it, and settles it to the answer's usage when its chunk reports
    budget: RunBudget | None = None
    estimate: Callable[[Any], Any] | None = None


def describe(fn: Any) -> str:
    """``module.qualname`` of a function or an adapter, for messages."""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or type(fn).__module__}.{name}"


def connect(plan: DaskPlan) -> tuple[Any, bool]:
    """The plan's client, or a new one to its scheduler; True when the caller must close it."""
    if plan.client is not None:
        return plan.client, False
    if plan.scheduler is None:
        raise ConfigError("a Dask run needs a Client or scheduler='tcp://host:8786'")
    from distributed import Client

    why = refused(plan.scheduler, min(plan.connect_timeout, 2.0))
    if why is not None:
        raise ClusterUnavailable(f"cannot reach the Dask scheduler at {plan.scheduler} "
                                 f"({why}); is it running and is the address right?")
    try:
        client = Client(plan.scheduler, timeout=plan.connect_timeout)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise ClusterUnavailable(
            f"cannot reach the Dask scheduler at {plan.scheduler} within "
            f"{plan.connect_timeout:g} s ({exc}); is it running and is the address "
            "right?", exc) from None
    return client, True


def start(plan: DaskPlan, client: Any) -> int:
    """Check the cluster can run this batch and warm its workers; the number of chunks to
    keep in flight."""
    if plan.preflight is not None:
        plan.preflight()
    what = describe(plan.cfg.fn)
    try:
        payload: bytes = pickle_for_workers(plan.cfg)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise NotRunnableOnCluster(
            f"{what} cannot be sent to the Dask workers: {exc}") from None
    nthreads: dict[str, int] = client.nthreads()
    # one probe on each worker, so that each imports the function and builds its client now
    probes: dict[str | None, Any] = {
        address: client.submit(check_config, payload, pure=False, workers=[address],
                               allow_other_workers=False)
        for address in nthreads} or {None: client.submit(check_config, payload, pure=False)}
    digests: dict[str, str] = {}
    try:
        for n, (address, probe) in enumerate(probes.items()):
            try:
                digests[str(address)] = probe.result(
                    timeout=plan.start_timeout if n == 0 else WARM_TIMEOUT)[1]
            except (TimeoutError, FutureTimeout):
                if n == 0:
                    raise ClusterUnavailable(
                        f"no Dask worker of {client.scheduler.address} ran a task within "
                        f"{plan.start_timeout:g} s; are workers connected?") from None
            except Exception as exc:
                raise NotRunnableOnCluster(
                    f"the Dask workers cannot load {what}: {type(exc).__name__}: {exc}; "
                    "install its module on the workers or define it in an importable "
                    "module") from None
    finally:
        for probe in probes.values():
            probe.release()
    _warn_other_code(digests)
    if plan.window is not None:
        return plan.window
    return max(2, sum(nthreads.values()) + len(nthreads))


def _warn_other_code(digests: dict[str, str]) -> None:
    ours = code_digest()
    others = sorted(address for address, digest in digests.items() if digest != ours)
    if others:
        log.warning(
            "the Dask workers %s run other throttlepool code than this driver (started "
            "before an upgrade or an edit?): limits, pacing and statistics may behave as "
            "neither version would; restart them", ", ".join(others))
