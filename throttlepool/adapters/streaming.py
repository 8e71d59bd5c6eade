"""Streamed replies consumed whole: the events of one call gathered into the response a plain
call would have returned, with the time to the first generated token.

The worker thread (or the event loop, for an async client) reads the stream to its end; the
runner gets one value with its usage, never part of an answer. A stream that fails or stops
before its last event raises :class:`StreamBroken`, which adapters classify as retryable (the
whole request is made again), whatever the SDK raised midway: a dropped connection, or an
error event after the 200 (OpenAI ``data: {"error": ...}``, Anthropic ``event: error``).
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

from ..classify import ErrorKind, Verdict
from ..errors import ItemError


class StreamBroken(ItemError):
    """A streamed reply failed or ended before its last event; what came is dropped."""

    def __init__(self, events: int, problem: str) -> None:
        counted = f"{events} event" + ("" if events == 1 else "s")
        super().__init__(f"the stream broke after {counted}: {problem}")
        self.events = events
        self.problem = problem


def stream_verdict(exc: StreamBroken, classify_cause: Callable[[BaseException], Verdict]
                   ) -> Verdict:
    """Retry a broken stream as a whole, unless what broke it stops the run (a fatal cause)."""
    cause = exc.__cause__
    verdict = classify_cause(cause) if cause is not None else None
    if verdict is not None and verdict.kind is ErrorKind.FATAL:
        return verdict
    hint = verdict.retry_after if verdict is not None else None
    return Verdict(ErrorKind.TRANSIENT, hint, f"stream broke midway ({exc.problem})")


class Collector(abc.ABC):
    """Gathers one API's stream events into the response of the unstreamed call."""

    @abc.abstractmethod
    def add(self, event: Any) -> bool:
        """Take one event; True when it carries generated content (a token)."""

    @abc.abstractmethod
    def missing(self) -> str | None:
        """What the stream still lacks to be whole (its last event), or None."""

    @abc.abstractmethod
    def final(self) -> Any:
        """The whole response (only once :meth:`missing` is None)."""


class Collected:
    """A stream read to its end: the response and the seconds to its first token."""

    __slots__ = ("response", "ttft")

    def __init__(self, response: Any, ttft: float | None) -> None:
        self.response = response
        self.ttft = ttft


class _Reading:
    """The bookkeeping of one read: events seen, first-token time, the verdict at the end."""

    def __init__(self, collector: Collector, started: float, answered: bool) -> None:
        self.collector = collector
        self.started = started
        # False when the request is only sent on the first read (google-genai): an error
        # before any event is the call's own (a 429...), not a stream that broke.
        self.answered = answered
        self.events = 0
        self.ttft: float | None = None

    def take(self, event: Any) -> None:
        self.events += 1
        if self.collector.add(event) and self.ttft is None:
            self.ttft = time.perf_counter() - self.started

    def failed(self, exc: Exception) -> BaseException:
        if not self.answered and self.events == 0:
            return exc
        broken = StreamBroken(self.events, f"{type(exc).__name__}: {exc}")
        broken.__cause__ = exc
        return broken

    def result(self) -> Collected:
        missing = self.collector.missing()
        if missing is not None:
            raise StreamBroken(self.events, f"it ended without {missing}")
        return Collected(self.collector.final(), self.ttft)


def collect(stream: Iterable[Any], collector: Collector, started: float,
            answered: bool = True) -> Collected:
    """Read ``stream`` to its end on this thread (``started``: ``time.perf_counter()`` when
    the request was sent)."""
    reading = _Reading(collector, started, answered)
    try:
        for event in stream:
            reading.take(event)
    except Exception as exc:
        failure = reading.failed(exc)
        if failure is exc:
            raise
        raise failure from exc
    finally:
        close = getattr(stream, "close", None)
        if callable(close):
            close()
    return reading.result()


async def acollect(stream: AsyncIterable[Any], collector: Collector, started: float,
                   answered: bool = True) -> Collected:
    """Read an async ``stream`` to its end on the running loop."""
    reading = _Reading(collector, started, answered)
    try:
        async for event in stream:
            reading.take(event)
    except Exception as exc:
        failure = reading.failed(exc)
        if failure is exc:
            raise
        raise failure from exc
    finally:
        close = getattr(stream, "close", None) or getattr(stream, "aclose", None)
        if callable(close):
            await close()
    return reading.result()


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


class OpenAIChatCollector(Collector):
    """Chat completion chunks into a ``ChatCompletion`` (the SDK's own accumulator), with the
    usage chunk that ``stream_options.include_usage`` adds."""

    def __init__(self) -> None:
        from openai.lib.streaming.chat import ChatCompletionStreamState

        self._state: Any = ChatCompletionStreamState()
        self._chunks = 0

    def add(self, event: Any) -> bool:
        self._state.handle_chunk(event)
        self._chunks += 1
        return any(getattr(c.delta, "content", None) or getattr(c.delta, "tool_calls", None)
                   or getattr(c.delta, "refusal", None) for c in event.choices or ())

    def missing(self) -> str | None:
        if not self._chunks:
            return "any chunk"
        snapshot = self._state.current_completion_snapshot
        if not snapshot.choices or any(c.finish_reason is None for c in snapshot.choices):
            return "a finish_reason"
        return None

    def final(self) -> Any:
        return self._state.get_final_completion()


