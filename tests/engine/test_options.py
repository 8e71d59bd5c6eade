"""The run options as value objects: shorthands land in the right object, every bad field is
refused by name, the runner takes the objects and the shorthands alike, and the keywords its
type hints list are exactly the ones it takes."""

from __future__ import annotations

import pickle
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlepool._config import DEFAULTS, PARSERS
from throttlepool.errors import ConfigError
from throttlepool.limiter import TOKENS, Limit, RateLimiter
from throttlepool.options import (
    GROUPS,
    OPTIONS,
    Budget,
    Checkpoint,
    Execution,
    Limits,
    Retry,
    RunOptions,
    known_options,
    library_kwargs,
)
from throttlepool.options.run import RunKwargs
from throttlepool.runner import ThreadedBatchRunner
from throttlepool.store.report import list_runs


def test_shorthands_land_in_their_objects() -> None:
    opts = RunOptions.from_kwargs(batch_size=16, rpm=500, tpm=200_000, retries=5,
                                  timeout=30, store="runs.db", run_name="v2", progress=False,
                                  max_cost=5, mode="batch")
    assert opts.execution == Execution(batch_size=16, timeout=30, progress=False)
    assert opts.limits == Limits(rpm=500, tpm=200_000)
    assert opts.retry == Retry(attempts=6)
    assert opts.checkpoint == Checkpoint("runs.db", run_name="v2")
    assert opts.budget == Budget(max_cost=5.0, mode="batch")


def test_defaults_are_the_runners() -> None:
    """No option given: what ThreadedBatchRunner(fn) does today (8 in flight, 3 retries)."""
    opts = RunOptions.from_kwargs()
    assert opts.execution.batch_size == 8 == DEFAULTS["batch_size"]
    assert opts.retry == Retry.of(3) == Retry.of(DEFAULTS["retries"])
    with ThreadedBatchRunner(str) as runner:
        assert runner.options == opts


def test_the_typed_keywords_are_exactly_the_options() -> None:
    """RunKwargs (what IDEs and mypy see) lists every keyword from_kwargs takes, no more,
    each typed as its object's field (``limits`` also takes the object or a single spec)."""
    typed = get_type_hints(RunKwargs)
    assert set(typed) == set(known_options())
    for group, cls in GROUPS.items():
        assert typed[group] == cls if group != "limits" else cls in typed[group].__args__
        for name, hint in get_type_hints(cls).items():
            if name != "limits":
                assert typed[name] == hint, name


def test_an_object_and_its_shorthands_combine() -> None:
    opts = RunOptions.from_kwargs(limits=Limits(rpm=60, safety=0.5), tpm=1000,
                                  execution=Execution(batch_size=4), timeout=2.5)
    assert opts.limits == Limits(rpm=60, tpm=1000, safety=0.5)
    assert opts.execution == Execution(batch_size=4, timeout=2.5)
    assert [str(lim) for lim in opts.limits.resolved()] == ["30/60s", "500 tokens/60s"]


def test_limit_specs_stay_a_shorthand() -> None:
    opts = RunOptions.from_kwargs(limits=["10/second", "2000 tokens/minute"])
    assert opts.limits.resolved() == [Limit(10, 1.0), Limit(2000, 60.0, TOKENS)]
    assert opts.limits.token_limited
    assert RunOptions.from_kwargs(limits="5/second").limits.limits == ("5/second",)


def test_retry_object_wins_over_retries() -> None:
    retry = Retry(attempts=2, base=0.0)
    assert RunOptions.from_kwargs(retry=retry, retries=9).retry is retry
    assert RunOptions.from_kwargs(retries=None).retry == Retry(attempts=1)


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"rpm": -1}, "rpm"),
    ({"tpm": "lots"}, "tpm"),
    ({"rps": float("nan")}, "rps"),
    ({"safety": 1.5}, "safety"),
    ({"margin": -0.1}, "margin"),
    ({"timeout": 0}, "timeout"),
    ({"deadline": float("nan")}, "deadline"),
    ({"window": 0}, "window"),
    ({"breaker": "yes"}, "breaker"),
    ({"executor": 3}, "executor"),
    ({"run_name": ""}, "run_name"),
    ({"retry_failed": "no"}, "retry_failed"),
    ({"cache_ttl": 0}, "cache_ttl"),
    ({"max_cost": -1}, "max_cost"),
    ({"price_in": "free"}, "price_in"),
    ({"mode": "offline"}, "mode"),
    ({"retries": -1}, "retries"),
    ({"retry": 3}, "retry"),
    ({"limits": ["500 per fortnight"]}, "500 per fortnight"),
])
def test_a_bad_value_is_refused_by_name(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        RunOptions.from_kwargs(**kwargs)


def test_an_unknown_option_is_named_with_the_nearest() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'batchsize'; did you mean "
                                          r"'batch_size'"):
        RunOptions.from_kwargs(batchsize=3)


def test_a_group_given_something_else_names_what_it_takes() -> None:
    """``checkpoint="runs.db"`` said "unknown option 'checkpoint'; did you mean
    'checkpoint'?"."""
    with pytest.raises(ConfigError, match=r"checkpoint: expected a Checkpoint object, got "
                                          r"'runs.db' \(or give its fields as keywords: store"):
        RunOptions.from_kwargs(checkpoint="runs.db")  # type: ignore[typeddict-item]


