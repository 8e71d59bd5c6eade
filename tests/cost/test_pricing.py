"""Issue 15, item 1: prices from genai-prices' bundled table (offline), the user's own
prices, cached tokens, batch prices, and "unknown", never 0."""

from __future__ import annotations

import pytest

from throttlepool.cost import BATCH, CostMeter, Pricing, candidates, lookup
from throttlepool.errors import ConfigError
from throttlepool.outcome import Outcome, RunStats, Source, Status, Usage

MILLION = 1_000_000


def test_known_model_is_priced_from_the_table() -> None:
    # gpt-4o-mini: $0.15 in, $0.60 out per million tokens (genai-prices 0.2.x).
    pricing = Pricing("openai", "gpt-4o-mini")
    assert pricing.cost(Usage(MILLION, MILLION)) == pytest.approx(0.75)
    assert pricing.cost(Usage(1000, 500)) == pytest.approx((1000 * 0.15 + 500 * 0.6) / MILLION)


@pytest.mark.parametrize(("provider", "model", "same_as"), [
    ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("gemini", "models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("google-genai", "gemini-2.5-flash", "gemini-2.5-flash"),
    ("openai", "openai/gpt-4o-mini", "gpt-4o-mini"),
    ("anthropic", "claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
])
def test_dated_and_prefixed_names_find_their_model(provider: str, model: str,
                                                   same_as: str) -> None:
    entry = lookup(provider, model)
    assert entry is not None and entry.model_id == same_as
    usage = Usage(12_345, 678)
    assert Pricing(provider, model).cost(usage) == Pricing(provider, same_as).cost(usage) > 0


def test_candidates_strip_prefixes_and_suffixes() -> None:
    assert candidates("models/gemini-2.5-flash-latest") == [
        "models/gemini-2.5-flash-latest", "gemini-2.5-flash-latest", "gemini-2.5-flash"]
    assert candidates("gpt-4o-mini-2024-07-18")[-1] == "gpt-4o-mini"


def test_unknown_model_costs_unknown_never_zero() -> None:
    pricing = Pricing("openai", "sim-model-that-no-table-lists")
    assert pricing.cost(Usage(1000, 1000)) is None
    assert not pricing.known()
    assert "cost unknown" in pricing.describe()
    assert Pricing("openai", None).cost(Usage(1, 1)) is None
    assert Pricing("openai", "gpt-4o-mini").cost(None) is None


def test_own_prices_per_million_tokens_replace_the_table() -> None:
    own = Pricing("openai", "sim-model", price_in=2, price_out=8)
    assert own.cost(Usage(1000, 500)) == pytest.approx((1000 * 2 + 500 * 8) / MILLION)
    # Cached input tokens are input tokens at the user's input price.
    assert own.cost(Usage(100, 0, 200, 300)) == pytest.approx(600 * 2 / MILLION)
    # One override on a known model: the table gives the other.
    half = Pricing("openai", "gpt-4o-mini", price_in=1.0)
    assert half.cost(Usage(MILLION, MILLION)) == pytest.approx(1.0 + 0.6)
    # One override on an unknown model is still unknown.
    assert Pricing("openai", "nope-model", price_out=8).cost(Usage(1, 1)) is None


def test_cached_tokens_at_the_tables_cache_prices() -> None:
    # claude-sonnet-4-5: $3 in, $15 out, $0.30 cache read, $3.75 cache write per million;
    # our input_tokens (Anthropic's) excludes the cache tokens.
    usage = Usage(input_tokens=1000, output_tokens=1000, cache_creation_input_tokens=2000,
                  cache_read_input_tokens=3000)
    expected = (1000 * 3 + 1000 * 15 + 2000 * 3.75 + 3000 * 0.3) / MILLION
    assert Pricing("anthropic", "claude-sonnet-4-5").cost(usage) == pytest.approx(expected)


def test_batch_mode_is_half_price_listed_or_not() -> None:
    usage = Usage(MILLION, MILLION)
    for provider, model in [("openai", "gpt-4o-mini"),  # the table lists its batch price
                            ("anthropic", "claude-3-haiku-20240307")]:  # it does not
        online = Pricing(provider, model).cost(usage)
        batch = Pricing(provider, model, mode=BATCH).cost(usage)
        assert online is not None and batch == pytest.approx(online / 2)
    assert Pricing(None, None, 2, 8, mode=BATCH).cost(Usage(MILLION, 0)) == pytest.approx(1.0)


def test_bad_prices_are_refused() -> None:
    with pytest.raises(ConfigError, match="price_in"):
        Pricing("openai", "gpt-4o-mini", price_in=-1)
    with pytest.raises(ConfigError, match="mode"):
        Pricing("openai", "gpt-4o-mini", mode="cheap")


def test_pricing_from_recorded_settings() -> None:
    settings = {"adapter": "openai", "identity": {"provider": "openai", "model": "gpt-4o-mini"},
                "pricing": {"price_in": 2, "price_out": 8, "mode": "batch"}}
    pricing = Pricing.from_settings(settings)
    assert (pricing.provider, pricing.model, pricing.price_in, pricing.price_out,
            pricing.mode) == ("openai", "gpt-4o-mini", 2.0, 8.0, "batch")
    assert Pricing.from_settings(pricing_settings := {"identity": {"callable": "f"}}).model is None
    assert Pricing.from_settings(pricing_settings).cost(Usage(1, 1)) is None


def test_meter_prices_calls_and_counts_unknown() -> None:
    stats = RunStats()
    meter = CostMeter(Pricing("openai", "gpt-4o-mini"))
    fresh = Outcome(0, {"prompt": "x"}, Status.OK, "a", usage=Usage(1000, 1000))
    meter.deliver(stats, fresh)
    assert fresh.cost == pytest.approx(0.00075)
    # An item naming its own model is priced as that model.
    other = Outcome(1, {"model": "gpt-4o", "prompt": "y"}, Status.OK, "b",
                    usage=Usage(1000, 1000))
    meter.deliver(stats, other)
    assert other.cost == pytest.approx(Pricing("openai", "gpt-4o").cost(Usage(1000, 1000)))
    unknown = Outcome(2, {"model": "no-such-model-x"}, Status.OK, "c", usage=Usage(5, 5))
    meter.deliver(stats, unknown)
    assert unknown.cost is None
    loaded = Outcome(3, None, Status.OK, "d", usage=Usage(9, 9), source=Source.CHECKPOINT,
                     cost=1.0)
    meter.deliver(stats, loaded)
    no_usage = Outcome(4, None, Status.OK, "e")
    meter.deliver(stats, no_usage)
    assert stats.cost_usd == pytest.approx(fresh.cost + other.cost)
    assert stats.cost_unknown == 1
    assert {"cost_usd", "cost_unknown"} <= set(stats.as_dict())
