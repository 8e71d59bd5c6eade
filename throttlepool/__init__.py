"""throttlepool: run existing synchronous API clients fast and safely on large batches."""

from __future__ import annotations

__version__ = "0.1.0"
