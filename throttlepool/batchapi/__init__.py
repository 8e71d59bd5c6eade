"""Batch mode: the same items, checkpoint and outcomes as an online run, sent through a
provider's Batch API at half price (docs/batch.md). OpenAI's Batch API and Anthropic's
Message Batches, Gemini batch mode."""

from __future__ import annotations

from .anthropic_batch import AnthropicBatch
from .gemini_batch import GeminiBatch
from .journal import Chunk, Journal
from .openai_batch import OpenAIBatch
from .progress import BatchesLeftRunning, BatchProgress, BatchView
from .provider import BatchProvider, BatchRequestFailed, BatchState, LineResult
from .runner import BatchApiRunner, provider_for

__all__ = [
    "AnthropicBatch",
    "BatchApiRunner",
    "BatchProgress",
    "BatchProvider",
    "BatchRequestFailed",
    "BatchState",
    "BatchView",
    "BatchesLeftRunning",
    "Chunk",
    "GeminiBatch",
    "Journal",
    "LineResult",
    "OpenAIBatch",
    "provider_for",
]
