"""The worker side of distributed execution: run one chunk of items under the shared limiter.

:func:`run_chunk` is what the driver submits to a cluster. It runs the ordinary threaded
runner over the chunk with a limiter built from a URL (Redis or SQLite, shared by every
worker), and returns plain picklable per-item results. Item failures stay data; a shared
limiter that cannot be reached ends the chunk early and is reported, not raised, so the
driver can stop dispatch at once instead of waiting for task retries. Each outcome carries
the wall-clock time its call ended here. :func:`stop_session` (run on every worker by the
driver on a Ctrl-C or an abort) stops the run's chunks from starting more calls: a call
admitted but not yet sent is withheld (not made, not counted), and the worker tells the
driver how many calls of the run it sent, so an abort that drops the chunks' answers still
records every call the API received.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..adapters import as_adapter
from ..adapters.base import Adapter, CallResult, Delegating
from ..adapters.structured import InvalidAnswer
from ..bridge import Bridge
from ..classify import ErrorKind, Verdict
from ..errors import LimiterUnavailable, RunStopped
from ..limiter import Limit, RateLimiter, limiter_from_url
from ..options import Limits, RunOptions
from ..outcome import Outcome, Status, Usage
from ..store.codec import StoredError
from .fingerprint import code_digest


@dataclass(frozen=True)
class ChunkConfig:
    """Everything a worker needs to run chunks of one run; pickled with each task."""

    fn: Any  # a callable or an adapter, importable (or cloudpicklable) on the workers
    options: RunOptions  # RunOptions.for_workers(): limits, retry, per-call settings
    estimate: Any = None
    calls_topic: str | None = None  # the Dask event topic each call is reported under
    session: str | None = None  # what the driver names when it stops this run's chunks


def check_config(payload: bytes) -> tuple[str, str]:
    """Run on each worker before a run begins: unpickle the pickled config (and so the
    function) there, inside a task, so that a function the worker cannot import fails this
    task instead of the worker's connection; build the adapter as chunks build it, and its
    SDK client (importing an SDK takes seconds: not inside the run, under its limit).
    The adapter's name and the digest of the throttlepool code this worker runs."""
    cfg = pickle.loads(payload)
    adapter = as_adapter(cfg.fn, estimate=cfg.estimate)
    try:
        getattr(adapter, "client", None)  # an SDK adapter's client, built once per process
    except Exception:  # e.g. no API key here: each call reports it, as it does locally
        pass
    return adapter.name, code_digest()


class Withheld(RunStopped):
    """A call admitted before the driver stopped the run, not sent after it."""


def announcer(session: str, topic: str | None, worker: Any, chunk_no: int,
              chunk: Sequence[tuple[int, Any]]) -> Callable[[int], None]:
    """Just before each call is sent: withholds it (raises :class:`Withheld`) once the
    driver stopped ``session``, else counts it for :func:`stop_session` and reports it to
    the driver (a Dask event: the chunk and the item's index), so the run counts (and
    journals) the calls of a worker that dies before its chunk reports; the scheduler
    keeps the events for a resume after the driver died."""
    def announce(position: int) -> None:
        with _sessions_lock:  # a call is either counted before the stop, or not made
            if session in _stopped:
                raise Withheld("the driver stopped the run before this call was sent")
            _sent[session] += 1
        if topic is not None and worker is not None:
            # thread-safe: queued on the worker's loop
            worker.log_event(topic, (chunk_no, chunk[position][0]))
    return announce


def call_of(event: Any) -> tuple[int, int] | None:
    """(chunk, item index) of a worker's call event ``(time, (chunk, index))``."""
    msg = event[1] if isinstance(event, tuple) and len(event) == 2 else None
    if (isinstance(msg, tuple | list) and len(msg) == 2
            and all(isinstance(n, int) for n in msg)):
        return int(msg[0]), int(msg[1])
    return None


def announced_calls(client: Any, topic: str) -> list[int]:
    """The item indices of the calls the scheduler still holds under ``topic``."""
    return [call[1] for call in map(call_of, client.get_events(topic)) if call is not None]