class OpenAIResponsesCollector(Collector):
    """Responses API events: the response that ``response.completed`` carries."""

    _ENDS = frozenset({"response.completed", "response.incomplete"})

    def __init__(self) -> None:
        self._final: Any = None

    def add(self, event: Any) -> bool:
        kind = getattr(event, "type", "")
        if kind in self._ENDS:
            self._final = event.response
        elif kind in ("response.failed", "error"):
            error = _field(getattr(event, "response", None), "error") or event
            raise RuntimeError(f"{kind}: {_field(error, 'message') or error}")
        return kind.endswith(".delta")

    def missing(self) -> str | None:
        return "response.completed" if self._final is None else None

    def final(self) -> Any:
        return self._final


class AnthropicCollector(Collector):
    """Message stream events into the ``Message`` the plain call returns, as the SDK's
    stream helpers build it (whose accumulator is private): content blocks from their start
    and deltas (text, tool input JSON, thinking, signature, citations), the stop reason and
    the cumulative usage of ``message_delta`` over ``message_start``'s."""

    def __init__(self) -> None:
        self._message: Any = None
        self._tool_json: dict[int, str] = {}
        self._stopped = False

    def add(self, event: Any) -> bool:
        kind = getattr(event, "type", "")
        if kind == "message_start":
            self._message = event.message.model_copy(deep=True)
        elif self._message is None:
            if kind != "ping":
                raise StreamBroken(0, f"{kind!r} came before message_start")
        elif kind == "content_block_start":
            self._message.content.append(event.content_block.model_copy(deep=True))
        elif kind == "content_block_delta":
            self._delta(event.index, event.delta)
        elif kind == "content_block_stop":
            raw = self._tool_json.pop(event.index, "")
            if raw:
                self._message.content[event.index].input = json.loads(raw)
        elif kind == "message_delta":
            self._finish(event)
        self._stopped = self._stopped or kind == "message_stop"
        return kind == "content_block_delta"

    def _delta(self, index: int, delta: Any) -> None:
        block, kind = self._message.content[index], getattr(delta, "type", "")
        if kind == "text_delta":
            block.text += delta.text
        elif kind == "input_json_delta":
            self._tool_json[index] = self._tool_json.get(index, "") + delta.partial_json
        elif kind == "thinking_delta":
            block.thinking += delta.thinking
        elif kind == "signature_delta":
            block.signature = delta.signature
        elif kind == "citations_delta":
            block.citations = [*(block.citations or []), delta.citation]

    def _finish(self, event: Any) -> None:
        message, delta = self._message, event.delta
        message.stop_reason, message.stop_sequence = delta.stop_reason, delta.stop_sequence
        for name in ("stop_details", "container"):  # fields of newer SDKs
            if getattr(delta, name, None) is not None:
                setattr(message, name, getattr(delta, name))
        # Cumulative totals: they overwrite; one left out keeps message_start's.
        message.usage.output_tokens = event.usage.output_tokens
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                     "server_tool_use", "output_tokens_details"):
            if getattr(event.usage, name, None) is not None:
                setattr(message.usage, name, getattr(event.usage, name))

    def missing(self) -> str | None:
        return None if self._stopped else "message_stop"

    def final(self) -> Any:
        return self._message


class GenAICollector(Collector):
    """``generate_content_stream`` chunks into one ``GenerateContentResponse``: each
    candidate's text pieces joined, its other parts kept, the last usage and finish reason."""

    def __init__(self) -> None:
        self._chunks: list[Any] = []

    def add(self, event: Any) -> bool:
        self._chunks.append(event)
        return any(getattr(p, "text", None) or getattr(p, "function_call", None)
                   for c in event.candidates or () for p in (c.content.parts or ())
                   if c.content is not None)

    def missing(self) -> str | None:
        if not self._chunks:
            return "any chunk"
        last = self._chunks[-1]
        if not last.candidates or any(c.finish_reason is None for c in last.candidates):
            return "a finish_reason"
        return None

    def final(self) -> Any:
        from google.genai import types

        first, last = self._chunks[0], self._chunks[-1]
        parts: dict[int, list[Any]] = {}
        for chunk in self._chunks:
            for position, cand in enumerate(chunk.candidates or ()):
                index = cand.index if cand.index is not None else position
                merged = parts.setdefault(index, [])
                for part in (cand.content.parts or ()) if cand.content is not None else ():
                    if (part.text is not None and merged and merged[-1].text is not None
                            and not part.thought and not merged[-1].thought):
                        merged[-1] = types.Part(text=merged[-1].text + part.text)
                    else:
                        merged.append(part)
        ends = {(c.index if c.index is not None else i): c
                for i, c in enumerate(last.candidates or ())}
        candidates = [
            types.Candidate(content=types.Content(role="model", parts=merged), index=index,
                            finish_reason=getattr(ends.get(index), "finish_reason", None),
                            safety_ratings=getattr(ends.get(index), "safety_ratings", None))
            for index, merged in sorted(parts.items())]
        usage = next((c.usage_metadata for c in reversed(self._chunks)
                      if c.usage_metadata is not None), None)
        return types.GenerateContentResponse(
            candidates=candidates, usage_metadata=usage, model_version=last.model_version,
            response_id=last.response_id, sdk_http_response=first.sdk_http_response,
            prompt_feedback=first.prompt_feedback)
