"""BatchApiRunner: the same items, checkpoint and outcomes as an online run, sent through a
provider's Batch API at the batch price (docs/batch.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..cost.pricing import Pricing
from ..errors import ConfigError
from ..outcome import BatchResult
from ..store import SQLiteStore, open_store
from ..store.base import Store
from ..store.redact import mask_url
from .anthropic_batch import AnthropicBatch
from .gemini_batch import GeminiBatch
from .journal import Journal
from .openai_batch import OpenAIBatch
from .progress import BatchProgress
from .provider import REFUSED, BatchProvider, batch_line, chunked
from .session import Session

FALLBACKS = (None, "online")


def provider_for(adapter: Any, client: Any = None, **limits: int) -> BatchProvider:
    """The Batch API of ``adapter``'s provider (OpenAI, Anthropic, Gemini); else ConfigError."""
    name = getattr(adapter, "name", None)
    if name == "openai":
        return OpenAIBatch(adapter, client, **limits)
    if name == "anthropic":
        return AnthropicBatch(adapter, client, **limits)
    if name == "gemini":
        return GeminiBatch(adapter, client, **limits)
    raise ConfigError(f"batch mode takes an OpenAIAdapter, AnthropicAdapter or GenAIAdapter, "
                      f"not {name!r}")


def recordable_url(url: str) -> bool:
    """Whether ``url`` may be kept in the checkpoint: it holds no password or key."""
    return mask_url(url) == url


def planned_batches(adapter: Any, items: Iterable[tuple[int, Any]]
                    ) -> tuple[list[list[int]], dict[int, str]]:
    """How a run would split ``(index, item)`` pairs into batches (one model per batch,
    within the provider's limits), and why the requests a batch cannot carry would fail:
    ``(batches of indices, {index: problem})``. Sends nothing (a dry run's plan)."""
    provider = provider_for(adapter)
    by_model: dict[str, list[tuple[int, bytes]]] = {}
    refused: dict[int, str] = {}
    for i, item in items:
        try:
            line = batch_line(adapter, provider, provider.custom_id("dry-run", i), item)
        except REFUSED as exc:
            refused[i] = str(exc)
            continue
        by_model.setdefault(provider.model_of(item), []).append((i, line))
    batches = [[i for i, _ in part] for lines in by_model.values()
               for part in chunked(lines, provider.max_requests, provider.max_bytes)]
    return batches, refused


class BatchApiRunner:
    """Runs items through a provider's Batch API; ``run(items)`` returns a BatchResult in
    input order, recorded in the checkpoint like an online run.

    ``adapter`` is an :class:`~throttlepool.adapters.openai.OpenAIAdapter` (chat,
    embeddings, responses or completions) or an
    :class:`~throttlepool.adapters.anthropic.AnthropicAdapter` (messages); its client makes
    the batch calls unless ``client`` is given. ``store`` is a path or a SQLiteStore
    (``:memory:`` when None: no resume). What is submitted is journaled in the same file
    before and after each step, so running again after a crash or Ctrl-C finds the batches
    already created instead of submitting twice. Requests that fail retryably (5xx, 429,
    expired, cancelled) go into a new batch, up to ``attempts`` batches per item; then, with
    ``fallback="online"``, through a ThreadedBatchRunner on the same adapter (``online``: its
    keyword arguments, e.g. ``{"rpm": 500}``, or a ThreadedBatchRunner). ``max_cost`` (USD)
    submits no request whose projected cost, at the batch price, would pass the cap.
    ``progress`` gets a :class:`BatchProgress` after each poll. ``base_url``, the endpoint
    the client talks to, is recorded with the run (unless it holds a credential) so that
    ``throttlepool cancel`` reaches the same endpoint without being told.
    """

    def __init__(
        self,
        adapter: Any,
        *,
        store: Store | str | None = None,
        run_name: str | None = None,
        client: Any = None,
        poll_interval: float = 30.0,
        attempts: int = 3,
        retry_failed: bool = True,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        pricing: Mapping[str, Any] | None = None,
        max_cost: float | None = None,
        fallback: str | None = None,
        online: Any = None,
        progress: Callable[[BatchProgress], None] | None = None,
        clock: Clock | None = None,
        base_url: str | None = None,
    ) -> None:
        if attempts < 1 or (max_requests or 1) < 1 or (max_bytes or 1) < 1 or poll_interval < 0:
            raise ConfigError("attempts, max_requests and max_bytes must be >= 1 and "
                              "poll_interval >= 0")
        if fallback not in FALLBACKS:
            raise ConfigError(f"fallback must be 'online' or None, not {fallback!r}")
        limits = {k: v for k, v in (("max_requests", max_requests), ("max_bytes", max_bytes))
                  if v is not None}
        self.provider = provider_for(adapter, client, **limits)
        self.adapter = adapter
        self.max_requests, self.max_bytes = self.provider.max_requests, self.provider.max_bytes
        self.pricing = dict(pricing or {})
        self.pricing_of("batch")  # bad prices fail here, before anything is opened
        self._owns_store = not isinstance(store, Store)
        opened = open_store(store if store is not None else ":memory:")
        if not isinstance(opened, SQLiteStore):
            raise ConfigError("batch mode needs a SQLite checkpoint (a path or SQLiteStore)")
        self.store = opened
        self.journal = Journal(opened.path)
        self.run_name = run_name
        self.poll_interval = poll_interval
        self.attempts = attempts
        self.retry_failed = retry_failed
        self.max_cost = max_cost
        self.fallback = fallback
        self.online = online
        self.progress = progress
        self.clock = clock or SYSTEM_CLOCK
        self.base_url = base_url

    def settings(self) -> dict[str, Any]:
        """What the checkpoint records about this run (no secrets)."""
        settings = {"adapter": self.provider.name, "identity": dict(self.adapter.identity()),
                    "mode": "batch", "attempts": self.attempts, "fallback": self.fallback,
                    "pricing": {**self.pricing, "mode": "batch"}}
        if self.base_url and recordable_url(self.base_url):
            settings["base_url"] = self.base_url
        return settings

    def pricing_of(self, mode: str) -> Pricing:
        """The run's prices at the ``batch`` or ``online`` rate (``pricing=`` overrides)."""
        identity = self.adapter.identity()
        model = identity.get("model")
        return Pricing(self.provider.name, str(model) if model else None,
                       self.pricing.get("price_in"), self.pricing.get("price_out"), mode)

    # -- the run ---------------------------------------------------------------------------

    def run(self, items: Iterable[Any], *, run_name: str | None = None) -> BatchResult[Any]:
        """Submit, poll and collect every item; resumes the run called ``run_name``."""
        return Session(self, list(items), run_name or self.run_name).run()

    def cancel(self, run_name: str) -> list[str]:
        """Ask the provider to cancel the run's unfinished batches; returns their ids.
        (Running the run again afterwards resubmits the requests they did not answer.)"""
        rows = self.store.query("SELECT id FROM runs WHERE name = ?", (run_name,))
        if not rows:
            raise ConfigError(f"no run named {run_name!r} in {self.store.path}")
        ids = []
        for chunk in self.journal.live(str(rows[0]["id"])):
            if chunk.batch_id:
                state = self.provider.poll(chunk.batch_id)
                if not state.ended:
                    self.provider.cancel(chunk.batch_id)
                    ids.append(chunk.batch_id)
        return ids

    def close(self) -> None:
        """Close the journal and a store this runner opened."""
        self.journal.close()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> BatchApiRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
