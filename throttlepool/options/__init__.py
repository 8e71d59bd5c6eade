"""The options of a run as a few value objects, and the one table of settings.

``RunOptions(limits=Limits(rpm=500), retry=Retry(attempts=5), checkpoint=Checkpoint("runs.db"),
execution=Execution(batch_size=16), budget=Budget(max_cost=5))``, or the same from the
everyday shorthands: ``RunOptions.from_kwargs(rpm=500, retries=4, store="runs.db",
batch_size=16, max_cost=5)``. :data:`OPTIONS` lists every setting a flag, an environment
variable or a config file may give, each once.
"""

from ..retry import Retry
from .parse import checked
from .run import GROUPS, RunOptions, known_options
from .table import BY_NAME, OPTIONS, PROVIDERS_MARK, Option, library_kwargs
from .values import (
    BATCH,
    DEFAULT_BATCH_SIZE,
    ONLINE,
    BreakerSpec,
    Budget,
    Checkpoint,
    Execution,
    Limits,
)

__all__ = [
    "BATCH", "BY_NAME", "DEFAULT_BATCH_SIZE", "GROUPS", "ONLINE", "OPTIONS", "PROVIDERS_MARK",
    "BreakerSpec", "Budget", "Checkpoint", "Execution", "Limits", "Option", "Retry",
    "RunOptions", "checked", "known_options", "library_kwargs",
]
