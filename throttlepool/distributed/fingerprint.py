"""Which throttlepool code a process runs: a digest of the package's source files.

A Dask worker keeps the modules it imported for as long as it lives. Workers started before
throttlepool was upgraded (or its files edited) go on running the old code beside a driver
running the new: a run then behaves as neither version would (trial of issue 11: a driver
with the current limiter and workers with one from before a fix ran Anthropic under a token
limit at half the speed of a local run, with no sign why). The digest is taken once per
process, on first use; a worker's first task loads the code it keeps, so its digest is of
that code, and the driver compares it with its own before a run begins.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


@functools.cache
def code_digest() -> str:
    """A short digest of this process's throttlepool source (paths and contents)."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
