"""Batch mode: the same items, checkpoint and outcomes as an online run, sent through a
provider's Batch API at half price (docs/batch.md). OpenAI's Batch API for now."""

from __future__ import annotations

from .journal import Chunk, Journal
from .openai_batch import BatchRequestFailed, OpenAIBatchClient, OpenAIBatchFormat, custom_id
from .runner import BatchApiRunner, BatchesLeftRunning, BatchProgress, BatchView

__all__ = [
    "BatchApiRunner",
    "BatchProgress",
    "BatchRequestFailed",
    "BatchView",
    "BatchesLeftRunning",
    "Chunk",
    "Journal",
    "OpenAIBatchClient",
    "OpenAIBatchFormat",
    "custom_id",
]
