"""Distributed execution: chunks of a batch on a Dask cluster under one shared rate limit.

``run_on_dask`` needs the ``dask`` extra (``pip install 'throttlepool[dask]'``); it is
imported on first use so that ``import throttlepool.distributed`` never requires it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .chunk import ChunkConfig, ChunkResult, ItemResult, run_chunk

if TYPE_CHECKING:
    from .dask import run_on_dask


def __getattr__(name: str) -> Any:
    if name == "run_on_dask":
        from .dask import run_on_dask  # raises MissingExtra without distributed

        return run_on_dask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ChunkConfig", "ChunkResult", "ItemResult", "run_chunk", "run_on_dask"]
