"""The price table: genai-prices' bundled data (offline), looked up by provider and model.

genai-prices (pydantic/genai-prices, MIT) ships its prices inside the package and never
fetches unless asked (its ``UpdatePrices``), so a lookup works with no network. Its own
matching already folds dated names (``gpt-4o-2024-08-06`` is ``gpt-4o``); :func:`candidates`
adds what our providers send that it does not know: ``models/`` and ``provider/`` prefixes,
``-latest`` and date suffixes.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..outcome import Usage

# Our provider names (adapters' ``name``) to the table's provider ids; None: guess from the model.
PROVIDERS: dict[str, str | None] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
    "google-genai": "google",
    "google-generativeai": "google",
    "google": "google",
    "mistral": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "openrouter": "openrouter",
    "http": None,
}
BATCH_CONTEXT = {"processing": "batch"}
_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|\d{4})$")
PER_MILLION = 1_000_000
_MEMO_SIZE = 4096  # prices kept per table entry; the memo starts over when full


def candidates(model: str) -> list[str]:
    """The names to try for ``model``, as given first: ``models/gemini-2.5-flash-latest`` ->
    ``[..., gemini-2.5-flash-latest, gemini-2.5-flash]``."""
    names = [model.strip()]
    name = names[0]
    if name.startswith("models/"):
        name = name[len("models/"):]
        names.append(name)
    if "/" in name:
        name = name.rsplit("/", 1)[1]
        names.append(name)
    for suffix in ("-latest", "-preview"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            names.append(name)
    dated = _DATE_SUFFIX.sub("", name)
    if dated != name:
        names.append(dated)
    return list(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True)
class TablePrice:
    """One model's entry in the table; ``cost`` prices a usage with it (tiers included)."""

    provider_id: str
    model_id: str
    model: Any  # genai_prices.types.ModelInfo
    provider: Any  # genai_prices.types.Provider
    _memo: dict[tuple[Any, ...], float] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)

    @property
    def has_batch_price(self) -> bool:
        """Whether the table lists this model's Batch API prices (else they are half)."""
        return any(dict(v.when) == BATCH_CONTEXT for v in self.model.price_variants or ())

    def cost(self, usage: Usage, *, batch: bool = False) -> float:
        """USD for ``usage``; at the batch price when ``batch``."""
        now = _dt.datetime.now(_dt.UTC)
        batch_listed = batch and self.has_batch_price
        # The table's price is a pure function of the usage, the context and which of the
        # entry's dated or time-of-day prices apply now; computing it takes ~0.2 ms of CPU on
        # the event loop per outcome (a third of the loop's work per call), so it is kept.
        key = (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens,
               usage.cache_creation_input_tokens, batch_listed, self._active(now))
        known = self._memo.get(key)
        if known is None:
            known = self._compute(usage, batch_listed, now)
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = known
        return known / 2 if batch and not batch_listed else known

    def _active(self, now: _dt.datetime) -> tuple[bool, ...]:
        """Which of the entry's constrained prices and variants apply at ``now``."""
        prices = self.model.prices
        conditional = () if not isinstance(prices, list | tuple) else prices
        return tuple(c.constraint is None or c.constraint.active(now)
                     for c in (*conditional, *(self.model.price_variants or ())))

    def _compute(self, usage: Usage, batch_listed: bool, now: _dt.datetime) -> float:
        from genai_prices import Usage as TableUsage

        # The table's input_tokens is every input token; ours (Anthropic's) excludes the cache.
        total_in = (usage.input_tokens + usage.cache_creation_input_tokens
                    + usage.cache_read_input_tokens)
        table_usage = TableUsage(input_tokens=total_in, output_tokens=usage.output_tokens,
                                 cache_read_tokens=usage.cache_read_input_tokens or None,
                                 cache_write_tokens=usage.cache_creation_input_tokens or None)
        calc = self.model.calc_price(
            table_usage, self.provider, genai_request_timestamp=now,
            price_context=BATCH_CONTEXT if batch_listed else None)
        return float(calc.total_price)

    def per_million(self) -> tuple[float, float]:
        """``(input, output)`` USD per million tokens at the base tier (for messages)."""
        prices = self.model.get_prices(_dt.datetime.now(_dt.UTC))
        return _base(getattr(prices, "input_mtok", None)), _base(
            getattr(prices, "output_mtok", None))


def _base(price: Any) -> float:
    if price is None:
        return 0.0
    return float(getattr(price, "base", price))


@cache
def lookup(provider: str | None, model: str) -> TablePrice | None:
    """The table's entry for ``model`` of ``provider`` (our name), or None when it has none."""
    try:
        from genai_prices import data_snapshot
    except ImportError:  # pragma: no cover - a declared dependency; an odd install
        return None
    snapshot = data_snapshot.get_snapshot()
    provider_id = PROVIDERS.get(provider.lower(), provider.lower()) if provider else None
    for name in candidates(model):
        for pid in dict.fromkeys((provider_id, None)):
            try:
                found_provider, found_model = snapshot.find_provider_model(name, None, pid, None)
            except LookupError:
                continue
            return TablePrice(found_provider.id, found_model.id, found_model, found_provider)
    return None