class RejectedAnswers(Delegating[Any]):
    """Keeps, by item, the usage of each answer rejected as not the JSON asked for: the
    server billed it, and the driver counts it as a local run does (tokens, cost, max_cost).
    A call :class:`Withheld` after a stop is not retried."""

    def __init__(self, inner: Adapter[Any]) -> None:
        super().__init__(inner)
        self._billed: dict[int, list[Usage]] = {}  # by id(item): items need not hash
        self._lock = threading.Lock()

    def _keep(self, item: Any, exc: InvalidAnswer) -> None:
        if exc.usage is not None:
            with self._lock:
                self._billed.setdefault(id(item), []).append(exc.usage)

    def billed(self, item: Any) -> list[Usage]:
        """The usage of ``item``'s rejected answers (once: a second ask gets none)."""
        with self._lock:
            return self._billed.pop(id(item), [])

    def call(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """The inner adapter's call; a rejected answer's usage is kept."""
        try:
            return self.inner.call(item, timeout)
        except InvalidAnswer as exc:
            self._keep(item, exc)
            raise

    async def acall(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """The inner adapter's async call; a rejected answer's usage is kept."""
        try:
            return await self.inner.acall(item, timeout)
        except InvalidAnswer as exc:
            self._keep(item, exc)
            raise

    def classify(self, exc: BaseException) -> Verdict:
        """A withheld call is not retried; anything else as the inner adapter says."""
        if isinstance(exc, Withheld):
            return Verdict(ErrorKind.PERMANENT, reason=str(exc))
        return self.inner.classify(exc)


_stopped: set[str] = set()  # sessions the driver stopped, in this worker process
_stoppers: dict[str, set[Callable[[], None]]] = {}  # session -> its running chunks' stops
# session -> calls its chunks sent from this process (one small int per run: the driver
# asks for it only when it stops the run, which it cannot know in advance)
_sent: Counter[str] = Counter()
_sessions_lock = threading.Lock()


def stop_session(session: str) -> int:
    """Run on every worker (``client.run``) when the driver is interrupted or aborts: the
    session's running chunks stop taking items, a call admitted but not yet sent is
    withheld, and its chunks that start later call nothing. Returns how many calls of the
    session this worker sent: final, since none is sent after this."""
    with _sessions_lock:
        _stopped.add(session)
        stops = list(_stoppers.pop(session, ()))
        sent = _sent[session]
    for stop in stops:
        stop()
    return sent


def _watch(session: str | None, stop: Callable[[], None]) -> Callable[[], None]:
    """Register ``stop`` under ``session`` (run at once if already stopped); the undo."""
    if session is None:
        return lambda: None
    with _sessions_lock:
        stopped = session in _stopped
        if not stopped:
            _stoppers.setdefault(session, set()).add(stop)
    if stopped:
        stop()

    def unwatch() -> None:
        with _sessions_lock:
            _stoppers.get(session, set()).discard(stop)
            if not _stoppers.get(session, True):
                del _stoppers[session]
    return unwatch


@dataclass
class ItemResult:
    """One item's outcome, without the item itself (the driver holds it)."""

    index: int
    status: str
    value: Any = None
    error: BaseException | None = None
    attempts: int = 0
    latency: float = 0.0
    usage: Usage | None = None
    ttft: float | None = None  # seconds to a streamed answer's first token
    billed: list[Usage] = field(default_factory=list)  # rejected answers', billed all the same
    ended: float | None = None  # wall-clock time (Unix seconds, the worker's) the call ended


@dataclass
class ChunkResult:
    """What a worker sends back for one chunk."""

    chunk: int
    items: list[ItemResult] = field(default_factory=list)
    stopped: BaseException | None = None  # e.g. LimiterUnavailable: dispatch must stop
    worker: str = ""
    calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    rate_limit_wait: float = 0.0


_limiters: dict[tuple[Any, ...], RateLimiter] = {}
_limiters_lock = threading.Lock()


def worker_limiter(url: str | None, limits: Sequence[Limit], name: str, margin: float | None = None
                   ) -> RateLimiter:
    """One limiter per (URL, name, limits) per worker process, reused across chunks."""
    key = (url, name, tuple(limits), margin)
    with _limiters_lock:
        lim = _limiters.get(key)
        if lim is None:
            lim = (limiter_from_url(url, list(limits), name=name, margin=margin)
                   if url is not None
                   else RateLimiter())
            _limiters[key] = lim
        return lim


def _portable_error(exc: BaseException | None) -> BaseException | None:
    """The error itself when it pickles, else its type name and message."""
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return StoredError(type(exc).__qualname__, str(exc))
    return exc


def _portable(outcome: Outcome[Any], index: int, billed: list[Usage], ended: float | None
              ) -> ItemResult:
    value, error, status = outcome.value, _portable_error(outcome.error), outcome.status
    if status is Status.OK:
        try:
            pickle.dumps(value)
        except Exception as exc:
            value, status = None, Status.FAILED
            error = StoredError("TypeError", f"the value cannot be sent back: {exc}")
    return ItemResult(index, str(status), value, error, outcome.attempts, outcome.latency,
                      outcome.usage, outcome.ttft, billed, ended)


def _this_worker() -> Any:
    """The Dask worker running this task (asked on the task's thread: the calls run on
    the chunk runner's own threads), or None outside a worker."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def run_chunk(chunk_no: int, chunk: Sequence[tuple[int, Any]], cfg: ChunkConfig
              ) -> ChunkResult:
    """Run ``chunk`` (pairs of global index and item) on this worker; never raises for items."""
    from ..runner import ThreadedBatchRunner

    result = ChunkResult(chunk_no, worker=f"{socket.gethostname()}:{os.getpid()}")
    limits = cfg.options.limits
    limiter = worker_limiter(limits.limiter_url, limits.resolved(), limits.limiter_name,
                             limits.margin)
    rejected = RejectedAnswers(as_adapter(cfg.fn, estimate=cfg.estimate))
    adapter: Adapter[Any] = rejected
    worker = _this_worker()
    options = cfg.options
    runner: ThreadedBatchRunner[Any] = ThreadedBatchRunner(
        adapter, limits=Limits(limiter=limiter), retry=options.retry,
        checkpoint=options.checkpoint, execution=options.execution, budget=options.budget)
    if cfg.session is not None:
        runner.call_observer = announcer(cfg.session, cfg.calls_topic, worker, chunk_no, chunk)
    outcomes: list[tuple[Outcome[Any], float]] = []  # each with the time it ended

    def arrived(outcome: Outcome[Any]) -> None:  # on the chunk's loop, as the call ends
        outcomes.append((outcome, time.time()))

    engine = runner.engine([item for _, item in chunk], arrived, ordered=False, fill=False,
                           run_name=None)
    bridge = Bridge("throttlepool-chunk")

    def stop() -> None:  # any thread: the driver was interrupted or aborted
        bridge.call_soon(lambda: engine.request_stop(
            RunStopped("the driver stopped the run"), interrupted=True))

    unwatch = _watch(cfg.session, stop)
    try:
        bridge.run(engine.run())
    except LimiterUnavailable as exc:
        result.stopped = exc
    finally:
        unwatch()
        runner.close()
    stats = engine.stats
    withheld = sum(isinstance(outcome.error, Withheld) for outcome, _ in outcomes)
    result.calls, result.retries = stats.calls - withheld, stats.retries
    result.rate_limited, result.rate_limit_wait = stats.rate_limited, stats.rate_limit_wait
    for outcome, ended in outcomes:
        if outcome.status is Status.NOT_ATTEMPTED or isinstance(outcome.error, Withheld):
            continue  # the driver decides what happens to items never called
        result.items.append(_portable(outcome, chunk[outcome.index][0],
                                      rejected.billed(outcome.item), ended))
    stopped = engine.stop_reason
    if result.stopped is None and stopped is not None and cfg.session not in _stopped:
        result.stopped = _portable_error(stopped)
    return result
