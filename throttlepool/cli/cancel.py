"""``throttlepool cancel RUN``: cancel the provider batches a ``--mode batch`` run left
running. The provider, and the base URL when the run could keep it, come from the run's
checkpoint, so the command the Ctrl-C message prints is all it takes."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from .._config import Settings, load_settings
from ..errors import ConfigError, ThrottlepoolError
from ..options import BY_NAME
from ..store import SQLiteStore
from .batch import batch_runner, provider_refused
from .errors import EXIT_OK
from .flags import setting_flags
from .providers import RequestOptions, build_adapter, split_provider

_CANCEL_OPTIONS = tuple(BY_NAME[name] for name in
                        ("provider", "api_key", "base_url", "db", "db_timeout"))


@click.command("cancel")
@click.argument("run_name", metavar="RUN")
@setting_flags(_CANCEL_OPTIONS)
@click.option("--config", metavar="PATH", help="Config file to read instead of searching for "
              "pyproject.toml / throttlepool.toml.")
def cancel_command(run_name: str, config: str | None, **flags: Any) -> int:
    """Cancel the provider batches of a --mode batch run (RUN, as `throttlepool status`
    names it) and print their ids.

    The provider and the base URL are the run's, as its checkpoint recorded them (a base
    URL holding a password or key is not recorded: give --base-url again). A cancelled
    batch keeps the answers it already has; running the run again later collects those and
    submits only the requests that got none.
    """
    settings = load_settings(flags, config=config)
    db = str(settings["db"])
    if db != ":memory:" and not os.path.exists(db):  # never create an empty database here
        raise ConfigError(f"no checkpoint database {db}: nothing to cancel (--db names the "
                          f"run's)")
    store = SQLiteStore(db, timeout=settings["db_timeout"])
    try:
        settings = _the_runs(settings, store, run_name)
        # Cancelling calls no model: the adapter only lends its client.
        adapter = build_adapter(settings["provider"], model=None,
                                base_url=settings["base_url"], extract=None,
                                request=RequestOptions(), key=settings["api_key"], headers={})
        with batch_runner(adapter, store, settings, run_name) as runner:
            try:
                ids = runner.cancel(run_name)
            except ThrottlepoolError:
                raise
            except Exception as exc:  # the SDK's: a wrong URL, a rejected key, ...
                raise provider_refused(exc, adapter, settings) from exc
    finally:
        store.close()
    if not ids:
        click.echo(f"run {run_name!r} has no batch left running: nothing to cancel", err=True)
    for batch_id in ids:
        click.echo(batch_id)
    if ids:
        click.echo(f"asked the provider to cancel {len(ids)} batch"
                   f"{'es' if len(ids) != 1 else ''} of run {run_name!r}", err=True)
    return EXIT_OK


def _the_runs(settings: Settings, store: SQLiteStore, run_name: str) -> Settings:
    """``settings`` with the run's provider and base URL from its checkpoint (a --provider
    that contradicts it is an error; a --base-url given wins)."""
    rows = store.query("SELECT settings FROM runs WHERE name = ?", (run_name,))
    if not rows:
        raise ConfigError(f"no run named {run_name!r} in {store.path}")
    recorded = json.loads(rows[0]["settings"] or "{}")
    if recorded.get("mode") != "batch":
        raise ConfigError(f"run {run_name!r} is not a --mode batch run: it has no batches to "
                          "cancel")
    provider = str(recorded.get("adapter") or settings["provider"])
    given = settings["provider"] if "provider" in settings.sources else None
    if given is not None and split_provider(given)[0] != provider:
        raise ConfigError(f"run {run_name!r} ran with --provider {provider}, not {given}: "
                          f"leave out --provider (the checkpoint names it)")
    values = {**settings.values, "provider": provider,
              "base_url": settings["base_url"] or recorded.get("base_url")}
    return Settings(values, settings.sources, settings.file)