def test_a_limiter_excludes_rates() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Limits(limiter=RateLimiter(), rpm=5)
    with pytest.raises(ConfigError, match="not both"):
        Limits(limiter=RateLimiter(), limiter_url="sqlite:///x.db")
    limiter = RateLimiter(Limit(3, 1.0))
    limits = Limits(limiter=limiter)
    assert limits.build() is limiter and limits.resolved() == [Limit(3, 1.0)]


def test_a_shared_limiter_from_its_url(tmp_path: Path) -> None:
    limits = Limits(rpm=120, limiter_url=f"sqlite:///{tmp_path / 'lim.db'}", limiter_name="k")
    limiter = limits.build()
    assert list(limiter.limits) == [Limit(120, 60.0)]
    assert (tmp_path / "lim.db").exists()


def test_the_objects_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Execution().batch_size = 3  # type: ignore[misc]


@given(batch_size=st.integers(1, 512), rpm=st.none() | st.floats(0.5, 1e6),
       tpm=st.none() | st.floats(1, 1e8), retries=st.integers(0, 20),
       timeout=st.none() | st.floats(0.01, 600), run_name=st.none() | st.text(min_size=1).filter(
           str.strip), safety=st.floats(0.05, 1.0))
def test_runner_keywords_round_trip(batch_size: int, rpm: float | None, tpm: float | None,
                                    retries: int, timeout: float | None,
                                    run_name: str | None, safety: float) -> None:
    opts = RunOptions.from_kwargs(batch_size=batch_size, rpm=rpm, tpm=tpm, retries=retries,
                                  timeout=timeout, run_name=run_name, safety=safety)
    assert RunOptions.from_kwargs(**opts.runner_kwargs()) == opts
    with ThreadedBatchRunner(str, **opts.runner_kwargs()) as runner:
        assert runner.options == opts


def test_the_runner_takes_the_objects_and_the_shorthands_alike(tmp_path: Path) -> None:
    as_objects = ThreadedBatchRunner(
        str.upper, limits=Limits(rps=1000), retry=Retry(attempts=1),
        checkpoint=Checkpoint(str(tmp_path / "c.db"), run_name="opts"),
        execution=Execution(batch_size=2, seed=7, progress=False))
    as_shorthands = ThreadedBatchRunner(str.upper, batch_size=2, rps=1000, retries=0,
                                        run_name="opts", store=str(tmp_path / "c.db"),
                                        seed=7, progress=False)
    assert as_objects.options == as_shorthands.options
    calls = []
    for runner in (as_objects, as_shorthands):
        with runner:
            result = runner.run(["a", "b", "c"])
            assert runner.batch_size == 2 and runner.retry == Retry(attempts=1)
            assert list(runner.limiter.limits) == [Limit(1000, 1.0)]
        assert [o.value for o in result.outcomes] == ["A", "B", "C"]
        calls.append(result.stats.calls)
    assert calls == [3, 0]  # the same settings: the second run resumes the first
    runs = list_runs(tmp_path / "c.db")
    assert [(run["name"], run["ok"]) for run in runs] == [("opts", 3)]


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"batchsize": 3}, "batch_size"),
    ({"limits": ["9 per fortnight"]}, "9 per fortnight"),
    ({"execution": Execution(), "timeout": -1}, "timeout"),
    ({"limiter": RateLimiter(), "rpm": 5}, "not both"),
    ({"max_cost": 1.0}, "price"),  # a plain function has no price: refused before any call
])
def test_the_runner_refuses_bad_options_by_name(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ThreadedBatchRunner(str, **kwargs)


def test_every_setting_is_declared_once_and_targets_a_real_field() -> None:
    names = [option.name for option in OPTIONS]
    assert len(names) == len(set(names))
    assert set(PARSERS) == set(names)
    for option in OPTIONS:
        if option.target is None:
            continue
        group, _, name = option.target.partition(".")
        if group == "retry":
            assert name == "retries"
        else:
            assert name in {f.name for f in fields(GROUPS[group])}, option.target
        assert option.keyword in known_options()


def test_library_kwargs_are_the_set_run_options() -> None:
    values = {"batch_size": 4, "rpm": 60.0, "tpm": None, "model": "m", "retries": 1,
              "dask_scheduler": "tcp://h:8786"}
    assert library_kwargs(values) == {"batch_size": 4, "rpm": 60.0, "retries": 1,
                                      "scheduler": "tcp://h:8786"}


def test_what_travels_to_workers_pickles_and_keeps_the_limits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lim.db'}"
    opts = RunOptions.from_kwargs(rpm=60, limiter_url=url, batch_size=3, retries=1,
                                  timeout=5, store=str(tmp_path / "c.db"),
                                  progress=lambda stats: None, executor="dask",
                                  scheduler=object())
    shipped = pickle.loads(pickle.dumps(opts.for_workers()))
    assert shipped.limits == Limits(rpm=60, limiter_url=url)
    assert shipped.retry == Retry(attempts=2)
    assert shipped.execution == Execution(batch_size=3, timeout=5, progress=False)
    assert shipped.checkpoint == Checkpoint()
