"""A run's prices: the table's for its provider and model, or the user's own, online or batch.

``Pricing.cost(usage)`` is USD, or None when the price is unknown: an unknown model is
"cost unknown", never 0. ``price_in`` / ``price_out`` (USD per million tokens, as
``--price-in`` / ``--price-out`` give them) replace the table's input and output prices;
cached input tokens are then charged at ``price_in`` too, the table's discounts being for the
table's prices. Batch mode halves the price unless the table lists the model's batch price.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..outcome import Usage
from .prices import PER_MILLION, TablePrice, lookup

ONLINE = "online"
BATCH = "batch"
MODES = (ONLINE, BATCH)


@dataclass(frozen=True)
class Pricing:
    """How a run's calls are priced (see the module docstring)."""

    provider: str | None = None
    model: str | None = None
    price_in: float | None = None
    price_out: float | None = None
    mode: str = ONLINE

    def __post_init__(self) -> None:
        for name in ("price_in", "price_out"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value >= 0):
                raise ConfigError(f"{name} must be a number of USD per million tokens >= 0, "
                                  f"not {value!r}")
        if self.mode not in MODES:
            raise ConfigError(f"pricing mode must be one of {', '.join(MODES)}, "
                              f"not {self.mode!r}")

    @property
    def batch(self) -> bool:
        return self.mode == BATCH

    def table(self, model: str | None = None) -> TablePrice | None:
        """The table's entry for ``model`` (default: the run's), or None."""
        name = model or self.model
        return lookup(self.provider, name) if name else None

    def known(self, model: str | None = None) -> bool:
        """Whether calls of ``model`` (default: the run's) can be priced."""
        if self.price_in is not None and self.price_out is not None:
            return True
        return self.table(model) is not None

    def cost(self, usage: Usage | None, model: str | None = None) -> float | None:
        """USD for ``usage`` of a call of ``model`` (default: the run's); None if unknown."""
        if usage is None:
            return None
        if self.price_in is not None and self.price_out is not None:
            return self._own(usage, self.price_in, self.price_out)
        entry = self.table(model)
        if entry is None:
            return None
        if self.price_in is None and self.price_out is None:
            return entry.cost(usage, batch=self.batch)
        table_in, table_out = entry.per_million()
        return self._own(usage, table_in if self.price_in is None else self.price_in,
                         table_out if self.price_out is None else self.price_out)

    def estimate(self, input_tokens: float, output_tokens: float,
                 model: str | None = None) -> float | None:
        """USD a call of this many tokens would cost (a budget's reservation); None if unknown."""
        return self.cost(Usage(int(input_tokens), int(output_tokens)), model)

    def _own(self, usage: Usage, price_in: float, price_out: float) -> float:
        tokens_in = (usage.input_tokens + usage.cache_creation_input_tokens
                     + usage.cache_read_input_tokens)
        usd = (tokens_in * price_in + usage.output_tokens * price_out) / PER_MILLION
        return usd / 2 if self.batch else usd

    def describe(self) -> str:
        """``openai gpt-4o-mini: table (gpt-4o-mini) $0.15 in / $0.6 out per 1M tokens``; in
        batch mode the batch rates, with the online ones they come from."""
        who = " ".join(p for p in (self.provider, self.model) if p) or "calls"
        entry = self.table()
        if self.price_in is not None and self.price_out is not None:
            source = ""
        elif entry is None:
            return f"{who}: cost unknown (not in the price table; give --price-in/--price-out)"
        else:
            source = f"price table ({entry.provider_id} {entry.model_id}) "
        online_in, online_out = entry.per_million() if entry is not None else (0.0, 0.0)
        if self.price_in is not None:
            online_in = self.price_in
        if self.price_out is not None:
            online_out = self.price_out
        if not self.batch:
            return f"{who}: {source}${online_in:g} in / ${online_out:g} out per 1M tokens"
        # What a million tokens cost at the batch rate, priced the way a batch's usage is
        # (the table's listed batch price, else half), measured on a thousand.
        batch_in = (self.cost(Usage(1000, 0)) or 0.0) * 1000
        batch_out = (self.cost(Usage(0, 1000)) or 0.0) * 1000
        return (f"{who}: {source}${batch_in:.4g} in / ${batch_out:.4g} out per 1M tokens at "
                f"the batch price (online ${online_in:g} / ${online_out:g})")

    def as_settings(self) -> dict[str, Any]:
        """What a checkpoint records (``settings["pricing"]``); :meth:`from_settings` reads it."""
        return {"price_in": self.price_in, "price_out": self.price_out, "mode": self.mode}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Pricing:
        """The pricing of a run from its recorded settings: provider and model from the
        adapter's identity, overrides and mode from ``settings["pricing"]`` when present."""
        identity = settings.get("identity")
        identity = identity if isinstance(identity, Mapping) else {}
        provider = identity.get("provider") or settings.get("adapter")
        model = identity.get("model")
        given = settings.get("pricing")
        given = given if isinstance(given, Mapping) else {}
        try:
            return cls(str(provider) if provider else None, str(model) if model else None,
                       _number(given.get("price_in")), _number(given.get("price_out")),
                       str(given.get("mode") or ONLINE))
        except ConfigError:
            return cls(str(provider) if provider else None, str(model) if model else None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def item_model(item: Any) -> str | None:
    """The model an item asks for itself (a JSONL record's ``"model"``), if any."""
    if isinstance(item, Mapping):
        model = item.get("model")
        if isinstance(model, str) and model:
            return model
    return None
