"""Issue 15, item 2: the max_cost gate reserves each admitted call's projected cost and
settles it to what the call cost, like the token limiter's reservations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlepool.cost import BudgetGate, Pricing, RunBudget
from throttlepool.errors import ConfigError
from throttlepool.limiter import Cost
from throttlepool.outcome import Usage


def test_admits_until_the_projected_spend_would_pass_the_cap() -> None:
    gate = BudgetGate(1.0)
    first, second = gate.reserve(0.4), gate.reserve(0.4)
    assert first is not None and second is not None
    assert gate.reserve(0.4) is None  # 0.8 reserved + 0.4 > 1.0
    assert gate.refused == 1
    assert gate.remaining == pytest.approx(0.2)
    assert "budget reached" in gate.reason()


def test_the_stop_reason_gives_small_amounts_in_significant_digits() -> None:
    gate = BudgetGate(0.0001, spent=0.000031)
    gate.reserve(0.00005)
    assert gate.reason() == ("budget reached ($0.000031 spent, $0.000050 reserved, "
                             "of max_cost $0.00010)")


def test_settling_to_actual_usage_frees_the_overestimate() -> None:
    gate = BudgetGate(1.0)
    r1 = gate.reserve(0.6)
    assert r1 is not None
    assert gate.reserve(0.6) is None
    gate.settle(r1, 0.1)  # the call cost less than its estimate
    assert gate.spent == pytest.approx(0.1) and gate.reserved == 0
    assert gate.reserve(0.6) is not None
    gate.settle(r1, 0.5)  # settling twice changes nothing
    assert gate.spent == pytest.approx(0.1)


def test_cancel_gives_back_an_unbilled_call_and_unknown_keeps_the_estimate() -> None:
    gate = BudgetGate(1.0)
    r1 = gate.reserve(0.5)
    assert r1 is not None
    gate.cancel(r1)
    assert gate.reserved == 0 and gate.spent == 0
    r2 = gate.reserve(0.5)
    assert r2 is not None
    gate.settle(r2, None)
    assert gate.spent == pytest.approx(0.5) and gate.unknown == 1


def test_a_resumed_run_starts_from_what_it_spent() -> None:
    assert BudgetGate(1.0, spent=1.0).reserve(0.01) is None
    assert BudgetGate(2.0, spent=1.0).reserve(0.5) is not None


def test_exactly_on_the_cap_is_admitted() -> None:
    gate = BudgetGate(0.3)
    assert gate.reserve(0.1) is not None and gate.reserve(0.2) is not None


@pytest.mark.parametrize("bad", [-1, "1", True, float("nan")])
def test_bad_cap_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_cost"):
        BudgetGate(bad)  # type: ignore[arg-type]


@given(cap=st.floats(0, 10), calls=st.lists(
    st.tuples(st.floats(0, 2), st.floats(0, 1), st.booleans()), max_size=60))
def test_spend_never_passes_the_cap_when_estimates_are_upper_bounds(
        cap: float, calls: list[tuple[float, float, bool]]) -> None:
    gate = BudgetGate(cap)
    open_ones = []
    for estimate, share, settle_now in calls:
        r = gate.reserve(estimate)
        if r is not None:
            open_ones.append((r, estimate * share))
        if settle_now and open_ones:
            res, actual = open_ones.pop(0)
            gate.settle(res, actual)
        assert gate.spent + gate.reserved <= cap * (1 + 1e-9) + 1e-12
    for res, actual in open_ones:
        gate.settle(res, actual)
    assert gate.spent <= cap * (1 + 1e-9) + 1e-12


def test_run_budget_prices_the_limiters_estimate_and_settles_to_usage() -> None:
    # --price-in 2 --price-out 8: a call estimated at 1,000 prompt + 500 reply tokens
    # projects $0.006; three fit a $0.015 cap only once the first settles below its estimate.
    budget = RunBudget(Pricing("openai", "sim-model", price_in=2, price_out=8), 0.015)
    estimate = Cost(1.0, 1500.0, 500.0)
    first, second = budget.reserve(estimate), budget.reserve(estimate)
    assert first is not None and second is not None
    assert budget.reserve(estimate) is None
    assert "budget reached" in budget.reason()
    budget.settle(first, Usage(1000, 100))  # $0.0028 actually
    assert budget.gate.spent == pytest.approx(0.0028)
    third = budget.reserve(estimate)
    assert third is not None
    budget.cancel(second)
    assert budget.gate.reserved == pytest.approx(0.006)


def test_run_budget_refuses_a_model_without_a_price() -> None:
    with pytest.raises(ConfigError, match="max_cost needs a price"):
        RunBudget(Pricing("openai", "no-such-model"), 1.0)
    assert RunBudget(Pricing("openai", "gpt-4o-mini"), 1.0).reserve(Cost(1, 10, 5)) is not None
